// SPDX-License-Identifier: GPL-2.0

//! The module notifier that reaps this module's objects at `MODULE_STATE_GOING`.
//!
//! The first link cannot register it in place: the caller may run inside the module notifier
//! chain (KUnit runs a module's test suites from its `MODULE_STATE_LIVE` notifier), whose lock
//! `register_module_notifier()` would wait for. A work item registers it instead, holding a
//! reference on the module's kobject meanwhile, so that the module cannot be freed before its
//! reaper has run. If the module starts going before the registration is through, the work
//! item either sees the notifier called after all, or sees `free_module()` begin (it waits for
//! the kobject reference: `mod->mkobj.kobj_completion` is set), and reaps then.

use super::{super::sys, reap};
use kernel::{
    bindings,
    prelude::*,
    sync::atomic::{ordering, Atomic},
    types::Opaque,
};

/// The notifier block and the work items that take it on and off the chain.
struct Reaper {
    nb: Opaque<bindings::notifier_block>,
    register: Opaque<bindings::work_struct>,
    unregister: Opaque<bindings::work_struct>,
}

// SAFETY: The C objects are initialised once (by the first `ensure`, before anything can
// reach them) and then only used by the notifier chain and the workqueue, which
// synchronise themselves.
unsafe impl Sync for Reaper {}

static REAPER: Reaper = Reaper {
    nb: Opaque::uninit(),
    register: Opaque::uninit(),
    unregister: Opaque::uninit(),
};

/// Set by the first `ensure`: the objects above are set up and the registration queued.
static STARTED: Atomic<bool> = Atomic::new(false);
/// Set by whoever reaps at the module's going (the notifier, or the registration work item
/// if the notifier was registered too late): exactly one of them does.
static REAPED: Atomic<bool> = Atomic::new(false);

/// Start the reaper of `module` unless it is started already (or `module` is built in,
/// and never unloaded).
///
/// Only this module's entries can be reaped here: the notifier, its work items and this
/// registry are this module's memory, and it reaps at this module's going only. An entry
/// of another module is not reaped by anyone, so nothing is registered for it. Safe code
/// cannot make one: the only safe way to a `&'static ThisModule` is the `module!` macro of
/// the crate that calls this API, which is this module (kthread-rs is included into each
/// module crate that uses it).
///
/// # Context
///
/// Any context that may take a spinlock (it queues a work item).
pub(super) fn ensure(module: *mut bindings::module) {
    if module.is_null() || module != sys::this_module() || STARTED.load(ordering::Acquire) {
        return;
    }
    if STARTED.cmpxchg(false, true, ordering::Full).is_err() {
        return;
    }
    // SAFETY: `STARTED` went from false to true here, once: no one else touches the C
    // objects before the work item queued below. They are module memory, valid until the
    // module is freed, which waits for the kobject reference that the work items hold
    // while they run (see the module documentation). The work items are set up as
    // `INIT_WORK()` does, with static lock classes. `module` is this module (checked
    // above), alive while its code runs.
    unsafe {
        REAPER.nb.get().write(bindings::notifier_block {
            notifier_call: Some(module_notify),
            next: core::ptr::null_mut(),
            priority: 0,
        });
        bindings::init_work_with_key(
            REAPER.register.get(),
            Some(register),
            false,
            c"kthread_rs::reaper::register".as_char_ptr(),
            kernel::static_lock_class!().as_ptr(),
        );
        bindings::init_work_with_key(
            REAPER.unregister.get(),
            Some(unregister),
            false,
            c"kthread_rs::reaper::unregister".as_char_ptr(),
            kernel::static_lock_class!().as_ptr(),
        );
        bindings::kobject_get(&raw mut (*module).mkobj.kobj);
        queue(REAPER.register.get());
    }
}

/// Queue `work` on the system workqueue.
///
/// # Safety
///
/// `work` is one of the reaper's work items, set up by `ensure`, and not queued.
unsafe fn queue(work: *mut bindings::work_struct) {
    // SAFETY: By the function's safety requirement; `system_wq` is always there.
    unsafe {
        bindings::queue_work_on(
            bindings::wq_misc_consts_WORK_CPU_UNBOUND as c_int,
            bindings::system_wq,
            work,
        )
    };
}

/// The module notifier: at this module's `MODULE_STATE_GOING` (after its `exit`, or its
/// failed `init`), reap what is left, then have [`unregister`] take the notifier off the
/// chain.
///
/// # Safety
///
/// Called by the module notifier chain, with a `struct module` as `data`.
unsafe extern "C" fn module_notify(
    _nb: *mut bindings::notifier_block,
    action: c_ulong,
    data: *mut c_void,
) -> c_int {
    let module = sys::this_module();
    if action != bindings::module_state_MODULE_STATE_GOING as c_ulong
        || data.cast::<bindings::module>() != module
        || REAPED.xchg(true, ordering::Full)
    {
        return bindings::NOTIFY_DONE as c_int;
    }
    reap(module);
    // SAFETY: `module` is this module, being unloaded but not freed: `free_module()` runs
    // after this chain, and waits (in `mod_sysfs_teardown()`) for the kobject reference
    // taken here, which `unregister` gives back last. The work item was set up by
    // `ensure` (this notifier is registered, so it ran), and is queued once.
    unsafe {
        bindings::kobject_get(&raw mut (*module).mkobj.kobj);
        queue(REAPER.unregister.get());
    }
    bindings::NOTIFY_DONE as c_int
}

/// The work item that registers the notifier (with the kobject reference that `ensure`
/// took), then lets the module's freeing go on.
///
/// # Safety
///
/// Queued by `ensure` only, once.
unsafe extern "C" fn register(_work: *mut bindings::work_struct) {
    // SAFETY: Called once, by this work item.
    unsafe { register_and_watch() };
    // SAFETY: The reference taken by `ensure`. Once it is dropped the module may be freed
    // at once, so this is the last call, and it has no frame to tear down: the compiler
    // makes it a jump (`scripts/check-tail-call.sh` checks it), and `kobject_put()`
    // returns straight to the workqueue.
    unsafe { bindings::kobject_put(&raw mut (*sys::this_module()).mkobj.kobj) }
}

/// Register the notifier; if the module is going already, make sure it is reaped.
///
/// # Safety
///
/// Called once, by the `register` work item.
#[inline(never)]
unsafe fn register_and_watch() {
    let module = sys::this_module();
    // SAFETY: `ensure` set `nb` up; this is its one registration.
    unsafe { bindings::register_module_notifier(REAPER.nb.get()) };
    loop {
        // SAFETY: `module` is alive (the kobject reference keeps it); `state` and
        // `kobj_completion` are read once, as the C code's plain accesses would be.
        let (state, freeing) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*module).state),
                !core::ptr::read_volatile(&raw const (*module).mkobj.kobj_completion).is_null(),
            )
        };
        if state != bindings::module_state_MODULE_STATE_GOING || REAPED.load(ordering::Acquire) {
            // Not going: the notifier will be called when it goes. Or reaped already.
            return;
        }
        if freeing {
            // Going, and past its notifier chain (`free_module()` waits for us): the
            // chain ran before this registration got its lock, so the notifier was not
            // called. Reap here, and leave the chain (its lock is free: not inside it).
            if !REAPED.xchg(true, ordering::Full) {
                reap(module);
            }
            // SAFETY: Registered above; this is its one removal (the notifier was not
            // called, so it queued no `unregister`).
            unsafe { bindings::unregister_module_notifier(REAPER.nb.get()) };
            return;
        }
        // Going, and the chain is before us (it will call the notifier) or running: wait.
        kernel::time::delay::fsleep(kernel::time::Delta::from_millis(10));
    }
}

/// The work item that takes the notifier off the chain (the chain's callback has returned
/// by then: this waits for its lock), then lets the module's freeing go on.
///
/// # Safety
///
/// Queued by `module_notify` only, with the kobject reference that it took.
unsafe extern "C" fn unregister(_work: *mut bindings::work_struct) {
    // SAFETY: `register` registered `nb`; this is its one removal.
    unsafe { bindings::unregister_module_notifier(REAPER.nb.get()) };
    // SAFETY: The reference taken by `module_notify`; the last call, a jump (see
    // `register`).
    unsafe { bindings::kobject_put(&raw mut (*sys::this_module()).mkobj.kobj) }
}
