// SPDX-License-Identifier: GPL-2.0

//! kthread_worker: one kernel thread that runs queued work items in order.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)
//!
//! A [`Worker`] owns its thread. Work items are reference counted ([`Work`], [`DelayedWork`]):
//! queueing hands one reference to the worker, which gives it back to the item's
//! [`WorkItem::run`] (or drops it, when the item is cancelled before it runs). An item is bound
//! to the first worker that it is queued on. Every operation goes through `&Worker`, so none can
//! outlive it, and dropping the worker first refuses new work, then cancels the pending delayed
//! work, runs the pending work, and destroys the thread.
//!
//! # Examples
//!
//! ```ignore
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use kernel::sync::Arc;
//! use kthread_rs::worker::{Work, WorkItem, Worker, WorkerRef};
//!
//! struct Counter(AtomicU32);
//!
//! impl WorkItem for Counter {
//!     fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
//!         work.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let worker = Worker::create(fmt!("mydrv-worker"))?;
//! let work = Work::new(Counter(AtomicU32::new(0)))?;
//! worker.queue(work.clone()).map_err(|(e, _work)| e)?;
//! worker.flush(&work)?;
//! assert_eq!(work.0.load(Ordering::Relaxed), 1);
//! // The one-line form: a closure, run once.
//! worker.queue_fn(|| pr_info!("ran on the worker\n"))?;
//! # Ok::<(), Error>(())
//! ```

use super::{sys, thread::NUMA_NO_NODE};
use core::{
    mem::ManuallyDrop,
    ops::Deref,
    ptr::{self, NonNull},
    sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering},
};
use kernel::{
    bindings,
    cpu::CpuId,
    error::from_err_ptr,
    fmt,
    prelude::*,
    str::CString,
    sync::{Arc, LockClassKey},
    task::Task,
    time::{msecs_to_jiffies, Delta},
    types::Opaque,
};

/// What a queued item does when the worker runs it.
pub trait WorkItem: Send + Sync + Sized + 'static {
    /// Run on the worker's thread, once per successful queue, with the reference that the queue
    /// held. `worker` can queue work (this item too) on the same worker.
    fn run(work: Arc<Work<Self>>, worker: &WorkerRef<'_>);
}

/// What a queued delayed item does when the worker runs it; see [`WorkItem`].
pub trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// Run on the worker's thread, once per successful queue (and once per queueing
    /// [`Worker::mod_delayed`]), with the reference that the queue held.
    fn run(work: Arc<DelayedWork<Self>>, worker: &WorkerRef<'_>);
}

/// The worker's own state, shared with the works it runs.
///
/// # Invariants
///
/// - `raw` is a worker made by `kthread_create_worker_on_*()` and woken; it is destroyed only
///   by [`Worker`]'s drop. `Inner` itself lives on (in an `Arc`) while an item is bound to it,
///   so that its address identifies its worker exactly; `raw` is used only through the live
///   `Worker` or by a work that the live worker runs.
/// - `gate`: bit 0 is set once the worker is closing; the rest counts the queueing calls in
///   flight through a [`WorkerRef`] (in units of 2). Once the bit is set and the count is zero,
///   nothing is queued on `raw` any more: calls through `&Worker` need no count, as `Drop` needs
///   exclusive access (no `&Worker` exists while it runs), and a drop on the worker's own
///   thread sets the bit and leaves no `Worker`.
struct Inner {
    raw: NonNull<bindings::kthread_worker>,
    gate: AtomicUsize,
}

// SAFETY: The C worker is made for concurrent use (its own lock); `gate` is atomic.
unsafe impl Send for Inner {}
// SAFETY: As for `Send`.
unsafe impl Sync for Inner {}

const CLOSING: usize = 1;
const IN_FLIGHT: usize = 2;

impl Inner {
    fn raw(&self) -> *mut bindings::kthread_worker {
        self.raw.as_ptr()
    }

    /// Is the caller the worker's own thread (a work that it runs)?
    fn on_worker(&self) -> bool {
        // SAFETY: `raw` is a live worker (invariant); `task` is set at creation and cleared
        // only when the thread exits, at destroy.
        let task = unsafe { (*self.raw()).task };
        ptr::eq(task, Task::current_raw())
    }

    /// Bind `owner` (an item's) to this worker, or check that it is bound to it (H10). The
    /// item then holds a reference to `this`, so that the address is never reused by another
    /// worker while the item exists.
    fn bind(this: &Arc<Inner>, owner: &AtomicPtr<Inner>) -> Result {
        let me = Arc::as_ptr(this).cast_mut();
        if owner.load(Ordering::Acquire) == me {
            return Ok(());
        }
        let mine = Arc::into_raw(this.clone()).cast_mut();
        match owner.compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(other) => {
                // SAFETY: `mine` came from `Arc::into_raw` above and was not stored.
                drop(unsafe { Arc::from_raw(mine) });
                if other == me {
                    Ok(())
                } else {
                    // The C code would WARN: a kthread_work must not be used with two workers.
                    Err(EINVAL)
                }
            }
        }
    }

    /// Is `owner` bound to this worker? Items never queued here are not.
    fn owns(&self, owner: &AtomicPtr<Inner>) -> bool {
        ptr::eq(owner.load(Ordering::Acquire), self)
    }

    /// Run `f` (a queueing call) unless the worker is closing; `ESHUTDOWN` if it is. Lock-free,
    /// so that queueing works in any context, as in C.
    fn queue_with(&self, f: impl FnOnce() -> bool) -> Result<bool> {
        if self.gate.fetch_add(IN_FLIGHT, Ordering::AcqRel) & CLOSING != 0 {
            self.gate.fetch_sub(IN_FLIGHT, Ordering::AcqRel);
            return Err(sys::eshutdown());
        }
        let r = f();
        self.gate.fetch_sub(IN_FLIGHT, Ordering::AcqRel);
        Ok(r)
    }

    /// Refuse new work, and wait until the queueing calls in flight are done.
    fn close(&self) {
        self.gate.fetch_or(CLOSING, Ordering::AcqRel);
        while self.gate.load(Ordering::Acquire) & !CLOSING != 0 {
            kernel::time::delay::fsleep(Delta::from_micros(10));
        }
    }
}

/// Drop the reference to its worker's `Inner` that a bound item holds.
fn unbind(owner: &AtomicPtr<Inner>) {
    let p = owner.swap(ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: A non-null owner came from `Arc::into_raw` in `Inner::bind`.
        drop(unsafe { Arc::from_raw(p) });
    }
}

/// A worker as seen by the works it runs: lets a work queue more work on its own worker.
pub struct WorkerRef<'a> {
    inner: &'a Arc<Inner>,
}

impl WorkerRef<'_> {
    /// Queue `work` on this worker; see [`Worker::queue`].
    pub fn queue<T: WorkItem>(&self, work: Arc<Work<T>>) -> Result<(), (Error, Arc<Work<T>>)> {
        queue(self.inner, work, Via::Ref)
    }

    /// Queue `work` after `delay`; see [`Worker::queue_delayed`].
    pub fn queue_delayed<T: DelayedWorkItem>(
        &self,
        work: Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result<(), (Error, Arc<DelayedWork<T>>)> {
        queue_delayed(self.inner, work, delay, Via::Ref)
    }
}

/// An owned kthread_worker. Dropping it refuses new work, cancels the pending delayed work,
/// runs the pending work, then destroys the worker and its thread (never the WARN of
/// `kthread_destroy_worker()` about pending delayed work, H9).
///
/// # Invariants
///
/// `inner` is a pinned, live allocation owned by this handle, dropped only by `Drop`.
pub struct Worker {
    inner: ManuallyDrop<Arc<Inner>>,
}

impl Worker {
    /// Create and start a worker whose thread is named `name`, on any CPU and node.
    pub fn create(name: fmt::Arguments<'_>) -> Result<Self> {
        Self::create_on_node(NUMA_NO_NODE, false, name)
    }

    /// Create and start a worker on NUMA `node` ([`NUMA_NO_NODE`]: any), freezable if asked
    /// (`KTW_FREEZABLE`: it freezes during suspend).
    pub fn create_on_node(node: i32, freezable: bool, name: fmt::Arguments<'_>) -> Result<Self> {
        super::thread::check_node(node)?;
        let name = CString::try_from_fmt(name)?;
        // SAFETY: The name goes through "%s", never as the format; `node` was checked.
        let raw = unsafe {
            bindings::kthread_create_worker_on_node(
                flags(freezable),
                node,
                c"%s".as_char_ptr(),
                name.as_char_ptr(),
            )
        };
        Self::start(raw)
    }

    /// Create and start a worker whose thread is bound to `cpu`, freezable if asked.
    pub fn create_on_cpu(cpu: CpuId, freezable: bool, name: fmt::Arguments<'_>) -> Result<Self> {
        let name = CString::try_from_fmt(name)?;
        let fmt = super::thread::escape_percent(&name)?;
        // SAFETY: `cpu` is a valid CPU id (type invariant); `fmt` is NUL-terminated, without
        // conversions (every '%' of the name is escaped).
        let raw = unsafe {
            bindings::kthread_create_worker_on_cpu(
                cpu.as_u32() as c_int,
                flags(freezable),
                fmt.as_ptr().cast(),
            )
        };
        Self::start(raw)
    }

    fn start(raw: *mut bindings::kthread_worker) -> Result<Self> {
        let raw = NonNull::new(from_err_ptr(raw)?).ok_or(ENOMEM)?;
        let inner = Arc::new(
            Inner {
                raw,
                gate: AtomicUsize::new(0),
            },
            GFP_KERNEL,
        );
        let inner = match inner {
            Ok(inner) => inner,
            Err(e) => {
                // SAFETY: `raw` is a worker that was never woken and has no work.
                unsafe { bindings::kthread_destroy_worker(raw.as_ptr()) };
                return Err(e.into());
            }
        };
        // SAFETY: `raw` was just made; 7.2 does not wake a new worker's thread.
        unsafe { bindings::wake_up_process((*raw.as_ptr()).task) };
        // INVARIANT: `raw` is woken and owned by `inner`, owned by this handle.
        Ok(Worker {
            inner: ManuallyDrop::new(inner),
        })
    }

    /// The worker's thread.
    pub fn task(&self) -> &Task {
        // SAFETY: The thread lives as long as the worker, and `Task` is transparent over
        // `task_struct`.
        unsafe { &*(*self.inner.raw()).task.cast::<Task>() }
    }

    /// Queue `work` (the C `kthread_queue_work()`): the reference moves to the worker, which
    /// hands it to [`WorkItem::run`].
    ///
    /// On error, the reference comes back with the reason: `EBUSY` if the work is pending
    /// already (H12), `EINVAL` if it is bound to another worker (H10). (A work queueing through
    /// its [`WorkerRef`] also gets `ESHUTDOWN` once the worker is being dropped.)
    pub fn queue<T: WorkItem>(&self, work: Arc<Work<T>>) -> Result<(), (Error, Arc<Work<T>>)> {
        queue(&self.inner, work, Via::Owner)
    }

    /// Queue `work` to run after `delay` (the C `kthread_queue_delayed_work()`); errors as
    /// for [`Worker::queue`]. `EBUSY` also while another queue, modify or cancel of the same
    /// delayed work runs on another thread (C refuses a queue during a cancel too): one
    /// operation at a time per delayed work keeps C from dropping a queue entry unseen.
    pub fn queue_delayed<T: DelayedWorkItem>(
        &self,
        work: Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result<(), (Error, Arc<DelayedWork<T>>)> {
        queue_delayed(&self.inner, work, delay, Via::Owner)
    }

    /// Run `work` after `delay` from now, whether it is pending or not (the C
    /// `kthread_mod_delayed_work()`). Returns whether it was pending before. `EBUSY` while
    /// another queue, modify or cancel of the same delayed work runs (see
    /// [`Worker::queue_delayed`]); C would ignore a modify during a cancel.
    pub fn mod_delayed<T: DelayedWorkItem>(
        &self,
        work: &Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result<bool> {
        let inner = &*self.inner;
        Inner::bind(inner, &work.owner)?;
        if !try_begin_queue(work.op()) {
            return Err(EBUSY);
        }
        // The reference for a new queue entry must exist before C can run the work: with a
        // zero delay, the worker may run it before `kthread_mod_delayed_work()` returns.
        let p = Arc::into_raw(work.clone());
        let r = inner.queue_with(|| {
            // SAFETY: `work` is bound to this live worker, and initialised (`DelayedWork`'s
            // invariant). First let a timer callback that already runs finish as usual (see
            // `cancel_delayed`). Then, when C returns false it queued an idle work, whose entry
            // takes the reference `p`; when true, the entry that existed stays, `p` unused.
            unsafe {
                bindings::timer_delete_sync(&raw mut (*work.dwork_ptr()).timer);
                bindings::kthread_mod_delayed_work(inner.raw(), work.dwork_ptr(), jiffies(delay))
            }
        });
        end_op(work.op());
        if !matches!(r, Ok(false)) {
            // SAFETY: Not taken by a new queue entry: `p` is still ours.
            drop(unsafe { Arc::from_raw(p) });
        }
        r
    }

    /// Wait until `work`, if pending or running, has run (the C `kthread_flush_work()`).
    ///
    /// `EDEADLK` from a work running on this worker (H11).
    pub fn flush<T: WorkItem>(&self, work: &Work<T>) -> Result {
        self.refuse_own_thread()?;
        if self.inner.owns(&work.owner) {
            // SAFETY: `work` is initialised and bound to this live worker.
            unsafe { bindings::kthread_flush_work(work.work.get()) };
        }
        Ok(())
    }

    /// Wait until every work queued so far has run (the C `kthread_flush_worker()`).
    ///
    /// `EDEADLK` from a work running on this worker (H11).
    pub fn flush_all(&self) -> Result {
        self.refuse_own_thread()?;
        // SAFETY: The worker is live; the caller is not its thread.
        unsafe { bindings::kthread_flush_worker(self.inner.raw()) };
        Ok(())
    }

    /// Cancel `work` and wait until it is not running (the C `kthread_cancel_work_sync()`).
    /// Returns whether it was pending: its queue reference is then dropped, [`WorkItem::run`]
    /// will not see it.
    ///
    /// `EDEADLK` from a work running on this worker (H11).
    pub fn cancel_sync<T: WorkItem>(&self, work: &Work<T>) -> Result<bool> {
        // SAFETY: Called only once `work` is known to be bound to this live worker; it is
        // initialised (type invariant).
        self.cancel_with(work, &work.owner, || unsafe {
            bindings::kthread_cancel_work_sync(work.work.get())
        })
    }

    /// Cancel a delayed `work` (timer or queue) and wait until it is not running (the C
    /// `kthread_cancel_delayed_work_sync()`); see [`Worker::cancel_sync`].
    ///
    /// A queue or modify of the same delayed work from another thread meanwhile gets `EBUSY`
    /// (so that C never sees its timer fire during the cancel, when it would drop the entry
    /// unseen); a second cancel waits for this one.
    pub fn cancel_delayed_sync<T: DelayedWorkItem>(&self, work: &DelayedWork<T>) -> Result<bool> {
        self.cancel_with(work, &work.owner, || {
            begin_cancel(work.op());
            // SAFETY: As in `cancel_sync`.
            let r = unsafe { cancel_delayed(work.dwork_ptr()) };
            end_op(work.op());
            r
        })
    }

    /// The shared part of the cancels: refuse the worker's own thread, leave items of other
    /// workers alone, and drop the reference of the queue entry that `cancel` (a C cancel
    /// that returns whether the work was pending) removed.
    fn cancel_with<W>(
        &self,
        work: &W,
        owner: &AtomicPtr<Inner>,
        cancel: impl FnOnce() -> bool,
    ) -> Result<bool> {
        self.refuse_own_thread()?;
        if !self.inner.owns(owner) {
            return Ok(false);
        }
        let was_pending = cancel();
        if was_pending {
            // SAFETY: The cancelled queue entry held a reference from `Arc::into_raw` of the
            // item `work` is, which is now ours; the caller's reference keeps the item alive.
            drop(unsafe { Arc::from_raw(ptr::from_ref(work)) });
        }
        Ok(was_pending)
    }

    /// Queue a closure that runs once on the worker: the one-line form of a work item.
    pub fn queue_fn(&self, f: impl FnOnce() + Send + 'static) -> Result {
        let item = Work::new(FnWork(core::cell::UnsafeCell::new(Some(f))))?;
        self.queue(item).map_err(|(e, _)| e)
    }

    fn refuse_own_thread(&self) -> Result {
        if self.inner.on_worker() {
            return Err(sys::edeadlk());
        }
        Ok(())
    }

    /// Cancel every delayed work whose timer is still pending (they are on the C worker's
    /// `delayed_work_list`), dropping the queue's reference of each.
    fn cancel_all_delayed(&self) {
        let raw = self.inner.raw();
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
            // SAFETY: `h` is alive (our reference).
            let op = unsafe { op_cell(h) };
            begin_cancel(op);
            // SAFETY: `h` is alive (our reference), initialised, and bound to this worker.
            let was_pending = unsafe { cancel_delayed(&raw mut (*h).dwork) };
            end_op(op);
            if was_pending {
                // SAFETY: The cancelled entry's queue reference is now ours.
                unsafe { ((*h).release)(h) };
            }
            // SAFETY: Our own reference, taken above.
            unsafe { ((*h).release)(h) };
        }
    }
}

impl Deref for Worker {
    type Target = Task;
    fn deref(&self) -> &Task {
        self.task()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.inner.on_worker() {
            // A work drops its own worker: flushing and stopping would wait for this very
            // work. Refuse new work and leave the worker running (leaked): the C code cannot
            // destroy it from there either. As with `mem::forget`, the module must not be
            // unloaded while its works can still run.
            self.inner.gate.fetch_or(CLOSING, Ordering::AcqRel);
            pr_warn!("kthread_rs: a worker was dropped by one of its works; it is left running\n");
            return;
        }
        kernel::task::might_sleep();
        // INVARIANT: From here on nothing is queued: a work that tries gets `ESHUTDOWN`.
        self.inner.close();
        self.cancel_all_delayed();
        // SAFETY: The worker is live; flushing runs the works that are still pending, so
        // that each gets its reference back.
        unsafe { bindings::kthread_flush_worker(self.inner.raw()) };
        // SAFETY: Nothing is pending or can be queued; `raw` is not used after this (works use
        // it only while the worker runs them, and none will run; bound items keep `Inner`, not
        // `raw`, and reach `raw` only through a live `Worker` that owns them).
        unsafe { bindings::kthread_destroy_worker(self.inner.raw()) };
        // SAFETY: Dropped once, here; not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
    }
}

/// `kthread_cancel_delayed_work_sync()`, made to report every pending entry it removes.
///
/// C cancels the timer with `work->canceling` raised; a timer callback that was already running
/// then drops the work from its list without queueing it, and the cancel reports "not pending":
/// the entry's queue reference would leak. Deleting the timer first, with nothing raised, lets
/// such a callback finish as usual (the work moves to the work list), so C's cancel sees the
/// entry. (Two cancellers of one work at once can still meet the C behaviour: then a reference
/// leaks, never a use-after-free.)
///
/// # Safety
///
/// `dwork` is an initialised delayed work bound to a live worker.
unsafe fn cancel_delayed(dwork: *mut bindings::kthread_delayed_work) -> bool {
    // SAFETY: By the function's safety requirement; the timer is initialised. Deleting a
    // pending timer leaves the work on the delayed list, where the C cancel below finds it.
    unsafe {
        bindings::timer_delete_sync(&raw mut (*dwork).timer);
        bindings::kthread_cancel_delayed_work_sync(dwork)
    }
}

fn flags(freezable: bool) -> c_uint {
    if freezable {
        bindings::KTW_FREEZABLE
    } else {
        0
    }
}

fn jiffies(d: Delta) -> c_ulong {
    msecs_to_jiffies(u32::try_from(d.as_millis().max(0)).unwrap_or(u32::MAX))
}

/// Who queues: the owner through `&Worker`, or a running work through its [`WorkerRef`].
#[derive(Clone, Copy)]
enum Via {
    Owner,
    Ref,
}

fn queue<T: WorkItem>(
    inner: &Arc<Inner>,
    work: Arc<Work<T>>,
    via: Via,
) -> Result<(), (Error, Arc<Work<T>>)> {
    if let Err(e) = Inner::bind(inner, &work.owner) {
        return Err((e, work));
    }
    let raw_work = work.work.get();
    // SAFETY: `raw_work` is initialised and bound to this live worker.
    hand_over(inner, work, via, || unsafe {
        bindings::kthread_queue_work(inner.raw(), raw_work)
    })
}

fn queue_delayed<T: DelayedWorkItem>(
    inner: &Arc<Inner>,
    work: Arc<DelayedWork<T>>,
    delay: Delta,
    via: Via,
) -> Result<(), (Error, Arc<DelayedWork<T>>)> {
    if let Err(e) = Inner::bind(inner, &work.owner) {
        return Err((e, work));
    }
    if !try_begin_queue(work.op()) {
        return Err((EBUSY, work));
    }
    // Ours until the operation ends: the queued reference may be gone by then.
    let keep = work.clone();
    let dwork = work.dwork_ptr();
    // SAFETY: As in `queue`; the timer was set up by `DelayedWork::new` as the C macro does.
    let r = hand_over(inner, work, via, || unsafe {
        bindings::kthread_queue_delayed_work(inner.raw(), dwork, jiffies(delay))
    });
    end_op(keep.op());
    r
}

/// Hand one reference of `work` to a queue entry made by `call` (a C queueing function that
/// returns whether it queued): the reference is the entry's, which its run takes back; if
/// nothing was queued (`EBUSY`: pending already; or the worker is closing) it comes back.
///
/// `call` uses a raw pointer taken before: once queued, the item may run and be freed before
/// `call` returns, so no reference to it may live across the call.
fn hand_over<W>(
    inner: &Inner,
    work: Arc<W>,
    via: Via,
    call: impl FnOnce() -> bool,
) -> Result<(), (Error, Arc<W>)> {
    let p = Arc::into_raw(work);
    // The owner's `&Worker` rules out its drop, hence closing, for the whole call (see the
    // invariants of `Inner`); only a running work's queueing races with closing.
    let r = match via {
        Via::Owner => Ok(call()),
        Via::Ref => inner.queue_with(call),
    };
    match r {
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
    work: Opaque<bindings::kthread_work>,
    owner: AtomicPtr<Inner>,
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
    pub fn new(data: impl PinInit<T>) -> Result<Arc<Self>> {
        // INVARIANT: `work` gets `work_fn::<T>`; the `Arc` holds the item.
        Arc::pin_init(
            pin_init!(Self {
                work <- Opaque::ffi_init(|slot: *mut bindings::kthread_work| {
                    // SAFETY: `slot` is valid for writes and pinned in the `Arc`.
                    unsafe { init_work(slot, Some(work_fn::<T>)) }
                }),
                owner: AtomicPtr::new(ptr::null_mut()),
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
unsafe fn init_work(
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
    let inner = owner_of(&work.owner);
    T::run(work, &WorkerRef { inner: &inner });
}

/// The `Arc<Inner>` of the worker that an item (being run by it) is bound to.
fn owner_of(owner: &AtomicPtr<Inner>) -> Arc<Inner> {
    let p = owner.load(Ordering::Acquire);
    // SAFETY: A queued item is bound (`owner` non-null, from `Arc::into_raw`), and stays bound
    // while it exists; the item is alive (the run's reference). Take a new reference.
    let borrowed = ManuallyDrop::new(unsafe { Arc::from_raw(p) });
    Arc::clone(&borrowed)
}

/// The start of every [`DelayedWork`]: the C delayed work and type-erased reference counting,
/// so that a worker's drop can cancel its pending delayed works whatever their type.
#[repr(C)]
struct DelayedHeader {
    dwork: bindings::kthread_delayed_work,
    acquire: unsafe fn(*mut DelayedHeader),
    release: unsafe fn(*mut DelayedHeader),
    /// Which of our operations on this delayed work runs: `OP_IDLE`, `OP_QUEUE` (a queue or a
    /// modify) or `OP_CANCEL`. One at a time; see [`op_cell`].
    op: AtomicU32,
}

const OP_IDLE: u32 = 0;
const OP_QUEUE: u32 = 1;
const OP_CANCEL: u32 = 2;

/// The operation state of the delayed work whose header is `h`.
///
/// C raises `canceling` while it cancels the timer with the worker unlocked, and a timer that
/// fires then drops its work silently (`kthread_delayed_work_timer_fn()`): the queue entry's
/// reference would leak. Our cancel and modify first delete the timer with nothing raised, so
/// the timer can fire in C's window only if another thread arms it again in between. One
/// operation at a time per delayed work rules that out: a queue or modify that finds another
/// operation running returns `EBUSY` at once (it may run in interrupt context, and a cancel may
/// be waiting for the work that queues), and a cancel waits for its turn.
///
/// # Safety
///
/// `h` is the header of a live `DelayedWork`.
unsafe fn op_cell<'a>(h: *mut DelayedHeader) -> &'a AtomicU32 {
    // SAFETY: By the function's safety requirement; only the atomic field is borrowed, never
    // the C part that C writes.
    unsafe { &(*h).op }
}

/// Start a queue or modify: `false` if another operation on the work runs.
fn try_begin_queue(op: &AtomicU32) -> bool {
    op.compare_exchange(OP_IDLE, OP_QUEUE, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Start a cancel, sleeping until no other operation on the work runs.
fn begin_cancel(op: &AtomicU32) {
    while op
        .compare_exchange(OP_IDLE, OP_CANCEL, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // A queue or modify ends within microseconds; another cancel may wait for a work.
        kernel::time::delay::fsleep(Delta::from_micros(50));
    }
}

fn end_op(op: &AtomicU32) {
    op.store(OP_IDLE, Ordering::Release);
}

/// A delayed work item: a `kthread_delayed_work` (a work and its timer) and the item's data,
/// in one reference-counted allocation. Make it with [`new_delayed_work!`](crate::new_delayed_work) (one timer lock
/// class per call site, as the C `kthread_init_delayed_work()` does: H13).
///
/// Dereferences to the data.
///
/// # Invariants
///
/// As for [`Work`]; `dwork` starts with a `DelayedHeader` whose timer runs
/// `kthread_delayed_work_timer_fn()` with `TIMER_IRQSAFE`.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct DelayedWork<T> {
    #[pin]
    dwork: Opaque<DelayedHeader>,
    owner: AtomicPtr<Inner>,
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
/// let worker = Worker::create(fmt!("mydrv-wd"))?;
/// let wd = crate::new_delayed_work!(Watchdog)?;
/// worker.queue_delayed(wd.clone(), Delta::from_secs(5)).map_err(|(e, _)| e)?;
/// worker.mod_delayed(&wd, Delta::from_secs(5))?; // pet it
/// worker.cancel_delayed_sync(&wd)?; // done: it will not fire
/// # Ok::<(), Error>(())
/// ```
#[macro_export]
macro_rules! new_delayed_work {
    ($data:expr $(,)?) => {
        $crate::kthread_rs::worker::DelayedWork::new(
            $data,
            ::kernel::c_str!(::core::concat!(::core::file!(), ":", ::core::line!())),
            ::kernel::static_lock_class!(),
        )
    };
}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// A new delayed work holding `data`; prefer [`new_delayed_work!`](crate::new_delayed_work), which gives the
    /// timer a lock class and name of the call site.
    pub fn new(
        data: impl PinInit<T>,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> Result<Arc<Self>> {
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
                        (&raw mut (*slot).op).write(AtomicU32::new(OP_IDLE));
                    }
                }),
                owner: AtomicPtr::new(ptr::null_mut()),
                data <- data,
            }),
            GFP_KERNEL,
        )
    }
}

impl<T> DelayedWork<T> {
    fn dwork_ptr(&self) -> *mut bindings::kthread_delayed_work {
        // `dwork` is the first field of `DelayedHeader` (`repr(C)`).
        self.dwork.get().cast()
    }

    fn op(&self) -> &AtomicU32 {
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
/// `h` is the header of a live `DelayedWork<T>` inside an `Arc`.
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
/// `h` is the header of a `DelayedWork<T>`, and the caller owns one reference to it.
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
    let inner = owner_of(&work.owner);
    T::run(work, &WorkerRef { inner: &inner });
}

/// The closure of [`Worker::queue_fn`], taken by its one run.
struct FnWork<F>(core::cell::UnsafeCell<Option<F>>);

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
