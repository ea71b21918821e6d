// expect: E0277
// H15: a callback runs in another task, so it must own only Send data. A closure that
// captures a raw pointer (say, to a C object that the caller's task owns) must not be queued.
use crate::kthread_rs::task_work::{self, Notify};
use kernel::task::Task;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, task: &Task, p: *mut u32) {
    let _ = task_work::add(module, task, Notify::Resume, move || {
        let q = p;
        let _ = q.is_null();
    });
}
