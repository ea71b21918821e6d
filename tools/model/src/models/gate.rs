// SPDX-License-Identifier: GPL-2.0

//! The worker's close gate (`worker/gate.rs`) against the teardown that frees what the
//! operations touch: no operation touches the C worker once `close()` has returned.
//!
//! Bounds: two operations (one of them entering twice) and one teardown.

use crate::gate::Gate;
use crate::trace::step;
use loom::{
    cell::UnsafeCell,
    sync::{Arc, Mutex},
    thread,
};

/// The C worker: its queues are written under its lock by every operation, and freed (written
/// without the lock) by the teardown. A `loom::cell::UnsafeCell`, so that an access that does
/// not happen before the free is a reported race, whatever the values.
struct Worker {
    gate: Gate,
    lock: Mutex<()>,
    queues: UnsafeCell<u32>,
}

#[test]
fn close_waits_for_every_operation() {
    crate::check(|| {
        let w = Arc::new(Worker {
            gate: Gate::new(),
            lock: Mutex::new(()),
            queues: UnsafeCell::new(0),
        });
        let ops: Vec<_> = (0..2)
            .map(|i| {
                let w = w.clone();
                thread::spawn(move || {
                    let who = format!("op{i}");
                    for _ in 0..(1 + i) {
                        let r = w.gate.enter(|| {
                            step(&who, "queue: touches the C worker");
                            let _lock = w.lock.lock().unwrap();
                            // SAFETY: Under the worker's lock; loom checks the free against it.
                            w.queues.with_mut(|q| unsafe { *q += 1 });
                        });
                        step(
                            &who,
                            if r.is_ok() {
                                "left the gate"
                            } else {
                                "refused"
                            },
                        );
                    }
                })
            })
            .collect();
        step("teardown", "close");
        w.gate.close();
        step("teardown", "closed: frees the C worker");
        // SAFETY: Not under the lock: the free must come after every operation by the gate.
        w.queues.with_mut(|q| unsafe { *q = u32::MAX });
        // After the close, every operation is refused.
        assert!(
            w.gate.enter(|| ()).is_err(),
            "an operation entered a closed gate"
        );
        for t in ops {
            t.join().unwrap();
        }
    });
}
