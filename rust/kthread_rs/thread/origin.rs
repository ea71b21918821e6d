// SPDX-License-Identifier: GPL-2.0

//! Introspection: is a task one of a module's threads, and with which body
//! (`kthread_func()`)?
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use core::ptr;
use kernel::{bindings, prelude::*, task::Task};

/// The identity of a thread's body: the C `threadfn` of the thread, which this API makes one
/// per body type. Compare it with a handle's (e.g.
/// [`Thread::body_id`](super::Thread::body_id)) to learn whether a task runs that kind of body.
///
/// Threads spawned from the same closure (in a loop, or from one function) share a `BodyId`;
/// different closures get different ones, except that the compiler may merge two bodies that
/// compile to identical code (then they are indistinguishable, and share one). Detached
/// threads ([`spawn_detached`](super::spawn_detached), [`ThreadGroup`](super::ThreadGroup)) all
/// share one `BodyId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyId(pub(super) usize);

/// What a task is, as far as this API can tell; see [`origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not a kernel thread: a user task (or a user worker, such as an io_uring worker).
    NotKthread,
    /// A kernel thread that the module did not start through this API.
    Kthread,
    /// A thread that the module started through this API, running the body `BodyId`.
    Ours(BodyId),
}

/// Is `task` one of the threads that `module` started through this API, and with which body?
/// The C `kthread_func()`.
///
/// `module` is the module whose threads to recognise (`THIS_MODULE`). "Ours" means that the
/// thread's C `threadfn` is code of `module` (this file is included into each module, see
/// [`super`]): in a module that starts its threads only through this API, exactly those
/// threads. A thread of another module using kthread-rs is [`Origin::Kthread`] here. Exited
/// tasks answer as they did while they ran. A built-in `module` (null) recognises none.
///
/// There is no safe form of `kthread_data()`: the data pointer of a thread is its control
/// block, which the thread's handle frees once the thread has exited, while the `task_struct`
/// (and a `&Task` to it) can live on; reading it through any `&Task` could touch freed memory.
/// The identity above comes from `kthread_func()`, which lives as long as the task.
///
/// # Context
///
/// Any context.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread::{self, Origin};
///
/// # let module = kthread_rs::compat::this_module();
/// let t = thread::spawn(module, fmt!("mydrv-flush"), |ctx| {
///     while ctx.sleep(kernel::time::Delta::from_millis(10)) != thread::Wake::Stop {}
/// })?;
/// // In a path that may run on any task: is this our flusher (e.g. to avoid waiting for
/// // ourselves)?
/// let current = kernel::current!();
/// let on_flusher = thread::origin(module, current) == Origin::Ours(t.body_id());
/// # let _ = on_flusher;
/// # Ok::<(), Error>(())
/// ```
pub fn origin(module: &'static ThisModule, task: &Task) -> Origin {
    // SAFETY: `task` is alive (borrowed); `flags` is read once, as the C `READ_ONCE()`.
    let flags = unsafe { ptr::read_volatile(&raw const (*task.as_ptr()).flags) };
    if flags & bindings::PF_KTHREAD == 0 {
        return Origin::NotKthread;
    }
    // SAFETY: `task` is alive (borrowed), and so is its `struct kthread`, which is freed with
    // the `task_struct`; `kthread_func()` returns null for a task without one.
    let f = unsafe { bindings::kthread_func(task.as_ptr()) } as usize;
    if f != 0 && in_module_text(module, f) {
        Origin::Ours(BodyId(f))
    } else {
        Origin::Kthread
    }
}

/// Is `addr` in the text of `module`?
fn in_module_text(module: &'static ThisModule, addr: usize) -> bool {
    let module = module.as_ptr();
    if module.is_null() {
        // Built in: this API's code cannot be told from the rest of the kernel's.
        return false;
    }
    // SAFETY: `module` is the module of a `&'static ThisModule`, loaded while the reference can
    // be used; the text region is fixed once the module is loaded.
    let text = unsafe { &(*module).mem[bindings::mod_mem_type_MOD_TEXT as usize] };
    let base = text.base as usize;
    addr >= base && addr - base < text.size as usize
}
