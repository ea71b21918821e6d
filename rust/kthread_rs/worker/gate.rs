// SPDX-License-Identifier: GPL-2.0

//! The close gate of a kthread_worker: every operation on the C worker runs inside the gate, and
//! the worker's teardown closes it, then waits until no operation is in flight, before it
//! cancels, flushes and stops the C worker.
//!
//! This file is model-checked on the host (`tools/model`, `make model`): it names no kernel item
//! but `kernel::sync::atomic` and `kernel::time`, which the model builds over loom.

use kernel::{
    sync::atomic::{ordering, Atomic},
    time::{delay::fsleep, Delta},
};

/// Bit 0 of the gate's word: the gate is closed.
const CLOSED: usize = 1;
/// What one operation in flight adds to the gate's word.
const IN_FLIGHT: usize = 2;

/// The gate.
///
/// # Invariants
///
/// Bit 0 of the word is set once the gate is closed, and is never cleared; the rest counts the
/// operations in flight (in units of [`IN_FLIGHT`]). An operation runs only while it is
/// counted, and only if it found the gate open when it was counted: once the bit is set and the
/// count is zero, no operation runs or will run.
pub(crate) struct Gate(Atomic<usize>);

/// The gate was closed: the operation did not run.
pub(crate) struct Closed;

impl Gate {
    /// An open gate.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn new() -> Self {
        // INVARIANT: Open, and no operation in flight.
        Self(Atomic::new(0))
    }

    /// Run `f` unless the gate is closed. Lock-free, so that queueing works in any context.
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R, Closed> {
        // INVARIANT: Counted before the bit is read, in one fully ordered step: a closer that
        // set the bit before this sees the count, and waits for it.
        if self.0.fetch_add(IN_FLIGHT, ordering::Full) & CLOSED != 0 {
            self.0.fetch_sub(IN_FLIGHT, ordering::Full);
            return Err(Closed);
        }
        let r = f();
        self.0.fetch_sub(IN_FLIGHT, ordering::Full);
        Ok(r)
    }

    /// Close the gate: every later [`Gate::enter`] returns [`Closed`]. Operations in flight go
    /// on; see [`Gate::close`].
    ///
    /// # Context
    ///
    /// Any context.
    pub(crate) fn refuse(&self) {
        let mut old = self.0.load(ordering::Relaxed);
        while let Err(now) = self.0.cmpxchg(old, old | CLOSED, ordering::Full) {
            old = now;
        }
    }

    /// Close the gate, and wait until no operation is in flight.
    ///
    /// # Context
    ///
    /// May sleep. (This file names no kernel function: the worker's teardown, its caller,
    /// calls `might_sleep()`.)
    pub(crate) fn close(&self) {
        self.refuse();
        // Acquire: what the last operation did happens before what the caller does next.
        while self.0.load(ordering::Acquire) & !CLOSED != 0 {
            fsleep(Delta::from_micros(10));
        }
    }
}
