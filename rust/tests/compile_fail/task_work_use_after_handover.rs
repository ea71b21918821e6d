// expect: E0382
// H14/H17: once queued, the callback belongs to the target task. The only ways to get it back
// are the error of a failed add and Pending::cancel; the moved value cannot be used.
use crate::kthread_rs::task_work::{self, Notify};
use kernel::{prelude::*, task::Task};

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, task: &Task) -> Result {
    let buf = KVec::<u8>::with_capacity(16, GFP_KERNEL)?;
    let cb = move || drop(buf);
    task_work::add(module, task, Notify::Signal, cb).map_err(|(e, _cb)| e)?;
    cb();
    Ok(())
}
