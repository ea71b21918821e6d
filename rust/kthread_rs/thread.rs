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
//! // A polling thread: wake every 10 ms until stopped; returns how often it polled.
//! let poller = thread::spawn(fmt!("mydrv-poll/{}", 0), |ctx| {
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
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::{ControlFlow, Deref},
    ptr::{self, NonNull},
    sync::atomic::{AtomicBool, Ordering},
};
use kernel::{
    bindings,
    cpu::CpuId,
    cpumask::Cpumask,
    error::from_err_ptr,
    fmt,
    mm::MmWithUser,
    prelude::*,
    static_lock_class,
    str::CString,
    sync::aref::ARef,
    sync::{Arc, Completion},
    task::{Task, MAX_SCHEDULE_TIMEOUT, TASK_INTERRUPTIBLE},
    time::{msecs_to_jiffies, Delta},
    types::Opaque,
};

mod detached;
pub use detached::{spawn_detached, ThreadGroup};

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
    pub fn returned(self) -> Option<T> {
        match self {
            Exit::Returned(v) => Some(v),
            Exit::NeverRan => None,
        }
    }
}

/// Why [`Context::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The condition became true.
    Condition,
    /// The thread was asked to stop ([`Context::should_stop`]).
    Stop,
    /// The thread was asked to park ([`Context::should_park`]).
    Park,
    /// The timeout expired.
    Timeout,
}

/// The thread body's view of its own kthread: the only way to reach the C functions that are
/// valid on a kthread only (`kthread_should_stop()` and friends).
///
/// A `Context` is made by the thread itself before it calls its body and is lent to the body;
/// it is neither [`Send`] nor [`Sync`], so it cannot leave the thread, and it cannot be made
/// anywhere else.
///
/// # Invariants
///
/// `current` is the kthread, created by this module, whose control block is `control`.
pub struct Context<'a> {
    control: &'a Control,
    /// Set while a [`PerCpuThreads`] step runs with migration disabled: parking then would
    /// keep the CPU pinned and hang its offlining, so the step loop parks after the step.
    pinned: core::cell::Cell<bool>,
    /// The user mm that [`Context::use_mm`] lent to this thread, or null.
    mm: core::cell::Cell<*mut bindings::mm_struct>,
    /// Set while a `BlkcgGuard` associates this thread with a blkcg.
    #[cfg_attr(not(CONFIG_BLK_CGROUP), allow(dead_code))]
    blkcg: core::cell::Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

/// A user address space lent to a kthread (`kthread_use_mm()`), until the guard is dropped
/// (`kthread_unuse_mm()`); see [`Context::use_mm`]. While it lives, the thread's user copies
/// (`kernel::uaccess`) reach that address space.
///
/// # Invariants
///
/// `kthread_use_mm(mm)` was called on the current kthread, whose [`Context`] has `slot`, and
/// `slot` holds `mm`.
pub struct MmGuard<'a> {
    slot: &'a core::cell::Cell<*mut bindings::mm_struct>,
    mm: ARef<MmWithUser>,
    _not_send: PhantomData<*mut ()>,
}

impl MmGuard<'_> {
    /// The address space in use.
    pub fn mm(&self) -> &MmWithUser {
        &self.mm
    }
}

impl Drop for MmGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, the current kthread uses `mm` since `kthread_use_mm()`,
        // and this is the matching call (the guard is not `Send`: this is the same thread).
        unsafe { bindings::kthread_unuse_mm(self.mm.as_raw()) };
        self.slot.set(ptr::null_mut());
        // `mm` (the `mmget()` reference) is released after the thread stopped using it.
    }
}

/// A cgroup's state for one controller, the C `struct cgroup_subsys_state`; here, that of the
/// io controller (blkcg), for [`Context::associate_blkcg`]. The kernel crate has no cgroup
/// abstraction yet: a driver gets one from C (for example `bio_blkcg_css()` of the bio that it
/// serves, valid while it holds the bio).
#[cfg(CONFIG_BLK_CGROUP)]
#[repr(transparent)]
pub struct CgroupSubsysState(Opaque<bindings::cgroup_subsys_state>);

// SAFETY: A css is reference-counted C state made to be used from any task.
#[cfg(CONFIG_BLK_CGROUP)]
unsafe impl Send for CgroupSubsysState {}
// SAFETY: As for `Send`; the only operation here passes it to C, which counts its own use.
#[cfg(CONFIG_BLK_CGROUP)]
unsafe impl Sync for CgroupSubsysState {}

#[cfg(CONFIG_BLK_CGROUP)]
impl CgroupSubsysState {
    /// Borrow the css at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a css of the io controller, and the caller holds something that keeps it alive
    /// (a reference, or a bio charged to it) for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::cgroup_subsys_state) -> &'a Self {
        // SAFETY: By the function's safety requirements; the type is transparent.
        unsafe { &*ptr.cast() }
    }

    /// The C pointer.
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
#[cfg(CONFIG_BLK_CGROUP)]
pub struct BlkcgGuard<'a> {
    slot: &'a core::cell::Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

#[cfg(CONFIG_BLK_CGROUP)]
impl Drop for BlkcgGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the current kthread is associated (the guard is not
        // `Send`: this is the same thread); null ends it and drops the C reference.
        unsafe { bindings::kthread_associate_blkcg(ptr::null_mut()) };
        self.slot.set(false);
    }
}

impl Context<'_> {
    /// Work on behalf of a user process: use its address space, `mm`, until the returned guard
    /// is dropped (the C `kthread_use_mm()`/`kthread_unuse_mm()`, as vhost and USB gadget
    /// drivers do). `mm` is a counted reference (`mmget()`), so the address space stays while
    /// the guard lives, even if the process exits meanwhile.
    ///
    /// Do user copies only while the guard lives: after `kthread_unuse_mm()` the CPU may keep
    /// the address space's page tables lazily, so a copy could still reach it, and the kernel
    /// does not refuse it (the tests show `current->mm` cleared, not the copies refused).
    ///
    /// `EBUSY` if this thread already uses an mm (the C code would WARN). A guard that is leaked
    /// rather than dropped leaks the reference; the thread then stops using the mm when its body
    /// returns, so its exit never releases an mm it does not own.
    pub fn use_mm(&self, mm: ARef<MmWithUser>) -> Result<MmGuard<'_>> {
        if !self.mm.get().is_null() {
            return Err(EBUSY);
        }
        // SAFETY: `current` is a kthread that uses no mm (by the type invariant and the check
        // above: only this function sets one), and `mm` is a live, counted mm.
        unsafe { bindings::kthread_use_mm(mm.as_raw()) };
        self.mm.set(mm.as_raw());
        // INVARIANT: `kthread_use_mm(mm)` was just called on this thread; the slot holds `mm`.
        Ok(MmGuard {
            slot: &self.mm,
            mm,
            _not_send: PhantomData,
        })
    }

    /// Do block I/O on behalf of another cgroup: bios that this thread submits are charged to
    /// `css` (an io controller css), until the returned guard is dropped. The C
    /// `kthread_associate_blkcg()`, as the loop driver does for the submitter of each request.
    /// The association holds its own reference on `css` (`css_get()`), so `css` need only be
    /// valid for this call.
    ///
    /// `EBUSY` if this thread is associated already (a second C call would silently replace
    /// the first, and the first guard's drop would end the second). A leaked guard is ended
    /// when the body returns: the kthread's exit would WARN about it.
    #[cfg(CONFIG_BLK_CGROUP)]
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

    /// Has [`Thread::stop`] (or a drop of the handle) asked this thread to stop?
    ///
    /// The C `kthread_should_stop()`. A body returns soon after this becomes true.
    pub fn should_stop(&self) -> bool {
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_should_stop() }
    }

    /// Has [`ParkableThread::park`] asked this thread to park?
    ///
    /// The C `kthread_should_park()`. Parkable threads are parked for their body by the step
    /// loop, so a body rarely needs this.
    pub fn should_park(&self) -> bool {
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_should_park() }
    }

    /// Park here if parking was asked for, until unparked. The C `kthread_parkme()`.
    ///
    /// In a [`PerCpuThreads`] step this returns at once: the step loop parks after the step,
    /// once migration is enabled again.
    pub fn parkme(&self) {
        if self.pinned.get() {
            return;
        }
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        unsafe { bindings::kthread_parkme() }
    }

    /// Freeze here if the system is freezing, then tell whether the thread should stop.
    ///
    /// The C `kthread_freezable_should_stop()`; `was_frozen` is set when the thread was frozen.
    /// Only threads made freezable with [`NewThread::set_freezable`] are ever frozen.
    pub fn freezable_should_stop(&self, was_frozen: Option<&mut bool>) -> bool {
        let p = was_frozen.map_or(core::ptr::null_mut(), core::ptr::from_mut);
        // SAFETY: By the type invariant, `current` is a kthread made by `kthread_create_*()`.
        // `p` is null or points to a live `bool`, as the C function expects.
        unsafe { bindings::kthread_freezable_should_stop(p) }
    }

    /// Sleep until `cond` is true, the thread is asked to stop or to park, or `timeout` expires.
    ///
    /// The sleep is interruptible (and freezable for a freezable thread), so [`Thread::stop`]
    /// always ends it. Whoever makes `cond` true calls [`Thread::wake_up`] afterwards. `cond`
    /// runs with the task state already set, as in C's `wait_event()`: it must not sleep.
    pub fn wait_until(&self, mut cond: impl FnMut() -> bool, timeout: Option<Delta>) -> Wake {
        let mut left: c_long = match timeout {
            None => MAX_SCHEDULE_TIMEOUT,
            Some(d) => {
                let ms = u32::try_from(d.as_millis().max(0)).unwrap_or(u32::MAX);
                // `msecs_to_jiffies()` saturates at `MAX_JIFFY_OFFSET`, far below `c_long::MAX`.
                c_long::try_from(msecs_to_jiffies(ms)).unwrap_or(MAX_SCHEDULE_TIMEOUT - 1)
            }
        };
        let mut state = TASK_INTERRUPTIBLE;
        if self.control.freezable.load(Ordering::Relaxed) {
            state |= bindings::TASK_FREEZABLE as c_int;
        }
        let wq = self.control.wq.get();
        let wait = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `wait` is valid for writes and lives until the end of this function.
        unsafe { bindings::init_wait(wait.get()) };
        let why = loop {
            // SAFETY: `wq` was initialised by `Control::new` and outlives `self`; `wait` is
            // initialised above. This also sets the task state, with the barrier that pairs
            // with the waker's, so a wake-up after `cond` became true is not lost.
            unsafe { bindings::prepare_to_wait(wq, wait.get(), state) };
            if cond() {
                break Wake::Condition;
            }
            if self.should_stop() {
                break Wake::Stop;
            }
            if self.should_park() {
                break Wake::Park;
            }
            if left == 0 {
                break Wake::Timeout;
            }
            // SAFETY: Sleeping is allowed here: a kthread body runs in process context with no
            // lock held by this function. Any timeout value is accepted.
            left = unsafe { bindings::schedule_timeout(left) };
        };
        // SAFETY: `wq` and `wait` are the pair passed to `prepare_to_wait()` above.
        unsafe { bindings::finish_wait(wq, wait.get()) };
        why
    }

    /// Sleep for `d`, or less if the thread is asked to stop or to park.
    pub fn sleep(&self, d: Delta) -> Wake {
        self.wait_until(|| false, Some(d))
    }

    /// The context of the current thread, whose control block is `control`.
    ///
    /// # Safety
    ///
    /// `current` is the kthread, created by this module, whose control block is `control`.
    unsafe fn new(control: &Control) -> Context<'_> {
        // INVARIANT: By the function's safety requirement.
        Context {
            control,
            pinned: core::cell::Cell::new(false),
            mm: core::cell::Cell::new(ptr::null_mut()),
            blkcg: core::cell::Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// After the body: end what a leaked (rather than dropped) guard still holds. The exit
    /// would otherwise release an mm that this thread only borrowed ([`MmGuard`]), and WARN
    /// about (and leak) a blkcg association (`BlkcgGuard`).
    fn end_leaked_guards(&self) {
        let leaked_mm = self.mm.get();
        if !leaked_mm.is_null() {
            // SAFETY: The slot is set only between `kthread_use_mm()` and the guard's drop.
            unsafe { bindings::kthread_unuse_mm(leaked_mm) };
            self.mm.set(ptr::null_mut());
        }
        #[cfg(CONFIG_BLK_CGROUP)]
        if self.blkcg.replace(false) {
            // SAFETY: `current` is a kthread (the type invariant); null ends the association
            // and drops the reference that `kthread_associate_blkcg()` took.
            unsafe { bindings::kthread_associate_blkcg(ptr::null_mut()) };
        }
    }

    fn idle_until_stop(&self) {
        while self.wait_until(|| false, None) != Wake::Stop {
            self.parkme();
        }
    }
}

/// What a thread and its handles share, whatever the body's type.
///
/// # Invariants
///
/// - `wq` and `returned` are initialised.
/// - `stopped` is set exactly when `kthread_stop()` has been called (once) on the thread.
#[pin_data]
struct Control {
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
    #[pin]
    returned: Completion,
    freezable: AtomicBool,
    stopped: AtomicBool,
}

impl Control {
    fn new() -> impl PinInit<Self> {
        // INVARIANT: `wq` and `returned` are initialised here; `stopped` starts false.
        pin_init!(Self {
            wq <- Opaque::ffi_init(|slot: *mut bindings::wait_queue_head| {
                // SAFETY: `slot` is valid for writes and pinned (in an `Arc` or a `KBox`).
                unsafe { sys::init_waitqueue_head(slot, c"kthread_rs::thread", static_lock_class!()) }
            }),
            returned <- Completion::new(),
            freezable: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// Stop `task`, whose control block this is, and wait until it has exited; at most once.
    ///
    /// # Safety
    ///
    /// `task` is the thread of this control block, and calls are not concurrent (each handle
    /// is owned by one task, and the scope and its handles live on one task).
    unsafe fn stop(&self, task: &Task) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            // SAFETY: `task` is a kthread made by `kthread_create_*()`; the caller's `ARef`
            // keeps it alive even if the body has returned and the thread exited (H1). By the
            // invariant this is the only call: a second `kthread_stop()` would wait forever.
            unsafe { bindings::kthread_stop(task.as_ptr()) };
        }
    }

    /// Like [`Control::stop`], and give up the caller's task reference in the same call (the C
    /// `kthread_stop_put()`).
    ///
    /// # Safety
    ///
    /// As for [`Control::stop`].
    unsafe fn stop_put(&self, task: ARef<Task>) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: As in `stop`; `kthread_stop_put()` consumes the reference that `into_raw`
        // hands over, after the thread has exited.
        unsafe { bindings::kthread_stop_put(ARef::into_raw(task).as_ptr().cast()) };
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

/// The body of a [`PerCpuThreads`] thread: a step loop that runs steps only on its CPU.
///
/// Modules cannot mark a thread per-CPU (`kthread_set_per_cpu()` is not exported), so when its
/// CPU starts going offline the scheduler pushes the bound thread away and breaks its binding,
/// before any hotplug teardown callback can park it. So each step runs with migration disabled
/// (which the scheduler honours until the thread is parked), and only on the thread's CPU; a
/// thread found elsewhere runs no step and waits for the park that the teardown sends.
struct PerCpuSteps<S> {
    cpu: CpuId,
    state: S,
    step: fn(&mut S, &Context<'_>) -> ControlFlow<()>,
}

impl<S: Send> Body for PerCpuSteps<S> {
    type Output = S;
    const PARKABLE: bool = true;
    fn run(self, ctx: &Context<'_>) -> S {
        let PerCpuSteps {
            cpu,
            mut state,
            step,
        } = self;
        while !ctx.should_stop() {
            if ctx.should_park() {
                ctx.parkme();
                continue;
            }
            // SAFETY: Paired with the `migrate_enable()` below, on this task; the step may
            // sleep, which is allowed with migration disabled.
            unsafe { bindings::migrate_disable() };
            let home = CpuId::current() == cpu;
            let flow = if home {
                ctx.pinned.set(true);
                let flow = step(&mut state, ctx);
                ctx.pinned.set(false);
                flow
            } else {
                ControlFlow::Continue(())
            };
            // SAFETY: Paired with the `migrate_disable()` above.
            unsafe { bindings::migrate_enable() };
            if !home {
                // Pushed off a CPU that is going offline: wait for the teardown's park (or a
                // stop); the online callback re-binds the thread before it unparks it. If the
                // offlining was rolled back instead (a later teardown failed), no park comes:
                // go home by ourselves once the CPU is active again.
                if ctx.wait_until(|| false, Some(Delta::from_millis(10))) == Wake::Timeout
                    && cpu_active(cpu)
                {
                    let _ = set_affinity(Task::current_raw(), cpu);
                }
            } else if flow.is_break() {
                break;
            }
        }
        state
    }
}

/// The single allocation behind a thread: control block, body slot and result slot.
///
/// # Invariants
///
/// - `body` is written only before the thread is woken, and taken only by the thread.
/// - `result` is written only by the thread, and read only after the thread has exited.
/// - The thread holds a raw pointer to `Self`; every handle stops the thread (waiting for its
///   exit) before it drops its `Arc`, so that pointer never dangles while the thread runs.
#[pin_data]
struct Shared<B: Body> {
    #[pin]
    control: Control,
    body: UnsafeCell<Option<B>>,
    result: UnsafeCell<Option<B::Output>>,
}

// SAFETY: `body` and `result` are handed between the creating task and the thread with the
// ordering of `wake_up_process()` and of the `exited` completion that `kthread_stop()` waits
// for (see the invariants); `B` and `B::Output` are `Send`. `Control` is thread-safe.
unsafe impl<B: Body> Send for Shared<B> {}
// SAFETY: As for `Send`: shared access never touches `body` or `result` concurrently.
unsafe impl<B: Body> Sync for Shared<B> {}

/// The typed view of a thread's shared state that its handle needs, whatever the body's type.
trait Core<T>: Send + Sync {
    fn control(&self) -> &Control;

    /// # Safety
    ///
    /// The thread has exited.
    unsafe fn take_result(&self) -> Option<T>;

    /// The body's identity: its C `threadfn`.
    fn body_id(&self) -> BodyId;
}

impl<B: Body> Core<B::Output> for Shared<B> {
    fn control(&self) -> &Control {
        &self.control
    }

    unsafe fn take_result(&self) -> Option<B::Output> {
        // SAFETY: The caller guarantees that the thread has exited, so by the invariant
        // nothing else accesses `result`; handles are not used concurrently.
        unsafe { (*self.result.get()).take() }
    }

    fn body_id(&self) -> BodyId {
        BodyId(trampoline::<B> as *const () as usize)
    }
}

/// The C `threadfn` of every thread made here.
///
/// # Safety
///
/// `data` is the `Shared<B>` made for this thread by [`create_raw`], kept alive until the
/// thread has exited (the invariant of [`Shared`]).
unsafe extern "C" fn trampoline<B: Body>(data: *mut c_void) -> c_int {
    // SAFETY: By the function's safety requirement.
    let shared = unsafe { &*data.cast::<Shared<B>>() };
    let control = &shared.control;
    if control.freezable.load(Ordering::Relaxed) {
        // SAFETY: Makes `current`, this kthread, freezable; always valid on a kthread.
        unsafe { bindings::set_freezable() };
    }
    // SAFETY: `current` is the kthread whose control block is `control`.
    let ctx = unsafe { Context::new(control) };
    // SAFETY: By the invariants of `Shared`, only this thread touches `body` now.
    if let Some(body) = unsafe { (*shared.body.get()).take() } {
        let out = body.run(&ctx);
        // SAFETY: By the invariants of `Shared`, the handle reads `result` only after this
        // thread exited.
        unsafe { *shared.result.get() = Some(out) };
    }
    ctx.end_leaked_guards();
    control.returned.complete_all();
    if B::PARKABLE {
        ctx.idle_until_stop();
    }
    // The thread's typed result travels through `result`, never through this `int` (H2).
    0
}

/// Where a new thread runs.
#[derive(Clone, Copy)]
enum Place {
    Node(i32),
    Cpu(CpuId),
}

/// `EINVAL` unless `cpu` is a possible CPU (`CpuId` only guarantees `cpu < nr_cpu_ids`).
fn check_possible(cpu: CpuId) -> Result {
    // SAFETY: `cpu_possible_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
    let possible = unsafe {
        bindings::cpumask_test_cpu(
            cpu.as_u32() as c_int,
            &raw mut bindings::__cpu_possible_mask,
        )
    };
    if possible {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// Is `cpu` active (online, and taking tasks)?
fn cpu_active(cpu: CpuId) -> bool {
    // SAFETY: `cpu_active_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
    unsafe {
        bindings::cpumask_test_cpu(cpu.as_u32() as c_int, &raw mut bindings::__cpu_active_mask)
    }
}

/// Bind `task` to `cpu` (the C `set_cpus_allowed_ptr()`); kernel threads may be bound to any
/// online CPU this way, even with PF_NO_SETAFFINITY set.
fn set_affinity(task: *mut bindings::task_struct, cpu: CpuId) -> Result {
    let mut mask = kernel::cpumask::CpumaskVar::new_zero(GFP_KERNEL)?;
    mask.set(cpu);
    // SAFETY: Callers pass a live task; `mask` is a valid cpumask.
    to_result(unsafe { bindings::set_cpus_allowed_ptr(task, mask.as_raw()) })
}

/// `EINVAL` unless `node` is [`NUMA_NO_NODE`] or an online node.
pub(crate) fn check_node(node: i32) -> Result {
    if node == NUMA_NO_NODE {
        return Ok(());
    }
    if node < 0 || node >= bindings::MAX_NUMNODES as i32 {
        return Err(EINVAL);
    }
    #[cfg(CONFIG_NUMA)]
    {
        // SAFETY: `node` is below `MAX_NUMNODES`, the size of every nodemask; the mask is
        // read through a raw pointer, as memory hotplug may write it.
        let online = unsafe {
            let states = &raw const bindings::node_states;
            bindings::_test_bit(
                node as _,
                (&raw const (*states)[bindings::node_states_N_ONLINE as usize].bits).cast(),
            )
        };
        if !online {
            return Err(EINVAL);
        }
    }
    Ok(())
}

/// `name` as a C format that prints it as it is: every '%' doubled, NUL-terminated.
///
/// For the C functions that take the name as a format with a CPU number as argument
/// (`kthread_create_on_cpu()`, `kthread_create_worker_on_cpu()`).
pub(crate) fn escape_percent(name: &CStr) -> Result<KVec<u8>> {
    let mut fmt = KVec::with_capacity(name.to_bytes().len() + 1, GFP_KERNEL)?;
    for &b in name.to_bytes() {
        if b == b'%' {
            fmt.push(b'%', GFP_KERNEL)?;
        }
        fmt.push(b, GFP_KERNEL)?;
    }
    fmt.push(0, GFP_KERNEL)?;
    Ok(fmt)
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

/// Create a kthread running `body` (not yet woken) and take the handle's task reference.
fn create_raw<'a, B: Body + 'a>(
    place: Place,
    name: &CStr,
    body: B,
) -> Result<(ARef<Task>, Arc<Shared<B>>)> {
    match place {
        Place::Node(node) => check_node(node)?,
        Place::Cpu(cpu) => check_possible(cpu)?,
    }
    let shared = Arc::pin_init(
        pin_init!(Shared {
            control <- Control::new(),
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
    Ok((task, shared))
}

/// Stop the thread `task` that runs on `core`, wait for it to exit, and say how it ended.
///
/// # Safety
///
/// `task` runs `trampoline` on `core`, and no other stop of it runs concurrently.
unsafe fn stop_thread<T>(task: &Task, core: &dyn Core<T>) -> Exit<T> {
    // SAFETY: By the function's safety requirements.
    unsafe { core.control().stop(task) };
    // SAFETY: `stop` returned, so the thread has exited.
    unsafe { take_exit(core) }
}

/// How the thread of `core` ended.
///
/// # Safety
///
/// The thread has exited.
unsafe fn take_exit<T>(core: &dyn Core<T>) -> Exit<T> {
    // SAFETY: By the function's safety requirement.
    match unsafe { core.take_result() } {
        Some(v) => Exit::Returned(v),
        None => Exit::NeverRan,
    }
}

/// Wait until the body of `task` returned by itself, then reap the thread.
///
/// # Safety
///
/// As for [`stop_thread`]; the thread has been woken.
unsafe fn join_thread<T>(task: &Task, core: &dyn Core<T>) -> Exit<T> {
    kernel::task::might_sleep();
    // A woken thread runs its body unless stopped, and only its handle (our caller) stops it.
    core.control().returned.wait_for_completion();
    // SAFETY: By the function's safety requirements.
    unsafe { stop_thread(task, core) }
}

fn wake_thread(control: &Control) {
    // SAFETY: `wq` was initialised by `Control::new`.
    unsafe { sys::wake_up(control.wq.get()) };
}

/// An owning handle's state: the task reference and the typed shared state.
///
/// # Invariants
///
/// `task` is the kthread running `trampoline` on `core`. Both are dropped only by `Drop`.
struct Handle<T> {
    task: ManuallyDrop<ARef<Task>>,
    core: ManuallyDrop<Arc<dyn Core<T>>>,
}

impl<T> Handle<T> {
    fn control(&self) -> &Control {
        self.core.control()
    }

    /// Is the caller the thread itself? An owned handle is `Send`, so it can reach its own
    /// thread, where stopping or joining would wait for itself forever.
    fn is_current(&self) -> bool {
        ptr::eq(self.task.as_ptr(), Task::current_raw())
    }

    /// Stop the thread (after its body returned, if `join`), give up the task reference with
    /// `kthread_stop_put()`, and say how the thread ended.
    fn finish(self, join: bool) -> Result<Exit<T>> {
        if self.is_current() {
            // Dropping `self` leaves the thread running; see `Drop`.
            return Err(sys::edeadlk());
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: Taken once, here; `this` is never dropped, so `Drop` does not see them.
        let (task, core) = unsafe {
            (
                ManuallyDrop::take(&mut this.task),
                ManuallyDrop::take(&mut this.core),
            )
        };
        if join {
            kernel::task::might_sleep();
            // A woken thread runs its body unless stopped, and only its handle (this one)
            // stops it; `join` is offered on started threads only.
            core.control().returned.wait_for_completion();
        }
        // SAFETY: By the type invariant `task` runs `trampoline` on `core`; a handle has one
        // owner, so stops are not concurrent.
        unsafe { core.control().stop_put(task) };
        // SAFETY: `stop_put` returned, so the thread has exited.
        Ok(unsafe { take_exit(&*core) })
    }

    fn stop(self) -> Result<Exit<T>> {
        self.finish(false)
    }

    fn join(self) -> Result<Exit<T>> {
        self.finish(true)
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.is_current() {
            // The thread drops its own handle: it cannot wait for its own exit, and it still
            // uses the shared state. Leak both references; the thread runs on, as detached.
            pr_warn!("kthread_rs: a thread dropped its own handle; it is left running\n");
            return;
        }
        kernel::task::might_sleep();
        // SAFETY: Taken once, here, and not used afterwards.
        let task = unsafe { ManuallyDrop::take(&mut self.task) };
        // Stop-before-drop: the thread exits before the `Arc` (body, result) can be freed.
        // SAFETY: As in `Handle::finish`.
        unsafe { self.control().stop_put(task) };
        // SAFETY: Dropped once, here, and not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.core) };
    }
}

/// Marker: a thread whose body runs once and returns (see [`create`]).
pub struct Unparkable;
/// Marker: a thread whose body is a step loop that honours parking (see [`create_parkable`]).
pub struct Parkable;

/// A kthread that exists but has not been woken yet: configure it, then [`NewThread::start`].
///
/// Binding, priority and freezability can only be set here: they are invalid or racy once the
/// thread runs (H5). Dropping a `NewThread` stops it; its body never runs and is dropped.
#[must_use = "a NewThread is stopped, without running its body, when it is dropped"]
pub struct NewThread<T, P = Unparkable> {
    handle: Handle<T>,
    /// Bound to a CPU (`kthread_bind()` or `kthread_create_on_cpu()`).
    bound: bool,
    /// Has a preferred affinity (`kthread_affine_preferred()`).
    preferred: bool,
    _kind: PhantomData<P>,
}

impl<T, P> NewThread<T, P> {
    /// Bind the thread to `cpu` (the C `kthread_bind()`); `EINVAL` for an impossible CPU.
    ///
    /// `EINVAL` after [`NewThread::affine_preferred`]: the kernel re-applies a preferred
    /// affinity at every CPU online, and WARNs if it finds the thread bound.
    pub fn bind(&mut self, cpu: CpuId) -> Result<&mut Self> {
        check_possible(cpu)?;
        if self.preferred {
            return Err(EINVAL);
        }
        // SAFETY: The thread has not been woken yet (this type's purpose), as `kthread_bind()`
        // requires, and `cpu` is a possible CPU.
        unsafe { bindings::kthread_bind(self.handle.task.as_ptr(), cpu.as_u32()) };
        self.bound = true;
        Ok(self)
    }

    /// Prefer the CPUs of `mask` (the C `kthread_affine_preferred()`): unlike
    /// [`NewThread::bind`], a preference, that the kernel keeps across CPU hotplug. While none
    /// of `mask`'s CPUs is online (or all are isolated), the thread runs on the housekeeping
    /// CPUs; as soon as one comes back online, the kernel moves it back to `mask`.
    ///
    /// - `EINVAL` if `mask` is empty or has an impossible CPU, or if the thread is bound
    ///   ([`NewThread::bind`], [`create_on_cpu`]): the C function would WARN, now or at the
    ///   next CPU online.
    /// - `EBUSY` if the thread has a preferred affinity already (C WARNs).
    /// - `ENOMEM`.
    ///
    /// # Examples
    ///
    /// ```ignore
    /// use kernel::{cpu::CpuId, cpumask::CpumaskVar};
    /// use kthread_rs::thread;
    ///
    /// // Prefer CPU 1 (say, the CPU of the device's interrupt), without pinning to it.
    /// let mut mask = CpumaskVar::new_zero(GFP_KERNEL)?;
    /// mask.set(CpuId::from_u32(1).ok_or(EINVAL)?);
    /// let mut t = thread::create(fmt!("mydrv-irqwork"), |ctx| {
    ///     while ctx.sleep(kernel::time::Delta::from_millis(10)) != thread::Wake::Stop {}
    /// })?;
    /// t.affine_preferred(&mask)?;
    /// let t = t.start();
    /// # drop(t);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn affine_preferred(&mut self, mask: &Cpumask) -> Result<&mut Self> {
        if self.preferred {
            return Err(EBUSY);
        }
        if self.bound {
            return Err(EINVAL);
        }
        let mut any = false;
        for cpu in 0..kernel::cpu::nr_cpu_ids() {
            // `cpu < nr_cpu_ids`.
            let Some(id) = CpuId::from_u32(cpu) else {
                break;
            };
            if mask.test(id) {
                check_possible(id)?;
                any = true;
            }
        }
        if !any {
            return Err(EINVAL);
        }
        // SAFETY: The thread has not been woken yet (this type's purpose), as the C function
        // requires; it is not bound and has no preferred affinity (checked above, tracked by
        // `bind` and here); `mask` is a valid cpumask of possible CPUs.
        to_result(unsafe {
            bindings::kthread_affine_preferred(self.handle.task.as_ptr(), mask.as_raw())
        })?;
        self.preferred = true;
        Ok(self)
    }

    /// Set the nice value, -20 (highest priority) to 19 (the C `set_user_nice()`).
    pub fn set_nice(&mut self, nice: i32) -> Result<&mut Self> {
        if !(-20..=19).contains(&nice) {
            return Err(EINVAL);
        }
        // SAFETY: The task is alive (the handle's reference) and `nice` is in range.
        unsafe { bindings::set_user_nice(self.handle.task.as_ptr(), nice as c_long) };
        Ok(self)
    }

    /// Run under `SCHED_FIFO` at the kernel's default RT priority (the C `sched_set_fifo()`).
    pub fn set_fifo(&mut self) -> &mut Self {
        // SAFETY: The task is alive (the handle's reference).
        unsafe { bindings::sched_set_fifo(self.handle.task.as_ptr()) };
        self
    }

    /// Run under `SCHED_FIFO` at the lowest RT priority (the C `sched_set_fifo_low()`).
    pub fn set_fifo_low(&mut self) -> &mut Self {
        // SAFETY: The task is alive (the handle's reference).
        unsafe { bindings::sched_set_fifo_low(self.handle.task.as_ptr()) };
        self
    }

    /// Make the thread freezable: it calls `set_freezable()` before its body, and its
    /// [`Context::wait_until`] sleeps are freezable (H19).
    pub fn set_freezable(&mut self) -> &mut Self {
        // Read by the thread after `start`'s wake-up, which orders this store before it.
        self.handle
            .control()
            .freezable
            .store(true, Ordering::Relaxed);
        self
    }

    fn wake(self) -> Handle<T> {
        let NewThread { handle, .. } = self;
        // SAFETY: The task is alive (the handle's reference).
        unsafe { bindings::wake_up_process(handle.task.as_ptr()) };
        handle
    }
}

impl<T, P> NewThread<T, P> {
    /// The new thread's pid.
    ///
    /// A `NewThread` does not give out its `Task`: `Task::wake_up` would start the thread
    /// behind the configuration methods' back (H5).
    pub fn pid(&self) -> kernel::task::Pid {
        self.handle.task.pid()
    }
}

impl<T> NewThread<T, Unparkable> {
    /// Wake the thread: it runs its body (unless stopped first, see [`Exit::NeverRan`]).
    pub fn start(self) -> Thread<T> {
        Thread {
            handle: self.wake(),
        }
    }
}

impl<S> NewThread<S, Parkable> {
    /// Wake the thread: it runs its step loop.
    pub fn start(self) -> ParkableThread<S> {
        ParkableThread {
            thread: Thread {
                handle: self.wake(),
            },
            parked: false,
        }
    }
}

/// An owned, running kthread. Dropping it stops the thread and waits for it to exit.
///
/// Dereferences to its [`Task`]. Forgetting a handle (`mem::forget`) leaks the thread, which
/// then runs until it returns: a module must not be unloaded with a leaked thread in it.
#[must_use = "dropping a Thread stops it at once"]
pub struct Thread<T> {
    handle: Handle<T>,
}

impl<T> Thread<T> {
    /// Ask the thread to stop, wait until it has exited, and return how it ended.
    ///
    /// The C `kthread_stop()`. Safe even if the body returned long ago: the handle holds its
    /// own task reference (H1). Tells a returned value from a body that never ran (H2).
    /// `EDEADLK` if called by the thread itself (it would wait for itself); the handle is then
    /// dropped, which leaves the thread running.
    pub fn stop(self) -> Result<Exit<T>> {
        self.handle.stop()
    }

    /// Wait until the body returns by itself (without asking it to stop), then reap it.
    ///
    /// Unlike [`Thread::stop`], this never sets `kthread_should_stop()` before the body has
    /// returned, so it waits forever for a body that only ends when stopped. `EDEADLK` if
    /// called by the thread itself.
    pub fn join(self) -> Result<Exit<T>> {
        self.handle.join()
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`], so that it re-checks its
    /// condition.
    pub fn wake_up(&self) {
        wake_thread(self.handle.control())
    }

    /// The identity of this thread's body, as [`origin`] reports it.
    pub fn body_id(&self) -> BodyId {
        self.handle.core.body_id()
    }
}

impl<T> Deref for Thread<T> {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.handle.task
    }
}

/// An owned, running kthread whose body is a step loop, and that can be parked.
///
/// Parking is offered only for this kind of thread because only a step loop is sure to honour
/// it: [`ParkableThread::park`] waits for the thread to reach `kthread_parkme()`, forever if it
/// never does (H4). The loop parks between steps; [`Context::wait_until`] returns
/// [`Wake::Park`] so that a sleeping step ends promptly. After the loop ends (a step returned
/// [`ControlFlow::Break`]) the thread idles, still parkable, until stopped.
#[must_use = "dropping a ParkableThread stops it at once"]
pub struct ParkableThread<S> {
    thread: Thread<S>,
    parked: bool,
}

impl<S> ParkableThread<S> {
    /// Park the thread and wait until it is parked (the C `kthread_park()`).
    ///
    /// `EBUSY` if it is parked already, where the C function would WARN (H4); `EDEADLK` if
    /// called by the thread itself, which C would take as a request that it never honours.
    pub fn park(&mut self) -> Result {
        if self.parked {
            return Err(EBUSY);
        }
        if self.thread.handle.is_current() {
            return Err(sys::edeadlk());
        }
        // SAFETY: The task is a live kthread (the handle's reference) that is not exiting: a
        // parkable thread runs until it is stopped, and stopping takes `self` by value.
        to_result(unsafe { bindings::kthread_park(self.thread.handle.task.as_ptr()) })?;
        self.parked = true;
        Ok(())
    }

    /// Unpark the thread (the C `kthread_unpark()`); does nothing if it is not parked.
    pub fn unpark(&mut self) {
        if self.parked {
            // SAFETY: The task is a live kthread (the handle's reference).
            unsafe { bindings::kthread_unpark(self.thread.handle.task.as_ptr()) };
            self.parked = false;
        }
    }

    /// Is the thread parked by this handle?
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Stop the thread (parked or not) and return its state; see [`Thread::stop`].
    pub fn stop(self) -> Result<Exit<S>> {
        self.thread.stop()
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`]; see [`Thread::wake_up`].
    pub fn wake_up(&self) {
        self.thread.wake_up()
    }

    /// The identity of this thread's body; see [`Thread::body_id`].
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

fn to_result(err: c_int) -> Result {
    kernel::error::to_result(err)
}

/// The identity of a thread's body: the C `threadfn` of the thread, which this API makes one
/// per body type. Compare it with a handle's (e.g. [`Thread::body_id`]) to learn whether a
/// task runs that kind of body.
///
/// Threads spawned from the same closure (in a loop, or from one function) share a `BodyId`;
/// different closures get different ones, except that the compiler may merge two bodies that
/// compile to identical code (then they are indistinguishable, and share one). Detached
/// threads ([`spawn_detached`], [`ThreadGroup`]) all share one `BodyId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyId(usize);

/// What a task is, as far as this API can tell; see [`origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not a kernel thread: a user task (or a user worker, such as an io_uring worker).
    NotKthread,
    /// A kernel thread that this module did not start through this API.
    Kthread,
    /// A thread that this module started through this API, running the body `BodyId`.
    Ours(BodyId),
}

/// Is `task` one of the threads that this module started through this API, and with which
/// body? The C `kthread_func()`.
///
/// "Ours" means that the thread's C `threadfn` is code of this module (this file is included
/// into each module, see [`super`]): in a module that starts its threads only through this
/// API, exactly those threads. A thread of another module using kthread-rs is
/// [`Origin::Kthread`] here. Exited tasks answer as they did while they ran.
///
/// There is no safe form of `kthread_data()`: the data pointer of a thread is its control
/// block, which the thread's handle frees once the thread has exited, while the `task_struct`
/// (and a `&Task` to it) can live on; reading it through any `&Task` could touch freed memory.
/// The identity above comes from `kthread_func()`, which lives as long as the task.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread::{self, Origin};
///
/// let t = thread::spawn(fmt!("mydrv-flush"), |ctx| {
///     while ctx.sleep(kernel::time::Delta::from_millis(10)) != thread::Wake::Stop {}
/// })?;
/// // In a path that may run on any task: is this our flusher (e.g. to avoid waiting for
/// // ourselves)?
/// let current = kernel::current!();
/// let on_flusher = thread::origin(&current) == Origin::Ours(t.body_id());
/// # let _ = on_flusher;
/// # Ok::<(), Error>(())
/// ```
pub fn origin(task: &Task) -> Origin {
    // SAFETY: `task` is alive (borrowed); `flags` is read once, as the C `READ_ONCE()`.
    let flags = unsafe { ptr::read_volatile(&raw const (*task.as_ptr()).flags) };
    if flags & bindings::PF_KTHREAD == 0 {
        return Origin::NotKthread;
    }
    // SAFETY: `task` is alive (borrowed), and so is its `struct kthread`, which is freed with
    // the `task_struct`; `kthread_func()` returns null for a task without one.
    let f = unsafe { bindings::kthread_func(task.as_ptr()) } as usize;
    if f != 0 && in_this_module_text(f) {
        Origin::Ours(BodyId(f))
    } else {
        Origin::Kthread
    }
}

/// Is `addr` in the text of this module?
fn in_this_module_text(addr: usize) -> bool {
    let module = crate::THIS_MODULE.as_ptr();
    if module.is_null() {
        // Built in: this API's code cannot be told from the rest of the kernel's.
        return false;
    }
    // SAFETY: `module` is this module, live while its code runs; the text region is fixed
    // once the module is loaded.
    let text = unsafe { &(*module).mem[bindings::mod_mem_type_MOD_TEXT as usize] };
    let base = text.base as usize;
    addr >= base && addr - base < text.size as usize
}

/// Create a thread named `name` that will run `f`, on any CPU and node; start it with
/// [`NewThread::start`] after configuring it.
///
/// # Examples
///
/// ```ignore
/// use kernel::cpu::CpuId;
/// use kthread_rs::thread::{self, Exit};
///
/// // A low-priority housekeeping thread on CPU 0 that returns a status.
/// let mut t = thread::create(fmt!("mydrv-house"), |ctx| -> Result<u32> {
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
pub fn create<F, T>(name: fmt::Arguments<'_>, f: F) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    create_on_node(NUMA_NO_NODE, name, f)
}

/// Like [`create`], with the thread's memory on NUMA node `node` ([`NUMA_NO_NODE`]: any).
///
/// `EINVAL` if `node` is not an online node.
pub fn create_on_node<F, T>(node: i32, name: fmt::Arguments<'_>, f: F) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    new_thread(Place::Node(node), name, Once(f))
}

/// Like [`create`], with the thread bound to `cpu`, as the C `kthread_create_on_cpu()` does.
///
/// The binding holds while `cpu` is online; see [`create_parkable_on_cpu`] for hotplug.
pub fn create_on_cpu<F, T>(cpu: CpuId, name: fmt::Arguments<'_>, f: F) -> Result<NewThread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    new_thread(Place::Cpu(cpu), name, Once(f))
}

/// Create and start a thread named `name` that runs `f` (the C `kthread_run()`).
///
/// `name` is formatted by Rust (`fmt!("mydrv/{}", id)`) and never used as a C format. The
/// task's `comm` keeps its first 15 bytes.
pub fn spawn<F, T>(name: fmt::Arguments<'_>, f: F) -> Result<Thread<T>>
where
    F: FnOnce(&Context<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(create(name, f)?.start())
}

/// Create a parkable thread: it calls `step(&mut state, ctx)` in a loop until a step returns
/// [`ControlFlow::Break`] or the thread is stopped, parking between steps when asked; its
/// handle returns `state` at the end.
pub fn create_parkable<S, F>(
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<NewThread<S, Parkable>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    new_thread(Place::Node(NUMA_NO_NODE), name, Steps(state, step))
}

/// Like [`create_parkable`], bound to `cpu` (the C `kthread_create_on_cpu()`).
///
/// The binding holds while `cpu` is online. If `cpu` goes offline, the scheduler moves the
/// thread to another CPU and unbinds it (modules cannot mark threads per-CPU as the kernel's
/// own are); use [`PerCpuThreads`] for threads that must follow CPU hotplug.
pub fn create_parkable_on_cpu<S, F>(
    cpu: CpuId,
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<NewThread<S, Parkable>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    new_thread(Place::Cpu(cpu), name, Steps(state, step))
}

/// Create and start a parkable thread; see [`create_parkable`].
///
/// # Examples
///
/// ```ignore
/// use core::ops::ControlFlow;
/// use kthread_rs::thread::{self, Exit};
///
/// // Poll a device every 10 ms; park it while the device is suspended.
/// let mut poller = thread::spawn_parkable(fmt!("mydrv-poll"), 0u64, |polls, ctx| {
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
pub fn spawn_parkable<S, F>(
    name: fmt::Arguments<'_>,
    state: S,
    step: F,
) -> Result<ParkableThread<S>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &Context<'_>) -> ControlFlow<()> + Send + 'static,
{
    Ok(create_parkable(name, state, step)?.start())
}

fn new_thread<B: Body + 'static, P>(
    place: Place,
    name: fmt::Arguments<'_>,
    body: B,
) -> Result<NewThread<B::Output, P>> {
    let (task, shared) = with_name(name, |name| create_raw(place, name, body))?;
    // INVARIANT: `task` runs `trampoline::<B>` on `shared`.
    Ok(NewThread {
        handle: Handle {
            task: ManuallyDrop::new(task),
            core: ManuallyDrop::new(shared),
        },
        bound: matches!(place, Place::Cpu(_)),
        preferred: false,
        _kind: PhantomData,
    })
}

/// A scope for threads that borrow data from the stack; see [`scope`].
///
/// It is not [`Sync`]: threads are spawned from the task that called [`scope`] only.
///
/// # Invariants
///
/// Every thread spawned in the scope has an entry in `threads`, and is stopped (and has
/// exited) before [`scope`] returns.
pub struct Scope<'scope, 'env: 'scope> {
    threads: UnsafeCell<KVec<ScopeEntry>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// The scope's own record of one of its threads, with the body's type (and lifetime) erased,
/// as `std::thread::scope` does, so that the scope's storage does not borrow from `'scope`.
///
/// # Invariants
///
/// `shared` comes from `Arc::into_raw` of the `Shared<B>` run by `task`, `control` points into
/// it, and `release` is `release::<B>`.
struct ScopeEntry {
    task: ARef<Task>,
    shared: *const c_void,
    control: *const Control,
    release: unsafe fn(*const c_void),
}

/// Give back the reference that a [`ScopeEntry`] holds.
///
/// # Safety
///
/// `p` comes from `Arc::into_raw` of an `Arc<Shared<B>>`, and is not used afterwards.
unsafe fn release<B: Body>(p: *const c_void) {
    // SAFETY: By the function's safety requirement.
    drop(unsafe { Arc::from_raw(p.cast::<Shared<B>>()) });
}

impl ScopeEntry {
    /// Stop the thread (unless its handle did) and release the entry's reference.
    fn finish(self) {
        // SAFETY: By the type invariant, `control` lives as long as the reference in `shared`,
        // which is still held, and belongs to `task`. The scope's thread handles are `!Send`
        // and the scope's closure has returned, so nothing stops the thread concurrently.
        unsafe { (*self.control).stop_put(self.task) };
        // SAFETY: By the type invariant; `self` is consumed, so `shared` is not used again.
        unsafe { (self.release)(self.shared) };
    }
}

/// A thread spawned in a [`Scope`]: like [`Thread`], but its body may borrow from the scope's
/// environment. Whether it is stopped, dropped or even forgotten, the thread has exited when
/// [`scope`] returns (H8); the handle only borrows from the scope, which owns the thread, so
/// forgetting the handle leaks nothing either.
///
/// # Invariants
///
/// `task` runs `trampoline` on `core`; both are owned by the scope's entry for this thread.
#[must_use = "dropping a ScopedThread stops it at once"]
pub struct ScopedThread<'scope, T> {
    task: &'scope Task,
    core: &'scope (dyn Core<T> + 'scope),
    _not_send: PhantomData<*mut ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Create and start a thread that may borrow anything that outlives the scope.
    pub fn spawn<F, T>(
        &'scope self,
        name: fmt::Arguments<'_>,
        f: F,
    ) -> Result<ScopedThread<'scope, T>>
    where
        F: FnOnce(&Context<'_>) -> T + Send + 'scope,
        T: Send + 'scope,
    {
        // Format first: a `Display` of the name could spawn in this scope too.
        let name = CString::try_from_fmt(name)?;
        // Make room first: once the thread exists, recording it must not fail.
        // SAFETY: `Scope` is `!Sync`, so only this task touches `threads`, and no other
        // reference into it lives during this statement.
        unsafe { (*self.threads.get()).reserve(1, GFP_KERNEL)? };
        let (task, shared) = create_raw(Place::Node(NUMA_NO_NODE), &name, Once(f))?;
        let shared = Arc::into_raw(shared);
        let task_ptr: *const Task = &*task;
        // SAFETY: The entry made below keeps the `Arc` and the task reference until the end
        // of `scope`, after `'scope`; the task_struct and the `Shared` do not move.
        let (task_ref, core): (&'scope Task, &'scope Shared<Once<F>>) =
            unsafe { (&*task_ptr, &*shared) };
        // INVARIANT: `shared` is the `Shared<Once<F>>` run by `task`.
        let entry = ScopeEntry {
            task,
            control: &core.control,
            shared: shared.cast(),
            release: release::<Once<F>>,
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
        // INVARIANT: `task_ref` runs `trampoline` on `core`, both owned by the entry.
        Ok(ScopedThread {
            task: task_ref,
            core,
            _not_send: PhantomData,
        })
    }
}

impl<T> ScopedThread<'_, T> {
    /// Ask the thread to stop and wait for it; see [`Thread::stop`]. Infallible: a scoped
    /// handle is not `Send`, so it cannot reach its own thread.
    pub fn stop(self) -> Exit<T> {
        // SAFETY: By the type invariant. The handle and the scope live on one task (the
        // handle is `!Send`), so stops are not concurrent.
        unsafe { stop_thread(self.task, self.core) }
    }

    /// Wait until the body returns by itself; see [`Thread::join`].
    pub fn join(self) -> Exit<T> {
        // SAFETY: As in `stop`; scoped threads are woken by `Scope::spawn`.
        unsafe { join_thread(self.task, self.core) }
    }

    /// Wake the thread if it sleeps in [`Context::wait_until`].
    pub fn wake_up(&self) {
        wake_thread(self.core.control())
    }
}

impl<T> Drop for ScopedThread<'_, T> {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        // SAFETY: As in `stop`.
        unsafe { self.core.control().stop(self.task) };
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
/// # Examples
///
/// ```ignore
/// # use kthread_rs::thread;
/// let mut hits = [0u32; 4];
/// thread::scope(|s| -> Result {
///     for (i, h) in hits.iter_mut().enumerate() {
///         let _ = s.spawn(fmt!("scoped/{i}"), move |_ctx| *h = i as u32 * 10)?.join();
///     }
///     Ok(())
/// })?;
/// # Ok::<(), Error>(())
/// ```
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
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

/// One parkable thread per online CPU, bound to it, following CPU hotplug: the thread of a CPU
/// that goes offline is parked, and unparked (and re-bound) when the CPU comes back; a CPU
/// that comes online for the first time gets its thread then. Dropping the set stops all of
/// them. This is what the C `smpboot_register_percpu_thread()` does for the kernel's own
/// per-CPU threads, built here on the exported multi-instance CPU hotplug states.
///
/// Each thread runs a step loop, as [`create_parkable`] does, with its state made by `init` for
/// its CPU. A step runs only on the thread's CPU, with migration disabled (it may sleep): a
/// CPU's data can be used in a step without further care about hotplug.
///
/// # Examples
///
/// ```ignore
/// use core::ops::ControlFlow;
/// use kthread_rs::thread::PerCpuThreads;
///
/// // Count, per CPU, how often the thread ran a step.
/// let set = PerCpuThreads::new(c"mydrv", |_cpu| 0u64, |n, ctx| {
///     *n += 1;
///     ctx.sleep(kernel::time::Delta::from_millis(100));
///     ControlFlow::Continue(())
/// })?;
/// drop(set); // stops every thread
/// # Ok::<(), Error>(())
/// ```
///
/// `init` runs in the CPU hotplug callback, under the hotplug lock: it must not take
/// `cpus_read_lock()` (nor hotplug CPUs).
pub struct PerCpuThreads<S: Send + 'static> {
    inner: NonNull<PerCpuInner<S>>,
}

/// What the CPU hotplug callbacks see: kept apart from the handle, so that the handle's drop
/// never holds a `&mut` to what a callback may be reading.
///
/// # Invariants
///
/// - `state` is the dynamic, multi-instance CPU hotplug state set up for this set, and `node`
///   is an instance of it from the end of [`PerCpuThreads::new`] until drop.
/// - `threads` has `nr_cpu_ids` slots; slot `cpu` holds the thread bound to `cpu` once made,
///   except while a hotplug callback has it out to park, unpark or start it.
#[pin_data]
struct PerCpuInner<S: Send + 'static> {
    #[pin]
    node: Opaque<bindings::hlist_node>,
    state: bindings::cpuhp_state,
    name: &'static str,
    #[pin]
    threads: kernel::sync::Mutex<KVec<Option<ParkableThread<S>>>>,
    init: KBox<dyn Fn(CpuId) -> S + Send + Sync>,
    step: fn(&mut S, &Context<'_>) -> ControlFlow<()>,
}

// SAFETY: The set owns `inner` (a `PerCpuInner`, whose parts are `Send`, or only touched by the
// hotplug core under its locks).
unsafe impl<S: Send + 'static> Send for PerCpuThreads<S> {}
// SAFETY: Shared access only locks the mutex or reads fields that never change.
unsafe impl<S: Send + 'static> Sync for PerCpuThreads<S> {}

/// The multi-instance callback type, passed as the single-instance one.
type MultiCb = unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int;
type SingleCb = unsafe extern "C" fn(c_uint) -> c_int;

impl<S: Send + 'static> PerCpuThreads<S> {
    /// Start one thread per online CPU, named `"<name>/<cpu>"`, and follow CPU hotplug.
    ///
    /// `name` also names the CPU hotplug state (see `/sys/devices/system/cpu/hotplug/states`).
    pub fn new(
        name: &'static CStr,
        init: impl Fn(CpuId) -> S + Send + Sync + 'static,
        step: fn(&mut S, &Context<'_>) -> ControlFlow<()>,
    ) -> Result<Self> {
        let name_str = name.to_str().map_err(|_| EINVAL)?;
        let init: KBox<dyn Fn(CpuId) -> S + Send + Sync> = KBox::new(init, GFP_KERNEL)?;
        let mut slots = KVec::with_capacity(kernel::cpu::nr_cpu_ids() as usize, GFP_KERNEL)?;
        for _ in 0..kernel::cpu::nr_cpu_ids() {
            slots.push(None, GFP_KERNEL)?;
        }
        // SAFETY: `cpuhp_setup_state_multi()`: the multi-instance callbacks are passed as the
        // single-instance type, exactly as that C macro casts them; with `multi_instance` set,
        // the hotplug core calls them through the `multi` member, with the instance's node.
        // `name` is `'static`, as the state keeps it.
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                false,
                Some(core::mem::transmute::<MultiCb, SingleCb>(Self::startup)),
                Some(core::mem::transmute::<MultiCb, SingleCb>(Self::teardown)),
                true,
            )
        };
        // A dynamic state is returned as a positive number, an error as a negative one.
        let state = bindings::cpuhp_state::try_from(state).map_err(|_| Error::from_errno(state))?;
        let inner = KBox::pin_init(
            pin_init!(PerCpuInner {
                node: Opaque::uninit(),
                state,
                name: name_str,
                threads <- kernel::new_mutex!(slots),
                init,
                step,
            }),
            GFP_KERNEL,
        )
        .inspect_err(|_| {
            // SAFETY: `state` was set up above and has no instance.
            unsafe { bindings::__cpuhp_remove_state(state, false) };
        })?;
        // SAFETY: The allocation is never moved: it is freed through `KBox::from_raw` only.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(inner) });
        // SAFETY: `KBox::into_raw` never returns null.
        let inner = unsafe { NonNull::new_unchecked(raw) };
        // INVARIANT: On success `node` is an instance of `state` from here on.
        let set = PerCpuThreads { inner };
        // SAFETY: `node` is pinned and not an instance yet. Adding it calls `startup` on every
        // online CPU (under the hotplug lock); on error the core has rolled back, unlinked it.
        let added = to_result(unsafe {
            bindings::__cpuhp_state_add_instance(state, set.inner().node.get(), true)
        });
        if let Err(e) = added {
            // SAFETY: No instance was added; no callback can see `inner`.
            unsafe { set.free(false) };
            core::mem::forget(set);
            return Err(e);
        }
        Ok(set)
    }

    fn inner(&self) -> &PerCpuInner<S> {
        // SAFETY: `inner` lives until `free`, called by drop (or by `new`, on a set never
        // returned).
        unsafe { self.inner.as_ref() }
    }

    /// Is the thread of `cpu` parked because `cpu` is offline? `None` if `cpu` has no thread
    /// (or a hotplug callback has it out this instant).
    pub fn is_parked(&self, cpu: CpuId) -> Option<bool> {
        self.inner().threads.lock()[cpu.as_u32() as usize]
            .as_ref()
            .map(|t| t.is_parked())
    }

    /// Wake the thread of `cpu` if it sleeps in [`Context::wait_until`].
    pub fn wake_up(&self, cpu: CpuId) {
        if let Some(t) = &self.inner().threads.lock()[cpu.as_u32() as usize] {
            t.wake_up();
        }
    }

    /// Remove the instance (if added) and the state, stop every thread, free `inner`.
    ///
    /// # Safety
    ///
    /// Called once; `inner` is not used afterwards.
    unsafe fn free(&self, added: bool) {
        let inner = self.inner();
        if added {
            // SAFETY: By the type invariant `node` is an instance of `state`. Not invoking the
            // teardown callbacks: the threads are stopped below, parked or not. When this
            // returns, no callback runs or will run on `node`.
            unsafe {
                bindings::__cpuhp_state_remove_instance(inner.state, inner.node.get(), false)
            };
        }
        // SAFETY: `state` was set up by `new` and has no instance left.
        unsafe { bindings::__cpuhp_remove_state(inner.state, false) };
        // Stop every thread (dropping a handle stops it), without the mutex held.
        let threads = core::mem::take(&mut *inner.threads.lock());
        drop(threads);
        // SAFETY: Made by `KBox::pin_init` and leaked in `new`; nothing refers to it now.
        drop(unsafe { KBox::from_raw(self.inner.as_ptr()) });
    }

    /// The set behind a hotplug callback's node.
    ///
    /// # Safety
    ///
    /// `node` is the `node` of a live `PerCpuInner<S>`.
    unsafe fn from_node<'a>(node: *mut bindings::hlist_node) -> &'a PerCpuInner<S> {
        // SAFETY: By the safety requirement; `Opaque<hlist_node>` is transparent.
        unsafe {
            &*kernel::container_of!(
                node.cast::<Opaque<bindings::hlist_node>>(),
                PerCpuInner<S>,
                node
            )
        }
    }

    /// CPU hotplug "online" callback: make and start the CPU's thread, or re-bind and unpark
    /// it. Runs under the hotplug lock, serialised with the other callbacks of the state.
    ///
    /// # Safety
    ///
    /// Called by the hotplug core with the node of an instance, so a live set (invariant).
    unsafe extern "C" fn startup(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: By the function's safety requirement.
        let this = unsafe { Self::from_node(node) };
        let Some(id) = CpuId::from_u32(cpu) else {
            return EINVAL.to_errno();
        };
        // Out of the table while it blocks (create, park): a step may take the mutex.
        let taken = this.threads.lock()[cpu as usize].take();
        let r = match taken {
            Some(mut t) => {
                let r = set_affinity(t.as_ptr(), id);
                t.unpark();
                this.threads.lock()[cpu as usize] = Some(t);
                r
            }
            None => {
                let body = PerCpuSteps {
                    cpu: id,
                    state: (this.init)(id),
                    step: this.step,
                };
                CString::try_from_fmt(fmt!("{}/{}", this.name, cpu))
                    .and_then(|name| create_raw(Place::Cpu(id), &name, body))
                    .map(|(task, shared)| {
                        let t = NewThread::<S, Parkable> {
                            handle: Handle {
                                task: ManuallyDrop::new(task),
                                core: ManuallyDrop::new(shared),
                            },
                            bound: true,
                            preferred: false,
                            _kind: PhantomData,
                        }
                        .start();
                        this.threads.lock()[cpu as usize] = Some(t);
                    })
            }
        };
        match r {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// CPU hotplug "offline" callback: park the CPU's thread.
    ///
    /// # Safety
    ///
    /// As for [`Self::startup`].
    unsafe extern "C" fn teardown(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: By the function's safety requirement.
        let this = unsafe { Self::from_node(node) };
        let taken = this
            .threads
            .lock()
            .get_mut(cpu as usize)
            .and_then(Option::take);
        if let Some(mut t) = taken {
            // Parked already is `EBUSY` here, not a WARN; nothing else can fail.
            let _ = t.park();
            this.threads.lock()[cpu as usize] = Some(t);
        }
        0
    }
}

impl<S: Send + 'static> Drop for PerCpuThreads<S> {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        // SAFETY: Called once, here; `inner` is not used afterwards.
        unsafe { self.free(true) };
    }
}
