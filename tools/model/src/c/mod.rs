// SPDX-License-Identifier: GPL-2.0

//! The C side of the hand-offs, after the Linux 7.2 sources: small loom-aware functions, one
//! file per protocol.

pub mod thread;
