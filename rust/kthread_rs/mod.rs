// SPDX-License-Identifier: GPL-2.0

//! kthread-rs: safe Rust APIs over the kernel's kthread, kthread_worker and task_work C code.
//!
//! This is not a crate of its own: an out-of-tree module includes it with
//!
//! ```text
//! #[path = "../../rust/kthread_rs/mod.rs"]
//! pub mod kthread_rs;
//! ```
//!
//! Every function that starts code of the calling module (a thread, a worker, a task work
//! callback) takes that module first, `module: &'static ThisModule` (`THIS_MODULE`), as the
//! kernel crate's registrations do: in a driver, the `module` that `Module::init` was given.
//!
//! - [`thread`]: owned and scoped kernel threads (`include/linux/kthread.h`).
//! - [`worker`]: kthread_worker, its work and delayed work (`include/linux/kthread.h`).
//! - [`task_work`]: callbacks run by a user task in its own context (`include/linux/task_work.h`).
//! - [`service`]: a start that reports the body's initialisation, and wake-driven service threads.
//! - [`compat`]: what differs between the kernel versions it builds on (7.2, 7.3), and
//!   [`compat::this_module`] where no `module` is at hand.
//! - [`sys`]: the few C macros and static inlines that have no generated binding.
//! - `registry`: every live thread, worker and per-CPU set, with its module, ended by that
//!   module's unload if their handles were leaked (H21).

#[cfg(MODULE)]
pub mod compat;
pub(crate) mod registry;
pub mod service;
pub mod sys;
pub mod task_work;
pub mod thread;
pub mod worker;

#[cfg(not(MODULE))]
mod tests;
