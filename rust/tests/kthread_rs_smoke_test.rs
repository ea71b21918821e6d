// SPDX-License-Identifier: GPL-2.0

//! The foundation's proof: KUnit cases that drive the raw C kthread functions directly.
//!
//! These cases do not use the safe API of `rust/kthread_rs/thread.rs`; they show that the whole
//! chain (toolchain, test kernel, out-of-tree Rust module, virtme-ng, KUnit) reaches the real
//! `kthread_create_on_node()`, `wake_up_process()` and `kthread_stop()` of kernel/kthread.c,
//! and what those C functions return, which the safe API is built to handle.

use kernel::prelude::*;

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;

module! {
    type: SmokeTest,
    name: "kthread_rs_smoke_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: KUnit smoke test of the raw C kthread API",
    license: "GPL",
}

struct SmokeTest;

impl kernel::Module for SmokeTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(SmokeTest)
    }
}

#[kunit_tests(kthread_rs_smoke)]
mod tests {
    use kernel::{
        bindings,
        error::from_err_ptr,
        prelude::*,
        sync::{Arc, Completion},
    };

    /// What the raw thread function sees: a completion to report through and a value.
    #[pin_data]
    struct Report {
        #[pin]
        started: Completion,
        value: core::sync::atomic::AtomicI32,
    }

    /// The C thread function: record that it ran, report, then wait to be stopped and return
    /// 42, the value `kthread_stop()` hands back.
    ///
    /// # Safety
    ///
    /// `data` points to a `Report` that outlives the thread.
    unsafe extern "C" fn threadfn(data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Report` of the test, which stops this thread before it drops
        // the `Arc`.
        let report = unsafe { &*data.cast::<Report>() };
        report.value.store(7, core::sync::atomic::Ordering::Relaxed);
        report.started.complete_all();
        // SAFETY: `current` is a kthread made by `kthread_create_on_node()`.
        while !unsafe { bindings::kthread_should_stop() } {
            // SAFETY: Sleeping 1 ms is allowed in a kthread.
            unsafe { bindings::msleep(1) };
        }
        42
    }

    fn new_report() -> Result<Arc<Report>> {
        Arc::pin_init(
            pin_init!(Report {
                started <- Completion::new(),
                value: core::sync::atomic::AtomicI32::new(0),
            }),
            GFP_KERNEL,
        )
    }

    fn create(report: &Arc<Report>) -> Result<*mut bindings::task_struct> {
        let data = Arc::as_ptr(report).cast_mut().cast::<c_void>();
        // SAFETY: `threadfn` accepts `data`, which outlives the thread (each case stops it
        // before dropping `report`). The name is a plain format without conversions.
        let raw = unsafe {
            bindings::kthread_create_on_node(
                Some(threadfn),
                data,
                bindings::NUMA_NO_NODE,
                c"krs-smoke".as_char_ptr(),
            )
        };
        from_err_ptr(raw)
    }

    /// Create, wake, hear back through a completion, stop: `kthread_stop()` returns the value
    /// that the thread function returned.
    #[test]
    fn create_wake_report_stop() -> Result {
        let report = new_report()?;
        let task = create(&report)?;
        // SAFETY: `task` is the live kthread made above, not yet woken.
        unsafe { bindings::wake_up_process(task) };
        report.started.wait_for_completion();
        assert_eq!(report.value.load(core::sync::atomic::Ordering::Relaxed), 7);
        // SAFETY: `task` runs `threadfn`, which only returns once asked to stop, so the task
        // is alive until `kthread_stop()` has reaped it.
        let ret = unsafe { bindings::kthread_stop(task) };
        assert_eq!(ret, 42);
        Ok(())
    }

    /// A thread that is stopped without ever being woken never runs its function:
    /// `kthread_stop()` returns -EINTR (hazard H2, seen here on the real C code).
    #[test]
    fn stop_before_wake_is_eintr() -> Result {
        let report = new_report()?;
        let task = create(&report)?;
        // SAFETY: `task` is a live kthread made above; never woken, it stays alive until
        // `kthread_stop()` reaps it.
        let ret = unsafe { bindings::kthread_stop(task) };
        assert_eq!(ret, -(bindings::EINTR as c_int));
        assert_eq!(report.value.load(core::sync::atomic::Ordering::Relaxed), 0);
        Ok(())
    }

    /// The kthread's comm is the name passed at creation.
    #[test]
    fn name_is_comm() -> Result {
        let report = new_report()?;
        let task = create(&report)?;
        // SAFETY: `task` is alive (not woken, not stopped yet), and its comm was set at
        // creation; nothing renames it concurrently.
        let comm = unsafe { (*task).comm };
        for (i, &want) in b"krs-smoke\0".iter().enumerate() {
            assert_eq!(comm[i] as u8, want);
        }
        // SAFETY: As in `stop_before_wake_is_eintr`.
        unsafe { bindings::kthread_stop(task) };
        Ok(())
    }
}
