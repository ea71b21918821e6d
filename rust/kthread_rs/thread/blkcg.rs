// SPDX-License-Identifier: GPL-2.0

//! A kthread doing block I/O on behalf of another cgroup (`kthread_associate_blkcg()`).
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::Context;
use core::{marker::PhantomData, ptr};
use kernel::{bindings, prelude::*, types::Opaque};

/// A cgroup's state for one controller, the C `struct cgroup_subsys_state`; here, that of the
/// io controller (blkcg), for [`Context::associate_blkcg`]. The kernel crate has no cgroup
/// abstraction yet: a driver gets one from C (for example `bio_blkcg_css()` of the bio that it
/// serves, valid while it holds the bio).
#[repr(transparent)]
pub struct CgroupSubsysState(Opaque<bindings::cgroup_subsys_state>);

// SAFETY: A css is reference-counted C state made to be used from any task.
unsafe impl Send for CgroupSubsysState {}
// SAFETY: As for `Send`; the only operation here passes it to C, which counts its own use.
unsafe impl Sync for CgroupSubsysState {}

impl CgroupSubsysState {
    /// Borrow the css at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a css of the io controller, and the caller holds something that keeps it alive
    /// (a reference, or a bio charged to it) for `'a`.
    ///
    /// # Context
    ///
    /// Any context.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::cgroup_subsys_state) -> &'a Self {
        // SAFETY: By the function's safety requirements; the type is transparent.
        unsafe { &*ptr.cast() }
    }

    /// The C pointer.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn as_raw(&self) -> *mut bindings::cgroup_subsys_state {
        self.0.get()
    }
}

/// The association of the current kthread with a blkcg, until dropped; see
/// [`Context::associate_blkcg`].
///
/// # Invariants
///
/// `kthread_associate_blkcg()` associated the current kthread, whose [`Context`] has `slot`,
/// and `slot` is set.
pub struct BlkcgGuard<'a> {
    slot: &'a core::cell::Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl Drop for BlkcgGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the current kthread is associated (the guard is not
        // `Send`: this is the same thread); null ends it and drops the C reference.
        unsafe { bindings::kthread_associate_blkcg(ptr::null_mut()) };
        self.slot.set(false);
    }
}

impl Context<'_> {
    /// Do block I/O on behalf of another cgroup: bios that this thread submits are charged to
    /// `css` (an io controller css), until the returned guard is dropped. The C
    /// `kthread_associate_blkcg()`, as the loop driver does for the submitter of each request.
    /// The association holds its own reference on `css` (`css_get()`), so `css` need only be
    /// valid for this call.
    ///
    /// `EBUSY` if this thread is associated already (a second C call would silently replace
    /// the first, and the first guard's drop would end the second). A leaked guard is ended
    /// when the body returns: the kthread's exit would WARN about it.
    ///
    /// # Context
    ///
    /// Process context of this thread; does not sleep (the association is a reference count
    /// and a pointer).
    pub fn associate_blkcg(&self, css: &CgroupSubsysState) -> Result<BlkcgGuard<'_>> {
        if self.blkcg.get() {
            return Err(EBUSY);
        }
        // SAFETY: `current` is a kthread (the type invariant), with no association (checked
        // above; only this function makes one). `css` is live (borrowed); the C code takes its
        // own reference.
        unsafe { bindings::kthread_associate_blkcg(css.as_raw()) };
        self.blkcg.set(true);
        // INVARIANT: The current kthread was associated just now; `slot` is its flag.
        Ok(BlkcgGuard {
            slot: &self.blkcg,
            _not_send: PhantomData,
        })
    }
}
