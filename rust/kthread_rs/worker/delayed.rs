// SPDX-License-Identifier: GPL-2.0

//! Delayed work on a kthread_worker: a work item with its timer (`kthread_delayed_work`).
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::{
    delayed_op::{self, DelayedC, OpState},
    init_work, owner_of, unbind, Inner, Worker, WorkerRef,
};
use core::{marker::PhantomData, ops::Deref, ptr};
use kernel::{
    bindings,
    prelude::*,
    sync::{atomic::Atomic, Arc, LockClassKey},
    time::{msecs_to_jiffies, Delta},
    types::Opaque,
};

/// What a queued delayed item does when the worker runs it; see [`WorkItem`](super::WorkItem).
pub trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// Run on the worker's thread, once per successful queue (and once per queueing
    /// [`Worker::mod_delayed`]), with the reference that the queue held.
    fn run(work: Arc<DelayedWork<Self>>, worker: &WorkerRef<'_>);
}

impl Worker {
    /// Run `work` after `delay` from now, whether it is pending or not (the C
    /// `kthread_mod_delayed_work()`). Returns whether it was pending before. `EBUSY` while
    /// another queue, modify or cancel of the same delayed work runs (see
    /// [`Worker::queue_delayed`]); C would ignore a modify during a cancel.
    ///
    /// # Context
    ///
    /// Any context (the timer is irq-safe, so deleting it never sleeps).
    pub fn mod_delayed<T: DelayedWorkItem>(
        &self,
        work: &Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result<bool> {
        let inner = &*self.inner;
        Inner::bind(inner, &work.owner)?;
        // SAFETY: `work` is a live item bound to `inner` just above, and `work` is the
        // caller's reference, held throughout.
        unsafe {
            delayed_op::modify(
                work.op(),
                &Call::new(inner, DelayedWork::header_of(work), jiffies(delay)),
            )
        }
    }

    /// Cancel a delayed `work` (timer or queue) and wait until it is not running (the C
    /// `kthread_cancel_delayed_work_sync()`); see [`Worker::cancel_sync`].
    ///
    /// A queue or modify of the same delayed work from another thread meanwhile gets `EBUSY`
    /// (so that C never sees its timer fire during the cancel, when it would drop the entry
    /// unseen); a second cancel waits for this one.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn cancel_delayed_sync<T: DelayedWorkItem>(&self, work: &DelayedWork<T>) -> Result<bool> {
        kernel::task::might_sleep();
        // SAFETY: `cancel_with` runs the closure only once `work` is known to be bound to this
        // live worker, inside its gate, and never on the worker's thread; `work` is live for
        // the call (the caller's reference). A cancel makes and gives up no reference, so the
        // header's pointer needs no more than the work's own provenance.
        self.cancel_with(work, &work.owner, || unsafe {
            delayed_op::cancel(work.op(), &Call::new(&self.inner, work.header(), 0))
        })
    }
}

/// Delayed works that a teardown cancelled, each with one reference of the teardown's own:
/// given up only once the teardown is over ([`Cancelled::release`]), as a work's destructor
/// may drop this very worker or a thread that the teardown waits for (found by review: the
/// reaper then waited for itself). Chained through the `next` of their (unused) list node.
///
/// # Invariants
///
/// Every item on the chain is a cancelled delayed work of a closed worker (so on no C list,
/// and never queued again), with one reference owned by the chain.
pub(super) struct Cancelled {
    first: *mut DelayedHeader,
}

impl Cancelled {
    /// Give up the chain's references (each may be an item's last: its destructor runs here).
    pub(super) fn release(self) {
        let mut h = self.first;
        while !h.is_null() {
            // SAFETY: By the type invariant, `h` is alive (the chain's reference) and its node is
            // ours; the next link is read before the reference goes, and the node is made an
            // empty list again, as the C cancel left it.
            unsafe {
                let node = &raw mut (*h).dwork.work.node;
                let next = (*node).next.cast::<DelayedHeader>();
                bindings::INIT_LIST_HEAD(node);
                ((*h).release)(h);
                h = next;
            }
        }
    }
}

impl Inner {
    /// Cancel every delayed work whose timer is still pending (they are on the C worker's
    /// `delayed_work_list`), dropping the queue's reference of each and keeping one of its own
    /// for the caller to give up after the teardown. For the teardown, once the worker is
    /// closed.
    pub(super) fn cancel_all_delayed(&self) -> Cancelled {
        let raw = self.raw();
        let mut cancelled = Cancelled {
            first: ptr::null_mut(),
        };
        loop {
            // SAFETY: `raw` is live; its lock protects `delayed_work_list`.
            unsafe { bindings::_raw_spin_lock_irq(&raw mut (*raw).lock) };
            // SAFETY: Under the lock, the list is stable.
            let head = unsafe { &raw mut (*raw).delayed_work_list };
            // SAFETY: As above.
            let first = unsafe { (*head).next };
            let header = if ptr::eq(first, head) {
                None
            } else {
                // SAFETY: Every item on this worker is ours, and a delayed one starts with a
                // `DelayedHeader` whose `dwork.work.node` is this list node.
                let h = unsafe { kernel::container_of!(first, DelayedHeader, dwork.work.node) };
                // SAFETY: The entry is pending, so its queue reference keeps it alive while
                // the lock is held; take a reference of our own for after the unlock.
                unsafe { ((*h).acquire)(h) };
                Some(h)
            };
            // SAFETY: Locked above.
            unsafe { bindings::_raw_spin_unlock_irq(&raw mut (*raw).lock) };
            let Some(h) = header else { break };
            // SAFETY: `h` is alive (our reference, held throughout), initialised, and bound to
            // this worker, whose teardown this is (never on the worker's thread).
            let was_pending = unsafe { delayed_op::cancel(op_cell(h), &Call::new(self, h, 0)) };
            if was_pending {
                // SAFETY: The cancelled entry's queue reference is now ours; ours, taken above,
                // keeps the item, so this is not its last.
                unsafe { ((*h).release)(h) };
            }
            // INVARIANT: Cancelled on a closed worker: its node is on no list and stays so.
            // SAFETY: `h` is alive (our reference, now the chain's).
            unsafe { (*h).dwork.work.node.next = cancelled.first.cast() };
            cancelled.first = h;
        }
        cancelled
    }
}

fn jiffies(d: Delta) -> c_ulong {
    msecs_to_jiffies(u32::try_from(d.as_millis().max(0)).unwrap_or(u32::MAX))
}

/// Queue `work` after `delay` on `inner` (see [`Worker::queue_delayed`]): a reference of its
/// own goes to the queue entry, so the caller's reference keeps the item alive through the
/// call, and no last reference is ever dropped here (the caller may be an interrupt).
pub(super) fn queue_delayed<T: DelayedWorkItem>(
    inner: &Arc<Inner>,
    work: &Arc<DelayedWork<T>>,
    delay: Delta,
) -> Result {
    Inner::bind(inner, &work.owner)?;
    // SAFETY: `work` is a live item bound to `inner` just above, and `work` is the caller's
    // reference, held throughout.
    unsafe {
        delayed_op::queue(
            work.op(),
            &Call::new(inner, DelayedWork::header_of(work), jiffies(delay)),
        )
    }
}

/// One delayed work on its worker, for the operations of [`delayed_op`]: the C calls on it,
/// and its item's references (through the header's type-erased `acquire` and `release`).
///
/// # Invariants
///
/// For `'a`, `h` is the header of a live, initialised `DelayedWork` inside an `Arc`, bound to
/// `inner`, and carries the provenance of that `Arc`'s allocation (from `Arc::as_ptr`, or a
/// pointer C handed back) whenever [`DelayedC::get`] or [`DelayedC::put`] is called; `delay`
/// is in jiffies (unused by a cancel).
struct Call<'a> {
    inner: &'a Inner,
    h: *mut DelayedHeader,
    delay: c_ulong,
    _p: PhantomData<&'a DelayedHeader>,
}

impl<'a> Call<'a> {
    /// # Safety
    ///
    /// For `'a`, `h` is the header of a live `DelayedWork` inside an `Arc`, bound to `inner`;
    /// for a queue or modify (which make and give up references), `h` has the provenance of
    /// the `Arc`'s allocation.
    unsafe fn new(inner: &'a Inner, h: *mut DelayedHeader, delay: c_ulong) -> Self {
        // INVARIANT: By the function's safety requirement; `DelayedWork::new` initialised it.
        Self {
            inner,
            h,
            delay,
            _p: PhantomData,
        }
    }

    fn dwork(&self) -> *mut bindings::kthread_delayed_work {
        // SAFETY: `h` is live (type invariant); only the address of its field is taken.
        unsafe { &raw mut (*self.h).dwork }
    }
}

// SAFETY: `get` makes a reference (`acquire`); `enter` is the worker's gate (`Inner::enter`),
// which runs `f` only while the worker's queues are open and returns `Ok` only with its
// result; the C calls return what the C functions did.
unsafe impl DelayedC for Call<'_> {
    type Error = Error;

    fn busy() -> Error {
        EBUSY
    }

    fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        self.inner.enter(f)
    }

    fn get(&self) {
        // SAFETY: `h` is the header of a live `DelayedWork<T>` inside an `Arc` (type
        // invariant), of the `T` its `acquire` was made for.
        unsafe { ((*self.h).acquire)(self.h) }
    }

    unsafe fn put(&self) {
        // SAFETY: The caller owns a reference to the item, whose header `h` is (type
        // invariant); it is not the last, so the item stays live for `'a`.
        unsafe { ((*self.h).release)(self.h) }
    }

    unsafe fn timer_delete_sync(&self) {
        // SAFETY: The timer was initialised by `DelayedWork::new` (type invariant), irq-safe.
        // The worker is live (inside its gate, or its teardown), as the callback needs.
        unsafe { bindings::timer_delete_sync(&raw mut (*self.dwork()).timer) };
    }

    unsafe fn queue_delayed(&self) -> bool {
        // SAFETY: The work is initialised and bound to `inner`, which is live, its queues open
        // (inside the gate); the timer was set up by `DelayedWork::new` as the C macro does. A
        // new entry takes the caller's reference (the function's safety requirement).
        unsafe { bindings::kthread_queue_delayed_work(self.inner.raw(), self.dwork(), self.delay) }
    }

    unsafe fn mod_delayed(&self) -> bool {
        // SAFETY: As for `queue_delayed`.
        unsafe { bindings::kthread_mod_delayed_work(self.inner.raw(), self.dwork(), self.delay) }
    }

    unsafe fn cancel_delayed_sync(&self) -> bool {
        // SAFETY: The work is initialised and bound to `inner`, which is live (inside the gate,
        // or its teardown). The caller is not the worker's thread (`cancel_with` refuses it;
        // the teardown never runs there).
        unsafe { bindings::kthread_cancel_delayed_work_sync(self.dwork()) }
    }
}

/// The start of every [`DelayedWork`]: the C delayed work and type-erased reference counting,
/// so that a worker's drop can cancel its pending delayed works whatever their type.
#[repr(C)]
struct DelayedHeader {
    dwork: bindings::kthread_delayed_work,
    acquire: unsafe fn(*mut DelayedHeader),
    release: unsafe fn(*mut DelayedHeader),
    /// Which of our operations on this delayed work runs: one at a time (see
    /// [`delayed_op`], which says why).
    op: OpState,
}

/// The operation state of the delayed work whose header is `h`.
///
/// # Safety
///
/// `h` is the header of a live `DelayedWork`, which outlives `'a`.
unsafe fn op_cell<'a>(h: *mut DelayedHeader) -> &'a OpState {
    // SAFETY: By the function's safety requirement; only the atomic field is borrowed, never
    // the C part that C writes.
    unsafe { &(*h).op }
}

/// A delayed work item: a `kthread_delayed_work` (a work and its timer) and the item's data,
/// in one reference-counted allocation. Make it with
/// [`new_kthread_delayed_work!`](crate::new_kthread_delayed_work) (one timer lock class per
/// call site, as the C `kthread_init_delayed_work()` does: H13).
///
/// Dereferences to the data.
///
/// # Invariants
///
/// As for [`Work`](super::Work); `dwork` starts with a `DelayedHeader` whose timer runs
/// `kthread_delayed_work_timer_fn()` with `TIMER_IRQSAFE`.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct DelayedWork<T> {
    #[pin]
    dwork: Opaque<DelayedHeader>,
    owner: Atomic<*mut Inner>,
    #[pin]
    data: T,
}

// SAFETY: As for `Work`.
unsafe impl<T: Send + Sync> Send for DelayedWork<T> {}
// SAFETY: As for `Work`.
unsafe impl<T: Send + Sync> Sync for DelayedWork<T> {}

/// Make a [`DelayedWork`] holding `data`, with a timer lock class of this call site.
///
/// # Examples
///
/// ```ignore
/// use kernel::{sync::Arc, time::Delta};
/// use kthread_rs::worker::{DelayedWork, DelayedWorkItem, Worker, WorkerRef};
///
/// // A watchdog that fires unless it is pushed back in time.
/// struct Watchdog;
///
/// impl DelayedWorkItem for Watchdog {
///     fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
///         pr_warn!("mydrv: watchdog expired\n");
///     }
/// }
///
/// # let module = kthread_rs::compat::this_module();
/// let worker = Worker::create(module, fmt!("mydrv-wd"))?;
/// let wd = crate::new_kthread_delayed_work!(Watchdog)?;
/// worker.queue_delayed(&wd, Delta::from_secs(5))?;
/// worker.mod_delayed(&wd, Delta::from_secs(5))?; // pet it
/// worker.cancel_delayed_sync(&wd)?; // done: it will not fire
/// # Ok::<(), Error>(())
/// ```
#[macro_export]
macro_rules! new_kthread_delayed_work {
    ($data:expr $(,)?) => {
        $crate::kthread_rs::worker::DelayedWork::new(
            $data,
            ::kernel::c_str!(::core::concat!(::core::file!(), ":", ::core::line!())),
            ::kernel::static_lock_class!(),
        )
    };
}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// A new delayed work holding `data`; prefer
    /// [`new_kthread_delayed_work!`](crate::new_kthread_delayed_work), which gives the timer a
    /// lock class and name of the call site.
    ///
    /// # Context
    ///
    /// May sleep (`GFP_KERNEL`).
    pub fn new(
        data: impl PinInit<T>,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> Result<Arc<Self>> {
        kernel::task::might_sleep();
        // INVARIANT: The header is set up here as the type requires.
        Arc::pin_init(
            pin_init!(Self {
                dwork <- Opaque::ffi_init(|slot: *mut DelayedHeader| {
                    // SAFETY: `slot` is valid for writes and pinned in the `Arc`. The timer is
                    // set up as `kthread_init_delayed_work()` does, with the caller's key.
                    unsafe {
                        init_work(&raw mut (*slot).dwork.work, Some(delayed_work_fn::<T>));
                        bindings::timer_init_key(
                            &raw mut (*slot).dwork.timer,
                            Some(bindings::kthread_delayed_work_timer_fn),
                            bindings::TIMER_IRQSAFE,
                            name.as_char_ptr(),
                            key.as_ptr(),
                        );
                        (&raw mut (*slot).acquire).write(acquire::<T>);
                        (&raw mut (*slot).release).write(release::<T>);
                        (&raw mut (*slot).op).write(OpState::new());
                    }
                }),
                owner: Atomic::new(ptr::null_mut()),
                data <- data,
            }),
            GFP_KERNEL,
        )
    }
}

impl<T> DelayedWork<T> {
    /// The header, with the provenance of `self`'s fields only: enough for the C calls, not
    /// for `acquire` or `release` (which reach the `Arc`'s count).
    fn header(&self) -> *mut DelayedHeader {
        self.dwork.get()
    }

    /// The header of the item in `this`, with the provenance of the whole `Arc` allocation
    /// (the header is at offset 0 of the `repr(C)` item), as `acquire` and `release` need.
    fn header_of(this: &Arc<Self>) -> *mut DelayedHeader {
        Arc::as_ptr(this).cast_mut().cast()
    }

    fn op(&self) -> &OpState {
        // SAFETY: `self` is live and starts with its header.
        unsafe { op_cell(self.dwork.get()) }
    }
}

impl<T> Deref for DelayedWork<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T> PinnedDrop for DelayedWork<T> {
    fn drop(self: Pin<&mut Self>) {
        unbind(&self.owner);
    }
}

/// Take a reference to the `DelayedWork<T>` that starts with `h`.
///
/// # Safety
///
/// `h` is the header of a live `DelayedWork<T>` inside an `Arc`, with the provenance of that
/// `Arc`'s allocation (from `Arc::as_ptr` or `Arc::into_raw`, or a pointer C handed back).
unsafe fn acquire<T>(h: *mut DelayedHeader) {
    // `DelayedWork` is `repr(C)` with the header first, so the pointers are the same.
    // SAFETY: By the function's safety requirement; the clone is kept by leaking it.
    let work = core::mem::ManuallyDrop::new(unsafe { Arc::from_raw(h.cast::<DelayedWork<T>>()) });
    let _ = Arc::into_raw(Arc::clone(&work));
}

/// Drop a reference to the `DelayedWork<T>` that starts with `h`.
///
/// # Safety
///
/// `h` is the header of a `DelayedWork<T>`, with the provenance of its `Arc`'s allocation (as
/// for [`acquire`]), and the caller owns one reference to it.
unsafe fn release<T>(h: *mut DelayedHeader) {
    // SAFETY: By the function's safety requirement.
    drop(unsafe { Arc::from_raw(h.cast::<DelayedWork<T>>()) });
}

/// The C `func` of every [`DelayedWork<T>`].
///
/// # Safety
///
/// As for [`work_fn`].
unsafe extern "C" fn delayed_work_fn<T: DelayedWorkItem>(w: *mut bindings::kthread_work) {
    // `work` is the first field of `kthread_delayed_work`, itself first in the `repr(C)`
    // header and item.
    // SAFETY: As in `work_fn`.
    let work = unsafe { Arc::from_raw(w.cast_const().cast::<DelayedWork<T>>()) };
    // SAFETY: This runs on the worker's thread.
    let inner = unsafe { owner_of(&work.owner) };
    T::run(work, &WorkerRef { inner: &inner });
}
