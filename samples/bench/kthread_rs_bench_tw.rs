// SPDX-License-Identifier: GPL-2.0

//! kthread-rs benchmarks, task work on a real user process, the Rust side: the misc device
//! `/dev/krs-bench-tw-rust`, whose ioctl queues one callback on the calling process through
//! `kthread_rs::task_work::add` (`Notify::Resume`). The callback runs on the way back to user
//! mode, before the ioctl returns. `user/kthread_rs_bench_tw.c` times each one, from just
//! before the add to the callback's start, and prints the line of the report. Unlike the other
//! benchmarks this one cannot run at `init`: task work needs a live module (and a user task).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kernel::{
    fs::File,
    ioctl::_IO,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    time::{ClockSource, Monotonic},
};

#[path = "../../rust/kthread_rs/mod.rs"]
pub mod kthread_rs;

use kthread_rs::task_work::{self, Notify};

module! {
    type: BenchTw,
    name: "kthread_rs_bench_tw",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: task work benchmark of the safe Rust API (see kthread_rs_bench_tw_c)",
    license: "GPL",
}

#[pin_data]
struct BenchTw {
    #[pin]
    _misc: MiscDeviceRegistration<TwFile>,
}

impl kernel::InPlaceModule for BenchTw {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"krs-bench-tw-rust",
            }),
        })
    }
}

/// Queue one callback on the caller; the same number as in the user program.
const TW_ADD: u32 = _IO(b'k' as u32, 0x40);
/// The last callback's latency in ns (from just before the add to its start).
const TW_LAST: u32 = _IO(b'k' as u32, 0x41);

/// When the last add began and when its callback ran (one benchmark process at a time).
static QUEUED: AtomicU64 = AtomicU64::new(0);
static RAN: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> u64 {
    u64::try_from(<Monotonic as ClockSource>::ktime_get()).unwrap_or(0)
}

struct TwFile;

#[vtable]
impl MiscDevice for TwFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        KBox::new(TwFile, GFP_KERNEL).map_err(Into::into)
    }

    fn ioctl(_me: &TwFile, _file: &File, cmd: u32, _arg: usize) -> Result<isize> {
        match cmd {
            TW_ADD => {
                QUEUED.store(now_ns(), Relaxed);
                // No `module` argument at hand in an ioctl: this module's own.
                let module = kthread_rs::compat::this_module();
                task_work::add(module, kernel::current!(), Notify::Resume, || {
                    RAN.store(now_ns(), Relaxed)
                })
                .map_err(|(e, _)| e)?;
                Ok(0)
            }
            TW_LAST => {
                let ns = RAN.load(Relaxed).wrapping_sub(QUEUED.load(Relaxed));
                Ok(isize::try_from(ns).unwrap_or(-1))
            }
            _ => Err(ENOTTY),
        }
    }
}
