// SPDX-License-Identifier: GPL-2.0

//! The thread body's own view of its kthread: [`Context`], and the kthread wait loop.
//!
//! C headers: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/wait.h`](srctree/include/linux/wait.h)

use super::header::{Header, FREEZABLE, ORPHAN};
use core::{cell::Cell, marker::PhantomData};
use kernel::{
    bindings,
    prelude::*,
    task::{MAX_SCHEDULE_TIMEOUT, TASK_INTERRUPTIBLE},
    time::{msecs_to_jiffies, Delta},
    types::Opaque,
};

/// Why [`Context::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The condition became true.
    Condition,
    /// The thread was asked to stop ([`Context::should_stop`]).
    Stop,
    /// The thread was asked to park ([`Context::should_park`]).
    Park,
    /// The timeout expired.
    Timeout,
}

/// The thread body's view of its own kthread: the only way to reach the C functions that are
/// valid on a kthread only (`kthread_should_stop()` and friends).
///
/// A `Context` is made by the thread itself before it calls its body and is lent to the body;
/// it is neither [`Send`] nor [`Sync`], so it cannot leave the thread, and it cannot be made
/// anywhere else.
///
/// # Invariants
///
/// `current` is the kthread, created by this module, whose header is `header`.
pub struct Context<'a> {
    pub(super) header: &'a Header,
    /// Set while a [`PerCpuThreads`](super::PerCpuThreads) step runs with migration disabled:
    /// parking then would keep the CPU pinned and hang its offlining, so the step loop parks
    /// after the step.
    pub(super) pinned: Cell<bool>,
    /// Set while [`Context::with_mm`] lends a user mm to this thread.
    pub(super) mm: Cell<bool>,
    /// Set while a `BlkcgGuard` associates this thread with a blkcg.
    #[cfg_attr(not(CONFIG_BLK_CGROUP), allow(dead_code))]
    pub(super) blkcg: Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl Context<'_> {
    /// Should the body return now? True once [`Thread::stop`](super::Thread::stop) (or a drop
    /// of the handle, or the module's unload) asked this thread to stop, and once the handle
    /// was dropped where it could not wait for the thread (on the thread itself, or in a wait
    /// cycle): the thread then owns itself and frees itself when its body returns (H20).
    ///
    /// The C `kthread_should_stop()`. A body returns soon after this becomes true.
    ///
    /// # Context
    ///
    /// Any context of this thread.
    pub fn should_stop(&self) -> bool {
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_should_stop() || self.header.flags() & ORPHAN != 0 }
    }

    /// Has [`ParkableThread::park`](super::ParkableThread::park) asked this thread to park?
    ///
    /// The C `kthread_should_park()`. Parkable threads are parked for their body by the step
    /// loop, so a body rarely needs this.
    ///
    /// # Context
    ///
    /// Any context of this thread.
    pub fn should_park(&self) -> bool {
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_should_park() }
    }

    /// Park here if parking was asked for, until unparked. The C `kthread_parkme()`.
    ///
    /// In a [`PerCpuThreads`](super::PerCpuThreads) step this returns at once: the step loop
    /// parks after the step, once migration is enabled again.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn parkme(&self) {
        kernel::task::might_sleep();
        if self.pinned.get() {
            return;
        }
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_parkme() }
    }

    /// Freeze here if the system is freezing, then tell whether the thread should stop.
    ///
    /// The C `kthread_freezable_should_stop()`; `was_frozen` is set when the thread was frozen.
    /// Only threads made freezable with
    /// [`NewThread::set_freezable`](super::NewThread::set_freezable) are ever frozen.
    ///
    /// # Context
    ///
    /// May sleep (it freezes).
    pub fn freezable_should_stop(&self, was_frozen: Option<&mut bool>) -> bool {
        kernel::task::might_sleep();
        let p = was_frozen.map_or(core::ptr::null_mut(), core::ptr::from_mut);
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        // `p` is null or points to a live `bool`, as the C function expects.
        unsafe { bindings::kthread_freezable_should_stop(p) || self.header.flags() & ORPHAN != 0 }
    }

    /// Sleep until `cond` is true, the thread is asked to stop or to park, or `timeout` expires.
    ///
    /// The sleep is interruptible (and freezable for a freezable thread), so
    /// [`Thread::stop`](super::Thread::stop) always ends it. Whoever makes `cond` true calls
    /// [`Thread::wake_up`](super::Thread::wake_up) afterwards. `cond` runs with the task
    /// running, as with the C `wait_woken()`, so it may sleep itself (take a mutex, say); a
    /// wake-up that comes while it runs is not lost.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn wait_until(&self, mut cond: impl FnMut() -> bool, timeout: Option<Delta>) -> Wake {
        kernel::task::might_sleep();
        let mut left: c_long = match timeout {
            None => MAX_SCHEDULE_TIMEOUT,
            Some(d) => {
                let ms = u32::try_from(d.as_millis().max(0)).unwrap_or(u32::MAX);
                // `msecs_to_jiffies()` saturates at `MAX_JIFFY_OFFSET`, far below `c_long::MAX`.
                c_long::try_from(msecs_to_jiffies(ms)).unwrap_or(MAX_SCHEDULE_TIMEOUT - 1)
            }
        };
        let mut state = TASK_INTERRUPTIBLE as c_uint;
        if self.header.flags() & FREEZABLE != 0 {
            state |= bindings::TASK_FREEZABLE;
        }
        let wq = self.header.wq();
        let wait = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `wait` is valid for writes and lives until the end of this function, after
        // it left the queue. It is set up as the C `DEFINE_WAIT_FUNC(wait,
        // woken_wake_function)` does, then queued on `wq`, initialised by `Header::new`,
        // which outlives `self`.
        unsafe {
            bindings::init_wait_entry(wait.get(), 0);
            (*wait.get()).func = Some(bindings::woken_wake_function);
            bindings::add_wait_queue(wq, wait.get());
        }
        let why = loop {
            // The task runs here: `cond` may sleep. A wake-up from now on marks `wait` as
            // woken (`woken_wake_function()`), and `wait_woken()` then does not sleep.
            if cond() {
                break Wake::Condition;
            }
            if self.should_stop() {
                break Wake::Stop;
            }
            if self.should_park() {
                break Wake::Park;
            }
            if left == 0 {
                break Wake::Timeout;
            }
            // SAFETY: `wait` is on `wq` (above). Sleeping is allowed (`might_sleep()` above);
            // `wait_woken()` also returns at once when the kthread is asked to stop or park,
            // whose wake-ups do not go through `wq`.
            left = unsafe { bindings::wait_woken(wait.get(), state, left) };
        };
        // SAFETY: `wait` was queued on `wq` above.
        unsafe { bindings::remove_wait_queue(wq, wait.get()) };
        why
    }

    /// Sleep for `d`, or less if the thread is asked to stop or to park.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn sleep(&self, d: Delta) -> Wake {
        kernel::task::might_sleep();
        self.wait_until(|| false, Some(d))
    }

    /// The context of the current thread, whose header is `header`.
    ///
    /// # Safety
    ///
    /// `current` is the kthread, created by this module, whose header is `header`.
    pub(super) unsafe fn new(header: &Header) -> Context<'_> {
        // INVARIANT: By the function's safety requirement.
        Context {
            header,
            pinned: Cell::new(false),
            mm: Cell::new(false),
            blkcg: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// After the body: end a blkcg association that a leaked (rather than dropped)
    /// `BlkcgGuard` still holds: the exit would WARN about it and leak it.
    pub(super) fn end_leaked_guards(&self) {
        #[cfg(CONFIG_BLK_CGROUP)]
        if self.blkcg.replace(false) {
            // SAFETY: `current` is a kthread (the type invariant); null ends the association
            // and drops the reference that `kthread_associate_blkcg()` took.
            unsafe { bindings::kthread_associate_blkcg(core::ptr::null_mut()) };
        }
    }

    /// Idle (parkable) until stopped: the end of a parkable thread.
    pub(super) fn idle_until_stop(&self) {
        while self.wait_until(|| false, None) != Wake::Stop {
            self.parkme();
        }
    }
}
