// expect: E0277
// The closure of queue_fn runs on the worker thread: it must own only Send data.
use crate::kthread_rs::worker::Worker;

#[allow(dead_code)]
fn misuse(w: &Worker, p: *mut u32) -> Result {
    w.queue_fn(move || {
        let q = p;
        let _ = q.is_null();
    })
}
