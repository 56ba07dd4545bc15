//! The Postgres syncer thread: start, flush, stop, status, free.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use ringmetrics_postgres::{Schema, SyncError, Syncer, SyncerConfig, V1_DEFAULT_MAX_POINTS};

use crate::aggregator::{agg_ref, rm_aggregator};
use crate::result::{boundary, copy_out, free_box, remember, sync_error};
use crate::rm_result::{self, *};
use crate::strings::cstr;

/// The longest duration a caller may give, in seconds (about 31.7 years):
/// a timeout over it is refused; an interval over it is clamped to it.
pub const RM_MAX_DURATION_SECS: f64 = 1e9;

/// A timeout in seconds: finite, `0..=RM_MAX_DURATION_SECS`; anything else
/// (NaN, infinite, negative, over the maximum) is `RM_INVALID_ARGUMENT`.
fn timeout(secs: f64) -> Result<Duration, rm_result> {
    if (0.0..=RM_MAX_DURATION_SECS).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(bad_duration(
            "timeout",
            secs,
            "from 0 to 1e9 seconds",
            RM_INVALID_ARGUMENT,
        ))
    }
}

/// A sync interval in seconds: at least a nanosecond; NaN, zero, negative
/// or shorter is `RM_INVALID_CONFIG`. Over `RM_MAX_DURATION_SECS` (+infinity included)
/// it is clamped to it: no periodic sync in practice, flushes on demand and
/// at stop still write (Chancy accepts any positive `sync_interval`).
fn interval(secs: f64) -> Result<Duration, rm_result> {
    if secs >= 1e-9 {
        Ok(Duration::from_secs_f64(secs.min(RM_MAX_DURATION_SECS)))
    } else {
        Err(bad_duration(
            "interval",
            secs,
            "at least 1e-9 seconds",
            RM_INVALID_CONFIG,
        ))
    }
}

#[cold]
#[inline(never)]
fn bad_duration(what: &str, secs: f64, rule: &str, code: rm_result) -> rm_result {
    remember(format!("{what} {secs} is invalid: it must be {rule}"));
    code
}

/// The Postgres syncer thread (opaque).
pub struct rm_syncer {
    /// Locked only to clone or take the handle, never while a call waits:
    /// `rm_syncer_status` answers at once during a stuck flush.
    inner: parking_lot::Mutex<Option<Arc<Syncer>>>,
}

/// Start a syncer writing `agg` into Chancy's tables: `dsn` (libpq string
/// or URL), `prefix` (NULL: "chancy_"), `worker_id` (NULL: ""), a sync every
/// `interval_secs` (at least 1e-9; NaN, zero, negative or less is
/// `RM_INVALID_CONFIG`;
/// over `RM_MAX_DURATION_SECS`, +infinity included, it is clamped to it:
/// no periodic sync, but flushes and the final flush still write). The
/// database need not be up yet. Release with
/// [`rm_syncer_free`].
///
/// Thread safety: any thread.
///
/// # Safety
/// `agg` NULL or live; strings NULL or NUL-terminated; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_start(
    agg: *const rm_aggregator,
    dsn: *const c_char,
    prefix: *const c_char,
    worker_id: *const c_char,
    interval_secs: f64,
    out: *mut *mut rm_syncer,
) -> rm_result {
    // SAFETY: the caller's guarantees, passed on.
    unsafe { start(agg, dsn, prefix, worker_id, interval_secs, Schema::V2, out) }
}

/// [`rm_syncer_start`] writing Chancy 0.25's metrics schema (version 1):
/// one row per key, resolution and worker id, newest-first arrays of at
/// most `max_points[i]` buckets per resolution (1min, 5min, 1hour, 1day;
/// NULL: Chancy 0.25's 60, 288, 168, 90; a zero is `RM_INVALID_CONFIG`).
/// The tables must be at version 1 (created when missing); a database
/// migrated by Chancy 0.26 fails the flushes with `RM_SCHEMA_VERSION`.
/// 0.25 has no sessions: never run two aggregators under one `worker_id`.
///
/// Thread safety: any thread.
///
/// # Safety
/// As [`rm_syncer_start`]; `max_points` NULL or pointing to 4 values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_start_v1(
    agg: *const rm_aggregator,
    dsn: *const c_char,
    prefix: *const c_char,
    worker_id: *const c_char,
    interval_secs: f64,
    max_points: *const usize,
    out: *mut *mut rm_syncer,
) -> rm_result {
    let max_points = if max_points.is_null() {
        V1_DEFAULT_MAX_POINTS
    } else {
        // SAFETY: the caller guarantees 4 readable values.
        unsafe { std::ptr::read_unaligned(max_points.cast::<[usize; 4]>()) }
    };
    // SAFETY: the caller's guarantees, passed on.
    unsafe {
        start(
            agg,
            dsn,
            prefix,
            worker_id,
            interval_secs,
            Schema::V1 { max_points },
            out,
        )
    }
}

/// Both starts.
///
/// # Safety
/// As [`rm_syncer_start`].
unsafe fn start(
    agg: *const rm_aggregator,
    dsn: *const c_char,
    prefix: *const c_char,
    worker_id: *const c_char,
    interval_secs: f64,
    schema: Schema,
    out: *mut *mut rm_syncer,
) -> rm_result {
    boundary(|| {
        let (Some(a), false) = (agg_ref(agg), out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let (dsn, prefix, worker_id) = match (cstr(dsn), cstr(prefix), cstr(worker_id)) {
            (Ok(Some(d)), Ok(p), Ok(w)) => (d, p, w),
            (Ok(None), _, _) => return RM_NULL_POINTER,
            _ => return RM_INVALID_UTF8,
        };
        let interval = match interval(interval_secs) {
            Ok(d) => d,
            Err(e) => return e,
        };
        let mut config = SyncerConfig::new(dsn);
        if let Some(p) = prefix {
            config.prefix = p.into();
        }
        if let Some(w) = worker_id {
            config.worker_id = w.into();
        }
        config.interval = interval;
        config.schema = schema;
        match Syncer::start(a.agg.clone(), config) {
            Ok(s) => {
                let boxed = Box::new(rm_syncer {
                    inner: parking_lot::Mutex::new(Some(Arc::new(s))),
                });
                // SAFETY: checked non-NULL.
                unsafe { *out = Box::into_raw(boxed) };
                RM_OK
            }
            Err(e) => sync_error(e),
        }
    })
}

/// What a flush wrote.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rm_flush_report {
    /// Chunk rows inserted or updated.
    pub rows_written: u64,
    /// Series with at least one row written.
    pub series_written: u64,
    /// New metric definitions.
    pub definitions_created: u64,
}

fn syncer_call(
    syncer: *const rm_syncer,
    report: *mut rm_flush_report,
    f: impl FnOnce(&parking_lot::Mutex<Option<Arc<Syncer>>>) -> Result<ringmetrics_postgres::FlushReport, SyncError>,
) -> rm_result {
    // SAFETY: the caller promises NULL or a live syncer.
    let Some(s) = (unsafe { syncer.as_ref() }) else {
        return RM_NULL_POINTER;
    };
    match f(&s.inner) {
        Ok(r) => {
            if !report.is_null() {
                // SAFETY: checked non-NULL.
                unsafe {
                    *report = rm_flush_report {
                        rows_written: r.rows_written,
                        series_written: r.series_written,
                        definitions_created: r.definitions_created,
                    }
                };
            }
            RM_OK
        }
        Err(e) => sync_error(e),
    }
}

/// Write every changed chunk now; wait at most `timeout_secs` (0 to
/// `RM_MAX_DURATION_SECS`; NaN, infinite, negative or larger is
/// `RM_INVALID_ARGUMENT`, and nothing is done). `report`
/// may be NULL. On failure the data stays pending and is retried.
///
/// Thread safety: any thread; concurrent calls on one syncer are
/// serialized.
///
/// # Safety
/// `syncer` NULL or live; `report` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_flush(
    syncer: *const rm_syncer,
    timeout_secs: f64,
    report: *mut rm_flush_report,
) -> rm_result {
    boundary(|| {
        let t = match timeout(timeout_secs) {
            Ok(t) => t,
            Err(e) => return e,
        };
        syncer_call(syncer, report, |inner| {
            let s = inner.lock().clone().ok_or(SyncError::Stopped)?;
            s.flush(t)
        })
    })
}

/// Final flush and stop the thread (idempotent: later calls return
/// `RM_OK` with an empty report). Waits at most `timeout_secs`, checked as
/// [`rm_syncer_flush`] checks it (a refused timeout leaves the syncer
/// running).
///
/// Thread safety: as [`rm_syncer_flush`].
///
/// # Safety
/// As [`rm_syncer_flush`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_stop(
    syncer: *const rm_syncer,
    timeout_secs: f64,
    report: *mut rm_flush_report,
) -> rm_result {
    boundary(|| {
        let t = match timeout(timeout_secs) {
            Ok(t) => t,
            Err(e) => return e,
        };
        syncer_call(syncer, report, |inner| {
            let Some(s) = inner.lock().clone() else {
                return Ok(Default::default());
            };
            let result = s.stop(t);
            if !matches!(result, Err(SyncError::Timeout)) {
                inner.lock().take();
            }
            result
        })
    })
}

/// The syncer's health.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rm_sync_status {
    /// Last successful flush, nanoseconds since the epoch (0: never).
    pub last_success_nanos: i64,
    /// 1 if the last flush failed (see `rm_last_error_detail` after
    /// `rm_syncer_flush`), else 0.
    pub failing: u32,
    /// 1 while the thread runs.
    pub running: u32,
    /// Series with changes not yet saved.
    pub pending_series: u64,
    /// Chunk rows not yet saved.
    pub pending_chunks: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Failed flushes.
    pub failures: u64,
    /// Rows written since start.
    pub rows_written: u64,
    /// Series dropped for a conflicting stored definition.
    pub conflicts_dropped: u64,
}

/// Read the syncer's status.
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `syncer` NULL or live; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_status(syncer: *const rm_syncer, out: *mut rm_sync_status) -> rm_result {
    boundary(|| {
        // SAFETY: the caller promises NULL or a live syncer.
        let (Some(s), false) = (unsafe { syncer.as_ref() }, out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let handle = s.inner.lock().clone();
        let st = handle.map(|s| s.status()).unwrap_or_default();
        let nanos = st
            .last_success
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        // SAFETY: checked non-NULL.
        unsafe {
            *out = rm_sync_status {
                last_success_nanos: nanos,
                failing: st.last_error.is_some() as u32,
                running: st.running as u32,
                pending_series: st.pending_series,
                pending_chunks: st.pending_chunks,
                flushes: st.flushes,
                failures: st.failures,
                rows_written: st.rows_written,
                conflicts_dropped: st.conflicts_dropped,
            }
        };
        RM_OK
    })
}

/// Copy the syncer's last warning into `buf` as a NUL-terminated string,
/// truncated to `cap` bytes; `*written` gets its length without the NUL (0:
/// none yet). The syncer warns when the database stores a key with another
/// type or unit than it was recorded with (Chancy's "conflicting
/// definition"): that series is kept in memory and checked again on every
/// flush; `rm_sync_status.conflicts_dropped` counts such series.
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `syncer` NULL or live; `buf` points to `cap` writable bytes; `written`
/// valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_last_warning(
    syncer: *const rm_syncer,
    buf: *mut c_char,
    cap: usize,
    written: *mut usize,
) -> rm_result {
    boundary(|| {
        // SAFETY: the caller promises NULL or a live syncer.
        let Some(s) = (unsafe { syncer.as_ref() }) else {
            return RM_NULL_POINTER;
        };
        if buf.is_null() || written.is_null() || cap == 0 {
            return RM_NULL_POINTER;
        }
        let handle = s.inner.lock().clone();
        let text = handle.and_then(|s| s.status().last_warning).unwrap_or_default();
        // SAFETY: the caller's contract, checked non-NULL and cap > 0.
        unsafe { copy_out(&text, buf, cap, written) };
        RM_OK
    })
}

/// Free a syncer (NULL is fine), stopping it first with a final flush
/// bounded to 10 seconds.
///
/// Thread safety: not concurrently with any other use of `syncer`.
///
/// # Safety
/// `syncer` NULL or from [`rm_syncer_start`], not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_syncer_free(syncer: *mut rm_syncer) {
    // SAFETY: the caller passes NULL or a pointer from rm_syncer_start, once.
    unsafe { free_box(syncer) }
}
