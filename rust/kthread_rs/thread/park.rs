// SPDX-License-Identifier: GPL-2.0

//! Parkable threads: a step loop that parks between steps (`kthread_park()`,
//! `kthread_unpark()`, `kthread_parkme()`).
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::{
    begin_wait, new_thread, sys, to_result, Body, BodyId, Context, Exit, NewThread, Parkable,
    Place, Thread, NUMA_NO_NODE,
};
use core::ops::{ControlFlow, Deref};
use kernel::{bindings, cpu::CpuId, fmt, prelude::*, task::Task};

struct Steps<S, F>(S, F);

impl<S, F> Body for Steps<S, F>
where
    S: Send,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send,
{
    type Output = S;
    const PARKABLE: bool = true;
    fn run(self, ctx: &Context<'_>) -> S {
        let Steps(mut state, mut step) = self;
        while !ctx.should_stop() {
            if ctx.should_park() {
                ctx.parkme();
            } else if step(&mut state, ctx).is_break() {
                break;
            }
        }
        state
    }
}

/// An owned, running kthread whose body is a step loop, and that can be parked.
///
/// Parking is offered only for this kind of thread because only a step loop is sure to honour
/// it: [`ParkableThread::park`] waits for the thread to reach `kthread_parkme()`, forever if it
/// never does (H4). The loop parks between steps; [`Context::wait_until`] returns
/// [`Wake::Park`](super::Wake::Park) so that a sleeping step ends promptly. After the loop
/// ends (a step returned [`ControlFlow::Break`]) the thread idles, still parkable, until
/// stopped.
#[must_use = "dropping a ParkableThread stops it at once"]
pub struct ParkableThread<S> {
    pub(super) thread: Thread<S>,
    pub(super) parked: bool,
}

impl<S> ParkableThread<S> {
    /// Park the thread and wait until it is parked (the C `kthread_park()`).
    ///
    /// - `EBUSY` if it is parked already, where the C function would WARN (H4);
    /// - `EDEADLK` if called by the thread itself, which C would take as a request that it
    ///   never honours, or while the thread waits (to stop, join or park) for the caller (H24);
    /// - `ESRCH` if the module's unload stopped the thread already (H21): C would WARN on a
    ///   thread that exits.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn park(&mut self) -> Result {
        kernel::task::might_sleep();
        if self.parked {
            return Err(EBUSY);
        }
        let handle = &self.thread.handle;
        if handle.is_current() {
            return Err(sys::edeadlk());
        }
        let waiting = begin_wait(handle.header())?;
        if !handle.header().begin_owner_call() {
            return Err(ESRCH);
        }
        // SAFETY: The task is a live kthread (the handle's reference) that is not exiting: a
        // parkable thread runs until it is stopped, stopping takes `self` by value, and the
        // reaper waits for this park before it stops the thread (`begin_owner_call`).
        let r = to_result(unsafe { bindings::kthread_park(handle.task.as_ptr()) });
        handle.header().end_owner_call();
        drop(waiting);
        r?;
        self.parked = true;
        Ok(())
    }

    /// Unpark the thread (the C `kthread_unpark()`); does nothing if it is not parked.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn unpark(&mut self) {
        kernel::task::might_sleep();
        if self.parked {
            // SAFETY: The task is a live kthread (the handle's reference); unparking one that
            // has exited meanwhile (stopped by the module's unload) only clears a bit.
            unsafe { bindings::kthread_unpark(self.thread.handle.task.as_ptr()) };
            self.parked = false;
        }
    }

    /// Is the thread parked by this handle?
    ///
    /// # Context
    ///
    /// Any context.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Stop the thread (parked or not) and return its state; see [`Thread::stop`].
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn stop(self) -> Result<Exit<S>> {
        kernel::task::might_sleep();
        self.thread.stop()
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`]; see [`Thread::wake_up`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn wake_up(&self) {
        self.thread.wake_up()
    }

    /// The identity of this thread's body; see [`Thread::body_id`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn body_id(&self) -> BodyId {
        self.thread.body_id()
    }
}

impl<S> Deref for ParkableThread<S> {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.thread
    }
}
/// Create a parkable thread: it calls `step(&mut state, ctx)` in a loop until a step returns
/// [`ControlFlow::Break`] or the thread is stopped, parking between steps when asked; its
/// handle returns `state` at the end.
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`).
///
/// # Context
///
/// May sleep.
pub fn create_parkable<S, F>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<NewThread<S, Parkable>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    kernel::task::might_sleep();
    new_thread(module, Place::Node(NUMA_NO_NODE), name, Steps(state, step))
}

/// Like [`create_parkable`], bound to `cpu` (the C `kthread_create_on_cpu()`).
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`).
///
/// The binding holds while `cpu` is online. If `cpu` goes offline, the scheduler moves the
/// thread to another CPU and unbinds it (modules cannot mark threads per-CPU as the kernel's
/// own are); use [`PerCpuThreads`](super::PerCpuThreads) for threads that must follow CPU hotplug.
///
/// # Context
///
/// May sleep.
pub fn create_parkable_on_cpu<S, F>(
    module: &'static ThisModule,
    cpu: CpuId,
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<NewThread<S, Parkable>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    kernel::task::might_sleep();
    new_thread(module, Place::Cpu(cpu), name, Steps(state, step))
}

/// Create and start a parkable thread; see [`create_parkable`].
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`).
///
/// # Examples
///
/// ```ignore
/// use core::ops::ControlFlow;
/// use kthread_rs::thread::{self, Exit};
///
/// # let module = kthread_rs::compat::this_module();
/// // Poll a device every 10 ms; park it while the device is suspended.
/// let mut poller = thread::spawn_parkable(module, fmt!("mydrv-poll"), 0u64, |polls, ctx| {
///     *polls += 1;
///     ctx.sleep(kernel::time::Delta::from_millis(10));
///     ControlFlow::Continue(())
/// })?;
/// poller.park()?; // suspend: returns once the thread is parked
/// poller.unpark(); // resume
/// if let Exit::Returned(polls) = poller.stop()? {
///     pr_info!("{polls} polls\n");
/// }
/// # Ok::<(), Error>(())
/// ```
///
/// # Context
///
/// May sleep.
pub fn spawn_parkable<S, F>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<ParkableThread<S>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    kernel::task::might_sleep();
    Ok(create_parkable(module, name, state, step)?.start())
}
