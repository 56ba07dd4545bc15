//! Cluster-wide work on Chancy's tables, each call on its own connection:
//! [`rm_cleanup`] and [`rm_read_metrics`] with its result accessors.

use std::ffi::c_char;

use ringmetrics_postgres::{ReadQuery, ReadSeries};

use crate::result::{boundary, free_box, sync_error};
use crate::rm_result::{self, *};
use crate::strings::cstr;

/// Chancy's cleanup: delete chunks older than `retention_secs` (4 values,
/// finest resolution first) and orphan definitions; `*removed` gets the
/// rows deleted.
///
/// Thread safety: any thread (opens its own connection).
///
/// # Safety
/// `dsn` NUL-terminated; `prefix` NULL or NUL-terminated; `retention_secs`
/// readable for 4 values; `removed` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_cleanup(
    dsn: *const c_char,
    prefix: *const c_char,
    retention_secs: *const i64,
    removed: *mut u64,
) -> rm_result {
    boundary(|| {
        if retention_secs.is_null() || removed.is_null() {
            return RM_NULL_POINTER;
        }
        let (dsn, prefix) = match (cstr(dsn), cstr(prefix)) {
            (Ok(Some(d)), Ok(p)) => (d, p.unwrap_or("chancy_")),
            (Ok(None), _) => return RM_NULL_POINTER,
            _ => return RM_INVALID_UTF8,
        };
        // SAFETY: the caller promises 4 readable values.
        let r = unsafe {
            [
                *retention_secs,
                *retention_secs.add(1),
                *retention_secs.add(2),
                *retention_secs.add(3),
            ]
        };
        match ringmetrics_postgres::cleanup(dsn, prefix, r) {
            Ok(n) => {
                // SAFETY: checked non-NULL.
                unsafe { *removed = n };
                RM_OK
            }
            Err(e) => sync_error(e),
        }
    })
}

/// The result of [`rm_read_metrics`] (opaque).
pub struct rm_read_result {
    series: Vec<ReadSeries>,
}

/// Read every worker's data with Chancy's merge rules: series matching
/// `metric_prefix` (NULL: all; the key and its `:`-descendants), from
/// `worker_id` (NULL: all workers), at `resolution`, buckets starting in
/// `[start_secs, end_secs)` (aligned). Release with [`rm_read_result_free`].
///
/// Thread safety: any thread (opens its own connection).
///
/// # Safety
/// Strings NULL (where allowed) or NUL-terminated; `out` valid.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rm_read_metrics(
    dsn: *const c_char,
    prefix: *const c_char,
    metric_prefix: *const c_char,
    worker_id: *const c_char,
    resolution: u32,
    start_secs: i64,
    end_secs: i64,
    out: *mut *mut rm_read_result,
) -> rm_result {
    boundary(|| {
        if out.is_null() {
            return RM_NULL_POINTER;
        }
        let Some(r) = crate::aggregator::resolution(resolution) else {
            return RM_INVALID_ARGUMENT;
        };
        let (dsn, prefix, mp, w) = match (cstr(dsn), cstr(prefix), cstr(metric_prefix), cstr(worker_id)) {
            (Ok(Some(d)), Ok(p), Ok(m), Ok(w)) => (d, p.unwrap_or("chancy_"), m, w),
            (Ok(None), ..) => return RM_NULL_POINTER,
            _ => return RM_INVALID_UTF8,
        };
        let q = ReadQuery {
            prefix: mp.map(str::to_owned),
            worker_id: w.map(str::to_owned),
            resolution: r,
            start_secs,
            end_secs,
        };
        match ringmetrics_postgres::read_metrics(dsn, prefix, &q) {
            Ok(series) => {
                // SAFETY: checked non-NULL.
                unsafe { *out = Box::into_raw(Box::new(rm_read_result { series })) };
                RM_OK
            }
            Err(e) => sync_error(e),
        }
    })
}

/// Number of series in a read result (0 for NULL).
///
/// Thread safety: any thread (the result is immutable).
///
/// # Safety
/// `result` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_read_result_len(result: *const rm_read_result) -> usize {
    // SAFETY: the caller promises NULL or a live result.
    unsafe { result.as_ref() }.map_or(0, |r| r.series.len())
}

/// One series of a read result. Pointers stay valid until the result is
/// freed; strings are not NUL-terminated (use the lengths).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rm_read_series {
    /// The key's bytes.
    pub key: *const c_char,
    /// The key's length.
    pub key_len: usize,
    /// The unit's bytes.
    pub unit: *const c_char,
    /// The unit's length.
    pub unit_len: usize,
    /// Its `rm_kind`.
    pub kind: u32,
    /// Number of points.
    pub points_len: usize,
}

/// One merged point.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rm_read_point {
    /// Bucket start, seconds since the epoch.
    pub start: i64,
    /// Histogram observations (0 for others).
    pub count: u64,
    /// Summed total (counters, histograms).
    pub sum: f64,
    /// Smallest minimum (histograms; NaN otherwise).
    pub min: f64,
    /// Largest maximum (histograms; NaN otherwise).
    pub max: f64,
    /// Counter total, gauge value, or histogram average.
    pub value: f64,
    /// Latest sample time, nanoseconds since the epoch.
    pub sampled_at: i64,
}

/// Describe series `index` of a read result.
///
/// Thread safety: any thread.
///
/// # Safety
/// `result` NULL or live; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_read_result_series(
    result: *const rm_read_result,
    index: usize,
    out: *mut rm_read_series,
) -> rm_result {
    boundary(|| {
        // SAFETY: the caller promises NULL or a live result.
        let (Some(r), false) = (unsafe { result.as_ref() }, out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let Some(s) = r.series.get(index) else {
            return RM_INVALID_ARGUMENT;
        };
        // SAFETY: checked non-NULL.
        unsafe {
            *out = rm_read_series {
                key: s.key.as_ptr() as *const c_char,
                key_len: s.key.len(),
                unit: s.unit.as_ptr() as *const c_char,
                unit_len: s.unit.len(),
                kind: s.kind as u32,
                points_len: s.points.len(),
            }
        };
        RM_OK
    })
}

/// Copy point `point` of series `index` of a read result.
///
/// Thread safety: any thread.
///
/// # Safety
/// `result` NULL or live; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_read_result_point(
    result: *const rm_read_result,
    index: usize,
    point: usize,
    out: *mut rm_read_point,
) -> rm_result {
    boundary(|| {
        // SAFETY: the caller promises NULL or a live result.
        let (Some(r), false) = (unsafe { result.as_ref() }, out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let Some(p) = r.series.get(index).and_then(|s| s.points.get(point)) else {
            return RM_INVALID_ARGUMENT;
        };
        // SAFETY: checked non-NULL.
        unsafe {
            *out = rm_read_point {
                start: p.start,
                count: p.count,
                sum: p.sum,
                min: p.min,
                max: p.max,
                value: p.value,
                sampled_at: p.sampled_at_nanos,
            }
        };
        RM_OK
    })
}

/// Free a read result (NULL is fine).
///
/// Thread safety: not concurrently with other use of `result`.
///
/// # Safety
/// `result` NULL or from [`rm_read_metrics`], not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_read_result_free(result: *mut rm_read_result) {
    // SAFETY: the caller passes NULL or a pointer from rm_read_metrics, once.
    unsafe { free_box(result) }
}
