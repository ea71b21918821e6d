// SPDX-License-Identifier: GPL-2.0

//! The module's registry of live threads, workers and per-CPU sets, and the reaper that ends
//! them when the module is unloaded (H21).
//!
//! C headers: [`include/linux/module.h`](srctree/include/linux/module.h),
//! [`include/linux/notifier.h`](srctree/include/linux/notifier.h)
//!
//! Safe Rust may leak a handle (`mem::forget`, a reference cycle), and then no code of the
//! module runs for it again: its thread would run on after `rmmod` in freed module text.
//! Every thread, worker and per-CPU set made here is therefore linked into this registry from
//! its creation until it has ended, with the module whose code it runs (the `module` that its
//! creator was given). Whoever ends it first *claims* it ([`claim`]): its owner (a handle's
//! drop or stop), the thread itself (a thread that ends on its own), or the reaper. The
//! claimer ends what it runs and then unlinks it ([`unlink`]); a party that finds it claimed
//! already waits until the claimer is done. A thread stays linked (and findable by its task,
//! [`Registry::find`]) until it has exited, so that a thread being stopped can still be told
//! from other tasks (wait cycles, H24).
//!
//! The reaper is a module notifier. `delete_module()` and a failing `init` both call the
//! `MODULE_STATE_GOING` notifiers after the module's `exit` (or `init`) and before
//! `free_module()` (`kernel/module/main.c`): there, the reaper claims every entry that is
//! still unclaimed (a leaked handle's, or one whose owner is itself being reaped), ends it
//! (it removes the CPU hotplug states of per-CPU sets, tears workers down and stops threads),
//! waits until every entry of the module is unlinked, and only then lets the unload go on. A
//! leaked handle's memory stays leaked, as `mem::forget` means; nothing of the module runs
//! after its text is freed.
//!
//! Out of tree, the notifier block and its function are module memory, so the notifier must
//! leave the chain before the module is freed, and it can neither join nor leave the chain from
//! inside it (the chain's lock is held there: by the notifier's own callback, and by KUnit,
//! which runs a module's test suites from the chain). Work items join and leave it instead,
//! each holding a reference on the module's kobject while it runs: `free_module()` waits for
//! those references (`mod_sysfs_teardown()` waits for the kobject's release), and each work
//! item drops its reference by a tail call, as its last instruction
//! (`scripts/check-tail-call.sh` checks the jumps in the built modules). Without
//! `CONFIG_SYSFS` nothing would wait for them, so the reaper is not registered at all: leaked
//! handles are then not reaped (documented in `Documentation/hazards.rst`). Being this
//! module's memory, the reaper serves this module's entries only (`reaper::ensure`).

use super::sys;
use core::{cell::UnsafeCell, ptr::NonNull};
use kernel::{
    bindings,
    prelude::*,
    sync::atomic::{ordering, Atomic},
};

/// What an [`Entry`] is, in the order the reaper ends them: per-CPU sets first (so that no
/// hotplug callback starts a thread meanwhile), then workers, then threads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A [`PerCpuThreads`](super::thread::PerCpuThreads) set.
    PerCpu,
    /// A [`Worker`](super::worker::Worker).
    Worker,
    /// A thread (owned, self-owned or in a group).
    Thread,
}

/// How the reaper ends the object of an [`Entry`].
pub(crate) struct EntryOps {
    pub(crate) kind: Kind,
    /// Called with the registry locked, right after the reaper claimed the entry: take what
    /// [`EntryOps::reap`] needs that the object's own thread could free once it is unlocked
    /// (a task reference).
    pub(crate) prepare: unsafe fn(NonNull<Entry>),
    /// End the object (stop the thread, tear the worker down, remove the hotplug state), so
    /// that no code of the module runs for it any more, unlink it, and give up what the claim
    /// owns.
    pub(crate) reap: unsafe fn(NonNull<Entry>),
}

/// A registry link, embedded (pinned) in a thread's header, a worker or a per-CPU set.
///
/// # Invariants
///
/// - `next`, `prev`, `linked`, `claimed` and `key` are accessed with the registry locked only.
/// - While `linked`, the object that embeds the entry is alive and does not move, and the
///   entry is on the list of bucket `bucket(key)`.
/// - `claimed` is set once, by the one party that ends the object; only that party unlinks it.
/// - `module` is the module whose code the object runs (its creator's `module` argument).
pub(crate) struct Entry {
    next: UnsafeCell<*mut Entry>,
    prev: UnsafeCell<*mut Entry>,
    linked: UnsafeCell<bool>,
    claimed: UnsafeCell<bool>,
    key: UnsafeCell<usize>,
    module: &'static ThisModule,
    ops: &'static EntryOps,
}

// SAFETY: The list fields are only touched under the registry lock; `module` and `ops` never
// change (and `ThisModule` is `Sync`).
unsafe impl Send for Entry {}
// SAFETY: As for `Send`.
unsafe impl Sync for Entry {}

impl Entry {
    /// A new entry of `module` (the module whose code the object runs), not linked yet.
    pub(crate) const fn new(module: &'static ThisModule, ops: &'static EntryOps) -> Self {
        // INVARIANT: Not linked; `module` as the caller says.
        Entry {
            next: UnsafeCell::new(core::ptr::null_mut()),
            prev: UnsafeCell::new(core::ptr::null_mut()),
            linked: UnsafeCell::new(false),
            claimed: UnsafeCell::new(false),
            key: UnsafeCell::new(0),
            module,
            ops,
        }
    }

    /// The `struct module` that the entry belongs to (null: built in).
    pub(crate) fn module(&self) -> *mut bindings::module {
        self.module.as_ptr()
    }

    /// The module that the entry belongs to, for an object that makes another of its own (a
    /// teardown thread).
    pub(crate) fn owner(&self) -> &'static ThisModule {
        self.module
    }
}

const BUCKETS: usize = 64;

/// The bucket of `key` (a pointer: its low bits are alignment, so hash it).
fn bucket(key: usize) -> usize {
    // The C `hash_ptr()`'s golden-ratio multiply, keeping the top six bits.
    (key.wrapping_mul(0x61c8_8647_usize.wrapping_mul(0x9e37_79b9)) >> (usize::BITS - 6)) % BUCKETS
}

/// The registry's lists, one per bucket of keys (a thread's key is its task, so that
/// [`Registry::find`] finds the current thread's entry quickly).
struct Lists {
    heads: [*mut Entry; BUCKETS],
}

// SAFETY: The lists are only reached under the registry lock (the global lock below).
unsafe impl Send for Lists {}

kernel::sync::global_lock! {
    // SAFETY: Initialised once by `lock()` before its first use.
    unsafe(uninit) static REGISTRY: SpinLock<Lists> = Lists {
        heads: [core::ptr::null_mut(); BUCKETS],
    };
}

/// 0: the lock is not initialised; 1: being initialised; 2: ready.
static REGISTRY_STATE: Atomic<u32> = Atomic::new(0);

/// The locked registry.
pub(crate) struct Registry {
    guard: kernel::sync::lock::GlobalGuard<REGISTRY>,
}

/// Lock the registry.
///
/// # Context
///
/// Any context that may take a spinlock, but an interrupt handler (the lock is not irq-safe:
/// nothing here runs from one).
pub(crate) fn lock() -> Registry {
    if REGISTRY_STATE.load(ordering::Acquire) != 2 {
        if REGISTRY_STATE.cmpxchg(0, 1, ordering::Full).is_ok() {
            // SAFETY: The state moved from 0 to 1 here, once: this is the one `init`, and no
            // one locks the registry before the state is 2.
            unsafe { REGISTRY.init() };
            REGISTRY_STATE.store(2, ordering::Release);
        } else {
            while REGISTRY_STATE.load(ordering::Acquire) != 2 {
                kernel::processor::cpu_relax();
            }
        }
    }
    Registry {
        guard: REGISTRY.lock(),
    }
}

impl Registry {
    fn head(&mut self, key: usize) -> &mut *mut Entry {
        &mut self.guard.heads[bucket(key)]
    }

    /// Link `e` under `key`.
    ///
    /// # Safety
    ///
    /// `e` is not linked, and its object is alive and does not move until it is unlinked.
    pub(crate) unsafe fn link(&mut self, e: NonNull<Entry>, key: usize) {
        let e = e.as_ptr();
        let head = self.head(key);
        // SAFETY: The registry is locked; `e` and the head entry (if any) are alive (the
        // invariant of `Entry` and the caller's guarantee).
        unsafe {
            *(*e).key.get() = key;
            *(*e).prev.get() = core::ptr::null_mut();
            *(*e).next.get() = *head;
            if !(*head).is_null() {
                *(**head).prev.get() = e;
            }
            *(*e).linked.get() = true;
            *(*e).claimed.get() = false;
        }
        *head = e;
    }

    /// Claim `e` if it is linked and unclaimed; tell whether this call did.
    pub(crate) fn claim(&mut self, e: &Entry) -> bool {
        // SAFETY: The registry is locked.
        unsafe {
            if !*e.linked.get() || *e.claimed.get() {
                return false;
            }
            *e.claimed.get() = true;
        }
        true
    }

    /// Is `e` linked and unclaimed?
    pub(crate) fn is_unclaimed(&mut self, e: &Entry) -> bool {
        // SAFETY: The registry is locked.
        unsafe { *e.linked.get() && !*e.claimed.get() }
    }

    /// Unlink `e`, if it is linked.
    pub(crate) fn unlink(&mut self, e: &Entry) {
        // SAFETY: The registry is locked.
        if !unsafe { *e.linked.get() } {
            return;
        }
        let p = core::ptr::from_ref(e).cast_mut();
        // SAFETY: The registry is locked and `e` is linked (so are its neighbours: alive).
        unsafe {
            let (prev, next) = (*e.prev.get(), *e.next.get());
            if !next.is_null() {
                *(*next).prev.get() = prev;
            }
            if prev.is_null() {
                let head = self.head(*e.key.get());
                debug_assert!(*head == p);
                *head = next;
            } else {
                *(*prev).next.get() = next;
            }
            *e.linked.get() = false;
        }
    }

    /// The linked entry of `kind` with `key` (a thread's task), claimed or not, if any.
    pub(crate) fn find(&mut self, key: usize, kind: Kind) -> Option<NonNull<Entry>> {
        let mut p = *self.head(key);
        while !p.is_null() {
            // SAFETY: Linked entries are alive; the registry is locked.
            unsafe {
                if *(*p).key.get() == key && (*p).ops.kind == kind {
                    return NonNull::new(p);
                }
                p = *(*p).next.get();
            }
        }
        None
    }

    /// Claim the first unclaimed entry of `module` and `kind`, and run its `prepare`.
    fn claim_first(&mut self, module: *mut bindings::module, kind: Kind) -> Option<NonNull<Entry>> {
        for b in 0..BUCKETS {
            let mut p = self.guard.heads[b];
            while !p.is_null() {
                // SAFETY: Linked entries are alive; the registry is locked.
                let (e, next) = unsafe { (&*p, *(*p).next.get()) };
                if e.module() == module && e.ops.kind == kind && self.claim(e) {
                    // SAFETY: Claimed just now, with the registry locked, as `prepare` wants.
                    unsafe { (e.ops.prepare)(NonNull::from(e)) };
                    return NonNull::new(p);
                }
                p = next;
            }
        }
        None
    }

    /// Is any entry of `module` still linked (claimed by someone who is ending it)?
    fn any_linked(&mut self, module: *mut bindings::module) -> bool {
        self.guard.heads.iter().any(|&head| {
            let mut p = head;
            while !p.is_null() {
                // SAFETY: Linked entries are alive; the registry is locked.
                unsafe {
                    if (*p).module() == module {
                        return true;
                    }
                    p = *(*p).next.get();
                }
            }
            false
        })
    }
}

/// Claim `e`: tell whether this call did (then the caller ends its object, and unlinks it).
///
/// # Context
///
/// Any context that may take a spinlock.
pub(crate) fn claim(e: &Entry) -> bool {
    lock().claim(e)
}

/// Unlink `e` (its claimer, once done with it).
///
/// # Context
///
/// Any context that may take a spinlock.
pub(crate) fn unlink(e: &Entry) {
    lock().unlink(e)
}

/// Claim `e` and unlink it at once: tell whether this call claimed it.
///
/// # Context
///
/// Any context that may take a spinlock.
pub(crate) fn claim_and_unlink(e: &Entry) -> bool {
    let mut reg = lock();
    let claimed = reg.claim(e);
    if claimed {
        reg.unlink(e);
    }
    claimed
}

/// Link `e` into the registry under `key`, first making sure that the reaper is started.
///
/// # Safety
///
/// As for [`Registry::link`].
///
/// # Context
///
/// Any context that may take a spinlock.
pub(crate) unsafe fn link(e: NonNull<Entry>, key: usize) {
    // SAFETY: `e` is alive (the caller's guarantee).
    reaper::ensure(unsafe { e.as_ref() }.module());
    // SAFETY: By the function's safety requirements.
    unsafe { lock().link(e, key) };
}

/// End every object of `module` that is still unclaimed, each by its `reap`, in [`Kind`]
/// order (also those linked meanwhile: a reaped thread's body may make more on its way out),
/// then wait until the module's claimed entries are unlinked too.
///
/// # Context
///
/// May sleep.
#[cfg_attr(not(CONFIG_SYSFS), allow(dead_code))]
fn reap(module: *mut bindings::module) {
    loop {
        let mut reaped = false;
        for kind in [Kind::PerCpu, Kind::Worker, Kind::Thread] {
            loop {
                // The lock is released at the end of this statement: `reap` sleeps, and locks
                // the registry itself (in a `while let` the guard would live through the body).
                let claimed = lock().claim_first(module, kind);
                let Some(e) = claimed else { break };
                // SAFETY: Claimed by this call, and prepared; the object is alive until `reap`
                // unlinks it (the invariants of the claimers).
                unsafe { (e.as_ref().ops.reap)(e) };
                reaped = true;
            }
        }
        if reaped {
            continue;
        }
        if !lock().any_linked(module) {
            break;
        }
        // Claimed by an owner that is ending it (a thread of the module stopping another
        // on its way out, say): wait for it.
        kernel::time::delay::fsleep(kernel::time::Delta::from_millis(1));
    }
}

/// The module notifier that reaps this module's objects at `MODULE_STATE_GOING`.
///
/// The first link cannot register it in place: the caller may run inside the module notifier
/// chain (KUnit runs a module's test suites from its `MODULE_STATE_LIVE` notifier), whose lock
/// `register_module_notifier()` would wait for. A work item registers it instead, holding a
/// reference on the module's kobject meanwhile, so that the module cannot be freed before its
/// reaper has run. If the module starts going before the registration is through, the work
/// item either sees the notifier called after all, or sees `free_module()` begin (it waits for
/// the kobject reference: `mod->mkobj.kobj_completion` is set), and reaps then.
#[cfg(CONFIG_SYSFS)]
mod reaper {
    use super::{reap, sys};
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
            if state != bindings::module_state_MODULE_STATE_GOING || REAPED.load(ordering::Acquire)
            {
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
}

/// Without sysfs nothing would wait for the notifier to leave the chain: no reaper.
#[cfg(not(CONFIG_SYSFS))]
mod reaper {
    use kernel::bindings;

    pub(super) fn ensure(_module: *mut bindings::module) {}
}
