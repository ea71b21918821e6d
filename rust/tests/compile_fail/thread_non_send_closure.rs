// expect: E0277
// The body runs on another task: a closure that owns a non-Send value (here a raw pointer)
// must not be accepted.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, p: *mut u32) -> Result {
    let _t = thread::spawn(module, fmt!("cf"), move |_ctx| {
        let q = p;
        q.is_null()
    })?;
    Ok(())
}
