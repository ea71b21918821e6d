// SPDX-License-Identifier: GPL-2.0

//! Tests of `Context::with_mm` (`kthread_use_mm()`), driven by real user processes.
//!
//! The misc device `/dev/kthread-rs-mm` lets a process hand its address space to a kthread,
//! which writes a value into it through `kernel::uaccess` while it holds the guard; the program
//! `rust/tests/user/kthread_rs_mm_test.c` reads the value back and prints KTAP. A process can
//! also leave its mm with the open file and exit; the kthread then writes into the address
//! space that the counted reference keeps (KASAN and kmemleak watch that it is released).

use kernel::{
    fs::File,
    ioctl::_IOW,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::MmWithUser,
    new_mutex,
    prelude::*,
    sync::{aref::ARef, Mutex},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;
use kthread_rs::compat::this_module;

use kthread_rs::thread;

module! {
    type: MmTest,
    name: "kthread_rs_mm_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: tests of kthread_use_mm through the safe API",
    license: "GPL",
}

#[pin_data]
struct MmTest {
    #[pin]
    _misc: MiscDeviceRegistration<MmFile>,
}

impl kernel::InPlaceModule for MmTest {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"kthread-rs-mm",
            }),
        })
    }
}

/// `struct krs_mm_req` of the user program.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Req {
    addr: u64,
    value: u64,
}

// SAFETY: `repr(C)` struct of two `u64`: no padding, every bit pattern valid.
unsafe impl FromBytes for Req {}
// SAFETY: As above.
unsafe impl AsBytes for Req {}

/// Write with the caller's mm lent to a kthread.
const MM_WRITE: u32 = _IOW::<Req>(b'm' as u32, 1);
/// The kthread checks that `current!().mm()` is the lent mm inside `with_mm`, and none after.
const MM_WRITE_AFTER_DROP: u32 = _IOW::<Req>(b'm' as u32, 2);
/// The same, but the kthread first asks for a second, nested use (must be `EBUSY`).
const MM_NESTED: u32 = _IOW::<Req>(b'm' as u32, 3);
/// Keep the caller's mm with the open file.
const MM_HOLD: u32 = _IOW::<Req>(b'm' as u32, 4);
/// Write with the held mm (its process may have exited), then release it.
const MM_WRITE_HELD: u32 = _IOW::<Req>(b'm' as u32, 5);

#[derive(Clone, Copy, PartialEq)]
enum How {
    Write,
    WriteAfterDrop,
    Nested,
}

fn write_user(addr: usize, value: u64) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), 8)
        .writer()
        .write(&value)
}

/// In a new kthread: use `mm`, write `value` at `addr`, and say how it went.
fn lend(mm: ARef<MmWithUser>, req: Req, how: How) -> Result {
    let addr = usize::try_from(req.addr)?;
    let t = thread::spawn(this_module(), fmt!("krs-mm"), move |ctx| -> Result {
        match how {
            How::Write => ctx.with_mm(&mm, |_| write_user(addr, req.value))?,
            How::WriteAfterDrop => {
                // Inside, `current->mm` is the lent mm; after, there is none. (The CPU may
                // still hold the page tables lazily, so a user copy after could still land:
                // the closure's scope is the rule, see `with_mm`.)
                let lent = mm.as_raw() as usize;
                let inside = ctx.with_mm(&mm, |_| {
                    kernel::current!().mm().map(|m| m.as_raw() as usize) == Some(lent)
                })?;
                if inside && kernel::current!().mm().is_none() {
                    Ok(())
                } else {
                    Err(EINVAL)
                }
            }
            How::Nested => ctx.with_mm(&mm, |ctx| match ctx.with_mm(&mm, |_| ()) {
                Err(e) if e == EBUSY => write_user(addr, req.value),
                Err(e) => Err(e),
                Ok(()) => Err(EINVAL),
            })?,
        }
    })?;
    t.join()?.returned().unwrap_or(Err(ESRCH))
}

#[pin_data]
struct MmFile {
    #[pin]
    held: Mutex<Option<ARef<MmWithUser>>>,
}

#[vtable]
impl MiscDevice for MmFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(MmFile { held <- new_mutex!(None) }),
            GFP_KERNEL,
        )
    }

    fn ioctl(me: Pin<&MmFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let req = UserSlice::new(UserPtr::from_addr(arg), size_of::<Req>())
            .reader()
            .read::<Req>()?;
        let mine = || -> Result<ARef<MmWithUser>> {
            Ok(ARef::from(kernel::current!().mm().ok_or(EINVAL)?))
        };
        match cmd {
            MM_WRITE => lend(mine()?, req, How::Write)?,
            MM_WRITE_AFTER_DROP => lend(mine()?, req, How::WriteAfterDrop)?,
            MM_NESTED => lend(mine()?, req, How::Nested)?,
            MM_HOLD => *me.held.lock() = Some(mine()?),
            MM_WRITE_HELD => {
                let held = me.held.lock().take().ok_or(ENOENT)?;
                lend(held, req, How::Write)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
