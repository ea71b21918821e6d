// SPDX-License-Identifier: GPL-2.0

//! Tests of `kthread_rs::task_work`, driven by real user processes.
//!
//! Task work runs in user tasks, at their return to user mode or their exit, and KUnit test
//! bodies run in kthreads, which task work refuses. So this module offers a misc device,
//! `/dev/kthread-rs-task-work`, whose ioctls queue probe callbacks through the safe API on the
//! caller, on another process, or on a task held from earlier, and report what each probe saw.
//! The user program `kthread_rs_task_work_test.user.c` (built by `make check`, run in the guest
//! after this module is loaded) drives them and prints KTAP. The KUnit suite below covers the
//! targets that are refused: kernel threads (H16), and any task while the module's `init` runs.
//!
//! What a probe records, per slot: how many ran, how many were dropped (run, taken back or never
//! queued), the pid and tgid it ran in, how many ran at exit and how many had an `mm`. A probe
//! that runs in a task with an `mm` also writes its magic value to a user address of that task,
//! so that the program can see, without another system call, that the callback ran before the
//! system call returned to user mode.
//!
//! The kernel crate's `MiscDeviceRegistration` (7.2) sets no `owner` in its file operations, so
//! an open file of this device does not pin the module: the module reference count that the
//! program reads counts exactly the pending callbacks, and the program closes the device before
//! it checks that `rmmod` waits for them.

use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use kernel::{
    bindings,
    fs::File,
    ioctl::{_IO, _IOWR},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    new_condvar, new_mutex,
    prelude::*,
    sync::{aref::ARef, CondVar, Mutex},
    task::Task,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;
use kthread_rs::compat::this_module;

use kthread_rs::{
    sys,
    task_work::{self, Callback, Notify, Pending},
};

module! {
    type: TaskWorkTest,
    name: "kthread_rs_task_work_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: tests of the safe task_work API, with a misc device for user programs",
    license: "GPL",
}

#[pin_data]
struct TaskWorkTest {
    #[pin]
    _misc: MiscDeviceRegistration<TwFile>,
}

/// What `task_work::add` answered when `init` tried it on `insmod` (a user task): the errno, and
/// 1 if the probe came back intact. Checked by the KUnit case `add_during_init_refused`.
static INIT_ADD: [AtomicI32; 2] = [AtomicI32::new(0), AtomicI32::new(0)];

impl kernel::InPlaceModule for TaskWorkTest {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        // A module whose init fails is freed whatever its reference count: no task work yet.
        let probe = Probe {
            slot: SLOTS - 2,
            uaddr: 0,
            magic: 0x1a17,
        };
        let (errno, back) = match task_work::add(module, kernel::current!(), Notify::Resume, probe)
        {
            Ok(()) => (0, 0),
            Err((e, probe)) => (e.to_errno(), i32::from(probe.magic == 0x1a17)),
        };
        INIT_ADD[0].store(errno, Ordering::SeqCst);
        INIT_ADD[1].store(back, Ordering::SeqCst);
        try_pin_init!(Self {
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"kthread-rs-task-work",
            }),
        })
    }
}

/// The ioctl request to queue probes (`struct krs_tw_req` of the user program).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Req {
    /// Target: 0 the caller, -1 the task held by `HOLD`, else a pid.
    pid: i32,
    /// 1 `Resume`, 2 `Signal`, 3 `SignalNoIpi`.
    mode: u32,
    slot: u32,
    count: u32,
    /// User address the probe writes `magic` to (0: none).
    uaddr: u64,
    magic: u64,
    /// Fail the `fail_nth`-th allocation of the call (0: none).
    fail_nth: u32,
    /// Out: 0, or the error of the first failed add (a negative errno).
    err: i32,
    /// Out: how many probes a failed add gave back intact.
    returned: u32,
    pad: u32,
}

/// A slot's record, as the user program reads it (`struct krs_tw_rec`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Rec {
    slot: u32,
    runs: u32,
    drops: u32,
    pid: i32,
    tgid: i32,
    at_exit: u32,
    had_mm: u32,
    pad: u32,
}

// SAFETY: `Req` and `Rec` are `repr(C)` structs of integers with no padding: every bit pattern
// is valid and every byte is initialised.
unsafe impl FromBytes for Req {}
// SAFETY: As above.
unsafe impl AsBytes for Req {}
// SAFETY: As above.
unsafe impl FromBytes for Rec {}
// SAFETY: As above.
unsafe impl AsBytes for Rec {}

const TW_ADD: u32 = _IOWR::<Req>(b'k' as u32, 1);
const TW_ADD_CANCELABLE: u32 = _IOWR::<Req>(b'k' as u32, 2);
const TW_CANCEL: u32 = _IO(b'k' as u32, 3);
const TW_QUERY: u32 = _IOWR::<Rec>(b'k' as u32, 4);
const TW_RESET: u32 = _IO(b'k' as u32, 5);
const TW_HOLD: u32 = _IO(b'k' as u32, 6);
const TW_SLEEP: u32 = _IO(b'k' as u32, 7);
const TW_RELEASE: u32 = _IO(b'k' as u32, 8);
const TW_SLEEPERS: u32 = _IO(b'k' as u32, 9);
const TW_REFCOUNT: u32 = _IO(b'k' as u32, 10);
const TW_ARM_ON_CLOSE: u32 = _IOWR::<Req>(b'k' as u32, 11);

const SLOTS: usize = 32;

/// What the probes of one slot saw.
struct Record {
    runs: AtomicU32,
    drops: AtomicU32,
    pid: AtomicI32,
    tgid: AtomicI32,
    at_exit: AtomicU32,
    had_mm: AtomicU32,
}

impl Record {
    const fn new() -> Self {
        Self {
            runs: AtomicU32::new(0),
            drops: AtomicU32::new(0),
            pid: AtomicI32::new(0),
            tgid: AtomicI32::new(0),
            at_exit: AtomicU32::new(0),
            had_mm: AtomicU32::new(0),
        }
    }

    fn reset(&self) {
        for a in [&self.runs, &self.drops, &self.at_exit, &self.had_mm] {
            a.store(0, Ordering::SeqCst);
        }
        self.pid.store(0, Ordering::SeqCst);
        self.tgid.store(0, Ordering::SeqCst);
    }
}

static RECORDS: [Record; SLOTS] = [const { Record::new() }; SLOTS];

/// The callback that the tests queue.
struct Probe {
    slot: usize,
    uaddr: usize,
    magic: u64,
}

impl Callback for Probe {
    fn run(self) {
        let rec = &RECORDS[self.slot];
        let me = kernel::current!();
        rec.pid.store(me.pid(), Ordering::SeqCst);
        rec.tgid.store(me.group_leader().pid(), Ordering::SeqCst);
        if task_work::current_is_exiting() {
            rec.at_exit.fetch_add(1, Ordering::SeqCst);
        }
        if me.mm().is_some() {
            rec.had_mm.fetch_add(1, Ordering::SeqCst);
            if self.uaddr != 0 {
                let mut w = UserSlice::new(UserPtr::from_addr(self.uaddr), 8).writer();
                // A fault is seen by the program as a missing magic value.
                let _ = w.write(&self.magic);
            }
        }
        rec.runs.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        RECORDS[self.slot].drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The state of one open file (shared with the children that inherit it).
struct State {
    /// Bumped by `RELEASE`: every `SLEEP` that saw an older value returns.
    generation: u64,
    sleepers: u32,
    held: Option<ARef<Task>>,
    pending: Option<Pending<Probe>>,
    /// Probes to queue on the closing task when the file is released: (slot, count).
    on_close: Option<(usize, u32)>,
}

#[pin_data]
struct TwFile {
    #[pin]
    state: Mutex<State>,
    #[pin]
    wake: CondVar,
}

fn notify_of(mode: u32) -> Result<Notify> {
    match mode {
        1 => Ok(Notify::Resume),
        2 => Ok(Notify::Signal),
        3 => Ok(Notify::SignalNoIpi),
        _ => Err(EINVAL),
    }
}

fn slot_of(slot: u32) -> Result<usize> {
    let slot = usize::try_from(slot)?;
    if slot < SLOTS {
        Ok(slot)
    } else {
        Err(EINVAL)
    }
}

impl TwFile {
    fn target(&self, pid: i32) -> Result<ARef<Task>> {
        match pid {
            0 => Ok(ARef::from(&**kernel::current!())),
            -1 => self.state.lock().held.clone().ok_or(ENOENT),
            // kthreadd, for the guest's H16 case: `task_of_pid()` refuses kernel threads.
            // SAFETY: kthreadd runs since boot; it is only passed to `task_work::add`, which
            // refuses it without waking it.
            2 => unsafe { sys::any_task_of_pid(2) }.ok_or(ESRCH),
            p => sys::task_of_pid(p).ok_or(ESRCH),
        }
    }

    fn add(&self, req: &mut Req, cancelable: bool) -> Result {
        let notify = notify_of(req.mode)?;
        let slot = slot_of(req.slot)?;
        let task = self.target(req.pid)?;
        let uaddr = usize::try_from(req.uaddr)?;
        for _ in 0..req.count.max(1) {
            let probe = Probe {
                slot,
                uaddr,
                magic: req.magic,
            };
            // SAFETY: `fail_nth` of `current` is only used by fault injection, in this task.
            unsafe { (*Task::current_raw()).fail_nth = req.fail_nth };
            let r = if cancelable {
                task_work::add_cancelable(this_module(), &task, notify, probe)
                    .map(|p| self.state.lock().pending = Some(p))
            } else {
                task_work::add(this_module(), &task, notify, probe)
            };
            // SAFETY: As above.
            unsafe { (*Task::current_raw()).fail_nth = 0 };
            if let Err((e, probe)) = r {
                req.err = e.to_errno();
                // Handed back intact: the same slot, address and magic value.
                if probe.slot == slot && probe.uaddr == uaddr && probe.magic == req.magic {
                    req.returned += 1;
                }
                break;
            }
        }
        Ok(())
    }

    fn sleep(&self) -> Result<isize> {
        let mut s = self.state.lock();
        let generation = s.generation;
        s.sleepers += 1;
        let r = loop {
            if s.generation != generation {
                break Ok(0);
            }
            if self.wake.wait_interruptible(&mut s) && s.generation == generation {
                break Err(EINTR);
            }
        };
        s.sleepers -= 1;
        r
    }
}

fn read_req(arg: usize) -> Result<Req> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<Req>())
        .reader()
        .read::<Req>()
}

fn write_back<T: AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .writer()
        .write(v)
}

#[vtable]
impl MiscDevice for TwFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(TwFile {
                state <- new_mutex!(State {
                    generation: 0,
                    sleepers: 0,
                    held: None,
                    pending: None,
                    on_close: None,
                }),
                wake <- new_condvar!(),
            }),
            GFP_KERNEL,
        )
    }

    fn release(me: Self::Ptr, _file: &File) {
        // Runs in the closing task, from its task work: at its return to user mode after
        // close(), or in its exit. Probes queued here run in the same task-work pass.
        let on_close = me.state.lock().on_close.take();
        if let Some((slot, count)) = on_close {
            let current = kernel::current!();
            for _ in 0..count {
                let probe = Probe {
                    slot,
                    uaddr: 0,
                    magic: 0,
                };
                if task_work::add(this_module(), current, Notify::Resume, probe).is_err() {
                    break;
                }
            }
        }
    }

    fn ioctl(me: Pin<&TwFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            TW_ADD | TW_ADD_CANCELABLE => {
                let mut req = read_req(arg)?;
                me.add(&mut req, cmd == TW_ADD_CANCELABLE)?;
                write_back(arg, &req)?;
                Ok(0)
            }
            TW_CANCEL => {
                let pending = me.state.lock().pending.take().ok_or(ENOENT)?;
                // The probe, if taken back, is dropped here (it counts as a drop, not a run).
                Ok(isize::from(pending.cancel().is_some()))
            }
            TW_QUERY => {
                let mut rec = UserSlice::new(UserPtr::from_addr(arg), size_of::<Rec>())
                    .reader()
                    .read::<Rec>()?;
                let r = &RECORDS[slot_of(rec.slot)?];
                rec.runs = r.runs.load(Ordering::SeqCst);
                rec.drops = r.drops.load(Ordering::SeqCst);
                rec.pid = r.pid.load(Ordering::SeqCst);
                rec.tgid = r.tgid.load(Ordering::SeqCst);
                rec.at_exit = r.at_exit.load(Ordering::SeqCst);
                rec.had_mm = r.had_mm.load(Ordering::SeqCst);
                write_back(arg, &rec)?;
                Ok(0)
            }
            TW_RESET => {
                RECORDS.iter().for_each(Record::reset);
                Ok(0)
            }
            TW_HOLD => {
                let task = sys::task_of_pid(i32::try_from(arg)?).ok_or(ESRCH)?;
                me.state.lock().held = Some(task);
                Ok(0)
            }
            TW_SLEEP => me.sleep(),
            TW_RELEASE => {
                me.state.lock().generation += 1;
                me.wake.notify_all();
                Ok(0)
            }
            TW_SLEEPERS => Ok(isize::try_from(me.state.lock().sleepers)?),
            TW_REFCOUNT => {
                // SAFETY: This module is live: this code runs in it.
                let n = unsafe { bindings::module_refcount(this_module().as_ptr()) };
                Ok(isize::try_from(n)?)
            }
            TW_ARM_ON_CLOSE => {
                let req = read_req(arg)?;
                me.state.lock().on_close = Some((slot_of(req.slot)?, req.count));
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

/// H16: kernel threads never return to user mode, so they are refused, and the callback comes
/// back untouched. (KUnit bodies run in kthreads: these are the targets they can test.)
#[kunit_tests(kthread_rs_task_work)]
mod tests {
    use super::{kthread_rs::thread, Probe, INIT_ADD, RECORDS};
    use crate::kthread_rs::compat::this_module;
    use crate::kthread_rs::task_work::{self, Notify};
    use core::sync::atomic::Ordering::SeqCst;
    use kernel::prelude::*;

    const SLOT: usize = super::SLOTS - 1;

    fn probe() -> Probe {
        Probe {
            slot: SLOT,
            uaddr: 0,
            magic: 0x6b74,
        }
    }

    /// The module's `init` ran in `insmod`, a user task, before the module was live.
    #[test]
    fn add_during_init_refused() -> Result {
        assert_eq!(INIT_ADD[0].load(SeqCst), EBUSY.to_errno());
        assert_eq!(INIT_ADD[1].load(SeqCst), 1);
        assert_eq!(RECORDS[super::SLOTS - 2].runs.load(SeqCst), 0);
        Ok(())
    }

    #[test]
    fn current_kthread_is_refused() -> Result {
        RECORDS[SLOT].reset();
        for notify in [Notify::Resume, Notify::Signal, Notify::SignalNoIpi] {
            let r = task_work::add(this_module(), kernel::current!(), notify, probe());
            let Err((e, back)) = r else {
                return Err(EINVAL);
            };
            assert_eq!(e, EINVAL);
            assert_eq!(back.magic, 0x6b74);
            // Not dropped while it is in our hands, once when we drop it.
            assert_eq!(RECORDS[SLOT].drops.load(SeqCst), 0);
            drop(back);
            assert_eq!(RECORDS[SLOT].drops.load(SeqCst), 1);
            RECORDS[SLOT].reset();
        }
        assert_eq!(RECORDS[SLOT].runs.load(SeqCst), 0);
        Ok(())
    }

    #[test]
    fn other_kthread_is_refused() -> Result {
        RECORDS[SLOT].reset();
        let t = thread::spawn(this_module(), fmt!("krs-tw-target"), |ctx| {
            ctx.wait_until(|| false, None);
        })?;
        let r = task_work::add_cancelable(this_module(), &t, Notify::Signal, probe());
        let refused = matches!(&r, Err((e, back)) if *e == EINVAL && back.magic == 0x6b74);
        drop(r);
        t.stop()?;
        assert!(refused);
        assert_eq!(RECORDS[SLOT].drops.load(SeqCst), 1);
        assert_eq!(RECORDS[SLOT].runs.load(SeqCst), 0);
        Ok(())
    }
}
