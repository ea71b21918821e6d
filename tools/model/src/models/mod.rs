// SPDX-License-Identifier: GPL-2.0

//! The models: one file per protocol.

mod gate;
mod members;
mod task_work;
mod thread;
