// expect: E0599
// H4: only step-loop threads honour parking; a plain thread has no `park`, which in C would
// wait forever for a body that never calls kthread_parkme().
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let mut t = thread::spawn(module, fmt!("cf"), |_ctx| 1u32)?;
    t.park()?;
    Ok(())
}
