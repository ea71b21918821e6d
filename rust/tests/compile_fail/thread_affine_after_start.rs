// expect: E0599
// kthread_affine_preferred() is valid only before the first wake-up (C WARNs and fails
// after): a started Thread has no `affine_preferred`.
use crate::kthread_rs::thread;
use kernel::cpumask::Cpumask;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, mask: &Cpumask) -> Result {
    let t = thread::create(module, fmt!("cf"), |_ctx| ())?.start();
    t.affine_preferred(mask)?;
    Ok(())
}
