//! What of a pending minute is accounted for: kept in the unsaved-bucket
//! buffer, counted dropped, or saved as it is.
//!
//! A pending minute (the shared accumulator's or a writer stripe's, not yet
//! folded into the rings) can lose its place at some resolution before it
//! folds: another thread's newer bucket takes the ring slot its bucket
//! maps to. The eviction (`series.rs`, `evict`) keeps that bucket, with the
//! pending minute's observations so far, in the unsaved buffer (`spill.rs`)
//! and marks here how many observations it kept, per resolution. When the
//! minute folds, its slot at that resolution holds the newer bucket (slot
//! tags only grow): the fold skips it there and counts as stale only what
//! was recorded after the mark. A syncer's read that finds such a minute
//! does not wait for the fold (its thread may never record again): it
//! counts the rest as stale at once and moves the mark up (`settle` in
//! `series.rs`). So a mark is what of the minute is accounted for, kept or
//! counted, and an observation is kept or counted dropped exactly once.
//!
//! A stripe's mark also remembers the stripe's `seq` at the last saved read
//! that found every stripe as that read showed it (`saved`): while
//! the stripe's `seq` has not moved since, its pending minute is saved as it
//! is, and an eviction does not push it again (nor count it lost when the
//! buffer is full).
//!
//! Each pending minute has one [`Mark`]: stripe `w` of series `i` at
//! `w * capacity + i`, the shared accumulator of series `i` at
//! `writers * capacity + i`. Marks are read and written only under the
//! series' exclusive section (`series.rs`), so relaxed atomics suffice; they
//! are atomics so that the array can be shared. A mark costs nothing on the
//! record path: it is touched only by an eviction that meets a pending
//! minute and by the fold that finds its slot taken.

use crate::Resolution;
use crate::sync::{AtomicU64, Ordering};

/// Observations of one pending minute accounted for (kept in the unsaved
/// buffer or counted stale) where its slot took a newer bucket, per
/// resolution (0: none); and, for a stripe, the `seq` a saved read showed.
#[derive(Debug)]
pub(crate) struct Mark {
    kept: [AtomicU64; 4],
    /// A stripe's (even) `seq` when a saved read showed its pending minute;
    /// 0: none.
    saved: AtomicU64,
}

// SAFETY: `Mark` holds only std atomics, valid at zero; 0 is "nothing kept".
unsafe impl crate::mem::Zeroable for Mark {
    #[cfg(loom)]
    fn empty() -> Self {
        Mark {
            kept: std::array::from_fn(|_| AtomicU64::new(0)),
            saved: AtomicU64::new(0),
        }
    }
}

impl Mark {
    /// The pending minute's first `count` observations are accounted for
    /// at `r` (under the series' exclusive section).
    pub(crate) fn set(&self, r: Resolution, count: u64) {
        self.kept[r.index()].store(count, Ordering::Relaxed);
    }

    /// How many of the minute's observations are accounted for at `r`,
    /// forgetting them (under the exclusive section).
    pub(crate) fn take(&self, r: Resolution) -> u64 {
        let kept = self.kept[r.index()].load(Ordering::Relaxed);
        if kept != 0 {
            self.kept[r.index()].store(0, Ordering::Relaxed);
        }
        kept
    }

    /// A saved read showed the stripe's pending minute at stripe `seq`.
    pub(crate) fn set_saved(&self, seq: u64) {
        if self.saved.load(Ordering::Relaxed) != seq {
            self.saved.store(seq, Ordering::Relaxed);
        }
    }

    /// Whether the stripe's pending minute at `seq` is saved as it is.
    pub(crate) fn is_saved(&self, seq: u64) -> bool {
        seq != 0 && self.saved.load(Ordering::Relaxed) == seq
    }

    /// Nothing counts as saved any more (another target).
    pub(crate) fn forget_saved(&self) {
        if self.saved.load(Ordering::Relaxed) != 0 {
            self.saved.store(0, Ordering::Relaxed);
        }
    }

    /// The pending minute was discarded unfolded (a fork child's repair):
    /// nothing of a later minute is kept. Writes only a set mark, so the
    /// pages of marks never set stay untouched.
    pub(crate) fn clear(&self) {
        for r in Resolution::ALL {
            self.take(r);
        }
    }
}
