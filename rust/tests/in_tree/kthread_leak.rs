// SPDX-License-Identifier: GPL-2.0

//! H21 in the kernel tree: a module that leaks (`mem::forget`) a running thread, a worker with
//! queued delayed work and a per-CPU set, then is unloaded. The kernel crate's module notifier
//! must end all three at `MODULE_STATE_GOING`, before the module's text is freed.
//!
//! Built only against a kernel tree with the series applied (`kernel::kthread`), by
//! scripts/in-tree-reaper.sh, which loads and unloads it in that kernel.

use core::ops::ControlFlow;
use kernel::{
    cpu::CpuId,
    kthread::{
        thread::{self, Context, PerCpuThreads, Wake},
        worker::{DelayedWork, DelayedWorkItem, Worker, WorkerRef},
    },
    new_kthread_delayed_work,
    prelude::*,
    sync::Arc,
    time::Delta,
};

module! {
    type: KthreadLeak,
    name: "kthread_leak",
    authors: ["kthread-rs developers"],
    description: "Leaks kthreads on purpose: the kernel crate must reap them at unload",
    license: "GPL",
}

struct Tick;

impl DelayedWorkItem for Tick {
    fn run(work: Arc<DelayedWork<Self>>, worker: &WorkerRef<'_>) {
        // Module text that runs every 10 ms for as long as the worker lives.
        let _ = worker.queue_delayed(&work, Delta::from_millis(10));
    }
}

struct KthreadLeak;

impl kernel::Module for KthreadLeak {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let t = thread::spawn(module, fmt!("kthread_leak"), |ctx| {
            // Module text, in a loop, until stopped.
            while ctx.sleep(Delta::from_millis(10)) != Wake::Stop {}
        })?;
        core::mem::forget(t);

        let worker = Worker::create(module, fmt!("kthread_leak_worker"))?;
        let tick = new_kthread_delayed_work!(Tick)?;
        worker.queue_delayed(&tick, Delta::from_millis(10))?;
        core::mem::forget(worker);

        let set = PerCpuThreads::new(
            module,
            c"kthread_leak_cpu",
            |_cpu: CpuId| (),
            |_: &mut (), ctx: &Context<'_>| {
                ctx.sleep(Delta::from_millis(10));
                ControlFlow::Continue(())
            },
        )?;
        core::mem::forget(set);

        pr_info!("kthread_leak: leaked a thread, a worker and a per-CPU set\n");
        Ok(KthreadLeak)
    }
}
