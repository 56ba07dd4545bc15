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
/// Default [`Config::spill`].
pub const DEFAULT_SPILL: usize = 10_000;
/// Largest accepted [`Config::spill`].
pub const MAX_SPILL: usize = 1 << 26;

/// Largest accepted series capacity.
pub const MAX_SERIES: usize = 1 << 24;
/// Largest accepted [`Config::key_bytes`] (offsets are 32-bit).
pub const MAX_KEY_BYTES: usize = u32::MAX as usize;
/// Largest total the aggregator may reserve, 1 TiB of address space
/// ([`Config::reserved_bytes`]). Reserved memory is not resident: only pages
/// of series in use are (a 1,000,000-series aggregator of the defaults
/// reserves about 40 GB and is a few MiB resident). A configuration above
/// it is refused as [`Error::InvalidConfig`] naming `capacity`.
pub const MAX_RESERVED_BYTES: usize = 1 << 40;

/// Aggregator sizes. Each field has its cap (`MAX_SERIES`, `MAX_KEY_BYTES`,
/// `MAX_BUCKETS`, `MAX_WRITERS`) and the arrays they size together have
/// one more ([`MAX_RESERVED_BYTES`]); [`Config::validate`] checks all of
/// them with checked arithmetic before anything is allocated.
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
    /// Unsaved buckets kept after a newer bucket took their ring slot,
    /// until a syncer saves them (a database outage, or flushes further
    /// apart than a ring is deep). Used only once a syncer has attached;
    /// past it, such a bucket is dropped and counted
    /// ([`crate::Drops::unsaved`]). 72 bytes each, reserved lazily (pages
    /// are touched only as outages push buckets through it). Default 10,000, Chancy's default
    /// `max_buffered_points`; at most [`MAX_SPILL`].
    pub spill: usize,
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
            spill: DEFAULT_SPILL,
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
        if self.key_bytes == 0 || self.key_bytes > MAX_KEY_BYTES {
            return bad(
                "key_bytes",
                format!("must be 1..={MAX_KEY_BYTES}, got {}", self.key_bytes),
            );
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
        if self.spill > MAX_SPILL {
            return bad("spill", format!("must be 0..={MAX_SPILL}, got {}", self.spill));
        }
        if !(0..=86_400).contains(&self.max_future_secs) {
            return bad(
                "max_future_secs",
                format!("must be 0..=86400, got {}", self.max_future_secs),
            );
        }
        match self.sizes() {
            Some(s) if s.total <= MAX_RESERVED_BYTES => Ok(()),
            total => bad(
                "capacity",
                format!(
                    "{} series with key_bytes {}, buckets {:?} and {} writers need {} bytes, above the \
                     {MAX_RESERVED_BYTES}-byte cap (MAX_RESERVED_BYTES)",
                    self.capacity,
                    self.key_bytes,
                    self.buckets,
                    self.writers,
                    total.map_or_else(|| "more than usize::MAX".to_owned(), |s| s.total.to_string()),
                ),
            ),
        }
    }

    /// Bytes of address space an aggregator of this configuration reserves
    /// (all its arrays), or `None` when that overflows `usize`. Resident
    /// memory is far lower: a series' pages are touched once it is used.
    pub fn reserved_bytes(&self) -> Option<usize> {
        self.sizes().map(|s| s.total)
    }

    /// Element counts of every array, and their bytes in total, each with
    /// checked arithmetic.
    pub(crate) fn sizes(&self) -> Option<Sizes> {
        let c = self.capacity;
        let table = c.checked_mul(2)?.checked_next_power_of_two()?.max(2);
        let mut rings = [0usize; 4];
        for (n, depth) in rings.iter_mut().zip(self.buckets) {
            *n = c.checked_mul(depth)?;
        }
        let stripes = c.checked_mul(self.writers)?;
        let marks = stripes.checked_add(c)?;
        let mut total = c.checked_mul(size_of::<crate::series::PaddedAccumulator>())?;
        for n in rings {
            total = total.checked_add(n.checked_mul(size_of::<crate::series::Slot>())?)?;
        }
        total = total
            .checked_add(stripes.checked_mul(size_of::<crate::stripe::Stripe>())?)?
            .checked_add(marks.checked_mul(size_of::<crate::mark::Mark>())?)?
            .checked_add(table.checked_mul(8)?)?
            .checked_add(c.checked_mul(8)?)?
            .checked_add(self.key_bytes)?
            .checked_add(self.spill.checked_mul(size_of::<crate::spill::Entry>())?)?;
        Some(Sizes {
            table,
            rings,
            stripes,
            marks,
            total,
        })
    }
}

/// Element counts of the aggregator's arrays (see [`Config::sizes`]).
pub(crate) struct Sizes {
    /// Registry hash table entries.
    pub(crate) table: usize,
    /// Ring slots per resolution.
    pub(crate) rings: [usize; 4],
    /// Writer stripes.
    pub(crate) stripes: usize,
    /// Pending-minute marks: one per stripe and per shared accumulator.
    pub(crate) marks: usize,
    /// Bytes of every array together.
    pub(crate) total: usize,
}
