// SPDX-License-Identifier: GPL-2.0

//! Task work: run a callback in the context of a given user task.
//!
//! C header: [`include/linux/task_work.h`](srctree/include/linux/task_work.h)
//!
//! [`add`] queues a callback with `task_work_add()`; the target task runs it itself, with
//! `current` being that task, when it next goes through one of these points (see
//! `enum task_work_notify_mode`):
//!
//! - [`Notify::Resume`]: on its way back to user mode (or into a guest). A task blocked in the
//!   kernel runs it only after whatever it waits for has happened.
//! - [`Notify::Signal`]: like a signal: a task blocked in an interruptible sleep is woken (its
//!   system call sees `signal_pending()`, returns, and is restarted if it can be), and a task
//!   running on another CPU is sent an IPI.
//! - [`Notify::SignalNoIpi`]: like `Signal` (an interruptible sleep is woken all the same:
//!   `__set_notify_signal()` in `include/linux/sched/signal.h` calls
//!   `wake_up_state(task, TASK_INTERRUPTIBLE)`), but a task running on another CPU is not sent
//!   an IPI: it runs the callback the next time it leaves the kernel anyway, usually at its next
//!   interrupt (not bounded on a `nohz_full` CPU).
//! - and, in every mode, when the task exits: after its `mm` and files are gone
//!   ([`current_is_exiting`]).
//!
//! A target that is stopped (`SIGSTOP`, ptrace) or in an uninterruptible sleep runs nothing
//! until it continues: its pending callbacks, even cancelled ones, keep `rmmod` refused.
//!
//! Callbacks queued on one task may run in any order (the C list is LIFO). The C mode
//! `TWA_NMI_CURRENT` (valid only for `current` in NMI context) and `TWA_NONE` are not offered.
//!
//! # Ownership and module lifetime
//!
//! A callback is any `Send + 'static` value that implements [`Callback`]; every
//! `FnOnce() + Send + 'static` closure does. It is moved into one allocation with the C
//! `callback_head`, and from then on it runs exactly once, or is handed back (by a failed [`add`],
//! or by [`Pending::cancel`]), or is dropped when its allocation is freed: never two of these.
//!
//! `task_work_cancel()` and its siblings are not exported to modules, so once a callback is
//! queued, the C code will call it. Its code is in the caller's module (the `module` argument,
//! `THIS_MODULE`); so each queued callback holds a reference on that module
//! (`try_module_get()`), which it drops as its very last action, and `rmmod` is refused while
//! any callback is still queued. A module whose `init` fails is freed
//! whatever its reference count, so [`add`] refuses to queue until the module is live: no task
//! work from `init`. A cancel through the [`Pending`] handle
//! takes the callback out, so that when the task later calls it, it only frees the allocation and
//! drops the module reference. One window remains that no module can close: the return
//! instruction of the C-called function after `module_put()`. The kernel closes the same window
//! for kthreads with `module_put_and_kthread_exit()`, and has no such helper for task work. The
//! function ends in a tail call to `module_put()` so that, when the compiler emits it as a jump,
//! nothing of the module runs after the reference is gone; `make check` verifies the jump in
//! the built x86-64 modules (`scripts/check-tail-call.sh`), and other architectures are
//! unchecked.
//!
//! The module is the `&'static ThisModule` that [`add`] and [`add_cancelable`] take first, as
//! the kernel crate's registrations do: the module whose code the callback is (in a driver, the
//! one that `Module::init` was given).
//!
//! # Kernel threads
//!
//! A kernel thread never returns to user mode: a callback queued on it would run only when it
//! exits, after `kthread_stop()` has already returned to whoever waits for it. User workers
//! (io_uring and vhost threads, `PF_USER_WORKER`) never return to user mode either; they run
//! task work at points of their own loops that have nothing to do with user mode. [`add`]
//! refuses both with `EINVAL`, and gives the callback back. KUnit test bodies run in kthreads,
//! so they can only queue callbacks on user tasks.
//!
//! # Examples
//!
//! ```ignore
//! use kernel::prelude::*;
//! use kthread_rs::task_work::{self, Notify};
//!
//! // Called in a system call: finish the job when this process returns to user mode.
//! fn finish_later(module: &'static ThisModule) -> Result {
//!     let buf = KVec::from_elem(0u8, 4096, GFP_KERNEL)?;
//!     task_work::add(module, kernel::current!(), Notify::Resume, move || {
//!         pr_info!("{} bytes, in pid {}\n", buf.len(), kernel::current!().pid());
//!     })
//!     .map_err(|(e, _callback)| e)
//! }
//!
//! # let module = kthread_rs::compat::this_module();
//! // Called on a kernel thread (a doctest runs on one), which never returns to user mode.
//! assert_eq!(finish_later(module), Err(EINVAL));
//! # Ok::<(), Error>(())
//! ```
//!
//! A callback that can be called off:
//!
//! ```ignore
//! use kernel::{prelude::*, task::Task};
//! use kthread_rs::task_work::{self, Notify};
//!
//! fn defer(
//!     module: &'static ThisModule,
//!     task: &Task,
//! ) -> Result<task_work::Pending<impl task_work::Callback>> {
//!     task_work::add_cancelable(module, task, Notify::Signal, || pr_info!("ran\n"))
//!         .map_err(|(e, _)| e)
//! }
//!
//! # let module = kthread_rs::compat::this_module();
//! match defer(module, kernel::current!()) {
//!     // Not run yet (this task has not returned to user mode): take it back.
//!     Ok(pending) => drop(pending.cancel()),
//!     // `current` is a kernel thread (as in a doctest): refused.
//!     Err(e) => assert_eq!(e, EINVAL),
//! }
//! # Ok::<(), Error>(())
//! ```

use super::sys;
use core::ptr;
use kernel::{
    bindings,
    prelude::*,
    sync::{Arc, UniqueArc},
    task::Task,
    types::Opaque,
};

mod take;
use take::Take;

/// How the target task is told that it has a callback to run (`enum task_work_notify_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// `TWA_RESUME`: run on the task's next return to user mode.
    Resume,
    /// `TWA_SIGNAL`: interrupt the task like a signal would, then run.
    Signal,
    /// `TWA_SIGNAL_NO_IPI`: as `Signal`, but a task running on another CPU is not interrupted.
    SignalNoIpi,
}

impl Notify {
    fn as_raw(self) -> bindings::task_work_notify_mode {
        match self {
            Notify::Resume => bindings::task_work_notify_mode_TWA_RESUME,
            Notify::Signal => bindings::task_work_notify_mode_TWA_SIGNAL,
            Notify::SignalNoIpi => bindings::task_work_notify_mode_TWA_SIGNAL_NO_IPI,
        }
    }
}

/// What a queued callback does, in the target task.
pub trait Callback: Send + 'static {
    /// Run once, with `current` being the target task, in process context (it may sleep).
    /// [`current_is_exiting`] tells whether the task is exiting.
    fn run(self);
}

impl<F: FnOnce() + Send + 'static> Callback for F {
    fn run(self) {
        self()
    }
}

/// Is the current task exiting (`PF_EXITING`)? A callback that runs at exit finds the task's
/// `mm` and files already released: no user copies, no file descriptors.
///
/// # Context
///
/// Any context.
pub fn current_is_exiting() -> bool {
    task_flags(Task::current_raw()) & bindings::PF_EXITING != 0
}

/// `task->flags`, read once.
fn task_flags(task: *mut bindings::task_struct) -> u32 {
    // SAFETY: `task` is a live task (`current`, or a `&Task`), and `flags` is a plain word that
    // the kernel reads the same way from other tasks; the bits tested here do not change under
    // us once the task runs, except `PF_EXITING`, which is set once and never cleared.
    unsafe { ptr::read_volatile(&raw const (*task).flags) }
}

/// One queued callback: the C `callback_head`, linked into the target's `task_works` list, and
/// the callback.
///
/// # Invariants
///
/// - `work` holds the callback until one of the target task's run, a [`Pending::cancel`], a
///   [`give_back`] or the node's drop takes it out ([`Take`]): exactly one of them gets it.
/// - Once `head` has been handed to `task_work_add()` successfully, the C code owns one `Arc`
///   reference and one reference on `module`, both given back by [`task_work_func`].
/// - `module` is the module whose code the callback is (the caller's `module` argument).
struct Node<W> {
    head: Opaque<bindings::callback_head>,
    work: Take<W>,
    module: &'static ThisModule,
}

// SAFETY: The callback is behind a `Take`, which is `Send` and `Sync` for `W: Send`. `head` is
// touched only through raw pointers by `task_work_add()` and `task_work_run()`, which
// synchronise on the task's `task_works` with `cmpxchg` (and `pi_lock`). `module` never
// changes, and `ThisModule` is `Sync`.
unsafe impl<W: Send> Send for Node<W> {}
// SAFETY: As above: `&Node` gives access to the callback only through its `Take`.
unsafe impl<W: Send> Sync for Node<W> {}

/// Queue `work` to run in the context of `task`; see the [module documentation](self).
///
/// `module` is the module whose code the callback is (`THIS_MODULE`): the queued callback holds
/// a reference on it until it has run.
///
/// On error the callback comes back untouched with the error:
/// - `EINVAL`: `task` is a kernel thread or a user worker, which never returns to user mode;
/// - `ESRCH`: `task` is past the point in its exit where it runs task work;
/// - `ENOMEM`: the allocation failed;
/// - `EBUSY`: `module` is not live: its `init` has not returned yet, or it is being unloaded.
///
/// # Context
///
/// May sleep (the node is allocated with `GFP_KERNEL`).
pub fn add<W: Callback>(
    module: &'static ThisModule,
    task: &Task,
    notify: Notify,
    work: W,
) -> Result<(), (Error, W)> {
    kernel::task::might_sleep();
    // The C code holds the node's only reference.
    let node = new_node(module, task, work)?;
    queue_node(task, notify, node).map_err(|(e, node)| (e, give_back(node)))
}

/// As [`add`], and return a handle that can take the callback back while it has not started.
///
/// `module` is the module whose code the callback is (`THIS_MODULE`).
///
/// # Context
///
/// May sleep.
pub fn add_cancelable<W: Callback>(
    module: &'static ThisModule,
    task: &Task,
    notify: Notify,
    work: W,
) -> Result<Pending<W>, (Error, W)> {
    kernel::task::might_sleep();
    let node = new_node(module, task, work)?;
    let kept = node.clone();
    match queue_node(task, notify, node) {
        Ok(()) => Ok(Pending { node: kept }),
        Err((e, node)) => {
            drop(node);
            Err((e, give_back(kept)))
        }
    }
}

/// A node holding `work`, code of `module`, for `task`; `EINVAL` if `task` never returns to
/// user mode.
fn new_node<W: Callback>(
    module: &'static ThisModule,
    task: &Task,
    work: W,
) -> Result<Arc<Node<W>>, (Error, W)> {
    if task_flags(task.as_ptr()) & (bindings::PF_KTHREAD | bindings::PF_USER_WORKER) != 0 {
        return Err((EINVAL, work));
    }
    let node = match UniqueArc::new_uninit(GFP_KERNEL) {
        Ok(node) => node,
        Err(_) => return Err((ENOMEM, work)),
    };
    Ok(node
        .write(Node {
            head: Opaque::uninit(),
            // INVARIANT: `work` holds the callback: nothing has taken it. A callback that is
            // neither run, cancelled nor handed back is dropped with the node (`Take`'s drop).
            work: Take::new(work),
            module,
        })
        .into())
}

/// Queue `node`, never queued before, on `task`: the C code takes this reference (and one on
/// the node's module) until it calls `task_work_func`. On error the reference comes back.
fn queue_node<W: Callback>(
    task: &Task,
    notify: Notify,
    node: Arc<Node<W>>,
) -> Result<(), (Error, Arc<Node<W>>)> {
    // Queued callbacks run the module's code with no owner to wait for them (H17).
    let module = node.module.as_ptr();
    // SAFETY: The module of a `&'static ThisModule` (the node's).
    if let Err(e) = unsafe { sys::module_get(module) } {
        return Err((e, node));
    }
    let raw = Arc::into_raw(node);
    // SAFETY: `raw` points to the live node (the reference just leaked keeps it).
    let head = Opaque::cast_into(unsafe { &raw const (*raw).head });
    // SAFETY: `head` is in the node, which the leaked reference keeps alive and in place; it
    // was never queued, so no one else uses it.
    unsafe { bindings::init_task_work(head, Some(task_work_func::<W>)) };
    // SAFETY: `task` is a live task (the caller's reference). `head` is initialised and stays
    // valid until `task_work_func` gives back the reference leaked above. `notify` is a valid
    // mode other than `TWA_NMI_CURRENT`.
    let ret = unsafe { bindings::task_work_add(task.as_ptr(), head, notify.as_raw()) };
    if ret != 0 {
        // SAFETY: The C code did not take `head`, so the reference leaked above is still ours,
        // and so is the module reference. The caller runs the module's code, so whatever called
        // it keeps the module.
        let node = unsafe {
            sys::module_put(module);
            Arc::from_raw(raw)
        };
        return Err((Error::from_errno(ret), node));
    }
    // INVARIANT: The C code now holds the leaked reference and the module reference.
    Ok(())
}

/// The callback of a node that was never queued.
fn give_back<W>(node: Arc<Node<W>>) -> W {
    // SAFETY: The node was never queued and no handle was made, so no one else could have
    // taken the callback, or can.
    let work = unsafe { node.work.take_unshared() };
    drop(node);
    work
}

/// The C-called function of every queued callback (`task_work_func_t`): run the callback if it
/// is still there, free the node, and drop the module reference, last, in a tail call.
///
/// # Safety
///
/// `head` is the `head` of a `Node<W>` that [`queue_node`] queued, and the C code calls this once.
unsafe extern "C" fn task_work_func<W: Callback>(head: *mut bindings::callback_head) {
    // SAFETY: By the safety requirement.
    let module = unsafe { run_and_free::<W>(head) };
    // SAFETY: `queue_node` took this reference on the node's module for this call. This is the
    // function's last call, with nothing of ours to run after it, so the compiler makes it a
    // jump (after restoring the frame pointer): `module_put()` returns straight to the C code
    // (`scripts/check-tail-call.sh` checks the built modules).
    unsafe { bindings::module_put(module) }
}

/// The body of [`task_work_func`], kept out of it so that it has no frame: run the callback if
/// it is still there, free the node, and return the node's module (on which the caller holds
/// the reference that `queue_node` took).
///
/// # Safety
///
/// As for [`task_work_func`].
#[inline(never)]
unsafe fn run_and_free<W: Callback>(head: *mut bindings::callback_head) -> *mut bindings::module {
    // SAFETY: By the safety requirement `head` is in a `Node<W>` (`Opaque` is transparent), and
    // the reference that `queue_node` leaked for this call is ours now.
    let node = unsafe {
        Arc::from_raw(kernel::container_of!(
            Opaque::cast_from(head).cast_mut(),
            Node<W>,
            head
        ))
    };
    let module = node.module.as_ptr();
    if let Some(work) = node.work.take() {
        work.run();
    }
    module
}

/// A queued callback that the caller can still call off.
///
/// Dropping the handle leaves the callback queued: it will run.
pub struct Pending<W> {
    node: Arc<Node<W>>,
}

impl<W: Callback> Pending<W> {
    /// Take the callback back if it has not started: the target task will then find an empty
    /// node, which it only frees (releasing its module reference). Returns `None` if the
    /// callback has started or was taken back already.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn cancel(&self) -> Option<W> {
        self.node.work.take()
    }
}
