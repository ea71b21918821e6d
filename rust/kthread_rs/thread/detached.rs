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
    mem::ManuallyDrop,
    ptr,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{
    bindings, error::from_err_ptr, fmt, new_spinlock, prelude::*, sync::SpinLock, task::Task,
    types::Opaque,
};

/// What [`detached_main`] and a [`ThreadGroup`] know of a thread's block, whatever its body.
///
/// # Invariants
///
/// - `run` and `free` are `run::<F>` and `free::<F>` for the [`Block<F>`] whose first field
///   this is.
/// - `group` is the [`GroupInner`] whose completion the thread completes at its exit, or null:
///   the thread holds a reference on this module, and gives it back at its exit.
/// - `orphan` is null, or (set with a null `group` by a drop of the thread's group that ran on
///   this thread) that group, now owned by the thread, which frees it before it leaves.
/// - A thread with a group is on that group's member list (linked through `next`, with its
///   `task`) from before it is woken until it leaves the list after its body; the block is
///   freed only after that. While it is on the list, `group` and `next` are read and written
///   under the group's lock only.
#[repr(C)]
struct Start {
    run: unsafe fn(*mut Start),
    free: unsafe fn(*mut Start),
    group: *const GroupInner,
    orphan: *mut GroupInner,
    task: *const bindings::task_struct,
    next: *mut Start,
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
    // `run::<F>` for this thread's `Block<F>`.
    unsafe { ((*start).run)(start) };
    // SAFETY: The block is alive (freed below). Only a drop of the group that runs on this very
    // thread writes `group` (see `ThreadGroup::drop`), before this read or, from an interrupt,
    // after it: then the group is not freed but handed to this thread (`orphan`), and `leave`
    // reads `group` again under the group's lock.
    let group = unsafe { ptr::read_volatile(&raw const (*start).group) };
    let group = if group.is_null() {
        group
    } else {
        // SAFETY: A group lives until it has counted a completion of each of its threads, and
        // this thread has not completed yet; or it is this thread's orphan (see above).
        unsafe { (*group).leave(start) }
    };
    // SAFETY: The block is alive; `orphan` was set, if at all, with `group` (read above).
    let orphan = unsafe { (*start).orphan };
    // SAFETY: Off any list now; by the invariant of `Start`, `free` is `free::<F>`.
    unsafe { ((*start).free)(start) };
    if !orphan.is_null() {
        // SAFETY: By the invariant of `Start`, this thread owns the group now; its other
        // threads have completed (the drop waited for them), and this one has left its list.
        drop(unsafe { KBox::from_raw(orphan) });
    }
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

/// Run the body of a `Block<F>`.
///
/// # Safety
///
/// `start` is the `start` of a `Block<F>` made by [`spawn_block`], owned by the current thread.
unsafe fn run<F: FnOnce(&Context<'_>) + Send + 'static>(start: *mut Start) {
    let block = start.cast::<Block<F>>();
    // SAFETY: `Block` is `repr(C)` with `start` first, so `block` is the thread's block, alive
    // until `free`. Only `control` and `body` are borrowed: the group's list and a drop of the
    // group write fields of `start` by raw pointer meanwhile.
    let (control, body) = unsafe { (&(*block).control, &(*block).body) };
    // SAFETY: `current` is the kthread whose control block is `control`.
    let ctx = unsafe { Context::new(control) };
    if let Some(f) = body.take() {
        f(&ctx);
    }
    ctx.end_leaked_guards();
}

/// Free a `Block<F>`.
///
/// # Safety
///
/// As for [`run`]; the block is on no list and not used afterwards.
unsafe fn free<F>(start: *mut Start) {
    // SAFETY: The block came from `KBox::into_raw` in `spawn_block`, and the thread owns it.
    drop(unsafe { KBox::from_raw(start.cast::<Block<F>>()) });
}

/// Create and wake a detached thread that leaves as `group` says (see [`Start`]); a group
/// thread is put on the group's list before it is woken.
fn spawn_block<F>(name: fmt::Arguments<'_>, f: F, group: *const GroupInner) -> Result
where
    F: FnOnce(&Context<'_>) + Send + 'static,
{
    // INVARIANT: `run::<F>`/`free::<F>` for this `Block<F>`; `group` as the caller says; it
    // goes on the group's list below, before the thread is woken.
    let block = KBox::pin_init(
        pin_init!(Block::<F> {
            start: Start {
                run: run::<F>,
                free: free::<F>,
                group,
                orphan: ptr::null_mut(),
                task: ptr::null(),
                next: ptr::null_mut(),
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
            // The thread runs `detached_main` once woken: only `kthread_stop()` could keep it
            // from it, and the task is never published to anyone who could call that. (A body
            // that ends the task without returning, `do_exit()`, would leave its block on the
            // list and its completion owed: the group's drop would then wait forever.)
            if !group.is_null() {
                // SAFETY: The caller's group is alive (borrowed by `ThreadGroup::spawn`), and
                // the block is not shared yet.
                unsafe { (*group).join(raw.cast(), task) };
            }
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

/// The head of a group's member list (see [`Start`]).
struct Members(*mut Start);

// SAFETY: The list is only touched under the group's lock; its blocks belong to live threads.
unsafe impl Send for Members {}

/// The part of a [`ThreadGroup`] that its threads touch.
#[pin_data]
struct GroupInner {
    #[pin]
    done: Opaque<bindings::completion>,
    /// The threads that have not yet left after their body (see [`Start`]).
    #[pin]
    members: SpinLock<Members>,
}

// SAFETY: A `struct completion` is made to be completed and waited for from any task; the
// member list is behind a lock.
unsafe impl Send for GroupInner {}
// SAFETY: As for `Send`.
unsafe impl Sync for GroupInner {}

impl GroupInner {
    /// Put the new, not yet woken thread `task`, whose block starts with `start`, on the list.
    ///
    /// # Safety
    ///
    /// `start` is the unshared block of `task`, a thread of this group.
    unsafe fn join(&self, start: *mut Start, task: *mut bindings::task_struct) {
        let mut head = self.members.lock();
        // SAFETY: By the function's safety requirement; the list is locked.
        unsafe {
            (*start).task = task;
            (*start).next = head.0;
        }
        head.0 = start;
    }

    /// Take the current thread, whose block starts with `start`, off the list, and say how it
    /// leaves: through this group's completion, or (null) through `module_put` when a drop of
    /// the group on this thread took it off already.
    ///
    /// # Safety
    ///
    /// `start` is the block of the current thread, a thread of this group, after its body.
    unsafe fn leave(&self, start: *mut Start) -> *const GroupInner {
        let mut head = self.members.lock();
        // SAFETY: The list is locked; `start` is alive (its thread frees it after this).
        let group = unsafe { (*start).group };
        if !group.is_null() {
            // SAFETY: As above; a thread whose `group` is still set is on the list.
            unsafe { unlink(&mut head.0, start) };
        }
        group
    }

    /// The block of the current thread, if it is on this group's list.
    fn find_current(head: &Members) -> Option<*mut Start> {
        let current = Task::current_raw().cast_const();
        let mut p = head.0;
        while !p.is_null() {
            // SAFETY: Blocks on the list are alive (their thread frees them only after leaving
            // it), and the caller holds the lock.
            unsafe {
                if ptr::eq((*p).task, current) {
                    return Some(p);
                }
                p = (*p).next;
            }
        }
        None
    }
}

/// Remove `start` from the list at `head`.
///
/// # Safety
///
/// The list's lock is held, and `start` is on it.
unsafe fn unlink(head: &mut *mut Start, start: *mut Start) {
    let mut link: *mut *mut Start = head;
    // SAFETY: Every block on the locked list is alive; `start` is on it, so the walk ends.
    unsafe {
        while *link != start {
            link = &raw mut (**link).next;
        }
        *link = (*start).next;
    }
}

/// Threads that end by themselves, and that the group's owner waits for: dropping the group
/// (or [`ThreadGroup::wait`]) waits until every thread spawned in it has ended. Each thread
/// leaves through the C `kthread_complete_and_exit()`, so nothing of this module runs after
/// the waiter has seen its completion.
///
/// Keep a group in the module's data to make module unload wait for its threads. Forgetting a
/// group (`mem::forget`) gives up that wait, as forgetting a [`Thread`](super::Thread) does.
///
/// Sharing a group with its own threads (an `Arc` that they hold too) gives up the wait in
/// the same way when the module's reference is not the last one: keep the group in one owner.
/// A group that is dropped by one of its own threads anyway (it held the last reference)
/// cannot wait for that thread: it waits for the others, and that thread then leaves as a
/// [`spawn_detached`] thread does, holding a module reference taken at the drop. If the module
/// is being unloaded, no reference can be had: the group is then leaked, so that its threads
/// still complete into it, and nothing waits for them, as with `mem::forget`.
///
/// Drop and [`ThreadGroup::wait`] sleep: call them in task context only (`might_sleep()`
/// reports other uses). From an interrupt they can deadlock, but they touch no freed memory.
///
/// # Invariants
///
/// `outstanding` counts the threads spawned in the group whose completion has not been
/// waited for; `inner` is freed only after that many completions have been waited for (or
/// leaked).
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
    inner: ManuallyDrop<Pin<KBox<GroupInner>>>,
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
                members <- new_spinlock!(Members(ptr::null_mut()), "kthread_rs::ThreadGroup"),
            }),
            GFP_KERNEL,
        )?;
        // INVARIANT: No thread yet.
        Ok(ThreadGroup {
            inner: ManuallyDrop::new(inner),
            outstanding: AtomicUsize::new(0),
        })
    }

    /// Start a thread named `name` that runs `f` in the group.
    pub fn spawn<F>(&self, name: fmt::Arguments<'_>, f: F) -> Result
    where
        F: FnOnce(&Context<'_>) + Send + 'static,
    {
        let inner: *const GroupInner = &**self.inner;
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
        if GroupInner::find_current(&self.inner.members.lock()).is_some() {
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
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        let n = *self.outstanding.get_mut();
        let mut members = self.inner.members.lock();
        let Some(me) = GroupInner::find_current(&members) else {
            drop(members);
            self.wait_for(n);
            // SAFETY: Every thread's completion has been waited for: none touches `inner`.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
            return;
        };
        // Dropped by one of its own threads, `me` (on its list, so its block is alive and its
        // completion is owed: it is counted in `n`).
        pr_warn!("kthread_rs: a ThreadGroup was dropped by one of its own threads\n");
        if sys::this_module_get_unless_going().is_err() {
            drop(members);
            pr_warn!("kthread_rs: module unloading: the ThreadGroup is leaked, not waited for\n");
            // INVARIANT: Leaked: `inner` is never freed, so every thread can complete it.
            return;
        }
        // INVARIANT: Off the list with a null `group`: `me` now holds a module reference and
        // leaves through `module_put_and_kthread_exit()`; its completion is no longer owed.
        // SAFETY: `me` is on the locked list, so its block is alive.
        unsafe {
            unlink(&mut members.0, me);
            (*me).group = ptr::null();
        }
        drop(members);
        self.wait_for(n - 1);
        // SAFETY: Taken once, here; `self.inner` is not used afterwards.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        // SAFETY: Handed over whole to the thread, which frees it where it is.
        let inner = KBox::into_raw(unsafe { Pin::into_inner_unchecked(inner) });
        // INVARIANT: `me` owns the group now, which its n - 1 other threads no longer touch.
        // SAFETY: `me` is the current thread, which runs none of its own code while this drop
        // runs (in its body, or in an interrupt on it), so it has not freed its block: it
        // frees it only after reading `orphan`, in `detached_main`.
        unsafe { (*me).orphan = inner };
    }
}
