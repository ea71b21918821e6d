// expect: E0382
// A handle is consumed by `stop`: using it afterwards (wake_up, a second stop) does not build.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let t = thread::spawn(module, fmt!("cf"), |_ctx| 1u32)?;
    let _ = t.stop();
    t.wake_up();
    Ok(())
}
