// SPDX-License-Identifier: GPL-2.0

//! One thread per CPU that follows CPU hotplug, as the C `smpboot_register_percpu_thread()`
//! does for the kernel's own per-CPU threads.
//!
//! C headers: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/cpuhotplug.h`](srctree/include/linux/cpuhotplug.h)

use super::super::{
    registry::{self, Entry, EntryOps, Kind},
    sys,
};
use super::{
    create_raw,
    new::{cpu_active, set_affinity},
    spawn_detached, to_result, Body, Context, Handle, Header, NewThread, Parkable, ParkableThread,
    Place, Wake,
};
use core::{marker::PhantomData, ops::ControlFlow, ptr::NonNull};
use kernel::{
    bindings,
    cpu::CpuId,
    prelude::*,
    str::CString,
    sync::{
        atomic::{ordering, Atomic},
        Completion,
    },
    task::Task,
    time::Delta,
    types::Opaque,
};

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
/// One parkable thread per online CPU, bound to it, following CPU hotplug: the thread of a CPU
/// that goes offline is parked, and unparked (and re-bound) when the CPU comes back; a CPU
/// that comes online for the first time gets its thread then. Dropping the set stops all of
/// them. This is what the C `smpboot_register_percpu_thread()` does for the kernel's own
/// per-CPU threads, built here on the exported multi-instance CPU hotplug states.
///
/// Each thread runs a step loop, as [`create_parkable`](super::create_parkable) does, with its
/// state made by `init` for its CPU. A step runs only on the thread's CPU, with migration
/// disabled (it may sleep): a CPU's data can be used in a step without further care about
/// hotplug.
///
/// `init` runs in the CPU hotplug callback, under the hotplug lock: it must not take
/// `cpus_read_lock()` (nor hotplug CPUs). Making or dropping a set needs that lock: from
/// `init` or from a step (or anywhere migration is disabled), [`PerCpuThreads::new`] returns
/// `EDEADLK`, and a drop there hands the set's teardown to a thread of its own (H24).
///
/// # Examples
///
/// ```ignore
/// use core::ops::ControlFlow;
/// use kthread_rs::thread::PerCpuThreads;
///
/// # let module = kthread_rs::compat::this_module();
/// // Count, per CPU, how often the thread ran a step.
/// let set = PerCpuThreads::new(module, c"mydrv", |_cpu| 0u64, |n, ctx| {
///     *n += 1;
///     ctx.sleep(kernel::time::Delta::from_millis(100));
///     ControlFlow::Continue(())
/// })?;
/// drop(set); // stops every thread
/// # Ok::<(), Error>(())
/// ```
pub struct PerCpuThreads<S: Send + 'static> {
    inner: NonNull<PerCpuInner<S>>,
}

/// What the CPU hotplug callbacks see: kept apart from the handle, so that the handle's drop
/// never holds a `&mut` to what a callback may be reading.
///
/// # Invariants
///
/// - `entry` is first (`repr(C)`), and linked in the registry from the end of
///   [`PerCpuThreads::new`] until the set's teardown claims it (or the reaper does).
/// - `state` is the dynamic, multi-instance CPU hotplug state set up for this set, and `node`
///   is an instance of it from the end of [`PerCpuThreads::new`] until its claimer removes it.
/// - `threads` has `nr_cpu_ids` slots; slot `cpu` holds the thread bound to `cpu` once made,
///   except while a hotplug callback has it out to park, unpark or start it. `headers[cpu]`
///   is that thread's header from then on (or null), alive as long as `Self`.
/// - `parked[cpu]` says whether the thread of `cpu` is parked by the teardown callback.
/// - `reaper_frees` is set when a drop could neither wait nor hand the teardown to a thread:
///   the reaper then frees the set (if it claims it after that).
/// - `done` is completed by the reaper once it has removed the hotplug state.
#[repr(C)]
#[pin_data]
struct PerCpuInner<S: Send + 'static> {
    entry: Entry,
    #[pin]
    node: Opaque<bindings::hlist_node>,
    state: bindings::cpuhp_state,
    name: &'static str,
    #[pin]
    threads: kernel::sync::Mutex<KVec<Option<ParkableThread<S>>>>,
    headers: KVec<Atomic<*const Header>>,
    parked: KVec<Atomic<bool>>,
    reaper_frees: Atomic<bool>,
    #[pin]
    done: Completion,
    init: KBox<dyn Fn(CpuId) -> S + Send + Sync>,
    step: fn(&mut S, &Context<'_>) -> ControlFlow<()>,
}

impl<S: Send + 'static> PerCpuInner<S> {
    const ENTRY: EntryOps = EntryOps {
        kind: Kind::PerCpu,
        prepare: prepare_nothing,
        reap: reap_set::<S>,
    };
}

// SAFETY: The set owns `inner` (a `PerCpuInner`, whose parts are `Send`, or only touched by the
// hotplug core under its locks, or atomic).
unsafe impl<S: Send + 'static> Send for PerCpuThreads<S> {}
// SAFETY: Shared access only reads atomics and fields that never change.
unsafe impl<S: Send + 'static> Sync for PerCpuThreads<S> {}

/// The multi-instance callback type, passed as the single-instance one.
type MultiCb = unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int;
type SingleCb = unsafe extern "C" fn(c_uint) -> c_int;

/// The task that runs one of this module's hotplug callbacks, or null. The hotplug core runs
/// the callbacks of all states one at a time (under the hotplug lock or its state mutex).
static IN_CALLBACK: Atomic<*mut bindings::task_struct> = Atomic::new(core::ptr::null_mut());

/// Would making or removing a CPU hotplug state here deadlock? Yes inside one of this
/// module's hotplug callbacks (the hotplug lock is held), and with migration disabled (a
/// step: CPU hotplug waits for the task to enable migration, while it waits for the lock).
fn hotplug_would_deadlock() -> bool {
    let current = Task::current_raw();
    if IN_CALLBACK.load(ordering::Relaxed) == current {
        return true;
    }
    // SAFETY: `current` is alive; `migration_disabled` is only written by the task itself.
    #[cfg(CONFIG_SMP)]
    if unsafe { (*current).migration_disabled } != 0 {
        return true;
    }
    false
}

/// Marks the current task as inside a hotplug callback of this module while it lives.
struct InCallback;

impl InCallback {
    fn enter() -> Self {
        IN_CALLBACK.store(Task::current_raw(), ordering::Relaxed);
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.store(core::ptr::null_mut(), ordering::Relaxed);
    }
}

// Lockdep tells classes apart by the address of their key and matches names by address: a
// string literal in generic or inlined code can be emitted once per crate that uses it, so the
// name of a class whose key is a `static` here is a `static` too.
/// The lock class name of every set's thread slots.
static SLOTS_NAME: &CStr = c"kthread_rs::PerCpuThreads::threads";

impl<S: Send + 'static> PerCpuThreads<S> {
    /// Start one thread per online CPU, named `"<name>/<cpu>"`, and follow CPU hotplug.
    ///
    /// `module` is the module whose code the threads run (`THIS_MODULE`). `name` also names the
    /// CPU hotplug state (see `/sys/devices/system/cpu/hotplug/states`). `EDEADLK` in `init` of
    /// a set or in a step (where migration is disabled): setting up a hotplug state would wait
    /// for CPU hotplug, which waits for the caller.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn new(
        module: &'static ThisModule,
        name: &'static CStr,
        init: impl Fn(CpuId) -> S + Send + Sync + 'static,
        step: fn(&mut S, &Context<'_>) -> ControlFlow<()>,
    ) -> Result<Self> {
        kernel::task::might_sleep();
        if hotplug_would_deadlock() {
            return Err(sys::edeadlk());
        }
        let name_str = name.to_str().map_err(|_| EINVAL)?;
        let init: KBox<dyn Fn(CpuId) -> S + Send + Sync> = KBox::new(init, GFP_KERNEL)?;
        let n = kernel::cpu::nr_cpu_ids() as usize;
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut headers = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut parked = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(None, GFP_KERNEL)?;
            headers.push(Atomic::new(core::ptr::null()), GFP_KERNEL)?;
            parked.push(Atomic::new(false), GFP_KERNEL)?;
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
                entry: Entry::new(module, &Self::ENTRY_OPS),
                node: Opaque::uninit(),
                state,
                name: name_str,
                threads <- kernel::sync::Mutex::new(
                    slots,
                    SLOTS_NAME,
                    kernel::static_lock_class!()
                ),
                headers,
                parked,
                reaper_frees: Atomic::new(false),
                done <- Completion::new(),
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
        // SAFETY: `node` is pinned and not an instance yet. Adding it calls `startup` on every
        // online CPU (under the hotplug lock); on error the core has rolled back, unlinked it.
        let added = to_result(unsafe {
            bindings::__cpuhp_state_add_instance(state, (*raw).node.get(), true)
        });
        if let Err(e) = added {
            // SAFETY: No instance was added; no callback can see `inner`, and it was never
            // linked: this is its one owner.
            unsafe {
                bindings::__cpuhp_remove_state(state, false);
                Self::free(inner);
            }
            return Err(e);
        }
        // INVARIANT: `node` is an instance of `state`; the entry is linked from here on.
        // SAFETY: The set stays in place until its entry is claimed (by its drop or the
        // reaper), which also ends the instance.
        unsafe { registry::link(NonNull::from(&(*raw).entry), raw as usize) };
        Ok(PerCpuThreads { inner })
    }

    const ENTRY_OPS: EntryOps = PerCpuInner::<S>::ENTRY;

    fn inner(&self) -> &PerCpuInner<S> {
        // SAFETY: `inner` lives until the handle's drop ends it (or the reaper, for a set whose
        // drop handed it over; then no handle is left).
        unsafe { self.inner.as_ref() }
    }

    /// Is the thread of `cpu` parked because `cpu` is offline? `None` if `cpu` has no thread.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn is_parked(&self, cpu: CpuId) -> Option<bool> {
        let i = cpu.as_u32() as usize;
        let inner = self.inner();
        if inner.headers[i].load(ordering::Acquire).is_null() {
            return None;
        }
        Some(inner.parked[i].load(ordering::Relaxed))
    }

    /// Wake the thread of `cpu` if it sleeps in [`Context::wait_until`].
    ///
    /// # Context
    ///
    /// Any context.
    pub fn wake_up(&self, cpu: CpuId) {
        let h = self.inner().headers[cpu.as_u32() as usize].load(ordering::Acquire);
        if !h.is_null() {
            // SAFETY: A thread's header, published once the thread was made, lives as long
            // as the set (its handle is in `threads` until the set is freed).
            unsafe { (*h).wake() };
        }
    }

    /// End the set whose entry the caller claimed: remove the instance and the state, so
    /// that no callback runs any more. Its threads go on until the set is freed.
    ///
    /// # Safety
    ///
    /// The caller claimed `inner`'s entry (and so owns the teardown); called once.
    unsafe fn remove(inner: &PerCpuInner<S>) {
        // SAFETY: By the type invariant `node` is an instance of `state` until its claimer
        // removes it, here. Not invoking the teardown callbacks: the threads are stopped when
        // the set is freed, parked or not. When this returns, no callback runs or will run on
        // `node`.
        unsafe { bindings::__cpuhp_state_remove_instance(inner.state, inner.node.get(), false) };
        // SAFETY: `state` was set up by `new` and has no instance left.
        unsafe { bindings::__cpuhp_remove_state(inner.state, false) };
    }

    /// Stop every thread and free the set.
    ///
    /// # Safety
    ///
    /// No hotplug callback can run on the set any more, and the caller owns it.
    unsafe fn free(inner: NonNull<PerCpuInner<S>>) {
        // SAFETY: Alive until freed below.
        let threads = core::mem::take(&mut *unsafe { inner.as_ref() }.threads.lock());
        // Stop every thread (dropping a handle stops it), without the mutex held.
        drop(threads);
        // SAFETY: Made by `KBox::pin_init` and leaked in `new`; nothing refers to it now.
        drop(unsafe { KBox::from_raw(inner.as_ptr()) });
    }

    /// The drop of a set by a task that may wait: claim it and end it, or wait for the reaper
    /// that claimed it first; then free it.
    ///
    /// # Safety
    ///
    /// The caller owns the set (its handle, consumed).
    unsafe fn teardown_owned(inner: NonNull<PerCpuInner<S>>) {
        // SAFETY: The owner's set is alive.
        let set = unsafe { inner.as_ref() };
        if registry::claim(&set.entry) {
            // SAFETY: Claimed just now.
            unsafe { Self::remove(set) };
            registry::unlink(&set.entry);
        } else {
            set.done.wait_for_completion();
        }
        // SAFETY: The instance and the state are gone (here or by the reaper); the caller
        // owns the set.
        unsafe { Self::free(inner) };
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
        let _in_callback = InCallback::enter();
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
                this.parked[cpu as usize].store(false, ordering::Relaxed);
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
                    .and_then(|name| create_raw(this.entry.owner(), Place::Cpu(id), &name, body))
                    .map(|(task, shared)| {
                        let t = NewThread::<S, Parkable> {
                            handle: Handle::new(task, shared),
                            bound: true,
                            preferred: false,
                            _kind: PhantomData,
                        }
                        .start();
                        this.headers[cpu as usize].store(
                            t.thread.handle.header.as_ptr().cast_const(),
                            ordering::Release,
                        );
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
        let _in_callback = InCallback::enter();
        // SAFETY: By the function's safety requirement.
        let this = unsafe { Self::from_node(node) };
        let taken = this
            .threads
            .lock()
            .get_mut(cpu as usize)
            .and_then(Option::take);
        if let Some(mut t) = taken {
            // Parked already is `EBUSY` here, not a WARN; nothing else can fail.
            if t.park().is_ok() {
                this.parked[cpu as usize].store(true, ordering::Relaxed);
            }
            this.threads.lock()[cpu as usize] = Some(t);
        }
        0
    }
}

/// `prepare` of a set's entry: nothing (the set is kept by its owner, who waits for `done`,
/// or by the claim itself).
///
/// # Safety
///
/// Called by the reaper with a claimed entry of this kind; it does nothing.
unsafe fn prepare_nothing(_e: NonNull<Entry>) {}

/// `reap` of a set's entry: remove its hotplug state; free it if its drop handed it to the
/// reaper, else tell the owner (its threads are reaped with the other threads).
///
/// # Safety
///
/// `e` is the entry of a `PerCpuInner<S>`, claimed by the reaper.
unsafe fn reap_set<S: Send + 'static>(e: NonNull<Entry>) {
    // `entry` is the first field of the `repr(C)` set.
    let inner = e.cast::<PerCpuInner<S>>();
    // SAFETY: The claim keeps the set alive: its owner waits for `done`, or handed it over.
    let set = unsafe { inner.as_ref() };
    // SAFETY: Claimed by the reaper, once.
    unsafe { PerCpuThreads::<S>::remove(set) };
    registry::unlink(&set.entry);
    if set.reaper_frees.load(ordering::Acquire) {
        // SAFETY: Handed over by the drop (see the invariants); the callbacks are gone.
        unsafe { PerCpuThreads::<S>::free(inner) };
    } else {
        set.done.complete_all();
    }
}

/// A set on its way to a teardown thread.
struct SetPtr<S: Send + 'static>(NonNull<PerCpuInner<S>>);

// SAFETY: The set is `Send` (see `PerCpuThreads`); only its one owner holds this.
unsafe impl<S: Send + 'static> Send for SetPtr<S> {}

impl<S: Send + 'static> Drop for PerCpuThreads<S> {
    fn drop(&mut self) {
        let inner = self.inner;
        let own_thread = {
            let current = Task::current_raw().cast_const();
            self.inner().headers.iter().any(|h| {
                let h = h.load(ordering::Acquire);
                // SAFETY: Published headers live as long as the set.
                !h.is_null() && unsafe { (*h).task() } == current
            })
        };
        if !own_thread && !hotplug_would_deadlock() {
            kernel::task::might_sleep();
            // SAFETY: The handle owns the set, and gives it up here.
            unsafe { PerCpuThreads::teardown_owned(inner) };
            return;
        }
        // Dropped by one of its own threads (which the teardown stops), in a hotplug callback
        // or with migration disabled (where removing a hotplug state would wait for us): a
        // thread of its own tears it down (H20, H24).
        let set = SetPtr(inner);
        let (module, name) = (self.inner().entry.owner(), self.inner().name);
        let handed = spawn_detached(module, fmt!("{name}-teardown"), move |_ctx| {
            let set = set;
            // SAFETY: The set was handed over whole to this thread.
            unsafe { PerCpuThreads::teardown_owned(set.0) };
        });
        if handed.is_ok() {
            return;
        }
        // No thread (the module is not live, or no memory): the reaper ends and frees the set
        // when the module goes. (If it claimed the set already, it may not see this: the set's
        // memory is then leaked; its threads are stopped all the same.)
        self.inner().reaper_frees.store(true, ordering::Release);
        pr_warn!("kthread_rs: per-CPU set dropped where it cannot be torn down: unload ends it\n");
    }
}
