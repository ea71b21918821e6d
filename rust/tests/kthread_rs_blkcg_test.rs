// SPDX-License-Identifier: GPL-2.0

//! Tests of `Context::associate_blkcg` (`kthread_associate_blkcg()`), driven by a real user
//! process in a non-root io cgroup.
//!
//! The process (`rust/tests/user/kthread_rs_blkcg_test.c`) moves itself into an io cgroup and
//! calls the ioctl of `/dev/kthread-rs-blkcg`. Here, in the process's context, a bio on the
//! null_blk device `/dev/nullb0` is charged to the process's cgroup: its css is what the
//! kthread then associates with. The kthread allocates bios before, during and after the
//! association; `bio_init()` charges each to `kthread_blkcg()` when set, else to the thread's
//! own (root) cgroup. The results go back to the program, which prints KTAP. A second thread
//! leaks its guard: its exit would WARN (`free_kthread_struct()`) unless the trampoline ends
//! the association, and the run fails on any WARN.

use core::ptr;
use kernel::{
    bindings,
    fs::File,
    ioctl::_IOR,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;
use kthread_rs::compat::this_module;

use kthread_rs::thread::{self, CgroupSubsysState};

module! {
    type: BlkcgTest,
    name: "kthread_rs_blkcg_test",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: tests of kthread_associate_blkcg through the safe API",
    license: "GPL",
}

// Exported by block/blk-cgroup.c; declared in headers that the kernel crate's bindings do not
// include (include/linux/blk-cgroup.h, block/blk-cgroup.h). The pointers are a `struct bio *`
// and `struct cgroup_subsys_state *`, untyped here: the generated structs are not FFI-safe.
extern "C" {
    fn bio_blkcg_css(bio: *mut c_void) -> *mut c_void;
    static blkcg_root_css: *mut c_void;
}

#[pin_data]
struct BlkcgTest {
    #[pin]
    _misc: MiscDeviceRegistration<BlkcgFile>,
}

impl kernel::InPlaceModule for BlkcgTest {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"kthread-rs-blkcg",
            }),
        })
    }
}

/// `struct krs_blkcg_res` of the user program: 1 for yes, 0 for no, or an errno.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Res {
    user_is_root: i32,
    before_is_root: i32,
    during_is_user: i32,
    after_is_root: i32,
    nested_errno: i32,
    leaked_during_is_user: i32,
}

// SAFETY: `repr(C)` struct of `i32`s: no padding, every bit pattern valid.
unsafe impl FromBytes for Res {}
// SAFETY: As above.
unsafe impl AsBytes for Res {}

const BLKCG_RUN: u32 = _IOR::<Res>(b'b' as u32, 1);

/// An open block device, closed on drop.
struct Bdev {
    file: *mut bindings::file,
    bdev: *mut bindings::block_device,
}

// SAFETY: The open file and its block device may be used from any task.
unsafe impl Send for Bdev {}
// SAFETY: As above: bios are allocated on it concurrently in C too.
unsafe impl Sync for Bdev {}

impl Bdev {
    fn open() -> Result<Self> {
        // SAFETY: A valid path; read-only, no holder, so no exclusive claim.
        let file = unsafe {
            kernel::error::from_err_ptr(bindings::bdev_file_open_by_path(
                c"/dev/nullb0".as_char_ptr(),
                1, // BLK_OPEN_READ
                ptr::null_mut(),
                ptr::null(),
            ))?
        };
        // SAFETY: `file` is an open block device file.
        let bdev = unsafe { bindings::file_bdev(file) };
        Ok(Bdev { file, bdev })
    }

    /// A read bio on the device, with no vectors, charged (by `bio_init()`) to the current
    /// task's io cgroup, or to its kthread's association. The caller puts it.
    fn alloc_bio(&self) -> Result<*mut bindings::bio> {
        // SAFETY: `bdev` is open; no vectors; `fs_bio_set` is the kernel's general bio set.
        let bio = unsafe {
            bindings::bio_alloc_bioset(
                self.bdev,
                0,
                bindings::req_op_REQ_OP_READ,
                bindings::GFP_KERNEL,
                &raw mut bindings::fs_bio_set,
            )
        };
        if bio.is_null() {
            Err(ENOMEM)
        } else {
            Ok(bio)
        }
    }

    /// The css of the io cgroup that a bio allocated now, by the current task, is charged to.
    /// Its address only, to compare.
    fn css_of_new_bio(&self) -> Result<usize> {
        let bio = self.alloc_bio()?;
        // SAFETY: `bio` is ours; the css address is only compared after the put.
        let css = unsafe { bio_blkcg_css(bio.cast()) } as usize;
        // SAFETY: The reference from `bio_alloc_bioset()`.
        unsafe { bindings::bio_put(bio) };
        Ok(css)
    }
}

impl Drop for Bdev {
    fn drop(&mut self) {
        // SAFETY: The file opened in `open`.
        unsafe { bindings::fput(self.file) };
    }
}

fn yes(b: bool) -> i32 {
    i32::from(b)
}

fn run() -> Result<Res> {
    let dev = Bdev::open()?;
    // A bio of the calling process, held until the end: it keeps the process's blkg, and so
    // its css, alive.
    let user_bio = dev.alloc_bio()?;
    // SAFETY: `user_bio` is ours and charged to a css, which it keeps alive until its put.
    let user_css_ptr = unsafe { bio_blkcg_css(user_bio.cast()) }.cast();
    // SAFETY: `user_bio`, held until after the scope, keeps the css alive.
    let css = unsafe { CgroupSubsysState::from_raw(user_css_ptr) };
    // Addresses, to compare.
    let user_css = user_css_ptr as usize;
    // SAFETY: An exported constant pointer.
    let root = unsafe { blkcg_root_css } as usize;
    let (dev, mut res) = (&dev, Res::default());
    res.user_is_root = yes(user_css == root);
    let r = thread::scope(this_module(), |s| -> Result<Res> {
        let t = s.spawn(fmt!("krs-blkcg"), |ctx| -> Result<Res> {
            let mut r = Res {
                before_is_root: yes(dev.css_of_new_bio()? == root),
                ..Res::default()
            };
            let guard = ctx.associate_blkcg(css)?;
            r.during_is_user = yes(dev.css_of_new_bio()? == user_css);
            r.nested_errno = ctx.associate_blkcg(css).err().map_or(0, |e| e.to_errno());
            drop(guard);
            r.after_is_root = yes(dev.css_of_new_bio()? == root);
            Ok(r)
        })?;
        let leaker = s.spawn(fmt!("krs-blkcg-leak"), |ctx| -> Result<i32> {
            core::mem::forget(ctx.associate_blkcg(css)?);
            Ok(yes(dev.css_of_new_bio()? == user_css))
        })?;
        let mut r = t.join().returned().ok_or(ESRCH)??;
        r.leaked_during_is_user = leaker.join().returned().ok_or(ESRCH)??;
        Ok(r)
    });
    // SAFETY: The reference from `bio_alloc_bioset()`; the threads have exited.
    unsafe { bindings::bio_put(user_bio) };
    let r = r?;
    res.before_is_root = r.before_is_root;
    res.during_is_user = r.during_is_user;
    res.nested_errno = r.nested_errno;
    res.after_is_root = r.after_is_root;
    res.leaked_during_is_user = r.leaked_during_is_user;
    Ok(res)
}

struct BlkcgFile;

#[vtable]
impl MiscDevice for BlkcgFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(BlkcgFile, GFP_KERNEL)?)
    }

    fn ioctl(_me: &BlkcgFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd != BLKCG_RUN {
            return Err(ENOTTY);
        }
        let res = run()?;
        UserSlice::new(UserPtr::from_addr(arg), size_of::<Res>())
            .writer()
            .write(&res)?;
        Ok(0)
    }
}
