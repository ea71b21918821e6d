// SPDX-License-Identifier: GPL-2.0

//! task_work's take cell (`task_work/take.rs`) against the C list (`c::task_work`): a
//! cancelable callback raced by the target task's run and exit, and a plain one refused once the
//! task has exited. Each callback runs, is cancelled, is given back, or is dropped unrun:
//! exactly one of them, and it is dropped exactly once; each node is freed exactly once (loom's
//! `Arc`, whose leaks loom reports); the module reference is given back exactly once per queued
//! node.
//!
//! The node and its functions below follow `Node`, `add_cancelable`, `add`, `queue_node`,
//! `give_back`, `run_and_free` and `Pending::cancel` of `task_work.rs` line by line, with the C
//! `callback_head` of the model.

use crate::c::task_work::{init_task_work, CallbackHead, Esrch, Task};
use crate::take::Take;
use crate::trace::step;
use loom::{
    sync::{atomic::AtomicUsize, Arc},
    thread,
};
use std::sync::atomic::{AtomicUsize as StdUsize, Ordering::SeqCst};

/// A module's reference count (`try_module_get()`/`module_put()`); always live here.
struct Module {
    refs: AtomicUsize,
}

/// What became of each callback, counted outside loom (plain counters, checked as they move).
#[derive(Default)]
struct Fates {
    outcomes: [StdUsize; 2],
    drops: [StdUsize; 2],
}

impl Fates {
    fn outcome(&self, id: usize, what: &str) {
        step(&format!("cb{id}"), what);
        assert_eq!(
            self.outcomes[id].fetch_add(1, SeqCst),
            0,
            "callback {id}: {what}, after another outcome (run/cancelled/given back)"
        );
    }
}

/// A callback: records its run, and its drop (which must happen once).
struct Cb {
    id: usize,
    fates: &'static Fates,
}

impl Cb {
    fn run(self) {
        self.fates.outcome(self.id, "runs");
    }
}

impl Drop for Cb {
    fn drop(&mut self) {
        // Counted, but not checked while a failure unwinds (a second panic would abort).
        let before = self.fates.drops[self.id].fetch_add(1, SeqCst);
        if std::thread::panicking() {
            return;
        }
        assert_eq!(before, 0, "callback {} dropped twice", self.id);
    }
}

/// `Node<W>` of task_work.rs: the C head first (so that `container_of!` is a cast), the take
/// cell, the module.
#[repr(C)]
struct Node {
    head: CallbackHead,
    work: Take<Cb>,
    module: &'static Module,
}

/// `new_node()`.
fn new_node(module: &'static Module, work: Cb) -> Arc<Node> {
    Arc::new(Node {
        head: CallbackHead::new(),
        work: Take::new(work),
        module,
    })
}

/// `queue_node()`.
fn queue_node(task: &Task, node: Arc<Node>) -> Result<(), (Esrch, Arc<Node>)> {
    let module = node.module;
    module.refs.fetch_add(1, SeqCst);
    let raw = Arc::into_raw(node);
    // SAFETY: The leaked reference keeps the node; never queued.
    unsafe { init_task_work(&raw const (*raw).head, task_work_func) };
    // SAFETY: As above; the C code keeps the reference until `task_work_func`.
    if let Err(e) = unsafe { task.task_work_add(&raw const (*raw).head) } {
        module.refs.fetch_sub(1, SeqCst);
        // SAFETY: Not queued: the leaked reference is still ours.
        return Err((e, unsafe { Arc::from_raw(raw) }));
    }
    Ok(())
}

/// `give_back()`.
fn give_back(node: Arc<Node>) -> Cb {
    // SAFETY: Never queued, no handle: as in task_work.rs.
    let work = unsafe { node.work.take_unshared() };
    drop(node);
    work
}

/// `add()`.
fn add(module: &'static Module, task: &Task, work: Cb) -> Result<(), (Esrch, Cb)> {
    let node = new_node(module, work);
    queue_node(task, node).map_err(|(e, node)| (e, give_back(node)))
}

/// `Pending<W>`.
struct Pending {
    node: Arc<Node>,
}

impl Pending {
    /// `Pending::cancel()`.
    fn cancel(&self) -> Option<Cb> {
        self.node.work.take()
    }
}

/// `add_cancelable()`.
fn add_cancelable(module: &'static Module, task: &Task, work: Cb) -> Result<Pending, (Esrch, Cb)> {
    let node = new_node(module, work);
    let kept = node.clone();
    match queue_node(task, node) {
        Ok(()) => Ok(Pending { node: kept }),
        Err((e, node)) => {
            drop(node);
            Err((e, give_back(kept)))
        }
    }
}

/// `task_work_func()` and `run_and_free()`.
///
/// # Safety
///
/// `head` is the head of a `Node` queued by `queue_node`, called once.
unsafe fn task_work_func(head: *const CallbackHead) {
    // SAFETY: `head` is first in the `repr(C)` node; the reference leaked for this call.
    let node = unsafe { Arc::from_raw(head.cast::<Node>()) };
    let module = node.module;
    if let Some(work) = node.work.take() {
        work.run();
    }
    drop(node);
    step("task", "module_put (node freed)");
    module.refs.fetch_sub(1, SeqCst);
}

/// A cancelable callback and a plain one, queued by one thread, which then cancels the first,
/// against the target task that returns to user mode once and then exits (each a
/// `task_work_run()`). Bounds: two threads, two callbacks, preemption bound 3 (under 1 s).
#[test]
fn run_cancel_or_drop_exactly_once() {
    crate::check(|| {
        let module: &'static Module = Box::leak(Box::new(Module {
            refs: AtomicUsize::new(0),
        }));
        let fates: &'static Fates = Box::leak(Box::default());
        let task = Arc::new(Task::new());
        let t = {
            let task = task.clone();
            thread::spawn(move || {
                step("task", "task_work_run (return to user mode)");
                task.task_work_run();
                step("task", "exits: PF_EXITING, task_work_run");
                task.set_exiting();
                task.task_work_run();
            })
        };
        step("adder", "add_cancelable cb0");
        match add_cancelable(module, &task, Cb { id: 0, fates }) {
            Ok(pending) => {
                step("adder", "queued cb0; cancel");
                match pending.cancel() {
                    Some(_cb) => fates.outcome(0, "cancelled"),
                    None => step("adder", "cancel: too late"),
                }
                drop(pending);
            }
            Err((_, _cb)) => fates.outcome(0, "given back (ESRCH)"),
        }
        step("adder", "add cb1");
        if let Err((_, _cb)) = add(module, &task, Cb { id: 1, fates }) {
            fates.outcome(1, "given back (ESRCH)");
        }
        t.join().unwrap();
        assert_eq!(
            module.refs.load(SeqCst),
            0,
            "module references not balanced"
        );
        for id in 0..2 {
            assert_eq!(fates.drops[id].load(SeqCst), 1, "callback {id} not dropped");
        }
    });
}
