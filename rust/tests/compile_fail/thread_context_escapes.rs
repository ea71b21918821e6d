// expect: E0277
// H3: the context token is lent to the body for the call only: it cannot be returned out of
// the body (and so used where `current` is not this kthread). The body's value must be Send,
// and a reference to the (non-Sync) context is not, so rustc rejects it before even reaching
// the lifetime check.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let t = thread::spawn(module, fmt!("cf"), |ctx| ctx)?;
    let _ = t.stop();
    Ok(())
}
