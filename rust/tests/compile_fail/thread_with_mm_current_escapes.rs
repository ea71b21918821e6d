// expect: E0521
// H23 (issue 15, item 1): the `&MmWithUser` that `current!().mm()` lends inside `with_mm()`
// cannot leave the closure: after `kthread_unuse_mm()` it would point to an mm that nothing
// keeps (with the old `MmGuard`, an `ARef::from` of it after the guard's drop did `mmget()` on a
// freed mm).
use crate::kthread_rs::thread;
use kernel::{mm::MmWithUser, sync::aref::ARef};

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, mm: ARef<MmWithUser>) -> Result {
    let t = thread::spawn(module, fmt!("cf"), move |ctx| {
        let mut kept: Option<&MmWithUser> = None;
        let _ = ctx.with_mm(&mm, |_ctx| kept = kernel::current!().mm());
        kept.map(|m| ARef::from(m))
    })?;
    drop(t);
    Ok(())
}
