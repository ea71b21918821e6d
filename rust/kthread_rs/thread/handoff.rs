// SPDX-License-Identifier: GPL-2.0

//! The hand-offs of a thread's control block ([`Header`](super::header::Header)): its flags
//! word, and the decisions taken on it in one atomic step each: an orphaning against the
//! thread's own exit ([`Flags::orphan`], [`Flags::leave`]), an owner's C call against the
//! module-unload reaper ([`Flags::begin_owner_call`], [`Flags::wait_owner_calls`]), and the
//! order of an owner's stop against its read of the result ([`stop_then_take`]).
//!
//! This file is model-checked on the host (`tools/model`, `make model`): it names no kernel item
//! but `kernel::sync::atomic` and `kernel::time`, which the model builds over loom. What it needs
//! of the registry and of C (a claim under the registry's lock, `module_get()`,
//! `kthread_stop()`) it is given, as closures or through [`Stop`].

use kernel::{
    sync::atomic::{ordering, Atomic},
    time::{delay::fsleep, Delta},
};

/// The thread was made freezable before its first wake-up.
pub(crate) const FREEZABLE: u32 = 1 << 0;
/// The thread's handle was dropped where it could not wait for the thread (on the thread
/// itself, or in a wait cycle): the thread owns the handle's references now, its
/// `should_stop` is true, and it frees its memory when it ends ([`Flags::leave`]).
pub(crate) const ORPHAN: u32 = 1 << 1;
/// The orphan holds a reference on the module, taken when it was orphaned, for its way out.
pub(crate) const ORPHAN_MODREF: u32 = 1 << 2;
/// A thread that owns itself from the start (`spawn_detached`, `ThreadGroup`).
pub(crate) const SELF_OWNED: u32 = 1 << 3;
/// The body started (set by the thread before it takes its body): a thread that the reaper
/// stops without it has never run (H2).
pub(crate) const STARTED: u32 = 1 << 4;
/// The owner is in a C call that WARNs on an exiting thread (`kthread_park()`,
/// `kthread_bind()`, `kthread_affine_preferred()`): the reaper waits for it to return before it
/// stops the thread.
const OWNER_CALL: u32 = 1 << 5;
/// The thread has decided how it leaves ([`Flags::leave`]): an orphaning after this takes no
/// module reference (nothing would give it back), and leaves the thread's memory to the reaper.
const LEAVING: u32 = 1 << 6;
/// A self-owned thread left its block to the reaper (it could hold no module reference), and
/// holds a reference on its own task for the reaper's stop, which the reaper gives back.
pub(crate) const ZOMBIE_TASKREF: u32 = 1 << 7;

/// A thread's flags.
///
/// # Invariants
///
/// - `ORPHAN_MODREF` is set only together with `ORPHAN`, by the orphaning that took that module
///   reference, and only if `LEAVING` was clear at that step: the thread, which reads the flags
///   in the step that sets `LEAVING`, then gives the reference back.
/// - `LEAVING` is set once, by the thread, and never cleared.
/// - `OWNER_CALL` is set only by the owner, and stays set from before its check that the entry
///   is unclaimed until after its C call has returned.
pub(crate) struct Flags(Atomic<u32>);

/// How a thread leaves, after its body ([`Flags::leave`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leave {
    /// Return into `kthread()`: an owned thread (its claimer stops it and waits for its exit),
    /// or an orphan that can have no module reference (the reaper ends it).
    Return,
    /// Leave through `module_put_and_kthread_exit()`, holding a module reference. `release`:
    /// this thread claimed and unlinked its entry, and frees the orphaned handle's memory and
    /// task reference first; otherwise the reaper claimed it and frees them once it exited.
    Exit {
        /// Free the handle's memory and task reference before exiting.
        release: bool,
    },
}

impl Flags {
    /// Flags with `bits` set (`FREEZABLE`, `SELF_OWNED`, or nothing).
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn new(bits: u32) -> Self {
        debug_assert_eq!(bits & !(FREEZABLE | SELF_OWNED), 0);
        // INVARIANT: No orphan, no owner call, not leaving (the callers pass FREEZABLE,
        // SELF_OWNED or nothing).
        Self(Atomic::new(bits))
    }

    /// The flags now.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn get(&self) -> u32 {
        self.0.load(ordering::Acquire)
    }

    /// Set `bits` (`STARTED`, or `ZOMBIE_TASKREF`: never a bit of the hand-offs here), in one
    /// fully ordered step.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn set(&self, bits: u32) {
        debug_assert_eq!(bits & (ORPHAN | ORPHAN_MODREF | LEAVING | OWNER_CALL), 0);
        self.set_any(bits)
    }

    /// Set any `bits`, in one fully ordered step.
    fn set_any(&self, bits: u32) {
        let mut old = self.0.load(ordering::Relaxed);
        while let Err(now) = self.0.cmpxchg(old, old | bits, ordering::Full) {
            old = now;
        }
    }

    /// Clear `bits`, in one fully ordered step.
    fn clear(&self, bits: u32) {
        let mut old = self.0.load(ordering::Relaxed);
        while let Err(now) = self.0.cmpxchg(old, old & !bits, ordering::Full) {
            old = now;
        }
    }

    /// Mark the thread orphaned. `modref`: the caller took a reference on the thread's module
    /// for the thread's way out. Returns `true` if the caller gives that reference back at once
    /// (the thread had decided how it leaves already: it would not), `false` if it is the
    /// thread's now (or there was none).
    ///
    /// # Context
    ///
    /// Any context.
    #[must_use]
    pub(crate) fn orphan(&self, modref: bool) -> bool {
        let mut old = self.0.load(ordering::Relaxed);
        loop {
            // A thread that has decided how it leaves (from an interrupt on it, after its
            // body) would not give a reference back: it is left to the reaper.
            // INVARIANT: `ORPHAN_MODREF` only if not leaving at this step.
            let new = if old & LEAVING == 0 && modref {
                old | ORPHAN | ORPHAN_MODREF
            } else {
                old | ORPHAN
            };
            match self.0.cmpxchg(old, new, ordering::Full) {
                Ok(_) => return modref && new & ORPHAN_MODREF == 0,
                Err(now) => old = now,
            }
        }
    }

    /// After the body: decide how the thread leaves, in one atomic step with any orphaning
    /// ([`Flags::orphan`]). `module_get` takes a module reference (`true` if it could);
    /// `claim_and_unlink` claims and unlinks the thread's entry (`true` if this call claimed
    /// it). Called once, by the thread.
    ///
    /// # Context
    ///
    /// The thread itself, which may take a spinlock.
    pub(crate) fn leave(
        &self,
        module_get: impl FnOnce() -> bool,
        claim_and_unlink: impl FnOnce() -> bool,
    ) -> Leave {
        // INVARIANT: `LEAVING` is set here, once; what the flags held at this step decides.
        let mut flags = self.0.load(ordering::Relaxed);
        while let Err(now) = self.0.cmpxchg(flags, flags | LEAVING, ordering::Full) {
            flags = now;
        }
        if flags & ORPHAN == 0 {
            return Leave::Return;
        }
        // An orphan without a reference from its orphaning needs one of its own: none can be
        // had while the module's `init` has not returned, or while it is going away, and then
        // the reaper ends the thread.
        if flags & ORPHAN_MODREF == 0 && !module_get() {
            return Leave::Return;
        }
        Leave::Exit {
            release: claim_and_unlink(),
        }
    }

    /// Before an owner's C call that WARNs on an exiting thread (see `OWNER_CALL`), of which
    /// one at most runs at a time (they take the handle by `&mut`): `false` if
    /// the reaper has claimed the thread (it is stopped, or being stopped); otherwise the
    /// reaper waits for [`Flags::end_owner_call`] before it stops the thread. `unclaimed`
    /// tells, under the registry's lock, whether the thread's entry is linked and unclaimed.
    ///
    /// # Context
    ///
    /// Any context that may take a spinlock.
    pub(crate) fn begin_owner_call(&self, unclaimed: impl FnOnce() -> bool) -> bool {
        // INVARIANT: Set before the check, fully ordered: a reaper that claims after the check
        // (the registry's lock orders the two) sees the bit and waits.
        self.set_any(OWNER_CALL);
        if unclaimed() {
            return true;
        }
        self.clear(OWNER_CALL);
        false
    }

    /// After the owner's C call.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn end_owner_call(&self) {
        self.clear(OWNER_CALL);
    }

    /// The reaper, after its claim: wait until an owner's call that started before the claim
    /// (`begin_owner_call` found the entry unclaimed) has ended, so that the thread may exit.
    ///
    /// # Context
    ///
    /// May sleep.
    pub(crate) fn wait_owner_calls(&self) {
        // Acquire: the owner's C call happens before the stop that follows.
        while self.get() & OWNER_CALL != 0 {
            fsleep(Delta::from_millis(1));
        }
    }
}

/// What a stopper of an owned thread does, with the registry and C.
///
/// # Safety
///
/// All four methods act on one owned thread, whose entry is in the registry (or its model).
/// [`Stop::claim`] returns `true` only if this call claimed that entry, and the registry lets
/// at most one party claim it (a handle, a scope's record, the reaper): [`stop`] relies on it
/// to make its `kthread_stop()` the thread's one.
pub(crate) unsafe trait Stop {
    /// Claim the thread's entry (under the registry's lock): `true` if this call did.
    ///
    /// # Context
    ///
    /// Any context that may take a spinlock.
    fn claim(&mut self) -> bool;

    /// The C `kthread_stop()` (or `kthread_stop_put()`): set the stop bit, wake the thread and
    /// wait until it has exited.
    ///
    /// # Safety
    ///
    /// The caller claimed the thread's entry: this is the thread's one `kthread_stop()`, called
    /// once.
    ///
    /// # Context
    ///
    /// May sleep.
    unsafe fn kthread_stop(&mut self);

    /// Unlink the claimed entry, and tell whoever waits for the stop ([`Stop::wait_stopped`]).
    ///
    /// # Context
    ///
    /// Any context that may take a spinlock.
    fn unlink_and_complete(&mut self);

    /// Wait until the claimer (the reaper, or a scope's record) has stopped the thread.
    ///
    /// # Context
    ///
    /// May sleep.
    fn wait_stopped(&mut self);
}

/// Stop an owned thread: whoever claims its entry stops it, once; a party that finds it claimed
/// waits until the claimer has. Returns once the thread has exited.
///
/// # Context
///
/// May sleep.
pub(crate) fn stop(s: &mut impl Stop) {
    if s.claim() {
        // SAFETY: Claimed just now, by this call, and only one party can (the safety
        // requirement of the `unsafe` trait `Stop`); called once.
        unsafe { s.kthread_stop() };
        s.unlink_and_complete();
    } else {
        s.wait_stopped();
    }
}

/// Stop an owned thread ([`stop`]), then read its result with `take`: the thread wrote it
/// before it exited, and the stop returns only after that exit.
///
/// # Context
///
/// May sleep.
pub(crate) fn stop_then_take<R>(s: &mut impl Stop, take: impl FnOnce() -> R) -> R {
    stop(s);
    take()
}
