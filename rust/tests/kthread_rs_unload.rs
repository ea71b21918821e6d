// SPDX-License-Identifier: GPL-2.0

//! Module unload while self-ending threads are still finishing (H7, `spawn_detached` and
//! `ThreadGroup`). Loaded and unloaded by `scripts/guest-check.sh`, which checks from outside
//! what `rmmod` does:
//!
//! - `mode=1`: `threads` detached threads sleep `hold_ms`, then count themselves. Each holds a
//!   module reference, so `rmmod` is refused until they have ended (`refcnt` shows them).
//! - `mode=2`: the same threads in a `ThreadGroup` kept in the module's data. They hold no
//!   module reference; `rmmod` drops the group, which waits for them, so `rmmod` succeeds and
//!   returns only after every thread counted itself.
//!
//! - `mode=3`: a thread drops its own handle (H20), then runs on for `hold_ms` without looking
//!   at `should_stop`: it holds a module reference meanwhile, so `rmmod` is refused until it
//!   has freed itself and left.
//! - `mode=4`: handles forgotten with `mem::forget` (H21): a running thread, a parked parkable
//!   thread, a thread never started, a worker with a delayed work armed for `hold_ms`, a
//!   per-CPU set and a thread group. `rmmod` succeeds; the module's unload stops them all (the
//!   delayed work never runs, the per-CPU hotplug state is gone).
//! - `mode=5`: the same leaks in an `init` that then fails: `insmod` fails, and the failed
//!   load ends them.
//! - `mode=6`: a worker dropped by its own work, with a delayed work armed for `hold_ms`
//!   (H20): its teardown thread holds a module reference, so an `rmmod` right after is refused
//!   or waits, and the delayed work never runs.
//! - `mode=7`: calls that may sleep, made under a spinlock with arguments that fail at once
//!   (H22): each reports "sleeping function called from invalid context" from its entry (one
//!   report per second at most, so they are a second apart). The guest script checks the
//!   reports, between markers that the splat check skips.
//! - `mode=8`: forgotten cycles through a worker (found by review): a worker whose handle is
//!   held by its own armed delayed work, and a thread that owns a worker whose delayed work
//!   holds the thread's handle. The unload must end them, not wait for itself.
//! - `mode=9`: a forgotten thread that holds threads created but not started, and starts and
//!   joins them when it is stopped (found by review): the unload may stop some of them before
//!   they ever ran, and a join of those must still end.
//!
//! At exit the module prints `kthread-rs unload: exit: N of M threads done`: a thread that
//! still ran after that would run freed module code, which KASAN reports.

use core::{
    ops::ControlFlow,
    sync::atomic::{AtomicU32, Ordering},
};
use kernel::{
    new_mutex, new_spinlock,
    prelude::*,
    sync::{Arc, Mutex},
    time::{delay::fsleep, Delta},
};

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;

use kthread_rs::{
    task_work,
    thread::{self, PerCpuThreads, ThreadGroup},
    worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
};

module! {
    type: Unload,
    name: "kthread_rs_unload",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: rmmod while detached and grouped threads finish",
    license: "GPL",
    params: {
        mode: u32 {
            default: 0,
            description: "0: nothing, 1: detached, 2: group, 3: self-drop, 4: forget, 5: forget in a failing init, 6: worker self-drop, 7: atomic-context probes, 8: worker cycles, 9: joins of reaped threads",
        },
        threads: u32 {
            default: 3,
            description: "threads to start (1..16)",
        },
        hold_ms: u32 {
            default: 1500,
            description: "how long each thread sleeps before it ends (ms, at most 10000)",
        },
    },
}

/// Threads that have finished their body.
static DONE: AtomicU32 = AtomicU32::new(0);

struct Unload {
    threads: u32,
    starter: Option<thread::Thread<u32>>,
    group: Option<ThreadGroup>,
}

fn body(i: u32, hold_ms: u32) -> impl FnOnce(&thread::Context<'_>) + Send + 'static {
    move |ctx| {
        ctx.sleep(Delta::from_millis(i64::from(hold_ms)));
        DONE.fetch_add(1, Ordering::SeqCst);
        pr_info!("kthread-rs unload: thread {i} done\n");
    }
}

impl kernel::Module for Unload {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let mode: u32 = kthread_rs::compat::param(module_parameters::mode.value());
        let threads: u32 = kthread_rs::compat::param(module_parameters::threads.value());
        let hold_ms: u32 = kthread_rs::compat::param(module_parameters::hold_ms.value());
        if !(1..=16).contains(&threads) || hold_ms > 10_000 || mode > 9 {
            return Err(EINVAL);
        }
        let mut this = Unload {
            threads: 0,
            starter: None,
            group: None,
        };
        match mode {
            // Detached threads need a live module (`EBUSY` while `init` runs): an owned
            // starter thread retries until `init` has returned, as a driver would.
            1 => {
                this.threads = threads;
                this.starter = Some(thread::spawn(module, fmt!("krs-unload-st"), move |ctx| {
                    let mut refused = 0u32;
                    for i in 0..threads {
                        while let Err(e) = thread::spawn_detached(
                            module,
                            fmt!("krs-unload-d/{i}"),
                            body(i, hold_ms),
                        ) {
                            if e != EBUSY || ctx.sleep(Delta::from_millis(1)) == thread::Wake::Stop
                            {
                                return refused;
                            }
                            refused += 1;
                        }
                    }
                    pr_info!("kthread-rs unload: {threads} detached threads started\n");
                    refused
                })?);
            }
            2 => {
                let group = ThreadGroup::new(module)?;
                for i in 0..threads {
                    group.spawn(fmt!("krs-unload-g/{i}"), body(i, hold_ms))?;
                    this.threads += 1;
                }
                this.group = Some(group);
            }
            3 => {
                self_drop(module, hold_ms)?;
                this.threads = 1;
            }
            4 => {
                leak_everything(module, hold_ms)?;
                this.threads = 1;
            }
            5 => {
                leak_everything(module, hold_ms)?;
                pr_info!("kthread-rs unload: init fails after leaking handles\n");
                return Err(ENODEV);
            }
            6 => {
                worker_self_drop(module, hold_ms)?;
            }
            7 => atomic_probes(module),
            8 => worker_cycles(module)?,
            9 => joins_of_reaped(module)?,
            _ => {}
        }
        pr_info!(
            "kthread-rs unload: mode {mode}, {} threads started\n",
            this.threads
        );
        Ok(this)
    }
}

impl Drop for Unload {
    fn drop(&mut self) {
        if let Some(Ok(thread::Exit::Returned(n))) = self.starter.take().map(|t| t.stop()) {
            pr_info!("kthread-rs unload: spawn_detached refused {n} times while init ran\n");
        }
        // Waits for the group's threads (mode 2).
        drop(self.group.take());
        pr_info!(
            "kthread-rs unload: exit: {} of {} threads done\n",
            DONE.load(Ordering::SeqCst),
            self.threads
        );
    }
}

/// Is `module` (this module) live (its `init` has returned)?
fn module_is_live(module: &'static ThisModule) -> bool {
    // SAFETY: `module` is this module (`init`'s), loaded while its code runs; `state` is a
    // plain enum that the module loader writes (read once).
    let state = unsafe { core::ptr::read_volatile(&raw const (*module.as_ptr()).state) };
    state == kernel::bindings::module_state_MODULE_STATE_LIVE
}

/// Mode 3: a thread drops its own handle, then runs on for `hold_ms` (not looking at
/// `should_stop`), then counts itself done.
fn self_drop(module: &'static ThisModule, hold_ms: u32) -> Result {
    let slot: Arc<Mutex<Option<thread::Thread<()>>>> = Arc::pin_init(new_mutex!(None), GFP_KERNEL)?;
    let sl = slot.clone();
    let t = thread::spawn(module, fmt!("krs-unload-self"), move |ctx| {
        // Once the module is live: orphaned while `init` runs, the thread could take no module
        // reference (a failing `init` frees the module whatever its count), and the unload
        // would wait for it instead of being refused.
        let me = loop {
            if module_is_live(module) {
                if let Some(me) = sl.lock().take() {
                    break me;
                }
            }
            ctx.sleep(Delta::from_millis(1));
        };
        drop(me);
        pr_info!("kthread-rs unload: a thread dropped its own handle\n");
        for _ in 0..hold_ms {
            fsleep(Delta::from_millis(1));
        }
        DONE.fetch_add(1, Ordering::SeqCst);
        pr_info!("kthread-rs unload: the self-dropped thread is done\n");
    })?;
    *slot.lock() = Some(t);
    Ok(())
}

/// Prints when the module's unload stops it: it must never run.
struct Armed;

impl DelayedWorkItem for Armed {
    fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        pr_err!("kthread-rs unload: a forgotten delayed work ran\n");
    }
}

fn percpu_step(_s: &mut u8, ctx: &thread::Context<'_>) -> ControlFlow<()> {
    ctx.sleep(Delta::from_millis(20));
    ControlFlow::Continue(())
}

/// Modes 4 and 5: start one of each kind of handle and forget it.
fn leak_everything(module: &'static ThisModule, hold_ms: u32) -> Result {
    let t = thread::spawn(module, fmt!("krs-unload-fgt"), |ctx| {
        while !ctx.should_stop() {
            ctx.sleep(Delta::from_millis(1));
        }
        pr_info!("kthread-rs unload: a forgotten thread was stopped\n");
    })?;
    core::mem::forget(t);
    let mut p = thread::spawn_parkable(module, fmt!("krs-unload-fgp"), 0u32, |n, ctx| {
        *n += 1;
        ctx.sleep(Delta::from_millis(1));
        ControlFlow::Continue(())
    })?;
    p.park()?;
    core::mem::forget(p);
    core::mem::forget(thread::create(module, fmt!("krs-unload-fgn"), |_ctx| {
        pr_err!("kthread-rs unload: a forgotten thread that was never started ran\n");
    })?);
    let w = Worker::create(module, fmt!("krs-unload-fgw"))?;
    let armed = crate::new_kthread_delayed_work!(Armed)?;
    w.queue_delayed(&armed, Delta::from_millis(i64::from(hold_ms)))?;
    core::mem::forget(w);
    core::mem::forget(PerCpuThreads::new(
        module,
        c"krs-unload-fgc",
        |_cpu| 0u8,
        percpu_step,
    )?);
    let g = ThreadGroup::new(module)?;
    g.spawn(fmt!("krs-unload-fgg"), |ctx| {
        while !ctx.should_stop() {
            ctx.sleep(Delta::from_millis(1));
        }
        pr_info!("kthread-rs unload: a forgotten group's thread was stopped\n");
    })?;
    core::mem::forget(g);
    pr_info!("kthread-rs unload: six handles forgotten\n");
    Ok(())
}

/// Takes its worker out of the module's slot and drops it.
struct DropsWorker(Arc<Mutex<Option<Worker>>>);

impl WorkItem for DropsWorker {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        let w = work.0.lock().take();
        let dropped = w.is_some();
        drop(w);
        if dropped {
            pr_info!("kthread-rs unload: a worker was dropped by its own work\n");
        }
    }
}

/// Mode 6: a worker with an armed delayed work, dropped by its own work.
fn worker_self_drop(module: &'static ThisModule, hold_ms: u32) -> Result {
    let slot: Arc<Mutex<Option<Worker>>> = Arc::pin_init(new_mutex!(None), GFP_KERNEL)?;
    let w = Worker::create(module, fmt!("krs-unload-wsd"))?;
    let armed = crate::new_kthread_delayed_work!(Armed)?;
    w.queue_delayed(&armed, Delta::from_millis(i64::from(hold_ms)))?;
    let item = Work::new(DropsWorker(slot.clone()))?;
    *slot.lock() = Some(w);
    if let Some(w) = &*slot.lock() {
        w.queue(item).map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Mode 7: calls that may sleep, under a spinlock, each failing at once after its entry.
fn atomic_probes(module: &'static ThisModule) {
    let Ok(lock) = KBox::pin_init(new_spinlock!(()), GFP_KERNEL) else {
        return;
    };
    // A kernel thread, which `task_work::add` refuses after its entry.
    let Ok(target) = Worker::create(module, fmt!("krs-atomic-w")) else {
        return;
    };
    pr_info!("kthread-rs: expected splats begin\n");
    {
        let _g = lock.lock();
        let r = thread::create_on_node(module, -5, fmt!("krs-atomic"), |_ctx| ());
        pr_info!("kthread-rs unload: probe 1: {:?}\n", r.err());
    }
    fsleep(Delta::from_millis(1100));
    {
        let _g = lock.lock();
        let r = Worker::create_on_node(module, -5, false, fmt!("krs-atomic"));
        pr_info!("kthread-rs unload: probe 2: {:?}\n", r.err());
    }
    fsleep(Delta::from_millis(1100));
    {
        let _g = lock.lock();
        let r = task_work::add(module, target.task(), task_work::Notify::Resume, || ());
        pr_info!(
            "kthread-rs unload: probe 3: {:?}\n",
            r.err().map(|(e, _)| e)
        );
    }
    pr_info!("kthread-rs: expected splats end\n");
}

/// Holds a worker: armed on that very worker, it makes a reference cycle.
#[pin_data]
struct HoldsWorker {
    #[pin]
    w: Mutex<Option<Worker>>,
}

impl DelayedWorkItem for HoldsWorker {
    fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        pr_err!("kthread-rs unload: a forgotten delayed work ran\n");
    }
}

/// Holds a thread's handle.
#[pin_data]
struct HoldsThread {
    #[pin]
    t: Mutex<Option<thread::Thread<()>>>,
}

impl DelayedWorkItem for HoldsThread {
    fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        pr_err!("kthread-rs unload: a forgotten delayed work ran\n");
    }
}

/// Mode 8: a worker held by its own armed delayed work, and a thread that owns a worker whose
/// armed delayed work holds the thread's handle; both left to the unload.
fn worker_cycles(module: &'static ThisModule) -> Result {
    let w = Worker::create(module, fmt!("krs-unload-wcy"))?;
    let d = crate::new_kthread_delayed_work!(pin_init!(HoldsWorker { w <- new_mutex!(None) }))?;
    w.queue_delayed(&d, Delta::from_secs(600))?;
    *d.w.lock() = Some(w);
    drop(d);
    let w2 = Worker::create(module, fmt!("krs-unload-wcy2"))?;
    let d2 = crate::new_kthread_delayed_work!(pin_init!(HoldsThread { t <- new_mutex!(None) }))?;
    w2.queue_delayed(&d2, Delta::from_secs(600))?;
    let t = thread::spawn(module, fmt!("krs-unload-wcyt"), move |ctx| {
        let _w2 = w2;
        while !ctx.should_stop() {
            ctx.sleep(Delta::from_millis(10));
        }
    })?;
    *d2.t.lock() = Some(t);
    drop(d2);
    pr_info!("kthread-rs unload: two worker cycles left to the unload\n");
    Ok(())
}

/// Mode 9: a forgotten thread that, when stopped, starts and joins 16 threads that it created
/// but never started; the unload may have stopped some of them first.
fn joins_of_reaped(module: &'static ThisModule) -> Result {
    let mut news = KVec::with_capacity(16, GFP_KERNEL)?;
    for i in 0..16u32 {
        news.push(
            thread::create(module, fmt!("krs-unload-n{i}"), move |_ctx| i)?,
            GFP_KERNEL,
        )?;
    }
    let joiner = thread::spawn(module, fmt!("krs-unload-joiner"), move |ctx| {
        while !ctx.should_stop() {
            ctx.sleep(Delta::from_millis(10));
        }
        let mut joined = 0u32;
        for n in news {
            if n.start().join().is_ok() {
                joined += 1;
            }
        }
        pr_info!("kthread-rs unload: the joiner joined {joined} threads\n");
    })?;
    core::mem::forget(joiner);
    pr_info!("kthread-rs unload: a joiner of 16 unstarted threads forgotten\n");
    Ok(())
}
