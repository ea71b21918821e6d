// SPDX-License-Identifier: GPL-2.0

//! The operations on a delayed work of a kthread_worker (queue, modify, cancel), one at a time,
//! and the order of their calls into C around the work's timer and the item's references.
//!
//! This file is model-checked on the host (`tools/model`, `make model`): it names no kernel item
//! but `kernel::sync::atomic` and `kernel::time`, which the model builds over loom. The calls
//! into C and the item's reference count go through [`DelayedC`]: `delayed.rs` implements it
//! over the bindings and the item's `Arc`, the model over its C model of `kernel/kthread.c`.
//!
//! Why one at a time: C raises `work->canceling` while it deletes the timer with the worker
//! unlocked, and a timer callback that runs then drops the work from its list silently
//! (`kthread_delayed_work_timer_fn()`): the queue entry's reference would leak. Our cancel and
//! modify first delete the timer with nothing raised, so that a callback already running
//! finishes as usual; the timer can then fire in C's window only if another thread arms it
//! again in between, which [`OpState`] rules out.

use kernel::{
    sync::atomic::{ordering, Atomic},
    time::{delay::fsleep, Delta},
};

/// No operation runs.
const OP_IDLE: u32 = 0;
/// A queue or a modify runs.
const OP_QUEUE: u32 = 1;
/// A cancel runs.
const OP_CANCEL: u32 = 2;

/// Which of our operations on one delayed work runs.
///
/// # Invariants
///
/// The word is `OP_IDLE`, or the operation (`OP_QUEUE`, `OP_CANCEL`) that moved it from
/// `OP_IDLE` and has not ended yet: at most one operation on the work runs at a time.
pub(crate) struct OpState(Atomic<u32>);

impl OpState {
    /// No operation running.
    pub(crate) fn new() -> Self {
        // INVARIANT: Idle.
        Self(Atomic::new(OP_IDLE))
    }

    /// Start a queue or modify: `false` if another operation on the work runs (a queue may run
    /// in interrupt context, and a cancel may be waiting for the work that queues: it must not
    /// wait).
    ///
    /// # Context
    ///
    /// Any context.
    fn try_begin_queue(&self) -> bool {
        // INVARIANT: Only from idle. Acquire: what the last operation did happens before.
        self.0.cmpxchg(OP_IDLE, OP_QUEUE, ordering::Acquire).is_ok()
    }

    /// Start a cancel, sleeping until no other operation on the work runs.
    ///
    /// # Context
    ///
    /// May sleep.
    fn begin_cancel(&self) {
        // INVARIANT: Only from idle, as above.
        while self
            .0
            .cmpxchg(OP_IDLE, OP_CANCEL, ordering::Acquire)
            .is_err()
        {
            // A queue or modify ends within microseconds; another cancel may wait for a work.
            fsleep(Delta::from_micros(50));
        }
    }

    /// End the running operation.
    ///
    /// # Context
    ///
    /// Any context.
    fn end_op(&self) {
        // INVARIANT: The caller's operation ends. Release: its calls happen before the next
        // operation's.
        self.0.store(OP_IDLE, ordering::Release);
    }
}

/// One delayed work bound to a worker, as the operations see it: the C calls on it and its
/// item's reference count.
///
/// The item's references are counted, not named: [`DelayedC::get`] makes one that the caller
/// owns (in the kernel, an `Arc::into_raw` of the item), and a queue entry that C makes with
/// the work takes one such reference over, which the worker's run or a cancel gives back.
///
/// # Safety
///
/// The sequence functions below rely on what an implementation does, not only on what its
/// callers do:
/// - [`DelayedC::get`] makes a new reference to the item, which the caller owns;
/// - [`DelayedC::enter`] runs `f` only while the worker's gate lets it (its queues are open),
///   and returns `Ok` with `f`'s result only if it ran `f`;
/// - the C calls return what C did: [`DelayedC::queue_delayed`] `true` and
///   [`DelayedC::mod_delayed`] `false` only when C made a new queue entry, which took the
///   caller's reference over; [`DelayedC::cancel_delayed_sync`] `true` only when C removed an
///   entry, whose reference is then the caller's.
pub(crate) unsafe trait DelayedC {
    /// An operation's error.
    type Error;

    /// `EBUSY`: another operation on the work runs, or a queue found the work pending.
    ///
    /// # Context
    ///
    /// Any context.
    fn busy() -> Self::Error;

    /// Run `f` unless the worker is closing (the worker's gate), or the error.
    ///
    /// # Context
    ///
    /// Any context, as `f`.
    fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R, Self::Error>;

    /// Make a new reference to the item, owned by the caller.
    ///
    /// # Context
    ///
    /// Any context.
    fn get(&self);

    /// Give up a reference to the item.
    ///
    /// # Safety
    ///
    /// The caller owns a reference to the item from [`DelayedC::get`], which is not the item's
    /// last.
    ///
    /// # Context
    ///
    /// Any context (never the last reference, so the item's destructor does not run).
    unsafe fn put(&self);

    /// `timer_delete_sync()` of the work's timer: it is not pending, and its callback does not
    /// run, when this returns (unless armed again meanwhile).
    ///
    /// # Safety
    ///
    /// Called inside the worker's gate ([`DelayedC::enter`]), or by its teardown.
    ///
    /// # Context
    ///
    /// Any context (the timer is irq-safe).
    unsafe fn timer_delete_sync(&self);

    /// `kthread_queue_delayed_work()`: whether it queued the work (a new queue entry).
    ///
    /// # Safety
    ///
    /// Called inside the worker's gate; the caller owns a reference from [`DelayedC::get`],
    /// which the new queue entry takes over if this returns `true`.
    ///
    /// # Context
    ///
    /// Any context.
    unsafe fn queue_delayed(&self) -> bool;

    /// `kthread_mod_delayed_work()`: whether the work was pending (`false`: it was idle, and is
    /// queued now, a new queue entry).
    ///
    /// # Safety
    ///
    /// Called inside the worker's gate; the caller owns a reference from [`DelayedC::get`],
    /// which the new queue entry takes over if this returns `false`.
    ///
    /// # Context
    ///
    /// Any context.
    unsafe fn mod_delayed(&self) -> bool;

    /// `kthread_cancel_delayed_work_sync()`: whether it removed a queue entry (whose
    /// reference is then the caller's).
    ///
    /// # Safety
    ///
    /// Called inside the worker's gate, or by its teardown; not on the worker's thread (it
    /// would wait for itself).
    ///
    /// # Context
    ///
    /// May sleep.
    unsafe fn cancel_delayed_sync(&self) -> bool;
}

/// Queue the work of `c` (whose operation state is `op`): a reference of its own goes to the
/// queue entry. The caller's reference keeps the item alive through the call, so no last
/// reference is ever dropped here (the caller may be an interrupt).
///
/// `Err(busy)` if another operation on the work runs or the work is pending.
///
/// # Safety
///
/// `op` is the operation state of the work of `c`; the caller holds a reference to the item
/// throughout the call.
///
/// # Context
///
/// Any context.
pub(crate) unsafe fn queue<C: DelayedC>(op: &OpState, c: &C) -> Result<(), C::Error> {
    if !op.try_begin_queue() {
        return Err(C::busy());
    }
    // The entry's reference exists before C can run the work.
    c.get();
    // SAFETY: Inside the gate; the reference made above goes to the entry if C queues.
    let r = c.enter(|| unsafe { c.queue_delayed() });
    op.end_op();
    match r {
        Ok(true) => Ok(()),
        Ok(false) => {
            // SAFETY: Not taken by an entry: still ours, and not the last (the caller's).
            unsafe { c.put() };
            Err(C::busy())
        }
        Err(e) => {
            // SAFETY: As above.
            unsafe { c.put() };
            Err(e)
        }
    }
}

/// Run the work of `c` after its delay whether it is pending or not (`kthread_mod_delayed_work()`).
/// Returns whether it was pending. `Err(busy)` if another operation on the work runs.
///
/// # Safety
///
/// As for [`queue`].
///
/// # Context
///
/// Any context (the timer is irq-safe, so deleting it never sleeps).
pub(crate) unsafe fn modify<C: DelayedC>(op: &OpState, c: &C) -> Result<bool, C::Error> {
    if !op.try_begin_queue() {
        return Err(C::busy());
    }
    // The reference for a new queue entry must exist before C can run the work: with a zero
    // delay, the worker may run it before `kthread_mod_delayed_work()` returns.
    c.get();
    // SAFETY: Inside the gate. First let a timer callback that already runs finish as usual
    // (see `cancel`). Then, when C returns false it queued an idle work, whose entry takes the
    // reference made above; when true, the entry that existed stays, the reference unused.
    let r = c.enter(|| unsafe {
        c.timer_delete_sync();
        c.mod_delayed()
    });
    op.end_op();
    if !matches!(r, Ok(false)) {
        // SAFETY: Not taken by a new queue entry: still ours, and not the last (the caller's).
        unsafe { c.put() };
    }
    r
}

/// Cancel the work of `c` (timer or queue) and wait until it does not run
/// (`kthread_cancel_delayed_work_sync()`), made to report every pending entry it removes.
/// Returns whether it removed one: that entry's reference is then the caller's.
///
/// C cancels the timer with `work->canceling` raised; a timer callback that was already running
/// then drops the work from its list without queueing it, and C reports "not pending": the
/// entry's reference would leak. Deleting the timer first, with nothing raised, lets such a
/// callback finish as usual (the work moves to the work list), so C's cancel sees the entry;
/// and no queue or modify of the same work runs meanwhile to arm the timer again ([`OpState`]).
///
/// # Safety
///
/// `op` is the operation state of the work of `c`; called inside the worker's gate, or by its
/// teardown, and not on the worker's thread; the caller holds a reference to the item
/// throughout the call.
///
/// # Context
///
/// May sleep.
pub(crate) unsafe fn cancel<C: DelayedC>(op: &OpState, c: &C) -> bool {
    op.begin_cancel();
    // SAFETY: By the function's safety requirement. Deleting a pending timer leaves the work
    // on the delayed list, where the C cancel finds it.
    let r = unsafe {
        c.timer_delete_sync();
        c.cancel_delayed_sync()
    };
    op.end_op();
    r
}
