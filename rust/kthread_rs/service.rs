// SPDX-License-Identifier: GPL-2.0

//! Two thread forms from the first kthread design (Rusty Russell's 2003 kthread primitives)
//! that the C API later dropped, built on [`thread`].
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)
//!
//! - [`spawn_with_init`]: the body has an init part and a main part, and the start returns only
//!   after init has run in the new thread, with init's result. A failed init ends the thread and
//!   its error goes to the starter. A thread whose start returned `Ok` has run its body: the
//!   window in which a woken thread can still be stopped before its body runs (H2) is closed,
//!   so its handle's `stop` returns the main part's value, not an [`Exit`].
//! - [`spawn_service`]: a thread that runs one step each time its handle's
//!   [`Service::wake`] is called. Wakes that arrive while a step runs are coalesced into one more
//!   step; no wake is lost, not even at stop. [`Service::stop`] waits for the steps still owed
//!   and returns the value of the last one.
//!
//! # Examples
//!
//! ```ignore
//! use kthread_rs::service;
//!
//! # let module = kthread_rs::compat::this_module();
//! // Init (allocate, probe) in the thread itself; the starter learns whether it worked.
//! let t = service::spawn_with_init(
//!     module,
//!     fmt!("mydrv-init"),
//!     |_ctx| KVec::<u8>::with_capacity(4096, GFP_KERNEL).map_err(|_| ENOMEM),
//!     |buf, _ctx| buf.capacity(),
//! )?;
//! let capacity = t.stop()?;
//!
//! // A service: one step per wake, coalesced while a step runs.
//! let svc = service::spawn_service(module, fmt!("mydrv-svc"), 0u32, |n| {
//!     *n += 1;
//!     *n
//! })?;
//! svc.wake();
//! let _last: Option<u32> = svc.stop()?;
//! # Ok::<(), Error>(())
//! ```

use super::thread::{self, Context, Exit, Thread, Wake};
use kernel::{
    fmt,
    prelude::*,
    sync::{
        atomic::{ordering, Atomic},
        Arc, Completion, Mutex,
    },
};

/// What the new thread tells its starter: init's result, once.
#[pin_data]
struct InitReport {
    #[pin]
    done: Completion,
    #[pin]
    result: Mutex<Option<Result>>,
}

impl InitReport {
    /// Report `r`, unless something was reported already.
    fn report(&self, r: Result) {
        let mut result = self.result.lock();
        if !self.reported(&result) {
            *result = Some(r);
        }
        drop(result);
        self.done.complete_all();
    }

    fn reported(&self, result: &Option<Result>) -> bool {
        result.is_some()
    }
}

/// Owned by the new thread's body: reports `EINTR` if the body goes without reporting, as when
/// the module's unload stopped the thread before it ran (the reaper then drops the body, H2).
struct ReportOnDrop(Arc<InitReport>);

impl Drop for ReportOnDrop {
    fn drop(&mut self) {
        self.0.report(Err(EINTR));
    }
}

/// A thread started by [`spawn_with_init`], whose init succeeded: its main part has run or runs.
pub struct InitThread<T> {
    thread: Thread<Option<T>>,
}

/// Create a thread that runs `init` and then, if it succeeded, `main` with its value; return
/// once `init` has run, with its error if it failed (the thread has then ended and been reaped).
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`). `init`'s value stays in
/// the new thread: it need not be `Send`. The starter waits for `init` uninterruptibly, as a C
/// driver's `wait_for_completion()` after `kthread_run()` would.
///
/// # Context
///
/// May sleep (it waits for `init`).
pub fn spawn_with_init<S, T, I, M>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    init: I,
    main: M,
) -> Result<InitThread<T>>
where
    I: FnOnce(&Context<'_>) -> Result<S> + Send + 'static,
    M: FnOnce(S, &Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    kernel::task::might_sleep();
    let report = Arc::pin_init(
        pin_init!(InitReport {
            done <- Completion::new(),
            result <- Mutex::new(None, RESULT_NAME, kernel::static_lock_class!()),
        }),
        GFP_KERNEL,
    )?;
    let theirs = ReportOnDrop(report.clone());
    let thread = thread::spawn(module, name, move |ctx| match init(ctx) {
        Ok(state) => {
            theirs.0.report(Ok(()));
            Some(main(state, ctx))
        }
        Err(e) => {
            theirs.0.report(Err(e));
            None
        }
    })?;
    // The body reports once `init` has run; if the module's unload stops the thread before it
    // ran (only the reaper can: `thread` is here), its drop reports `EINTR`.
    report.done.wait_for_completion();
    let r = report.result.lock().take().unwrap_or(Err(EINVAL));
    match r {
        Ok(()) => Ok(InitThread { thread }),
        Err(e) => {
            // The body returns right after a failed init.
            let _ = thread.join()?;
            Err(e)
        }
    }
}

impl<T> InitThread<T> {
    /// Ask the thread to stop, wait for it, and return what `main` returned.
    ///
    /// `EDEADLK` when called on the thread itself.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn stop(self) -> Result<T> {
        kernel::task::might_sleep();
        Self::value(self.thread.stop()?)
    }

    /// Wait until `main` returns by itself, and return its value.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn join(self) -> Result<T> {
        kernel::task::might_sleep();
        Self::value(self.thread.join()?)
    }

    fn value(exit: Exit<Option<T>>) -> Result<T> {
        match exit {
            Exit::Returned(Some(v)) => Ok(v),
            // Not reachable: init succeeded, so the body ran and returned `main`'s value.
            Exit::Returned(None) | Exit::NeverRan => Err(EINVAL),
        }
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn wake_up(&self) {
        self.thread.wake_up()
    }
}

// Lockdep tells classes apart by the address of their key and matches names by address: a
// string literal in generic or inlined code can be emitted once per crate that uses it, so the
// name of a class whose key is a `static` here is a `static` too.
/// The lock class name of the init result of [`spawn_with_init`].
static RESULT_NAME: &CStr = c"kthread_rs::service::result";

/// Completes its completion when dropped: when the service body starts, or when the body is
/// dropped without running (its thread stopped first).
struct Started(Arc<Completion>);

impl Drop for Started {
    fn drop(&mut self) {
        self.0.complete_all();
    }
}

/// A wake-driven service thread; see [`spawn_service`].
pub struct Service<T> {
    thread: Thread<Option<T>>,
    pending: Arc<Atomic<bool>>,
}

/// Start a thread that calls `step(&mut state)` once for every [`Service::wake`] (wakes that
/// arrive during a step are coalesced into one more step), until [`Service::stop`].
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`).
///
/// # Context
///
/// May sleep.
pub fn spawn_service<S, T, F>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    mut state: S,
    mut step: F,
) -> Result<Service<T>>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnMut(&mut S) -> T + Send + 'static,
{
    kernel::task::might_sleep();
    let pending = Arc::new(Atomic::new(false), GFP_KERNEL)?;
    let theirs = pending.clone();
    let started = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
    let guard = Started(started.clone());
    let thread = thread::spawn(module, name, move |ctx| {
        drop(guard);
        let mut last = None;
        // The flag is taken before the step: a wake during the step sets it again, and the
        // next `wait_until` sees it at once.
        while ctx.wait_until(|| theirs.xchg(false, ordering::Full), None) == Wake::Condition {
            last = Some(step(&mut state));
        }
        // Stopped: a wake made before the stop still gets its step.
        if theirs.xchg(false, ordering::Full) {
            last = Some(step(&mut state));
        }
        last
    })?;
    // Once the body runs, every wake gets a step (the body takes a pending one after its
    // stop). A thread stopped before its body ran would drop a wake with the body (H2): wait
    // until the body has started, or has been dropped unrun. That depends on no other thread,
    // so it cannot close a wait cycle.
    started.wait_for_completion();
    Ok(Service { thread, pending })
}

impl<T> Service<T> {
    /// Ask for one more step.
    ///
    /// # Context
    ///
    /// Any context (it never sleeps).
    pub fn wake(&self) {
        self.pending.store(true, ordering::Release);
        self.thread.wake_up();
    }

    /// Stop the thread and return the last step's value (`None` if no step ran). A step that
    /// runs, and the step of a wake made before this call, finish first: no wake is lost. (Only
    /// this handle wakes the thread, and `stop` takes it by value, so no wake comes after.)
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn stop(self) -> Result<Option<T>> {
        kernel::task::might_sleep();
        Ok(self.thread.stop()?.returned().flatten())
    }
}
