// expect: E0599
// H5: binding (and nice, FIFO, freezable) exist only before the first wake-up: a started
// Thread has no `bind`.
use crate::kthread_rs::thread;
use kernel::cpu::CpuId;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, cpu: CpuId) -> Result {
    let t = thread::create(module, fmt!("cf"), |_ctx| ())?.start();
    t.bind(cpu)?;
    Ok(())
}
