// expect: E0277
// kthread_associate_blkcg() acts on the current kthread: its guard cannot be moved to another
// thread, whose drop would end (and put) an association that is not its own.
use crate::kthread_rs::thread::{self, CgroupSubsysState};

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, css: &'static CgroupSubsysState) -> Result {
    let t = thread::spawn(module, fmt!("cf"), move |ctx| {
        let guard = ctx.associate_blkcg(css);
        let _ = thread::spawn(module, fmt!("cf2"), move |_ctx| drop(guard));
    })?;
    drop(t);
    Ok(())
}
