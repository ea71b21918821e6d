// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel versions that kthread-rs builds on (7.2 and 7.3).
//!
//! The abstractions themselves build unchanged on both: they take the module that owns the
//! code they run as a `module: &'static ThisModule` argument, and only the out-of-tree reaper
//! names this module itself, through [`super::sys`] naming `__this_module` (the symbol behind
//! both the crate-root `THIS_MODULE` of 7.2 and the `ModuleMetadata::THIS_MODULE` of 7.3).
//! What remains here is for the modules that use them (the samples and tests), so that one
//! source builds on every supported kernel. Each item names the kernel change it covers.

use core::borrow::Borrow;
#[cfg(MODULE)]
use kernel::{bindings, ThisModule};

/// This module's [`ThisModule`], for the `module` argument of kthread-rs where no `module` is
/// at hand (tests, helpers far from `Module::init`), on 7.2 and 7.3 alike.
///
/// A driver passes the `module` that its `Module::init` was given. Up to 7.2, `module!` also
/// defined a crate-root `static THIS_MODULE`; 7.3 replaced it with
/// `<LocalModule as ModuleMetadata>::THIS_MODULE` (rust/kernel/module.rs,
/// rust/macros/module.rs). Both stand for `__this_module`, which this names directly.
///
/// # Context
///
/// Any context.
#[cfg(MODULE)]
#[inline]
pub fn this_module() -> &'static ThisModule {
    // SAFETY: `__this_module` is this module's `struct module`, defined by modpost in the
    // module's `.mod.c` (only its address is taken); this file is included into each module
    // crate, so it is the right `THIS_MODULE` for the code that calls this.
    static THIS_MODULE: ThisModule =
        unsafe { ThisModule::from_ptr(&raw mut bindings::__this_module) };
    &THIS_MODULE
}

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
