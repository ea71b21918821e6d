// SPDX-License-Identifier: GPL-2.0

//! Adversarial review of the `module` argument and of `Service::stop`'s wait for a pending wake.
//!
//! The KUnit cases are regression tests that pass: each asserts what would fail if the hole it
//! probes were open. Two attacks hang the module for good and cannot run as KUnit cases; they
//! run from `init` only when asked for with the `attack` parameter (never by `guest-check.sh`):
//!
//! - `attack=6`: a service whose step stops a thread that stops the service after waking it.
//!   `Service::stop` polls the pending flag before `Thread::stop`, so the wait cycle (H24) is
//!   never seen and both threads wait for each other forever.
//! - `attack=7`: threads that each own a service handle and, when stopped, wake and stop their
//!   service; the thread handles are forgotten (H21). At `rmmod` the reaper may stop a service
//!   before the thread owning its handle; the thread's wake then sets a flag that no thread will
//!   ever clear, and its `Service::stop` polls forever: `rmmod` never returns.

use kernel::prelude::*;

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

module! {
    type: ReviewTest,
    name: "kthread_rs_review_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: adversarial review of the module argument and Service::stop",
    license: "GPL",
    params: {
        attack: u32 {
            default: 0,
            description: "0: KUnit cases only; 6: service wait cycle; 7: reaped service stopped",
        },
    },
}

struct ReviewTest;

impl kernel::Module for ReviewTest {
    fn init(module: &'static ThisModule) -> Result<Self> {
        match kthread_rs::compat::param::<u32>(module_parameters::attack.value()) {
            6 => {
                let o = attacks::cycle(module, true, 3000)?;
                pr_err!(
                    "review attack 6: outcomes step={} thread={} (0: still waiting)\n",
                    o[0],
                    o[1]
                );
            }
            7 => attacks::reaped_service(module)?,
            _ => {}
        }
        Ok(ReviewTest)
    }
}

/// Counts its drops.
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
    // SAFETY: `this_module()` is this module, loaded while its code runs.
    unsafe { kernel::bindings::module_refcount(kthread_rs::compat::this_module().as_ptr()) }
}

/// 1: `Ok`, 2: `EDEADLK`, 3: another error.
fn code<T>(r: Result<T>) -> i32 {
    match r {
        Ok(_) => 1,
        Err(e) if e.to_errno() == -(kernel::bindings::EDEADLK as i32) => 2,
        Err(_) => 3,
    }
}

mod attacks {
    use super::code;
    use crate::common::ms;
    use crate::kthread_rs::{
        service::{self, Service},
        thread::{self, Thread, Wake},
    };
    use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering::SeqCst};
    use kernel::{
        new_mutex,
        prelude::*,
        sync::{Arc, Mutex},
        time::{delay::fsleep, Delta},
    };

    type Slot<T> = Arc<Mutex<Option<T>>>;

    fn slot<T>() -> Result<Slot<T>> {
        Arc::pin_init(new_mutex!(None), GFP_KERNEL)
    }

    /// A service `S` whose step stops thread `T`, while `T` stops `S` (after waking it, if
    /// `wake`): a wait cycle. Returns the outcomes (`code`) of the step's `T.stop()` and of
    /// `T`'s `S.stop()`, 0 for one still waiting after `wait_ms`.
    pub(crate) fn cycle(module: &'static ThisModule, wake: bool, wait_ms: u32) -> Result<[i32; 2]> {
        let sslot = slot::<Service<u32>>()?;
        let tslot = slot::<Thread<u32>>()?;
        let outs = Arc::new([AtomicI32::new(0), AtomicI32::new(0)], GFP_KERNEL)?;
        let stepping = Arc::new(AtomicUsize::new(0), GFP_KERNEL)?;
        let (ss, st, o) = (sslot.clone(), stepping.clone(), outs.clone());
        let t = thread::spawn(module, fmt!("krs-rv-ct"), move |ctx| {
            let s = loop {
                if st.load(SeqCst) == 1 {
                    let s = ss.lock().take();
                    if let Some(s) = s {
                        break s;
                    }
                }
                ctx.sleep(ms(1));
            };
            // Let the step get into its `T.stop()` (this body does not look at the stop).
            fsleep(ms(20));
            if wake {
                s.wake();
            }
            o[1].store(code(s.stop()), SeqCst);
            0u32
        })?;
        *tslot.lock() = Some(t);
        let (ts, st, o) = (tslot.clone(), stepping.clone(), outs.clone());
        let svc = service::spawn_service(module, fmt!("krs-rv-cs"), 0u32, move |n| {
            *n += 1;
            let t = ts.lock().take();
            if let Some(t) = t {
                st.store(1, SeqCst);
                o[0].store(code(t.stop()), SeqCst);
            }
            *n
        })?;
        svc.wake();
        *sslot.lock() = Some(svc);
        for _ in 0..wait_ms {
            if outs[0].load(SeqCst) != 0 && outs[1].load(SeqCst) != 0 {
                break;
            }
            fsleep(ms(1));
        }
        Ok([outs[0].load(SeqCst), outs[1].load(SeqCst)])
    }

    /// Threads owning a service each, which wake and stop it when stopped; their handles are
    /// forgotten, so `rmmod`'s reaper stops both the services and the threads, in the order of
    /// its buckets.
    pub(crate) fn reaped_service(module: &'static ThisModule) -> Result {
        for i in 0..16u32 {
            let svc = service::spawn_service(module, fmt!("krs-rv-rs/{i}"), 0u32, |n| {
                *n += 1;
                *n
            })?;
            let x = thread::spawn(module, fmt!("krs-rv-rx/{i}"), move |ctx| {
                while ctx.sleep(Delta::from_secs(3600)) != Wake::Stop {}
                pr_info!("review attack 7: thread {i} stops its service\n");
                svc.wake();
                let r = svc.stop();
                pr_info!(
                    "review attack 7: thread {i} stopped its service: {}\n",
                    code(r)
                );
                0u32
            })?;
            core::mem::forget(x);
        }
        Ok(())
    }
}

#[kunit_tests(kthread_rs_review)]
mod tests {
    use super::kthread_rs::{
        service::{self, Service},
        thread,
    };
    use super::{attacks, code, counter, refcount, DropCount};
    use crate::common::{eventually, ms};
    use crate::kthread_rs::compat::this_module;
    use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering::SeqCst};
    use kernel::{
        impl_has_hr_timer, new_mutex,
        prelude::*,
        sync::{Arc, Mutex},
        time::{
            delay::fsleep,
            hrtimer::{
                HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer, HrTimerRestart,
                RelativeMode,
            },
            Delta, Monotonic,
        },
    };

    type Slot<T> = Arc<Mutex<Option<T>>>;

    fn slot<T>() -> Result<Slot<T>> {
        Arc::pin_init(new_mutex!(None), GFP_KERNEL)
    }

    /// A step that stops its own service: `EDEADLK` at once (no poll of its own pending flag,
    /// which only this thread clears), the thread is orphaned, ends and frees its state.
    #[test]
    fn service_stop_in_own_step_is_edeadlk() -> Result {
        let base = refcount();
        let state = counter()?;
        let seen = Arc::new(AtomicI32::new(0), GFP_KERNEL)?;
        let slot = slot::<Service<u32>>()?;
        let (sl, s) = (slot.clone(), seen.clone());
        let mut mine = Some(DropCount(state.clone()));
        let svc = service::spawn_service(this_module(), fmt!("krs-rv-self"), 0u32, move |n| {
            let _state = mine.take();
            let me = sl.lock().take();
            if let Some(me) = me {
                s.store(code(me.stop()), SeqCst);
            }
            *n += 1;
            *n
        })?;
        svc.wake();
        *slot.lock() = Some(svc);
        assert!(eventually(|| {
            if let Some(s) = &*slot.lock() {
                s.wake();
            }
            slot.lock().is_none()
        }));
        assert!(eventually(|| seen.load(SeqCst) != 0));
        assert_eq!(seen.load(SeqCst), 2);
        assert!(eventually(|| state.load(SeqCst) == 1));
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// A wake right after the spawn, then `stop`: the thread may not have run yet (H2), but
    /// the wake still gets its step, every time.
    #[test]
    fn service_stop_right_after_wake_runs_the_step() -> Result {
        let mut ok = 0;
        for i in 0..20u32 {
            let svc = service::spawn_service(this_module(), fmt!("krs-rv-w/{i}"), 0u32, |n| {
                *n += 1;
                *n
            })?;
            svc.wake();
            if svc.stop()? == Some(1) {
                ok += 1;
            }
        }
        assert_eq!(ok, 20);
        Ok(())
    }

    /// A wake that arrives during a step: `stop` returns the value of the step it owes.
    #[test]
    fn service_stop_waits_for_wake_during_step() -> Result {
        let entered = counter()?;
        let e = entered.clone();
        let svc = service::spawn_service(this_module(), fmt!("krs-rv-ds"), 0u32, move |n| {
            *n += 1;
            if *n == 1 {
                e.store(1, SeqCst);
                fsleep(ms(50));
            }
            *n
        })?;
        svc.wake();
        assert!(eventually(|| entered.load(SeqCst) == 1));
        svc.wake();
        assert_eq!(svc.stop()?, Some(2));
        Ok(())
    }

    /// Dropping (not stopping) a service with a wake pending does not wait for the wake, does
    /// not hang, and frees the state.
    #[test]
    fn service_drop_with_pending_wake() -> Result {
        let base = refcount();
        for i in 0..10u32 {
            let state = counter()?;
            let svc = service::spawn_service(
                this_module(),
                fmt!("krs-rv-drop/{i}"),
                DropCount(state.clone()),
                |_s| 0u32,
            )?;
            svc.wake();
            drop(svc);
            assert_eq!(state.load(SeqCst), 1);
        }
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// One service's step stops another service that has a wake pending (and may not have run
    /// yet): the other's step runs and its value comes back.
    #[test]
    fn service_stopped_from_other_service_step() -> Result {
        let inner = service::spawn_service(this_module(), fmt!("krs-rv-in"), 0u32, |n| {
            *n += 1;
            *n
        })?;
        inner.wake();
        let got = Arc::new(AtomicI32::new(0), GFP_KERNEL)?;
        let g = got.clone();
        let mut inner = Some(inner);
        let outer = service::spawn_service(this_module(), fmt!("krs-rv-out"), 0u32, move |_n| {
            if let Some(s) = inner.take() {
                let v = s.stop().ok().flatten().unwrap_or(0);
                g.store(i32::try_from(v).unwrap_or(-1), SeqCst);
            }
            0u32
        })?;
        outer.wake();
        assert!(eventually(|| got.load(SeqCst) != 0));
        assert_eq!(got.load(SeqCst), 1);
        let _ = outer.stop()?;
        Ok(())
    }

    /// A service's step stops a thread that stops the service (no wake pending): the cycle is
    /// seen, one side gets `EDEADLK`, both end, the module reference comes back. (With a wake
    /// pending the same cycle hangs for good: `attack=6`.)
    #[test]
    fn service_stop_cycle_without_pending_wake_is_edeadlk() -> Result {
        let base = refcount();
        let o = attacks::cycle(this_module(), false, 10_000)?;
        let mut o = [o[0], o[1]];
        o.sort_unstable();
        assert_eq!(o, [1, 2]);
        assert!(eventually(|| refcount() == base));
        Ok(())
    }

    /// Wakes from an hrtimer callback (hard interrupt context): no sleeping call, every wake
    /// gets a step.
    #[pin_data]
    struct Waker {
        #[pin]
        timer: HrTimer<Self>,
        svc: Arc<Service<u32>>,
        fired: Arc<AtomicUsize>,
    }

    impl HrTimerCallback for Waker {
        type Pointer<'a> = Pin<KBox<Self>>;

        fn run(this: Pin<&mut Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
            this.svc.wake();
            if this.fired.fetch_add(1, SeqCst) >= 4 {
                HrTimerRestart::NoRestart
            } else {
                HrTimerRestart::Restart
            }
        }
    }

    impl_has_hr_timer! {
        impl HasHrTimer<Self> for Waker {
            mode: RelativeMode<Monotonic>, field: self.timer
        }
    }

    #[test]
    fn service_wake_from_hardirq() -> Result {
        let steps = counter()?;
        let s = steps.clone();
        let svc = Arc::new(
            service::spawn_service(this_module(), fmt!("krs-rv-irq"), 0u32, move |n| {
                s.fetch_add(1, SeqCst);
                *n += 1;
                *n
            })?,
            GFP_KERNEL,
        )?;
        let fired = Arc::new(AtomicUsize::new(0), GFP_KERNEL)?;
        let (sv, fi) = (svc.clone(), fired.clone());
        let w = KBox::pin_init(
            pin_init!(Waker {
                timer <- HrTimer::new(),
                svc: sv,
                fired: fi,
            }),
            GFP_KERNEL,
        )?;
        let handle = w.start(Delta::from_millis(2));
        assert!(eventually(|| fired.load(SeqCst) == 5));
        drop(handle);
        assert!(eventually(|| steps.load(SeqCst) >= 1));
        // The timer's box (and its clone of the handle) is gone: this is the last handle.
        let svc = Arc::into_unique_or_drop(svc).ok_or(EINVAL);
        assert!(svc.is_ok());
        drop(svc);
        Ok(())
    }

    /// `spawn_with_init` of two result types, one inside the other's init (the result mutex
    /// class and its `static` name shared by every instance): both report, no lockdep splat.
    #[test]
    fn spawn_with_init_nested_instances() -> Result {
        let t = service::spawn_with_init(
            this_module(),
            fmt!("krs-rv-io"),
            |_ctx| {
                let inner = service::spawn_with_init(
                    this_module(),
                    fmt!("krs-rv-ii"),
                    |_ctx| Ok(7u8),
                    |v, _ctx| u64::from(v) * 2,
                )?;
                inner.stop()
            },
            |v, _ctx| i32::try_from(v).unwrap_or(-1),
        )?;
        assert_eq!(t.stop()?, 14);
        let failed = service::spawn_with_init(
            this_module(),
            fmt!("krs-rv-if"),
            |_ctx| -> Result<u8> { Err(ENODEV) },
            |v, _ctx| v,
        );
        assert!(matches!(failed, Err(e) if e == ENODEV));
        Ok(())
    }

    /// `thread::spawn` with this module: while a thread runs, its module is pinned only by
    /// its owner; a detached one holds a reference (the module argument reaches the registry
    /// and the module reference).
    #[test]
    fn detached_thread_pins_given_module() -> Result {
        let base = refcount();
        let go = counter()?;
        let g = go.clone();
        thread::spawn_detached(this_module(), fmt!("krs-rv-det"), move |ctx| {
            while g.load(SeqCst) == 0 {
                ctx.sleep(ms(1));
            }
        })?;
        assert_eq!(refcount(), base + 1);
        go.store(1, SeqCst);
        assert!(eventually(|| refcount() == base));
        Ok(())
    }
}
