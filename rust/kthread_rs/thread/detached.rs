// SPDX-License-Identifier: GPL-2.0

//! Threads that end by themselves, with no handle to stop them.
//!
//! C headers: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/module.h`](srctree/include/linux/module.h)
//!
//! An owned handle stops its thread and waits for its exit, so this module's code never runs
//! after the module is gone (H7). A thread with no handle must leave by itself, through C code
//! that does not return into the module, after telling whoever keeps the module that it is
//! done:
//!
//! - [`spawn_detached`]: the thread holds a reference on this module while it runs, and leaves
//!   through `module_put_and_kthread_exit()`. `rmmod` is refused until every detached thread
//!   has ended.
//! - [`ThreadGroup`]: the threads leave through `kthread_complete_and_exit()`, completing the
//!   group's completion, and dropping the group waits for all of them. A module that keeps a
//!   group in its data makes `rmmod` wait for the group's threads, rather than refuse.
//!
//! `kthread_exit()` is not exported to modules, and nothing here lets a body leave early: a body
//! leaves by returning, so that its destructors run. (`kthread_exit()` never returns: whatever
//! the body owns would leak, and any lock it holds would stay held.)
//!
//! Nobody can stop these threads or wake them: [`Context::should_stop`] is always false for
//! them, and their bodies sleep with [`Context::sleep`] or on their own primitives.

use super::super::sys;
use super::{with_name, Context, Control, NUMA_NO_NODE};
use core::{
    cell::Cell,
    ptr,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{
    bindings,
    error::from_err_ptr,
    fmt,
    prelude::*,
    task::{Task, MAX_SCHEDULE_TIMEOUT},
    types::Opaque,
};

/// What [`detached_main`] reads of a thread's block, whatever its body.
///
/// # Invariants
///
/// - `run` is `run::<F>` for the [`Block<F>`] whose first field this is.
/// - `group` is the [`GroupInner`] whose completion the thread completes at its exit, or null:
///   the thread holds a reference on this module, and gives it back at its exit. Only the
///   thread itself reads or writes `group` (in [`run`], and in a drop of its group that runs
///   on it).
#[repr(C)]
struct Start {
    run: unsafe fn(*mut Start) -> *const GroupInner,
    group: Cell<*const GroupInner>,
}

/// A detached thread's memory: owned by the thread, which frees it once its body returned.
#[pin_data]
#[repr(C)]
struct Block<F> {
    start: Start,
    #[pin]
    control: Control,
    body: Cell<Option<F>>,
}

/// The C `threadfn` of every detached thread: run the body, then leave without returning into
/// this module.
///
/// # Safety
///
/// `data` is the [`Start`] of a [`Block`] made by [`spawn_block`] for this thread, which now
/// owns it.
unsafe extern "C" fn detached_main(data: *mut c_void) -> c_int {
    let start = data.cast::<Start>();
    // SAFETY: By the function's safety requirement and the invariant of `Start`, `run` is
    // `run::<F>` for this thread's `Block<F>`; it runs the body and frees the block.
    let group = unsafe { ((*start).run)(start) };
    if group.is_null() {
        // SAFETY: By the invariant of `Start`, this thread holds a reference on this module,
        // and this is its one release. `__module_put_and_kthread_exit()` is kernel code that
        // never returns, so no code of this module runs after the reference is gone.
        unsafe { bindings::__module_put_and_kthread_exit(crate::THIS_MODULE.as_ptr(), 0) }
    } else {
        // SAFETY: A group is freed only after it has counted one completion for each thread it
        // spawned (the invariant of `ThreadGroup`), and this is this thread's one. The C
        // function completes, then exits without returning: the waiter may free the group and
        // unload the module as soon as the completion is seen.
        unsafe {
            bindings::kthread_complete_and_exit(Opaque::cast_into(&raw const (*group).done), 0)
        }
    }
}

/// Run the body of a `Block<F>`, free the block, and say how the thread leaves.
///
/// # Safety
///
/// `start` is the `start` of a `Block<F>` made by [`spawn_block`], owned by the current thread.
unsafe fn run<F: FnOnce(&Context<'_>) + Send + 'static>(start: *mut Start) -> *const GroupInner {
    let block = start.cast::<Block<F>>();
    {
        // SAFETY: `Block` is `repr(C)` with `start` first, so `block` is the thread's block,
        // alive until it is freed below. It is only shared: a drop of the group on this thread
        // reaches `start.group` through `kthread_data()`, which is why `group` is a `Cell`.
        let b = unsafe { &*block };
        // SAFETY: `current` is the kthread whose control block is `b.control`.
        let ctx = unsafe { Context::new(&b.control) };
        if let Some(f) = b.body.take() {
            f(&ctx);
        }
        ctx.end_leaked_guards();
    }
    // SAFETY: As above; only this thread reads `group`.
    let group = unsafe { (*block).start.group.get() };
    // SAFETY: The block came from `KBox::into_raw` in `spawn_block`, and the thread owns it;
    // nothing uses it afterwards (the body has returned).
    drop(unsafe { KBox::from_raw(block) });
    group
}

/// Create and wake a detached thread that leaves as `group` says (see [`Start`]).
fn spawn_block<F>(name: fmt::Arguments<'_>, f: F, group: *const GroupInner) -> Result
where
    F: FnOnce(&Context<'_>) + Send + 'static,
{
    // INVARIANT: `run::<F>` for this `Block<F>`; `group` as the caller says.
    let block = KBox::pin_init(
        pin_init!(Block::<F> {
            start: Start {
                run: run::<F>,
                group: Cell::new(group),
            },
            control <- Control::new(),
            body: Cell::new(Some(f)),
        }),
        GFP_KERNEL,
    )?;
    // SAFETY: The block is never moved: the thread frees it where it is.
    let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(block) });
    let task = with_name(name, |name| {
        // SAFETY: `detached_main` accepts `raw` (its `Start` is first), which the thread owns
        // once it runs. The name goes through "%s", never as the format.
        from_err_ptr(unsafe {
            bindings::kthread_create_on_node(
                Some(detached_main),
                raw.cast(),
                NUMA_NO_NODE,
                c"%s".as_char_ptr(),
                name.as_char_ptr(),
            )
        })
    });
    match task {
        Ok(task) => {
            // SAFETY: The new thread cannot exit before it is woken, so `task` is alive. From
            // here the thread owns the block; no reference to the task is kept.
            unsafe { bindings::wake_up_process(task) };
            Ok(())
        }
        Err(e) => {
            // SAFETY: There is no thread, so the block is still ours.
            drop(unsafe { KBox::from_raw(raw) });
            Err(e)
        }
    }
}

/// Start a thread named `name` that runs `f` and ends by itself: no handle, no stop.
///
/// The thread holds a reference on this module until its exit, which gives it back with the C
/// `module_put_and_kthread_exit()`, so `rmmod` is refused while it runs. Use it for work that
/// finishes on its own (a one-shot probe, a firmware load); use [`spawn`](super::spawn) for
/// anything that must be stopped, and [`ThreadGroup`] when unload should wait instead.
///
/// `EBUSY` unless this module is live: a module whose `init` fails is freed whatever
/// references it has, so a detached thread cannot be started before `init` has returned.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread;
///
/// // Let the device settle, then report it, without anyone waiting for it.
/// thread::spawn_detached(fmt!("mydrv-settle"), |ctx| {
///     ctx.sleep(kernel::time::Delta::from_millis(100));
///     pr_info!("mydrv: settled\n");
/// })?;
/// # Ok::<(), Error>(())
/// ```
pub fn spawn_detached<F>(name: fmt::Arguments<'_>, f: F) -> Result
where
    F: FnOnce(&Context<'_>) + Send + 'static,
{
    sys::this_module_get()?;
    spawn_block(name, f, ptr::null()).inspect_err(|_| {
        // SAFETY: The reference taken above, which no thread took over. The caller is running
        // this module's code, so whatever called it keeps the module.
        unsafe { sys::this_module_put() }
    })
}

/// The part of a [`ThreadGroup`] that its threads touch.
#[pin_data]
struct GroupInner {
    #[pin]
    done: Opaque<bindings::completion>,
}

// SAFETY: A `struct completion` is made to be completed and waited for from any task.
unsafe impl Send for GroupInner {}
// SAFETY: As for `Send`.
unsafe impl Sync for GroupInner {}

/// Threads that end by themselves, and that the group's owner waits for: dropping the group
/// (or [`ThreadGroup::wait`]) waits until every thread spawned in it has ended. Each thread
/// leaves through the C `kthread_complete_and_exit()`, so nothing of this module runs after
/// the waiter has seen its completion.
///
/// Keep a group in the module's data to make module unload wait for its threads. Forgetting a
/// group (`mem::forget`) gives up that wait, as forgetting a [`Thread`](super::Thread) does.
///
/// A group that is dropped by one of its own threads (which held the last reference to it)
/// cannot wait for that thread: it waits for the others, and that thread then leaves as a
/// [`spawn_detached`] thread does, holding a module reference taken at the drop. If the module
/// is already being unloaded, that reference cannot be had, and the thread sleeps forever in
/// kernel code rather than run this module's code after it is freed.
///
/// # Invariants
///
/// `outstanding` counts the threads spawned in the group whose completion has not been
/// waited for; `inner` is freed only after that many completions have been waited for.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread::ThreadGroup;
///
/// // In the module's data: its drop at rmmod waits for the flushes still running.
/// let group = ThreadGroup::new()?;
/// for i in 0..4 {
///     group.spawn(fmt!("mydrv-flush/{i}"), move |ctx| {
///         ctx.sleep(kernel::time::Delta::from_millis(10 * i));
///     })?;
/// }
/// drop(group); // returns once all four have ended
/// # Ok::<(), Error>(())
/// ```
pub struct ThreadGroup {
    inner: Pin<KBox<GroupInner>>,
    outstanding: AtomicUsize,
}

impl ThreadGroup {
    /// An empty group.
    pub fn new() -> Result<Self> {
        let inner = KBox::pin_init(
            pin_init!(GroupInner {
                done <- Opaque::ffi_init(|slot: *mut bindings::completion| {
                    // SAFETY: `slot` is valid for writes and pinned (in a `KBox`).
                    unsafe { bindings::init_completion(slot) }
                }),
            }),
            GFP_KERNEL,
        )?;
        // INVARIANT: No thread yet.
        Ok(ThreadGroup {
            inner,
            outstanding: AtomicUsize::new(0),
        })
    }

    /// Start a thread named `name` that runs `f` in the group.
    pub fn spawn<F>(&self, name: fmt::Arguments<'_>, f: F) -> Result
    where
        F: FnOnce(&Context<'_>) + Send + 'static,
    {
        let inner: *const GroupInner = &*self.inner;
        spawn_block(name, f, inner)?;
        // INVARIANT: One more thread whose completion is owed. It may have completed already:
        // the completion counts.
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many threads spawned in the group have not been waited for.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Wait until every thread spawned in the group so far has ended.
    ///
    /// `EDEADLK` if called by one of the group's threads, which would wait for itself.
    pub fn wait(&mut self) -> Result {
        if self.current_member().is_some() {
            return Err(sys::edeadlk());
        }
        let n = *self.outstanding.get_mut();
        self.wait_for(n);
        Ok(())
    }

    fn wait_for(&mut self, n: usize) {
        for _ in 0..n {
            // SAFETY: `done` was initialised by `new`.
            unsafe { bindings::wait_for_completion(self.inner.done.get()) };
            // INVARIANT: One completion waited for.
            *self.outstanding.get_mut() -= 1;
        }
    }

    /// The [`Start`] of the current thread, if it is one of this group's threads. It lives
    /// while that thread's body runs.
    fn current_member(&self) -> Option<*const Start> {
        let current = Task::current_raw();
        // SAFETY: `current` is alive; `kthread_func()` is null for a task that is not a kthread.
        let f = unsafe { bindings::kthread_func(current) };
        if f != detached_main as *mut c_void {
            return None;
        }
        // SAFETY: `current` runs `detached_main`, so its data is the `Start` of its block,
        // which lives while its body runs, and this code runs in that body (nothing else of
        // this module runs on a detached thread).
        let start = unsafe { bindings::kthread_data(current).cast::<Start>() };
        let inner: *const GroupInner = &*self.inner;
        // SAFETY: As above, `start` is alive.
        ptr::eq(unsafe { (*start).group.get() }, inner).then_some(start)
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        let n = *self.outstanding.get_mut();
        let Some(me) = self.current_member() else {
            self.wait_for(n);
            return;
        };
        // Dropped by one of its own threads, `me`, which is counted in `n`.
        pr_warn!("kthread_rs: a ThreadGroup was dropped by one of its own threads\n");
        if sys::this_module_get().is_err() {
            pr_err!("kthread_rs: module unloading; the thread sleeps forever\n");
            loop {
                // SAFETY: Sleeping is allowed here (a thread body, no lock held by us).
                unsafe { bindings::schedule_timeout_idle(MAX_SCHEDULE_TIMEOUT) };
            }
        }
        self.wait_for(n - 1);
        // INVARIANT: `me` now holds a module reference and leaves through
        // `module_put_and_kthread_exit()`: its completion is no longer owed.
        // SAFETY: `me` is the `Start` of the current thread, whose body (this drop) is running.
        unsafe { (*me).group.set(ptr::null()) };
    }
}
