// SPDX-License-Identifier: GPL-2.0

//! kthread-rs benchmarks, the Rust side: the operations of `kthread_rs_bench_c.c`, through the
//! project's safe API. `make bench` loads the two modules alternately, several rounds, in one
//! boot; each load runs every benchmark once at init, prints one line per operation, and fails
//! the load on purpose (`EAGAIN`) so that nothing stays.
//!
//! Each measured interval holds only the operation: the harness around it (how the producer
//! learns that a work ran) differs from the C one, but it is outside the interval.

use core::{
    ops::ControlFlow,
    ptr,
    sync::atomic::{AtomicI32, AtomicU64, Ordering::SeqCst},
};
use kernel::{
    bindings,
    cpu::CpuId,
    new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
    time::{ClockSource, Monotonic},
    workqueue::{self, impl_has_work, new_work},
};

#[path = "../../rust/kthread_rs/mod.rs"]
pub mod kthread_rs;

use kthread_rs::{
    thread::{self, Thread},
    worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
};

module! {
    type: Bench,
    name: "kthread_rs_bench",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: benchmarks of the safe Rust API (compared with kthread_rs_bench_c)",
    license: "GPL",
    params: {
        round: i32 {
            default: 0,
            description: "round number, printed with the results",
        },
    },
}

fn now_ns() -> u64 {
    u64::try_from(<Monotonic as ClockSource>::ktime_get()).unwrap_or(0)
}

/// Insertion sort (at most 1000 values, outside the timed intervals). Not `sort_unstable()`:
/// its `panic_on_ord_violation()` (rustc 1.96) is not in the 7.2 objtool's list of functions
/// that do not return, so objtool warns about the module.
fn sort(v: &mut [u64]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1] > v[j] {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

fn report(op: &str, ns: &mut [u64]) {
    sort(ns);
    let n = ns.len();
    pr_info!(
        "krs-bench: impl=rust round={} op={} n={} median_ns={} p99_ns={}\n",
        kthread_rs::compat::param::<i32>(module_parameters::round.value()),
        op,
        n,
        ns[n / 2],
        ns[n * 99 / 100]
    );
}

fn size(name: &str, bytes: usize) {
    pr_info!(
        "krs-bench: impl=rust round={} size={} bytes={}\n",
        kthread_rs::compat::param::<i32>(module_parameters::round.value()),
        name,
        bytes
    );
}

// -- threads ----------------------------------------------------------------------------------

/// Spawn (create + wake) and stop a thread whose body returns at once.
fn bench_create_stop(module: &'static ThisModule, op: &str, n: usize) -> Result {
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for i in 0..n {
        let t0 = now_ns();
        let t = thread::spawn(module, fmt!("krs-br-{}", i), |_| 0i32)?;
        let _ = t.stop()?;
        ns.push(now_ns() - t0, GFP_KERNEL)?;
    }
    report(op, &mut ns);
    Ok(())
}

/// Free memory, slab and kernel stacks, in bytes (`si_meminfo()` and the node counters of
/// `/proc/meminfo`'s `Slab` and `KernelStack`; per-CPU deltas not yet folded in are missed).
fn mem_snapshot() -> [u64; 3] {
    let mut info = bindings::sysinfo::default();
    // SAFETY: `info` is a valid `struct sysinfo` to fill in.
    unsafe { bindings::si_meminfo(&mut info) };
    let node = |item: bindings::node_stat_item| -> u64 {
        // SAFETY: `vm_node_stat` is the kernel's array of node counters, which lives forever;
        // `item` is one of its indices. A volatile read, like the C `atomic_long_read()`.
        let v =
            unsafe { ptr::read_volatile(&raw const bindings::vm_node_stat[item as usize].counter) };
        u64::try_from(v).unwrap_or(0)
    };
    let slab = node(bindings::node_stat_item_NR_SLAB_UNRECLAIMABLE_B)
        + node(bindings::node_stat_item_NR_SLAB_RECLAIMABLE_B);
    [
        info.freeram as u64 * u64::from(info.mem_unit),
        slab * 4096,
        node(bindings::node_stat_item_NR_KERNEL_STACK_KB) * 1024,
    ]
}

fn bench_population(module: &'static ThisModule, pop: usize, n: usize) -> Result {
    let before = mem_snapshot();
    let mut threads: KVec<Thread<()>> = KVec::with_capacity(pop, GFP_KERNEL)?;
    for i in 0..pop {
        threads.push(
            thread::spawn(module, fmt!("krs-bp-{}", i), |ctx| {
                ctx.wait_until(|| false, None);
            })?,
            GFP_KERNEL,
        )?;
    }
    let op = match pop {
        10 => "create_stop_pop10",
        100 => "create_stop_pop100",
        1000 => "create_stop_pop1000",
        _ => "create_stop_pop10000",
    };
    if pop == 10000 {
        let after = mem_snapshot();
        let per = |i: usize| (before[i].saturating_sub(after[i]) as usize) / pop;
        let grew = |i: usize| (after[i].saturating_sub(before[i]) as usize) / pop;
        size("pop10000_memory_per_thread", per(0));
        size("pop10000_slab_per_thread", grew(1));
        size("pop10000_stack_per_thread", grew(2));
    }
    bench_create_stop(module, op, n)?;
    drop(threads); // stops them all
    Ok(())
}

/// Park and unpark a busy parkable thread, bound to CPU 1 (the caller runs on CPU 0; unbound,
/// the thread's CPU would change the cost from boot to boot).
fn bench_park(module: &'static ThisModule, n: usize) -> Result {
    let cpu = CpuId::from_u32(1).or(CpuId::from_u32(0)).ok_or(EINVAL)?;
    let mut t = thread::create_parkable_on_cpu(module, cpu, fmt!("krs-br-park"), (), |(), _| {
        ControlFlow::Continue(())
    })?
    .start();
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let t0 = now_ns();
        t.park()?;
        t.unpark();
        ns.push(now_ns() - t0, GFP_KERNEL)?;
    }
    let _ = t.stop()?;
    report("park_unpark", &mut ns);
    Ok(())
}

/// Park and unpark a per-CPU set: one busy parkable thread bound to each online CPU, all parked,
/// then all unparked.
fn bench_park_percpu(module: &'static ThisModule, n: usize) -> Result {
    let mut set = KVec::new();
    for cpu in 0..kernel::cpu::nr_cpu_ids() {
        let Some(id) = CpuId::from_u32(cpu) else {
            continue;
        };
        // SAFETY: `cpu_online_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
        let online =
            unsafe { bindings::cpumask_test_cpu(cpu as i32, &raw mut bindings::__cpu_online_mask) };
        if !online {
            continue;
        }
        let t = thread::create_parkable_on_cpu(
            module,
            id,
            fmt!("krs-br-pcpu/{}", cpu),
            (),
            |(), _| ControlFlow::Continue(()),
        )?;
        set.push(t.start(), GFP_KERNEL)?;
    }
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let t0 = now_ns();
        for t in set.iter_mut() {
            t.park()?;
        }
        for t in set.iter_mut() {
            t.unpark();
        }
        ns.push(now_ns() - t0, GFP_KERNEL)?;
    }
    drop(set);
    report("park_unpark_percpu_set", &mut ns);
    Ok(())
}

// -- kthread_worker ---------------------------------------------------------------------------

/// The producer's side of a timed run: the generation that the run bumps, and when it ran.
#[pin_data]
struct Signal {
    #[pin]
    gen: Mutex<u64>,
    #[pin]
    cv: CondVar,
}

impl Signal {
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Signal { gen <- new_mutex!(0), cv <- new_condvar!() }),
            GFP_KERNEL,
        )
    }

    fn bump(&self) {
        *self.gen.lock() += 1;
        self.cv.notify_all();
    }

    fn wait_past(&self, gen: u64) {
        let mut g = self.gen.lock();
        while *g == gen {
            self.cv.wait(&mut g);
        }
    }

    fn current(&self) -> u64 {
        *self.gen.lock()
    }
}

struct Timed {
    queued: AtomicU64,
    ran: AtomicU64,
    signal: Arc<Signal>,
}

impl Timed {
    fn new(signal: &Arc<Signal>) -> Self {
        Timed {
            queued: AtomicU64::new(0),
            ran: AtomicU64::new(0),
            signal: signal.clone(),
        }
    }

    fn ran(&self) {
        self.ran.store(now_ns(), SeqCst);
        self.signal.bump();
    }

    fn latency(&self) -> u64 {
        self.ran.load(SeqCst) - self.queued.load(SeqCst)
    }
}

impl WorkItem for Timed {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        work.ran();
    }
}

impl DelayedWorkItem for Timed {
    fn run(work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        work.ran();
    }
}

fn bench_queue_run(w: &Worker, n: usize) -> Result {
    let signal = Signal::new()?;
    let work = Work::new(Timed::new(&signal))?;
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let gen = signal.current();
        work.queued.store(now_ns(), SeqCst);
        w.queue(work.clone()).map_err(|(e, _)| e)?;
        signal.wait_past(gen);
        ns.push(work.latency(), GFP_KERNEL)?;
    }
    w.flush_all()?;
    report("queue_run", &mut ns);
    Ok(())
}

fn bench_delayed0(w: &Worker, n: usize) -> Result {
    let signal = Signal::new()?;
    let work = crate::new_kthread_delayed_work!(Timed::new(&signal))?;
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let gen = signal.current();
        work.queued.store(now_ns(), SeqCst);
        w.queue_delayed(&work, kernel::time::Delta::ZERO)?;
        signal.wait_past(gen);
        ns.push(work.latency(), GFP_KERNEL)?;
    }
    w.flush_all()?;
    report("queue_delayed0_run", &mut ns);
    Ok(())
}

/// `cancel_sync` of a delayed work whose timer is pending (queued with a delay of 10 s).
fn bench_cancel_delayed(w: &Worker, n: usize) -> Result {
    let signal = Signal::new()?;
    let work = crate::new_kthread_delayed_work!(Timed::new(&signal))?;
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        w.queue_delayed(&work, kernel::time::Delta::from_secs(10))?;
        let t0 = now_ns();
        let was_pending = w.cancel_delayed_sync(&work)?;
        ns.push(now_ns() - t0, GFP_KERNEL)?;
        if !was_pending {
            return Err(EINVAL);
        }
    }
    report("cancel_sync_pending_delayed", &mut ns);
    Ok(())
}

/// For context: the same through the kernel's own workqueue (`rust/kernel/workqueue.rs`).
#[pin_data]
struct WqTimed {
    timed: Timed,
    #[pin]
    work: workqueue::Work<WqTimed>,
}

impl_has_work! {
    impl HasWork<Self> for WqTimed { self.work }
}

impl workqueue::WorkItem for WqTimed {
    type Pointer = Arc<WqTimed>;

    fn run(this: Arc<WqTimed>) {
        this.timed.ran();
    }
}

fn bench_workqueue(n: usize) -> Result {
    let signal = Signal::new()?;
    let timed = Timed::new(&signal);
    let w = Arc::pin_init(
        pin_init!(WqTimed { timed, work <- new_work!("krs-bench") }),
        GFP_KERNEL,
    )?;
    let mut ns = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let gen = signal.current();
        w.timed.queued.store(now_ns(), SeqCst);
        workqueue::system().enqueue(w.clone()).map_err(|_| EBUSY)?;
        signal.wait_past(gen);
        ns.push(w.timed.latency(), GFP_KERNEL)?;
    }
    report("workqueue_queue_run", &mut ns);
    Ok(())
}

const BATCH: usize = 2000;

/// The batch's countdown: the last work to run wakes the producer.
struct Count {
    left: Arc<AtomicI32>,
    signal: Arc<Signal>,
}

impl WorkItem for Count {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        if work.left.fetch_sub(1, SeqCst) == 1 {
            work.signal.bump();
        }
    }
}

/// Throughput: `BATCH` works queued by `producers` threads, timed until the last has run; the
/// cost per work in ns.
fn bench_throughput(
    module: &'static ThisModule,
    w: &Arc<Worker>,
    producers: usize,
    rounds: usize,
) -> Result {
    let signal = Signal::new()?;
    let left = Arc::new(AtomicI32::new(0), GFP_KERNEL)?;
    let mut works = KVec::with_capacity(BATCH, GFP_KERNEL)?;
    for _ in 0..BATCH {
        works.push(
            Work::new(Count {
                left: left.clone(),
                signal: signal.clone(),
            })?,
            GFP_KERNEL,
        )?;
    }
    let works = Arc::new(works, GFP_KERNEL)?;
    let mut ns = KVec::with_capacity(rounds, GFP_KERNEL)?;
    for _ in 0..rounds {
        left.store(BATCH as i32, SeqCst);
        let gen = signal.current();
        let mut starts = KVec::with_capacity(producers, GFP_KERNEL)?;
        let per = BATCH / producers;
        for p in 0..producers {
            let (w, works) = (w.clone(), works.clone());
            starts.push(
                thread::create(module, fmt!("krs-br-prod/{}", p), move |_| {
                    for work in &works[p * per..(p + 1) * per] {
                        let _ = w.queue(work.clone());
                    }
                })?,
                GFP_KERNEL,
            )?;
        }
        let t0 = now_ns();
        let mut running = KVec::with_capacity(producers, GFP_KERNEL)?;
        for s in starts {
            running.push(s.start(), GFP_KERNEL)?;
        }
        signal.wait_past(gen);
        ns.push((now_ns() - t0) / BATCH as u64, GFP_KERNEL)?;
        for t in running {
            let _ = t.join()?;
        }
    }
    let op = if producers == 1 {
        "throughput_1prod_ns_per_work"
    } else {
        "throughput_2prod_ns_per_work"
    };
    report(op, &mut ns);
    Ok(())
}

fn run_all(module: &'static ThisModule) -> Result {
    bench_create_stop(module, "create_stop", 200)?;
    // The same operation, paired with the C pattern that allocates a data block per thread.
    bench_create_stop(module, "create_stop_with_data", 200)?;
    bench_population(module, 10, 100)?;
    bench_population(module, 100, 100)?;
    bench_population(module, 1000, 100)?;
    bench_population(module, 10000, 100)?;
    bench_park(module, 500)?;
    bench_park_percpu(module, 300)?;
    let w = Arc::new(Worker::create(module, fmt!("krs-br-worker"))?, GFP_KERNEL)?;
    bench_queue_run(&w, 1000)?;
    bench_delayed0(&w, 300)?;
    bench_cancel_delayed(&w, 300)?;
    bench_workqueue(1000)?;
    bench_throughput(module, &w, 1, 15)?;
    bench_throughput(module, &w, 2, 15)?;
    size("thread_handle", size_of::<Thread<()>>());
    // The control block of a thread whose closure captures nothing and returns an `i32`, plus
    // the `Arc`'s reference count (rounded to 8).
    let body = |_: &thread::Context<'_>| 0i32;
    size("per_thread_alloc", thread::control_block_size(&body) + 8);
    size("worker_handle", size_of::<Worker>());
    size("work", size_of::<Work<()>>());
    size("delayed_work", size_of::<DelayedWork<()>>());
    Ok(())
}

struct Bench;

impl kernel::Module for Bench {
    fn init(module: &'static ThisModule) -> Result<Self> {
        if let Err(e) = run_all(module) {
            pr_err!("krs-bench: impl=rust failed: {:?}\n", e);
        }
        Err(EAGAIN) // done: do not stay loaded
    }
}
