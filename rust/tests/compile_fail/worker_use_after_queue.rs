// expect: E0382
// H12: queueing moves the item's reference into the worker; the moved `Arc` cannot be used
// afterwards (a clone must be kept for that, which keeps the item alive).
use crate::kthread_rs::worker::{Work, WorkItem, Worker, WorkerRef};
use kernel::sync::Arc;

struct Item(u32);

impl WorkItem for Item {
    fn run(_work: Arc<Work<Self>>, _worker: &WorkerRef<'_>) {}
}

#[allow(dead_code)]
fn misuse(w: &Worker) -> Result<u32> {
    let work = Work::new(Item(1))?;
    w.queue(work).map_err(|(e, _)| e)?;
    Ok(work.0)
}
