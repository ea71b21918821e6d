// expect: E0451
// H12: a work item exists only inside an Arc (Work::new), so it cannot be a local that is
// freed while the worker still has it queued: its fields are private.
use crate::kthread_rs::worker::Work;

#[allow(dead_code)]
fn misuse() {
    let _w = Work {
        work: todo!(),
        owner: todo!(),
        data: 1u32,
    };
}
