//! Recording by handle at the clock's time ([`rm_record`]), and what every
//! record by key shares: matching a found key, the slow path.
//!
//! The recording calls are laid out for LLVM's inliner. Each codegen unit
//! gets its own copy of the core's `#[inline]` functions, and a copy with a
//! single call site is inlined into its caller whatever its size. A release
//! build gives each module its own unit, so each hot call has a module of
//! its own: here `rm_record` is the only caller of `Aggregator::record` and
//! the `record_inner` under it; in [`crate::record_key`], `rm_record_key`
//! has its own copies of those and of the registry lookup; in
//! [`crate::record_at`], `rm_record_at` has its own `record_inner`. The slow
//! path records through the exported functions and registers through the
//! core's out-of-line `register`, so it adds no call site. (Built with
//! `codegen-units = 1`, the units merge and the copies stay out of line:
//! about 30 more instructions per record.) Check a change with
//! `tests/c/bench.sh --callgrind`, which also says whether the hot calls
//! still inline the core.

use std::ffi::c_char;

use ringmetrics::{DropReason, Kind};

use crate::aggregator::{agg_ref, rm_aggregator, rm_series};
use crate::result::{boundary, core_error};
use crate::rm_record_at;
use crate::rm_result::{self, *};
use crate::strings::key_and_unit;

/// A core result as a result code. The error arm is out of line, so the
/// success path stays a compare and a return.
#[inline(always)]
pub(crate) fn done(r: Result<(), ringmetrics::Error>) -> rm_result {
    match r {
        Ok(()) => RM_OK,
        Err(e) => core_error(e),
    }
}

/// Record `value` into `series` at the aggregator's time. Lock-free, no
/// allocation.
///
/// Thread safety: any number of threads at once, on the same or different
/// series.
///
/// # Safety
/// `agg` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_record(agg: *const rm_aggregator, series: rm_series, value: f64) -> rm_result {
    boundary(|| {
        let Some(a) = agg_ref(agg) else { return RM_NULL_POINTER };
        let Some(s) = crate::aggregator::series(series) else {
            return RM_UNKNOWN_SERIES;
        };
        done(a.agg.record(s, value))
    })
}

/// Byte equality for short strings (units are usually under 16 bytes)
/// without a call to `memcmp`: at most two overlapping loads per side.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
        let (n, m) = (a.len(), a.len() - N);
        a[..N] == b[..N] && a[m..n] == b[m..n]
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => ends::<4>(a, &b[..n]),
        8..=16 => ends::<8>(a, &b[..n]),
        _ => a == b,
    }
}

/// The handle of `info` if its kind is `kind` and its unit the `unit_len`
/// bytes at `unit` (none: the kind's default). The unit is read only when
/// its length is the registered unit's (at most 256 bytes), so a length
/// over the limit is never read.
///
/// # Safety
/// `unit` is NULL or readable for `unit_len` bytes.
#[inline(always)]
pub(crate) unsafe fn matching(
    info: ringmetrics::SeriesInfo<'_>,
    kind: Kind,
    unit: *const c_char,
    unit_len: usize,
    owner: u32,
) -> Option<rm_series> {
    let unit_matches = if unit_len == 0 {
        // Against each literal, so the comparison compiles to two loads.
        match kind {
            Kind::Counter => info.unit == Kind::Counter.default_unit(),
            Kind::Gauge => info.unit == Kind::Gauge.default_unit(),
            Kind::Histogram => info.unit == Kind::Histogram.default_unit(),
        }
    } else {
        let registered = info.unit.as_bytes();
        registered.len() == unit_len
            && !unit.is_null()
            // SAFETY: the caller promises `unit_len` readable bytes at the
            // non-NULL `unit`; `unit_len` is a registered unit's length.
            && same_bytes(registered, unsafe { std::slice::from_raw_parts(unit as *const u8, unit_len) })
    };
    (info.kind == kind && unit_matches).then_some(rm_series {
        id: info.id,
        kind: kind as u32,
        owner,
    })
}

/// Record by handle, at the clock's time or at `at`.
///
/// # Safety
/// `agg` NULL or live.
#[inline(always)]
unsafe fn record_handle(agg: *const rm_aggregator, s: rm_series, value: f64, at: Option<i64>) -> rm_result {
    // SAFETY: by this function's contract.
    unsafe {
        match at {
            None => rm_record(agg, s, value),
            Some(at) => rm_record_at(agg, s, value, at),
        }
    }
}

/// Count a refusal made before the aggregator saw the record.
pub(crate) fn refused(a: &rm_aggregator, code: rm_result, reason: DropReason) -> rm_result {
    // Invalid UTF-8, or a length over the limit (never read): what the
    // core would have counted had it seen the record.
    if matches!(code, RM_INVALID_UTF8 | RM_INVALID_KEY | RM_INVALID_UNIT) {
        a.agg.count_refused(reason);
    }
    code
}

/// Record by key the long way: UTF-8 checks, find or register, record
/// through [`rm_record`] / [`rm_record_at`]. Same outcome and drop count as
/// the core's `record_key`. All of [`rm_record_key_at`]; [`rm_record_key`]
/// for a key it does not know yet.
///
/// # Safety
/// As [`rm_record_key`].
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn record_key_slow(
    agg: *const rm_aggregator,
    a: &rm_aggregator,
    kind: Kind,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
    value: f64,
    at: Option<i64>,
) -> rm_result {
    let (key, unit) = match key_and_unit(kind, key, key_len, unit, unit_len) {
        Ok(k) => k,
        Err((e, reason)) => return refused(a, e, reason),
    };
    // As in the core's `record_key`: the value is checked before a new key
    // is registered, so a bad value never creates a series.
    if !value.is_finite() {
        a.agg.count_refused(DropReason::NonFiniteValue);
        return core_error(ringmetrics::Error::NonFiniteValue(value));
    }
    match a.register(kind, key, unit) {
        // SAFETY: by this function's contract.
        Ok(s) => unsafe { record_handle(agg, s, value, at) },
        Err(e) => core_error(e),
    }
}
