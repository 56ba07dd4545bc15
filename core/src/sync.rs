//! The one place atomics come from.
//!
//! Under `--cfg loom` every atomic, fence and spin hint is loom's, so the
//! exact code of the record and rollover protocols runs inside the loom
//! model checker (see `core/tests/loom.rs`). Everywhere else they are std's.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, fence};

pub(crate) use std::sync::atomic::Ordering;

/// A 128-bit atomic holding a gauge's `(sampled_at, value)` pair, so the
/// value and its time are always replaced together.
#[cfg(not(loom))]
pub(crate) type AtomicPair = portable_atomic::AtomicU128;

/// Loom has no 128-bit atomic; the model uses a mutex-backed stand-in with
/// the same interface. The pair update is a plain compare-and-swap loop and
/// is not what the loom models check.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct AtomicPair(loom::sync::Mutex<u128>);

#[cfg(loom)]
impl AtomicPair {
    pub(crate) fn new(v: u128) -> Self {
        Self(loom::sync::Mutex::new(v))
    }
    pub(crate) fn load(&self, _: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }
    pub(crate) fn store(&self, v: u128, _: Ordering) {
        *self.0.lock().unwrap() = v;
    }
    pub(crate) fn compare_exchange_weak(
        &self,
        current: u128,
        new: u128,
        _: Ordering,
        _: Ordering,
    ) -> Result<u128, u128> {
        let mut g = self.0.lock().unwrap();
        if *g == current {
            *g = new;
            Ok(current)
        } else {
            Err(*g)
        }
    }
}

/// Exponential spin used while waiting for a short critical section of
/// another thread (a rollover, or in-flight writers draining).
pub(crate) struct Spin(#[cfg(not(loom))] crossbeam_utils::Backoff);

impl Spin {
    pub(crate) fn new() -> Self {
        #[cfg(not(loom))]
        return Spin(crossbeam_utils::Backoff::new());
        #[cfg(loom)]
        return Spin();
    }

    pub(crate) fn wait(&self) {
        #[cfg(not(loom))]
        self.0.snooze();
        #[cfg(loom)]
        loom::thread::yield_now();
    }
}

/// `f64` stored in an `AtomicU64` by its bits.
#[inline]
pub(crate) fn f(bits: u64) -> f64 {
    f64::from_bits(bits)
}

#[inline]
pub(crate) fn b(v: f64) -> u64 {
    v.to_bits()
}
