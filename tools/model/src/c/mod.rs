// SPDX-License-Identifier: GPL-2.0

//! The C side of the hand-offs, modelled after the 7.2 sources: small loom-aware functions,
//! each naming the C function and lines it follows.

pub mod delayed;
