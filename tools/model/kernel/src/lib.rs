// SPDX-License-Identifier: GPL-2.0

//! The host side of the atomics shim of kthread-rs's protocol files.
//!
//! The protocol files (`rust/kthread_rs/*/protocol*.rs`, listed in `../src/lib.rs`) name no
//! kernel item but `kernel::sync::atomic::{Atomic, ordering}` and
//! `kernel::time::{delay::fsleep, Delta}`. In the kernel build those are the kernel crate's own
//! (LKMM atomics, a real sleep). In the host build they are this crate: the same names over
//! loom's atomics, whose every interleaving and every outcome allowed by C11 loom explores, and
//! a sleep that is a loom yield (a wait loop that sleeps is a spin to loom, which it bounds).

pub mod sync {
    //! `kernel::sync`: the atomics only.

    pub mod atomic {
        //! `kernel::sync::atomic` over loom. The orderings map onto C11 as the kernel crate's
        //! documentation states them: `Relaxed`, `Acquire` and `Release` as named; a failed
        //! `cmpxchg` is a relaxed load whatever its ordering. `Full`, a fully ordered RMW, is
        //! what LKMM says it is, an `smp_mb()` on each side: `fence(SeqCst)`, the RMW with
        //! `AcqRel`, `fence(SeqCst)` (the second only if a `cmpxchg` succeeded). Loom models
        //! `SeqCst` fences exactly, but `SeqCst` accesses only as `AcqRel`, which would be
        //! weaker than the kernel's.

        use loom::sync::atomic as la;
        use std::sync::atomic::Ordering as O;

        pub mod ordering {
            //! The orderings, as the kernel crate spells them.

            /// No ordering.
            #[derive(Clone, Copy)]
            pub struct Relaxed;
            /// Acquire.
            #[derive(Clone, Copy)]
            pub struct Acquire;
            /// Release.
            #[derive(Clone, Copy)]
            pub struct Release;
            /// Fully ordered.
            #[derive(Clone, Copy)]
            pub struct Full;

            /// Any ordering.
            pub trait Ordering: Copy {
                /// The C11 ordering of a successful operation.
                const C11: std::sync::atomic::Ordering;
                /// Fully ordered: a `SeqCst` fence on each side.
                const FULL: bool = false;
            }
            /// What a load accepts.
            pub trait AcquireOrRelaxed: Ordering {}
            /// What a store accepts.
            pub trait ReleaseOrRelaxed: Ordering {}

            impl Ordering for Relaxed {
                const C11: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;
            }
            impl Ordering for Acquire {
                const C11: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Acquire;
            }
            impl Ordering for Release {
                const C11: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Release;
            }
            impl Ordering for Full {
                const C11: std::sync::atomic::Ordering = std::sync::atomic::Ordering::AcqRel;
                const FULL: bool = true;
            }
            impl AcquireOrRelaxed for Relaxed {}
            impl AcquireOrRelaxed for Acquire {}
            impl ReleaseOrRelaxed for Relaxed {}
            impl ReleaseOrRelaxed for Release {}
        }

        use ordering::{AcquireOrRelaxed, Ordering, Relaxed, ReleaseOrRelaxed};

        /// A type that fits an atomic, with its loom representation.
        pub trait AtomicType: Copy {
            /// The loom atomic that holds it.
            type Repr;
            #[doc(hidden)]
            fn repr(v: Self) -> Self::Repr;
            #[doc(hidden)]
            fn load(r: &Self::Repr, o: O) -> Self;
            #[doc(hidden)]
            fn store(r: &Self::Repr, v: Self, o: O);
            #[doc(hidden)]
            fn swap(r: &Self::Repr, v: Self, o: O) -> Self;
            #[doc(hidden)]
            fn cas(r: &Self::Repr, old: Self, new: Self, o: O) -> Result<Self, Self>;
        }

        /// An integer type, which adds and subtracts (wrapping, as the kernel's do).
        pub trait AtomicAdd: AtomicType {
            #[doc(hidden)]
            fn fetch_add(r: &Self::Repr, v: Self, o: O) -> Self;
            #[doc(hidden)]
            fn fetch_sub(r: &Self::Repr, v: Self, o: O) -> Self;
        }

        macro_rules! int {
            ($t:ty, $a:ty) => {
                impl AtomicType for $t {
                    type Repr = $a;
                    fn repr(v: Self) -> $a {
                        <$a>::new(v)
                    }
                    fn load(r: &$a, o: O) -> Self {
                        r.load(o)
                    }
                    fn store(r: &$a, v: Self, o: O) {
                        r.store(v, o)
                    }
                    fn swap(r: &$a, v: Self, o: O) -> Self {
                        r.swap(v, o)
                    }
                    fn cas(r: &$a, old: Self, new: Self, o: O) -> Result<Self, Self> {
                        r.compare_exchange(old, new, o, O::Relaxed)
                    }
                }
            };
        }
        int!(u32, la::AtomicU32);
        int!(i32, la::AtomicI32);
        int!(usize, la::AtomicUsize);
        int!(bool, la::AtomicBool);

        macro_rules! add {
            ($t:ty) => {
                impl AtomicAdd for $t {
                    fn fetch_add(r: &Self::Repr, v: Self, o: O) -> Self {
                        r.fetch_add(v, o)
                    }
                    fn fetch_sub(r: &Self::Repr, v: Self, o: O) -> Self {
                        r.fetch_sub(v, o)
                    }
                }
            };
        }
        add!(u32);
        add!(i32);
        add!(usize);

        macro_rules! ptr {
            ($p:ty) => {
                impl<T> AtomicType for $p {
                    type Repr = la::AtomicUsize;
                    fn repr(v: Self) -> la::AtomicUsize {
                        la::AtomicUsize::new(v as usize)
                    }
                    fn load(r: &la::AtomicUsize, o: O) -> Self {
                        r.load(o) as $p
                    }
                    fn store(r: &la::AtomicUsize, v: Self, o: O) {
                        r.store(v as usize, o)
                    }
                    fn swap(r: &la::AtomicUsize, v: Self, o: O) -> Self {
                        r.swap(v as usize, o) as $p
                    }
                    fn cas(r: &la::AtomicUsize, old: Self, new: Self, o: O) -> Result<Self, Self> {
                        r.compare_exchange(old as usize, new as usize, o, O::Relaxed)
                            .map(|v| v as $p)
                            .map_err(|v| v as $p)
                    }
                }
            };
        }
        ptr!(*mut T);
        ptr!(*const T);

        /// The `smp_mb()` on one side of a fully ordered RMW.
        fn full<Ord: Ordering>() {
            if Ord::FULL {
                la::fence(O::SeqCst);
            }
        }

        /// `kernel::sync::atomic::Atomic`, over loom.
        pub struct Atomic<T: AtomicType>(T::Repr);

        // SAFETY: Loom's atomics are `Sync`; the value is `Copy` data or a raw address.
        unsafe impl<T: AtomicType> Sync for Atomic<T> {}
        // SAFETY: As for `Sync`.
        unsafe impl<T: AtomicType> Send for Atomic<T> {}

        impl<T: AtomicType> Atomic<T> {
            /// A new atomic holding `v`.
            pub fn new(v: T) -> Self {
                Self(T::repr(v))
            }
            /// Load.
            pub fn load<Ord: AcquireOrRelaxed>(&self, _: Ord) -> T {
                T::load(&self.0, Ord::C11)
            }
            /// Store.
            pub fn store<Ord: ReleaseOrRelaxed>(&self, v: T, _: Ord) {
                T::store(&self.0, v, Ord::C11)
            }
            /// Exchange.
            pub fn xchg<Ord: Ordering>(&self, v: T, _: Ord) -> T {
                full::<Ord>();
                let old = T::swap(&self.0, v, Ord::C11);
                full::<Ord>();
                old
            }
            /// Compare and exchange: `Ok(old)` if it was `old` (now `new`), `Err(current)`.
            pub fn cmpxchg<Ord: Ordering>(&self, old: T, new: T, _: Ord) -> Result<T, T> {
                full::<Ord>();
                let r = T::cas(&self.0, old, new, Ord::C11);
                if r.is_ok() {
                    full::<Ord>();
                }
                r
            }
        }

        impl<T: AtomicAdd> Atomic<T> {
            /// Add, relaxed, returning nothing.
            pub fn add(&self, v: T, _: Relaxed) {
                T::fetch_add(&self.0, v, O::Relaxed);
            }
            /// Add, returning the old value.
            pub fn fetch_add<Ord: Ordering>(&self, v: T, _: Ord) -> T {
                full::<Ord>();
                let old = T::fetch_add(&self.0, v, Ord::C11);
                full::<Ord>();
                old
            }
            /// Subtract, returning the old value.
            pub fn fetch_sub<Ord: Ordering>(&self, v: T, _: Ord) -> T {
                full::<Ord>();
                let old = T::fetch_sub(&self.0, v, Ord::C11);
                full::<Ord>();
                old
            }
        }
    }
}

pub mod time {
    //! `kernel::time`: a duration, and a sleep that is a loom yield.

    /// A span of time (its length does not matter to the model).
    #[derive(Clone, Copy)]
    pub struct Delta(#[allow(dead_code)] i64);

    impl Delta {
        /// `us` microseconds.
        pub const fn from_micros(us: i64) -> Self {
            Self(us * 1_000)
        }
        /// `ms` milliseconds.
        pub const fn from_millis(ms: i64) -> Self {
            Self(ms * 1_000_000)
        }
    }

    pub mod delay {
        //! Sleeping.

        /// Sleep: to loom, let another thread run (a wait loop must yield, or loom's
        /// exploration of the spin never ends).
        pub fn fsleep(_: super::Delta) {
            loom::thread::yield_now();
        }
    }
}
