// SPDX-License-Identifier: GPL-2.0

//! `struct completion` (kernel/sched/completion.c, 7.2): a count under the wait queue's
//! spinlock, which `complete()` raises and `wait_for_completion()` waits for and lowers.

use loom::sync::{Condvar, Mutex};

/// `struct completion`: `done` under `wait.lock`; the condvar is the swait queue.
pub struct Completion {
    done: Mutex<u32>,
    wait: Condvar,
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// `init_completion()`.
    pub fn new() -> Self {
        Self {
            done: Mutex::new(0),
            wait: Condvar::new(),
        }
    }

    /// `complete()` = `complete_with_flags()`, completion.c lines 21-31 and 50-53: raise `done`
    /// and wake a waiter, under the lock. The completer does not touch `x` after the unlock.
    pub fn complete(&self) {
        let mut done = self.done.lock().unwrap();
        if *done != u32::MAX {
            *done += 1;
        }
        self.wait.notify_one();
    }

    /// `complete_all()`, completion.c lines 72-85: `done` = `UINT_MAX` (complete for good: no
    /// wait lowers it again), and wake every waiter, under the lock.
    pub fn complete_all(&self) {
        *self.done.lock().unwrap() = u32::MAX;
        self.wait.notify_all();
    }

    /// `wait_for_completion()` = `__wait_for_common()` and `do_wait_for_common()`, completion.c
    /// lines 85-127 and 151-154 (uninterruptible, no timeout): wait under the lock until `done`,
    /// then lower it.
    pub fn wait_for_completion(&self) {
        let mut done = self.done.lock().unwrap();
        while *done == 0 {
            done = self.wait.wait(done).unwrap();
        }
        if *done != u32::MAX {
            *done -= 1;
        }
    }

    /// `done`, read at the end of an execution (every thread joined).
    pub fn done(&self) -> u32 {
        *self.done.lock().unwrap()
    }
}
