//! Configuration, kinds and resolutions, the aggregator object, its
//! manual clock, series registration and drop counters.

use std::ffi::c_char;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringmetrics::{Aggregator, Config, Kind, ManualClock, Resolution, Series};

use crate::record::refused;
use crate::result::{boundary, core_error, free_box};
use crate::rm_result::{self, *};
use crate::strings::key_and_unit;

/// A series kind. Functions take it as a `uint32_t` (an out-of-range value
/// is refused with `RM_INVALID_ARGUMENT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rm_kind {
    /// Sums values per bucket.
    RM_COUNTER = 0,
    /// Keeps the latest value per bucket.
    RM_GAUGE = 1,
    /// Keeps count, sum, min and max per bucket.
    RM_HISTOGRAM = 2,
}

pub(crate) fn kind(k: u32) -> Option<Kind> {
    match k {
        0 => Some(Kind::Counter),
        1 => Some(Kind::Gauge),
        2 => Some(Kind::Histogram),
        _ => None,
    }
}

/// A bucket width. Functions take it as a `uint32_t` (an out-of-range value
/// is refused with `RM_INVALID_ARGUMENT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rm_resolution {
    /// 60-second buckets.
    RM_1MIN = 0,
    /// 300-second buckets.
    RM_5MIN = 1,
    /// 3600-second buckets.
    RM_1HOUR = 2,
    /// 86400-second buckets.
    RM_1DAY = 3,
}

pub(crate) fn resolution(r: u32) -> Option<Resolution> {
    Resolution::ALL.get(r as usize).copied()
}

/// Aggregator sizes (see `ringmetrics::Config`). Start from
/// [`rm_config_default`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rm_config {
    /// Distinct series that can be registered.
    pub capacity: usize,
    /// Bytes reserved for keys and units.
    pub key_bytes: usize,
    /// Ring depth per resolution (1min, 5min, 1hour, 1day).
    pub buckets: [usize; 4],
    /// How far ahead of the clock an explicit timestamp may be, seconds.
    pub max_future_secs: i64,
    /// Writer stripes per series (0..=64, default 8): the first this many
    /// threads of the process that record each get a stripe of their own
    /// (plain stores, no contention); further threads share an atomic
    /// accumulator. 64 bytes per stripe and series.
    pub writers: usize,
    /// Unsaved buckets kept, once a syncer is attached, after a newer
    /// bucket took their ring slot (a database outage longer than the
    /// ring), until saved (default 10,000; 72 bytes each, pages touched only
    /// as outages push buckets through it). Past it such buckets are dropped and counted in
    /// `rm_drops.unsaved`.
    pub spill: usize,
}

/// Write the default configuration (4096 series, Chancy's ring depths).
///
/// Thread safety: any thread.
///
/// # Safety
/// `out` must be valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_config_default(out: *mut rm_config) -> rm_result {
    boundary(|| {
        if out.is_null() {
            return RM_NULL_POINTER;
        }
        let c = Config::default();
        // SAFETY: checked non-NULL; the caller promises validity.
        unsafe {
            *out = rm_config {
                capacity: c.capacity,
                key_bytes: c.key_bytes,
                buckets: c.buckets,
                max_future_secs: c.max_future_secs,
                writers: c.writers,
                spill: c.spill,
            }
        };
        RM_OK
    })
}

/// The aggregator (opaque).
pub struct rm_aggregator {
    /// The core aggregator (shared with the syncers started from it).
    pub(crate) agg: Arc<Aggregator>,
    /// Its clock, when made by `rm_aggregator_new_manual_clock`.
    pub(crate) manual: Option<ManualClock>,
    /// `OWNER_KNOWN | owner` once a handle of this aggregator has been
    /// seen, else 0: lets a key found in the registry become a handle
    /// without a second registry read (the core exposes the owner only in
    /// handles it makes).
    owner: AtomicU64,
}

const OWNER_KNOWN: u64 = 1 << 32;

impl rm_aggregator {
    /// This aggregator's owner id, once known.
    #[inline(always)]
    pub(crate) fn owner(&self) -> Option<u32> {
        let o = self.owner.load(Ordering::Relaxed);
        (o & OWNER_KNOWN != 0).then_some(o as u32)
    }

    /// Remember the owner id from a handle this aggregator made.
    fn learn_owner(&self, s: Series) {
        self.owner.store(OWNER_KNOWN | s.to_raw().2 as u64, Ordering::Relaxed);
    }

    /// Find or register `key` (the core's `register`), as a C handle.
    pub(crate) fn register(&self, kind: Kind, key: &str, unit: &str) -> Result<rm_series, ringmetrics::Error> {
        let s = self.agg.register(kind, key, unit)?;
        self.learn_owner(s);
        let (id, kind, owner) = s.to_raw();
        Ok(rm_series {
            id,
            kind: kind as u32,
            owner,
        })
    }
}

/// A handle for recording without a key lookup. Plain data: copy it freely,
/// but only use it with the aggregator that made it (others refuse it with
/// `RM_UNKNOWN_SERIES`). Do not modify its fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rm_series {
    /// Dense series id.
    pub id: u32,
    /// Its `rm_kind`.
    pub kind: u32,
    /// Identifies the owning aggregator.
    pub owner: u32,
}

fn config_from(c: *const rm_config) -> Config {
    if c.is_null() {
        return Config::default();
    }
    // SAFETY: non-NULL; the caller promises a valid rm_config.
    let c = unsafe { &*c };
    Config {
        capacity: c.capacity,
        key_bytes: c.key_bytes,
        buckets: c.buckets,
        max_future_secs: c.max_future_secs,
        writers: c.writers,
        spill: c.spill,
    }
}

fn new_aggregator(config: *const rm_config, manual: Option<ManualClock>, out: *mut *mut rm_aggregator) -> rm_result {
    if out.is_null() {
        return RM_NULL_POINTER;
    }
    let config = config_from(config);
    let agg = match &manual {
        Some(clock) => Aggregator::with_clock(config, Arc::new(clock.clone())),
        None => Aggregator::new(config),
    };
    match agg {
        Ok(agg) => {
            let boxed = Box::new(rm_aggregator {
                agg: Arc::new(agg),
                manual,
                owner: AtomicU64::new(0),
            });
            // SAFETY: checked non-NULL.
            unsafe { *out = Box::into_raw(boxed) };
            RM_OK
        }
        Err(e) => core_error(e),
    }
}

/// Create an aggregator on the system clock. `config` may be NULL for the
/// defaults. All memory is allocated here. On success `*out` owns it;
/// release it with [`rm_aggregator_free`].
///
/// Thread safety: any thread.
///
/// # Safety
/// `config` NULL or valid; `out` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_aggregator_new(config: *const rm_config, out: *mut *mut rm_aggregator) -> rm_result {
    boundary(|| new_aggregator(config, None, out))
}

/// Create an aggregator on a manual clock starting at `start_nanos`
/// (nanoseconds since the epoch), for tests; move it with
/// [`rm_aggregator_set_time`] / [`rm_aggregator_advance_time`].
///
/// Thread safety: any thread.
///
/// # Safety
/// As [`rm_aggregator_new`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_aggregator_new_manual_clock(
    config: *const rm_config,
    start_nanos: i64,
    out: *mut *mut rm_aggregator,
) -> rm_result {
    boundary(|| new_aggregator(config, Some(ManualClock::new(start_nanos)), out))
}

pub(crate) fn agg_ref<'a>(agg: *const rm_aggregator) -> Option<&'a rm_aggregator> {
    // SAFETY: the caller promises NULL or a live aggregator.
    unsafe { agg.as_ref() }
}

/// Set a manual clock's time (nanoseconds since the epoch).
///
/// Thread safety: any thread, concurrently with recording.
///
/// # Safety
/// `agg` NULL or a live aggregator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_aggregator_set_time(agg: *const rm_aggregator, nanos: i64) -> rm_result {
    boundary(|| match agg_ref(agg) {
        None => RM_NULL_POINTER,
        Some(a) => match &a.manual {
            Some(c) => {
                c.set(nanos);
                RM_OK
            }
            None => RM_NOT_MANUAL_CLOCK,
        },
    })
}

/// Move a manual clock by `delta_nanos` (negative goes back).
///
/// Thread safety: any thread, concurrently with recording.
///
/// # Safety
/// `agg` NULL or a live aggregator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_aggregator_advance_time(agg: *const rm_aggregator, delta_nanos: i64) -> rm_result {
    boundary(|| match agg_ref(agg) {
        None => RM_NULL_POINTER,
        Some(a) => match &a.manual {
            Some(c) => {
                c.advance(delta_nanos);
                RM_OK
            }
            None => RM_NOT_MANUAL_CLOCK,
        },
    })
}

/// Free an aggregator (NULL is fine). Syncers started from it keep their
/// own reference and may outlive it.
///
/// Thread safety: not concurrently with any other use of `agg`.
///
/// # Safety
/// `agg` NULL or from `rm_aggregator_new*`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_aggregator_free(agg: *mut rm_aggregator) {
    // SAFETY: the caller passes NULL or a pointer from new_aggregator, once.
    unsafe { free_box(agg) }
}

/// Find or register the series `key` (`key_len` bytes) of `kind` with
/// `unit` (`unit_len` bytes; NULL/0 for the kind's default: "count" or
/// "number"). On success writes a handle to `*out`.
///
/// Lengths: a `key_len` over 1024 is refused with `RM_INVALID_KEY`, a
/// `unit_len` over 256 (64 characters of up to 4 bytes) with
/// `RM_INVALID_UNIT`, before any byte is read.
///
/// Thread safety: any number of threads at once on the same aggregator.
///
/// # Safety
/// `agg` NULL or live; `key`/`unit` readable for their lengths when
/// within the limits (a longer length is never read); `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_register(
    agg: *const rm_aggregator,
    kind: u32,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
    out: *mut rm_series,
) -> rm_result {
    boundary(|| {
        let (Some(a), false) = (agg_ref(agg), out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let Some(kind) = self::kind(kind) else {
            return RM_INVALID_ARGUMENT;
        };
        let (key, unit) = match key_and_unit(kind, key, key_len, unit, unit_len) {
            Ok(k) => k,
            Err((e, reason)) => return refused(a, e, reason),
        };
        match a.register(kind, key, unit) {
            Ok(s) => {
                // SAFETY: checked non-NULL.
                unsafe { *out = s };
                RM_OK
            }
            Err(e) => core_error(e),
        }
    })
}

#[inline]
pub(crate) fn series(s: rm_series) -> Option<Series> {
    Some(Series::from_raw(s.id, kind(s.kind)?, s.owner))
}

/// Drop counters (see `ringmetrics::Drops`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rm_drops {
    /// Whole records refused, by reason: invalid key, invalid unit,
    /// non-finite value, invalid timestamp, conflict, overflow, capacity
    /// exhausted, unknown series.
    pub records: [u64; 8],
    /// Per resolution: older than the ring's retention.
    pub expired: [u64; 4],
    /// Per resolution: the slot already held a newer bucket.
    pub stale: [u64; 4],
    /// Per resolution: merging would overflow the bucket's sum.
    pub overflow: [u64; 4],
    /// Per resolution: observations of a bucket that left its ring unsaved
    /// (a syncer outage longer than the ring) while the unsaved-bucket
    /// buffer (`rm_config.spill`) was full.
    pub unsaved: [u64; 4],
}

/// Read the drop counters and the number of registered series.
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `agg` NULL or live; `out` and `series_count` valid (series_count may be
/// NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_drops_read(
    agg: *const rm_aggregator,
    out: *mut rm_drops,
    series_count: *mut usize,
) -> rm_result {
    boundary(|| {
        let (Some(a), false) = (agg_ref(agg), out.is_null()) else {
            return RM_NULL_POINTER;
        };
        let d = a.agg.drops();
        // SAFETY: checked non-NULL (series_count may be NULL).
        unsafe {
            *out = rm_drops {
                records: d.records,
                expired: d.expired,
                stale: d.stale,
                overflow: d.overflow,
                unsaved: d.unsaved,
            };
            if !series_count.is_null() {
                *series_count = a.agg.len();
            }
        }
        RM_OK
    })
}
