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

/// The registry's lock. `global_lock!` names a type after the static, which clippy takes for
/// an acronym when the macro is expanded in its own crate (the kernel crate).
#[allow(clippy::upper_case_acronyms)]
mod lock {
    use super::{Lists, BUCKETS};
    use kernel::prelude::*;

    kernel::sync::global_lock! {
        // SAFETY: Initialised once by `lock()` before its first use.
        pub(super) unsafe(uninit) static REGISTRY: SpinLock<Lists> = Lists {
            heads: [core::ptr::null_mut(); BUCKETS],
        };
    }
}
use lock::REGISTRY;

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
#[cfg_attr(all(MODULE, not(CONFIG_SYSFS)), allow(dead_code))]
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

/// Out of tree: the module's own notifier, and how it gets on and off the chain.
#[cfg(all(MODULE, CONFIG_SYSFS))]
mod reaper;

/// Without sysfs nothing would wait for the notifier to leave the chain: no reaper.
#[cfg(all(MODULE, not(CONFIG_SYSFS)))]
mod reaper {
    use kernel::bindings;

    pub(super) fn ensure(_module: *mut bindings::module) {}
}

/// The reaper of the kernel crate: one module notifier for every module, registered at boot by
/// an initcall and never removed (the kernel crate is never unloaded). At `MODULE_STATE_GOING`
/// of a module (after its `exit`, or its failed `init`, and before `free_module()`), it ends
/// every entry of that module still linked.
#[cfg(not(MODULE))]
mod reaper {
    use super::reap;
    use crate::{bindings, prelude::*, types::Opaque};

    /// The notifier block, linked into the module notifier chain at boot.
    struct Reaper(Opaque<bindings::notifier_block>);

    // SAFETY: Rust never touches the block after its constant initialisation; the notifier
    // chain links and reads it under its own lock.
    unsafe impl Sync for Reaper {}

    static REAPER: Reaper = Reaper(Opaque::new(bindings::notifier_block {
        notifier_call: Some(module_notify),
        next: core::ptr::null_mut(),
        priority: 0,
    }));

    /// Every module is watched from boot on: nothing to do per module.
    pub(super) fn ensure(_module: *mut bindings::module) {}

    /// The module notifier: reap the entries of a module that is going away.
    ///
    /// # Safety
    ///
    /// Called by the module notifier chain, with `data` the module whose state changes.
    unsafe extern "C" fn module_notify(
        _nb: *mut bindings::notifier_block,
        action: c_ulong,
        data: *mut c_void,
    ) -> c_int {
        if action == bindings::module_state_MODULE_STATE_GOING as c_ulong {
            // The module is not freed before the GOING notifiers have returned; its entries
            // are ended here, and none of its code runs for them afterwards.
            reap(data.cast());
        }
        bindings::NOTIFY_DONE as c_int
    }

    /// The initcall: link the notifier block into the module notifier chain, once, at boot.
    /// A `core_initcall`: before any module can be loaded (`request_module()` works from the
    /// rootfs initcall on), so that no module's GOING comes before it.
    #[no_mangle]
    extern "C" fn __rust_kthread_reaper_init() -> c_int {
        // SAFETY: `REAPER` is a static that is never moved or freed, and it is registered
        // once, here: the initcall runs once.
        unsafe { bindings::register_module_notifier(REAPER.0.get()) }
    }

    #[cfg(CONFIG_HAVE_ARCH_PREL32_RELOCATIONS)]
    core::arch::global_asm!(
        r#".section ".initcall1.init", "a"
        __rust_kthread_reaper_initcall:
            .long   __rust_kthread_reaper_init - .
            .previous
        "#
    );

    #[cfg(not(CONFIG_HAVE_ARCH_PREL32_RELOCATIONS))]
    #[link_section = ".initcall1.init"]
    #[used(compiler)]
    static __RUST_KTHREAD_REAPER_INITCALL: extern "C" fn() -> c_int = __rust_kthread_reaper_init;
}
