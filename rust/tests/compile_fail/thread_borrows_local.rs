// expect: E0597
// H8: an owned thread may outlive the stack frame (its handle can be forgotten), so its body
// must not borrow locals; that is what `thread::scope` is for.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let x = 5u32;
    let r = &x;
    let t = thread::spawn(module, fmt!("cf"), move |_ctx| *r + 1)?;
    let _ = t.stop();
    Ok(())
}
