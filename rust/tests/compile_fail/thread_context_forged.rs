// expect: cannot construct `thread::Context
// H3: a context token cannot be made outside the thread trampoline: there is no constructor
// and its fields are private.
use crate::kthread_rs::thread;

#[allow(dead_code)]
fn misuse() -> bool {
    let ctx = thread::Context {
        control: todo!(),
        _not_send: core::marker::PhantomData,
    };
    ctx.should_stop()
}
