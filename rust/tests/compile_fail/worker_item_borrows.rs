// expect: E0478
// H11/H12: a queued item may run (or sit pending) after the caller's frame is gone, so a work
// item cannot borrow: WorkItem requires 'static.
use crate::kthread_rs::worker::{Work, WorkItem, WorkerRef};
use kernel::sync::Arc;

struct Borrowing<'a>(&'a u32);

impl<'a> WorkItem for Borrowing<'a> {
    fn run(_work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {}
}
