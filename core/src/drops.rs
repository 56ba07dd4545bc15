//! Counted drops: every record the aggregator refuses is counted by reason,
//! so "nothing lost silently" can be checked.

use std::fmt;

use crate::Resolution;
use crate::sync::{AtomicU64, Ordering};

/// Why a record (or one resolution of it) was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Empty, too long, or NUL in the key.
    InvalidKey = 0,
    /// Empty, too long, or NUL in the unit.
    InvalidUnit = 1,
    /// NaN or infinity.
    NonFiniteValue = 2,
    /// Before 1970, or further ahead of the clock than `max_future`.
    InvalidTimestamp = 3,
    /// The key exists with another kind or unit.
    Conflict = 4,
    /// The sum of a bucket would overflow to infinity.
    Overflow = 5,
    /// No series slot or key space left.
    CapacityExhausted = 6,
    /// An unknown series handle.
    UnknownSeries = 7,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 8] = [
        DropReason::InvalidKey,
        DropReason::InvalidUnit,
        DropReason::NonFiniteValue,
        DropReason::InvalidTimestamp,
        DropReason::Conflict,
        DropReason::Overflow,
        DropReason::CapacityExhausted,
        DropReason::UnknownSeries,
    ];

    /// A stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::InvalidKey => "invalid_key",
            DropReason::InvalidUnit => "invalid_unit",
            DropReason::NonFiniteValue => "non_finite_value",
            DropReason::InvalidTimestamp => "invalid_timestamp",
            DropReason::Conflict => "conflict",
            DropReason::Overflow => "overflow",
            DropReason::CapacityExhausted => "capacity_exhausted",
            DropReason::UnknownSeries => "unknown_series",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Live drop counters (shared by all threads; drops are rare, so they are
/// plain atomics rather than per-thread).
#[derive(Debug)]
pub(crate) struct DropCounters {
    /// Whole records refused, by [`DropReason`].
    pub(crate) records: [AtomicU64; 8],
    /// Per resolution: a record older than the ring's retention.
    pub(crate) expired: [AtomicU64; 4],
    /// Per resolution: the record's ring slot already holds a newer bucket
    /// (the clock went backwards, or a writer was delayed across a rollover).
    pub(crate) stale: [AtomicU64; 4],
    /// Per resolution: merging into the bucket would overflow its sum.
    pub(crate) overflow: [AtomicU64; 4],
    /// Per resolution: observations of an unsaved bucket pushed out of its
    /// ring while the unsaved-bucket buffer was full.
    pub(crate) unsaved: [AtomicU64; 4],
}

impl DropCounters {
    pub(crate) fn new() -> Self {
        DropCounters {
            records: std::array::from_fn(|_| AtomicU64::new(0)),
            expired: std::array::from_fn(|_| AtomicU64::new(0)),
            stale: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: std::array::from_fn(|_| AtomicU64::new(0)),
            unsaved: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[cold]
    pub(crate) fn record(&self, reason: DropReason) {
        self.records[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    pub(crate) fn expired(&self, r: Resolution, n: u64) {
        self.expired[r.index()].fetch_add(n, Ordering::Relaxed);
    }

    #[cold]
    pub(crate) fn stale(&self, r: Resolution, n: u64) {
        self.stale[r.index()].fetch_add(n, Ordering::Relaxed);
    }

    #[cold]
    pub(crate) fn overflow(&self, r: Resolution, n: u64) {
        self.overflow[r.index()].fetch_add(n, Ordering::Relaxed);
    }

    #[cold]
    pub(crate) fn unsaved(&self, r: Resolution, n: u64) {
        self.unsaved[r.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Drops {
        let load = |a: &[AtomicU64]| -> Vec<u64> { a.iter().map(|x| x.load(Ordering::Relaxed)).collect() };
        let r = load(&self.records);
        let e = load(&self.expired);
        let s = load(&self.stale);
        let o = load(&self.overflow);
        let u = load(&self.unsaved);
        Drops {
            records: std::array::from_fn(|i| r[i]),
            expired: std::array::from_fn(|i| e[i]),
            stale: std::array::from_fn(|i| s[i]),
            overflow: std::array::from_fn(|i| o[i]),
            unsaved: std::array::from_fn(|i| u[i]),
        }
    }
}

/// A copy of the drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Whole records refused, indexed by `DropReason as usize`.
    pub records: [u64; 8],
    /// Per resolution (index [`Resolution::index`]): records older than
    /// the ring's retention at that resolution.
    pub expired: [u64; 4],
    /// Per resolution: records whose slot already held a newer bucket.
    pub stale: [u64; 4],
    /// Per resolution: records whose merge would overflow the bucket sum.
    pub overflow: [u64; 4],
    /// Per resolution: observations lost because their bucket left the
    /// ring unsaved (a syncer outage longer than the ring) while the
    /// unsaved-bucket buffer ([`crate::Config::spill`]) was full.
    pub unsaved: [u64; 4],
}

impl Drops {
    /// Records refused for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.records[reason as usize]
    }

    /// Every whole-record drop plus every per-resolution drop.
    pub fn total(&self) -> u64 {
        self.records
            .iter()
            .chain(&self.expired)
            .chain(&self.stale)
            .chain(&self.overflow)
            .chain(&self.unsaved)
            .sum()
    }
}
