// SPDX-License-Identifier: GPL-2.0

//! The take cell of a queued task_work callback: the target task (which runs it), the handle
//! (which cancels it) and the node's drop (which drops it unrun) each try to take the callback
//! out, and exactly one of them gets it.
//!
//! This file is model-checked on the host (`tools/model`, `make model`): it names no kernel item
//! but `kernel::sync::atomic` and `kernel::time`, which the model builds over loom.

use core::{cell::UnsafeCell, mem::ManuallyDrop};
use kernel::sync::atomic::{ordering, Atomic};

/// A value that can be taken out once, by whichever of several threads comes first.
///
/// # Invariants
///
/// `value` holds the value while `taken` is false. Whoever swaps `taken` from false to true
/// (see [`Take::take`]) owns the value from then on; nothing else touches `value`, and `taken`
/// is never cleared.
pub(crate) struct Take<W> {
    taken: Atomic<bool>,
    value: UnsafeCell<ManuallyDrop<W>>,
}

// SAFETY: The value is only ever moved out (once) and dropped, never shared (the invariants),
// so a `Take` may be sent to any thread when the value is `Send`.
unsafe impl<W: Send> Send for Take<W> {}
// SAFETY: `&Take` gives access to the value only through the atomic `taken`, like a `Mutex<W>`
// that is `Sync` for `W: Send`; no `&W` is ever handed out.
unsafe impl<W: Send> Sync for Take<W> {}

impl<W> Take<W> {
    /// A cell holding `value`.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn new(value: W) -> Self {
        // INVARIANT: `value` holds the value and `taken` is false: nothing has taken it.
        Self {
            taken: Atomic::new(false),
            value: UnsafeCell::new(ManuallyDrop::new(value)),
        }
    }

    /// Take the value out: the first caller gets it, every later one gets `None`.
    ///
    /// One exchange decides, so that of a concurrent run and cancel exactly one wins. `Full`:
    /// the winner's reads of the value happen after the writes that made it (the node was
    /// written before it was queued or shared, and `task_work_add()`'s `cmpxchg` and the
    /// `Arc` publish it), and a loser does not touch the value at all.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn take(&self) -> Option<W> {
        if self.taken.xchg(true, ordering::Full) {
            return None;
        }
        // SAFETY: `taken` was false, so `value` still holds the value, and this call set it to
        // true: no other caller ever reads `value` (type invariant).
        Some(unsafe { ManuallyDrop::take(&mut *self.value.get()) })
    }

    /// Take the value out of a cell that was never shared.
    ///
    /// # Safety
    ///
    /// No other call has taken or can take the value: the cell was never shared, or every
    /// other user of it is gone without taking.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) unsafe fn take_unshared(&self) -> W {
        // The swap that makes this call the owner of the value (type invariant); by the safety
        // requirement it was false.
        let was = self.taken.xchg(true, ordering::Full);
        debug_assert!(!was, "take_unshared of a value that was taken");
        // SAFETY: `taken` was false and this call set it: the value is there and no one else
        // reads it. The cell's drop sees `taken` and does not drop the value again.
        unsafe { ManuallyDrop::take(&mut *self.value.get()) }
    }
}

impl<W> Drop for Take<W> {
    fn drop(&mut self) {
        // A value that nobody took is dropped with its cell.
        drop(self.take());
    }
}
