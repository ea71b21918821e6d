// expect: with struct literal syntax due to private fields
// H3: a context token cannot be made outside the thread trampoline: there is no constructor
// and its fields are private.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse() -> bool {
    let ctx = thread::Context {
        header: todo!(),
        _not_send: core::marker::PhantomData,
    };
    ctx.should_stop()
}
