// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the kernel crate's form (`kernel::kthread`), run by `kunit.py` with the
//! doctests.
//!
//! Only the kernel crate builds this file (`#[cfg(not(MODULE))]` in [`super`]). The out-of-tree
//! suites (rust/tests/ of kthread-rs) cover the same API as modules, with what a built-in suite
//! cannot do: user processes, CPU hotplug, freezing, and unloading a module.

use super::{
    service,
    thread::{self, Exit, Wake},
    worker::{DelayedWork, DelayedWorkItem, Work, WorkItem, Worker, WorkerRef},
};
use crate::{
    prelude::*,
    sync::{
        atomic::{ordering, Atomic},
        Arc,
    },
    time::Delta,
    ThisModule,
};

// SAFETY: The kernel crate is built in, and `THIS_MODULE` of built-in code is null.
static BUILT_IN: ThisModule = unsafe { ThisModule::from_ptr(core::ptr::null_mut()) };

struct Count(Atomic<u32>);

impl WorkItem for Count {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        work.0.add(1, ordering::Relaxed);
    }
}

impl DelayedWorkItem for Count {
    fn run(work: Arc<DelayedWork<Self>>, _worker: &WorkerRef<'_>) {
        work.0.add(1, ordering::Relaxed);
    }
}

#[kunit_tests(rust_kernel_kthread)]
mod cases {
    use super::*;

    #[test]
    fn spawn_returns_the_body_value() -> Result {
        let t = thread::spawn(&BUILT_IN, fmt!("kthread-test"), |_ctx| 42u32)?;
        assert!(matches!(t.join()?, Exit::Returned(42)));
        Ok(())
    }

    #[test]
    fn stop_ends_a_sleeping_thread() -> Result {
        let t = thread::spawn(&BUILT_IN, fmt!("kthread-test"), |ctx| {
            let mut naps = 0u32;
            while ctx.sleep(Delta::from_millis(1)) != Wake::Stop {
                naps += 1;
            }
            naps
        })?;
        assert!(t.stop().is_ok());
        Ok(())
    }

    #[test]
    fn dropping_an_unstarted_thread_never_runs_it() -> Result {
        let ran = Arc::new(Atomic::new(false), GFP_KERNEL)?;
        let theirs = ran.clone();
        let new = thread::create(&BUILT_IN, fmt!("kthread-test"), move |_ctx| {
            theirs.store(true, ordering::Relaxed)
        })?;
        drop(new);
        assert!(!ran.load(ordering::Relaxed));
        Ok(())
    }

    #[test]
    fn scoped_threads_borrow_the_stack() -> Result {
        let mut data = [1u32, 2, 3, 4];
        let sum = Atomic::new(0u32);
        thread::scope(&BUILT_IN, |s| -> Result {
            let (a, b) = data.split_at_mut(2);
            let (sum1, sum2) = (&sum, &sum);
            let t1 = s.spawn(fmt!("kthread-scope"), move |_ctx| {
                a.iter_mut().for_each(|x| *x *= 10);
                sum1.add(a.iter().sum::<u32>(), ordering::Relaxed);
            })?;
            let t2 = s.spawn(fmt!("kthread-scope"), move |_ctx| {
                sum2.add(b.iter().sum::<u32>(), ordering::Relaxed);
            })?;
            // Joined, not stopped: each body runs to its end.
            assert!(matches!(t1.join(), Exit::Returned(())));
            assert!(matches!(t2.join(), Exit::Returned(())));
            Ok(())
        })?;
        assert_eq!(data, [10, 20, 3, 4]);
        assert_eq!(sum.load(ordering::Relaxed), 37);
        Ok(())
    }

    /// Wait (up to a second) until `cond` holds.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if cond() {
                return true;
            }
            crate::time::delay::fsleep(Delta::from_millis(1));
        }
        cond()
    }

    #[test]
    fn park_and_unpark() -> Result {
        let steps = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let theirs = steps.clone();
        let mut t = thread::spawn_parkable(&BUILT_IN, fmt!("kthread-park"), (), move |(), ctx| {
            theirs.add(1, ordering::Relaxed);
            ctx.sleep(Delta::from_millis(1));
            core::ops::ControlFlow::Continue(())
        })?;
        assert!(eventually(|| steps.load(ordering::Relaxed) >= 1));
        t.park()?;
        assert!(t.is_parked());
        // Parked: no step runs.
        let parked_at = steps.load(ordering::Relaxed);
        crate::time::delay::fsleep(Delta::from_millis(20));
        assert_eq!(steps.load(ordering::Relaxed), parked_at);
        t.unpark();
        assert!(!t.is_parked());
        assert!(eventually(|| steps.load(ordering::Relaxed) > parked_at));
        assert!(t.stop().is_ok());
        Ok(())
    }

    #[test]
    fn service_runs_once_per_wake() -> Result {
        let svc = service::spawn_service(&BUILT_IN, fmt!("kthread-svc"), 0u32, |n| {
            *n += 1;
            *n
        })?;
        // A wake made right before the stop still gets its step.
        svc.wake();
        assert_eq!(svc.stop()?, Some(1));
        Ok(())
    }

    #[test]
    fn worker_runs_queued_work_in_order() -> Result {
        let worker = Worker::create(&BUILT_IN, fmt!("kthread-worker"))?;
        let work = Work::new(Count(Atomic::new(0)))?;
        for _ in 0..3 {
            worker.queue(work.clone()).map_err(|(e, _)| e)?;
            worker.flush(&work)?;
        }
        assert_eq!(work.0.load(ordering::Relaxed), 3);
        Ok(())
    }

    #[test]
    fn cancel_takes_back_a_pending_delayed_work() -> Result {
        let worker = Worker::create(&BUILT_IN, fmt!("kthread-worker"))?;
        let work = crate::new_kthread_delayed_work!(Count(Atomic::new(0)))?;
        worker.queue_delayed(&work, Delta::from_secs(60))?;
        assert!(worker.cancel_delayed_sync(&work)?);
        assert_eq!(work.0.load(ordering::Relaxed), 0);
        Ok(())
    }

    #[test]
    fn task_work_refuses_kernel_threads() {
        // The KUnit case runs on a kernel thread, which never returns to user space.
        let task = crate::current!();
        let r = super::super::task_work::add(
            &BUILT_IN,
            task,
            super::super::task_work::Notify::Resume,
            || {},
        );
        assert!(r.is_err());
    }
}
