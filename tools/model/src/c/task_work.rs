// SPDX-License-Identifier: GPL-2.0

//! `task_work_add()` and `task_work_run()` (kernel/task_work.c, 7.2): a task's LIFO list of
//! `callback_head`s, pushed by `cmpxchg`, taken whole by the task itself, and closed with the
//! `work_exited` sentinel once the task exits.

use loom::{
    cell::UnsafeCell,
    sync::atomic::{AtomicBool, AtomicUsize},
    sync::Mutex,
};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

/// `struct callback_head`. `next` is a loom cell: an access to a freed head, or one that does
/// not happen after the write that published it, is a reported race.
pub struct CallbackHead {
    next: UnsafeCell<usize>,
    func: UnsafeCell<Option<unsafe fn(*const CallbackHead)>>,
}

impl Default for CallbackHead {
    fn default() -> Self {
        Self::new()
    }
}

impl CallbackHead {
    /// An uninitialised head (`Opaque::uninit()`).
    pub fn new() -> Self {
        Self {
            next: UnsafeCell::new(0),
            func: UnsafeCell::new(None),
        }
    }
}

/// `init_task_work()` (include/linux/task_work.h): set `func`.
///
/// # Safety
///
/// `head` is alive and not queued.
pub unsafe fn init_task_work(head: *const CallbackHead, func: unsafe fn(*const CallbackHead)) {
    // SAFETY: By the function's safety requirement.
    unsafe { (*head).func.with_mut(|f| *f = Some(func)) };
}

/// `&work_exited`: a sentinel address that no head has.
const WORK_EXITED: usize = 1;

/// The task's part of the hand-off: `task->task_works`, `PF_EXITING` and `pi_lock`.
pub struct Task {
    task_works: AtomicUsize,
    exiting: AtomicBool,
    pi_lock: Mutex<()>,
}

impl Default for Task {
    fn default() -> Self {
        Self::new()
    }
}

/// `-ESRCH`: the task is past the point in its exit where it runs task work.
#[derive(Debug)]
pub struct Esrch;

impl Task {
    /// A running task with no task work.
    pub fn new() -> Self {
        Self {
            task_works: AtomicUsize::new(0),
            exiting: AtomicBool::new(false),
            pi_lock: Mutex::new(()),
        }
    }

    /// `task_work_add()`, task_work.c lines 59-104 (the push, lines 73-78; the notification
    /// only makes the task run `task_work_run()` sooner, which the model's task does anyway).
    ///
    /// # Safety
    ///
    /// `work` is alive and initialised, not queued, and stays alive until its `func` runs.
    pub unsafe fn task_work_add(&self, work: *const CallbackHead) -> Result<(), Esrch> {
        let mut head = self.task_works.load(Relaxed);
        loop {
            if head == WORK_EXITED {
                return Err(Esrch);
            }
            // SAFETY: By the function's safety requirement; not yet published.
            unsafe { (*work).next.with_mut(|n| *n = head) };
            // try_cmpxchg(): fully ordered on success.
            match self
                .task_works
                .compare_exchange(head, work as usize, SeqCst, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => head = now,
            }
        }
    }

    /// `PF_EXITING`, set by `exit_signals()` in `do_exit()` before `exit_task_work()`.
    pub fn set_exiting(&self) {
        self.exiting.store(true, Relaxed);
    }

    /// `task_work_run()`, task_work.c lines 201-239, run by the task itself (`current`): take
    /// the whole list (closing it with `work_exited` if the task exits and the list is empty),
    /// then call each `func`.
    pub fn task_work_run(&self) {
        loop {
            let mut work = self.task_works.load(Relaxed);
            let mut head;
            loop {
                head = 0;
                if work == 0 {
                    if self.exiting.load(Relaxed) {
                        head = WORK_EXITED;
                    } else {
                        break;
                    }
                }
                match self
                    .task_works
                    .compare_exchange(work, head, SeqCst, Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => work = now,
                }
            }
            if work == 0 {
                break;
            }
            // Synchronise with task_work_cancel_match() (not exported; kept for fidelity).
            drop(self.pi_lock.lock().unwrap());
            while work != 0 {
                let w = work as *const CallbackHead;
                // SAFETY: Queued heads are alive until their `func` runs (task_work_add()'s
                // requirement), and the list was taken whole by this task.
                let (next, func) = unsafe {
                    (
                        (*w).next.with(|n| *n),
                        (*w).func.with(|f| (*f).expect("func of a queued head")),
                    )
                };
                // SAFETY: `func` of a queued head, called once with it.
                unsafe { func(w) };
                work = next;
            }
        }
    }
}
