// expect: E0373
// H7/H8: a detached thread has no handle and no scope that could outlive a borrow: its body
// must own everything ('static), so it cannot borrow a local.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let counter = 0u32;
    thread::spawn_detached(module, fmt!("cf"), |_ctx| {
        let _ = &counter;
    })?;
    Ok(())
}
