// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the holes that safe code could reach at 5a5a289 (issue 15): handles dropped
//! on their own thread (H20), wait cycles (H24), calls from atomic context (H22), and a work
//! item used through a worker it is not bound to.
//!
//! Each case says how it failed on 5a5a289. Unload itself (rmmod with a self-dropped or
//! forgotten handle, H20/H21) is tested from the guest script with `kthread_rs_unload`.

use kernel::prelude::*;

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

module! {
    type: SoundnessTest,
    name: "kthread_rs_soundness_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: KUnit tests of self-drops, wait cycles and contexts",
    license: "GPL",
}

struct SoundnessTest;

impl kernel::Module for SoundnessTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(SoundnessTest)
    }
}

/// Counts its drops: owned by a closure or a result, it tells whether that was freed.
struct DropCount(kernel::sync::Arc<core::sync::atomic::AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }
}

fn counter() -> Result<kernel::sync::Arc<core::sync::atomic::AtomicUsize>> {
    Ok(kernel::sync::Arc::new(
        core::sync::atomic::AtomicUsize::new(0),
        GFP_KERNEL,
    )?)
}

/// This module's reference count.
fn refcount() -> i32 {
    // SAFETY: `this_module()` is this module, loaded while its tests run.
    unsafe { kernel::bindings::module_refcount(kthread_rs::compat::this_module().as_ptr()) }
}

/// H20: a handle dropped on its own thread. At 5a5a289 each case printed "dropped its own
/// handle; it is left running" and leaked the task, the kthread and the shared block (the
/// drop counters below stayed at 0 and kmemleak reported them); a `Worker` dropped by its own
/// work left its thread running forever.
#[kunit_tests(kthread_rs_self_drop)]
mod self_drop {
    use super::kthread_rs::{
        service,
        thread::{self, Wake},
        worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
    };
    use super::{counter, refcount, DropCount};
    use crate::common::{eventually, ms};
    use crate::kthread_rs::compat::this_module;
    use core::{
        ops::ControlFlow,
        sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst},
    };
    use kernel::{
        new_mutex,
        prelude::*,
        sync::{Arc, Mutex},
        time::Delta,
    };

    type Slot<T> = Arc<Mutex<Option<T>>>;

    fn slot<T>() -> Result<Slot<T>> {
        Arc::pin_init(new_mutex!(None), GFP_KERNEL)
    }

    /// A thread takes its own handle out of shared state and drops it: its `should_stop`
    /// becomes true and its sleeps end, it holds a module reference while it finishes, and it
    /// frees its closure and its result itself; the reference comes back.
    #[test]
    fn thread_drops_own_handle() -> Result {
        let base = refcount();
        let (closure, result) = (counter()?, counter()?);
        let slot = slot::<thread::Thread<DropCount>>()?;
        let seen = Arc::new(AtomicI32::new(0), GFP_KERNEL)?;
        let (sl, c, r, s) = (slot.clone(), closure.clone(), result.clone(), seen.clone());
        let t = thread::spawn(this_module(), fmt!("krs-selfdrop"), move |ctx| {
            let _mine = DropCount(c);
            let me = loop {
                if let Some(me) = sl.lock().take() {
                    break me;
                }
                ctx.sleep(ms(1));
            };
            drop(me);
            let stop = ctx.should_stop() && ctx.sleep(Delta::from_secs(30)) == Wake::Stop;
            // 1: stop seen and a module reference held; 2: stop seen only.
            s.store(if stop && refcount() == base + 1 { 1 } else { 2 }, SeqCst);
            DropCount(r)
        })?;
        *slot.lock() = Some(t);
        assert!(eventually(|| result.load(SeqCst) == 1));
        assert_eq!(seen.load(SeqCst), 1);
        assert_eq!(closure.load(SeqCst), 1);
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// The same for a parkable thread: its step loop ends at the orphaning, and the thread
    /// does not idle waiting for a stop that no handle can send.
    #[test]
    fn parkable_drops_own_handle() -> Result {
        let base = refcount();
        let state = counter()?;
        let slot = slot::<thread::ParkableThread<DropCount>>()?;
        let sl = slot.clone();
        let t = thread::spawn_parkable(
            this_module(),
            fmt!("krs-pselfdrop"),
            DropCount(state.clone()),
            move |_s, ctx| {
                let me = sl.lock().take();
                drop(me);
                ctx.sleep(ms(1));
                ControlFlow::Continue(())
            },
        )?;
        *slot.lock() = Some(t);
        assert!(eventually(|| state.load(SeqCst) == 1));
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// A service whose step drops its own handle: the service loop ends, its last value and
    /// state are freed by the thread.
    #[test]
    fn service_drops_own_handle() -> Result {
        let base = refcount();
        let state = counter()?;
        let slot = slot::<service::Service<u32>>()?;
        let sl = slot.clone();
        let mut first = Some(DropCount(state.clone()));
        let svc = service::spawn_service(this_module(), fmt!("krs-svcself"), 0u32, move |n| {
            let _state = first.take();
            drop(sl.lock().take());
            *n += 1;
            *n
        })?;
        svc.wake();
        *slot.lock() = Some(svc);
        // The wake above may have run before the handle was in the slot: wake until it is
        // gone (the step takes it).
        assert!(eventually(|| {
            if let Some(s) = &*slot.lock() {
                s.wake();
            }
            slot.lock().is_none()
        }));
        assert!(eventually(|| state.load(SeqCst) == 1));
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// A delayed work that only counts its drops; armed far in the future, it must be
    /// cancelled by the teardown.
    struct Armed {
        _drop: DropCount,
    }

    impl DelayedWorkItem for Armed {
        fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {}
    }

    /// Takes its worker out of `slot` and drops it, on the worker's own thread.
    struct DropsWorker {
        slot: Slot<Worker>,
        done: Arc<AtomicBool>,
    }

    impl WorkItem for DropsWorker {
        fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
            let w = work.slot.lock().take();
            drop(w);
            work.done.store(true, SeqCst);
        }
    }

    /// A worker dropped by one of its own works is torn down by a thread of its own: new work
    /// is refused at once, its armed delayed work is cancelled (the queue's reference comes
    /// back), its thread exits, and the module reference of the teardown thread comes back.
    #[test]
    fn worker_dropped_by_own_work() -> Result {
        let base = refcount();
        let w = Worker::create(this_module(), fmt!("krs-wselfdrop"))?;
        let task: kernel::sync::aref::ARef<kernel::task::Task> = w.task().into();
        let drops = counter()?;
        let armed = crate::new_kthread_delayed_work!(Armed {
            _drop: DropCount(drops.clone())
        })?;
        w.queue_delayed(&armed, Delta::from_secs(60))?;
        let slot = slot::<Worker>()?;
        let done = Arc::new(AtomicBool::new(false), GFP_KERNEL)?;
        let item = Work::new(DropsWorker {
            slot: slot.clone(),
            done: done.clone(),
        })?;
        w.queue(item).map_err(|(e, _)| e)?;
        *slot.lock() = Some(w);
        // The work may have run before the worker was in the slot: then nothing was dropped.
        // Queue it again through a fresh item until it has taken the worker.
        assert!(eventually(|| done.load(SeqCst)));
        if let Some(w) = slot.lock().take() {
            drop(w);
        }
        // Cancelled: the test's reference is the last one.
        assert!(eventually(|| {
            // SAFETY: `task` is counted; `exit_state` is set once the thread has exited.
            unsafe { (*task.as_ptr()).exit_state != 0 }
        }));
        // The teardown gives up the cancelled work's reference once it is over.
        drop(armed);
        assert!(eventually(|| drops.load(SeqCst) == 1));
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// A follow-up work that only counts its drops: it must never run.
    struct Follow {
        _drop: DropCount,
    }

    impl WorkItem for Follow {
        fn run(_work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {}
    }

    /// Drops its worker's last handle, then its own last reference, then queues through its
    /// `WorkerRef`.
    struct DropsAllThenQueues {
        slot: Slot<Worker>,
        follow: Arc<Work<Follow>>,
        later: Arc<DelayedWork<Armed>>,
        result: Arc<AtomicI32>,
        _drop: DropCount,
    }

    impl WorkItem for DropsAllThenQueues {
        fn run(work: Arc<Work<Self>>, worker: &WorkerRef<'_>) {
            let eshutdown = -(kernel::bindings::ESHUTDOWN as i32);
            let w = work.slot.lock().take();
            let mut r = i32::from(w.is_some());
            // The item's fields hold the only other references to these two (the test keeps
            // none): once the item is gone, these clones are the last.
            let (follow, later, result) =
                (work.follow.clone(), work.later.clone(), work.result.clone());
            // The last handle: its teardown goes to a thread of its own (H20), whose clone is
            // now the only reference to the worker that no item holds.
            drop(w);
            // The item's last reference: it is freed here, and unbinds (gives up its
            // reference to the worker). The `WorkerRef` must stay valid.
            drop(work);
            // Let the teardown thread get to waiting for this run.
            kernel::time::delay::fsleep(ms(20));
            // Unbound: `Inner::bind` clones the borrowed `Arc<Inner>`; the queue is refused
            // (closing), and dropping the returned last reference unbinds again.
            match worker.queue(follow) {
                Err((e, follow)) => {
                    if e.to_errno() == eshutdown {
                        r |= 2;
                    }
                    drop(follow);
                }
                Ok(()) => r |= 8,
            }
            // The same through the delayed path (bind, then `hand_over` refused).
            if let Err(e) = worker.queue_delayed(&later, Delta::from_secs(60)) {
                if e.to_errno() == eshutdown {
                    r |= 4;
                }
            }
            drop(later);
            result.store(r, SeqCst);
        }
    }

    /// A work that drops its worker's last handle and its own last reference, then queues
    /// plain and delayed work through its `WorkerRef`: both are refused with `ESHUTDOWN`, the
    /// worker stays valid for the rest of the run (its teardown thread's reference), every
    /// item is freed once, the worker's thread exits and the module reference comes back.
    #[test]
    fn worker_and_item_dropped_then_queue_through_ref() -> Result {
        let base = refcount();
        let w = Worker::create(this_module(), fmt!("krs-wdropall"))?;
        let task: kernel::sync::aref::ARef<kernel::task::Task> = w.task().into();
        let (item_drops, follow_drops, later_drops) = (counter()?, counter()?, counter()?);
        let result = Arc::new(AtomicI32::new(0), GFP_KERNEL)?;
        let slot = slot::<Worker>()?;
        let item = Work::new(DropsAllThenQueues {
            slot: slot.clone(),
            follow: Work::new(Follow {
                _drop: DropCount(follow_drops.clone()),
            })?,
            later: crate::new_kthread_delayed_work!(Armed {
                _drop: DropCount(later_drops.clone())
            })?,
            result: result.clone(),
            _drop: DropCount(item_drops.clone()),
        })?;
        {
            // The worker is in the slot before the item can take it: the run waits for this
            // lock, held until the queue has returned. The queue takes the item's only
            // reference.
            let mut s = slot.lock();
            let w = s.insert(w);
            w.queue(item).map_err(|(e, _)| e)?;
        }
        assert!(eventually(|| result.load(SeqCst) != 0));
        // 1: the worker was taken; 2: queue refused; 4: queue_delayed refused; never 8.
        assert_eq!(result.load(SeqCst), 7);
        assert!(slot.lock().is_none());
        // Each freed once, on the worker's thread, inside the run.
        assert_eq!(item_drops.load(SeqCst), 1);
        assert_eq!(follow_drops.load(SeqCst), 1);
        assert_eq!(later_drops.load(SeqCst), 1);
        assert!(eventually(|| {
            // SAFETY: `task` is counted; `exit_state` is set once the thread has exited.
            unsafe { (*task.as_ptr()).exit_state != 0 }
        }));
        // The teardown thread's module reference comes back (it ran, and freed the worker).
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// A per-CPU set's state: a way to its own set, and a drop counter.
    struct SetState {
        slot: Slot<thread::PerCpuThreads<SetState>>,
        _drop: DropCount,
    }

    /// The step of the set: on CPU 0, take the set out of its slot and drop it.
    fn drop_own_set(s: &mut SetState, ctx: &thread::Context<'_>) -> ControlFlow<()> {
        if kernel::cpu::CpuId::current().as_u32() == 0 {
            let set = s.slot.lock().take();
            drop(set);
        }
        ctx.sleep(ms(1));
        ControlFlow::Continue(())
    }

    /// A per-CPU set dropped from its own step (on the thread of CPU 0), where removing the
    /// hotplug state would wait for the step: a thread of its own tears it down, stopping
    /// every thread of the set, the dropping one included, and every state is freed.
    #[test]
    fn percpu_set_dropped_by_own_step() -> Result {
        let base = refcount();
        let (made, drops) = (counter()?, counter()?);
        let slot = slot::<thread::PerCpuThreads<SetState>>()?;
        let (sl, m, d) = (slot.clone(), made.clone(), drops.clone());
        let set = thread::PerCpuThreads::new(
            this_module(),
            c"krs-pcself",
            move |_cpu| {
                m.fetch_add(1, SeqCst);
                SetState {
                    slot: sl.clone(),
                    _drop: DropCount(d.clone()),
                }
            },
            drop_own_set,
        )?;
        *slot.lock() = Some(set);
        assert!(eventually(|| slot.lock().is_none()));
        assert!(eventually(|| drops.load(SeqCst) == made.load(SeqCst)));
        assert!(made.load(SeqCst) >= 1);
        assert!(eventually(|| refcount() == base));
        Ok(())
    }
}

/// H24: wait cycles. At 5a5a289 the two threads of each case waited for each other forever
/// (hung-task reports after 120 s), and `PerCpuThreads::new` in a set's `init` hung CPU hotplug
/// (`cpuhp/0` blocked on the hotplug lock held by the task that added the instance).
#[kunit_tests(kthread_rs_cycles)]
mod cycles {
    use super::kthread_rs::thread::{self, Exit, PerCpuThreads};
    use super::{counter, refcount, DropCount};
    use crate::common::{eventually, ms};
    use crate::kthread_rs::compat::this_module;
    use core::{
        ops::ControlFlow,
        sync::atomic::{AtomicI32, AtomicUsize, Ordering::SeqCst},
    };
    use kernel::{
        bindings, new_mutex,
        prelude::*,
        sync::{Arc, Mutex},
    };

    type Slot = Arc<Mutex<Option<thread::Thread<DropCount>>>>;

    /// What a thread did with the other's handle: 1 stopped it (or joined it), 2 `EDEADLK`,
    /// 3 another error.
    fn outcome(r: Result<Exit<DropCount>>) -> i32 {
        match r {
            Ok(_) => 1,
            Err(e) if e.to_errno() == -(bindings::EDEADLK as i32) => 2,
            Err(_) => 3,
        }
    }

    /// What [`pair`] saw: the two outcomes (sorted), whether both threads freed their result,
    /// and whether the module's reference count came back.
    struct Seen {
        outcomes: [i32; 2],
        freed: bool,
        refcount_back: bool,
    }

    /// Two threads, each with the other's handle, `how` each other at about the same time:
    /// the second to wait gets `EDEADLK` (and ends its body) and the first is orphaned (it
    /// owns itself, stops at its next `should_stop` and frees itself); both end, and
    /// everything is freed. Returns what it saw (KUnit asserts only in the test functions).
    fn pair(how: fn(thread::Thread<DropCount>) -> i32) -> Result<Seen> {
        let base = refcount();
        let (freed, go) = (counter()?, counter()?);
        let slots: [Slot; 2] = [
            Arc::pin_init(new_mutex!(None), GFP_KERNEL)?,
            Arc::pin_init(new_mutex!(None), GFP_KERNEL)?,
        ];
        let outcomes = Arc::new([AtomicI32::new(0), AtomicI32::new(0)], GFP_KERNEL)?;
        for i in 0..2 {
            let (other, f, g, o) = (
                slots[1 - i].clone(),
                freed.clone(),
                go.clone(),
                outcomes.clone(),
            );
            let t = thread::spawn(this_module(), fmt!("krs-cycle/{i}"), move |ctx| {
                // Both bodies run before either takes the other's handle: a thread stopped
                // before its body ran never runs it (H2), and then never reports an outcome.
                g.fetch_add(1, SeqCst);
                let handle = loop {
                    if g.load(SeqCst) == 2 {
                        if let Some(h) = other.lock().take() {
                            break h;
                        }
                    }
                    ctx.sleep(ms(1));
                };
                let outcome = how(handle);
                o[i].store(outcome, SeqCst);
                // Refused (`EDEADLK`): end now, so that a joiner waiting for this body goes on.
                // Otherwise wait to be told to stop (an orphan is told at once).
                while outcome != 2 && !ctx.should_stop() {
                    ctx.sleep(ms(1));
                }
                DropCount(f)
            })?;
            *slots[i].lock() = Some(t);
        }
        let _ = eventually(|| outcomes[0].load(SeqCst) != 0 && outcomes[1].load(SeqCst) != 0);
        let mut seen = [outcomes[0].load(SeqCst), outcomes[1].load(SeqCst)];
        seen.sort_unstable();
        Ok(Seen {
            outcomes: seen,
            freed: eventually(|| freed.load(SeqCst) == 2),
            refcount_back: eventually(|| refcount() == base),
        })
    }

    /// `stop()` on each other.
    #[test]
    fn two_threads_stop_each_other() -> Result {
        let seen = pair(|t| outcome(t.stop()))?;
        assert_eq!(seen.outcomes, [1, 2]);
        assert!(seen.freed);
        assert!(seen.refcount_back);
        Ok(())
    }

    /// `join()` on one side, `stop()` on the other.
    #[test]
    fn join_and_stop_each_other() -> Result {
        let seen = pair(|t| {
            // SAFETY: Reading the comm of `current`, which only changes on exec.
            let name = unsafe { (*kernel::task::Task::current_raw()).comm };
            if name.contains(&b'0') {
                outcome(t.join())
            } else {
                outcome(t.stop())
            }
        })?;
        assert_eq!(seen.outcomes, [1, 2]);
        assert!(seen.freed);
        assert!(seen.refcount_back);
        Ok(())
    }

    /// A plain drop on each side: the second drop orphans the other thread (with a warning)
    /// instead of waiting for it.
    #[test]
    fn two_threads_drop_each_other() -> Result {
        let base = refcount();
        let (freed, go, dropped) = (counter()?, counter()?, counter()?);
        let slots: [Slot; 2] = [
            Arc::pin_init(new_mutex!(None), GFP_KERNEL)?,
            Arc::pin_init(new_mutex!(None), GFP_KERNEL)?,
        ];
        for i in 0..2 {
            let (other, f, g, d) = (
                slots[1 - i].clone(),
                freed.clone(),
                go.clone(),
                dropped.clone(),
            );
            let t = thread::spawn(this_module(), fmt!("krs-dcycle/{i}"), move |ctx| {
                // Both bodies run before either takes the other's handle (as in `pair`).
                g.fetch_add(1, SeqCst);
                let handle = loop {
                    if g.load(SeqCst) == 2 {
                        if let Some(h) = other.lock().take() {
                            break h;
                        }
                    }
                    ctx.sleep(ms(1));
                };
                drop(handle);
                d.fetch_add(1, SeqCst);
                while !ctx.should_stop() {
                    ctx.sleep(ms(1));
                }
                DropCount(f)
            })?;
            *slots[i].lock() = Some(t);
        }
        assert!(eventually(|| dropped.load(SeqCst) == 2));
        assert!(eventually(|| freed.load(SeqCst) == 2));
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// The errno of a `PerCpuThreads::new` tried in another set's `init` or step (0: none).
    static IN_INIT: AtomicI32 = AtomicI32::new(0);
    static IN_STEP: AtomicI32 = AtomicI32::new(0);
    static STEPS: AtomicUsize = AtomicUsize::new(0);

    fn try_nested_set() -> i32 {
        match PerCpuThreads::new(
            this_module(),
            c"krs-nested",
            |_cpu| 0u8,
            |_s, ctx| {
                ctx.sleep(ms(10));
                ControlFlow::Continue(())
            },
        ) {
            Ok(set) => {
                drop(set);
                1
            }
            Err(e) => e.to_errno(),
        }
    }

    fn step_tries_nested(s: &mut u8, ctx: &thread::Context<'_>) -> ControlFlow<()> {
        if *s == 0 {
            *s = 1;
            IN_STEP.store(try_nested_set(), SeqCst);
            STEPS.fetch_add(1, SeqCst);
        }
        ctx.sleep(ms(1));
        ControlFlow::Continue(())
    }

    /// `PerCpuThreads::new` inside a set's `init` (a CPU hotplug callback: the hotplug lock is
    /// held) or inside its step (migration disabled: hotplug waits for the step) is `EDEADLK`
    /// instead of a hang.
    #[test]
    fn percpu_new_in_callback_or_step_is_edeadlk() -> Result {
        IN_INIT.store(0, SeqCst);
        IN_STEP.store(0, SeqCst);
        STEPS.store(0, SeqCst);
        let set = PerCpuThreads::new(
            this_module(),
            c"krs-outer",
            |_cpu| {
                IN_INIT.store(try_nested_set(), SeqCst);
                0u8
            },
            step_tries_nested,
        )?;
        assert!(eventually(|| STEPS.load(SeqCst) >= 1));
        drop(set);
        let edeadlk = -(bindings::EDEADLK as i32);
        assert_eq!(IN_INIT.load(SeqCst), edeadlk);
        assert_eq!(IN_STEP.load(SeqCst), edeadlk);
        Ok(())
    }
}

/// H22: calls from contexts where they must not sleep, and conditions that sleep.
#[kunit_tests(kthread_rs_contexts)]
mod contexts {
    use super::counter;
    use super::kthread_rs::{
        thread::{self, PerCpuThreads, Wake},
        worker::{DelayedWork, DelayedWorkItem, Worker, WorkerRef},
    };
    use crate::common::{eventually, ms};
    use crate::kthread_rs::compat::this_module;
    use core::{
        ops::ControlFlow,
        sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    };
    use kernel::{
        cpu::CpuId,
        new_mutex, new_spinlock,
        prelude::*,
        sync::{Arc, Mutex, SpinLock},
        time::{delay::fsleep, Delta, Instant, Monotonic},
    };

    /// `wait_until`'s condition runs with the task running: it may take a sleeping lock, and
    /// a wake-up that comes while it sleeps is not lost. At 5a5a289 it ran with the task state
    /// set (`prepare_to_wait()`): the mutex gave the WARN "do not call blocking ops when
    /// !TASK_RUNNING".
    #[test]
    fn wait_until_condition_may_sleep() -> Result {
        let ready: Arc<Mutex<bool>> = Arc::pin_init(new_mutex!(false), GFP_KERNEL)?;
        let entered = Arc::new(AtomicBool::new(false), GFP_KERNEL)?;
        let (r, e) = (ready.clone(), entered.clone());
        let t = thread::spawn(this_module(), fmt!("krs-sleepcond"), move |ctx| {
            let start = Instant::<Monotonic>::now();
            let why = ctx.wait_until(
                || {
                    let first = !e.swap(true, SeqCst);
                    if first {
                        // Sleep in the condition; the test sets `ready` and wakes us meanwhile.
                        fsleep(ms(200));
                    }
                    *r.lock()
                },
                Some(Delta::from_secs(60)),
            );
            (why, start.elapsed().as_millis())
        })?;
        assert!(eventually(|| entered.load(SeqCst)));
        // While the condition sleeps, and after it has read `ready`: the wake must not be lost.
        fsleep(ms(300));
        *ready.lock() = true;
        t.wake_up();
        let (why, elapsed) = t.stop()?.returned().ok_or(EINVAL)?;
        assert_eq!(why, Wake::Condition);
        // A lost wake would have slept until the 60 s timeout.
        assert!(elapsed < 30_000);
        Ok(())
    }

    fn idle_step(_s: &mut u8, ctx: &thread::Context<'_>) -> ControlFlow<()> {
        ctx.sleep(ms(10));
        ControlFlow::Continue(())
    }

    /// `PerCpuThreads::wake_up` and `is_parked` take no sleeping lock: they may be called under
    /// a spinlock. At 5a5a289 they locked the set's mutex: "BUG: sleeping function called from
    /// invalid context".
    #[test]
    fn percpu_wake_and_is_parked_under_spinlock() -> Result {
        let set = PerCpuThreads::new(this_module(), c"krs-pcatomic", |_cpu| 0u8, idle_step)?;
        let lock: Pin<KBox<SpinLock<u32>>> = KBox::pin_init(new_spinlock!(0), GFP_KERNEL)?;
        let cpu = CpuId::from_u32(0).ok_or(EINVAL)?;
        assert!(eventually(|| set.is_parked(cpu).is_some()));
        {
            let mut g = lock.lock();
            set.wake_up(cpu);
            *g = u32::from(set.is_parked(cpu) == Some(false));
        }
        assert_eq!(*lock.lock(), 1);
        Ok(())
    }

    /// Records whether its item was freed on the worker's thread.
    struct WhereDropped {
        worker: *const kernel::bindings::task_struct,
        on_worker: Arc<AtomicUsize>,
    }

    // SAFETY: `worker` is only compared, never dereferenced.
    unsafe impl Send for WhereDropped {}
    // SAFETY: As above.
    unsafe impl Sync for WhereDropped {}

    impl Drop for WhereDropped {
        fn drop(&mut self) {
            let here = kernel::task::Task::current_raw().cast_const();
            self.on_worker
                .fetch_add(usize::from(core::ptr::eq(here, self.worker)) + 10, SeqCst);
        }
    }

    impl DelayedWorkItem for WhereDropped {
        fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {}
    }

    /// `queue_delayed` leaves the caller its reference: the item is freed where the caller
    /// drops it, never inside the queueing call or by the worker (at 5a5a289 the call kept a
    /// clone of its own, dropped at its end: if the work had run meanwhile, the item was freed
    /// in the caller's context, an interrupt maybe).
    #[test]
    fn queue_delayed_leaves_the_last_reference_to_the_caller() -> Result {
        let w = Worker::create(this_module(), fmt!("krs-qdref"))?;
        let seen = counter()?;
        let item = crate::new_kthread_delayed_work!(WhereDropped {
            worker: w.task().as_ptr().cast_const(),
            on_worker: seen.clone(),
        })?;
        for _ in 0..100 {
            w.queue_delayed(&item, Delta::ZERO)?;
            w.flush_all()?;
        }
        assert_eq!(seen.load(SeqCst), 0);
        drop(item);
        // Dropped here, by the test's thread: 10, not 11.
        assert_eq!(seen.load(SeqCst), 10);
        Ok(())
    }
}
