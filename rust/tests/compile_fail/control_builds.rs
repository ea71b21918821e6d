// expect: builds
// The control: correct use of the thread API builds in this harness, so the other cases fail
// because of their misuse, not because of the harness.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn control(module: &'static ThisModule) -> Result<u32> {
    let mut t = thread::create(module, fmt!("cf"), |_ctx| 1u32)?;
    t.set_nice(5)?;
    let t = t.start();
    t.wake_up();
    let mut p = thread::spawn_parkable(module, fmt!("cf-p"), 0u32, |_n, _ctx| {
        core::ops::ControlFlow::Break(())
    })?;
    p.park()?;
    p.unpark();
    let v = 0u32;
    thread::scope(module, |s| -> Result {
        let _ = s.spawn(fmt!("cf-s"), |_ctx| v + 1)?.join();
        Ok(())
    })?;
    Ok(t.stop()?.returned().unwrap_or(0))
}
