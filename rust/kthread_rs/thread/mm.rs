// SPDX-License-Identifier: GPL-2.0

//! A kthread working on behalf of a user process, in its address space (`kthread_use_mm()`).
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::Context;
use kernel::{bindings, mm::MmWithUser, prelude::*};

impl Context<'_> {
    /// Work on behalf of a user process: run `f` in its address space `mm` (the C
    /// `kthread_use_mm()` before `f`, `kthread_unuse_mm()` after, as vhost and USB gadget
    /// drivers do), and return what `f` returned. While `f` runs, the thread's user copies
    /// (`kernel::uaccess`) reach that address space, and `current!().mm()` is `mm`.
    ///
    /// `f` gets this context, to check [`Context::should_stop`] or sleep in a long job.
    ///
    /// `f` and its result are [`Send`], as the kernel crate requires of a `kthread_use_mm()`
    /// scope (`rust/kernel/task.rs`): a `CurrentTask` (and the `&MmWithUser` that its `mm()`
    /// lends, which lives as long as it) can neither enter `f` nor leave it. Inside, `mm()` of
    /// a `current!()` is the lent mm for as long as that borrow lives, which ends with `f`;
    /// outside, `current!().mm()` is `None`. `mm` is borrowed for the whole call, and
    /// [`MmWithUser`] guarantees that the address space stays (`mm_users` > 0) while it is:
    /// nothing is counted here, so nothing can leak.
    ///
    /// Do user copies only inside `f`: after `kthread_unuse_mm()` the CPU may keep the address
    /// space's page tables lazily, so a copy could still reach it, and the kernel does not
    /// refuse it (the tests show `current->mm` cleared, not the copies refused).
    ///
    /// `EBUSY` if called inside another `with_mm` of this thread (the C code would WARN).
    ///
    /// # Context
    ///
    /// May sleep (`f` runs in process context and may sleep).
    ///
    /// # Examples
    ///
    /// ```ignore
    /// use kernel::{mm::MmWithUser, uaccess::UserPtr};
    /// use kthread_rs::thread;
    ///
    /// // Write a word into a process's memory at `addr`, from a kthread.
    /// fn poke(
    ///     module: &'static ThisModule,
    ///     mm: kernel::sync::aref::ARef<MmWithUser>,
    ///     addr: usize,
    /// ) -> Result {
    ///     let t = thread::spawn(module, fmt!("mydrv-poke"), move |ctx| {
    ///         ctx.with_mm(&mm, |_ctx| {
    ///             let mut w =
    ///                 kernel::uaccess::UserSlice::new(UserPtr::from_addr(addr), 8).writer();
    ///             w.write(&0x5a5a_u64)
    ///         })?
    ///     })?;
    ///     t.join()?.returned().unwrap_or(Err(EINTR))
    /// }
    /// # let _ = poke;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_mm<R, F>(&self, mm: &MmWithUser, f: F) -> Result<R>
    where
        F: FnOnce(&Context<'_>) -> R + Send,
        R: Send,
    {
        kernel::task::might_sleep();
        if self.mm.replace(true) {
            return Err(EBUSY);
        }
        // SAFETY: `current` is a kthread (type invariant) that uses no mm: only this function
        // lends one, and not while it runs (checked above). `mm` is a live mm with users
        // (`MmWithUser`), borrowed until after `kthread_unuse_mm()` below.
        unsafe { bindings::kthread_use_mm(mm.as_raw()) };
        let r = f(self);
        // SAFETY: The matching call, on the same thread, with the same mm. A `CurrentTask`
        // made inside `f`, and any `&MmWithUser` its `mm()` lent, ended with `f`, as `f` and
        // `R` are `Send` (the kernel crate's contract for this scope).
        unsafe { bindings::kthread_unuse_mm(mm.as_raw()) };
        self.mm.set(false);
        Ok(r)
    }
}
