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
//! work, runs the pending work, and stops the thread.
//!
//! A worker dropped by one of its own works (which cannot wait for itself) is torn down by a
//! thread of its own (H20); a forgotten worker is torn down when the module is unloaded (H21).
//!
//! # Examples
//!
//! ```ignore
//! use kernel::sync::{atomic::{ordering, Atomic}, Arc};
//! use kthread_rs::worker::{Work, WorkItem, Worker, WorkerRef};
//!
//! struct Counter(Atomic<u32>);
//!
//! impl WorkItem for Counter {
//!     fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
//!         work.0.add(1, ordering::Relaxed);
//!     }
//! }
//!
//! # let module = kthread_rs::compat::this_module();
//! // `module`: the driver's `&'static ThisModule` (the one `Module::init` was given).
//! let worker = Worker::create(module, fmt!("mydrv-worker"))?;
//! let work = Work::new(Counter(Atomic::new(0)))?;
//! worker.queue(work.clone()).map_err(|(e, _work)| e)?;
//! worker.flush(&work)?;
//! assert_eq!(work.0.load(ordering::Relaxed), 1);
//! // The one-line form: a closure, run once.
//! worker.queue_fn(|| pr_info!("ran on the worker\n"))?;
//! # Ok::<(), Error>(())
//! ```

use super::{
    registry::{self, Entry, EntryOps, Kind},
    sys,
    thread::{self, NUMA_NO_NODE},
};
use core::{
    mem::ManuallyDrop,
    ops::Deref,
    ptr::{self, NonNull},
};
use kernel::{
    bindings,
    cpu::CpuId,
    error::from_err_ptr,
    fmt,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{ordering, Atomic},
        Arc, Completion,
    },
    task::Task,
    time::Delta,
};

mod delayed;
mod delayed_op;
mod gate;
mod work;
pub use delayed::{DelayedWork, DelayedWorkItem};
use gate::Gate;
use work::{init_work, owner_of, queue, FnWork};
pub use work::{Work, WorkItem};

/// The worker's own state, shared with the works it runs.
///
/// # Invariants
///
/// - `entry` is first (`repr(C)`), linked in the registry from [`Worker::start`] until the
///   worker's teardown claims it: its drop (or a thread its drop handed it to), or the reaper.
/// - `raw` is a worker made by `kthread_create_worker_on_*()` and woken, owned by `Inner` (freed
///   with it), whose thread is `task`; the claimer stops the thread ([`Inner::teardown`]).
///   `Inner` lives on (in an `Arc`) while an item is bound to it, so that its address
///   identifies its worker exactly.
/// - Every operation on `raw` runs inside `gate` ([`Gate::enter`]); once it is closed and
///   no operation is in flight ([`Gate::close`]), nothing touches `raw`'s queues but the
///   teardown.
/// - `done` is completed once the reaper has torn the worker down; `reaper_frees` is set when a
///   drop left the teardown to the reaper, which then gives up the handle's reference.
#[repr(C)]
#[pin_data(PinnedDrop)]
struct Inner {
    entry: Entry,
    raw: NonNull<bindings::kthread_worker>,
    task: ARef<Task>,
    gate: Gate,
    reaper_frees: Atomic<bool>,
    #[pin]
    done: Completion,
}

// SAFETY: The C worker is made for concurrent use (its own lock); the rest is atomic or
// thread-safe.
unsafe impl Send for Inner {}
// SAFETY: As for `Send`.
unsafe impl Sync for Inner {}

/// How the reaper ends a worker.
static WORKER_ENTRY: EntryOps = EntryOps {
    kind: Kind::Worker,
    prepare: prepare_nothing,
    reap: reap_worker,
};

impl Inner {
    fn raw(&self) -> *mut bindings::kthread_worker {
        self.raw.as_ptr()
    }

    /// Is the caller the worker's own thread (a work that it runs)?
    fn on_worker(&self) -> bool {
        ptr::eq(self.task.as_ptr(), Task::current_raw())
    }

    /// Bind `owner` (an item's) to this worker, or check that it is bound to it (H10). The
    /// item then holds a reference to `this`, so that the address is never reused by another
    /// worker while the item exists.
    fn bind(this: &Arc<Inner>, owner: &Atomic<*mut Inner>) -> Result {
        let me = Arc::as_ptr(this).cast_mut();
        if owner.load(ordering::Acquire) == me {
            return Ok(());
        }
        let mine = Arc::into_raw(this.clone()).cast_mut();
        match owner.cmpxchg(ptr::null_mut(), mine, ordering::Full) {
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

    /// Is `owner` bound to this worker (`Ok(true)`), to none yet (`Ok(false)`), or to another
    /// worker (`EINVAL`, H10)?
    fn owns(&self, owner: &Atomic<*mut Inner>) -> Result<bool> {
        let p = owner.load(ordering::Acquire);
        if ptr::eq(p, self) {
            Ok(true)
        } else if p.is_null() {
            Ok(false)
        } else {
            Err(EINVAL)
        }
    }

    /// Run `f` (an operation on `raw`) unless the worker is closing; `ESHUTDOWN` if it is.
    /// Lock-free, so that queueing works in any context, as in C.
    fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        self.gate.enter(f).map_err(|_| eshutdown())
    }

    /// End the worker, whose entry the caller claimed: refuse new work, cancel the pending
    /// delayed work, run the pending work, and stop the thread (the C
    /// `kthread_destroy_worker()`, but for the `kfree()`: `raw` lives as long as `self`, so a
    /// handle that is still used afterwards finds its queues closed, not freed).
    ///
    /// The delayed works it cancelled come back with a reference each, for the caller to give
    /// up once the teardown is over (after unlinking the entry, and completing `done`).
    ///
    /// # Safety
    ///
    /// The caller claimed the entry; called once, not on the worker's thread.
    unsafe fn teardown(&self) -> delayed::Cancelled {
        kernel::task::might_sleep();
        // INVARIANT: From here on nothing is queued: an operation gets `ESHUTDOWN`.
        self.gate.close();
        let cancelled = self.cancel_all_delayed();
        // SAFETY: The worker is live and nothing can be queued; flushing runs the works that
        // are still pending, so that each gets its reference back. Then its thread stops (the
        // claim makes this the one stop; `task` is our reference).
        unsafe {
            bindings::kthread_flush_worker(self.raw());
            bindings::kthread_stop(self.task.as_ptr());
        }
        cancelled
    }
}

#[pinned_drop]
impl PinnedDrop for Inner {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: The worker's thread has stopped (its claimer tore it down before the last
        // reference could go), and nothing refers to `raw` any more.
        unsafe { bindings::kfree(self.raw().cast()) };
    }
}

/// `prepare` of a worker's entry: nothing (the worker is kept by its owner, who waits for
/// `done`, or by the claim itself).
///
/// # Safety
///
/// Called by the reaper with a claimed entry of this kind; it does nothing.
unsafe fn prepare_nothing(_e: NonNull<Entry>) {}

/// `reap` of a worker's entry.
///
/// # Safety
///
/// `e` is the entry of an `Inner`, claimed by the reaper.
unsafe fn reap_worker(e: NonNull<Entry>) {
    // `entry` is the first field of the `repr(C)` `Inner`.
    let inner = e.as_ptr().cast_const().cast::<Inner>();
    // SAFETY: The claim keeps it alive: its owner waits for `done`, or left it to the reaper
    // with its reference.
    let this = unsafe { &*inner };
    // SAFETY: Claimed by the reaper; the reaper is not a worker's thread.
    let cancelled = unsafe { this.teardown() };
    registry::unlink(&this.entry);
    if this.reaper_frees.load(ordering::Acquire) {
        // SAFETY: The handle's reference, which its drop left to the reaper.
        drop(unsafe { Arc::from_raw(inner) });
    } else {
        this.done.complete_all();
    }
    // Only now: a cancelled work's destructor may drop this worker's handle (which then finds
    // `done` complete) or a thread that holds it.
    cancelled.release();
}

/// Drop the reference to its worker's `Inner` that a bound item holds.
fn unbind(owner: &Atomic<*mut Inner>) {
    let p = owner.xchg(ptr::null_mut(), ordering::Full);
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
    ///
    /// # Context
    ///
    /// Any context.
    pub fn queue<T: WorkItem>(&self, work: Arc<Work<T>>) -> Result<(), (Error, Arc<Work<T>>)> {
        queue(self.inner, work)
    }

    /// Queue `work` after `delay`; see [`Worker::queue_delayed`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn queue_delayed<T: DelayedWorkItem>(
        &self,
        work: &Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result {
        delayed::queue_delayed(self.inner, work, delay)
    }
}

/// An owned kthread_worker. Dropping it refuses new work, cancels the pending delayed work,
/// runs the pending work, then stops the worker's thread (never the WARN of
/// `kthread_destroy_worker()` about pending delayed work, H9).
///
/// A worker dropped by one of its own works cannot wait for itself: its teardown is handed to a
/// thread of its own (H20), or, if none can be started, to the module's unload. A forgotten
/// worker is torn down at the module's unload (H21).
///
/// # Invariants
///
/// `inner` is a pinned, live allocation of which this handle owns one reference, given up only
/// by `Drop`.
pub struct Worker {
    inner: ManuallyDrop<Arc<Inner>>,
}

impl Worker {
    /// Create and start a worker whose thread is named `name`, on any CPU and node.
    ///
    /// `module` is the module whose code the worker's items run (`THIS_MODULE`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn create(module: &'static ThisModule, name: fmt::Arguments<'_>) -> Result<Self> {
        kernel::task::might_sleep();
        Self::create_on_node(module, NUMA_NO_NODE, false, name)
    }

    /// Create and start a worker on NUMA `node` ([`NUMA_NO_NODE`]: any), freezable if asked
    /// (`KTW_FREEZABLE`: it freezes during suspend). `EINVAL` if `node` is not online.
    ///
    /// `module` is the module whose code the worker's items run (`THIS_MODULE`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn create_on_node(
        module: &'static ThisModule,
        node: i32,
        freezable: bool,
        name: fmt::Arguments<'_>,
    ) -> Result<Self> {
        kernel::task::might_sleep();
        thread::check_node(node)?;
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
        Self::start(module, raw)
    }

    /// Create and start a worker whose thread is bound to `cpu`, freezable if asked. `EINVAL`
    /// unless `cpu` is a possible CPU.
    ///
    /// `module` is the module whose code the worker's items run (`THIS_MODULE`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn create_on_cpu(
        module: &'static ThisModule,
        cpu: CpuId,
        freezable: bool,
        name: fmt::Arguments<'_>,
    ) -> Result<Self> {
        kernel::task::might_sleep();
        thread::check_possible(cpu)?;
        let name = CString::try_from_fmt(name)?;
        let fmt = thread::escape_percent(&name)?;
        // SAFETY: `cpu` is a possible CPU (checked above); `fmt` is NUL-terminated, without
        // conversions (every '%' of the name is escaped).
        let raw = unsafe {
            bindings::kthread_create_worker_on_cpu(
                cpu.as_u32() as c_int,
                flags(freezable),
                fmt.as_ptr().cast(),
            )
        };
        Self::start(module, raw)
    }

    fn start(module: &'static ThisModule, raw: *mut bindings::kthread_worker) -> Result<Self> {
        let raw = NonNull::new(from_err_ptr(raw)?).ok_or(ENOMEM)?;
        // SAFETY: `raw` was just made, with its thread; `Task` is transparent over
        // `task_struct`, and `ARef::from` takes a reference of its own.
        let task = ARef::from(unsafe { &*(*raw.as_ptr()).task.cast::<Task>() });
        let inner = Arc::pin_init(
            pin_init!(Inner {
                entry: Entry::new(module, &WORKER_ENTRY),
                raw,
                task,
                gate: Gate::new(),
                reaper_frees: Atomic::new(false),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        );
        let inner = match inner {
            Ok(inner) => inner,
            Err(e) => {
                // SAFETY: `raw` is a worker that was never woken and has no work.
                unsafe { bindings::kthread_destroy_worker(raw.as_ptr()) };
                return Err(e);
            }
        };
        // SAFETY: `raw` was just made; 7.2 does not wake a new worker's thread.
        unsafe { bindings::wake_up_process((*raw.as_ptr()).task) };
        // SAFETY: `inner` stays in place (in the `Arc`) until its entry is claimed: the handle
        // made below keeps its reference until then.
        unsafe { registry::link(NonNull::from(&inner.entry), Arc::as_ptr(&inner) as usize) };
        // INVARIANT: `raw` is woken and owned by `inner`, of which the handle owns a reference.
        Ok(Worker {
            inner: ManuallyDrop::new(inner),
        })
    }

    /// The worker's thread.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn task(&self) -> &Task {
        &self.inner.task
    }

    /// Queue `work` (the C `kthread_queue_work()`): the reference moves to the worker, which
    /// hands it to [`WorkItem::run`].
    ///
    /// On error, the reference comes back with the reason: `EBUSY` if the work is pending
    /// already (H12), `EINVAL` if it is bound to another worker (H10), `ESHUTDOWN` once the
    /// worker is being torn down.
    ///
    /// # Context
    ///
    /// Any context (it never sleeps, as in C).
    pub fn queue<T: WorkItem>(&self, work: Arc<Work<T>>) -> Result<(), (Error, Arc<Work<T>>)> {
        queue(&self.inner, work)
    }

    /// Queue `work` to run after `delay` (the C `kthread_queue_delayed_work()`). The worker's
    /// queue takes a reference of its own; the caller keeps `work`, so the item's last
    /// reference is never dropped here. Errors as for [`Worker::queue`]; `EBUSY` also while
    /// another queue, modify or cancel of the same delayed work runs on another thread (C
    /// refuses a queue during a cancel too): one operation at a time per delayed work keeps C
    /// from dropping a queue entry unseen.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn queue_delayed<T: DelayedWorkItem>(
        &self,
        work: &Arc<DelayedWork<T>>,
        delay: Delta,
    ) -> Result {
        delayed::queue_delayed(&self.inner, work, delay)
    }

    /// Wait until `work`, if pending or running, has run (the C `kthread_flush_work()`).
    ///
    /// `EDEADLK` from a work running on this worker (H11); `EINVAL` if `work` is bound to
    /// another worker (H10). An item never queued has nothing to wait for.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn flush<T: WorkItem>(&self, work: &Work<T>) -> Result {
        kernel::task::might_sleep();
        self.refuse_own_thread()?;
        if !self.inner.owns(&work.owner)? {
            return Ok(());
        }
        // A worker torn down has run or cancelled every work: nothing to wait for.
        let _ = self.inner.enter(|| {
            // SAFETY: `work` is initialised and bound to this worker, whose queues are open.
            unsafe { bindings::kthread_flush_work(work.work.get()) }
        });
        Ok(())
    }

    /// Wait until every work queued so far has run (the C `kthread_flush_worker()`).
    ///
    /// `EDEADLK` from a work running on this worker (H11).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn flush_all(&self) -> Result {
        kernel::task::might_sleep();
        self.refuse_own_thread()?;
        // A worker torn down has no work left (and no thread to run a flush).
        let _ = self.inner.enter(|| {
            // SAFETY: The worker is live, its queues open; the caller is not its thread.
            unsafe { bindings::kthread_flush_worker(self.inner.raw()) }
        });
        Ok(())
    }

    /// Cancel `work` and wait until it is not running (the C `kthread_cancel_work_sync()`).
    /// Returns whether it was pending: its queue reference is then dropped, [`WorkItem::run`]
    /// will not see it.
    ///
    /// `EDEADLK` from a work running on this worker (H11); `EINVAL` if `work` is bound to
    /// another worker (H10).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn cancel_sync<T: WorkItem>(&self, work: &Work<T>) -> Result<bool> {
        kernel::task::might_sleep();
        // SAFETY: Called only once `work` is known to be bound to this live worker; it is
        // initialised (type invariant).
        self.cancel_with(work, &work.owner, || unsafe {
            bindings::kthread_cancel_work_sync(work.work.get())
        })
    }

    /// The shared part of the cancels: refuse the worker's own thread and items of other
    /// workers, and drop the reference of the queue entry that `cancel` (a C cancel that
    /// returns whether the work was pending) removed.
    fn cancel_with<W>(
        &self,
        work: &W,
        owner: &Atomic<*mut Inner>,
        cancel: impl FnOnce() -> bool,
    ) -> Result<bool> {
        kernel::task::might_sleep();
        self.refuse_own_thread()?;
        if !self.inner.owns(owner)? {
            return Ok(false);
        }
        // A worker torn down has nothing pending: its teardown ran or cancelled it all.
        let was_pending = self.inner.enter(cancel).unwrap_or(false);
        if was_pending {
            // SAFETY: The cancelled queue entry held a reference from `Arc::into_raw` of the
            // item `work` is, which is now ours; the caller's reference keeps the item alive.
            drop(unsafe { Arc::from_raw(ptr::from_ref(work)) });
        }
        Ok(was_pending)
    }

    /// Queue a closure that runs once on the worker: the one-line form of a work item.
    ///
    /// # Context
    ///
    /// May sleep (the item is allocated with `GFP_KERNEL`); see [`Worker::queue`] for the
    /// form that never sleeps.
    pub fn queue_fn(&self, f: impl FnOnce() + Send + 'static) -> Result {
        kernel::task::might_sleep();
        let item = Work::new(FnWork(core::cell::UnsafeCell::new(Some(f))))?;
        self.queue(item).map_err(|(e, _)| e)
    }

    fn refuse_own_thread(&self) -> Result {
        if self.inner.on_worker() {
            return Err(sys::edeadlk());
        }
        Ok(())
    }
}

impl Deref for Worker {
    type Target = Task;
    fn deref(&self) -> &Task {
        self.task()
    }
}

/// End a worker whose handle (its reference `inner`) was dropped by a task that may wait:
/// claim it and tear it down, or wait for the reaper that claimed it first.
fn teardown_owned(inner: Arc<Inner>) {
    if registry::claim(&inner.entry) {
        // SAFETY: Claimed just now; the caller is not the worker's thread.
        let cancelled = unsafe { inner.teardown() };
        registry::unlink(&inner.entry);
        cancelled.release();
    } else {
        inner.done.wait_for_completion();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: Taken once, here; not used afterwards.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        if !inner.on_worker() {
            kernel::task::might_sleep();
            teardown_owned(inner);
            return;
        }
        // Dropped by one of its own works, which the teardown would wait for. Refuse new work
        // now, and hand the teardown to a thread of its own (H20).
        inner.gate.refuse();
        let theirs = inner.clone();
        let (module, pid) = (inner.entry.owner(), inner.task.pid());
        let handed = thread::spawn_detached(module, fmt!("{pid}-teardown"), move |_ctx| {
            teardown_owned(theirs);
        });
        if handed.is_err() {
            // No thread (the module is not live, or no memory): the module's unload tears the
            // worker down, with this reference.
            inner.reaper_frees.store(true, ordering::Release);
            let _ = Arc::into_raw(inner);
            pr_warn!("kthread_rs: a worker dropped by its own work; the module's unload ends it\n");
        }
    }
}

/// `-ESHUTDOWN`: the worker is shutting down. (Out of tree: the kernel crate has no constant
/// for it before this series.)
fn eshutdown() -> Error {
    #[cfg(MODULE)]
    {
        Error::from_errno(-(bindings::ESHUTDOWN as c_int))
    }
    #[cfg(not(MODULE))]
    kernel::error::code::ESHUTDOWN
}

fn flags(freezable: bool) -> c_uint {
    if freezable {
        bindings::KTW_FREEZABLE
    } else {
        0
    }
}
