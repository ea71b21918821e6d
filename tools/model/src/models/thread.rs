// SPDX-License-Identifier: GPL-2.0

//! A thread's control block (`thread/handoff.rs`, as `thread/header.rs` uses it) against the
//! thread's exit, its owner and the module-unload reaper:
//!
//! - (a) an orphaning against the thread's own decision how it leaves: the module reference
//!   taken for the orphan is given back exactly once, the memory is freed exactly once, and
//!   nothing touches it after;
//! - (b) an owner's park against the reaper: `kthread_park()` never runs on a thread that is
//!   being stopped or has exited;
//! - (c) an owner's stop against the thread's exit and the reaper: exactly one
//!   `kthread_stop()`, which returns only after the body's last access; the result is read
//!   once, after it was written, and freed once.
//!
//! The C side is `crate::c::thread`. The control block's memory is a `loom::cell::UnsafeCell`
//! that its free writes: an access that does not happen before the free is a race that loom
//! reports, and one after it fails its check.

use crate::c::completion::Completion;
use crate::c::thread::{Entry, KThread, Module};
use crate::handoff::{self, Flags, Leave, Stop, ORPHAN, SELF_OWNED, STARTED};
use crate::trace::step;
use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Mutex,
    },
    thread,
};

/// A thread's control block (`Shared<B>`: its `Header`, and its result slot), its C kthread,
/// and its module.
struct Block {
    flags: Flags,
    entry: Entry,
    returned: Completion,
    stopped: Completion,
    result: UnsafeCell<Option<u32>>,
    /// The block's memory: `true` once freed.
    freed: UnsafeCell<bool>,
    frees: AtomicUsize,
    kt: KThread,
    module: Module,
    /// The thread's CPU: an interrupt on the thread holds it for its whole run, the thread
    /// between its steps (model (a)).
    cpu: Mutex<()>,
}

impl Block {
    /// A thread just created and registered, with its handle's task reference.
    fn new() -> Self {
        Self {
            flags: Flags::new(0),
            entry: Entry::new(),
            returned: Completion::new(),
            stopped: Completion::new(),
            result: UnsafeCell::new(None),
            freed: UnsafeCell::new(false),
            frees: AtomicUsize::new(0),
            kt: KThread::new(1),
            module: Module::new(),
            cpu: Mutex::new(()),
        }
    }

    /// A new block that the model's threads share, never dropped: a failing execution unwinds
    /// its threads, and a loom `Arc` dropped then aborts the test instead of failing it.
    fn leak() -> &'static Self {
        Box::leak(Box::new(Self::new()))
    }

    /// An access to the block's memory.
    fn touch(&self, who: &str, what: &str) {
        self.freed
            .with(|f| assert!(!unsafe { *f }, "{who}: {what} after the block was freed"));
    }

    /// Free the block (the last `Arc` reference, or a detached block): its result with it.
    fn free(&self, who: &str) {
        step(who, "frees the block");
        assert_eq!(self.frees.fetch_add(1, SeqCst), 0, "the block freed twice");
        // SAFETY: Loom checks that no access races with the free.
        self.result.with_mut(|r| unsafe { *r = None });
        self.freed.with_mut(|f| unsafe { *f = true });
    }

    /// The end of every execution: all balanced.
    fn check_end(&self) {
        assert!(self.kt.exited(), "the thread never exited");
        assert!(
            self.kt.stops.load(SeqCst) <= 1,
            "more than one kthread_stop()"
        );
        assert_eq!(self.module.refs(), 0, "a module reference leaked");
        assert_eq!(self.frees.load(SeqCst), 1, "the block leaked");
        assert_eq!(self.kt.task_refs.load(SeqCst), 0, "a task reference leaked");
    }
}

/// `header.rs`'s stop of an owned thread by its handle (`StopPut`), over the model.
struct OwnerStop<'a> {
    b: &'a Block,
    who: &'a str,
}

// SAFETY: Every method acts on `b`'s thread, and its model entry lets one party claim it.
unsafe impl Stop for OwnerStop<'_> {
    fn claim(&mut self) -> bool {
        self.b.entry.claim(self.who)
    }
    unsafe fn kthread_stop(&mut self) {
        self.b.kt.kthread_stop_put(self.who);
    }
    fn unlink_and_complete(&mut self) {
        self.b.entry.unlink(self.who);
        self.b.touch(self.who, "complete `stopped`");
        self.b.stopped.complete_all();
    }
    fn wait_stopped(&mut self) {
        self.b.kt.put_task_struct(self.who);
        step(self.who, "waits for `stopped`");
        self.b.stopped.wait_for_completion();
    }
}

/// The reaper (`registry::reap`, `reap_prepare` and `reap_thread` of `header.rs`), once the
/// module is GOING: claim the thread if no one did, stop it, and free what an orphan owned.
fn reap(b: &Block) {
    let who = "reaper";
    if !b.entry.claim(who) {
        return;
    }
    // `reap_prepare`.
    b.kt.get_task_struct();
    b.touch(who, "wait_owner_calls");
    b.flags.wait_owner_calls();
    step(who, "wait_owner_calls: none in flight");
    b.kt.kthread_stop_put(who);
    b.entry.unlink(who);
    b.touch(who, "flags after the stop");
    let flags = b.flags.get();
    if flags & STARTED == 0 {
        step(who, "drop_body (never ran)");
    }
    b.returned.complete_all();
    if flags & (ORPHAN | SELF_OWNED) == 0 {
        step(who, "owned: completes `stopped`");
        b.stopped.complete_all();
        return;
    }
    if flags & ORPHAN != 0 {
        b.kt.put_task_struct(who);
    }
    b.free(who);
}

/// `header.rs`'s `leave` after the body, then the thread's exit, with an interrupt allowed
/// between its steps (the thread holds `cpu` within each).
fn leave_and_exit(b: &Block, who: &str) {
    let cpu = b.cpu.lock().unwrap();
    b.touch(who, "leave");
    let how = b.flags.leave(
        || b.module.try_module_get(who),
        || b.entry.claim_and_unlink(who),
    );
    step(who, format!("leave: {how:?}"));
    drop(cpu);
    let _cpu = b.cpu.lock().unwrap();
    match how {
        // Back into `kthread()`, kernel/kthread.c:436-438: `kthread_exit(ret)`.
        Leave::Return => b.kt.exit(who),
        Leave::Exit { release } => {
            if release {
                b.free(who);
                b.kt.put_task_struct(who);
            }
            // `__module_put_and_kthread_exit()`, kernel/module/main.c:229-233.
            b.module.module_put(who);
            b.kt.exit(who);
        }
    }
}

/// (a) The handle dropped from an interrupt on its thread, after the body, so orphaned
/// (`Header::orphan`), or, once the thread has exited, by its owner (`Handle::drop`: stop,
/// then free); against the thread's `leave` and a concurrent `rmmod` (whose reaper runs only if
/// no module reference is held); a last `rmmod` at the end must find no reference held.
///
/// Bounds: one thread (its body has returned), one handle drop, one concurrent unload; loom's
/// preemption bound 3. The interrupt runs between the thread's steps (before `leave`, and
/// between its decision and its exit), not inside `Flags::leave`'s loop.
#[test]
fn orphan_against_leave() {
    crate::check(|| {
        let b = Block::leak();
        let t = { thread::spawn(move || leave_and_exit(b, "thread")) };
        let irq = {
            thread::spawn(move || {
                let who = "irq";
                let cpu = b.cpu.lock().unwrap();
                if b.kt.exited() {
                    drop(cpu);
                    // No interrupt on an exited thread: the owner drops the handle.
                    let who = "owner";
                    step(who, "drops the handle: stop, then free");
                    handoff::stop(&mut OwnerStop { b, who });
                    b.free(who);
                    return;
                }
                step(who, "drops the handle on the thread: orphan");
                // `Header::orphan`.
                let modref = b.module.try_module_get(who);
                b.touch(who, "orphan: flags");
                if b.flags.orphan(modref) {
                    step(
                        who,
                        "orphan: the thread is leaving, gives the reference back",
                    );
                    b.module.module_put(who);
                } else if modref {
                    step(who, "orphan: hands the module reference to the thread");
                }
                b.touch(who, "orphan: wake");
            })
        };
        let rmmod = {
            thread::spawn(move || {
                if b.module.try_stop_module("rmmod") {
                    reap(b);
                    true
                } else {
                    false
                }
            })
        };
        t.join().unwrap();
        irq.join().unwrap();
        if !rmmod.join().unwrap() {
            assert!(
                b.module.try_stop_module("rmmod"),
                "rmmod at the end: a module reference is still held"
            );
            reap(b);
        }
        b.check_end();
    });
}

/// (b) An owner's `ParkableThread::park` (`begin_owner_call`, `kthread_park()`,
/// `end_owner_call`) against the reaper of a leaked handle, which claims the thread, waits for
/// the owner's call and stops it: `kthread_park()` never runs on a thread being stopped or
/// exited, and `begin_owner_call` refuses once the reaper claimed.
///
/// Bounds: one parkable thread, one park, one reaper; loom's preemption bound 3.
#[test]
fn park_against_reaper() {
    crate::check(|| {
        let b = Block::leak();
        // The handle is leaked: the reaper gives its memory back at the end (not modelled).
        b.flags.set(STARTED);
        let t = {
            thread::spawn(move || {
                let who = "thread";
                // The step loop of a parkable body: park when asked, until stopped.
                while !b.kt.sleep_until_stop_or_park() {
                    b.kt.parkme(who);
                }
                step(who, "should_stop: the body returns");
                leave_and_exit(b, who);
            })
        };
        let owner = {
            thread::spawn(move || {
                let who = "owner";
                step(who, "park: begin_owner_call");
                if b.flags.begin_owner_call(|| b.entry.is_unclaimed(who)) {
                    b.kt.kthread_park(who);
                    b.flags.end_owner_call();
                    step(who, "end_owner_call");
                } else {
                    step(who, "park: ESRCH (reaped)");
                }
            })
        };
        assert!(b.module.try_stop_module("rmmod"));
        reap(b);
        t.join().unwrap();
        owner.join().unwrap();
        assert_eq!(
            b.kt.stops.load(SeqCst),
            1,
            "the reaper did not stop the thread"
        );
        // The leaked handle's memory and task reference: leaked, as `mem::forget` means.
        b.free("end");
        b.kt.put_task_struct("end");
        b.check_end();
    });
}

/// (c) An owner's `Thread::stop` (`Handle::finish`: `stop_put_then`, the result taken, the
/// memory freed) against the thread's body and exit, and the reaper (a concurrent `rmmod`
/// claims the thread first, or not): exactly one `kthread_stop()`, the result is read once the
/// thread exited, and is its body's value if the body ran.
///
/// Bounds: one thread, one stop, one reaper; loom's preemption bound 3.
#[test]
fn stop_against_exit() {
    crate::check(|| {
        let b = Block::leak();
        let t = {
            thread::spawn(move || {
                let who = "thread";
                // `kthread()`, kernel/kthread.c:430-438: the body runs unless stopped first.
                if b.kt.should_stop() {
                    step(who, "stopped before it ran");
                    b.kt.exit(who);
                    return;
                }
                // `trampoline`.
                b.touch(who, "STARTED");
                b.flags.set(STARTED);
                step(who, "body: writes the result");
                // SAFETY: Loom checks the write against every read and the free.
                b.result.with_mut(|r| unsafe { *r = Some(42) });
                b.returned.complete_all();
                leave_and_exit(b, who);
            })
        };
        let owner = {
            thread::spawn(move || {
                let who = "owner";
                step(who, "stop");
                let r = handoff::stop_then_take(&mut OwnerStop { b, who }, || {
                    step(who, "takes the result");
                    // SAFETY: Loom checks the read against the thread's write.
                    b.result.with_mut(|r| unsafe { (*r).take() })
                });
                let ran = b.flags.get() & STARTED != 0;
                assert_eq!(
                    r.is_some(),
                    ran,
                    "the result read does not say if the body ran"
                );
                b.free(who);
            })
        };
        let rmmod = {
            thread::spawn(move || {
                assert!(b.module.try_stop_module("rmmod"));
                reap(b);
            })
        };
        t.join().unwrap();
        owner.join().unwrap();
        rmmod.join().unwrap();
        assert_eq!(b.kt.stops.load(SeqCst), 1, "not exactly one kthread_stop()");
        b.check_end();
    });
}
