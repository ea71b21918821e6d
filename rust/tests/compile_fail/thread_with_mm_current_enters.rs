// expect: E0277
// H23: a `CurrentTask` made before `with_mm()` cannot be used inside it (the kernel crate's
// contract for a `kthread_use_mm()` scope: the closure is `Send`, `CurrentTask` is not `Sync`),
// where its `mm()` would not be the mm in use.
use crate::kthread_rs::thread;
use kernel::{mm::MmWithUser, sync::aref::ARef};

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, mm: ARef<MmWithUser>) -> Result {
    let t = thread::spawn(module, fmt!("cf"), move |ctx| {
        let before = kernel::current!();
        let _ = ctx.with_mm(&mm, |_ctx| before.mm().is_some());
    })?;
    drop(t);
    Ok(())
}
