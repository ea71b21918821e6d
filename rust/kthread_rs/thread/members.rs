// SPDX-License-Identifier: GPL-2.0

//! The member list of a [`ThreadGroup`](super::ThreadGroup), and the hand-off of the group's
//! memory to one of its own threads when that thread drops the group.
//!
//! Each thread of a group is on the group's list from before it is woken until it leaves after
//! its body; it then completes the group's completion, and the group's drop waits for one
//! completion per thread before it frees the group. A drop that runs on one of the group's own
//! threads (in its body, or in an interrupt on it) cannot wait for that thread: it takes the
//! thread off the list and out of the group ([`List::disown`]), waits for the others, and hands
//! the group's memory to the thread ([`release`]), which frees it as it leaves.
//!
//! This file is model-checked on the host (`tools/model`, `make model`): it names no kernel item
//! but `kernel::sync::atomic` and `kernel::time`, which the model builds over loom.
//!
//! # Orderings
//!
//! `group` and `orphan` are written by one writer only once the thread runs: a drop of the group
//! that runs on the member's own thread (`group` under the group's lock, `orphan` after the
//! wait). Their reader is that same thread, after its body; other threads never read them. A
//! thread reads its own writes, and an interrupt runs to completion before the code it
//! interrupted resumes, so every access is ordered by the thread's own program order: `Relaxed`
//! suffices (as `READ_ONCE()`/`WRITE_ONCE()` do for a field shared with an interrupt handler),
//! and the atomic makes each read a fresh one, never cached across the interrupt. The initial
//! `group` is written before the thread is woken (`wake_up_process()` orders it). The list's
//! links (`task`, `next`) are read and written under the group's lock only.

use core::{ops::DerefMut, ptr};
use kernel::sync::atomic::{ordering, Atomic};

/// What a thread's block holds for its group `G`; `T` is the task type.
///
/// # Invariants
///
/// - `group` is the group whose completion the thread completes at its exit, or null: the thread
///   has no group, or a drop of its group that ran on this thread took it out ([`List::disown`]).
///   Once the thread runs, only such a drop writes it, under the group's lock.
/// - `orphan` is null, or (set after `group` was nulled, by a drop of the thread's group that
///   ran on this thread: [`release`]) that group, now owned by the thread, which frees it
///   before it leaves.
/// - From [`List::join`] until it leaves the list, a thread with a non-null `group` is on that
///   group's list (linked through `next`, with its `task`); `task` and `next` are read and
///   written under the group's lock only.
pub(crate) struct Member<G, T> {
    group: Atomic<*const G>,
    orphan: Atomic<*mut G>,
    task: *const T,
    next: *mut Member<G, T>,
}

impl<G, T> Member<G, T> {
    /// The member of a thread of `group` (or of no group: null), not yet on its list.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn new(group: *const G) -> Self {
        // INVARIANT: Not running yet; the caller puts it on `group`'s list ([`List::join`])
        // before the thread is woken.
        Self {
            group: Atomic::new(group),
            orphan: Atomic::new(ptr::null_mut()),
            task: ptr::null(),
            next: ptr::null_mut(),
        }
    }

    /// The group that the thread was handed by a drop on it ([`release`]), or null. Read by
    /// the thread itself, after [`leave`] (see the module's "Orderings").
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn orphan(&self) -> *mut G {
        self.orphan.load(ordering::Relaxed)
    }
}

/// A group's list of the threads that have not yet left after their body.
///
/// # Invariants
///
/// Every block on the list is alive (its thread frees it only after it has left the list).
pub(crate) struct List<G, T> {
    first: *mut Member<G, T>,
}

// SAFETY: The list is only touched under the group's lock; its blocks belong to live threads.
unsafe impl<G, T> Send for List<G, T> {}

impl<G, T> List<G, T> {
    /// An empty list.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn new() -> Self {
        Self {
            first: ptr::null_mut(),
        }
    }

    /// Put the member `m` of the new, not yet woken thread `task` on the (locked) list.
    ///
    /// # Safety
    ///
    /// `m` is the unshared, alive member of `task`, a thread of the list's group, not on it.
    ///
    /// # Context
    ///
    /// Any context; the caller holds the group's lock.
    pub(crate) unsafe fn join(&mut self, m: *mut Member<G, T>, task: *const T) {
        // SAFETY: By the function's safety requirement; the list is locked.
        unsafe {
            (*m).task = task;
            (*m).next = self.first;
        }
        // INVARIANT: `m` is alive, and its thread frees it only after leaving the list.
        self.first = m;
    }

    /// The member of `task`, if it is on the (locked) list.
    ///
    /// # Context
    ///
    /// Any context; the caller holds the group's lock.
    pub(crate) fn find(&self, task: *const T) -> Option<*mut Member<G, T>> {
        let mut p = self.first;
        while !p.is_null() {
            // SAFETY: Blocks on the list are alive (type invariant), and the list is locked.
            unsafe {
                if ptr::eq((*p).task, task) {
                    return Some(p);
                }
                p = (*p).next;
            }
        }
        None
    }

    /// Take `me` off the (locked) list and out of its group: its thread no longer completes the
    /// group, and leaves as a thread of no group does. Called by a drop of the group that runs
    /// on `me`'s own thread.
    ///
    /// # Safety
    ///
    /// `me` is on the list (from [`List::find`] under the same lock), and is the member of the
    /// current thread.
    ///
    /// # Context
    ///
    /// Any context; the caller holds the group's lock.
    pub(crate) unsafe fn disown(&mut self, me: *mut Member<G, T>) {
        // SAFETY: By the function's safety requirement `me` is on the list, so alive.
        unsafe {
            let found = self.unlink(me);
            debug_assert!(found, "a group's member to disown is not on its list");
            // INVARIANT: Off the list with a null `group`. Written under the lock, which
            // `leave` holds when it reads `group` again; and on `me`'s own thread (see the
            // module's "Orderings").
            (*me).group.store(ptr::null(), ordering::Relaxed);
        }
    }

    /// Remove `m` from the (locked) list, if it is on it: `false` if it was not (a broken
    /// invariant, which the callers assert in debug builds).
    ///
    /// # Safety
    ///
    /// `m` is alive, and the list is locked.
    unsafe fn unlink(&mut self, m: *mut Member<G, T>) -> bool {
        let mut link: *mut *mut Member<G, T> = &mut self.first;
        // SAFETY: Every block on the locked list is alive (type invariant), and so is `m`.
        unsafe {
            while !(*link).is_null() {
                if *link == m {
                    *link = (*m).next;
                    return true;
                }
                link = &raw mut (**link).next;
            }
        }
        false
    }
}

/// The leave of the thread whose member is `m`, after its body: take it off its group's list,
/// and say how it leaves: through the returned group's completion, or (null) as a thread of no
/// group, when it has none or a drop of the group on this thread took it out already (which
/// may have handed it the group: [`Member::orphan`], to be read after this).
///
/// `lock` locks the list of a group that is alive, and returns the guard.
///
/// # Safety
///
/// `m` is the alive member of the current thread, after its body (or of a thread that never
/// ran, which the caller owns). Its group, if any, is alive: it waits for this thread's
/// completion, or it was handed to this thread. `lock(g)` returns the locked list of `g`
/// itself (the unlink writes the links of that list's other members).
///
/// # Context
///
/// As `lock` (a spinlock: any context but an interrupt on a thread that holds it).
pub(crate) unsafe fn leave<G, T, L>(
    m: *mut Member<G, T>,
    lock: impl FnOnce(*const G) -> L,
) -> *const G
where
    L: DerefMut<Target = List<G, T>>,
{
    // SAFETY: By the function's safety requirement `m` is alive.
    let group = unsafe { (*m).group.load(ordering::Relaxed) };
    if group.is_null() {
        return group;
    }
    // A drop of the group on this thread (an interrupt) may run here: it takes the thread out
    // and hands it the group instead of freeing it, so `group` is still alive.
    let mut list = lock(group);
    // Read again under the lock: a drop that ran since the read above took the thread off the
    // list already and nulled `group`, and the group is no longer this thread's to complete.
    // SAFETY: As above.
    let group = unsafe { (*m).group.load(ordering::Relaxed) };
    if !group.is_null() {
        // SAFETY: `m` is alive, and the list is locked.
        let found = unsafe { list.unlink(m) };
        debug_assert!(found, "a group's member is not on its group's list");
    }
    group
}

/// The end of a group's drop, after it has waited for the completions of every thread of the
/// group but `me`: who frees `group`. `me` is the member of the thread that the drop runs on,
/// which [`List::disown`] took out of the group, or `None` when the drop runs on no thread of
/// the group. Returns the group if the caller frees it now, or null if it was handed to `me`'s
/// thread, which frees it as it leaves.
///
/// # Safety
///
/// `group` is the group, owned by the caller, and no thread of it touches it any more but `me`'s.
/// `me` is the alive member of the current thread, taken out of the group by this drop.
///
/// # Context
///
/// Any context.
pub(crate) unsafe fn release<G, T>(me: Option<*mut Member<G, T>>, group: *mut G) -> *mut G {
    match me {
        None => group,
        Some(me) => {
            // INVARIANT: `me`'s thread owns the group now: it reads `orphan` after its body (or
            // after the interrupt that runs this drop returns), on this same thread.
            // SAFETY: By the function's safety requirement `me` is alive: its thread frees its
            // block only after reading `orphan`, and it runs none of its own code while this
            // drop runs on it.
            unsafe { (*me).orphan.store(group, ordering::Relaxed) };
            ptr::null_mut()
        }
    }
}
