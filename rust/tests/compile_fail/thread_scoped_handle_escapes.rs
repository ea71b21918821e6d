// expect: lifetime may not live long enough
// H8: a scoped thread's handle cannot leave its scope.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let x = 1u32;
    let h = thread::scope(module, |s| s.spawn(fmt!("cf"), |_ctx| x + 1));
    drop(h);
    Ok(())
}
