// SPDX-License-Identifier: GPL-2.0

//! A thread that exists but has not been woken yet, and what can be set on it only then:
//! binding, preferred CPUs, priority, freezability.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use super::{
    create_raw, header::FREEZABLE, to_result, with_name, Body, Handle, ParkableThread, Thread,
    NUMA_NO_NODE,
};
use core::marker::PhantomData;
use kernel::{bindings, cpu::CpuId, cpumask::Cpumask, fmt, prelude::*};

/// Where a new thread runs.
#[derive(Clone, Copy)]
pub(super) enum Place {
    Node(i32),
    Cpu(CpuId),
}

/// `EINVAL` unless `cpu` is a possible CPU (`CpuId` only guarantees `cpu < nr_cpu_ids`).
pub(crate) fn check_possible(cpu: CpuId) -> Result {
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
pub(super) fn cpu_active(cpu: CpuId) -> bool {
    // SAFETY: `cpu_active_mask` is a valid, static cpumask and `cpu < nr_cpu_ids`.
    unsafe {
        bindings::cpumask_test_cpu(cpu.as_u32() as c_int, &raw mut bindings::__cpu_active_mask)
    }
}

/// Bind `task` to `cpu` (the C `set_cpus_allowed_ptr()`); kernel threads may be bound to any
/// online CPU this way, even with PF_NO_SETAFFINITY set.
pub(super) fn set_affinity(task: *mut bindings::task_struct, cpu: CpuId) -> Result {
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
/// Marker: a thread whose body runs once and returns (see [`create`](super::create)).
pub struct Unparkable;
/// Marker: a thread whose body is a step loop that honours parking (see
/// [`create_parkable`](super::create_parkable)).
pub struct Parkable;

/// A kthread that exists but has not been woken yet: configure it, then [`NewThread::start`].
///
/// Binding, priority and freezability can only be set here: they are invalid or racy once the
/// thread runs (H5). Dropping a `NewThread` stops it; its body never runs and is dropped.
#[must_use = "a NewThread is stopped, without running its body, when it is dropped"]
pub struct NewThread<T, P = Unparkable> {
    pub(super) handle: Handle<T>,
    /// Bound to a CPU (`kthread_bind()` or `kthread_create_on_cpu()`).
    pub(super) bound: bool,
    /// Has a preferred affinity (`kthread_affine_preferred()`).
    pub(super) preferred: bool,
    pub(super) _kind: PhantomData<P>,
}

impl<T, P> NewThread<T, P> {
    /// Bind the thread to `cpu` (the C `kthread_bind()`); `EINVAL` for an impossible CPU.
    ///
    /// `EINVAL` after [`NewThread::affine_preferred`]: the kernel re-applies a preferred
    /// affinity at every CPU online, and WARNs if it finds the thread bound. `ESRCH` if the
    /// module's unload stopped the thread already (H21).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn bind(&mut self, cpu: CpuId) -> Result<&mut Self> {
        kernel::task::might_sleep();
        check_possible(cpu)?;
        if self.preferred {
            return Err(EINVAL);
        }
        if !self.handle.header().begin_owner_call() {
            return Err(ESRCH);
        }
        // SAFETY: The thread has not been woken yet (this type's purpose), as `kthread_bind()`
        // requires, nor stopped (the reaper waits for `end_owner_call`), and `cpu` is a
        // possible CPU.
        unsafe { bindings::kthread_bind(self.handle.task.as_ptr(), cpu.as_u32()) };
        self.handle.header().end_owner_call();
        self.bound = true;
        Ok(self)
    }

    /// Prefer the CPUs of `mask` (the C `kthread_affine_preferred()`): unlike
    /// [`NewThread::bind`], a preference, that the kernel keeps across CPU hotplug. While none
    /// of `mask`'s CPUs is online (or all are isolated), the thread runs on the housekeeping
    /// CPUs; as soon as one comes back online, the kernel moves it back to `mask`.
    ///
    /// - `EINVAL` if `mask` is empty or has an impossible CPU, or if the thread is bound
    ///   ([`NewThread::bind`], [`create_on_cpu`](super::create_on_cpu)): the C function would
    ///   WARN, now or at the next CPU online.
    /// - `EBUSY` if the thread has a preferred affinity already (C WARNs).
    /// - `ESRCH` if the module's unload stopped the thread already (H21).
    /// - `ENOMEM`.
    ///
    /// # Context
    ///
    /// May sleep.
    ///
    /// # Examples
    ///
    /// ```ignore
    /// use kernel::{cpu::CpuId, cpumask::CpumaskVar};
    /// use kthread_rs::thread;
    ///
    /// // Prefer CPU 0 (say, the CPU of the device's interrupt), without pinning to it.
    /// let mut mask = CpumaskVar::new_zero(GFP_KERNEL)?;
    /// mask.set(CpuId::from_u32(0).ok_or(EINVAL)?);
    /// # let module = kthread_rs::compat::this_module();
    /// let mut t = thread::create(module, fmt!("mydrv-irqwork"), |ctx| {
    ///     while ctx.sleep(kernel::time::Delta::from_millis(10)) != thread::Wake::Stop {}
    /// })?;
    /// t.affine_preferred(&mask)?;
    /// let t = t.start();
    /// # drop(t);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn affine_preferred(&mut self, mask: &Cpumask) -> Result<&mut Self> {
        kernel::task::might_sleep();
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
        if !self.handle.header().begin_owner_call() {
            return Err(ESRCH);
        }
        // SAFETY: The thread has not been woken yet (this type's purpose), as the C function
        // requires, nor stopped (the reaper waits for `end_owner_call`); it is not bound and
        // has no preferred affinity (checked above, tracked by `bind` and here); `mask` is a
        // valid cpumask of possible CPUs.
        let r = to_result(unsafe {
            bindings::kthread_affine_preferred(self.handle.task.as_ptr(), mask.as_raw())
        });
        self.handle.header().end_owner_call();
        r?;
        self.preferred = true;
        Ok(self)
    }

    /// Set the nice value, -20 (highest priority) to 19 (the C `set_user_nice()`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn set_nice(&mut self, nice: i32) -> Result<&mut Self> {
        kernel::task::might_sleep();
        if !(-20..=19).contains(&nice) {
            return Err(EINVAL);
        }
        // SAFETY: The task is alive (the handle's reference) and `nice` is in range.
        unsafe { bindings::set_user_nice(self.handle.task.as_ptr(), nice as c_long) };
        Ok(self)
    }

    /// Run under `SCHED_FIFO` at the kernel's default RT priority (the C `sched_set_fifo()`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn set_fifo(&mut self) -> &mut Self {
        kernel::task::might_sleep();
        // SAFETY: The task is alive (the handle's reference).
        unsafe { bindings::sched_set_fifo(self.handle.task.as_ptr()) };
        self
    }

    /// Run under `SCHED_FIFO` at the lowest RT priority (the C `sched_set_fifo_low()`).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn set_fifo_low(&mut self) -> &mut Self {
        kernel::task::might_sleep();
        // SAFETY: The task is alive (the handle's reference).
        unsafe { bindings::sched_set_fifo_low(self.handle.task.as_ptr()) };
        self
    }

    /// Make the thread freezable: it calls `set_freezable()` before its body, and its
    /// [`Context::wait_until`](super::Context::wait_until) sleeps are freezable (H19).
    ///
    /// # Context
    ///
    /// Any context.
    pub fn set_freezable(&mut self) -> &mut Self {
        // Read by the thread after `start`'s wake-up, which orders this store before it.
        self.handle.header().set_flags(FREEZABLE);
        self
    }

    pub(super) fn wake(self) -> Handle<T> {
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
    ///
    /// # Context
    ///
    /// Any context.
    pub fn pid(&self) -> kernel::task::Pid {
        self.handle.task.pid()
    }
}

impl<T> NewThread<T, Unparkable> {
    /// Wake the thread: it runs its body (unless stopped first, see
    /// [`Exit::NeverRan`](super::Exit::NeverRan)).
    ///
    /// # Context
    ///
    /// Any context.
    pub fn start(self) -> Thread<T> {
        Thread {
            handle: self.wake(),
        }
    }
}

impl<S> NewThread<S, Parkable> {
    /// Wake the thread: it runs its step loop.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn start(self) -> ParkableThread<S> {
        ParkableThread {
            thread: Thread {
                handle: self.wake(),
            },
            parked: false,
        }
    }
}
pub(super) fn new_thread<B: Body + 'static, P>(
    module: &'static ThisModule,
    place: Place,
    name: fmt::Arguments<'_>,
    body: B,
) -> Result<NewThread<B::Output, P>> {
    kernel::task::might_sleep();
    let (task, shared) = with_name(name, |name| create_raw(module, place, name, body))?;
    Ok(NewThread {
        handle: Handle::new(task, shared),
        bound: matches!(place, Place::Cpu(_)),
        preferred: false,
        _kind: PhantomData,
    })
}
