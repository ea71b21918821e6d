// SPDX-License-Identifier: GPL-2.0

//! The C side of the hand-offs, modelled after the Linux 7.2 sources: small loom-aware
//! functions that follow the C closely (spinlocks as loom mutexes, list heads as loom
//! atomics), one file per C area, each function naming the C function and lines it follows.

pub mod completion;
pub mod delayed;
pub mod task_work;
pub mod thread;
