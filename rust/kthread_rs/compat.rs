// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel versions that kthread-rs builds on (7.2 and 7.3).
//!
//! The abstractions themselves build unchanged on both: the one kernel crate change that
//! touched them, the crate-root `THIS_MODULE` that `module!` no longer defines in 7.3, is met
//! by [`super::sys`] naming `__this_module`, the symbol behind both forms. What remains here
//! is for the modules that use them (the samples and tests), so that one source builds on
//! every supported kernel. Each item names the kernel change it covers.

use core::borrow::Borrow;

/// The value of a module parameter, on 7.2 and 7.3 alike.
///
/// `ModuleParamAccess::value()` returned `&T` up to 7.2; 7.3 returns `T` for `T: Copy` and
/// moved the reference form to `value_ref()` (rust/kernel/module_param.rs). Both results
/// borrow as `T`: `param::<u32>(module_parameters::n.value())` (name `T` where the context does
/// not: on 7.2, `&T` also borrows as `&T`).
///
/// # Context
///
/// Any context.
#[inline]
pub fn param<T: Copy>(value: impl Borrow<T>) -> T {
    *value.borrow()
}
