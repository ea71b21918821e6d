// SPDX-License-Identifier: GPL-2.0

//! Kernel threads with owned handles: stop-before-drop, typed results, parking, scopes.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)
//!
//! A thread runs a closure that owns its data. Its handle owns the thread: dropping the handle
//! stops the thread and waits for it ([`kthread_stop()`]), so no thread outlives the data it
//! uses. The body receives a [`Context`], the only way to ask [`Context::should_stop`] and its
//! siblings: those C functions are valid only on a kthread, and a [`Context`] exists only on the
//! stack of the thread it belongs to.
//!
//! # Examples
//!
//! ```ignore
//! use kthread_rs::thread::{self, Exit, Wake};
//! use kernel::time::Delta;
//!
//! # let module = kthread_rs::compat::this_module();
//! // A polling thread: wake every 10 ms until stopped; returns how often it polled. `module`
//! // is the driver's `&'static ThisModule` (the one `Module::init` was given).
//! let poller = thread::spawn(module, fmt!("mydrv-poll/{}", 0), |ctx| {
//!     let mut polls = 0u64;
//!     while ctx.sleep(Delta::from_millis(10)) != Wake::Stop {
//!         polls += 1;
//!     }
//!     polls
//! })?;
//! // ... later, e.g. in the driver's remove():
//! match poller.stop()? {
//!     Exit::Returned(polls) => pr_info!("polled {polls} times\n"),
//!     Exit::NeverRan => pr_info!("stopped before it ran\n"),
//! }
//! # Ok::<(), Error>(())
//! ```
//!
//! [`kthread_stop()`]: srctree/kernel/kthread.c

use super::sys;
use core::{
    cell::UnsafeCell,
    mem::ManuallyDrop,
    ops::Deref,
    ptr::{self, NonNull},
};
use kernel::{
    bindings, cpu::CpuId, error::from_err_ptr, fmt, prelude::*, str::CString, sync::aref::ARef,
    sync::Arc, task::Task,
};

#[cfg(CONFIG_BLK_CGROUP)]
mod blkcg;
mod context;
mod detached;
mod handle;
mod handoff;
mod header;
mod members;
mod mm;
mod new;
mod origin;
mod park;
mod percpu;
mod scope;

#[cfg(CONFIG_BLK_CGROUP)]
pub use blkcg::{BlkcgGuard, CgroupSubsysState};
pub use context::{Context, Wake};
pub use detached::{spawn_detached, ThreadGroup};
use handle::Handle;
pub use handle::Thread;
use header::{begin_wait, Header, ThreadOps, FREEZABLE, ORPHAN, STARTED};
pub(crate) use new::{check_node, check_possible, escape_percent};
use new::{new_thread, Place};
pub use new::{NewThread, Parkable, Unparkable};
pub use origin::{origin, BodyId, Origin};
pub use park::{create_parkable, create_parkable_on_cpu, spawn_parkable, ParkableThread};
pub use percpu::PerCpuThreads;
pub use scope::{scope, Scope, ScopedThread};

/// "Any NUMA node", the C `NUMA_NO_NODE`.
pub const NUMA_NO_NODE: i32 = bindings::NUMA_NO_NODE;

/// How a thread ended, as seen by [`Thread::stop`] and [`Thread::join`].
#[derive(Debug, PartialEq, Eq)]
pub enum Exit<T> {
    /// The body ran and returned this value.
    Returned(T),
    /// The thread was stopped before its body ever ran (this can happen even after it was
    /// started: a thread checks for a stop request once more before it calls its body). The
    /// body closure and everything it owned have been dropped.
    NeverRan,
}

impl<T> Exit<T> {
    /// The value the body returned, or `None` if it never ran.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn returned(self) -> Option<T> {
        match self {
            Exit::Returned(v) => Some(v),
            Exit::NeverRan => None,
        }
    }
}

/// A thread body, run once in the new thread.
trait Body: Send {
    type Output: Send;
    /// Parkable bodies keep the thread alive until stopped, so that `kthread_park()` never
    /// finds it exiting (which WARNs).
    const PARKABLE: bool;
    fn run(self, ctx: &Context<'_>) -> Self::Output;
}

struct Once<F>(F);

impl<F, T> Body for Once<F>
where
    F: FnOnce(&Context<'_>) -> T + Send,
    T: Send,
{
    type Output = T;
    const PARKABLE: bool = false;
    fn run(self, ctx: &Context<'_>) -> T {
        (self.0)(ctx)
    }
}

/// The single allocation behind a thread: header, body slot and result slot.
///
/// # Invariants
///
/// - `header` is first (`repr(C)`): a pointer to it is a pointer to the whole.
/// - `body` is written only before the thread is woken, and taken only by the thread.
/// - `result` is written only by the thread, and read only after the thread has exited.
/// - The thread holds a raw pointer to `Self`. Each handle (or scope record) owns one `Arc`
///   reference, and gives it up only after the thread has exited, or hands it to the thread
///   itself (an orphan), which gives it up last ([`header::leave`]).
#[repr(C)]
#[pin_data]
struct Shared<B: Body> {
    #[pin]
    header: Header,
    body: UnsafeCell<Option<B>>,
    result: UnsafeCell<Option<B::Output>>,
}

// SAFETY: `body` and `result` are handed between the creating task and the thread with the
// ordering of `wake_up_process()` and of the `exited` completion that `kthread_stop()` waits
// for (see the invariants); `B` and `B::Output` are `Send`. `Header` is thread-safe.
unsafe impl<B: Body> Send for Shared<B> {}
// SAFETY: As for `Send`: shared access never touches `body` or `result` concurrently.
unsafe impl<B: Body> Sync for Shared<B> {}

impl<B: Body> Shared<B> {
    const OPS: ThreadOps = ThreadOps {
        release: release_shared::<B>,
        drop_body: drop_body::<B>,
    };
}

/// Drop the body of the `Shared<B>` that starts with `h` (a thread stopped before it ran).
///
/// # Safety
///
/// `h` is the header of a live `Shared<B>` whose thread has exited without taking its body.
unsafe fn drop_body<B: Body>(h: NonNull<Header>) {
    let shared = h.as_ptr().cast::<Shared<B>>();
    // SAFETY: By the safety requirement, nothing else touches `body` (invariants of `Shared`).
    drop(unsafe { (*(*shared).body.get()).take() });
}

/// Give up one `Arc` reference of the `Shared<B>` that starts with `h`.
///
/// # Safety
///
/// `h` is the header of a `Shared<B>` whose reference (from `Arc::into_raw`) the caller owns.
unsafe fn release_shared<B: Body>(h: NonNull<Header>) {
    // SAFETY: The header is first in the `repr(C)` `Shared<B>`; by the safety requirement the
    // pointer carries a reference that `Arc::into_raw` gave out.
    drop(unsafe { Arc::from_raw(h.as_ptr().cast_const().cast::<Shared<B>>()) });
}

/// Take the result of the `Shared<B>` that starts with `h`.
///
/// # Safety
///
/// `h` is the header of a live `Shared<B>` whose thread has exited, and the caller is the
/// only one to read the result (a handle, used by one task).
unsafe fn take_result<B: Body>(h: NonNull<Header>) -> Option<B::Output> {
    let shared = h.as_ptr().cast::<Shared<B>>();
    // SAFETY: By the safety requirement and the invariants of `Shared`.
    unsafe { (*(*shared).result.get()).take() }
}

/// The C `threadfn` of every thread made here with a handle.
///
/// # Safety
///
/// `data` is the `Shared<B>` made for this thread by [`create_raw`], kept alive until the
/// thread has exited (the invariant of [`Shared`]).
unsafe extern "C" fn trampoline<B: Body>(data: *mut c_void) -> c_int {
    let shared = data.cast::<Shared<B>>();
    {
        // SAFETY: By the function's safety requirement.
        let (hdr, body, result) =
            unsafe { (&(*shared).header, &(*shared).body, &(*shared).result) };
        hdr.set_flags(STARTED);
        if hdr.flags() & FREEZABLE != 0 {
            // SAFETY: Makes `current`, this kthread, freezable; always valid on a kthread.
            unsafe { bindings::set_freezable() };
        }
        // SAFETY: `current` is the kthread whose header is `hdr`.
        let ctx = unsafe { Context::new(hdr) };
        // SAFETY: By the invariants of `Shared`, only this thread touches `body` now.
        if let Some(body) = unsafe { (*body.get()).take() } {
            let out = body.run(&ctx);
            // SAFETY: By the invariants of `Shared`, `result` is read only after this thread
            // exited (or by this thread, when it frees itself).
            unsafe { *result.get() = Some(out) };
        }
        ctx.end_leaked_guards();
        hdr.returned.complete_all();
        if B::PARKABLE && hdr.flags() & ORPHAN == 0 {
            ctx.idle_until_stop();
        }
    }
    // The thread's typed result travels through `result`, never through the C `int` (H2).
    // SAFETY: The current thread's header; the references above have ended.
    unsafe { header::leave(NonNull::new_unchecked(shared.cast::<Header>())) }
}

/// The size of the per-thread allocation (the `Arc` of the control block, without its
/// reference count) of a thread that runs a closure of type `F`; for the benchmarks.
#[allow(dead_code)]
pub(crate) fn control_block_size<F, T>(_f: &F) -> usize
where
    F: FnOnce(&Context<'_>) -> T + Send,
    T: Send,
{
    size_of::<Shared<Once<F>>>()
}

/// A thread name formatted on the stack, so that naming a thread allocates nothing when the
/// name is short (as it nearly always is: `comm` keeps 15 bytes of it).
struct StackName {
    buf: [u8; 64],
    len: usize,
}

impl core::fmt::Write for StackName {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        // Keep one byte for the NUL; a NUL inside the name is refused, as `CString` does.
        if end >= self.buf.len() || s.as_bytes().contains(&0) {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Format `name` (on the stack if it fits, else on the heap) and pass it to `f`.
fn with_name<R>(name: fmt::Arguments<'_>, f: impl FnOnce(&CStr) -> Result<R>) -> Result<R> {
    let mut stack = StackName {
        buf: [0; 64],
        len: 0,
    };
    if core::fmt::Write::write_fmt(&mut stack, name).is_ok() {
        // `buf` is zeroed beyond `len`, and `write_str` let no NUL in before it.
        let name = CStr::from_bytes_with_nul(&stack.buf[..=stack.len]).map_err(|_| EINVAL)?;
        return f(name);
    }
    f(&CString::try_from_fmt(name)?)
}

/// Create a kthread running `body`, code of `module` (not yet woken), link it into the
/// registry, and take the handle's task reference.
///
/// # Context
///
/// May sleep.
fn create_raw<'a, B: Body + 'a>(
    module: &'static ThisModule,
    place: Place,
    name: &CStr,
    body: B,
) -> Result<(ARef<Task>, Arc<Shared<B>>)> {
    kernel::task::might_sleep();
    match place {
        Place::Node(node) => check_node(node)?,
        Place::Cpu(cpu) => check_possible(cpu)?,
    }
    let shared = Arc::pin_init(
        pin_init!(Shared {
            header <- Header::new(module, &Shared::<B>::OPS, 0),
            body: UnsafeCell::new(Some(body)),
            result: UnsafeCell::new(None),
        }),
        GFP_KERNEL,
    )?;
    let data = Arc::as_ptr(&shared).cast_mut().cast::<c_void>();
    let raw = match place {
        Place::Node(node) => {
            // SAFETY: `trampoline::<B>` accepts `data`, which stays alive until the thread
            // exits (invariant of `Shared`). The name goes through "%s", never as the format.
            unsafe {
                bindings::kthread_create_on_node(
                    Some(trampoline::<B>),
                    data,
                    node,
                    c"%s".as_char_ptr(),
                    name.as_char_ptr(),
                )
            }
        }
        Place::Cpu(cpu) => {
            let fmt = escape_percent(name)?;
            // SAFETY: As above; `cpu` is a possible CPU (checked above), and `fmt` is a
            // NUL-terminated format without conversions.
            unsafe {
                bindings::kthread_create_on_cpu(
                    Some(trampoline::<B>),
                    data,
                    cpu.as_u32(),
                    fmt.as_ptr().cast(),
                )
            }
        }
    };
    // On error there is no thread: dropping `shared` drops the body, nothing leaks.
    let raw = from_err_ptr(raw)?;
    // SAFETY: `raw` is the new, live task; `Task` is a transparent wrapper around
    // `task_struct`, and `ARef::from` takes the handle's own reference before the first
    // wake-up (H1).
    let task = ARef::from(unsafe { &*raw.cast::<Task>() });
    // SAFETY: `raw` is not woken yet and runs on `shared`, which the caller's handle keeps in
    // place until it has claimed the entry (or handed the reference to the thread), with its
    // reference on the task.
    unsafe { shared.header.register(raw) };
    Ok((task, shared))
}

/// How the thread ended, from its result slot.
///
/// # Safety
///
/// The thread has exited; `take` and `h` are those of a [`Handle`] or scope record.
unsafe fn take_exit<T>(
    take: unsafe fn(NonNull<Header>) -> Option<T>,
    h: NonNull<Header>,
) -> Exit<T> {
    // SAFETY: By the function's safety requirement.
    match unsafe { take(h) } {
        Some(v) => Exit::Returned(v),
        None => Exit::NeverRan,
    }
}

fn to_result(err: c_int) -> Result {
    kernel::error::to_result(err)
}

/// Create a thread named `name` that will run `f`, on any CPU and node; start it with
/// [`NewThread::start`] after configuring it.
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`).
///
/// # Examples
///
/// ```ignore
/// use kernel::cpu::CpuId;
/// use kthread_rs::thread::{self, Exit};
///
/// # let module = kthread_rs::compat::this_module();
/// // A low-priority housekeeping thread on CPU 0 that returns a status.
/// let mut t = thread::create(module, fmt!("mydrv-house"), |ctx| -> Result<u32> {
///     let mut rounds = 0;
///     while !ctx.should_stop() {
///         rounds += 1;
///         ctx.sleep(kernel::time::Delta::from_millis(50));
///     }
///     Ok(rounds)
/// })?;
/// t.bind(CpuId::from_u32(0).ok_or(EINVAL)?)?.set_nice(10)?;
/// let t = t.start();
/// if let Exit::Returned(status) = t.stop()? {
///     let _rounds = status?;
/// }
/// # Ok::<(), Error>(())
/// ```
///
/// # Context
///
/// May sleep.
pub fn create<F, T>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    f: F,
) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    kernel::task::might_sleep();
    create_on_node(module, NUMA_NO_NODE, name, f)
}

/// Like [`create`], with the thread's memory on NUMA node `node` ([`NUMA_NO_NODE`]: any).
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`). `EINVAL` if `node` is
/// not an online node.
///
/// # Context
///
/// May sleep.
pub fn create_on_node<F, T>(
    module: &'static ThisModule,
    node: i32,
    name: fmt::Arguments<'_>,
    f: F,
) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    kernel::task::might_sleep();
    new_thread(module, Place::Node(node), name, Once(f))
}

/// Like [`create`], with the thread bound to `cpu`, as the C `kthread_create_on_cpu()` does.
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`). The binding holds while
/// `cpu` is online; see [`create_parkable_on_cpu`] for hotplug.
///
/// # Context
///
/// May sleep.
pub fn create_on_cpu<F, T>(
    module: &'static ThisModule,
    cpu: CpuId,
    name: fmt::Arguments<'_>,
    f: F,
) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    kernel::task::might_sleep();
    new_thread(module, Place::Cpu(cpu), name, Once(f))
}

/// Create and start a thread named `name` that runs `f` (the C `kthread_run()`).
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`). `name` is formatted by
/// Rust (`fmt!("mydrv/{}", id)`) and never used as a C format. The task's `comm` keeps its
/// first 15 bytes.
///
/// # Context
///
/// May sleep.
pub fn spawn<F, T>(module: &'static ThisModule, name: fmt::Arguments<'_>, f: F) -> Result<Thread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    kernel::task::might_sleep();
    Ok(create(module, name, f)?.start())
}
