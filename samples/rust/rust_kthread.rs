// SPDX-License-Identifier: GPL-2.0

//! Rust kernel thread sample.
//!
//! A driver-shaped user of [`kernel::kthread`]: a polling thread, one bound thread per CPU, a
//! kthread_worker with plain and delayed work, and task work queued to the process that loads
//! the module. Every handle lives in the module's state, so unloading the module stops all of
//! it (the handles' drops), and a handle that was leaked would be ended at unload as well.
//!
//! This file exists only in the kernel tree (kthread-rs's `make series` adds it there).

use core::ops::ControlFlow;
use kernel::{
    cpu::CpuId,
    kthread::{
        task_work::{self, Notify},
        thread::{self, Context, PerCpuThreads, Thread, Wake},
        worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
    },
    new_kthread_delayed_work,
    prelude::*,
    sync::{
        atomic::{ordering, Atomic},
        Arc,
    },
    time::Delta,
};

module! {
    type: RustKthread,
    name: "rust_kthread",
    authors: ["kthread-rs developers"],
    description: "Rust kernel thread sample",
    license: "GPL",
}

/// What the worker's items count: one event per run.
struct Events(Atomic<u64>);

impl WorkItem for Events {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        work.0.add(1, ordering::Relaxed);
    }
}

impl DelayedWorkItem for Events {
    fn run(work: Arc<DelayedWork<Self>>, worker: &WorkerRef<'_>) {
        let n = work.0.fetch_add(1, ordering::Relaxed) + 1;
        // A periodic work: queue itself again, until the worker is going away (`ESHUTDOWN`).
        if n < 5 {
            let _ = worker.queue_delayed(&work, Delta::from_millis(20));
        }
    }
}

struct RustKthread {
    // Dropped in this order: the poller, the per-CPU set, then the worker (which runs what is
    // queued, cancels the pending delayed work, and stops its thread).
    poller: Option<Thread<u64>>,
    _percpu: PerCpuThreads<u64>,
    worker: Worker,
    work: Arc<Work<Events>>,
    tick: Arc<DelayedWork<Events>>,
}

impl kernel::Module for RustKthread {
    fn init(module: &'static ThisModule) -> Result<Self> {
        pr_info!("Rust kthread sample (init)\n");

        // A polling thread: wake every 10 ms until stopped, return how often it polled.
        let poller = thread::spawn(module, fmt!("rust_kthread/poll"), |ctx| {
            let mut polls = 0u64;
            while ctx.sleep(Delta::from_millis(10)) != Wake::Stop {
                polls += 1;
            }
            polls
        })?;

        // One thread per online CPU, bound to it, parked while its CPU goes offline.
        let percpu = PerCpuThreads::new(
            module,
            c"rust_kthread/cpu",
            |_cpu: CpuId| 0u64,
            |n: &mut u64, ctx: &Context<'_>| {
                *n += 1;
                if ctx.sleep(Delta::from_millis(50)) == Wake::Stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;

        // A kthread_worker: a plain work item, and a delayed one that requeues itself.
        let worker = Worker::create(module, fmt!("rust_kthread/worker"))?;
        let work = Work::new(Events(Atomic::new(0)))?;
        worker.queue(work.clone()).map_err(|(e, _)| e)?;
        worker.flush(&work)?;
        let tick = new_kthread_delayed_work!(Events(Atomic::new(0)))?;
        worker.queue_delayed(&tick, Delta::from_millis(20))?;

        // Task work: a callback that the loading process runs before it returns to user space
        // (built in: init, once it runs user space). A kernel thread would be refused (`EINVAL`).
        let task = kernel::current!();
        match task_work::add(module, &task, Notify::Resume, || {
            pr_info!("Rust kthread sample: task work ran in the loading process\n");
        }) {
            Ok(()) => {}
            Err((e, _callback)) => pr_info!("Rust kthread sample: no task work ({e:?})\n"),
        }

        Ok(RustKthread {
            poller: Some(poller),
            _percpu: percpu,
            worker,
            work,
            tick,
        })
    }
}

impl Drop for RustKthread {
    fn drop(&mut self) {
        if let Some(Ok(exit)) = self.poller.take().map(Thread::stop) {
            pr_info!("Rust kthread sample: polled {:?} times\n", exit.returned());
        }
        // The periodic work may be pending: take it back before reading its count.
        let _ = self.worker.cancel_delayed_sync(&self.tick);
        pr_info!(
            "Rust kthread sample (exit): {} work runs, {} ticks\n",
            self.work.0.load(ordering::Relaxed),
            self.tick.0.load(ordering::Relaxed)
        );
    }
}
