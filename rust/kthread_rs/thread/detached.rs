// SPDX-License-Identifier: GPL-2.0

//! Threads that end by themselves, with no handle to stop them.
//!
//! C headers: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/module.h`](srctree/include/linux/module.h)
//!
//! An owned handle stops its thread and waits for its exit, so this module's code never runs
//! after the module is gone (H7). A thread with no handle must leave by itself, through C code
//! that does not return into the module, after telling whoever keeps the module that it is
//! done:
//!
//! - [`spawn_detached`]: the thread holds a reference on its module while it runs, and leaves
//!   through `module_put_and_kthread_exit()`. `rmmod` is refused until every detached thread
//!   has ended.
//! - [`ThreadGroup`]: the threads leave through `kthread_complete_and_exit()`, completing the
//!   group's completion, and dropping the group waits for all of them. A module that keeps a
//!   group in its data makes `rmmod` wait for the group's threads, rather than refuse.
//!
//! `kthread_exit()` is not exported to modules, and nothing here lets a body leave early: a body
//! leaves by returning, so that its destructors run. (`kthread_exit()` never returns: whatever
//! the body owns would leak, and any lock it holds would stay held.)
//!
//! Nobody can stop these threads or wake them: [`Context::should_stop`] is false for them
//! (unless the module is unloaded while one still runs, its group forgotten: then the unload
//! stops it, H21), and their bodies sleep with [`Context::sleep`] or on their own primitives.

use super::super::sys;
use super::header::{Header, ThreadOps, SELF_OWNED, STARTED};
use super::members::{self, List, Member};
use super::{with_name, Context, NUMA_NO_NODE};
use core::{
    cell::Cell,
    mem::ManuallyDrop,
    ptr::{self, NonNull},
};
use kernel::{
    bindings,
    error::from_err_ptr,
    fmt,
    prelude::*,
    sync::{
        atomic::{ordering, Atomic},
        SpinLock,
    },
    task::Task,
    types::Opaque,
};

// Lockdep tells classes apart by the address of their key and matches names by address: a
// string literal in generic or inlined code can be emitted once per crate that uses it, so the
// name of a class whose key is a `static` here is a `static` too.
/// The lock class name of every group's member list.
static MEMBERS_NAME: &CStr = c"kthread_rs::ThreadGroup";

/// What [`detached_main`] and a [`ThreadGroup`] know of a thread's block, whatever its body.
///
/// # Invariants
///
/// - `run` is `run::<F>` for the [`Block<F>`] that starts with this head.
/// - `member`'s group (see [`Member`]) is the [`GroupInner`] whose completion the thread
///   completes at its exit, or null: the thread holds a reference on its module (its
///   header's), and gives it back at its exit.
/// - A thread with a group is on that group's member list from before it is woken until it
///   leaves the list after its body (or, if it never ran, until the reaper takes it off); the
///   block is freed only after that.
#[repr(C)]
struct Start {
    run: unsafe fn(*mut Head),
    member: Member<GroupInner, bindings::task_struct>,
}

/// The part of every block that does not depend on the body: the thread's header (first, as
/// the registry and the reaper know it), then what detached threads and groups need.
#[repr(C)]
#[pin_data]
struct Head {
    #[pin]
    header: Header,
    start: Start,
}

/// A detached thread's memory: owned by the thread, which frees it once its body returned
/// (or by the reaper, if it claimed the thread first).
#[repr(C)]
#[pin_data]
struct Block<F> {
    #[pin]
    head: Head,
    body: Cell<Option<F>>,
}

impl<F> Block<F> {
    const OPS: ThreadOps = ThreadOps {
        release: reap_release::<F>,
        // The body goes with the block, which `release` frees right after.
        drop_body: keep_body,
    };
}

/// `drop_body` of a block: nothing, [`reap_release`] frees the block, body and all.
///
/// # Safety
///
/// None: it does nothing.
unsafe fn keep_body(_h: NonNull<Header>) {}

/// The C `threadfn` of every detached thread: run the body, then leave without returning into
/// the module.
///
/// # Safety
///
/// `data` is the [`Head`] of a [`Block`] made by [`spawn_block`] for this thread, which now
/// owns it (unless the reaper claims it).
unsafe extern "C" fn detached_main(data: *mut c_void) -> c_int {
    let head = data.cast::<Head>();
    // SAFETY: By the function's safety requirement the block is alive; from here on its end is
    // this thread's to do (the reaper, if it claims the thread, sees that it started).
    unsafe { (*head).header.set_flags(STARTED) };
    // SAFETY: By the function's safety requirement and the invariant of `Start`, `run` is
    // `run::<F>` for this thread's `Block<F>`.
    unsafe { ((*head).start.run)(head) };
    let lock = |g: *const GroupInner| {
        // SAFETY: `leave` locks only a group that is alive (see below).
        unsafe { (*g).members.lock() }
    };
    // SAFETY: The block is alive (freed below), and this thread's body has returned. Only a
    // drop of the group that runs on this very thread takes it out of the group (see
    // `ThreadGroup::drop`), before `leave` reads its group or, from an interrupt, after: then
    // the group is not freed but handed to this thread (`orphan`). So a group read here lives
    // until it has counted a completion of this thread, or is this thread's; `lock` locks the
    // list of the group it is given.
    let group = unsafe { members::leave(&raw mut (*head).start.member, lock) };
    // SAFETY: The block is alive. `orphan` is set, if at all, by a drop that ran on this thread
    // and completed before `leave` took the lock: one that comes later (from an interrupt)
    // never completes, as the type's documentation says (it spins on the lock that `leave`
    // holds, or finds this thread off the list and waits for its completion).
    let orphan = unsafe { (*head).start.member.orphan() };
    // SAFETY: The block is alive (freed below, after this read).
    let module = unsafe { (*head).header.module() };
    // Once unlinked, the reaper no longer waits for this thread, so the module code it runs
    // until it leaves (freeing its block) needs a module reference: a detached thread holds
    // one (`group` null), a group thread takes one now. Only while the module is live: a
    // module whose `init` fails is freed whatever its count, and one that is going cannot be
    // held. Without one, the thread leaves its block to the reaper, still linked.
    // Taken only while the module is live; given back below, by the exit.
    // SAFETY: `module` is the thread's, from the `&'static ThisModule` it was spawned with
    // (invariant of its header's `Entry`); this thread runs its code.
    let held = group.is_null() || unsafe { sys::module_get(module) }.is_ok();
    if !held {
        // SAFETY: The block is alive (the reaper frees it once this thread has exited, and waits
        // for that: it is linked). The reaper stops this thread after its exit too, which needs
        // the task: a reference of its own, which the reaper gives back (`ZOMBIE_TASKREF`).
        unsafe {
            bindings::get_task_struct(Task::current_raw());
            (*head).header.set_flags(super::header::ZOMBIE_TASKREF);
            bindings::kthread_complete_and_exit(Opaque::cast_into(&raw const (*group).done), 0)
        }
    }
    // SAFETY: The block is alive, and off any group list now.
    if unsafe { (*head).header.claim_and_unlink() } {
        // SAFETY: Claimed: the block is this thread's to free (by the invariant of `Header`,
        // the reaper frees it otherwise, once this thread has exited).
        unsafe { free_block(head) };
    }
    if !orphan.is_null() {
        // SAFETY: By the invariant of `Member` (`orphan`), this thread owns the group now; its
        // other threads have completed (the drop waited for them), and this one has left its
        // list.
        drop(unsafe { KBox::from_raw(orphan) });
    }
    if !group.is_null() {
        // SAFETY: A group is freed only after it has counted one completion for each thread it
        // spawned (the invariant of `ThreadGroup`), and this is this thread's one. The waiter
        // may free the group as soon as it sees it: it is not touched again. The module stays
        // (the reference taken above).
        unsafe { bindings::complete(Opaque::cast_into(&raw const (*group).done)) };
    }
    // SAFETY: This thread holds a reference on its module (see above), and this is its one
    // release. `__module_put_and_kthread_exit()` is kernel code that never returns, so no code
    // of the module runs after the reference is gone.
    unsafe { bindings::__module_put_and_kthread_exit(module, 0) }
}

/// Run the body of a `Block<F>`.
///
/// # Safety
///
/// `head` is the `head` of a `Block<F>` made by [`spawn_block`], owned by the current thread.
unsafe fn run<F: FnOnce(&Context<'_>) + Send + 'static>(head: *mut Head) {
    let block = head.cast::<Block<F>>();
    // SAFETY: `Block` is `repr(C)` with `head` first, so `block` is the thread's block, alive
    // until it is freed. Only the header and `body` are borrowed: the group's list and a drop
    // of the group write fields of `start.member` by raw pointer meanwhile.
    let (header, body) = unsafe { (&(*block).head.header, &(*block).body) };
    // SAFETY: `current` is the kthread whose header is `header`.
    let ctx = unsafe { Context::new(header) };
    if let Some(f) = body.take() {
        f(&ctx);
    }
    ctx.end_leaked_guards();
}

/// Free the block that starts with `head` (the `free::<F>` behind its ops).
///
/// # Safety
///
/// `head` is the head of a block, on no list, not used afterwards, whose owner is the caller.
unsafe fn free_block(head: *mut Head) {
    // SAFETY: By the function's safety requirement; `release` of a block's ops is
    // `reap_release::<F>`, which frees a started block only.
    unsafe { ((*head).header.ops().release)(NonNull::new_unchecked(head.cast())) };
}

/// The `release` of a block's [`ThreadOps`]: free a `Block<F>`, after doing, for a thread that
/// never ran (the reaper stopped it before its first run, H2), what its end would have done:
/// leave its group and complete it, or give back its module reference.
///
/// # Safety
///
/// `h` is the header of a `Block<F>` from `spawn_block`, whose thread has exited or is the
/// current one (about to leave); the caller owns it (claimed it).
unsafe fn reap_release<F>(h: NonNull<Header>) {
    let head = h.as_ptr().cast::<Head>();
    // SAFETY: By the function's safety requirement the block is alive.
    if unsafe { (*head).header.flags() } & STARTED == 0 {
        let lock = |g: *const GroupInner| {
            // SAFETY: `leave` locks only the thread's group, alive (see below).
            unsafe { (*g).members.lock() }
        };
        // SAFETY: The thread never ran, so no one else touches `start` but its group's lock;
        // its group (if any) is alive: it waits for this thread's completion, given here.
        // `lock` locks the list of the group it is given.
        let group = unsafe { members::leave(&raw mut (*head).start.member, lock) };
        if group.is_null() {
            // SAFETY: The module reference that `spawn_detached` took for the thread, on the
            // module that it spawned the thread with (the header's).
            unsafe { sys::module_put((*head).header.module()) };
        } else {
            // SAFETY: The group is alive: it waits for this thread's completion, given here.
            unsafe { bindings::complete(Opaque::cast_into(&raw const (*group).done)) };
        }
    }
    // SAFETY: The block came from `KBox::into_raw` in `spawn_block`, and the caller owns it.
    drop(unsafe { KBox::from_raw(head.cast::<Block<F>>()) });
}

/// Create and wake a detached thread that runs `f`, code of `module`, and leaves as `group`
/// says (see [`Start`]); a group thread is put on the group's list before it is woken.
fn spawn_block<F>(
    module: &'static ThisModule,
    name: fmt::Arguments<'_>,
    f: F,
    group: *const GroupInner,
) -> Result
where
    F: FnOnce(&Context<'_>) + Send + 'static,
{
    kernel::task::might_sleep();
    // INVARIANT: `run::<F>` for this `Block<F>`; `group` as the caller says; it goes on the
    // group's list below, before the thread is woken.
    let block = KBox::pin_init(
        pin_init!(Block::<F> {
            head <- pin_init!(Head {
                header <- Header::new(module, &Block::<F>::OPS, SELF_OWNED),
                start: Start {
                    run: run::<F>,
                    member: Member::new(group),
                },
            }),
            body: Cell::new(Some(f)),
        }),
        GFP_KERNEL,
    )?;
    // SAFETY: The block is never moved: the thread (or the reaper) frees it where it is.
    let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(block) });
    let task = with_name(name, |name| {
        // SAFETY: `detached_main` accepts `raw` (its `Head` is first), which the thread owns
        // once it runs. The name goes through "%s", never as the format.
        from_err_ptr(unsafe {
            bindings::kthread_create_on_node(
                Some(detached_main),
                raw.cast(),
                NUMA_NO_NODE,
                c"%s".as_char_ptr(),
                name.as_char_ptr(),
            )
        })
    });
    match task {
        Ok(task) => {
            // The thread runs `detached_main` once woken, unless the reaper stops it first
            // (then the reaper does its end). (A body that ends the task without returning,
            // `do_exit()`, would leave its block on the list and its completion owed: the
            // group's drop would then wait forever.)
            if !group.is_null() {
                // SAFETY: The caller's group is alive (borrowed by `ThreadGroup::spawn`), and
                // the block is not shared yet.
                unsafe { (*group).join(raw.cast(), task) };
            }
            // SAFETY: A new kthread is alive until it is woken and exits; the reference taken
            // here keeps it until the wake-up below, even if the reaper claims it meanwhile.
            unsafe { bindings::get_task_struct(task) };
            // SAFETY: `task` is not woken yet and runs on `raw`, which stays in place until
            // whoever claims the entry frees it; the reference above, then the running thread
            // itself, keep the task alive while the entry is linked.
            unsafe { (*raw).head.header.register(task) };
            // SAFETY: `task` is alive (the reference above). From here the thread owns the
            // block; no reference to the task is kept.
            unsafe {
                bindings::wake_up_process(task);
                bindings::put_task_struct(task);
            }
            Ok(())
        }
        Err(e) => {
            // SAFETY: There is no thread, so the block is still ours.
            drop(unsafe { KBox::from_raw(raw) });
            Err(e)
        }
    }
}

/// Start a thread named `name` that runs `f` and ends by itself: no handle, no stop.
///
/// `module` is the module whose code the thread runs (`THIS_MODULE`). The thread holds a
/// reference on it until its exit, which gives it back with the C
/// `module_put_and_kthread_exit()`, so `rmmod` is refused while it runs. Use it for work that
/// finishes on its own (a one-shot probe, a firmware load); use [`spawn`](super::spawn) for
/// anything that must be stopped, and [`ThreadGroup`] when unload should wait instead.
///
/// `EBUSY` unless `module` is live: a module whose `init` fails is freed whatever references
/// it has, so a detached thread cannot be started before `init` has returned.
///
/// # Context
///
/// May sleep.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread;
///
/// # let module = kthread_rs::compat::this_module();
/// // Let the device settle, then report it, without anyone waiting for it.
/// thread::spawn_detached(module, fmt!("mydrv-settle"), |ctx| {
///     ctx.sleep(kernel::time::Delta::from_millis(100));
///     pr_info!("mydrv: settled\n");
/// })?;
/// # Ok::<(), Error>(())
/// ```
pub fn spawn_detached<F>(module: &'static ThisModule, name: fmt::Arguments<'_>, f: F) -> Result
where
    F: FnOnce(&Context<'_>) + Send + 'static,
{
    kernel::task::might_sleep();
    // SAFETY: The module of a `&'static ThisModule`.
    unsafe { sys::module_get(module.as_ptr()) }?;
    spawn_block(module, name, f, ptr::null()).inspect_err(|_| {
        // SAFETY: The reference taken above, which no thread took over. The caller is running
        // the module's code, so whatever called it keeps the module.
        unsafe { sys::module_put(module.as_ptr()) }
    })
}

/// The part of a [`ThreadGroup`] that its threads touch.
#[pin_data]
struct GroupInner {
    #[pin]
    done: Opaque<bindings::completion>,
    /// The threads that have not yet left after their body (see [`Start`]).
    #[pin]
    members: SpinLock<List<GroupInner, bindings::task_struct>>,
}

// SAFETY: A `struct completion` is made to be completed and waited for from any task; the
// member list is behind a lock.
unsafe impl Send for GroupInner {}
// SAFETY: As for `Send`.
unsafe impl Sync for GroupInner {}

impl GroupInner {
    /// Put the new, not yet woken thread `task`, whose block starts with `head`, on the list.
    ///
    /// # Safety
    ///
    /// `head` is the unshared block of `task`, a thread of this group.
    unsafe fn join(&self, head: *mut Head, task: *mut bindings::task_struct) {
        // SAFETY: By the function's safety requirement; the list is locked.
        unsafe {
            self.members
                .lock()
                .join(&raw mut (*head).start.member, task)
        };
    }
}

/// Threads that end by themselves, and that the group's owner waits for: dropping the group
/// (or [`ThreadGroup::wait`]) waits until every thread spawned in it has ended. Each thread
/// leaves through the C `kthread_complete_and_exit()`, so nothing of this module runs after
/// the waiter has seen its completion.
///
/// Keep a group in the module's data to make module unload wait for its threads. Forgetting a
/// group (`mem::forget`) gives up that wait, as forgetting a [`Thread`](super::Thread) does.
///
/// Sharing a group with its own threads (an `Arc` that they hold too) gives up the wait in
/// the same way when the module's reference is not the last one: keep the group in one owner.
/// A group that is dropped by one of its own threads anyway (it held the last reference)
/// cannot wait for that thread: it waits for the others, and that thread then leaves as a
/// [`spawn_detached`] thread does, holding a module reference taken at the drop. If the module
/// is being unloaded, no reference can be had: the group is then leaked, so that its threads
/// still complete into it, and the unload stops them (H21), as with `mem::forget`.
///
/// Drop and [`ThreadGroup::wait`] sleep: call them in task context only (`might_sleep()`
/// reports other uses). From an interrupt they can deadlock, but they touch no freed memory.
///
/// # Invariants
///
/// `outstanding` counts the threads spawned in the group whose completion has not been
/// waited for; `inner` is freed only after that many completions have been waited for (or
/// leaked). `module` is the module whose code the group's threads run.
///
/// # Examples
///
/// ```ignore
/// use kthread_rs::thread::ThreadGroup;
///
/// # let module = kthread_rs::compat::this_module();
/// // In the module's data: its drop at rmmod waits for the flushes still running.
/// let group = ThreadGroup::new(module)?;
/// for i in 0..4 {
///     group.spawn(fmt!("mydrv-flush/{i}"), move |ctx| {
///         ctx.sleep(kernel::time::Delta::from_millis(10 * i));
///     })?;
/// }
/// drop(group); // returns once all four have ended
/// # Ok::<(), Error>(())
/// ```
pub struct ThreadGroup {
    module: &'static ThisModule,
    inner: ManuallyDrop<Pin<KBox<GroupInner>>>,
    outstanding: Atomic<usize>,
}

impl ThreadGroup {
    /// An empty group.
    ///
    /// `module` is the module whose code the group's threads run (`THIS_MODULE`).
    ///
    /// # Context
    ///
    /// May sleep (`GFP_KERNEL`).
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        kernel::task::might_sleep();
        let inner = KBox::pin_init(
            pin_init!(GroupInner {
                done <- Opaque::ffi_init(|slot: *mut bindings::completion| {
                    // SAFETY: `slot` is valid for writes and pinned (in a `KBox`).
                    unsafe { bindings::init_completion(slot) }
                }),
                members <- SpinLock::new(
                    List::new(),
                    MEMBERS_NAME,
                    kernel::static_lock_class!()
                ),
            }),
            GFP_KERNEL,
        )?;
        // INVARIANT: No thread yet; `module` as the caller says.
        Ok(ThreadGroup {
            module,
            inner: ManuallyDrop::new(inner),
            outstanding: Atomic::new(0),
        })
    }

    /// Start a thread named `name` that runs `f` in the group (code of the group's module, the
    /// one given to [`ThreadGroup::new`]).
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn spawn<F>(&self, name: fmt::Arguments<'_>, f: F) -> Result
    where
        F: FnOnce(&Context<'_>) + Send + 'static,
    {
        kernel::task::might_sleep();
        let inner: *const GroupInner = &**self.inner;
        spawn_block(self.module, name, f, inner)?;
        // INVARIANT: One more thread whose completion is owed. It may have completed already:
        // the completion counts.
        self.outstanding.add(1, ordering::Relaxed);
        Ok(())
    }

    /// How many threads spawned in the group have not been waited for.
    ///
    /// # Context
    ///
    /// Any context.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(ordering::Relaxed)
    }

    /// Wait until every thread spawned in the group so far has ended.
    ///
    /// `EDEADLK` if called by one of the group's threads, which would wait for itself.
    ///
    /// # Context
    ///
    /// May sleep.
    pub fn wait(&mut self) -> Result {
        kernel::task::might_sleep();
        let current = Task::current_raw().cast_const();
        if self.inner.members.lock().find(current).is_some() {
            return Err(sys::edeadlk());
        }
        let n = *self.outstanding.get_mut();
        self.wait_for(n);
        Ok(())
    }

    fn wait_for(&mut self, n: usize) {
        for _ in 0..n {
            // SAFETY: `done` was initialised by `new`.
            unsafe { bindings::wait_for_completion(self.inner.done.get()) };
            // INVARIANT: One completion waited for.
            *self.outstanding.get_mut() -= 1;
        }
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        kernel::task::might_sleep();
        let n = *self.outstanding.get_mut();
        let mut members = self.inner.members.lock();
        let me = members.find(Task::current_raw().cast_const());
        if let Some(me) = me {
            // Dropped by one of its own threads, `me` (on its list, so its block is alive and
            // its completion is owed: it is counted in `n`).
            pr_warn!("kthread_rs: a ThreadGroup was dropped by one of its own threads\n");
            // SAFETY: `me` is the `member` of a `Start` in a `Head`.
            let head = unsafe { kernel::container_of!(me, Head, start.member) };
            // Only while live: a reference taken while `init` runs does not keep the module (a
            // failing `init` frees it whatever its count).
            // SAFETY: `me` is on the locked list, so its block is alive; its module is that of
            // the `&'static ThisModule` it was spawned with (invariant of its header's `Entry`).
            if unsafe { sys::module_get((*head).header.module()) }.is_err() {
                drop(members);
                pr_warn!(
                    "kthread_rs: module not live: the ThreadGroup is leaked, not waited for\n"
                );
                // INVARIANT: Leaked: `inner` is never freed, so every thread can complete it.
                return;
            }
            // INVARIANT: Out of the group: `me` now holds a module reference and leaves through
            // `module_put_and_kthread_exit()`; its completion is no longer owed.
            // SAFETY: `me` is on the locked list, and is the current thread's.
            unsafe { members.disown(me) };
        }
        drop(members);
        self.wait_for(if me.is_some() { n - 1 } else { n });
        // SAFETY: Taken once, here; `self.inner` is not used afterwards.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        // SAFETY: Freed whole below, or handed over whole to `me`'s thread, which frees it
        // where it is.
        let inner = KBox::into_raw(unsafe { Pin::into_inner_unchecked(inner) });
        // SAFETY: Every thread's completion has been waited for but `me`'s, taken out of the
        // group above: none touches `inner` but `me`'s. `me` is the current thread, which runs
        // none of its own code while this drop runs (in its body, or in an interrupt on it), so
        // it has not freed its block: it frees it only after reading its orphan, in
        // `detached_main`.
        let free = unsafe { members::release(me, inner) };
        if !free.is_null() {
            // SAFETY: `inner`, from `KBox::into_raw` above, not handed over.
            drop(unsafe { KBox::from_raw(free) });
        }
    }
}
