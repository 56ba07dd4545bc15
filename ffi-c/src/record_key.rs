//! Recording by key at the clock's time ([`rm_record_key`]), in a module
//! (so a codegen unit) of its own: its copies of the core's registry lookup
//! and record path have one call site each and are inlined (see
//! [`crate::record`]).

use std::ffi::c_char;

use ringmetrics::{Kind, Series};

use crate::aggregator::{agg_ref, rm_aggregator, rm_series};
use crate::record::{done, matching, record_key_slow};
use crate::result::boundary;
use crate::rm_result::{self, *};
use crate::strings::{MAX_KEY_BYTES, bytes};

/// The handle of a registered `key` whose kind and unit match, with no
/// UTF-8 check (only valid keys are ever registered, so a match is valid).
/// `None` for anything else, and for a key length over the limit (never
/// read: the slow path refuses it).
///
/// # Safety
/// `key`/`unit` NULL or readable for their lengths.
#[inline(always)]
unsafe fn known_series(
    a: &rm_aggregator,
    kind: Kind,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
) -> Option<rm_series> {
    let k = bytes(key, key_len, MAX_KEY_BYTES)?;
    let owner = a.owner()?;
    // SAFETY: the caller promises `unit_len` readable bytes at `unit`.
    unsafe { matching(a.agg.lookup_bytes(k)?, kind, unit, unit_len, owner) }
}

/// Record `value` into `key` (registering it with `kind` and `unit` if new)
/// at the aggregator's time. Lock-free for a known key.
///
/// Lengths: a `key_len` over 1024 is refused with `RM_INVALID_KEY`, a
/// `unit_len` over 256 (64 characters of up to 4 bytes) with
/// `RM_INVALID_UNIT`, before any byte is read; both are counted as drops.
///
/// Thread safety: any number of threads at once.
///
/// # Safety
/// `agg` NULL or live; `key`/`unit` readable for their lengths when
/// within the limits (a longer length is never read).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_record_key(
    agg: *const rm_aggregator,
    kind: u32,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
    value: f64,
) -> rm_result {
    boundary(|| {
        let Some(a) = agg_ref(agg) else { return RM_NULL_POINTER };
        let Some(kind) = crate::aggregator::kind(kind) else {
            return RM_INVALID_ARGUMENT;
        };
        // SAFETY: the caller's promises are `known_series`'s.
        match unsafe { known_series(a, kind, key, key_len, unit, unit_len) } {
            Some(s) => done(a.agg.record(Series::from_raw(s.id, kind, s.owner), value)),
            // SAFETY: the caller's promises are `record_key_slow`'s.
            None => unsafe { record_key_slow(agg, a, kind, key, key_len, unit, unit_len, value, None) },
        }
    })
}
