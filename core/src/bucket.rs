//! What a reader gets back: one bucket's absolute values.

use crate::clock::Nanos;
use crate::{Kind, Resolution};

/// One bucket of one series at one resolution, as absolute values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Bucket start, seconds since the epoch (a multiple of the width).
    pub start: i64,
    /// Observations merged into the bucket (always at least 1).
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
    /// Smallest observed value.
    pub min: f64,
    /// Largest observed value.
    pub max: f64,
    /// The value with the latest sample time (the gauge value).
    pub last: f64,
    /// Time of the latest observation, nanoseconds since the epoch.
    pub sampled_at: Nanos,
}

impl Bucket {
    /// A bucket holding one observation.
    pub fn single(start: i64, value: f64, at: Nanos) -> Bucket {
        Bucket {
            start,
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
            sampled_at: at,
        }
    }

    /// Merge `other` (same bucket) into `self` by Chancy's rules: counts and
    /// sums add (saturating at `±f64::MAX`, so a reader never sees an
    /// infinity), min and max combine, the later sample's value wins (ties
    /// go to `other`).
    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.sum = (self.sum + other.sum).clamp(f64::MIN, f64::MAX);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.sampled_at >= self.sampled_at {
            self.last = other.last;
            self.sampled_at = other.sampled_at;
        }
    }

    /// The single number Chancy shows for a counter (sum) or gauge (last).
    pub fn value(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Counter => self.sum,
            Kind::Gauge => self.last,
            Kind::Histogram => self.sum / self.count as f64,
        }
    }
}

/// Everything one series holds at every resolution, read consistently.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesData {
    /// Buckets per resolution (index [`Resolution::index`]), oldest first.
    pub buckets: [Vec<Bucket>; 4],
    /// The version the data was read at (see [`crate::Aggregator::version`]).
    pub version: SeriesVersion,
}

impl SeriesData {
    /// The buckets of one resolution, oldest first.
    pub fn at(&self, r: Resolution) -> &[Bucket] {
        &self.buckets[r.index()]
    }
}

/// Changes whenever a series' data changes. A syncer remembers the version
/// it saved; a different version means there is something new to save.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeriesVersion {
    pub(crate) seq: u64,
    pub(crate) minute: i64,
    pub(crate) count: u64,
    /// Sum of the writer stripes' sequence numbers (each only grows).
    pub(crate) stripes: u64,
}
