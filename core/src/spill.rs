//! Buckets pushed out of a ring before they were saved.
//!
//! A ring holds a fixed number of buckets per resolution; when a newer
//! bucket takes a slot, the older one leaves the ring. Once a syncer has
//! attached ([`Spill::activate`]), an older bucket that changed since the
//! series' last save (its slot's stamp is newer than the series' saved
//! version: see `series.rs`) is pushed here instead of vanishing, and the
//! syncer drains it with the rest of its next flush. So a database outage,
//! or a `sync_interval` longer than the ring, loses nothing while this
//! buffer has room, as Chancy's plugin loses nothing while its
//! `max_buffered_points` allow; past that the bucket is dropped and
//! counted ([`crate::Drops::unsaved`]).
//!
//! # Protocol
//! A bounded queue with many producers and one consumer, over lazily
//! zeroed entries. A producer (a fold, under its series' `EXCLUSIVE`)
//! reserves position `p` with a compare-and-swap of `head` while
//! `head - tail + held < capacity` (`held`: drained buckets the consumer
//! keeps until saved), writes entry `p % capacity`, then publishes
//! it by storing its lap `p / capacity + 1` in the entry's `ready` with
//! release. The consumer reads entries from `tail` while their `ready`
//! holds their lap, and frees each by storing `tail + 1` with release;
//! a producer's acquire load of `tail` orders its writes after the
//! consumer's reads of the entry it reuses. An entry a producer has
//! reserved but not yet published stops the drain there until the next
//! one. No allocation, no lock on the producer side (checked with loom in
//! `tests/loom.rs`).

use crate::Resolution;
use crate::bucket::Bucket;
use crate::mem::Zeroed;
use crate::sync::{AtomicI64, AtomicU64, Ordering, b, f};

/// One spilled bucket (all fields zero when never written).
#[derive(Debug)]
pub(crate) struct Entry {
    /// The lap (`position / capacity + 1`) whose bucket the entry holds,
    /// once published; 0 = never written.
    ready: AtomicU64,
    /// `series id | resolution index << 32`.
    series: AtomicU64,
    start: AtomicI64,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    last: AtomicU64,
    sampled_at: AtomicI64,
}

// SAFETY: only std atomics, valid at zero; `ready == 0` is "never written".
unsafe impl crate::mem::Zeroable for Entry {
    #[cfg(loom)]
    fn empty() -> Self {
        Entry {
            ready: AtomicU64::new(0),
            series: AtomicU64::new(0),
            start: AtomicI64::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            last: AtomicU64::new(0),
            sampled_at: AtomicI64::new(0),
        }
    }
}

/// An aggregator's buffer of unsaved buckets that left their ring.
pub(crate) struct Spill {
    entries: Zeroed<Entry>,
    /// Next position a producer reserves.
    head: AtomicU64,
    /// Next position the consumer reads; written only by the consumer.
    tail: AtomicU64,
    /// Drained buckets the consumer still holds unsaved: they count
    /// against the capacity too, so at most `capacity` unsaved buckets
    /// are kept in all. Written only by the consumer.
    held: AtomicU64,
    /// Set once a syncer attached: before that, the rings are the only
    /// retention (an aggregator nobody saves keeps nothing here).
    active: AtomicU64,
    /// One consumer at a time.
    #[cfg(not(loom))]
    consumer: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("capacity", &self.entries.len())
            .field("queued", &self.len())
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}

impl Spill {
    /// A buffer for `capacity` buckets (0: none is kept).
    pub(crate) fn new(capacity: usize) -> Result<Spill, crate::Error> {
        Ok(Spill {
            entries: Zeroed::new(capacity, "unsaved bucket buffer")?,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            held: AtomicU64::new(0),
            active: AtomicU64::new(0),
            #[cfg(not(loom))]
            consumer: std::sync::Mutex::new(()),
        })
    }

    /// From now on, keep unsaved buckets that leave a ring.
    pub(crate) fn activate(&self) {
        self.active.store(1, Ordering::Relaxed);
    }

    /// Whether unsaved buckets that leave a ring are kept.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }

    /// Buckets waiting to be drained.
    pub(crate) fn len(&self) -> usize {
        let t = self.tail.load(Ordering::Acquire);
        self.head.load(Ordering::Acquire).saturating_sub(t) as usize
    }

    /// Keep `bucket` of series `id` at `r`; false when the buffer is full.
    pub(crate) fn push(&self, id: u32, r: Resolution, bucket: &Bucket) -> bool {
        let cap = self.entries.len() as u64;
        if cap == 0 {
            return false;
        }
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            // `tail` first: the consumer counts a bucket in `held` before
            // it frees its entry, so this never undercounts.
            let t = self.tail.load(Ordering::Acquire);
            if h - t + self.held.load(Ordering::Relaxed) >= cap {
                return false;
            }
            match self
                .head
                .compare_exchange_weak(h, h + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => h = x,
            }
        }
        let e = &self.entries[(h % cap) as usize];
        e.series.store(id as u64 | (r.index() as u64) << 32, Ordering::Relaxed);
        e.start.store(bucket.start, Ordering::Relaxed);
        e.count.store(bucket.count, Ordering::Relaxed);
        e.sum.store(b(bucket.sum), Ordering::Relaxed);
        e.min.store(b(bucket.min), Ordering::Relaxed);
        e.max.store(b(bucket.max), Ordering::Relaxed);
        e.last.store(b(bucket.last), Ordering::Relaxed);
        e.sampled_at.store(bucket.sampled_at, Ordering::Relaxed);
        e.ready.store(h / cap + 1, Ordering::Release);
        true
    }

    /// Hand every published bucket to `take`, oldest first, and free their
    /// entries; each counts as held until [`Spill::set_held`] says
    /// otherwise. Returns how many.
    pub(crate) fn drain(&self, mut take: impl FnMut(u32, Resolution, Bucket)) -> usize {
        #[cfg(not(loom))]
        let _one = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.entries.len() as u64;
        if cap == 0 {
            return 0;
        }
        let mut t = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let mut n = 0;
        while t < head {
            let e = &self.entries[(t % cap) as usize];
            if e.ready.load(Ordering::Acquire) != t / cap + 1 {
                break; // reserved, not yet published
            }
            let series = e.series.load(Ordering::Relaxed);
            let bucket = Bucket {
                start: e.start.load(Ordering::Relaxed),
                count: e.count.load(Ordering::Relaxed),
                sum: f(e.sum.load(Ordering::Relaxed)),
                min: f(e.min.load(Ordering::Relaxed)),
                max: f(e.max.load(Ordering::Relaxed)),
                last: f(e.last.load(Ordering::Relaxed)),
                sampled_at: e.sampled_at.load(Ordering::Relaxed),
            };
            t += 1;
            self.held.fetch_add(1, Ordering::Relaxed);
            self.tail.store(t, Ordering::Release);
            n += 1;
            take(series as u32, Resolution::ALL[(series >> 32) as usize & 3], bucket);
        }
        n
    }

    /// The consumer holds `n` drained buckets unsaved.
    pub(crate) fn set_held(&self, n: usize) {
        self.held.store(n as u64, Ordering::Relaxed);
    }

    /// Bytes reserved.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.bytes()
    }
}
