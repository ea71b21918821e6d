// SPDX-License-Identifier: GPL-2.0

//! Helpers shared by the KUnit test modules (each includes this file with `#[path]`).
//!
//! They return values and never assert: KUnit's assertions work only in the test functions.

use kernel::{
    bindings,
    cpu::nr_cpu_ids,
    prelude::*,
    time::{delay::fsleep, Delta},
};

/// `n` milliseconds.
pub(crate) fn ms(n: i64) -> Delta {
    Delta::from_millis(n)
}

/// Poll `cond` every millisecond for up to 10 s; tells whether it became true.
pub(crate) fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..10_000 {
        if cond() {
            return true;
        }
        fsleep(ms(1));
    }
    cond()
}

/// Is `cpu` online?
pub(crate) fn cpu_online(cpu: u32) -> bool {
    // SAFETY: `cpu_online_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
    cpu < nr_cpu_ids()
        && unsafe { bindings::cpumask_test_cpu(cpu as c_int, &raw mut bindings::__cpu_online_mask) }
}

/// Run `f` with failslab set to fail the `nth` fault-injectable allocation of this task (the
/// guest enables failslab for GFP_KERNEL, with nothing failing unless a task asks).
pub(crate) fn with_fail_nth<R>(nth: u32, f: impl FnOnce() -> R) -> R {
    // SAFETY: `fail_nth` of `current` is only used by fault injection, in this task.
    unsafe { (*kernel::task::Task::current_raw()).fail_nth = nth };
    let r = f();
    // SAFETY: As above.
    unsafe { (*kernel::task::Task::current_raw()).fail_nth = 0 };
    r
}
