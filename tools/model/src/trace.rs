// SPDX-License-Identifier: GPL-2.0

//! The steps of the execution that loom is running, printed if it fails: the interleaving.
//!
//! Loom runs every thread of a model on the test's own OS thread, so one thread-local log
//! holds the steps of all of them, in the order in which loom scheduled them.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static STEPS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static PRINTED: RefCell<bool> = const { RefCell::new(false) };
}

/// Start a new execution (the first thing in each `loom::model` closure).
pub fn reset() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Not a failure: the `generator` crate under loom's threads ends a thread's stack
            // with a panic of its own (`generator::done()`), which its hook hides.
            if info
                .location()
                .is_some_and(|l| l.file().contains("/generator-"))
            {
                return prev(info);
            }
            // Panics with no message are control flow (the `generator` crate's `Cancel`, which
            // loom's threads unwind with), not failures. The first other panic of an execution
            // is the failure; loom unwinds the other threads of the model after it.
            let msg = info.payload().downcast_ref::<&str>().is_some()
                || info.payload().downcast_ref::<String>().is_some();
            if !msg || PRINTED.with(|p| p.replace(true)) {
                return prev(info);
            }
            let steps = STEPS.with(|s| s.borrow().clone());
            eprintln!(
                "interleaving of the failing execution ({} steps):",
                steps.len()
            );
            for (i, s) in steps.iter().enumerate() {
                eprintln!("  {:3}  {s}", i + 1);
            }
            prev(info);
        }));
    });
    STEPS.with(|s| s.borrow_mut().clear());
    PRINTED.with(|p| *p.borrow_mut() = false);
}

/// Record a step of `who`.
pub fn step(who: &str, what: impl AsRef<str>) {
    STEPS.with(|s| s.borrow_mut().push(format!("{who:<10} {}", what.as_ref())));
}
