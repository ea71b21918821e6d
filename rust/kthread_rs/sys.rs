// SPDX-License-Identifier: GPL-2.0

//! The project's bindings layer: what `kernel::bindings` lacks.
//!
//! `kernel::bindings` has the exported kthread, kthread_worker and task_work functions, and the
//! kernel crate has Rust helpers for `get_task_struct()` and friends. What it lacks are the C
//! macros and static inlines of `include/linux/kthread.h`, `include/linux/wait.h` and
//! `include/linux/task_work.h`. They are re-implemented here, in one place, each next to the C
//! it mirrors, so that the rest of kthread-rs only calls functions.
//!
//! C headers: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/wait.h`](srctree/include/linux/wait.h).

use kernel::{
    bindings,
    prelude::*,
    sync::{aref::ARef, LockClassKey},
    task::Task,
};

/// `init_waitqueue_head()`: a macro around `__init_waitqueue_head()` with a static lock class.
///
/// # Safety
///
/// `wq` must be valid for writes of a `struct wait_queue_head`, and must not move afterwards.
pub(crate) unsafe fn init_waitqueue_head(
    wq: *mut bindings::wait_queue_head,
    name: &'static CStr,
    key: Pin<&'static LockClassKey>,
) {
    // SAFETY: The caller guarantees that `wq` is valid and will not move; `name` and `key` are
    // `'static`, as the lockdep map that `__init_waitqueue_head()` initialises keeps them.
    unsafe { bindings::__init_waitqueue_head(wq, name.as_char_ptr(), key.as_ptr()) };
}

/// `wake_up()`: wake one exclusive waiter and every non-exclusive waiter of `wq`.
///
/// # Safety
///
/// `wq` must point to an initialised `struct wait_queue_head`.
pub(crate) unsafe fn wake_up(wq: *mut bindings::wait_queue_head) {
    // SAFETY: The caller guarantees that `wq` is initialised. `TASK_NORMAL` and a count of one
    // are exactly what the C `wake_up()` macro passes.
    unsafe { bindings::__wake_up(wq, bindings::TASK_NORMAL, 1, core::ptr::null_mut()) };
}

/// `-EDEADLK`: the call would wait for itself. (Out of tree: the kernel crate has no constant
/// for it before this series.)
pub(crate) fn edeadlk() -> Error {
    #[cfg(MODULE)]
    {
        Error::from_errno(-(bindings::EDEADLK as c_int))
    }
    #[cfg(not(MODULE))]
    kernel::error::code::EDEADLK
}

/// The user task with this pid number (in the caller's pid namespace), counted:
/// `find_get_pid()` and `get_pid_task()`, which the kernel crate does not wrap. For the tests
/// and the samples, which pick task work targets by pid.
///
/// Kernel threads are refused (`None`): a `Task` of a kthread that was created but not woken
/// yet (a [`NewThread`](super::thread::NewThread), whose pid is public) would let
/// `Task::wake_up` start it behind its configuration (`kthread_bind()` then WARNs), and so for
/// any other kthread not started yet.
///
/// # Context
///
/// Any context that may take a spinlock (RCU read side inside).
#[allow(dead_code)] // Used by the tests and samples that pick targets by pid.
pub(crate) fn task_of_pid(pid: i32) -> Option<ARef<Task>> {
    // SAFETY: Kernel threads are filtered out below, before the task is given out.
    let task = unsafe { any_task_of_pid(pid) }?;
    // SAFETY: The task is alive (counted); `flags` is read once, as the C `READ_ONCE()`, and
    // `PF_KTHREAD` never changes once the task exists.
    let flags = unsafe { core::ptr::read_volatile(&raw const (*task.as_ptr()).flags) };
    if flags & bindings::PF_KTHREAD != 0 {
        return None;
    }
    Some(task)
}

/// Like [`task_of_pid`], kernel threads included.
///
/// # Safety
///
/// The caller does not let the task be woken (`Task::wake_up`, or any C call that wakes it)
/// unless it is known to have been started.
///
/// # Context
///
/// Any context that may take a spinlock.
#[allow(dead_code)] // Used by the tests only.
pub(crate) unsafe fn any_task_of_pid(pid: i32) -> Option<ARef<Task>> {
    // SAFETY: `find_get_pid()` takes any number; it returns a counted `struct pid` or null.
    let p = unsafe { bindings::find_get_pid(pid) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a counted pid, released right after.
    let t = unsafe { bindings::get_pid_task(p, bindings::pid_type_PIDTYPE_PID) };
    // SAFETY: The reference taken by `find_get_pid()`.
    unsafe { bindings::put_pid(p) };
    // SAFETY: `get_pid_task()` returned a counted task reference (or null), which the `ARef`
    // now owns; `Task` is a transparent wrapper of `task_struct`.
    core::ptr::NonNull::new(t).map(|t| unsafe { ARef::from_raw(t.cast()) })
}

/// This module: the one whose code is running, as this file is included
/// into each module crate (see [`super`]).
///
/// Only the out-of-tree reaper (`registry::reaper`) uses it: its notifier and work items are
/// this module's memory, so they need this very module. Everything else uses the module that
/// the caller passed (`module: &'static ThisModule`), as an abstraction of the kernel crate
/// does, where no `__this_module` exists.
///
/// Kernel versions: through 7.2, `module!` defined a `static THIS_MODULE` at the crate root;
/// 7.3 replaced it with `<LocalModule as ModuleMetadata>::THIS_MODULE` (rust/kernel/module.rs,
/// rust/macros/module.rs). Both stand for `__this_module`, which modpost defines in every
/// module's `.mod.c`, so naming that symbol here builds on both.
#[inline(always)]
#[cfg_attr(not(CONFIG_SYSFS), allow(dead_code))] // Without sysfs there is no reaper.
#[cfg(MODULE)]
pub(crate) fn this_module() -> *mut bindings::module {
    // Only the address is taken (no reference, no read): safe since Rust 1.82.
    &raw mut bindings::__this_module
}

/// Take a reference on `module`, so that it cannot be unloaded until [`module_put`]
/// (`try_module_get()`); for code of `module` that runs with no owner to wait for it: task
/// work callbacks and detached threads.
///
/// `EBUSY` unless the module is live. A module whose `init` fails is freed whatever
/// references it has, so nothing may be left running before `init` has returned; once live, a
/// module is freed only when its count is zero. Null (built in) always succeeds.
///
/// # Safety
///
/// `module` is null (built in) or the module of a `&'static ThisModule` (its `as_ptr()`) that
/// the caller was given: a `struct module` that is not freed while this runs.
pub(crate) unsafe fn module_get(module: *mut bindings::module) -> Result {
    if module.is_null() {
        return Ok(());
    }
    // SAFETY: By the function's safety requirements `module` is a `struct module` that is not
    // freed meanwhile; `state` is a plain enum that the module loader writes (read once, like
    // the C `READ_ONCE()`).
    let state = unsafe { core::ptr::read_volatile(&raw const (*module).state) };
    if state != bindings::module_state_MODULE_STATE_LIVE {
        return Err(EBUSY);
    }
    // Live a moment ago; if its unload has begun since, this fails.
    // SAFETY: By the function's safety requirements.
    unsafe { module_get_unless_going(module) }
}

/// Like [`module_get`], but also while the module's `init` still runs: `EBUSY` only once
/// its unload has begun. For code that may already be running on behalf of the module during
/// `init`, where refusing would leave it with no owner either way.
///
/// # Safety
///
/// As for [`module_get`].
pub(crate) unsafe fn module_get_unless_going(module: *mut bindings::module) -> Result {
    // SAFETY: By the function's safety requirements `module` is null (built in) or a module
    // that is not freed while this runs; `try_module_get()` fails once its unload has begun.
    if unsafe { bindings::try_module_get(module) } {
        Ok(())
    } else {
        Err(EBUSY)
    }
}

/// Give back a reference on `module` taken by [`module_get`] or [`module_get_unless_going`]
/// (`module_put()`).
///
/// # Safety
///
/// The caller owns a reference on `module` (null: built in) taken by [`module_get`] or
/// [`module_get_unless_going`], and gives it up. Once this returns, the module may be freed:
/// the caller must not return into its code. Use it only where no code of `module` runs
/// afterwards, or where something else still pins it.
pub(crate) unsafe fn module_put(module: *mut bindings::module) {
    // SAFETY: By the function's safety requirements; `module_put(NULL)` does nothing.
    unsafe { bindings::module_put(module) };
}
