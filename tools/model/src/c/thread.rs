// SPDX-License-Identifier: GPL-2.0

//! What a thread's hand-offs (`thread/handoff.rs`) meet on the C side, after Linux 7.2: a
//! module's reference count, a kthread's stop, park and exit, a completion; and the registry's
//! entry of a thread (Rust, `registry.rs`, but a spinlock: a loom `Mutex` here).
//!
//! Each function names the C function and the 7.2 lines it models. The WARNs and BUGs of C are
//! assertions: a model execution that would WARN fails.

use crate::trace::step;
use loom::sync::{
    atomic::{AtomicUsize, Ordering::SeqCst},
    Condvar, Mutex,
};

/// A module's reference count and state (`struct module`'s `refcnt` and `state`).
pub struct Module {
    st: Mutex<ModuleState>,
}

struct ModuleState {
    refs: i64,
    going: bool,
}

impl Default for Module {
    fn default() -> Self {
        Self::new()
    }
}

impl Module {
    /// A live module (its `init` returned), with no reference taken.
    pub fn new() -> Self {
        Self {
            st: Mutex::new(ModuleState {
                refs: 0,
                going: false,
            }),
        }
    }

    /// `try_module_get()`, kernel/module/main.c:935-949: fails once the module is not live.
    pub fn try_module_get(&self, who: &str) -> bool {
        let mut m = self.st.lock().unwrap();
        let ok = !m.going;
        if ok {
            m.refs += 1;
        }
        step(
            who,
            format!(
                "try_module_get: {}",
                if ok { "got" } else { "GOING, failed" }
            ),
        );
        ok
    }

    /// `module_put()`, kernel/module/main.c:951-960: `WARN_ON(ret < 0)` on a count that would
    /// go negative.
    pub fn module_put(&self, who: &str) {
        let mut m = self.st.lock().unwrap();
        step(who, "module_put");
        assert!(
            m.refs > 0,
            "module_put: WARN, the module's count would go negative"
        );
        m.refs -= 1;
    }

    /// `try_stop_module()` with `try_release_module_ref()`, kernel/module/main.c:758-785,
    /// unforced: the unload goes on (state GOING) only if no reference is held.
    pub fn try_stop_module(&self, who: &str) -> bool {
        let mut m = self.st.lock().unwrap();
        let ok = m.refs == 0;
        if ok {
            m.going = true;
        }
        step(
            who,
            format!(
                "try_stop_module: {}",
                if ok { "GOING" } else { "busy (EWOULDBLOCK)" }
            ),
        );
        ok
    }

    /// The references held now.
    pub fn refs(&self) -> i64 {
        self.st.lock().unwrap().refs
    }
}

/// The C side of one kthread (`struct kthread`'s flags and completions, the task's
/// `PF_EXITING`), its task reference count, and how often it was stopped.
pub struct KThread {
    st: Mutex<KState>,
    cv: Condvar,
    /// `kthread_stop()` calls on this thread.
    pub stops: AtomicUsize,
    /// References on the `task_struct` beyond the one the thread holds on itself.
    pub task_refs: AtomicUsize,
}

#[derive(Default)]
struct KState {
    should_stop: bool,
    should_park: bool,
    parked: bool,
    exiting: bool,
    exited: bool,
}

impl KThread {
    /// A kthread created (`kthread_create_on_node()`), with `task_refs` references on its task
    /// (a handle's).
    pub fn new(task_refs: usize) -> Self {
        Self {
            st: Mutex::new(KState::default()),
            cv: Condvar::new(),
            stops: AtomicUsize::new(0),
            task_refs: AtomicUsize::new(task_refs),
        }
    }

    /// `kthread_should_stop()`, kernel/kthread.c:148-151.
    pub fn should_stop(&self) -> bool {
        self.st.lock().unwrap().should_stop
    }

    /// The thread sleeps until it is asked to stop or park (a `schedule()` in its wait loop,
    /// ended by `wake_up_process()`): `true` if asked to stop.
    pub fn sleep_until_stop_or_park(&self) -> bool {
        let mut s = self.st.lock().unwrap();
        while !s.should_stop && !s.should_park {
            s = self.cv.wait(s).unwrap();
        }
        s.should_stop
    }

    /// `kthread_parkme()` / `__kthread_parkme()`, kernel/kthread.c:259-292: while asked to
    /// park, complete `parked` and sleep.
    pub fn parkme(&self, who: &str) {
        let mut s = self.st.lock().unwrap();
        while s.should_park {
            if !s.parked {
                step(who, "parked");
            }
            s.parked = true;
            self.cv.notify_all();
            s = self.cv.wait(s).unwrap();
        }
        s.parked = false;
    }

    /// `kthread_exit()` = `do_exit()`, kernel/exit.c:907-975 with `mm_release()`,
    /// kernel/fork.c:1477-1508: `PF_EXITING` (`exit_signals()`), then the `vfork_done`
    /// completion that `kthread_stop()` waits for. The thread runs nothing after this.
    pub fn exit(&self, who: &str) {
        let mut s = self.st.lock().unwrap();
        step(who, "kthread_exit: PF_EXITING, completes `exited`");
        s.exiting = true;
        s.exited = true;
        self.cv.notify_all();
    }

    /// `kthread_stop()`, kernel/kthread.c:747-770 (with `kthread_unpark()`, 670-688): set the
    /// stop bit, unpark, wake, and wait for the thread's exit.
    pub fn kthread_stop(&self, who: &str) {
        let n = self.stops.fetch_add(1, SeqCst) + 1;
        step(
            who,
            "kthread_stop: sets KTHREAD_SHOULD_STOP, wakes, waits for `exited`",
        );
        assert_eq!(n, 1, "a second kthread_stop() of one thread");
        let mut s = self.st.lock().unwrap();
        s.should_stop = true;
        s.should_park = false;
        self.cv.notify_all();
        while !s.exited {
            s = self.cv.wait(s).unwrap();
        }
        drop(s);
        step(who, "kthread_stop: returned (the thread exited)");
    }

    /// `kthread_stop_put()`, kernel/kthread.c:777-784: `kthread_stop()`, then give up the
    /// caller's task reference.
    pub fn kthread_stop_put(&self, who: &str) {
        self.kthread_stop(who);
        self.put_task_struct(who);
    }

    /// `kthread_park()`, kernel/kthread.c:703-733: `WARN_ON(k->flags & PF_EXITING)`; the
    /// model also fails on a thread whose stop has begun (it is about to exit); then set the
    /// park bit, wake, and wait for `parked`.
    pub fn kthread_park(&self, who: &str) {
        let mut s = self.st.lock().unwrap();
        step(who, "kthread_park");
        assert!(
            !s.exiting,
            "kthread_park(): WARN_ON(PF_EXITING), the thread exited"
        );
        assert!(
            !s.should_stop,
            "kthread_park() on a thread that is being stopped"
        );
        assert!(
            !s.should_park,
            "kthread_park(): WARN_ON_ONCE(KTHREAD_SHOULD_PARK)"
        );
        s.should_park = true;
        self.cv.notify_all();
        while !s.parked {
            s = self.cv.wait(s).unwrap();
        }
        drop(s);
        step(who, "kthread_park: returned (parked)");
    }

    /// `get_task_struct()`.
    pub fn get_task_struct(&self) {
        self.task_refs.fetch_add(1, SeqCst);
    }

    /// `put_task_struct()`: the count must not go below the thread's own reference.
    pub fn put_task_struct(&self, who: &str) {
        step(who, "put_task_struct");
        let old = self.task_refs.fetch_sub(1, SeqCst);
        assert!(old > 0, "put_task_struct(): a reference given back twice");
    }

    /// Has the thread exited?
    pub fn exited(&self) -> bool {
        self.st.lock().unwrap().exited
    }
}

/// A thread's registry entry (`registry.rs`: `linked` and `claimed`, under the registry's
/// spinlock, a loom `Mutex` here).
pub struct Entry {
    st: Mutex<(bool, bool)>,
}

impl Default for Entry {
    fn default() -> Self {
        Self::new()
    }
}

impl Entry {
    /// Linked (`Header::register`), unclaimed.
    pub fn new() -> Self {
        Self {
            st: Mutex::new((true, false)),
        }
    }

    /// `registry::claim()`: claim if linked and unclaimed.
    pub fn claim(&self, who: &str) -> bool {
        let mut e = self.st.lock().unwrap();
        let ok = e.0 && !e.1;
        if ok {
            e.1 = true;
        }
        step(
            who,
            format!("claim: {}", if ok { "claimed" } else { "already claimed" }),
        );
        ok
    }

    /// `Registry::is_unclaimed()`, under the lock.
    pub fn is_unclaimed(&self, who: &str) -> bool {
        let e = self.st.lock().unwrap();
        let ok = e.0 && !e.1;
        step(who, format!("is_unclaimed: {ok}"));
        ok
    }

    /// `registry::unlink()`.
    pub fn unlink(&self, who: &str) {
        step(who, "unlink");
        self.st.lock().unwrap().0 = false;
    }

    /// `registry::claim_and_unlink()`.
    pub fn claim_and_unlink(&self, who: &str) -> bool {
        let mut e = self.st.lock().unwrap();
        let ok = e.0 && !e.1;
        if ok {
            *e = (false, true);
        }
        step(
            who,
            format!(
                "claim_and_unlink: {}",
                if ok { "claimed" } else { "already claimed" }
            ),
        );
        ok
    }

    /// Is the entry linked?
    pub fn linked(&self) -> bool {
        self.st.lock().unwrap().0
    }
}
