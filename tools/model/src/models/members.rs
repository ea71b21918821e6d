// SPDX-License-Identifier: GPL-2.0

//! A thread group's member list and orphan hand-off (`thread/members.rs`) against its threads'
//! exits and the group's drop: the group is freed exactly once, after every thread has stopped
//! touching it; every thread's completion is counted once; no access to a freed group or
//! block; no block is freed while on the list.
//!
//! The functions below follow `detached_main` (after the body) and `ThreadGroup::drop` of
//! `thread/detached.rs` step by step; the completion is `c::completion`. The module reference
//! that a disowned thread takes (always granted here) is not modelled.

use crate::c::completion::Completion;
use crate::members::{self, List, Member};
use crate::trace::step;
use loom::{
    cell::UnsafeCell,
    sync::{atomic::AtomicBool, Mutex},
    thread,
};
use std::sync::atomic::Ordering::SeqCst;

/// A task, known by its address only.
struct Task;

/// The task of member `i`; the thread that is no member is `task(9)`.
fn task(i: usize) -> *const Task {
    (0x100 * (i + 1)) as *const Task
}

/// Memory that is freed: an access after the free, or one that the free does not happen after,
/// fails (an assertion, or loom's causality check of the cell).
struct Alive(UnsafeCell<bool>);

impl Alive {
    fn new() -> Self {
        Self(UnsafeCell::new(true))
    }
    fn touch(&self, what: &str) {
        // SAFETY: loom's cell; a plain read.
        self.0
            .with(|a| assert!(unsafe { *a }, "access after free: {what}"));
    }
    fn free(&self, what: &str) {
        // SAFETY: loom's cell; a plain write.
        self.0.with_mut(|a| unsafe {
            assert!(*a, "double free: {what}");
            *a = false;
        });
    }
}

/// `GroupInner`: the completion and the locked member list.
struct Group {
    mem: Alive,
    done: Completion,
    members: Mutex<List<Group, Task>>,
}

/// A thread's block: its `Start`'s member.
struct Block {
    mem: Alive,
    member: Member<Group, Task>,
}

/// A raw pointer that a loom thread may take along.
struct P<T>(*mut T);
// SAFETY: The model's threads run on one OS thread; the pointees are shared as in the kernel.
unsafe impl<T> Send for P<T> {}
impl<T> Clone for P<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for P<T> {}

/// `ThreadGroup`: the group and its count of owed completions.
struct ThreadGroup {
    inner: *mut Group,
    outstanding: usize,
}
// SAFETY: As for `P`.
unsafe impl Send for ThreadGroup {}

/// `ThreadGroup::drop()`, on the thread of task `current` (`who` in the trace).
fn group_drop(tg: ThreadGroup, current: *const Task, who: &str) {
    let g = tg.inner;
    let n = tg.outstanding;
    step(who, "drop: lock the list, find current");
    // SAFETY: The group is the drop's, alive until it is freed below.
    unsafe { (*g).mem.touch("the drop locks the list") };
    let mut list = unsafe { (*g).members.lock().unwrap() };
    let me = list.find(current);
    if let Some(me) = me {
        step(who, "drop: on its own member: disown it");
        // SAFETY: On the locked list; the current thread's.
        unsafe { list.disown(me) };
    }
    drop(list);
    let waits = if me.is_some() { n - 1 } else { n };
    for _ in 0..waits {
        step(who, "drop: wait_for_completion");
        // SAFETY: As above.
        unsafe {
            (*g).mem.touch("the drop waits");
            (*g).done.wait_for_completion();
        }
    }
    // SAFETY: Every owed completion waited for, but `me`'s.
    let free = unsafe { members::release(me, g) };
    if free.is_null() {
        step(who, "drop: handed the group to its member");
    } else {
        step(who, "drop: frees the group");
        // SAFETY: The group, not handed over.
        unsafe { (*free).mem.free("the group") };
    }
}

/// `detached_main()` after the body, of the thread of block `b`, task `me` (`who`). `irq` runs
/// at the one point where an interrupt's drop of the group does not deadlock: between
/// `leave`'s first read of the group and its lock (an interrupt while the lock is held, or
/// after `leave`, would wait for this very thread).
fn member_exit(b: *mut Block, me: *const Task, who: &str, mut irq: impl FnMut()) {
    step(who, "body returned: leave (reads group)");
    // SAFETY: The thread's own block, alive until it frees it below.
    let group = unsafe {
        members::leave(&raw mut (*b).member, |g: *const Group| {
            irq();
            step(who, "leave: locks the group's list");
            (*g).mem.touch("leave locks the group's list");
            (*g).members.lock().unwrap()
        })
    };
    // SAFETY: As above.
    let orphan = unsafe { (*b).member.orphan() };
    // The block is off every list: its group (if still alive) no longer has it.
    for g in [group, orphan.cast_const()] {
        if !g.is_null() {
            // SAFETY: `group` is alive until this thread's completion; `orphan` is this thread's.
            let on = unsafe {
                (*g).mem.touch("the exit checks the list");
                (*g).members.lock().unwrap().find(me).is_some()
            };
            assert!(!on, "{who}: block freed while on the list");
        }
    }
    step(who, "frees its block");
    // SAFETY: As above.
    unsafe { (*b).mem.free("a block") };
    if !orphan.is_null() {
        step(who, "frees its orphan group");
        // SAFETY: Handed to this thread.
        unsafe { (*orphan).mem.free("the group (orphan)") };
    }
    if !group.is_null() {
        step(who, "complete(group)");
        // SAFETY: The group counts this completion before it is freed.
        unsafe {
            (*group).mem.touch("complete");
            (*group).done.complete();
        }
    }
}

/// A group of `n` threads, spawned (joined to the list) before they run.
fn new_group(n: usize) -> (ThreadGroup, Vec<P<Block>>) {
    let g = Box::into_raw(Box::new(Group {
        mem: Alive::new(),
        done: Completion::new(),
        members: Mutex::new(List::new()),
    }));
    let blocks = (0..n)
        .map(|i| {
            let b = Box::into_raw(Box::new(Block {
                mem: Alive::new(),
                member: Member::new(g),
            }));
            // SAFETY: The new block, unshared; `spawn` joins it before the thread is woken.
            unsafe {
                (*g).members
                    .lock()
                    .unwrap()
                    .join(&raw mut (*b).member, task(i))
            };
            P(b)
        })
        .collect();
    (
        ThreadGroup {
            inner: g,
            outstanding: n,
        },
        blocks,
    )
}

/// The end of an execution: the group was freed, every completion counted, then the memory
/// goes (loom's objects in it are dropped).
fn finish(g: *mut Group, blocks: Vec<P<Block>>) {
    // SAFETY: Every thread joined; nothing touches them any more.
    unsafe {
        (*g).mem
            .0
            .with(|a| assert!(!*a, "the group was never freed"));
        assert_eq!((*g).done.done(), 0, "a completion not waited for");
        for b in blocks {
            (*b.0)
                .mem
                .0
                .with(|a| assert!(!*a, "a block was never freed"));
            drop(Box::from_raw(b.0));
        }
        drop(Box::from_raw(g));
    }
}

/// The group dropped by its own thread m0: in its body if m1 has raised the "interrupt" flag by
/// then, else from an interrupt between `leave`'s read of the group and its lock. The drop
/// waits for m1 and m2 and hands the group to m0. The list is m2, m1, m0: each unlink is at the
/// head, in the middle or at the tail. Bounds: three members and the spawner (four threads),
/// preemption bound 3 (about 7 s).
#[test]
fn dropped_by_its_own_member() {
    crate::check(|| {
        let (tg, blocks) = new_group(3);
        let g = P(tg.inner);
        let b2 = blocks[2];
        let m2 = thread::spawn(move || {
            let b2 = b2;
            member_exit(b2.0, task(2), "m2", || {});
        });
        let raised = loom::sync::Arc::new(AtomicBool::new(false));
        let b0 = blocks[0];
        let b1 = blocks[1];
        let m0 = {
            let raised = raised.clone();
            thread::spawn(move || {
                let b0 = b0;
                let mut tg = Some(tg);
                if raised.load(SeqCst) {
                    step("m0", "body drops the group");
                    group_drop(tg.take().unwrap(), task(0), "m0");
                }
                member_exit(b0.0, task(0), "m0", || {
                    if let Some(tg) = tg.take() {
                        step("m0", "interrupt: drops the group");
                        group_drop(tg, task(0), "m0/irq");
                    }
                });
            })
        };
        let m1 = thread::spawn(move || {
            let b1 = b1;
            step("m1", "body raises the interrupt");
            raised.store(true, SeqCst);
            member_exit(b1.0, task(1), "m1", || {});
        });
        m0.join().unwrap();
        m1.join().unwrap();
        m2.join().unwrap();
        finish(g.0, blocks);
    });
}

/// The group dropped by a thread that is none of its own, while its two threads leave. Bounds:
/// two members and the dropper (three threads), preemption bound 3 (under 1 s).
#[test]
fn dropped_by_another_thread() {
    crate::check(|| {
        let (tg, blocks) = new_group(2);
        let g = P(tg.inner);
        let ms: Vec<_> = blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                thread::spawn(move || {
                    let b = b;
                    member_exit(b.0, task(i), &format!("m{i}"), || {});
                })
            })
            .collect();
        group_drop(tg, task(9), "owner");
        for m in ms {
            m.join().unwrap();
        }
        finish(g.0, blocks);
    });
}
