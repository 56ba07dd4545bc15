//! Reading an aggregator's buckets ([`rm_snapshot`]).

use crate::aggregator::{agg_ref, rm_aggregator, rm_series};
use crate::result::{boundary, core_error};
use crate::rm_result::{self, *};

/// One bucket's absolute values.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rm_bucket {
    /// Bucket start, seconds since the epoch.
    pub start: i64,
    /// Observations.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Value of the latest sample (the gauge value).
    pub last: f64,
    /// Time of the latest sample, nanoseconds since the epoch.
    pub sampled_at: i64,
}

/// Copy the buckets of `series` at `resolution` starting in
/// `[from_secs, to_secs)`, oldest first, into `buf` (capacity `cap`). On
/// success `*written` is the count. If `cap` is too small, nothing is
/// copied, `*written` is the count needed and `RM_BUFFER_TOO_SMALL` returned.
///
/// Thread safety: any thread, concurrently with recording (reads are
/// consistent snapshots).
///
/// # Safety
/// `agg` NULL or live; `buf` writable for `cap` buckets (may be NULL if
/// `cap` is 0); `written` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_snapshot(
    agg: *const rm_aggregator,
    series: rm_series,
    resolution: u32,
    from_secs: i64,
    to_secs: i64,
    buf: *mut rm_bucket,
    cap: usize,
    written: *mut usize,
) -> rm_result {
    boundary(|| {
        let (Some(a), false) = (agg_ref(agg), written.is_null()) else {
            return RM_NULL_POINTER;
        };
        if buf.is_null() && cap > 0 {
            return RM_NULL_POINTER;
        }
        let Some(r) = crate::aggregator::resolution(resolution) else {
            return RM_INVALID_ARGUMENT;
        };
        let Some(s) = crate::aggregator::series(series) else {
            return RM_UNKNOWN_SERIES;
        };
        let buckets = match a.agg.snapshot(s, r, from_secs, to_secs) {
            Ok(b) => b,
            Err(e) => return core_error(e),
        };
        if buckets.len() > cap {
            // SAFETY: checked non-NULL.
            unsafe { *written = buckets.len() };
            return RM_BUFFER_TOO_SMALL;
        }
        for (i, b) in buckets.iter().enumerate() {
            // SAFETY: i < buckets.len() <= cap, and buf holds cap buckets.
            unsafe {
                *buf.add(i) = rm_bucket {
                    start: b.start,
                    count: b.count,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                    last: b.last,
                    sampled_at: b.sampled_at,
                }
            };
        }
        // SAFETY: checked non-NULL.
        unsafe { *written = buckets.len() };
        RM_OK
    })
}
