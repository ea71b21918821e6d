// SPDX-License-Identifier: GPL-2.0

//! The delayed work's operations (`worker/delayed_op.rs`: queue, modify, cancel, one at a
//! time) against C's `canceling` flag, the timer and the worker's thread (`c::delayed`).
//!
//! Each model: one delayed work, the worker's thread, the timer interrupt, and one or two
//! threads that operate on the work; then the teardown as `Inner::teardown` does it (cancel the
//! work if it is on the delayed list, as `cancel_all_delayed`, then flush the worker, then stop
//! its thread). Checked at the end of every execution: every queue entry was run or cancelled,
//! exactly once; the references balance (only the model's own is left, and its put frees the
//! item with nothing of C pointing to it); and throughout: no reference made to, run of, or
//! put on a freed item.

use crate::c::delayed::{self as c, Dwork, Host, Node};
use crate::delayed_op;
use crate::trace::step;
use loom::{sync::Arc, thread};
use std::sync::atomic::Ordering::SeqCst;

/// An operation of a model's thread.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `Worker::queue_delayed` with this delay (jiffies; 0: at once).
    Queue(u32),
    /// `Worker::mod_delayed` with this delay.
    Mod(u32),
    /// `Worker::cancel_delayed_sync`.
    Cancel,
}

fn operate(d: &Dwork, who: &'static str, op: Op) {
    step(who, format!("{op:?}"));
    match op {
        Op::Queue(delay) => {
            let c = Host { d, delay, who };
            // SAFETY: The model holds a reference throughout.
            let r = unsafe { delayed_op::queue(&d.op, &c) };
            step(who, format!("queue -> {r:?}"));
        }
        Op::Mod(delay) => {
            let c = Host { d, delay, who };
            // SAFETY: As above.
            let r = unsafe { delayed_op::modify(&d.op, &c) };
            step(who, format!("modify -> {r:?}"));
        }
        Op::Cancel => {
            let c = Host { d, delay: 0, who };
            // As `Worker::cancel_with`: inside the gate; a closed worker has nothing of ours to
            // cancel (its teardown does).
            // SAFETY: As above; inside the gate, so no teardown's cancel runs meanwhile.
            let r = d.gate.enter(|| unsafe { delayed_op::cancel(&d.op, &c) });
            if r.is_err() {
                step(who, "the gate is closed: nothing to cancel");
            }
            if r.unwrap_or(false) {
                // As `Worker::cancel_with`: the removed entry's reference is ours.
                d.cancels.fetch_add(1, SeqCst);
                d.put(who);
            }
            step(who, "cancel done");
        }
    }
}

/// Run `ops` (one thread each) on a work first queued by the model with `initial` delay, if
/// any, under every interleaving with at most `bound` preemptions (as `crate::check`, which
/// has 3; `LOOM_MAX_PREEMPTIONS` overrides it); then the worker's teardown.
fn model(bound: usize, initial: Option<u32>, ops: &'static [(&'static str, Op)]) {
    model_with(bound, initial, ops, false)
}

/// As [`model`]; with `racing_teardown`, every operation runs on a thread of its own and the
/// teardown runs meanwhile (a worker dropped while other threads still queue on it).
fn model_with(
    bound: usize,
    initial: Option<u32>,
    ops: &'static [(&'static str, Op)],
    racing_teardown: bool,
) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    b.check(move || {
        crate::trace::reset();
        let d = Arc::new(Dwork::new());
        if let Some(delay) = initial {
            operate(&d, "main", Op::Queue(delay));
        }
        let worker = {
            let d = d.clone();
            thread::spawn(move || c::worker_thread(&d, || c::run_item(&d)))
        };
        let timer = {
            let d = d.clone();
            thread::spawn(move || c::timer_interrupt(&d))
        };
        // The last operation runs on the model's own thread (one thread less to explore),
        // unless the teardown does.
        let (&(last_who, last_op), others) = ops.split_last().unwrap();
        let spawned = if racing_teardown { ops } else { others };
        let threads: Vec<_> = spawned
            .iter()
            .map(|&(who, op)| {
                let d = d.clone();
                thread::spawn(move || operate(&d, who, op))
            })
            .collect();
        if racing_teardown {
            teardown(&d);
        } else {
            operate(&d, last_who, last_op);
        }
        for t in threads {
            t.join().unwrap();
        }
        if !racing_teardown {
            teardown(&d);
        }
        worker.join().unwrap();
        timer.join().unwrap();

        let (entries, runs, cancels) = (
            d.entries.load(SeqCst),
            d.runs.load(SeqCst),
            d.cancels.load(SeqCst),
        );
        assert_eq!(
            entries,
            runs + cancels,
            "{entries} queue entries, but {runs} runs and {cancels} cancels: an entry was dropped \
             unseen (its reference leaks), or run or cancelled twice"
        );
        assert_eq!(
            d.refs(),
            1,
            "references do not balance: {} besides the model's own",
            d.refs() - 1
        );
        d.put("main");
    });
}

/// `Inner::teardown` of the worker: close its gate (and wait for the operations in it), then
/// `cancel_all_delayed` (a work on the delayed list is cancelled with a reference of the
/// teardown's own), `kthread_flush_worker()`, `kthread_stop()`; and the timer interrupts end.
fn teardown(d: &Dwork) {
    step("teardown", "close the gate");
    d.gate.close();
    step("teardown", "cancel_all_delayed");
    let delayed = d.lock.lock().unwrap().node == Node::DelayedList;
    if delayed {
        d.get("teardown");
        let c = Host {
            d,
            delay: 0,
            who: "teardown",
        };
        // SAFETY: The teardown, with a reference of its own.
        if unsafe { delayed_op::cancel(&d.op, &c) } {
            d.cancels.fetch_add(1, SeqCst);
            d.put("teardown");
        }
        d.put("teardown");
    }
    step("teardown", "flush and stop");
    let mut g = d.lock.lock().unwrap();
    while g.node == Node::WorkList || g.current {
        g = d.wake.wait(g).unwrap();
    }
    assert_eq!(
        g.node,
        Node::Off,
        "a work left on a list after the teardown"
    );
    g.stop = true;
    d.wake.notify_all();
    drop(g);
    let mut b = d.base.lock().unwrap();
    assert!(!b.pending, "a timer left armed after the teardown");
    b.stop = true;
    d.base_wake.notify_all();
}

/// A cancel against a timer that fires meanwhile: C's cancel raises `canceling` while the
/// callback may already run (mutant `delayed-cancel-no-timer-delete`).
///
/// Bounds: the work queued with a delay before; one cancel; the worker, the timer; preemption
/// bound 3, under 1 s.
#[test]
fn cancel_against_the_timer() {
    model(3, Some(1), &[("cancel", Op::Cancel)]);
}

/// A queue against a cancel of the same idle work: the queue must not arm the timer between
/// the cancel's own `timer_delete_sync()` and C's cancel (mutant `delayed-no-op-gate`).
///
/// Bounds: one queue (delay 1), one cancel; the worker, the timer; preemption bound 2 (3 takes
/// 12 to 20 s), about 1 s. The bug needs two preemptions.
#[test]
fn queue_against_cancel() {
    model(2, None, &[("queue", Op::Queue(1)), ("cancel", Op::Cancel)]);
}

/// A modify that queues at once (delay 0) on an idle work, with the worker running it: the
/// entry's reference must exist before C can run it (mutant `delayed-mod-ref-after`); against
/// a cancel of the same work.
///
/// Bounds: one modify (delay 0), one cancel; the worker, the timer; preemption bound 3, about
/// 4 s.
#[test]
fn mod_at_once_against_cancel() {
    model(3, None, &[("mod", Op::Mod(0)), ("cancel", Op::Cancel)]);
}

/// Pushing back a pending delayed work (a watchdog's pet) while its timer fires: the modify's
/// own `timer_delete_sync()` lets a running callback finish, and C's modify then finds the
/// entry on the work list (it moves it back to the delayed list, the same reference).
///
/// Bounds: the work queued with a delay before; one modify (delay 1); the worker, the timer;
/// preemption bound 3, about 1 s.
#[test]
fn mod_pending_against_the_timer() {
    model(3, Some(1), &[("mod", Op::Mod(1))]);
}

/// Pushing back a pending delayed work against a cancel of it: whichever runs first, the entry
/// is run or cancelled once, and the modify's spare reference goes back.
///
/// Bounds: the work queued with a delay before; one modify (delay 1), one cancel; the worker,
/// the timer; preemption bound 2 (3 takes 21 s), under 2 s.
#[test]
fn mod_pending_against_cancel() {
    model(2, Some(1), &[("mod", Op::Mod(1)), ("cancel", Op::Cancel)]);
}

/// The worker's teardown (its handle dropped) while another thread queues on it: the queue
/// either runs in the gate before the close returns (and the teardown cancels or runs its
/// entry) or gets `ESHUTDOWN` and gives its reference back; the worker's gate and the delayed
/// work's protocol together (mutant `gate-check-then-count` fails it too).
///
/// Bounds: one queue (delay 1) and the teardown; the worker, the timer; preemption bound 3.
#[test]
fn queue_against_teardown() {
    model_with(3, None, &[("queue", Op::Queue(1))], true);
}
