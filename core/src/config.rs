//! Sizes fixed at construction. Everything the aggregator will ever use is
//! allocated from these numbers in [`crate::Aggregator::new`].

use crate::Resolution;
use crate::error::Error;

/// Chancy's default bucket counts per resolution: 1 hour of minutes, a day
/// of 5-minute buckets, a week of hours, 90 days.
pub const DEFAULT_BUCKETS: [usize; 4] = [60, 288, 168, 90];

/// Default writer stripes per series ([`Config::writers`]).
pub const DEFAULT_WRITERS: usize = 8;
/// Largest accepted [`Config::writers`].
pub const MAX_WRITERS: usize = crate::series::MAX_WRITERS;

/// Largest accepted bucket count per resolution.
pub const MAX_BUCKETS: usize = 1 << 20;
/// Largest accepted series capacity.
pub const MAX_SERIES: usize = 1 << 24;

/// Aggregator sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How many distinct series can be registered. Default 4,096.
    pub capacity: usize,
    /// Bytes reserved for keys and units together. Default
    /// `capacity * 96 + 1280` (always room for one longest key and unit).
    pub key_bytes: usize,
    /// Ring depth per resolution, finest first. Chancy's defaults
    /// (60 / 288 / 168 / 90) keep full history in memory; with a syncer
    /// persisting chunks, a few chunks (say 24 / 24 / 24 / 12) suffice.
    pub buckets: [usize; 4],
    /// How far ahead of the clock an explicit timestamp may be, in seconds
    /// (clock skew between machines). Later records are refused as
    /// [`crate::DropReason::InvalidTimestamp`]. Default 60.
    pub max_future_secs: i64,
    /// Writer stripes per series (0..=64). The first `writers` threads of
    /// the process that record (numbered from 0, a number reused after its
    /// thread exits) each record into a stripe of their own, with plain
    /// stores and no contention; further threads share an atomic
    /// accumulator. Each stripe is 64 bytes per series, resident only once
    /// its thread records into that series. Default 8.
    pub writers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::with_capacity(4096)
    }
}

impl Config {
    /// Defaults for `capacity` series.
    pub fn with_capacity(capacity: usize) -> Self {
        Config {
            capacity,
            key_bytes: capacity.saturating_mul(96).saturating_add(1280),
            buckets: DEFAULT_BUCKETS,
            max_future_secs: 60,
            writers: DEFAULT_WRITERS,
        }
    }

    /// Set the ring depth of one resolution.
    pub fn buckets_for(mut self, resolution: Resolution, buckets: usize) -> Self {
        self.buckets[resolution.index()] = buckets;
        self
    }

    /// Ring depths small enough for a syncer that persists chunks: two
    /// chunks (24 buckets) per resolution, 12 days at 1day.
    pub fn persisted(mut self) -> Self {
        self.buckets = [24, 24, 24, 12];
        self
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.capacity == 0 || self.capacity > MAX_SERIES {
            return bad("capacity", format!("must be 1..={MAX_SERIES}, got {}", self.capacity));
        }
        if self.key_bytes == 0 || self.key_bytes > u32::MAX as usize {
            return bad("key_bytes", format!("must be 1..={}, got {}", u32::MAX, self.key_bytes));
        }
        for r in Resolution::ALL {
            let n = self.buckets[r.index()];
            if n == 0 || n > MAX_BUCKETS {
                return bad("buckets", format!("{r} must hold 1..={MAX_BUCKETS} buckets, got {n}"));
            }
        }
        if self.writers > MAX_WRITERS {
            return bad("writers", format!("must be 0..={MAX_WRITERS}, got {}", self.writers));
        }
        if !(0..=86_400).contains(&self.max_future_secs) {
            return bad(
                "max_future_secs",
                format!("must be 0..=86400, got {}", self.max_future_secs),
            );
        }
        Ok(())
    }
}
