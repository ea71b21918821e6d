// SPDX-License-Identifier: GPL-2.0

//! Scoped threads, which may borrow data from the stack, like `std::thread::scope`.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::{
    begin_wait, create_raw, release_shared, take_exit, take_result, Context, Exit, Header, Once,
    Place, NUMA_NO_NODE,
};
use core::{cell::UnsafeCell, marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{bindings, fmt, prelude::*, str::CString, sync::aref::ARef, sync::Arc, task::Task};

/// A scope for threads that borrow data from the stack; see [`scope`].
///
/// It is not [`Sync`]: threads are spawned from the task that called [`scope`] only.
///
/// # Invariants
///
/// Every thread spawned in the scope has an entry in `threads`, and is stopped (and has
/// exited) before [`scope`] returns. `module` is the module whose code the scope's threads run
/// (the one [`scope`] was given).
pub struct Scope<'scope, 'env: 'scope> {
    module: &'static ThisModule,
    threads: UnsafeCell<KVec<ScopeEntry>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// The scope's own record of one of its threads, with the body's type (and lifetime) erased,
/// as `std::thread::scope` does, so that the scope's storage does not borrow from `'scope`.
///
/// # Invariants
///
/// `header` comes from `Arc::into_raw` of the `Shared<B>` run by `task` (the entry owns that
/// reference), and `release` is `release_shared::<B>`.
struct ScopeEntry {
    task: ARef<Task>,
    header: NonNull<Header>,
    release: unsafe fn(NonNull<Header>),
}

impl ScopeEntry {
    /// Stop the thread (unless its handle did) and release the entry's reference.
    fn finish(self) {
        // SAFETY: By the type invariant, `header` lives as long as the entry's reference, and
        // belongs to `task`, an owned thread (a scoped handle is `!Send`: the thread cannot
        // reach it to orphan it).
        let header = unsafe { self.header.as_ref() };
        let waiting = must_wait(header);
        // SAFETY: As above.
        unsafe { header.stop_put(self.task) };
        drop(waiting);
        // SAFETY: By the type invariant; `self` is consumed, so `header` is not used again.
        unsafe { (self.release)(self.header) };
    }
}

/// Record a wait that must happen whatever it costs (a scope cannot end while its threads
/// run): a cycle here cannot be broken, as the other waiter is inside `kthread_stop()` or a
/// join already. Say so, then wait: the hang is the caller's cycle (H24).
fn must_wait(target: &Header) -> Option<super::header::Waiting> {
    match begin_wait(target) {
        Ok(w) => Some(w),
        Err(_) => {
            pr_err!("kthread_rs: a scope waits for a thread that waits for the scope's thread\n");
            None
        }
    }
}

/// A thread spawned in a [`Scope`]: like [`Thread`](super::Thread), but its body may borrow
/// from the scope's environment. Whether it is stopped, dropped or even forgotten, the thread
/// has exited when [`scope`] returns (H8); the handle only borrows from the scope, which owns
/// the thread, so forgetting the handle leaks nothing either.
///
/// # Invariants
///
/// `task` runs `trampoline::<B>` on `header`, both owned by the scope's entry for this thread;
/// `take_result` is `take_result::<B>`.
#[must_use = "dropping a ScopedThread stops it at once"]
pub struct ScopedThread<'scope, T> {
    task: &'scope Task,
    header: &'scope Header,
    take_result: unsafe fn(NonNull<Header>) -> Option<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Create and start a thread that may borrow anything that outlives the scope. It runs code
    /// of the scope's module (the `module` given to [`scope`]).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn spawn<F, T>(
        &'scope self,
        name: fmt::Arguments<'_>,
        f: F,
    ) -> Result<ScopedThread<'scope, T>>
    where
        F: FnOnce(&Context<'_>) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        kernel::task::might_sleep();
        // Format first: a `Display` of the name could spawn in this scope too.
        let name = CString::try_from_fmt(name)?;
        // Make room first: once the thread exists, recording it must not fail.
        // SAFETY: `Scope` is `!Sync`, so only this task touches `threads`, and no other
        // reference into it lives during this statement.
        unsafe { (*self.threads.get()).reserve(1, GFP_KERNEL)? };
        let (task, shared) = create_raw(self.module, Place::Node(NUMA_NO_NODE), &name, Once(f))?;
        let raw = Arc::into_raw(shared).cast_mut().cast::<Header>();
        // SAFETY: `Arc::into_raw` never returns null.
        let header = unsafe { NonNull::new_unchecked(raw) };
        let task_ptr: *const Task = &*task;
        // SAFETY: The entry made below keeps the `Arc` and the task reference until the end
        // of `scope`, after `'scope`; the task_struct and the `Shared` do not move.
        let (task_ref, header_ref): (&'scope Task, &'scope Header) =
            unsafe { (&*task_ptr, header.as_ref()) };
        // INVARIANT: `header` is the `Shared<Once<F>>` run by `task`, with its reference.
        let entry = ScopeEntry {
            task,
            header,
            release: release_shared::<Once<F>>,
        };
        // Cannot fail after `reserve`; if it did, `finish` would stop the thread.
        // SAFETY: As for `reserve` above; `create_raw` ran no code of the caller's.
        let pushed = unsafe { (*self.threads.get()).push_within_capacity(entry) };
        pushed.map_err(|e| {
            e.0.finish();
            ENOMEM
        })?;
        // SAFETY: The task is alive (the entry's reference) and not yet woken.
        unsafe { bindings::wake_up_process(task_ref.as_ptr()) };
        // INVARIANT: `task_ref` runs `trampoline::<Once<F>>` on `header_ref`, both owned by the
        // entry.
        Ok(ScopedThread {
            task: task_ref,
            header: header_ref,
            take_result: take_result::<Once<F>>,
            _not_send: PhantomData,
        })
    }
}

impl<T> ScopedThread<'_, T> {
    /// Ask the thread to stop and wait for it; see [`Thread::stop`](super::Thread::stop).
    /// Infallible: a scoped handle is not `Send`, so it cannot reach its own thread.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn stop(self) -> Exit<T> {
        kernel::task::might_sleep();
        // Stopped here: its `Drop` would only wait for the stop again.
        let this = core::mem::ManuallyDrop::new(self);
        let waiting = must_wait(this.header);
        // SAFETY: By the type invariant, an owned thread. The scope's entry gives up the task
        // reference later.
        unsafe { this.header.stop(this.task) };
        drop(waiting);
        // SAFETY: The thread has exited; this handle, consumed, is its result's only reader.
        unsafe { take_exit(this.take_result, NonNull::from(this.header)) }
    }

    /// Wait until the body returns by itself; see [`Thread::join`](super::Thread::join).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn join(self) -> Exit<T> {
        kernel::task::might_sleep();
        let waiting = must_wait(self.header);
        // Scoped threads are woken by `Scope::spawn`, and stopped only by their handle, their
        // scope, or the reaper.
        self.header.returned.wait_for_completion();
        drop(waiting);
        self.stop()
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn wake_up(&self) {
        self.header.wake()
    }
}

impl<T> Drop for ScopedThread<'_, T> {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        let waiting = must_wait(self.header);
        // SAFETY: As in `stop`.
        unsafe { self.header.stop(self.task) };
        drop(waiting);
    }
}

impl<T> Deref for ScopedThread<'_, T> {
    type Target = Task;
    fn deref(&self) -> &Task {
        self.task
    }
}

/// Run `f` with a [`Scope`] in which threads may borrow local data, like `std::thread::scope`.
///
/// Every thread spawned in the scope is stopped and has exited when `scope` returns, even if
/// its handle was forgotten with `mem::forget` (H8): the scope keeps its own record of each
/// thread.
///
/// `module` is the module whose code the scope's threads run (`THIS_MODULE`).
///
/// # Context
///
/// May sleep (at the end, it waits for the scope's threads).
///
/// # Examples
///
/// ```ignore
/// # use kthread_rs::thread;
/// # let module = kthread_rs::compat::this_module();
/// let mut hits = [0u32; 4];
/// thread::scope(module, |s| -> Result {
///     for (i, h) in hits.iter_mut().enumerate() {
///         let _ = s.spawn(fmt!("scoped/{i}"), move |_ctx| *h = i as u32 * 10)?.join();
///     }
///     Ok(())
/// })?;
/// # Ok::<(), Error>(())
/// ```
pub fn scope<'env, F, R>(module: &'static ThisModule, f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    kernel::task::might_sleep();
    let scope = Scope {
        module,
        threads: UnsafeCell::new(KVec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let r = f(&scope);
    // SAFETY: `f` has returned and `Scope` is `!Sync`: nothing else uses `threads` now.
    let threads = unsafe { &mut *scope.threads.get() };
    // Newest first, as they were spawned last.
    while let Some(entry) = threads.pop() {
        entry.finish();
    }
    r
}
