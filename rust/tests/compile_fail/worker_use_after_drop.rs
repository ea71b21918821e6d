// expect: E0382
// H11: every operation goes through &Worker, so nothing can be queued on (or flushed, or
// cancelled on) a worker that has been dropped and destroyed.
use crate::kthread_rs::worker::Worker;

#[allow(dead_code)]
fn misuse(module: &'static ThisModule) -> Result {
    let w = Worker::create(module, fmt!("cf"))?;
    drop(w);
    w.queue_fn(|| ())
}
