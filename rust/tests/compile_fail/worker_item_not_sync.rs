// expect: E0277
// A work item is shared between the queueing task and the worker thread (and its run may race
// with other holders of the Arc): its data must be Sync, which a Cell is not.
use crate::kthread_rs::worker::{Work, WorkItem, WorkerRef};
use core::cell::Cell;
use kernel::sync::Arc;

struct Counter(Cell<u32>);

impl WorkItem for Counter {
    fn run(work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {
        work.0.set(work.0.get() + 1);
    }
}
