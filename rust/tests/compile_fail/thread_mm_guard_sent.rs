// expect: E0277
// kthread_use_mm() acts on the current kthread: its guard cannot be moved to another thread,
// whose drop would call kthread_unuse_mm() on an mm that thread never used.
use crate::kthread_rs::thread;
use kernel::{mm::MmWithUser, sync::aref::ARef};

#[allow(dead_code)]
fn misuse(mm: ARef<MmWithUser>) -> Result {
    let t = thread::spawn(fmt!("cf"), move |ctx| {
        let guard = ctx.use_mm(mm);
        let _ = thread::spawn(fmt!("cf2"), move |_ctx| drop(guard));
    })?;
    drop(t);
    Ok(())
}
