// SPDX-License-Identifier: GPL-2.0

//! Work items of a [`Worker`]: [`Work`], a `kthread_work` with the item's data in one
//! reference-counted allocation, and its queueing and run.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::{unbind, Inner, WorkerRef};
use core::{mem::ManuallyDrop, ops::Deref, ptr};
use kernel::{
    bindings,
    prelude::*,
    sync::{
        atomic::{ordering, Atomic},
        Arc,
    },
    types::Opaque,
};

/// What a queued item does when the worker runs it.
pub trait WorkItem: Send + Sync + Sized + 'static {
    /// Run on the worker's thread, once per successful queue, with the reference that the queue
    /// held. `worker` can queue work (this item too) on the same worker.
    fn run(work: Arc<Work<Self>>, worker: &WorkerRef<'_>);
}

pub(super) fn queue<T: WorkItem>(
    inner: &Arc<Inner>,
    work: Arc<Work<T>>,
) -> Result<(), (Error, Arc<Work<T>>)> {
    if let Err(e) = Inner::bind(inner, &work.owner) {
        return Err((e, work));
    }
    let raw_work = work.work.get();
    // SAFETY: `raw_work` is initialised and bound to this live worker.
    hand_over(inner, work, || unsafe {
        bindings::kthread_queue_work(inner.raw(), raw_work)
    })
}

/// Hand one reference of `work` to a queue entry made by `call` (a C queueing function that
/// returns whether it queued): the reference is the entry's, which its run takes back; if
/// nothing was queued (`EBUSY`: pending already; or the worker is closing) it comes back.
///
/// `call` uses a raw pointer taken before: once queued, the item may run and be freed before
/// `call` returns, so no reference to it may live across the call.
pub(super) fn hand_over<W>(
    inner: &Inner,
    work: Arc<W>,
    call: impl FnOnce() -> bool,
) -> Result<(), (Error, Arc<W>)> {
    let p = Arc::into_raw(work);
    match inner.enter(call) {
        Ok(true) => Ok(()),
        // SAFETY: Not queued: `p` is still ours.
        Ok(false) => Err((EBUSY, unsafe { Arc::from_raw(p) })),
        // SAFETY: As above.
        Err(e) => Err((e, unsafe { Arc::from_raw(p) })),
    }
}

/// A work item: a `kthread_work` and the item's data, in one reference-counted allocation.
///
/// Dereferences to the data.
///
/// # Invariants
///
/// - `work` is initialised with `func` = `work_fn::<T>`, and `self` is inside an `Arc`.
/// - Each pending queue entry of `work` holds one reference from `Arc::into_raw`.
/// - `owner` is null until the first queue, then the worker the item is bound to.
#[pin_data(PinnedDrop)]
pub struct Work<T> {
    #[pin]
    pub(super) work: Opaque<bindings::kthread_work>,
    pub(super) owner: Atomic<*mut Inner>,
    #[pin]
    data: T,
}

// SAFETY: The C work is only touched under its worker's lock; `T` is `Send + Sync`.
unsafe impl<T: Send + Sync> Send for Work<T> {}
// SAFETY: As for `Send`.
unsafe impl<T: Send + Sync> Sync for Work<T> {}

impl<T: WorkItem> Work<T> {
    /// A new work item holding `data` (a value, or a pin-initialiser for data that must not
    /// move, such as a `Completion`), not queued anywhere yet.
    ///
    /// # Context
    ///
    /// May sleep (`GFP_KERNEL`).
    pub fn new(data: impl PinInit<T>) -> Result<Arc<Self>> {
        kernel::task::might_sleep();
        // INVARIANT: `work` gets `work_fn::<T>`; the `Arc` holds the item.
        Arc::pin_init(
            pin_init!(Self {
                work <- Opaque::ffi_init(|slot: *mut bindings::kthread_work| {
                    // SAFETY: `slot` is valid for writes and pinned in the `Arc`.
                    unsafe { init_work(slot, Some(work_fn::<T>)) }
                }),
                owner: Atomic::new(ptr::null_mut()),
                data <- data,
            }),
            GFP_KERNEL,
        )
    }
}

impl<T> Deref for Work<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T> PinnedDrop for Work<T> {
    fn drop(self: Pin<&mut Self>) {
        unbind(&self.owner);
    }
}

/// `kthread_init_work()`: zero the work, an empty list node, and `func`.
///
/// # Safety
///
/// `w` is valid for writes and does not move afterwards.
pub(super) unsafe fn init_work(
    w: *mut bindings::kthread_work,
    func: Option<unsafe extern "C" fn(*mut bindings::kthread_work)>,
) {
    // SAFETY: By the function's safety requirement.
    unsafe {
        ptr::write_bytes(w, 0, 1);
        bindings::INIT_LIST_HEAD(&raw mut (*w).node);
        (*w).func = func;
    }
}

/// The C `func` of every [`Work<T>`].
///
/// # Safety
///
/// Called by the worker with a `kthread_work` of a pending `Work<T>`.
unsafe extern "C" fn work_fn<T: WorkItem>(w: *mut bindings::kthread_work) {
    // SAFETY: `w` is the `work` field of a `Work<T>` (the function's safety requirement);
    // `Opaque` is transparent.
    let item =
        unsafe { kernel::container_of!(w.cast::<Opaque<bindings::kthread_work>>(), Work<T>, work) };
    // SAFETY: The queue entry that the worker just took held this reference (invariant).
    let work = unsafe { Arc::from_raw(item.cast_const()) };
    // SAFETY: This runs on the worker's thread.
    let inner = unsafe { owner_of(&work.owner) };
    T::run(work, &WorkerRef { inner: &inner });
}

/// The `Arc<Inner>` of the worker that an item (being run by it) is bound to, borrowed for the
/// run: it takes no reference, and must not be dropped (`ManuallyDrop`).
///
/// # Safety
///
/// The caller runs on the thread of the worker that the item is bound to, and the result does
/// not outlive the run (the caller's frame).
pub(super) unsafe fn owner_of(owner: &Atomic<*mut Inner>) -> ManuallyDrop<Arc<Inner>> {
    let p = owner.load(ordering::Acquire);
    // SAFETY: A queued item is bound (`owner` non-null, from `Arc::into_raw`); the item is
    // alive (the run's reference), so `p` points to its worker's `Inner`. That `Inner` outlives
    // the run, even if the run drops the item: it is freed only by its last reference, and
    // whoever ends the worker (its handle's drop, the teardown thread of H20, the reaper) keeps
    // one until its thread (this thread) has stopped, while a forgotten handle's is never
    // given up (see `PinnedDrop for Inner`: C's `kthread_worker_fn()` itself uses `raw` after
    // each run). So the borrowed `Arc` is valid for the run, and a clone of it is a valid new
    // reference. `ManuallyDrop`: this takes no reference, so none may be given up.
    ManuallyDrop::new(unsafe { Arc::from_raw(p) })
}

/// The closure of [`Worker::queue_fn`], taken by its one run.
pub(super) struct FnWork<F>(pub(super) core::cell::UnsafeCell<Option<F>>);

// SAFETY: The closure is only taken, by the single run of its one-shot work item; `F: Send`.
unsafe impl<F: Send> Sync for FnWork<F> {}

impl<F: FnOnce() + Send + 'static> WorkItem for FnWork<F> {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        // SAFETY: A `queue_fn` item is queued once and never shared, so this run is the only
        // access to the closure.
        if let Some(f) = unsafe { (*work.0.get()).take() } {
            f();
        }
    }
}
