// expect: E0277
// H3: the context token is not Sync, so a reference to it cannot be sent to another thread,
// where `kthread_should_stop()` would ask about the wrong task.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let t = thread::spawn(module, fmt!("cf"), move |ctx| {
        thread::scope(module, |s| {
            let _ = s.spawn(fmt!("cf-inner"), |_inner| ctx.should_stop());
        });
    })?;
    let _ = t.stop();
    Ok(())
}
