// expect: E0616
// kthread_data() is not offered: a thread's data pointer is its control block, freed once its
// handle is dropped while the task can live on. `origin()` gives only an opaque `BodyId`,
// whose address cannot be read (let alone dereferenced).
use crate::kthread_rs::thread::{self, Origin};
use kernel::task::Task;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule, task: &Task) -> usize {
    match thread::origin(module, task) {
        Origin::Ours(id) => id.0,
        _ => 0,
    }
}
