// SPDX-License-Identifier: GPL-2.0

//! Host model checks of kthread-rs's hand-off protocols (`make model`).
//!
//! Each protocol file below is a file of `rust/kthread_rs/`, built unchanged: in the kernel
//! its `kernel::sync::atomic` is the kernel crate's; here it is the `kernel` crate of
//! `kernel/`, over loom. The C side of each hand-off (`kthread_stop()`, the kthread_worker's
//! timer and lists, `task_work_add()`, ...) is modelled in `c/` after the 7.2 sources. The
//! models under `models/` drive both, and loom runs them under every interleaving (bounded as
//! each model says).

#![allow(dead_code)]

/// The close gate of a worker.
#[path = "../../../rust/kthread_rs/worker/gate.rs"]
pub mod gate;

/// The hand-offs of a thread's control block.
#[path = "../../../rust/kthread_rs/thread/handoff.rs"]
pub mod handoff;

/// The member list of a thread group, and the hand-off of the group to its own member.
#[path = "../../../rust/kthread_rs/thread/members.rs"]
pub mod members;

/// The take cell of a queued task_work callback.
#[path = "../../../rust/kthread_rs/task_work/take.rs"]
pub mod take;

/// The delayed work's operations, one at a time.
#[path = "../../../rust/kthread_rs/worker/delayed_op.rs"]
pub mod delayed_op;

pub mod c;

pub mod trace;

/// Run `f` under loom: every interleaving with at most `LOOM_MAX_PREEMPTIONS` preemptions
/// (default 3: every bug this project has met needed two), each a fresh execution with its
/// trace reset.
pub fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(move || {
        trace::reset();
        f()
    });
}

#[cfg(test)]
mod models;
