// SPDX-License-Identifier: GPL-2.0

//! The owning handle of a thread: [`Thread`], and the task reference and memory that it holds.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::*;

/// An owning handle's state: the task reference and the thread's memory.
///
/// # Invariants
///
/// - `task` is the kthread running `trampoline::<B>` on `header`, a `Shared<B>` with
///   `B::Output = T`, of which the handle owns one `Arc` reference (from `Arc::into_raw`);
///   `take_result` is `take_result::<B>` and `body_id` the address of `trampoline::<B>`.
/// - Both references are given up only by [`Handle::finish`] or `Drop`, after the thread has
///   exited, or handed to the thread itself ([`Handle::orphan`]).
pub(super) struct Handle<T> {
    pub(super) task: ManuallyDrop<ARef<Task>>,
    pub(super) header: NonNull<Header>,
    pub(super) take_result: unsafe fn(NonNull<Header>) -> Option<T>,
    pub(super) release: unsafe fn(NonNull<Header>),
    pub(super) body_id: BodyId,
}

// SAFETY: The handle gives access to the result (`T: Send`) only by value, after the thread
// exited; the rest (`Header`, `Task`) is thread-safe.
unsafe impl<T: Send> Send for Handle<T> {}
// SAFETY: Shared access reaches only the header (waking the thread) and the task.
unsafe impl<T: Send> Sync for Handle<T> {}

impl<T> Handle<T> {
    pub(super) fn new<B: Body<Output = T>>(task: ARef<Task>, shared: Arc<Shared<B>>) -> Self {
        let raw = Arc::into_raw(shared).cast_mut().cast::<Header>();
        // INVARIANT: `create_raw` made `task` run `trampoline::<B>` on `shared`, whose
        // reference is kept in `header`.
        Handle {
            task: ManuallyDrop::new(task),
            // SAFETY: `Arc::into_raw` never returns null.
            header: unsafe { NonNull::new_unchecked(raw) },
            take_result: take_result::<B>,
            release: release_shared::<B>,
            body_id: BodyId(trampoline::<B> as *const () as usize),
        }
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: The handle's reference keeps the header alive (invariant).
        unsafe { self.header.as_ref() }
    }

    /// Is the caller the thread itself? An owned handle is `Send`, so it can reach its own
    /// thread, where stopping or joining would wait for itself forever.
    pub(super) fn is_current(&self) -> bool {
        ptr::eq(self.task.as_ptr(), Task::current_raw())
    }

    /// Hand both references to the thread itself, which then stops at its next
    /// `should_stop` and frees them when it ends (H20); see [`Header::orphan`].
    pub(super) fn orphan(self) {
        let this = ManuallyDrop::new(self);
        // The task reference and the `Arc` reference are the thread's now: `this` is never
        // dropped, so neither is released here.
        this.header().orphan();
    }

    /// Stop the thread (after its body returned, if `join`), give up the task reference with
    /// `kthread_stop_put()`, and say how the thread ended. `EDEADLK` where that would wait for
    /// the caller itself: the thread is then orphaned.
    pub(super) fn finish(self, join: bool) -> Result<Exit<T>> {
        kernel::task::might_sleep();
        if self.is_current() {
            self.orphan();
            return Err(sys::edeadlk());
        }
        let waiting = match begin_wait(self.header()) {
            Ok(w) => w,
            Err(e) => {
                self.orphan();
                return Err(e);
            }
        };
        if join {
            // A woken thread runs its body unless stopped, and only its owner (this handle)
            // or the reaper stops it; `join` is offered on started threads only. The body's
            // end completes `returned`, or the reaper does if it stopped the thread before it
            // ran.
            self.header().returned.wait_for_completion();
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: Taken once, here; `this` is never dropped, so `Drop` does not see it.
        let task = unsafe { ManuallyDrop::take(&mut this.task) };
        let take = || {
            // SAFETY: Called by `stop_put_then` once the thread has exited; this handle is its
            // result's only reader.
            unsafe { take_exit(this.take_result, this.header) }
        };
        // SAFETY: An owned thread, and `task` is it (invariant).
        let exit = unsafe { this.header().stop_put_then(task, take) };
        drop(waiting);
        // SAFETY: The handle's reference, given up once, after the thread exited.
        unsafe { (this.release)(this.header) };
        Ok(exit)
    }

    pub(super) fn stop(self) -> Result<Exit<T>> {
        self.finish(false)
    }

    pub(super) fn join(self) -> Result<Exit<T>> {
        self.finish(true)
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.is_current() {
            // Dropped by the thread itself, which cannot wait for its own exit (H20).
            self.header().orphan();
            return;
        }
        kernel::task::might_sleep();
        let Ok(waiting) = begin_wait(self.header()) else {
            // The thread waits for the caller: waiting for it would never end (H24).
            pr_warn!("kthread_rs: a handle dropped in a wait cycle; its thread is orphaned\n");
            self.header().orphan();
            return;
        };
        // SAFETY: Taken once, here, and not used afterwards.
        let task = unsafe { ManuallyDrop::take(&mut self.task) };
        // Stop-before-drop: the thread exits before the memory (body, result) can be freed.
        // SAFETY: An owned thread, and `task` is it (invariant).
        unsafe { self.header().stop_put(task) };
        drop(waiting);
        // SAFETY: The handle's reference, given up once, after the thread exited.
        unsafe { (self.release)(self.header) };
    }
}

/// An owned, running kthread. Dropping it stops the thread and waits for it to exit.
///
/// Dereferences to its [`Task`].
///
/// A handle dropped where it cannot wait for its thread, on the thread itself or by a thread
/// that the thread waits for (a cycle), gives the thread its own memory: the thread's
/// [`Context::should_stop`] becomes true, and when its body returns it frees its memory (and
/// its result) and leaves without returning into the module, holding a module reference
/// meanwhile (H20). A forgotten handle (`mem::forget`) leaves the thread running until the
/// module is unloaded, which stops it (H21).
#[must_use = "dropping a Thread stops it at once"]
pub struct Thread<T> {
    pub(super) handle: Handle<T>,
}

impl<T> Thread<T> {
    /// Ask the thread to stop, wait until it has exited, and return how it ended.
    ///
    /// The C `kthread_stop()`. Safe even if the body returned long ago: the handle holds its
    /// own task reference (H1). Tells a returned value from a body that never ran (H2).
    ///
    /// `EDEADLK` where this would wait for the caller: called by the thread itself, or while
    /// the thread waits (to stop, join or park a thread) for the caller, directly or through
    /// other threads of this module (H24). The thread then owns its handle, as when the handle
    /// is dropped there: it stops at its next `should_stop` and frees itself.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn stop(self) -> Result<Exit<T>> {
        kernel::task::might_sleep();
        self.handle.stop()
    }

    /// Wait until the body returns by itself (without asking it to stop), then reap it.
    ///
    /// Unlike [`Thread::stop`], this never sets `kthread_should_stop()` before the body has
    /// returned, so it waits forever for a body that only ends when stopped. `EDEADLK` as for
    /// [`Thread::stop`].
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn join(self) -> Result<Exit<T>> {
        kernel::task::might_sleep();
        self.handle.join()
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`], so that it re-checks its
    /// condition.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn wake_up(&self) {
        self.handle.header().wake()
    }

    /// The identity of this thread's body, as [`origin`] reports it.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn body_id(&self) -> BodyId {
        self.handle.body_id
    }
}

impl<T> Deref for Thread<T> {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.handle.task
    }
}
