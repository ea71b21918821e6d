// SPDX-License-Identifier: GPL-2.0

//! What every thread made here shares with its handles, whatever its body: the [`Header`],
//! and the protocols around it: who stops a thread (exactly one `kthread_stop()`), waits that
//! would close a cycle (`EDEADLK`), and a thread that owns itself leaving without returning
//! into the module.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::super::{
    registry::{self, Entry, EntryOps, Kind},
    sys,
};
use core::{cell::UnsafeCell, ptr::NonNull};
use kernel::{
    bindings,
    prelude::*,
    static_lock_class,
    sync::{
        aref::ARef,
        atomic::{ordering, Atomic},
        Completion,
    },
    task::Task,
    types::Opaque,
};

use super::handoff::{self, Flags, Leave, Stop};
pub(super) use super::handoff::{FREEZABLE, ORPHAN, SELF_OWNED, STARTED, ZOMBIE_TASKREF};

/// What the registry's reaper needs of a thread, whatever its body.
pub(super) struct ThreadOps {
    /// Give up the memory that an orphaned or self-owned thread owns (an `Arc` reference of a
    /// handle, or a detached thread's block), and do for a self-owned thread whose body never
    /// ran what its end would have done.
    ///
    /// # Safety
    ///
    /// The thread has exited, and the caller owns that memory (it claimed the entry).
    pub(super) release: unsafe fn(NonNull<Header>),
    /// Drop the body of a thread that was stopped before it ran, so that what it owns goes at
    /// once (a starter waiting for it to report, say), not only when its memory is freed.
    ///
    /// # Safety
    ///
    /// The thread has exited without taking its body, and the caller claimed the entry.
    pub(super) drop_body: unsafe fn(NonNull<Header>),
}

/// The start of every thread's memory (`repr(C)`, first field of each allocation), shared by
/// the thread, its handles and the module's registry.
///
/// # Invariants
///
/// - `entry` is linked in the registry from the thread's creation until the thread has exited
///   (or, for a thread that ends on its own, until right before it frees its memory). Whoever
///   ends the thread claims it first: its owning handle (which then stops it), the thread itself
///   (an orphan or self-owned thread leaving), or the reaper. Exactly one party claims it; the
///   claimer of a thread that does not leave by itself calls `kthread_stop()` on it, once, and
///   unlinks the entry after that.
/// - `task` is the thread (set before the entry is linked, never changed); while the entry is
///   linked, someone holds a reference on it (a handle, or the thread itself, running).
/// - `waiting_for` is read and written with the registry locked; it is set only while the
///   thread waits (in [`begin_wait`]) for the thread of that header, whose handle it holds.
/// - `stopped` is completed once the claimer of an owned thread has stopped it.
#[repr(C)]
#[pin_data]
pub(crate) struct Header {
    entry: Entry,
    task: Atomic<*mut bindings::task_struct>,
    ops: &'static ThreadOps,
    flags: Flags,
    waiting_for: UnsafeCell<*const Header>,
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
    #[pin]
    pub(super) returned: Completion,
    #[pin]
    stopped: Completion,
}

// SAFETY: `waiting_for` is only touched with the registry locked; the rest is atomic, set once
// before sharing (`ops`, `entry`'s constant fields), or C objects made for concurrent use.
unsafe impl Send for Header {}
// SAFETY: As for `Send`.
unsafe impl Sync for Header {}

// Lockdep tells classes apart by the address of their key and matches names by address: a
// string literal in generic or inlined code can be emitted once per crate that uses it, so the
// name of a class whose key is a `static` here is a `static` too.
/// The lock class name of every thread's wait queue.
static WQ_NAME: &CStr = c"kthread_rs::thread";

/// How the reaper ends a thread.
static THREAD_ENTRY: EntryOps = EntryOps {
    kind: Kind::Thread,
    prepare: reap_prepare,
    reap: reap_thread,
};

impl Header {
    /// A header for a thread that runs code of `module`, with `flags` set.
    pub(super) fn new(
        module: &'static ThisModule,
        ops: &'static ThreadOps,
        flags: u32,
    ) -> impl PinInit<Self> {
        // INVARIANT: Not linked yet, no task yet; `stopped` not completed.
        pin_init!(Self {
            entry: Entry::new(module, &THREAD_ENTRY),
            task: Atomic::new(core::ptr::null_mut()),
            ops,
            flags: Flags::new(flags),
            waiting_for: UnsafeCell::new(core::ptr::null()),
            wq <- Opaque::ffi_init(|slot: *mut bindings::wait_queue_head| {
                // SAFETY: `slot` is valid for writes and pinned (in an `Arc` or a `KBox`).
                unsafe {
                    sys::init_waitqueue_head(slot, WQ_NAME, static_lock_class!())
                }
            }),
            returned <- Completion::new(),
            stopped <- Completion::new(),
        })
    }

    /// Record the thread, and link the header into the registry.
    ///
    /// # Safety
    ///
    /// `task` is the new, not yet woken kthread that runs on this header, which stays alive
    /// and in place until its entry is claimed; the caller holds a reference on `task` until
    /// then (or the thread owns itself and runs). Called once.
    ///
    /// # Context
    ///
    /// May sleep.
    pub(super) unsafe fn register(&self, task: *mut bindings::task_struct) {
        self.task.store(task, ordering::Release);
        // SAFETY: By the function's safety requirements.
        unsafe { registry::link(NonNull::from(&self.entry), task as usize) };
    }

    /// Claim the thread's entry and unlink it (see the invariants), for a thread that ends
    /// on its own, right before it frees its memory: `true` if this call claimed it.
    ///
    /// # Context
    ///
    /// Any context that may take a spinlock.
    pub(super) fn claim_and_unlink(&self) -> bool {
        registry::claim_and_unlink(&self.entry)
    }

    /// The module whose code the thread runs (null: built in).
    pub(super) fn module(&self) -> *mut bindings::module {
        self.entry.module()
    }

    /// The thread's task.
    pub(super) fn task(&self) -> *const bindings::task_struct {
        self.task.load(ordering::Relaxed)
    }

    pub(super) fn ops(&self) -> &'static ThreadOps {
        self.ops
    }

    pub(super) fn flags(&self) -> u32 {
        self.flags.get()
    }

    /// Set `bits` in the flags.
    pub(super) fn set_flags(&self, bits: u32) {
        self.flags.set(bits)
    }

    /// The wait queue that [`Context::wait_until`](super::Context::wait_until) sleeps on.
    pub(super) fn wq(&self) -> *mut bindings::wait_queue_head {
        self.wq.get()
    }

    /// Wake the thread if it sleeps in `wait_until`, so that it re-checks its condition.
    ///
    /// # Context
    ///
    /// Any context.
    pub(super) fn wake(&self) {
        // SAFETY: `wq` was initialised by `new`.
        unsafe { sys::wake_up(self.wq.get()) };
    }

    /// Stop the thread, whose task `task` is (the caller's reference, given up here, with the
    /// C `kthread_stop_put()`), and wait until it has exited.
    ///
    /// Whoever claims the entry stops the thread; a party that finds it claimed (by the
    /// reaper, or by a scoped thread's handle before its scope's record) waits until the
    /// claimer has stopped it.
    ///
    /// # Safety
    ///
    /// The thread is an owned one (not orphaned or self-owned), and `task` is it.
    ///
    /// # Context
    ///
    /// May sleep.
    pub(super) unsafe fn stop_put(&self, task: ARef<Task>) {
        // SAFETY: By the function's safety requirements.
        unsafe { self.stop_put_then(task, || ()) }
    }

    /// Like [`Header::stop_put`], then `take` (the thread's result), once the thread exited.
    ///
    /// # Safety
    ///
    /// As for [`Header::stop_put`].
    ///
    /// # Context
    ///
    /// May sleep.
    pub(super) unsafe fn stop_put_then<R>(&self, task: ARef<Task>, take: impl FnOnce() -> R) -> R {
        // INVARIANT: By the function's safety requirements.
        let mut s = StopPut {
            hdr: self,
            task: Some(task),
        };
        handoff::stop_then_take(&mut s, take)
    }

    /// Like [`Header::stop_put`], keeping the caller's reference on `task`.
    ///
    /// # Safety
    ///
    /// As for [`Header::stop_put`].
    ///
    /// # Context
    ///
    /// May sleep.
    pub(super) unsafe fn stop(&self, task: &Task) {
        // INVARIANT: By the function's safety requirements.
        handoff::stop(&mut StopRef { hdr: self, task });
    }

    /// Before an owner's C call that WARNs on an exiting thread (see `OWNER_CALL`): `false` if
    /// the reaper has claimed the thread (it is stopped, or being stopped); otherwise the
    /// reaper waits for [`Header::end_owner_call`] before it stops the thread.
    ///
    /// # Context
    ///
    /// Any context that may take a spinlock.
    pub(super) fn begin_owner_call(&self) -> bool {
        self.flags
            .begin_owner_call(|| registry::lock().is_unclaimed(&self.entry))
    }

    /// After the owner's C call.
    ///
    /// # Context
    ///
    /// Any context.
    pub(super) fn end_owner_call(&self) {
        self.flags.end_owner_call();
    }

    /// Hand the caller's handle (its task reference and its share of the memory, which the
    /// caller gives up without releasing) to the thread itself: it stops at its next
    /// `should_stop`, and frees what it owns when it ends ([`leave`]). For a handle dropped
    /// where it cannot wait for its thread: on the thread itself, or in a wait cycle.
    ///
    /// # Context
    ///
    /// Any context.
    pub(super) fn orphan(&self) {
        let module = self.entry.module();
        // A reference on the module for the thread's way out, while one can be had (a module
        // whose `init` has not returned, or that is going away, lets the reaper end it).
        // SAFETY: `module` is the thread's: the module of the `&'static ThisModule` that it was
        // created with (invariant of `Entry`).
        let modref = unsafe { sys::module_get(module) }.is_ok();
        if self.flags.orphan(modref) {
            // SAFETY: The reference taken above, not handed over. The caller runs the module's
            // code, so whatever called it keeps the module.
            unsafe { sys::module_put(module) };
        }
        self.wake();
    }
}

/// The stop of an owned thread by a handle that gives up its task reference.
///
/// # Invariants
///
/// `hdr` is the header of an owned thread (not orphaned or self-owned) whose task is `task`
/// (until [`Stop::kthread_stop`] or [`Stop::wait_stopped`] gives that reference up).
struct StopPut<'a> {
    hdr: &'a Header,
    task: Option<ARef<Task>>,
}

// SAFETY: Every method acts on `hdr`'s thread (type invariant), and `registry::claim` lets one
// party only claim its entry.
unsafe impl Stop for StopPut<'_> {
    fn claim(&mut self) -> bool {
        registry::claim(&self.hdr.entry)
    }

    unsafe fn kthread_stop(&mut self) {
        if let Some(task) = self.task.take() {
            // SAFETY: The caller's claim makes this the one `kthread_stop()` of the thread
            // (invariant of `Header`); `task` is that thread (type invariant), a counted
            // kthread, alive even if it exited (H1), and `kthread_stop_put()` gives up that
            // reference once it has exited. (`None` only after a first call: there is none.)
            unsafe { bindings::kthread_stop_put(ARef::into_raw(task).as_ptr().cast()) };
        }
    }

    fn unlink_and_complete(&mut self) {
        registry::unlink(&self.hdr.entry);
        self.hdr.stopped.complete_all();
    }

    fn wait_stopped(&mut self) {
        drop(self.task.take());
        self.hdr.stopped.wait_for_completion();
    }
}

/// The stop of an owned thread by a caller that keeps its task reference.
///
/// # Invariants
///
/// `hdr` is the header of an owned thread (not orphaned or self-owned) whose task is `task`.
struct StopRef<'a> {
    hdr: &'a Header,
    task: &'a Task,
}

// SAFETY: As for `StopPut`.
unsafe impl Stop for StopRef<'_> {
    fn claim(&mut self) -> bool {
        registry::claim(&self.hdr.entry)
    }

    unsafe fn kthread_stop(&mut self) {
        // SAFETY: As in `StopPut`; `task` is the thread (type invariant), and the reference
        // that `self.task` borrows keeps it alive.
        unsafe { bindings::kthread_stop(self.task.as_ptr()) };
    }

    fn unlink_and_complete(&mut self) {
        registry::unlink(&self.hdr.entry);
        self.hdr.stopped.complete_all();
    }

    fn wait_stopped(&mut self) {
        self.hdr.stopped.wait_for_completion();
    }
}

/// A wait of the current thread (one of this module's) for another, recorded so that a wait
/// closing a cycle is refused; see [`begin_wait`].
pub(super) struct Waiting {
    me: *const Header,
}

/// Record that the current task waits for the thread of `target` (whose handle it holds):
/// `EDEADLK` if that thread waits, directly or through others, for the current thread.
///
/// Only this module's threads are recorded: a wait of another task cannot be waited for
/// through this API. Waits other than stopping, joining and parking (a `ThreadGroup`, a
/// worker's flush, a lock) are not seen.
///
/// # Context
///
/// Any context that may take a spinlock.
pub(super) fn begin_wait(target: &Header) -> Result<Waiting> {
    let current = Task::current_raw();
    // SAFETY: `current` is alive; `flags` is read once, as the C `READ_ONCE()`, and
    // `PF_KTHREAD` never changes once the task exists.
    let flags = unsafe { core::ptr::read_volatile(&raw const (*current).flags) };
    if flags & bindings::PF_KTHREAD == 0 {
        // This module's threads are all kthreads: a user task (a system call, `insmod`) is
        // none of them, so it closes no cycle. No lock and no lookup, which would walk a hash
        // chain as long as the module's live threads over 64.
        return Ok(Waiting {
            me: core::ptr::null(),
        });
    }
    let mut reg = registry::lock();
    let Some(me) = reg.find(current as usize, Kind::Thread) else {
        return Ok(Waiting {
            me: core::ptr::null(),
        });
    };
    let me = header_of(me);
    let mut x: *const Header = target;
    while !x.is_null() {
        if core::ptr::eq(x, me) {
            return Err(sys::edeadlk());
        }
        // SAFETY: `x` is `target` (alive: the caller holds its handle) or the header that a
        // recorded waiter waits for, whose handle it holds while the record stands; the
        // registry is locked, so no record ends meanwhile.
        x = unsafe { *(*x).waiting_for.get() };
    }
    // SAFETY: `me` is linked, so alive; the registry is locked.
    unsafe { *(*me).waiting_for.get() = target };
    Ok(Waiting { me })
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.me.is_null() {
            let _reg = registry::lock();
            // SAFETY: `me` is the current thread's header, alive while it runs; the registry
            // is locked.
            unsafe { *(*self.me).waiting_for.get() = core::ptr::null() };
        }
    }
}

/// The header that embeds `e`, a thread's entry.
fn header_of(e: NonNull<Entry>) -> *const Header {
    // `entry` is the first field of the `repr(C)` header.
    e.as_ptr().cast_const().cast()
}

/// After its body: how a thread leaves. An owned thread returns into `kthread()` (its claimer
/// stops it and waits for its exit). An orphan claims its own entry, frees what it owns and
/// leaves through `module_put_and_kthread_exit()`, so that no code of the module runs once
/// its reference is gone; if no module reference can be had (the module's `init` has not
/// returned, or it is being unloaded) it returns, still linked, and the reaper ends it.
///
/// # Safety
///
/// `h` is the current thread's header, and no reference to it is used after this call.
pub(super) unsafe fn leave(h: NonNull<Header>) -> c_int {
    // SAFETY: The current thread's header is alive while it runs (invariants).
    let hdr = unsafe { h.as_ref() };
    let module = hdr.entry.module();
    let task = hdr.task.load(ordering::Relaxed);
    // Decide, in one atomic step with the orphaning (`Header::orphan`): orphaned by then, or
    // left as an owned thread (an orphaning after this leaves the memory to the reaper).
    let how = hdr.flags.leave(
        // SAFETY: The module of the `&'static ThisModule` that this thread was created with
        // (invariant of `Entry`), whose code it runs.
        || unsafe { sys::module_get(module) }.is_ok(),
        || registry::claim_and_unlink(&hdr.entry),
    );
    match how {
        Leave::Return => return 0,
        Leave::Exit { release: true } => {
            // SAFETY: The orphaned handle's share of the memory and its task reference are
            // this thread's, and the claim makes it their only owner; the body has returned.
            // `hdr` is not used after the release.
            unsafe {
                (hdr.ops.release)(h);
                bindings::put_task_struct(task);
            }
        }
        Leave::Exit { release: false } => {}
    }
    // Otherwise the reaper claimed it (only a forced unload can do that while this thread
    // holds a module reference), and releases them once this thread has exited.
    // SAFETY: This thread holds a reference on `module` (taken when it was orphaned, or
    // above); the C function gives it up and exits without returning into the module.
    unsafe { bindings::__module_put_and_kthread_exit(module, 0) }
}

/// `prepare` of a thread's entry: a reference on its task, which a self-owned thread could
/// otherwise free by exiting once the registry is unlocked.
///
/// # Safety
///
/// `e` is a thread's entry, just claimed by the reaper with the registry locked.
unsafe fn reap_prepare(e: NonNull<Entry>) {
    let h = header_of(e);
    // SAFETY: Linked until now, so alive, and its task is alive (invariants of `Header`).
    unsafe { bindings::get_task_struct((*h).task.load(ordering::Relaxed)) };
}

/// `reap` of a thread's entry: stop the thread and wait for its exit; then release what an
/// orphaned or self-owned thread owned, or tell the owner that the stop is done.
///
/// # Safety
///
/// `e` is a thread's entry claimed by the reaper and prepared.
unsafe fn reap_thread(e: NonNull<Entry>) {
    let h = header_of(e);
    // SAFETY: The claim keeps the header alive: an owner waits for `stopped`, and an orphan
    // or self-owned thread leaves its memory to the claimer.
    let hdr = unsafe { &*h };
    let task = hdr.task.load(ordering::Relaxed);
    // An owner's call that started before the claim (`begin_owner_call` saw the entry linked)
    // ends before the thread may exit: C WARNs on a park or bind of an exiting thread.
    hdr.flags.wait_owner_calls();
    // SAFETY: The claim makes this the thread's one `kthread_stop()`; `reap_prepare` took the
    // reference that this gives up.
    unsafe { bindings::kthread_stop_put(task) };
    registry::unlink(&hdr.entry);
    let flags = hdr.flags();
    if flags & STARTED == 0 {
        // Stopped before it ran (H2): free what the body owns now, and let a joiner go on
        // (it waits for `returned`, which only the body's end completes otherwise).
        // SAFETY: The thread has exited without taking its body; the claim is the reaper's.
        unsafe { (hdr.ops.drop_body)(NonNull::new_unchecked(h.cast_mut())) };
    }
    hdr.returned.complete_all();
    if flags & (ORPHAN | SELF_OWNED) == 0 {
        // An owned thread: its owner (if any) frees the memory once it sees the stop.
        hdr.stopped.complete_all();
        return;
    }
    if flags & (ORPHAN | ZOMBIE_TASKREF) != 0 {
        // SAFETY: The orphaned handle's task reference, or the one a self-owned thread took
        // for the reaper, now the claimer's.
        unsafe { bindings::put_task_struct(task) };
    }
    // SAFETY: The thread has exited; the claim owns its memory. `hdr` is not used after this.
    unsafe { (hdr.ops.release)(NonNull::new_unchecked(h.cast_mut())) };
}
