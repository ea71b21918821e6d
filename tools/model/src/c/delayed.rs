// SPDX-License-Identifier: GPL-2.0

//! One `kthread_delayed_work` on a kthread_worker, with its timer, after 7.2 `kernel/kthread.c`
//! and `kernel/time/timer.c`; and the item's reference count (the `Arc` of a `DelayedWork`).
//!
//! The model has one worker and one delayed work, so the worker's lists reduce to where the
//! work's `node` is ([`Node`]), and `worker->current_work` to whether it is this work. The
//! worker's `raw_spinlock` and the timer base's lock are loom mutexes; the waits (the worker
//! thread's sleep, `kthread_flush_work()`, `timer_delete_sync()` spinning on a running
//! callback) are loom condvars over the same state, which have the same outcomes.
//!
//! References: a counter with a freed state (std atomics: they count, loom need not explore
//! them). A reference made to a freed item, a put of a freed one, or a run of a freed item
//! asserts; so does a free while C still has the work on a list or its timer armed.

use crate::delayed_op::{DelayedC, OpState};
use crate::gate::Gate;
use crate::trace::step;
use loom::cell::UnsafeCell;
use loom::sync::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Where the work's `node` is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Node {
    /// `list_empty(&work->node)`: idle, or running.
    Off,
    /// On `worker->work_list`: the worker will run it.
    WorkList,
    /// On `worker->delayed_work_list`: its timer will move it to the work list.
    DelayedList,
}

/// What `worker->lock` protects, for our one work.
pub struct Locked {
    /// `work->node`.
    pub node: Node,
    /// `work->worker != NULL`.
    pub bound: bool,
    /// `work->canceling`.
    pub canceling: u32,
    /// `worker->current_work == work`.
    pub current: bool,
    /// `kthread_stop()` of the worker's thread (the model's end).
    pub stop: bool,
}

/// What the timer base's lock protects, for our one timer.
pub struct Base {
    /// `timer_pending()`.
    pub pending: bool,
    /// `base->running_timer == timer`.
    pub running: bool,
    /// No more timer interrupts (the model's end).
    pub stop: bool,
}

/// The worker, the work and its timer, and the item around them.
pub struct Dwork {
    /// `worker->lock`.
    pub lock: Mutex<Locked>,
    /// Wakes the worker's thread (`wake_up_process()`) and those that wait for a run to end.
    pub wake: Condvar,
    /// The timer base's lock.
    pub base: Mutex<Base>,
    /// Wakes the timer "interrupt" and `timer_delete_sync()` waiting for a callback.
    pub base_wake: Condvar,
    /// The item's operation state (the protocol's, in the item's header).
    pub(crate) op: OpState,
    /// The worker's close gate (the protocol's, `worker/gate.rs`), which every operation
    /// enters and the teardown closes.
    pub(crate) gate: Gate,
    /// The item's data, which its run writes.
    pub data: UnsafeCell<u32>,
    refs: AtomicUsize,
    freed: AtomicBool,
    /// Queue entries made (a queue that queued, a modify of an idle work).
    pub entries: AtomicUsize,
    /// Runs of the work.
    pub runs: AtomicUsize,
    /// Entries that a cancel removed (and whose reference it gave up).
    pub cancels: AtomicUsize,
}

impl Dwork {
    /// A new item, not queued, with one reference (the caller's).
    pub fn new() -> Self {
        Self {
            lock: Mutex::new(Locked {
                node: Node::Off,
                bound: false,
                canceling: 0,
                current: false,
                stop: false,
            }),
            wake: Condvar::new(),
            base: Mutex::new(Base {
                pending: false,
                running: false,
                stop: false,
            }),
            base_wake: Condvar::new(),
            op: OpState::new(),
            gate: Gate::new(),
            data: UnsafeCell::new(0),
            refs: AtomicUsize::new(1),
            freed: AtomicBool::new(false),
            entries: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            cancels: AtomicUsize::new(0),
        }
    }

    /// The references that exist.
    pub fn refs(&self) -> usize {
        self.refs.load(SeqCst)
    }

    /// `Arc::clone` + `into_raw`: a new reference.
    pub fn get(&self, who: &str) {
        let old = self.refs.fetch_add(1, SeqCst);
        step(who, format!("get a reference ({old} -> {})", old + 1));
        assert!(
            old > 0 && !self.freed.load(SeqCst),
            "use after free: a reference made to a freed item"
        );
    }

    /// `Arc::from_raw` + drop: give up a reference; the last frees the item.
    pub fn put(&self, who: &str) {
        let old = self.refs.fetch_sub(1, SeqCst);
        step(
            who,
            format!("put a reference ({old} -> {})", old.wrapping_sub(1)),
        );
        assert!(
            old > 0 && !self.freed.load(SeqCst),
            "double free: a reference put on a freed item"
        );
        if old == 1 {
            step(who, "the last reference: frees the item");
            self.freed.store(true, SeqCst);
            let g = self.lock.lock().unwrap();
            assert!(
                g.node == Node::Off,
                "use after free: the item is freed while on a C list ({:?})",
                g.node
            );
            drop(g);
            let b = self.base.lock().unwrap();
            assert!(
                !b.pending && !b.running,
                "use after free: the item is freed with its timer armed or running"
            );
        }
    }
}

impl Default for Dwork {
    fn default() -> Self {
        Self::new()
    }
}

/// `kthread_insert_work()` (kthread.c 1163-1185, with its sanity check): onto the work list,
/// waking the worker.
fn insert_work(d: &Dwork, g: &mut Locked) {
    assert_eq!(
        g.node,
        Node::Off,
        "WARN: inserting a work that is on a list"
    );
    g.node = Node::WorkList;
    g.bound = true;
    d.wake.notify_all();
}

/// `add_timer()` (timer.c 1245-1250): arm the timer (WARN if already pending).
fn add_timer(d: &Dwork) {
    let mut b = d.base.lock().unwrap();
    assert!(!b.pending, "WARN: add_timer() of a pending timer");
    b.pending = true;
    d.base_wake.notify_all();
}

/// `timer_delete_sync()` (timer.c 1451-1470, 1591-1630, 1674-1677): wait while the callback
/// runs (C spins on `base->running_timer`), then detach the timer if pending. Returns whether it
/// was pending.
pub fn timer_delete_sync(d: &Dwork, who: &str) -> bool {
    let mut b = d.base.lock().unwrap();
    while b.running {
        step(who, "timer_delete_sync: the callback runs, waits");
        b = d.base_wake.wait(b).unwrap();
    }
    let was = b.pending;
    b.pending = false;
    step(
        who,
        if was {
            "timer_delete_sync: deleted the pending timer"
        } else {
            "timer_delete_sync: timer idle"
        },
    );
    was
}

/// The timer interrupt: `expire_timers()` (timer.c 1766-1805) for a `TIMER_IRQSAFE` timer:
/// detach it, mark it running, drop the base lock, run the callback, then clear running.
/// Runs until the model's end.
pub fn timer_interrupt(d: &Dwork) {
    let mut b = d.base.lock().unwrap();
    loop {
        if b.pending {
            b.pending = false;
            b.running = true;
            drop(b);
            step("timer", "fires: the callback runs");
            timer_fn(d);
            b = d.base.lock().unwrap();
            b.running = false;
            step("timer", "callback done");
            d.base_wake.notify_all();
            continue;
        }
        if b.stop {
            return;
        }
        b = d.base_wake.wait(b).unwrap();
    }
}

/// `kthread_delayed_work_timer_fn()` (kthread.c 1223-1249): move the work from the delayed
/// list to the work list, or drop it from its list silently while `canceling`.
fn timer_fn(d: &Dwork) {
    let mut g = d.lock.lock().unwrap();
    assert!(g.bound, "WARN: the timer of an unbound work fired");
    assert_eq!(
        g.node,
        Node::DelayedList,
        "WARN: the timer fired for a work not on the delayed list"
    );
    g.node = Node::Off;
    if g.canceling == 0 {
        step("timer", "callback: moves the work to the work list");
        insert_work(d, &mut g);
    } else {
        step(
            "timer",
            "callback: canceling is raised: drops the work silently",
        );
    }
}

/// `__kthread_queue_delayed_work()` (kthread.c 1252-1279).
fn queue_delayed_locked(d: &Dwork, g: &mut Locked, delay: u32) {
    if delay == 0 {
        insert_work(d, g);
        return;
    }
    assert_eq!(g.node, Node::Off, "WARN: queueing a work that is on a list");
    g.node = Node::DelayedList;
    g.bound = true;
    add_timer(d);
}

/// `kthread_queue_delayed_work()` (kthread.c 1296-1313, with `queuing_blocked()` 1155-1161).
pub fn queue_delayed(d: &Dwork, delay: u32) -> bool {
    let mut g = d.lock.lock().unwrap();
    if g.node != Node::Off || g.canceling > 0 {
        return false;
    }
    queue_delayed_locked(d, &mut g, delay);
    true
}

/// `kthread_cancel_delayed_work_timer()` (kthread.c 1373-1391): with `canceling` raised and
/// the worker unlocked, `timer_delete_sync()`.
fn cancel_delayed_work_timer<'a>(
    d: &'a Dwork,
    mut g: MutexGuard<'a, Locked>,
    who: &str,
) -> MutexGuard<'a, Locked> {
    g.canceling += 1;
    step(who, "C: canceling++, unlocks, deletes the timer");
    drop(g);
    timer_delete_sync(d, who);
    let mut g = d.lock.lock().unwrap();
    g.canceling -= 1;
    g
}

/// `__kthread_cancel_work()` (kthread.c 1406-1418): off its list; whether it was on one.
fn cancel_work_locked(g: &mut Locked) -> bool {
    let was = g.node != Node::Off;
    g.node = Node::Off;
    was
}

/// `kthread_mod_delayed_work()` (kthread.c 1443-1487). Whether the work was pending.
pub fn mod_delayed(d: &Dwork, delay: u32, who: &str) -> bool {
    let mut g = d.lock.lock().unwrap();
    let ret;
    if !g.bound {
        ret = false;
    } else {
        g = cancel_delayed_work_timer(d, g, who);
        if g.canceling > 0 {
            return true;
        }
        ret = cancel_work_locked(&mut g);
    }
    queue_delayed_locked(d, &mut g, delay);
    ret
}

/// `kthread_cancel_delayed_work_sync()` = `__kthread_cancel_work_sync(work, true)` (kthread.c
/// 1490-1525, 1558-1561). Whether it removed the work from a list.
pub fn cancel_delayed_work_sync(d: &Dwork, who: &str) -> bool {
    let mut g = d.lock.lock().unwrap();
    if !g.bound {
        return false;
    }
    g = cancel_delayed_work_timer(d, g, who);
    let ret = cancel_work_locked(&mut g);
    if g.current {
        // kthread_flush_work() with `canceling` raised: until the run ends.
        g.canceling += 1;
        while g.current {
            step(who, "C: waits for the running work");
            g = d.wake.wait(g).unwrap();
        }
        g.canceling -= 1;
    }
    ret
}

/// The worker's thread: `kthread_worker_fn()` (kthread.c 985-1045): take the first work,
/// mark it current, run it unlocked (`run`: the item's run, which takes the entry's
/// reference), clear `current_work` with the next look at the list. Stops once told to with no
/// work left (C checks `kthread_should_stop()` before the list; the model's end, like our
/// teardown, flushes before it stops the thread, so the two agree).
pub fn worker_thread(d: &Dwork, run: impl Fn()) {
    let mut g = d.lock.lock().unwrap();
    loop {
        if g.current {
            g.current = false;
            d.wake.notify_all();
        }
        if g.node == Node::WorkList {
            g.node = Node::Off;
            g.current = true;
            drop(g);
            step("worker", "runs the work");
            run();
            g = d.lock.lock().unwrap();
            continue;
        }
        if g.stop {
            return;
        }
        g = d.wake.wait(g).unwrap();
    }
}

/// The item's run: touches the item, and gives up the reference of the entry it ran.
pub fn run_item(d: &Dwork) {
    assert!(
        !d.freed.load(SeqCst),
        "use after free: the worker ran a freed item"
    );
    // SAFETY: Only the worker's runs write the data; loom reports any access that races.
    d.data.with_mut(|v| unsafe { *v += 1 });
    d.runs.fetch_add(1, SeqCst);
    d.put("worker");
}

/// The error of the model's operations.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// `EBUSY`.
    Busy,
    /// `ESHUTDOWN`: the worker's gate is closed.
    Shutdown,
}

/// The model's [`DelayedC`]: the protocol's calls, on the C model above.
pub struct Host<'a> {
    /// The work.
    pub d: &'a Dwork,
    /// The delay in jiffies (0: queue at once).
    pub delay: u32,
    /// The calling thread, for the trace.
    pub who: &'static str,
}

// SAFETY: `get` makes a reference of the model's count; `enter` is the worker's gate, as
// `Inner::enter` (the protocol's `Gate`); the C calls return what the C model did.
unsafe impl DelayedC for Host<'_> {
    type Error = Error;

    fn busy() -> Error {
        Error::Busy
    }

    fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R, Error> {
        let r = self.d.gate.enter(f).map_err(|_| Error::Shutdown);
        if r.is_err() {
            step(self.who, "the gate is closed: ESHUTDOWN");
        }
        r
    }

    fn get(&self) {
        self.d.get(self.who);
    }

    unsafe fn put(&self) {
        self.d.put(self.who);
    }

    unsafe fn timer_delete_sync(&self) {
        timer_delete_sync(self.d, self.who);
    }

    unsafe fn queue_delayed(&self) -> bool {
        let r = queue_delayed(self.d, self.delay);
        step(
            self.who,
            format!("C kthread_queue_delayed_work(delay {}) -> {r}", self.delay),
        );
        if r {
            self.d.entries.fetch_add(1, SeqCst);
        }
        r
    }

    unsafe fn mod_delayed(&self) -> bool {
        let r = mod_delayed(self.d, self.delay, self.who);
        step(
            self.who,
            format!("C kthread_mod_delayed_work(delay {}) -> {r}", self.delay),
        );
        if !r {
            self.d.entries.fetch_add(1, SeqCst);
        }
        r
    }

    unsafe fn cancel_delayed_sync(&self) -> bool {
        let r = cancel_delayed_work_sync(self.d, self.who);
        step(
            self.who,
            format!("C kthread_cancel_delayed_work_sync -> {r}"),
        );
        r
    }
}
