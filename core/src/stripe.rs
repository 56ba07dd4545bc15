//! A writer stripe: one thread's private accumulator of a series' minute.
//!
//! Each series has [`crate::Config::writers`] stripes; the thread holding
//! process-wide slot `w` (see `thread_slot.rs`) is the only writer of stripe
//! `w` of every series. Its records for the stripe's minute are plain loads
//! and stores on a cache line no other thread writes: no read-modify-write,
//! no contention, however many threads record into the same series.
//!
//! Readers (snapshots, the syncer) read a stripe as a seqlock: `seq` is odd
//! while the owner writes, and moves by two with every record, so a reader
//! that saw the same even `seq` before and after its reads has a consistent
//! bucket. A reader that keeps failing (the owner records without pause)
//! takes the series' exclusive section and *freezes* the stripe
//! ([`FROZEN`] in `minute`): the owner's next record no longer matches the
//! minute and waits in the slow path for the reader, so the reader's next
//! try succeeds (`series.rs`, "Reading"). The owner folds its stripe into the series' rings itself, under
//! the series' exclusive section (`series.rs`), when it records into a newer
//! minute.

use crate::Kind;
use crate::bucket::Bucket;
use crate::clock::Nanos;
use crate::series::Outcome;
use crate::sync::{AtomicI64, AtomicU64, Ordering, Spin, b, f, fence};

/// Set in `minute` by a reader holding the series' exclusive section: the
/// owner's fast path sees a minute that matches nothing and takes the slow
/// path, which waits for the reader. Minute numbers stay far below it.
pub(crate) const FROZEN: i64 = 1 << 62;

/// One stripe: exactly one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Stripe {
    /// Even when quiet; odd while the owner writes. Moves by two per write,
    /// never backwards, so the sum over stripes is part of a series' version.
    seq: AtomicU64,
    /// Minute number plus one (`floor(unix_secs / 60) + 1`); 0 when empty;
    /// with [`FROZEN`] set while a reader holds the stripe still.
    minute: AtomicI64,
    /// Observations this minute.
    count: AtomicU64,
    /// Sum of values, `f64` bits.
    sum: AtomicU64,
    /// Smallest value, `f64` bits.
    min: AtomicU64,
    /// Largest value, `f64` bits.
    max: AtomicU64,
    /// Value of the latest sample, `f64` bits.
    last: AtomicU64,
    /// Time of the latest sample, nanoseconds.
    sampled_at: AtomicI64,
}

// SAFETY: `Stripe` holds only std atomics, valid at zero; minute 0 and seq 0
// are the documented "empty, never written" state.
unsafe impl crate::mem::Zeroable for Stripe {
    #[cfg(loom)]
    fn empty() -> Self {
        Stripe::new()
    }
}

/// A stripe's contents, read by its owner or through the seqlock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StripeData {
    /// As [`Stripe::minute`]: minute plus one, 0 when empty.
    pub(crate) minute: i64,
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) last: f64,
    pub(crate) sampled_at: Nanos,
}

impl StripeData {
    /// The minute's bucket (1min resolution), if it holds observations.
    pub(crate) fn bucket(&self) -> Option<Bucket> {
        (self.minute != 0 && self.count > 0).then(|| Bucket {
            start: (self.minute - 1) * 60,
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            last: self.last,
            sampled_at: self.sampled_at,
        })
    }
}

/// A stripe that was never written.
const EMPTY: StripeData = StripeData {
    minute: 0,
    count: 0,
    sum: 0.0,
    min: 0.0,
    max: 0.0,
    last: 0.0,
    sampled_at: 0,
};

impl Stripe {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Stripe {
            seq: AtomicU64::new(0),
            minute: AtomicI64::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            last: AtomicU64::new(0),
            sampled_at: AtomicI64::new(0),
        }
    }

    /// The stripe's minute (owner only: it reads its own writes), with
    /// [`FROZEN`] set while a reader holds it.
    #[inline]
    pub(crate) fn minute(&self) -> i64 {
        self.minute.load(Ordering::Relaxed)
    }

    /// Owner only, without the exclusive section: start `minute` (plus one)
    /// with `v` in an empty stripe whose minute was `current`. False (and
    /// nothing changed but `seq`) if a reader froze the stripe meanwhile.
    pub(crate) fn try_start(&self, current: i64, minute: i64, v: f64, at: Nanos) -> bool {
        let seq = self.begin();
        let started = self
            .minute
            .compare_exchange(current, minute, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if started {
            self.fill(v, at);
        }
        self.end(seq);
        started
    }

    /// The stripe's sequence number (odd while its owner writes; what a
    /// consistent read returns with the data).
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// A reader holding the series' exclusive section: hold the owner's
    /// fast path off (see [`FROZEN`]).
    pub(crate) fn freeze(&self) {
        self.minute.fetch_or(FROZEN, Ordering::SeqCst);
    }

    /// Undo [`Stripe::freeze`] (before the exclusive section ends).
    pub(crate) fn unfreeze(&self) {
        if self.minute.load(Ordering::Relaxed) & FROZEN != 0 {
            self.minute.fetch_and(!FROZEN, Ordering::SeqCst);
        }
    }

    /// A fork child's repair (`fork.rs`): empty the stripe of a writer that
    /// does not exist in this process (its owner can never write again).
    pub(crate) fn discard(&self) {
        let seq = self.begin();
        self.minute.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.end(seq);
    }

    /// Owner only: add `v` observed at `at` to the stripe's minute.
    #[inline]
    pub(crate) fn record(&self, kind: Kind, v: f64, at: Nanos) -> Outcome {
        let mut sum = f(self.sum.load(Ordering::Relaxed)) + v;
        if !sum.is_finite() {
            if kind != Kind::Gauge {
                return Outcome::Overflow;
            }
            // A gauge's sum is informational only: saturate, never drop.
            sum = sum.clamp(f64::MIN, f64::MAX);
        }
        let seq = self.begin();
        self.count
            .store(self.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.sum.store(b(sum), Ordering::Relaxed);
        if v < f(self.min.load(Ordering::Relaxed)) {
            self.min.store(b(v), Ordering::Relaxed);
        }
        if v > f(self.max.load(Ordering::Relaxed)) {
            self.max.store(b(v), Ordering::Relaxed);
        }
        let sampled_at = self.sampled_at.load(Ordering::Relaxed);
        if kind == Kind::Gauge {
            // The latest sample wins; a tie goes to the later record.
            if at >= sampled_at {
                self.last.store(b(v), Ordering::Relaxed);
                self.sampled_at.store(at, Ordering::Relaxed);
            }
        } else {
            self.last.store(b(v), Ordering::Relaxed);
            if at > sampled_at {
                self.sampled_at.store(at, Ordering::Relaxed);
            }
        }
        self.end(seq);
        Outcome::Stored
    }

    /// Owner only, under the series' exclusive section: empty the stripe
    /// and start `minute` (plus one) with `v`.
    pub(crate) fn restart(&self, minute: i64, v: f64, at: Nanos) {
        let seq = self.begin();
        self.minute.store(minute, Ordering::Relaxed);
        self.fill(v, at);
        self.end(seq);
    }

    /// The fields of a minute holding only `v` (inside a write).
    fn fill(&self, v: f64, at: Nanos) {
        self.count.store(1, Ordering::Relaxed);
        self.sum.store(b(v), Ordering::Relaxed);
        self.min.store(b(v), Ordering::Relaxed);
        self.max.store(b(v), Ordering::Relaxed);
        self.last.store(b(v), Ordering::Relaxed);
        self.sampled_at.store(at, Ordering::Relaxed);
    }

    /// Owner only: the stripe's contents (its own writes, no seqlock).
    pub(crate) fn own(&self) -> StripeData {
        self.load()
    }

    /// Seqlock writer entry: `seq` odd before any field store. Returns the
    /// odd value. (`| 1` rather than `+ 1`: the same cost, and a `seq` left
    /// odd by a writer that died in a fork child's copy becomes even again
    /// at the next write instead of staying inverted.)
    #[inline]
    fn begin(&self) -> u64 {
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        // Orders the odd `seq` before the field stores for a reader that
        // validates with an acquire fence (a compiler barrier on x86).
        fence(Ordering::Release);
        odd
    }

    /// Seqlock writer exit: `seq` even again (and larger than ever before),
    /// after every field store.
    #[inline]
    fn end(&self, odd: u64) {
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    fn load(&self) -> StripeData {
        StripeData {
            minute: self.minute.load(Ordering::Relaxed) & !FROZEN,
            count: self.count.load(Ordering::Relaxed),
            sum: f(self.sum.load(Ordering::Relaxed)),
            min: f(self.min.load(Ordering::Relaxed)),
            max: f(self.max.load(Ordering::Relaxed)),
            last: f(self.last.load(Ordering::Relaxed)),
            sampled_at: self.sampled_at.load(Ordering::Relaxed),
        }
    }

    /// Under the series' exclusive section: a consistent copy of stripe `w`
    /// and its `seq`, frozen for the read (at most the owner's one write in
    /// flight) unless a reader froze it already.
    pub(crate) fn read_held(&self, w: usize) -> (StripeData, u64) {
        let frozen = self.minute() & FROZEN != 0;
        if !frozen {
            self.freeze();
        }
        let read = self.read(w, None).expect("an unbounded stripe read always succeeds");
        if !frozen {
            self.unfreeze();
        }
        read
    }

    /// Any thread: a consistent copy of stripe `w` (of its series) and the
    /// `seq` it was read at. With `tries`, gives up (`None`) after that
    /// many inconsistent reads; without, retries until it succeeds, which
    /// is bounded only when the stripe is frozen (at most the owner's one
    /// write in flight). A stripe left mid-write by a writer that died in a
    /// fork (`fork.rs`) never changes again and reads as empty.
    #[inline]
    pub(crate) fn read(&self, w: usize, tries: Option<u32>) -> Option<(StripeData, u64)> {
        let spin = Spin::new();
        let mut left = tries.unwrap_or(u32::MAX);
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 == 0 {
                // Never written (every write moves `seq`): nothing to read.
                return Some((EMPTY, 0));
            }
            if s1 & 1 == 0 {
                let data = self.load();
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return Some((data, s1));
                }
            } else if crate::thread_slot::is_dead(w) {
                return Some((EMPTY, s1));
            }
            if tries.is_some() {
                left -= 1;
                if left == 0 {
                    return None;
                }
            }
            spin.wait();
        }
    }
}
