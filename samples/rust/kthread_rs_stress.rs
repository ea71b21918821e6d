// SPDX-License-Identifier: GPL-2.0

//! kthread-rs stress: hammer threads, kthread_workers and task_work through the safe APIs, in
//! the style of the kernel's torture tests (kernel/torture.c, locktorture, rcutorture's
//! read_exit churn): module parameters, a statistics line every `stat_interval` seconds, CPU
//! hotplug, injected allocation failures, and a final accounting with a verdict:
//! `kthread-rs stress: PASS`, or `kthread-rs stress: FAIL: <reasons>`.
//!
//! Every operation is accounted for: each queued work ran once or was cancelled, each thread's
//! result came back or it was counted as never run, each task_work callback ran or was taken
//! back, each injected failure was seen as an error, and the live-object counters are zero at
//! the end. `rmmod` in the middle of a run stops everything and prints the same accounting.
//!
//! Task work needs user tasks: the companion `samples/user/kthread_rs_stress_user.c` runs a
//! process whose threads sleep, spin and yield; `tw_pid` names it. Only tasks whose thread
//! group is `tw_pid` are targeted.
//!
//! Each pending callback holds a module reference (H17), and `rmmod` is refused while one is
//! pending. The task work comes in bursts with quiet gaps of 20 ms, so that `rmmod` (retried)
//! finds a moment with none pending; a driver that queues task work should likewise stop
//! queueing before it expects to be unloaded.

use core::{
    ops::ControlFlow,
    sync::atomic::{
        AtomicBool, AtomicI64, AtomicU32, AtomicU64,
        Ordering::{Acquire, Relaxed, Release},
    },
};
use kernel::{
    bindings,
    cpu::{nr_cpu_ids, CpuId},
    cpumask::CpumaskVar,
    fmt,
    prelude::*,
    sync::{aref::ARef, Arc},
    task::Task,
    time::{delay::fsleep, ClockSource, Delta, Instant, Monotonic},
};

#[path = "../../rust/kthread_rs/mod.rs"]
pub mod kthread_rs;

use kthread_rs::{
    sys,
    task_work::{self, Callback, Notify},
    thread::{self, Exit, Origin, PerCpuThreads, Thread, ThreadGroup, Wake},
    worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
};

module! {
    type: Stress,
    name: "kthread_rs_stress",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: stress test of threads, kthread_workers and task_work",
    license: "GPL",
    params: {
        duration: u32 {
            default: 60,
            description: "seconds to run (0: until rmmod; at most 86400)",
        },
        stat_interval: u32 {
            default: 10,
            description: "seconds between statistics lines (1..3600)",
        },
        seed: u64 {
            default: 1,
            description: "random seed",
        },
        nthreads: u32 {
            default: 2,
            description: "thread churn threads (1..32)",
        },
        nworkers: u32 {
            default: 2,
            description: "kthread_workers (1..16)",
        },
        nproducers: u32 {
            default: 2,
            description: "threads that queue, modify, flush and cancel work (1..16)",
        },
        tw_pid: i32 {
            default: 0,
            description: "companion process whose threads get task work (0: no task work)",
        },
        tw_threads: u32 {
            default: 1,
            description: "task ids tw_pid .. tw_pid+tw_threads-1 are tried (1..256)",
        },
        onoff_interval: u32 {
            default: 0,
            description: "milliseconds between CPU offline/online cycles (0: none; else >= 100)",
        },
        onoff_holdoff: u32 {
            default: 0,
            description: "seconds before the first CPU offline (at most 3600)",
        },
        fail_every: u32 {
            default: 16,
            description: "inject an allocation failure into every Nth thread creation (0: none)",
        },
    },
}

/// The validated parameters, and the module (`init`'s `module`) that every thread, worker and
/// task work callback of the run belongs to.
#[derive(Clone, Copy)]
struct Params {
    module: &'static ThisModule,
    duration: u32,
    stat_interval: u32,
    seed: u64,
    nthreads: u32,
    nworkers: u32,
    nproducers: u32,
    tw_pid: i32,
    tw_threads: u32,
    onoff_interval: u32,
    onoff_holdoff: u32,
    fail_every: u32,
}

impl Params {
    fn read(module: &'static ThisModule) -> Result<Self> {
        let p = Params {
            module,
            duration: kthread_rs::compat::param(module_parameters::duration.value()),
            stat_interval: kthread_rs::compat::param(module_parameters::stat_interval.value()),
            seed: kthread_rs::compat::param(module_parameters::seed.value()),
            nthreads: kthread_rs::compat::param(module_parameters::nthreads.value()),
            nworkers: kthread_rs::compat::param(module_parameters::nworkers.value()),
            nproducers: kthread_rs::compat::param(module_parameters::nproducers.value()),
            tw_pid: kthread_rs::compat::param(module_parameters::tw_pid.value()),
            tw_threads: kthread_rs::compat::param(module_parameters::tw_threads.value()),
            onoff_interval: kthread_rs::compat::param(module_parameters::onoff_interval.value()),
            onoff_holdoff: kthread_rs::compat::param(module_parameters::onoff_holdoff.value()),
            fail_every: kthread_rs::compat::param(module_parameters::fail_every.value()),
        };
        let checks: [(&str, bool); 9] = [
            ("duration must be at most 86400", p.duration <= 86400),
            (
                "stat_interval must be 1..3600",
                (1..=3600).contains(&p.stat_interval),
            ),
            ("nthreads must be 1..32", (1..=32).contains(&p.nthreads)),
            ("nworkers must be 1..16", (1..=16).contains(&p.nworkers)),
            ("nproducers must be 1..16", (1..=16).contains(&p.nproducers)),
            ("tw_pid must be >= 0", p.tw_pid >= 0),
            (
                "tw_threads must be 1..256",
                (1..=256).contains(&p.tw_threads),
            ),
            (
                "onoff_interval must be 0 or >= 100",
                p.onoff_interval == 0 || p.onoff_interval >= 100,
            ),
            (
                "onoff_holdoff must be at most 3600",
                p.onoff_holdoff <= 3600,
            ),
        ];
        for (what, ok) in checks {
            if !ok {
                pr_err!("kthread-rs stress: bad parameter: {}\n", what);
                return Err(EINVAL);
            }
        }
        Ok(p)
    }
}

/// xorshift64*: a small, seeded generator for each thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A latency histogram: four buckets per power of two of nanoseconds.
struct Hist([AtomicU64; 256]);

impl Hist {
    const fn new() -> Self {
        Hist([const { AtomicU64::new(0) }; 256])
    }

    fn record(&self, d: Delta) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(0).max(1);
        let log = 63 - ns.leading_zeros();
        let sub = if log >= 2 { (ns >> (log - 2)) & 3 } else { 0 };
        self.0[(log * 4 + sub as u32) as usize].fetch_add(1, Relaxed);
    }

    /// The lower bound of the bucket that holds quantile `q` (in percent), in microseconds.
    fn quantile_us(&self, q: u64) -> u64 {
        let counts: [u64; 256] = core::array::from_fn(|i| self.0[i].load(Relaxed));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = (total * q).div_ceil(100);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let log = (i / 4) as u32;
                let sub = (i % 4) as u64;
                let ns = if log >= 2 {
                    (4 + sub) << (log - 2)
                } else {
                    1u64 << log
                };
                return ns / 1000;
            }
        }
        0
    }
}

/// Every counter of the run.
struct Stats {
    // Threads.
    spawned: AtomicU64,
    returned: AtomicU64,
    never_ran: AtomicU64,
    unstarted: AtomicU64,
    injected: AtomicU64,
    create_failed: AtomicU64,
    scoped: AtomicU64,
    scoped_wrong: AtomicU64,
    parks: AtomicU64,
    percpu_sets: AtomicU64,
    detached: AtomicU64,
    detached_ended: AtomicU64,
    detached_refused: AtomicU64,
    grouped: AtomicU64,
    grouped_ran: AtomicU64,
    preferred: AtomicU64,
    origin_wrong: AtomicU64,
    reap_errors: AtomicU64,
    live_bodies: AtomicI64,
    churn_ops: [AtomicU64; 32],
    // Workers.
    queued: AtomicU64,
    ran: AtomicU64,
    busy: AtomicU64,
    cancelled: AtomicU64,
    flushes: AtomicU64,
    dqueued: AtomicU64,
    dran: AtomicU64,
    dcancelled: AtomicU64,
    dmods: AtomicU64,
    fn_queued: AtomicU64,
    fn_ran: AtomicU64,
    live_items: AtomicI64,
    // Task work.
    tw_added: AtomicU64,
    tw_ran: AtomicU64,
    tw_cancelled: AtomicU64,
    tw_refused: AtomicU64,
    tw_returned: AtomicU64,
    tw_at_exit: AtomicU64,
    live_probes: AtomicI64,
    // CPU hotplug.
    offlines: AtomicU64,
    onlines: AtomicU64,
    hotplug_failed: AtomicU64,
    // Latencies.
    park_lat: Hist,
    stop_lat: Hist,
    queue_lat: Hist,
    tw_lat: Hist,
}

impl Stats {
    const fn new() -> Self {
        // Each use of `Z` is a new atomic: that is the point of the constant.
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: AtomicU64 = AtomicU64::new(0);
        Stats {
            spawned: Z,
            returned: Z,
            never_ran: Z,
            unstarted: Z,
            injected: Z,
            create_failed: Z,
            scoped: Z,
            scoped_wrong: Z,
            parks: Z,
            percpu_sets: Z,
            detached: Z,
            detached_ended: Z,
            detached_refused: Z,
            grouped: Z,
            grouped_ran: Z,
            preferred: Z,
            origin_wrong: Z,
            reap_errors: Z,
            live_bodies: AtomicI64::new(0),
            churn_ops: [Z; 32],
            queued: Z,
            ran: Z,
            busy: Z,
            cancelled: Z,
            flushes: Z,
            dqueued: Z,
            dran: Z,
            dcancelled: Z,
            dmods: Z,
            fn_queued: Z,
            fn_ran: Z,
            live_items: AtomicI64::new(0),
            tw_added: Z,
            tw_ran: Z,
            tw_cancelled: Z,
            tw_refused: Z,
            tw_returned: Z,
            tw_at_exit: Z,
            live_probes: AtomicI64::new(0),
            offlines: Z,
            onlines: Z,
            hotplug_failed: Z,
            park_lat: Hist::new(),
            stop_lat: Hist::new(),
            queue_lat: Hist::new(),
            tw_lat: Hist::new(),
        }
    }

    fn print(&self, tag: fmt::Arguments<'_>, nthreads: u32) {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let ops = &self.churn_ops[..nthreads as usize];
        let min = ops.iter().map(g).min().unwrap_or(0);
        let max = ops.iter().map(g).max().unwrap_or(0);
        pr_info!(
            "kthread-rs stress: [{}] threads: spawned {} returned {} never-ran {} unstarted {} \
             create-failed {}/{} injected scoped {} (wrong {}) parks {} percpu-sets {} \
             per-thread ops min {} max {}\n",
            tag,
            g(&self.spawned),
            g(&self.returned),
            g(&self.never_ran),
            g(&self.unstarted),
            g(&self.create_failed),
            g(&self.injected),
            g(&self.scoped),
            g(&self.scoped_wrong),
            g(&self.parks),
            g(&self.percpu_sets),
            min,
            max
        );
        pr_info!(
            "kthread-rs stress: [{}] self-ending: detached {} ended {} refused {} | grouped {} \
             ran {} | preferred-affinity {} | origin wrong {}\n",
            tag,
            g(&self.detached),
            g(&self.detached_ended),
            g(&self.detached_refused),
            g(&self.grouped),
            g(&self.grouped_ran),
            g(&self.preferred),
            g(&self.origin_wrong)
        );
        pr_info!(
            "kthread-rs stress: [{}] works: queued {} ran {} busy {} cancelled {} flushes {} \
             | delayed: queued {} ran {} cancelled {} mods {} | closures: queued {} ran {}\n",
            tag,
            g(&self.queued),
            g(&self.ran),
            g(&self.busy),
            g(&self.cancelled),
            g(&self.flushes),
            g(&self.dqueued),
            g(&self.dran),
            g(&self.dcancelled),
            g(&self.dmods),
            g(&self.fn_queued),
            g(&self.fn_ran)
        );
        pr_info!(
            "kthread-rs stress: [{}] task_work: added {} ran {} cancelled {} refused {} \
             (returned {}) at-exit {} | cpu hotplug: offline {} online {} failed {}\n",
            tag,
            g(&self.tw_added),
            g(&self.tw_ran),
            g(&self.tw_cancelled),
            g(&self.tw_refused),
            g(&self.tw_returned),
            g(&self.tw_at_exit),
            g(&self.offlines),
            g(&self.onlines),
            g(&self.hotplug_failed)
        );
        pr_info!(
            "kthread-rs stress: [{}] latency us p50/p99: park {}/{} stop {}/{} queue->run {}/{} \
             task_work add->run {}/{}\n",
            tag,
            self.park_lat.quantile_us(50),
            self.park_lat.quantile_us(99),
            self.stop_lat.quantile_us(50),
            self.stop_lat.quantile_us(99),
            self.queue_lat.quantile_us(50),
            self.queue_lat.quantile_us(99),
            self.tw_lat.quantile_us(50),
            self.tw_lat.quantile_us(99)
        );
    }
}

static STATS: Stats = Stats::new();

/// Set by the controller when the workloads must wind down.
static ENDING: AtomicBool = AtomicBool::new(false);

fn now() -> Instant<Monotonic> {
    Instant::now()
}

/// Run `f` with an allocation failure injected into the first fault-injectable allocation of
/// this task (failslab through `current->fail_nth`; the guest enables failslab).
fn with_injected_failure<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `fail_nth` of `current` is only used by fault injection, in this task.
    unsafe { (*Task::current_raw()).fail_nth = 1 };
    let r = f();
    // SAFETY: As above.
    unsafe { (*Task::current_raw()).fail_nth = 0 };
    r
}

/// Does failslab fail a `GFP_KERNEL` allocation when asked through `current->fail_nth`? Only
/// with `CONFIG_FAILSLAB` and `/sys/kernel/debug/failslab/ignore-gfp-wait` set to `N` (the
/// guest scripts set it; its default ignores sleeping allocations).
fn failslab_fails_sleeping_allocations() -> bool {
    with_injected_failure(|| KBox::new(0u64, GFP_KERNEL)).is_err()
}

/// Count a stopped or joined thread's outcome.
fn account<T>(exit: Result<Exit<T>>) {
    match exit {
        Ok(Exit::Returned(_)) => STATS.returned.fetch_add(1, Relaxed),
        Ok(Exit::NeverRan) => STATS.never_ran.fetch_add(1, Relaxed),
        Err(_) => STATS.reap_errors.fetch_add(1, Relaxed),
    };
}

/// A thread body that counts itself live while it runs.
struct LiveBody;

impl LiveBody {
    fn enter() -> Self {
        STATS.live_bodies.fetch_add(1, Relaxed);
        LiveBody
    }
}

impl Drop for LiveBody {
    fn drop(&mut self) {
        STATS.live_bodies.fetch_sub(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Thread churn.

fn per_cpu_step(steps: &mut u64, ctx: &thread::Context<'_>) -> ControlFlow<()> {
    *steps += 1;
    ctx.sleep(Delta::from_millis(2));
    ControlFlow::Continue(())
}

/// One churn step: a burst of one kind of thread operation.
fn churn_once(me: usize, rng: &mut Rng, p: &Params, creations: &mut u64) {
    let module = p.module;
    *creations += 1;
    if p.fail_every != 0 && *creations % u64::from(p.fail_every) == 0 {
        STATS.injected.fetch_add(1, Relaxed);
        let r = with_injected_failure(|| thread::create(module, fmt!("krs-st-inj"), |_| 0u32));
        match r {
            Err(_) => STATS.create_failed.fetch_add(1, Relaxed),
            Ok(t) => {
                // The injected failure hit nothing in the creation path: counted, not failed.
                drop(t);
                STATS.unstarted.fetch_add(1, Relaxed)
            }
        };
        return;
    }
    match rng.below(8) {
        // Threads that return at once, reaped by stop (some are stopped before they ran).
        0 => {
            let n = 1 + rng.below(4);
            for i in 0..n {
                if let Ok(t) = thread::spawn(module, fmt!("krs-st-ret/{}", i), move |_| {
                    let _live = LiveBody::enter();
                    i
                }) {
                    STATS.spawned.fetch_add(1, Relaxed);
                    let t0 = now();
                    let r = t.stop();
                    STATS.stop_lat.record(t0.elapsed());
                    account(r);
                }
            }
        }
        // Created, never started: dropping the handle must reap it.
        1 => {
            if let Ok(t) = thread::create(module, fmt!("krs-st-new"), |_| {
                let _live = LiveBody::enter();
            }) {
                drop(t);
                STATS.unstarted.fetch_add(1, Relaxed);
            }
        }
        // Started and joined: the body runs to its end, and sees itself as one of ours.
        2 => {
            if let Ok(t) = thread::spawn(module, fmt!("krs-st-join"), move |ctx| {
                let _live = LiveBody::enter();
                ctx.sleep(Delta::from_micros(100));
                if !matches!(thread::origin(module, kernel::current!()), Origin::Ours(_)) {
                    STATS.origin_wrong.fetch_add(1, Relaxed);
                }
                7u32
            }) {
                STATS.spawned.fetch_add(1, Relaxed);
                if thread::origin(module, &t) != Origin::Ours(t.body_id()) {
                    STATS.origin_wrong.fetch_add(1, Relaxed);
                }
                account(t.join());
            }
        }
        // Self-ending threads: two detached (each pins the module until it ends; refused while
        // the module unloads), and a group of three whose drop waits for them.
        5 => {
            for i in 0..2 {
                let r = thread::spawn_detached(module, fmt!("krs-st-det/{}", i), |_ctx| {
                    {
                        let _live = LiveBody::enter();
                    }
                    STATS.detached_ended.fetch_add(1, Release);
                });
                match r {
                    Ok(()) => STATS.detached.fetch_add(1, Relaxed),
                    Err(_) => STATS.detached_refused.fetch_add(1, Relaxed),
                };
            }
            if let Ok(group) = ThreadGroup::new(module) {
                for i in 0..3 {
                    let r = group.spawn(fmt!("krs-st-grp/{}", i), |ctx| {
                        let _live = LiveBody::enter();
                        ctx.sleep(Delta::from_micros(100));
                        STATS.grouped_ran.fetch_add(1, Relaxed);
                    });
                    if r.is_ok() {
                        STATS.grouped.fetch_add(1, Relaxed);
                    }
                }
                drop(group);
            }
        }
        // A thread that prefers one CPU (the CPU hotplug thread takes CPUs away meanwhile).
        6 => {
            let cpu = rng.below(u64::from(nr_cpu_ids())) as u32;
            let Some(cpu) = CpuId::from_u32(cpu) else {
                return;
            };
            let Ok(mut mask) = CpumaskVar::new_zero(GFP_KERNEL) else {
                return;
            };
            mask.set(cpu);
            let r = thread::create(module, fmt!("krs-st-pref"), |ctx| {
                let _live = LiveBody::enter();
                while ctx.sleep(Delta::from_millis(1)) != Wake::Stop {}
            });
            if let Ok(mut t) = r {
                if t.affine_preferred(&mask).is_ok() {
                    STATS.preferred.fetch_add(1, Relaxed);
                }
                let t = t.start();
                STATS.spawned.fetch_add(1, Relaxed);
                fsleep(Delta::from_millis(5));
                let t0 = now();
                let r = t.stop();
                STATS.stop_lat.record(t0.elapsed());
                account(r);
            }
        }
        // A park/unpark storm against a busy parkable thread.
        3 => {
            let r = thread::spawn_parkable(module, fmt!("krs-st-park"), 0u64, |n, _ctx| {
                *n += 1;
                kernel::time::delay::udelay(Delta::from_micros(20));
                ControlFlow::Continue(())
            });
            if let Ok(mut t) = r {
                STATS.spawned.fetch_add(1, Relaxed);
                for _ in 0..10 {
                    let t0 = now();
                    if t.park().is_ok() {
                        STATS.park_lat.record(t0.elapsed());
                        STATS.parks.fetch_add(1, Relaxed);
                    }
                    t.unpark();
                }
                let t0 = now();
                let r = t.stop();
                STATS.stop_lat.record(t0.elapsed());
                account(r);
            }
        }
        // Scoped threads that borrow from this stack frame, joined: each one that ran saw it.
        4 => {
            let hits = AtomicU32::new(0);
            let (spawned, returned) = thread::scope(module, |s| {
                let mut handles = KVec::new();
                for i in 0..3 {
                    let h = s.spawn(fmt!("krs-st-scope/{}", i), |_| {
                        hits.fetch_add(1, Relaxed);
                    });
                    if let Ok(h) = h {
                        // On a full vector the handle is dropped, which stops the thread.
                        let _ = handles.push(h, GFP_KERNEL);
                    }
                }
                let spawned = handles.len();
                let returned = handles
                    .into_iter()
                    .map(|h| h.join())
                    .filter(|e| matches!(e, Exit::Returned(())))
                    .count();
                (spawned, returned)
            });
            STATS.scoped.fetch_add(spawned as u64, Relaxed);
            if hits.load(Relaxed) as usize != returned {
                STATS.scoped_wrong.fetch_add(1, Relaxed);
            }
        }
        // Now and then (thread 0 only), a per-CPU set that lives for a moment.
        _ => {
            if me == 0 && rng.below(8) == 0 {
                let set = PerCpuThreads::new(module, c"krs-st-pcpu", |_cpu| 0u64, per_cpu_step);
                if let Ok(set) = set {
                    fsleep(Delta::from_millis(20));
                    drop(set);
                    STATS.percpu_sets.fetch_add(1, Relaxed);
                }
            }
        }
    }
    STATS.churn_ops[me].fetch_add(1, Relaxed);
}

fn churn(me: usize, p: Params) -> Result<Thread<()>> {
    thread::spawn(p.module, fmt!("krs-st-churn/{}", me), move |ctx| {
        let mut rng = Rng::new(p.seed, 100 + me as u64);
        let mut creations = 0;
        while !ctx.should_stop() && !ENDING.load(Relaxed) {
            churn_once(me, &mut rng, &p, &mut creations);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Worker storms.

struct Item {
    queued_at: AtomicI64,
}

impl Item {
    fn new() -> Self {
        STATS.live_items.fetch_add(1, Relaxed);
        Item {
            queued_at: AtomicI64::new(0),
        }
    }

    fn stamp(&self) {
        let _ = self
            .queued_at
            .compare_exchange(0, now_ns(), Relaxed, Relaxed);
    }

    fn measure(&self) {
        let t = self.queued_at.swap(0, Relaxed);
        if t != 0 {
            STATS.queue_lat.record(Delta::from_nanos(now_ns() - t));
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        STATS.live_items.fetch_sub(1, Relaxed);
    }
}

/// Monotonic time in nanoseconds, to stamp items with (an `Instant` cannot live in an atomic).
fn now_ns() -> i64 {
    <Monotonic as ClockSource>::ktime_get()
}

impl WorkItem for Item {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        work.measure();
        STATS.ran.fetch_add(1, Relaxed);
    }
}

impl DelayedWorkItem for Item {
    fn run(_work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        STATS.dran.fetch_add(1, Relaxed);
    }
}

/// One worker's items: plain works and delayed works, bound to it at their first queue.
struct Lane {
    worker: Worker,
    works: KVec<Arc<Work<Item>>>,
    delayed: KVec<Arc<DelayedWork<Item>>>,
}

const WORKS_PER_LANE: usize = 16;
/// Delayed works per producer and lane. All producers queue, modify and cancel all of them:
/// concurrent operations on one delayed work are what `Worker::cancel_delayed_sync` must get
/// right (C drops an entry whose timer fires during a cancel).
const DELAYED_PER_PRODUCER: usize = 2;

fn new_lane(module: &'static ThisModule, i: usize, producers: usize) -> Result<Lane> {
    let worker = Worker::create(module, fmt!("krs-st-worker/{}", i))?;
    let mut works = KVec::with_capacity(WORKS_PER_LANE, GFP_KERNEL)?;
    for _ in 0..WORKS_PER_LANE {
        works.push(Work::new(Item::new())?, GFP_KERNEL)?;
    }
    let mut delayed = KVec::with_capacity(DELAYED_PER_PRODUCER * producers, GFP_KERNEL)?;
    for _ in 0..DELAYED_PER_PRODUCER * producers {
        delayed.push(crate::new_kthread_delayed_work!(Item::new())?, GFP_KERNEL)?;
    }
    Ok(Lane {
        worker,
        works,
        delayed,
    })
}

/// One producer step on a random lane: queue (most often), cancel, flush, delayed queue, mod or
/// cancel, or a one-shot closure.
fn produce_once(me: usize, lanes: &[Lane], rng: &mut Rng) {
    let lane = &lanes[rng.below(lanes.len() as u64) as usize];
    let w = &lane.works[rng.below(WORKS_PER_LANE as u64) as usize];
    let _ = me;
    let d = &lane.delayed[rng.below(lane.delayed.len() as u64) as usize];
    match rng.below(16) {
        0..=8 => {
            w.stamp();
            match lane.worker.queue(w.clone()) {
                Ok(()) => STATS.queued.fetch_add(1, Relaxed),
                Err(_) => STATS.busy.fetch_add(1, Relaxed),
            };
        }
        9 => {
            if let Ok(true) = lane.worker.cancel_sync(w) {
                w.queued_at.store(0, Relaxed);
                STATS.cancelled.fetch_add(1, Relaxed);
            }
        }
        10 => {
            if lane.worker.flush(w).is_ok() {
                STATS.flushes.fetch_add(1, Relaxed);
            }
        }
        11 | 12 => {
            let delay = Delta::from_micros(rng.below(3000) as i64);
            if lane.worker.queue_delayed(d, delay).is_ok() {
                STATS.dqueued.fetch_add(1, Relaxed);
            }
        }
        13 => {
            let delay = Delta::from_micros(rng.below(3000) as i64);
            if let Ok(was_pending) = lane.worker.mod_delayed(d, delay) {
                STATS.dmods.fetch_add(1, Relaxed);
                if !was_pending {
                    STATS.dqueued.fetch_add(1, Relaxed);
                }
            }
        }
        14 => {
            if let Ok(true) = lane.worker.cancel_delayed_sync(d) {
                STATS.dcancelled.fetch_add(1, Relaxed);
            }
        }
        _ => {
            let r = lane.worker.queue_fn(|| {
                STATS.fn_ran.fetch_add(1, Relaxed);
            });
            if r.is_ok() {
                STATS.fn_queued.fetch_add(1, Relaxed);
            }
        }
    }
}

fn producer(me: usize, lanes: Arc<KVec<Lane>>, p: Params) -> Result<Thread<()>> {
    thread::spawn(p.module, fmt!("krs-st-prod/{}", me), move |ctx| {
        let mut rng = Rng::new(p.seed, 200 + me as u64);
        let mut n = 0u32;
        while !ctx.should_stop() && !ENDING.load(Relaxed) {
            produce_once(me, &lanes, &mut rng);
            n += 1;
            if n % 64 == 0 {
                ctx.sleep(Delta::from_micros(200));
            }
        }
    })
}

/// The end of the worker storm: cancel what is delayed, flush what is queued, so that every
/// queue is accounted for before the workers are destroyed.
fn drain_lanes(lanes: &[Lane]) {
    for lane in lanes {
        for d in lane.delayed.iter() {
            if let Ok(true) = lane.worker.cancel_delayed_sync(d) {
                STATS.dcancelled.fetch_add(1, Relaxed);
            }
        }
        let _ = lane.worker.flush_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Task work on the companion's threads.

struct Probe {
    added: i64,
}

impl Probe {
    fn new() -> Self {
        STATS.live_probes.fetch_add(1, Relaxed);
        Probe { added: now_ns() }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Release: the controller's Acquire load of zero then sees this probe's counts.
        STATS.live_probes.fetch_sub(1, Release);
    }
}

impl Callback for Probe {
    fn run(self) {
        STATS
            .tw_lat
            .record(Delta::from_nanos(now_ns() - self.added));
        if task_work::current_is_exiting() {
            STATS.tw_at_exit.fetch_add(1, Relaxed);
        }
        STATS.tw_ran.fetch_add(1, Relaxed);
    }
}

/// The companion's threads: tasks `tw_pid..tw_pid + tw_threads` of thread group `tw_pid`.
fn tw_targets(p: &Params) -> Result<KVec<ARef<Task>>> {
    let mut v = KVec::new();
    for i in 0..p.tw_threads {
        let pid = p.tw_pid.saturating_add(i32::try_from(i)?);
        if let Some(t) = sys::task_of_pid(pid) {
            if t.tgid_nr_ns(None) == p.tw_pid {
                v.push(t, GFP_KERNEL)?;
            }
        }
    }
    Ok(v)
}

fn task_worker(targets: KVec<ARef<Task>>, p: Params) -> Result<Thread<()>> {
    thread::spawn(p.module, fmt!("krs-st-tw"), move |ctx| {
        let mut rng = Rng::new(p.seed, 300);
        while !ctx.should_stop() && !ENDING.load(Relaxed) {
            // Bursts with quiet gaps: the callbacks of a burst run within milliseconds, and
            // while none is pending the module holds no reference, so rmmod can get in.
            for _ in 0..16 {
                let t = &targets[rng.below(targets.len() as u64) as usize];
                let notify = match rng.below(3) {
                    0 => Notify::Resume,
                    1 => Notify::Signal,
                    _ => Notify::SignalNoIpi,
                };
                let cancel = rng.below(8) == 0;
                let r = if cancel {
                    task_work::add_cancelable(p.module, t, notify, Probe::new()).map(|pending| {
                        if pending.cancel().is_some() {
                            STATS.tw_cancelled.fetch_add(1, Relaxed);
                        }
                    })
                } else {
                    task_work::add(p.module, t, notify, Probe::new())
                };
                match r {
                    Ok(()) => STATS.tw_added.fetch_add(1, Relaxed),
                    Err((_, probe)) => {
                        drop(probe);
                        STATS.tw_returned.fetch_add(1, Relaxed);
                        STATS.tw_refused.fetch_add(1, Relaxed)
                    }
                };
            }
            ctx.sleep(Delta::from_millis(20));
        }
    })
}

// ---------------------------------------------------------------------------------------------
// CPU hotplug.

fn cpu_is_online(cpu: u32) -> bool {
    // SAFETY: `__cpu_online_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
    cpu < nr_cpu_ids()
        && unsafe { bindings::cpumask_test_cpu(cpu as c_int, &raw mut bindings::__cpu_online_mask) }
}

fn hotplug(p: Params) -> Result<Thread<()>> {
    thread::spawn(p.module, fmt!("krs-st-onoff"), move |ctx| {
        let mut rng = Rng::new(p.seed, 400);
        let holdoff = Delta::from_secs(i64::from(p.onoff_holdoff));
        if !matches!(ctx.sleep(holdoff), Wake::Timeout) && holdoff.as_nanos() > 0 {
            return;
        }
        let half = Delta::from_millis(i64::from(p.onoff_interval / 2));
        while !ctx.should_stop() && !ENDING.load(Relaxed) && nr_cpu_ids() > 1 {
            let cpu = 1 + rng.below(u64::from(nr_cpu_ids() - 1)) as u32;
            if cpu_is_online(cpu) {
                // SAFETY: `remove_cpu()` takes any CPU number and refuses what it cannot do.
                if unsafe { bindings::remove_cpu(cpu) } == 0 {
                    STATS.offlines.fetch_add(1, Relaxed);
                    ctx.sleep(half);
                    // SAFETY: As above, `add_cpu()`.
                    match unsafe { bindings::add_cpu(cpu) } {
                        0 => STATS.onlines.fetch_add(1, Relaxed),
                        _ => STATS.hotplug_failed.fetch_add(1, Relaxed),
                    };
                } else {
                    STATS.hotplug_failed.fetch_add(1, Relaxed);
                }
            }
            ctx.sleep(half);
        }
    })
}

/// Bring every possible CPU back online (after a stop in the middle of an offline period).
fn all_cpus_online() {
    for cpu in 1..nr_cpu_ids() {
        if !cpu_is_online(cpu) {
            // SAFETY: As in `hotplug`.
            if unsafe { bindings::add_cpu(cpu) } == 0 {
                STATS.onlines.fetch_add(1, Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The controller: start the workloads, print statistics, stop, account, judge.

fn stop_all(threads: &mut KVec<Thread<()>>) {
    while let Some(t) = threads.pop() {
        let t0 = now();
        let r = t.stop();
        STATS.stop_lat.record(t0.elapsed());
        if r.is_err() {
            pr_err!("kthread-rs stress: a workload thread could not be stopped\n");
        }
    }
}

fn run(ctx: &thread::Context<'_>, mut p: Params) -> Result {
    let start = now();
    if p.fail_every != 0 && !failslab_fails_sleeping_allocations() {
        pr_warn!(
            "kthread-rs stress: injected failures are off: failslab does not fail GFP_KERNEL \
             allocations here (it needs CONFIG_FAILSLAB and \
             `echo N > /sys/kernel/debug/failslab/ignore-gfp-wait`)\n"
        );
        p.fail_every = 0;
    }
    let mut threads = KVec::new();
    for i in 0..p.nthreads as usize {
        threads.push(churn(i, p)?, GFP_KERNEL)?;
    }
    let mut lanes = KVec::with_capacity(p.nworkers as usize, GFP_KERNEL)?;
    for i in 0..p.nworkers as usize {
        lanes.push(new_lane(p.module, i, p.nproducers as usize)?, GFP_KERNEL)?;
    }
    let lanes = Arc::new(lanes, GFP_KERNEL)?;
    for i in 0..p.nproducers as usize {
        threads.push(producer(i, lanes.clone(), p)?, GFP_KERNEL)?;
    }
    let targets = if p.tw_pid != 0 {
        tw_targets(&p)?
    } else {
        KVec::new()
    };
    let ntargets = targets.len();
    if ntargets > 0 {
        threads.push(task_worker(targets, p)?, GFP_KERNEL)?;
    }
    if p.onoff_interval != 0 {
        threads.push(hotplug(p)?, GFP_KERNEL)?;
    }
    pr_info!(
        "kthread-rs stress: started: duration {} s, {} churn, {} workers, {} producers, \
         {} task_work targets, hotplug every {} ms, failure every {} creations, seed {}\n",
        p.duration,
        p.nthreads,
        p.nworkers,
        p.nproducers,
        ntargets,
        p.onoff_interval,
        p.fail_every,
        p.seed
    );
    let interval = Delta::from_secs(i64::from(p.stat_interval));
    let mut stopped_early = false;
    let mut intervals = 0u32;
    loop {
        let elapsed = start.elapsed().as_nanos() / 1_000_000_000;
        if p.duration != 0 && elapsed >= i64::from(p.duration) {
            break;
        }
        let left = if p.duration == 0 {
            interval
        } else {
            Delta::from_secs((i64::from(p.duration) - elapsed).min(i64::from(p.stat_interval)))
        };
        if !matches!(ctx.sleep(left), Wake::Timeout) {
            stopped_early = true;
            break;
        }
        let t = start.elapsed().as_nanos() / 1_000_000_000;
        STATS.print(fmt!("t={}s", t), p.nthreads);
        intervals += 1;
    }
    ENDING.store(true, Relaxed);
    stop_all(&mut threads);
    // Detached threads end by themselves, within microseconds: give them 5 s.
    for _ in 0..500 {
        if STATS.detached_ended.load(Acquire) == STATS.detached.load(Relaxed) {
            break;
        }
        fsleep(Delta::from_millis(10));
    }
    drain_lanes(&lanes);
    // The producers are gone, so these are the last references: dropping them destroys the
    // workers and frees the items.
    drop(lanes);
    all_cpus_online();
    // Callbacks on the companion run when its threads next leave the kernel: give them 10 s.
    for _ in 0..1000 {
        if STATS.live_probes.load(Acquire) == 0 {
            break;
        }
        fsleep(Delta::from_millis(10));
    }
    let t = start.elapsed().as_nanos() / 1_000_000_000;
    pr_info!(
        "kthread-rs stress: final accounting after {} s{}\n",
        t,
        if stopped_early {
            " (stopped by rmmod)"
        } else {
            ""
        }
    );
    STATS.print(fmt!("final"), p.nthreads);
    verdict(ntargets, &p, intervals);
    Ok(())
}

fn verdict(ntargets: usize, p: &Params, intervals: u32) {
    let g = |a: &AtomicU64| a.load(Relaxed);
    let mut failures = 0;
    let mut fail = |why: fmt::Arguments<'_>| {
        failures += 1;
        pr_err!("kthread-rs stress: FAIL: {}\n", why);
    };
    if intervals == 0 {
        fail(fmt!(
            "the run ended before its first statistics interval ({} s): too short to tell",
            p.stat_interval
        ));
    }
    let spawned = g(&STATS.spawned);
    let reaped = g(&STATS.returned) + g(&STATS.never_ran);
    if spawned != reaped {
        fail(fmt!("{} threads spawned, {} reaped", spawned, reaped));
    }
    if g(&STATS.reap_errors) != 0 {
        fail(fmt!("{} stops or joins failed", g(&STATS.reap_errors)));
    }
    if STATS.live_bodies.load(Relaxed) != 0 {
        fail(fmt!(
            "{} thread bodies still live",
            STATS.live_bodies.load(Relaxed)
        ));
    }
    if g(&STATS.create_failed) + g(&STATS.unstarted) < g(&STATS.injected) {
        fail(fmt!("injected failures unaccounted"));
    }
    if p.fail_every != 0 && g(&STATS.injected) > 0 && g(&STATS.create_failed) == 0 {
        fail(fmt!("no injected failure was seen as an error"));
    }
    if g(&STATS.detached) != g(&STATS.detached_ended) {
        fail(fmt!(
            "detached threads: {} started, {} ended",
            g(&STATS.detached),
            g(&STATS.detached_ended)
        ));
    }
    if g(&STATS.grouped) != g(&STATS.grouped_ran) {
        fail(fmt!(
            "grouped threads: {} started, {} ran before their group's drop returned",
            g(&STATS.grouped),
            g(&STATS.grouped_ran)
        ));
    }
    if g(&STATS.origin_wrong) != 0 {
        fail(fmt!("origin() was wrong {} times", g(&STATS.origin_wrong)));
    }
    if g(&STATS.scoped_wrong) != 0 {
        fail(fmt!(
            "{} scopes returned before their threads ran",
            g(&STATS.scoped_wrong)
        ));
    }
    if g(&STATS.queued) != g(&STATS.ran) + g(&STATS.cancelled) {
        fail(fmt!(
            "works: queued {} != ran {} + cancelled {}",
            g(&STATS.queued),
            g(&STATS.ran),
            g(&STATS.cancelled)
        ));
    }
    if g(&STATS.dqueued) != g(&STATS.dran) + g(&STATS.dcancelled) {
        fail(fmt!(
            "delayed works: queued {} != ran {} + cancelled {}",
            g(&STATS.dqueued),
            g(&STATS.dran),
            g(&STATS.dcancelled)
        ));
    }
    if g(&STATS.fn_queued) != g(&STATS.fn_ran) {
        fail(fmt!(
            "closures: queued {} != ran {}",
            g(&STATS.fn_queued),
            g(&STATS.fn_ran)
        ));
    }
    if STATS.live_items.load(Relaxed) != 0 {
        fail(fmt!(
            "{} work items still live",
            STATS.live_items.load(Relaxed)
        ));
    }
    if g(&STATS.tw_added) != g(&STATS.tw_ran) + g(&STATS.tw_cancelled) {
        fail(fmt!(
            "task_work: added {} != ran {} + cancelled {}",
            g(&STATS.tw_added),
            g(&STATS.tw_ran),
            g(&STATS.tw_cancelled)
        ));
    }
    if STATS.live_probes.load(Relaxed) != 0 {
        fail(fmt!(
            "{} task_work callbacks still live",
            STATS.live_probes.load(Relaxed)
        ));
    }
    if p.tw_pid != 0 && ntargets == 0 {
        fail(fmt!(
            "no task_work target: pid {} has no such threads",
            p.tw_pid
        ));
    }
    if g(&STATS.onlines) < g(&STATS.offlines) {
        fail(fmt!(
            "{} CPUs offlined, {} onlined",
            g(&STATS.offlines),
            g(&STATS.onlines)
        ));
    }
    if failures == 0 {
        pr_info!("kthread-rs stress: PASS\n");
    }
}

struct Stress {
    controller: Option<Thread<Result>>,
}

impl kernel::Module for Stress {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let p = Params::read(module)?;
        let controller = thread::spawn(module, fmt!("krs-stress"), move |ctx| {
            let r = run(ctx, p);
            if let Err(e) = r {
                pr_err!("kthread-rs stress: FAIL: setup failed: {:?}\n", e);
            }
            r
        })?;
        Ok(Stress {
            controller: Some(controller),
        })
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // Stops the run if it is still going: the controller winds everything down and prints
        // the final accounting before this returns.
        if let Some(c) = self.controller.take() {
            let _ = c.stop();
        }
    }
}
