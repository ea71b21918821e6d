// expect: E0277
// H3: the context token is not Sync, so a reference to it cannot be sent to another thread,
// where `kthread_should_stop()` would ask about the wrong task.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse() -> Result {
    let t = thread::spawn(fmt!("cf"), |ctx| {
        thread::scope(|s| {
            let _ = s.spawn(fmt!("cf-inner"), |_inner| ctx.should_stop());
        });
    })?;
    let _ = t.stop();
    Ok(())
}
