// SPDX-License-Identifier: GPL-2.0

//! The models: one file per protocol.

mod delayed;
mod gate;
mod members;
mod task_work;
mod thread;
