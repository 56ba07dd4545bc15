//! Recording at an explicit time ([`rm_record_at`], [`rm_record_key_at`]).
//!
//! A module of its own so that it compiles into a codegen unit of its own:
//! its copy of the core's `record_inner` (under `Aggregator::record_at`)
//! then has one call site and is inlined, and the copy under
//! [`crate::rm_record`] keeps its single caller too (see [`crate::record`]).
//! Known keys are found through the core's out-of-line `lookup`, so the
//! registry lookup inlined into [`crate::rm_record_key`] stays its only copy.

use std::ffi::c_char;

use ringmetrics::Kind;

use crate::aggregator::{agg_ref, rm_aggregator, rm_series};
use crate::record::{done, matching, record_key_slow};
use crate::result::boundary;
use crate::rm_result::{self, *};
use crate::strings::key_text;
// For the doc links, which cbindgen copies into the header as they are.
#[cfg(doc)]
use crate::{rm_record, rm_record_key};

/// Record `value` observed at `at_nanos` (nanoseconds since the epoch).
///
/// Thread safety: as [`rm_record`].
///
/// # Safety
/// `agg` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_record_at(
    agg: *const rm_aggregator,
    series: rm_series,
    value: f64,
    at_nanos: i64,
) -> rm_result {
    boundary(|| {
        let Some(a) = agg_ref(agg) else { return RM_NULL_POINTER };
        let Some(s) = crate::aggregator::series(series) else {
            return RM_UNKNOWN_SERIES;
        };
        done(a.agg.record_at(s, value, at_nanos))
    })
}

/// [`known_series`] for [`rm_record_key_at`], through the core's
/// out-of-line lookup (so the key's UTF-8 is checked first).
///
/// # Safety
/// `key`/`unit` NULL or readable for their lengths.
#[inline(always)]
unsafe fn known_series_checked(
    a: &rm_aggregator,
    kind: Kind,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
) -> Option<rm_series> {
    let k = key_text(key, key_len).ok()?;
    let owner = a.owner()?;
    // SAFETY: the caller promises `unit_len` readable bytes at `unit`.
    unsafe { matching(a.agg.lookup(k)?, kind, unit, unit_len, owner) }
}

/// [`rm_record_key`] at an explicit time (nanoseconds since the epoch).
///
/// Lengths: as [`rm_record_key`], a `key_len` over 1024 or a `unit_len`
/// over 256 is refused (`RM_INVALID_KEY`, `RM_INVALID_UNIT`) before any
/// byte is read.
///
/// Thread safety: any number of threads at once.
///
/// # Safety
/// As [`rm_record_key`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rm_record_key_at(
    agg: *const rm_aggregator,
    kind: u32,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
    value: f64,
    at_nanos: i64,
) -> rm_result {
    boundary(|| {
        let Some(a) = agg_ref(agg) else { return RM_NULL_POINTER };
        let Some(kind) = crate::aggregator::kind(kind) else {
            return RM_INVALID_ARGUMENT;
        };
        // SAFETY: the caller's promises are `rm_record_at`'s and `record_key_slow`'s.
        unsafe {
            match known_series_checked(a, kind, key, key_len, unit, unit_len) {
                Some(s) => rm_record_at(agg, s, value, at_nanos),
                None => record_key_slow(agg, a, kind, key, key_len, unit, unit_len, value, Some(at_nanos)),
            }
        }
    })
}
