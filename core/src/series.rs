//! One series' storage and the record / rollover protocol.
//!
//! # Layout
//! Each series has one hot [`Accumulator`] for the current minute and, per
//! resolution, a ring of [`Slot`]s (bucket `b` lives in slot `b % depth`).
//! A record for the accumulator's minute touches only the accumulator: three
//! atomic read-modify-writes, whatever the number of resolutions.
//!
//! # Protocol
//! The accumulator's `stamp` packs `[count: 55 | EXCLUSIVE: 1 | writers: 8]`.
//! * **Fast path** (record for the current minute): `fetch_add` a writer;
//!   if `EXCLUSIVE` is clear and the minute still matches, update the fields
//!   and leave with one `fetch_add` that adds one to `count` and removes the
//!   writer. Writers never wait for each other.
//! * **Exclusive path** (the minute rolled over, a late or future record):
//!   set `EXCLUSIVE`, wait for in-flight writers to leave, bump `seq` to odd,
//!   fold the finished minute into every ring (or apply the late record to
//!   the rings), reset the accumulator, bump `seq` to even, clear `EXCLUSIVE`.
//!   New fast-path writers that see `EXCLUSIVE` back out and retry, so a
//!   writer delayed across a rollover can never land in the wrong minute.
//!   This is the one place a recording thread waits: for a fold (a few dozen
//!   stores, once a minute per series) or for a late record's ring update.
//! * **Readers** check `seq` around their ring reads and `stamp` around their
//!   accumulator read (seqlock style) and retry on any change, so a snapshot
//!   never mixes two states of a bucket. The retries are bounded: see
//!   "Reading".
//!
//! # Writer stripes
//! A thread that owns a writer slot (`thread_slot.rs`) does not use the
//! shared accumulator at all: it records into its own [`Stripe`] of the
//! series with plain stores (`stripe.rs`). When it records into a newer
//! minute it folds its stripe into the rings under `EXCLUSIVE` (bumping
//! `seq`, so readers retry), exactly as a shared-path rollover folds the
//! accumulator; a late or future record goes to the rings under `EXCLUSIVE`
//! too. The shared accumulator serves threads beyond
//! [`crate::Config::writers`].
//!
//! # Reading
//! A read shows each ring as it will be once every pending minute (the
//! shared accumulator's and every stripe's) is folded in: a pending bucket
//! merges into its slot's bucket, replaces an older bucket there, and is
//! hidden if the slot already holds a newer one. So a ring of depth `n`
//! never shows more than `n` buckets.
//!
//! A reader tries [`OPTIMISTIC_READS`] times without writing anything. If
//! writers changed the series under every try (each shared-path record
//! changes `stamp`, each stripe record its stripe's `seq`), it takes
//! `EXCLUSIVE` itself, as a fold does, without moving `seq` (it changes
//! nothing): shared-path writers back out and wait, in-flight ones drain,
//! no fold can start, and it freezes each writer stripe (`stripe.rs`) so the
//! stripe's owner waits at its next record. Under that, the accumulator and
//! rings cannot change and each stripe changes at most once more (a record
//! already past its minute check), so the read completes: at most
//! `OPTIMISTIC_READS + 1` tries of the whole series, whatever the writers
//! do (checked with loom in `tests/loom.rs`). Writers wait for one read.
//!
//! Ring slots are written only by the holder of `EXCLUSIVE`; they are atomics
//! only so that concurrent seqlock readers are well defined.
//!
//! # Fork
//! See `fork.rs`: the accumulator's `generation` tells whether its state was
//! copied from a parent process mid-flight, and the child's first user
//! repairs it before anything else.

use crate::bucket::{Bucket, SeriesData, SeriesVersion};
use crate::clock::Nanos;
use crate::drops::DropCounters;
use crate::mark::Mark;
use crate::mem::Zeroed;
use crate::spill::Spill;
use crate::stripe::Stripe;
use crate::sync::{AtomicI64, AtomicPair, AtomicU64, Ordering, Spin, b, f, fence};
use crate::{Kind, Resolution, fork, thread_slot};

const WRITER_ONE: u64 = 1;
const WRITERS_MASK: u64 = 0xFF;
/// Writers back off past this many in flight, so the 8-bit field never
/// carries into `EXCLUSIVE` even with 127 more racing increments.
const WRITERS_LIMIT: u64 = 0x80;
const EXCLUSIVE: u64 = 1 << 8;
const COUNT_SHIFT: u32 = 9;
const COUNT_ONE: u64 = 1 << COUNT_SHIFT;

const NANOS: i64 = 1_000_000_000;

/// Optimistic tries of a read before it takes `EXCLUSIVE` (see "Reading").
#[cfg(not(loom))]
pub const OPTIMISTIC_READS: u32 = 8;
/// Under loom one try, so the models reach the locked read.
#[cfg(loom)]
pub const OPTIMISTIC_READS: u32 = 1;
/// Inconsistent reads of one stripe that fail an optimistic try.
const STRIPE_TRIES: u32 = 4;
/// `Accumulator::generation` while a fork child's thread repairs the series.
const REPAIRING: u64 = 1 << 63;

/// The accumulator of a series' current minute. Hot: one per series, on its
/// own cache line(s) so writers of different series never share a line.
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// `[count: 55 | EXCLUSIVE: 1 | writers: 8]`. `count` is the number of
    /// records completed into the current minute; `writers` the fast-path
    /// writers inside their update; `EXCLUSIVE` is held during a fold or a
    /// ring update.
    stamp: AtomicU64,
    /// Current minute number plus one (`floor(unix_secs / 60) + 1`); 0 when
    /// the accumulator has never held a minute. Changed only under
    /// `EXCLUSIVE`.
    minute: AtomicI64,
    /// Sum of values this minute, `f64` bits.
    sum: AtomicU64,
    /// Smallest value this minute, `f64` bits (+inf when empty).
    min: AtomicU64,
    /// Largest value this minute, `f64` bits (-inf when empty).
    max: AtomicU64,
    /// Last value stored by a counter or histogram record, `f64` bits.
    last: AtomicU64,
    /// Latest sample time this minute, nanoseconds.
    sampled_at: AtomicI64,
    /// Gauges only: `(sampled_at << 64) | value bits`, replaced as one so a
    /// gauge's value and time always belong together.
    pair: AtomicPair,
    /// Even when the rings are quiet; odd while the `EXCLUSIVE` holder
    /// writes them. Readers retry when it moved.
    seq: AtomicU64,
    /// The fork generation (`fork.rs`) this state belongs to, with
    /// [`REPAIRING`] while a child's thread repairs it. 0 in the original
    /// process, so zeroed memory is current there.
    generation: AtomicU64,
    /// While `EXCLUSIVE` is held to fold a writer stripe: its slot plus
    /// one; otherwise 0. Lets a fork child discard a fold caught mid-way.
    folding: AtomicU64,
    /// One more than the `seq` of the last read a syncer saved
    /// ([`SeriesRef::mark_saved`]; 0: none): every ring slot stamped below
    /// it was saved as it is. With the read's `minute`, `count` and
    /// `stripes` below (all written under `EXCLUSIVE`), a fold can tell
    /// that the pending minute it folds was saved as it is, too.
    saved: AtomicU64,
    saved_minute: AtomicI64,
    saved_count: AtomicU64,
    saved_stripes: AtomicU64,
}

/// An accumulator on its own cache line(s), as the aggregator stores them.
pub(crate) type PaddedAccumulator = crossbeam_utils::CachePadded<Accumulator>;

// SAFETY: `Accumulator` holds only std atomics and a
// `portable_atomic::AtomicU128`, all valid at zero bits; `CachePadded` only
// adds alignment. Zero is the documented "never used" state (minute 0).
unsafe impl crate::mem::Zeroable for PaddedAccumulator {
    #[cfg(loom)]
    fn empty() -> Self {
        crossbeam_utils::CachePadded::new(Accumulator::new())
    }
}

// SAFETY: `Slot` holds only std atomics, valid at zero; bucket tag 0 is the
// documented "never used" state.
unsafe impl crate::mem::Zeroable for Slot {
    #[cfg(loom)]
    fn empty() -> Self {
        Slot::new()
    }
}

/// One ring slot: a bucket's absolute values, tagged with its bucket.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Bucket number plus one; 0 = never used. Only ever increases, so a
    /// stale slot (older bucket) reads as empty for the newer bucket.
    bucket: AtomicI64,
    /// Observations.
    count: AtomicU64,
    /// Sum, `f64` bits.
    sum: AtomicU64,
    /// Minimum, `f64` bits.
    min: AtomicU64,
    /// Maximum, `f64` bits.
    max: AtomicU64,
    /// Value of the latest sample, `f64` bits.
    last: AtomicU64,
    /// Time of the latest sample, nanoseconds.
    sampled_at: AtomicI64,
    /// The series' (odd) `seq` when the slot last changed: saved if below
    /// the series' saved read ([`Accumulator::saved`]).
    stamp: AtomicU64,
}

impl Accumulator {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Accumulator {
            stamp: AtomicU64::new(0),
            minute: AtomicI64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            last: AtomicU64::new(0),
            sampled_at: AtomicI64::new(0),
            pair: AtomicPair::new(0),
            seq: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            folding: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            saved_minute: AtomicI64::new(0),
            saved_count: AtomicU64::new(0),
            saved_stripes: AtomicU64::new(0),
        }
    }
}

impl Slot {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Slot {
            bucket: AtomicI64::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            last: AtomicU64::new(0),
            sampled_at: AtomicI64::new(0),
            stamp: AtomicU64::new(0),
        }
    }

    /// The slot's values if it holds bucket `bucket`.
    fn read(&self, bucket: i64, r: Resolution) -> Option<Bucket> {
        if self.bucket.load(Ordering::Relaxed) != bucket + 1 {
            return None;
        }
        let count = self.count.load(Ordering::Relaxed);
        (count > 0).then(|| Bucket {
            start: r.bucket_start(bucket),
            count,
            sum: f(self.sum.load(Ordering::Relaxed)),
            min: f(self.min.load(Ordering::Relaxed)),
            max: f(self.max.load(Ordering::Relaxed)),
            last: f(self.last.load(Ordering::Relaxed)),
            sampled_at: self.sampled_at.load(Ordering::Relaxed),
        })
    }
}

/// A view of one series: its accumulator and its four rings. The ring
/// slices are computed on demand: the fast path never needs them.
pub(crate) struct SeriesRef<'a> {
    pub(crate) acc: &'a Accumulator,
    /// Every series' slots, per resolution.
    pub(crate) all_rings: &'a [Zeroed<Slot>; 4],
    /// Ring depth per resolution.
    pub(crate) depths: &'a [usize; 4],
    /// Every series' writer stripes: stripe `w` of series `i` is
    /// `all_stripes[w * capacity + i]`.
    pub(crate) all_stripes: &'a [Stripe],
    /// Every pending minute's mark (`mark.rs`): stripe `w` of series `i`'s
    /// at `w * capacity + i`, the shared accumulator's after every stripe's.
    pub(crate) all_marks: &'a [Mark],
    /// Series capacity (the stride between stripe rows).
    pub(crate) capacity: usize,
    pub(crate) id: usize,
    pub(crate) kind: Kind,
    /// Where an unsaved bucket goes when a newer one takes its slot.
    pub(crate) spill: &'a Spill,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored (for a late record: in at least one resolution).
    Stored,
    /// The bucket's sum would overflow; nothing stored.
    Overflow,
    /// A late record stored in no resolution: every ring refused it as
    /// expired or stale (counted per resolution).
    NotStored,
}

/// One observation (or a folded minute) to merge into ring slots.
struct Delta {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    at: Nanos,
}

impl SeriesRef<'_> {
    /// This series' ring at resolution `r`.
    #[inline]
    fn ring(&self, r: Resolution) -> &[Slot] {
        let depth = self.depths[r.index()];
        &self.all_rings[r.index()][self.id * depth..(self.id + 1) * depth]
    }

    /// Record `v` observed at `at`, with the clock at `now`. The caller has
    /// validated `v` and checked `0 <= at <= now + max_future`.
    #[inline]
    pub(crate) fn record(&self, v: f64, at: Nanos, now: Nanos, drops: &DropCounters) -> Outcome {
        let minute = at.div_euclid(NANOS * 60) + 1;
        // The rule of `Aggregator::record_in_stripe` (which the fast path
        // spells out itself: a shared helper costs it ~6 instructions).
        let slot = thread_slot::current() as usize;
        if slot < self.all_stripes.len() / self.capacity
            && let Some(stripe) = self.all_stripes.get(slot * self.capacity + self.id)
        {
            if stripe.minute() == minute {
                return stripe.record(self.kind, v, at);
            }
            return self.record_stripe_slow(slot, stripe, v, at, minute, now, drops);
        }
        self.record_shared(v, at, minute, now, drops)
    }

    /// The writer of stripe `w` records outside the stripe's minute: start
    /// the stripe (lock-free when it is empty), fold it and start a newer
    /// minute, or store a late or future record in the rings. A frozen
    /// stripe (a reader holds `EXCLUSIVE`) lands here too, and waits.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn record_stripe_slow(
        &self,
        w: usize,
        stripe: &Stripe,
        v: f64,
        at: Nanos,
        minute: i64,
        now: Nanos,
        drops: &DropCounters,
    ) -> Outcome {
        let current = stripe.minute();
        let now_minute = now.div_euclid(NANOS * 60) + 1;
        // (A frozen `current` is above every minute: not this branch.)
        if minute > current && minute <= now_minute {
            let pending = stripe.own();
            if (pending.minute == 0 || pending.count == 0) && stripe.try_start(current, minute, v, at) {
                return Outcome::Stored;
            }
        }
        let count = self.lock();
        // Readers unfreeze before they release `EXCLUSIVE`: the minute is
        // the owner's own again.
        let current = stripe.minute();
        let outcome = if minute == current {
            stripe.record(self.kind, v, at)
        } else if minute > current && minute <= now_minute {
            let pending = stripe.own();
            if pending.minute != 0 && pending.count != 0 {
                let d = Delta {
                    count: pending.count,
                    sum: pending.sum,
                    min: pending.min,
                    max: pending.max,
                    last: pending.last,
                    at: pending.sampled_at,
                };
                self.acc.folding.store(w as u64 + 1, Ordering::Relaxed);
                let saved = self.pending_saved(count);
                let mark = self.mark(Some(w));
                self.apply_rings(&d, (pending.minute - 1) * 60 * NANOS, None, saved, Some(mark), drops);
            }
            stripe.restart(minute, v, at);
            self.acc.folding.store(0, Ordering::Relaxed);
            Outcome::Stored
        } else {
            self.store_late(v, at, now, drops)
        };
        self.unlock(count);
        outcome
    }

    /// The shared accumulator's protocol, for threads without a stripe.
    #[inline]
    fn record_shared(&self, v: f64, at: Nanos, minute: i64, now: Nanos, drops: &DropCounters) -> Outcome {
        let acc = self.acc;
        self.check_generation();
        let spin = Spin::new();
        loop {
            if acc.minute.load(Ordering::Relaxed) != minute {
                break;
            }
            let s = acc.stamp.fetch_add(WRITER_ONE, Ordering::Acquire);
            if s & EXCLUSIVE != 0 || s & WRITERS_MASK >= WRITERS_LIMIT {
                // A fold or ring update is running (or too many writers):
                // back out, and retry once it is over without touching the
                // line the holder is writing.
                acc.stamp.fetch_sub(WRITER_ONE, Ordering::Relaxed);
                spin.wait();
                while acc.stamp.load(Ordering::Relaxed) & EXCLUSIVE != 0 {
                    spin.wait();
                }
                continue;
            }
            if acc.minute.load(Ordering::Relaxed) != minute {
                acc.stamp.fetch_sub(WRITER_ONE, Ordering::Relaxed);
                break;
            }
            // Seqlock writer: order the writer increment before the field
            // stores for readers that validate with an acquire fence.
            fence(Ordering::Release);
            let outcome = self.update_acc(v, at);
            let leave = if outcome == Outcome::Stored {
                COUNT_ONE - WRITER_ONE
            } else {
                0u64.wrapping_sub(WRITER_ONE)
            };
            acc.stamp.fetch_add(leave, Ordering::Release);
            return outcome;
        }
        self.record_exclusive(v, at, minute, now, drops)
    }

    /// Field updates of a fast-path write (inside the writer count).
    #[inline]
    fn update_acc(&self, v: f64, at: Nanos) -> Outcome {
        let acc = self.acc;
        let mut cur = acc.sum.load(Ordering::Relaxed);
        loop {
            let mut next = f(cur) + v;
            if !next.is_finite() {
                if self.kind != Kind::Gauge {
                    return Outcome::Overflow;
                }
                // A gauge's sum is informational only: saturate, never drop.
                next = next.clamp(f64::MIN, f64::MAX);
            }
            match acc
                .sum
                .compare_exchange_weak(cur, b(next), Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
        fetch_min(&acc.min, v);
        fetch_max(&acc.max, v);
        if acc.sampled_at.load(Ordering::Relaxed) < at {
            acc.sampled_at.fetch_max(at, Ordering::Relaxed);
        }
        if self.kind == Kind::Gauge {
            let mut cur = acc.pair.load(Ordering::Relaxed);
            loop {
                if ((cur >> 64) as u64 as i64) > at {
                    break; // a later sample is already there
                }
                let next = ((at as u64 as u128) << 64) | b(v) as u128;
                match acc
                    .pair
                    .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(x) => cur = x,
                }
            }
        } else {
            acc.last.store(b(v), Ordering::Relaxed);
        }
        Outcome::Stored
    }

    /// In a fork child, repair the series' state copied mid-flight before
    /// touching it (`fork.rs`). One load and compare; nothing under loom.
    #[inline(always)]
    fn check_generation(&self) {
        #[cfg(not(loom))]
        if self.acc.generation.load(Ordering::Acquire) != fork::generation() {
            self.repair_after_fork();
        }
    }

    /// The first thread of a fork child to use this series: drop the
    /// writer counts of threads that do not exist here, and discard what
    /// they left half written (see `fork.rs`). Other threads wait for it.
    #[cold]
    #[cfg(not(loom))]
    fn repair_after_fork(&self) {
        let acc = self.acc;
        let g = fork::generation();
        let spin = Spin::new();
        loop {
            let cur = acc.generation.load(Ordering::Acquire);
            if cur == g {
                return; // repaired by another thread
            }
            if cur == g | REPAIRING {
                spin.wait();
                continue;
            }
            if acc
                .generation
                .compare_exchange(cur, g | REPAIRING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        // Alone on this series: every thread that wrote it since the
        // generation was current lived in the parent (or an ancestor).
        let s = acc.stamp.load(Ordering::Relaxed);
        let mut count = s >> COUNT_SHIFT;
        if s & (EXCLUSIVE | WRITERS_MASK) != 0 {
            // A record, fold or late record was in flight: the minute may be
            // half updated (or half folded). Discard it; so too the stripe a
            // fold was folding, and any freeze a reader left.
            if s & EXCLUSIVE != 0 {
                let folding = acc.folding.load(Ordering::Relaxed) as usize;
                if folding != 0
                    && let Some(stripe) = self.stripes().nth(folding - 1)
                {
                    stripe.discard();
                    self.mark(Some(folding - 1)).clear();
                }
                for stripe in self.stripes() {
                    stripe.unfreeze();
                }
            }
            acc.minute.store(0, Ordering::Relaxed);
            self.mark(None).clear();
            count = 0;
            let seq = acc.seq.load(Ordering::Relaxed);
            acc.seq.store((seq | 1).wrapping_add(1), Ordering::Relaxed);
        }
        acc.folding.store(0, Ordering::Relaxed);
        acc.stamp.store(count << COUNT_SHIFT, Ordering::Relaxed);
        acc.generation.store(g, Ordering::Release);
    }

    /// Take `EXCLUSIVE`: no fast-path writer is inside, rings are ours.
    /// Moves `seq` to odd (the caller writes the rings).
    fn lock(&self) -> u64 {
        self.lock_with(true)
    }

    /// Take `EXCLUSIVE`; with `writing`, also move `seq` to odd. Pair with
    /// [`SeriesRef::unlock_with`] and the same `writing`.
    fn lock_with(&self, writing: bool) -> u64 {
        let acc = self.acc;
        self.check_generation();
        fork::enter();
        let spin = Spin::new();
        loop {
            let s = acc.stamp.fetch_or(EXCLUSIVE, Ordering::Acquire);
            if s & EXCLUSIVE == 0 {
                break;
            }
            while acc.stamp.load(Ordering::Relaxed) & EXCLUSIVE != 0 {
                spin.wait();
            }
        }
        let mut s = acc.stamp.load(Ordering::Acquire);
        while s & WRITERS_MASK != 0 {
            spin.wait();
            s = acc.stamp.load(Ordering::Acquire);
        }
        if writing {
            let seq = acc.seq.load(Ordering::Relaxed);
            acc.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
            fence(Ordering::Release);
        }
        s >> COUNT_SHIFT
    }

    /// Release `EXCLUSIVE`, setting the accumulator's count.
    fn unlock(&self, count: u64) {
        self.unlock_with(count, true);
    }

    /// Release `EXCLUSIVE` taken with [`SeriesRef::lock_with`].
    fn unlock_with(&self, count: u64, writing: bool) {
        let acc = self.acc;
        if writing {
            let seq = acc.seq.load(Ordering::Relaxed);
            acc.seq.store(seq.wrapping_add(1), Ordering::Release);
        }
        let mut s = acc.stamp.load(Ordering::Relaxed);
        loop {
            // Backed-out writers may still adjust the writer bits: keep them.
            let next = (s & WRITERS_MASK) | (count << COUNT_SHIFT);
            match acc
                .stamp
                .compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        fork::exit();
    }

    #[cold]
    fn record_exclusive(&self, v: f64, at: Nanos, minute: i64, now: Nanos, drops: &DropCounters) -> Outcome {
        let mut count = self.lock();
        let acc = self.acc;
        let current = acc.minute.load(Ordering::Relaxed);
        let now_minute = now.div_euclid(NANOS * 60) + 1;
        let outcome = if minute == current {
            // Another thread moved the accumulator here meanwhile.
            let o = self.update_acc(v, at);
            if o == Outcome::Stored {
                count += 1;
            }
            o
        } else if minute > current && minute <= now_minute {
            // The minute rolled over: fold the finished one, start this one.
            if current != 0 && count > 0 {
                let d = self.acc_delta(count);
                let saved = self.pending_saved(count);
                self.apply_rings(
                    &d,
                    (current - 1) * 60 * NANOS,
                    None,
                    saved,
                    Some(self.mark(None)),
                    drops,
                );
            }
            acc.minute.store(minute, Ordering::Relaxed);
            acc.sum.store(b(0.0), Ordering::Relaxed);
            acc.min.store(b(f64::INFINITY), Ordering::Relaxed);
            acc.max.store(b(f64::NEG_INFINITY), Ordering::Relaxed);
            acc.sampled_at.store(i64::MIN, Ordering::Relaxed);
            acc.pair
                .store(((i64::MIN as u64 as u128) << 64) | b(0.0) as u128, Ordering::Relaxed);
            count = 0;
            let o = self.update_acc(v, at);
            if o == Outcome::Stored {
                count = 1;
            }
            o
        } else {
            self.store_late(v, at, now, drops)
        };
        self.unlock(count);
        outcome
    }

    /// Late (an older minute) or ahead of the clock: straight into the
    /// rings, each checking its own retention (under `EXCLUSIVE`).
    fn store_late(&self, v: f64, at: Nanos, now: Nanos, drops: &DropCounters) -> Outcome {
        let d = Delta {
            count: 1,
            sum: v,
            min: v,
            max: v,
            last: v,
            at,
        };
        match self.apply_rings(&d, at, Some(now), false, None, drops) {
            (true, _) => Outcome::Stored,
            (false, true) => Outcome::Overflow,
            (false, false) => Outcome::NotStored,
        }
    }

    /// The accumulator's latest value and its time: a gauge's from the
    /// `(time, value)` pair, another kind's from `last` and `sampled_at`.
    #[inline]
    fn last_sample(&self) -> (f64, Nanos) {
        let acc = self.acc;
        if self.kind == Kind::Gauge {
            let p = acc.pair.load(Ordering::Relaxed);
            (f(p as u64), (p >> 64) as u64 as i64)
        } else {
            (
                f(acc.last.load(Ordering::Relaxed)),
                acc.sampled_at.load(Ordering::Relaxed),
            )
        }
    }

    /// The accumulator's pending minute, if it holds `count` > 0
    /// observations (under `EXCLUSIVE`).
    fn acc_pending(&self, count: u64) -> Option<Bucket> {
        let minute = self.acc.minute.load(Ordering::Relaxed);
        (minute != 0 && count > 0).then(|| {
            let d = self.acc_delta(count);
            Bucket {
                start: (minute - 1) * 60,
                count,
                sum: d.sum,
                min: d.min,
                max: d.max,
                last: d.last,
                sampled_at: d.at,
            }
        })
    }

    /// The accumulator's contents as a delta (under `EXCLUSIVE`).
    fn acc_delta(&self, count: u64) -> Delta {
        let acc = self.acc;
        let (last, at) = self.last_sample();
        Delta {
            count,
            sum: f(acc.sum.load(Ordering::Relaxed)),
            min: f(acc.min.load(Ordering::Relaxed)),
            max: f(acc.max.load(Ordering::Relaxed)),
            last,
            at,
        }
    }

    /// Merge `d`, observed in the bucket holding `at`, into every ring
    /// (under `EXCLUSIVE`). With `now`, buckets older than a ring's
    /// retention are refused. Returns (stored in any resolution, overflowed
    /// in any resolution).
    ///
    /// `saved`: `d` is a pending minute the last saved read already showed
    /// (so the slots it changes stay saved). `mark`: `d` is a pending
    /// minute with this mark (`mark.rs`): where an eviction kept it in the
    /// unsaved buffer, only what came after counts as stale.
    #[allow(clippy::too_many_arguments)]
    fn apply_rings(
        &self,
        d: &Delta,
        at: Nanos,
        now: Option<Nanos>,
        saved: bool,
        mark: Option<&Mark>,
        drops: &DropCounters,
    ) -> (bool, bool) {
        let secs = at.div_euclid(NANOS);
        // The holder's odd `seq`: what every slot changed here is stamped
        // (below the saved read's when `d` was saved: the slot then holds
        // what that read showed).
        let seq = self.acc.seq.load(Ordering::Relaxed);
        let stamp = if saved { seq.saturating_sub(2) } else { seq };
        let mut stored = false;
        let mut overflowed = false;
        for r in Resolution::ALL {
            let ring = self.ring(r);
            let depth = ring.len() as i64;
            let bucket = r.bucket_of(secs);
            if let Some(now) = now
                && bucket <= r.bucket_of(now.div_euclid(NANOS)) - depth
            {
                drops.expired(r, d.count);
                continue;
            }
            let slot = &ring[bucket.rem_euclid(depth) as usize];
            let tag = slot.bucket.load(Ordering::Relaxed);
            if tag > bucket + 1 {
                // (A kept pending minute always lands here: its slot took a
                // newer bucket when it was kept, and slot tags only grow.)
                let kept = mark.map_or(0, |m| m.take(r));
                if d.count > kept {
                    drops.stale(r, d.count - kept);
                }
                continue;
            }
            let (count, sum, min, max, sampled_at) = if tag == bucket + 1 {
                (
                    slot.count.load(Ordering::Relaxed),
                    f(slot.sum.load(Ordering::Relaxed)),
                    f(slot.min.load(Ordering::Relaxed)),
                    f(slot.max.load(Ordering::Relaxed)),
                    slot.sampled_at.load(Ordering::Relaxed),
                )
            } else {
                (0, 0.0, f64::INFINITY, f64::NEG_INFINITY, i64::MIN)
            };
            let mut new_sum = sum + d.sum;
            if !new_sum.is_finite() {
                if self.kind != Kind::Gauge {
                    drops.overflow(r, d.count);
                    overflowed = true;
                    continue;
                }
                new_sum = new_sum.clamp(f64::MIN, f64::MAX);
            }
            if tag != bucket + 1 {
                self.evict(slot, tag - 1, bucket, r, drops);
                slot.bucket.store(bucket + 1, Ordering::Relaxed);
            }
            slot.count.store(count + d.count, Ordering::Relaxed);
            slot.sum.store(b(new_sum), Ordering::Relaxed);
            slot.min.store(b(min.min(d.min)), Ordering::Relaxed);
            slot.max.store(b(max.max(d.max)), Ordering::Relaxed);
            if d.at >= sampled_at {
                slot.last.store(b(d.last), Ordering::Relaxed);
                slot.sampled_at.store(d.at, Ordering::Relaxed);
            }
            slot.stamp.store(stamp, Ordering::Relaxed);
            stored = true;
        }
        (stored, overflowed)
    }

    /// `slot` is about to take bucket `new` in place of bucket `old` (-1:
    /// the slot was empty), under `EXCLUSIVE`. If a syncer saves this
    /// aggregator, what leaves the ring with it goes to the unsaved buffer
    /// (counted lost when the buffer is full):
    /// * bucket `old`, with every pending minute (the shared accumulator's,
    ///   a writer stripe's) that still adds to it, if it changed since the
    ///   last save or such a pending minute exists;
    /// * each bucket of this slot between `old` and `new` that only pending
    ///   minutes hold (a thread idle since: the ring never held its minute).
    ///
    /// Every pending minute kept is marked (`mark.rs`): when it folds, its
    /// slot here holds a newer bucket, and only what it recorded after this
    /// counts as stale.
    #[cold]
    fn evict(&self, slot: &Slot, old: i64, new: i64, r: Resolution, drops: &DropCounters) {
        if !self.spill.is_active() {
            return;
        }
        let depth = self.depths[r.index()] as i64;
        let leaves = |b: i64| b == old || (b > old && b < new && b.rem_euclid(depth) == new.rem_euclid(depth));
        let mut kept_old = if old >= 0 { slot.read(old, r) } else { None };
        let changed =
            kept_old.is_some() && slot.stamp.load(Ordering::Relaxed) >= self.acc.saved.load(Ordering::Relaxed);
        // Observations of each bucket leaving that no saved read showed as
        // they are: [0] bucket `old`, then one per bucket between.
        let mut unsaved = [0u64; MAX_WRITERS + 2];
        if changed {
            unsaved[0] = kept_old.map_or(0, |b| b.count);
        }
        let mut between = [EMPTY; MAX_WRITERS + 1];
        let mut n = 0;
        let kind = self.kind;
        // A pending minute `p` (saved as it is, or not) that leaves with
        // the slot: merged into what leaves, or refused, counted, where
        // its sum would overflow (as its fold would refuse it).
        let mut keep = |p: &Bucket, saved: bool, mark: &Mark| {
            let b = r.bucket_of(p.start);
            if !leaves(b) {
                return;
            }
            mark.set(r, p.count);
            let start = r.bucket_start(b);
            let (kept, i) = if b == old {
                (kept_old.get_or_insert(Bucket { start, ..EMPTY }), 0)
            } else if let Some(i) = between[..n].iter().position(|x| x.start == start) {
                (&mut between[i], i + 1)
            } else {
                between[n] = Bucket { start, ..EMPTY };
                n += 1;
                (&mut between[n - 1], n)
            };
            if kind != Kind::Gauge && !(kept.sum + p.sum).is_finite() {
                drops.overflow(r, p.count);
                return;
            }
            kept.merge(p);
            if !saved {
                unsaved[i] += p.count;
            }
        };
        let acc = self.acc;
        let count = acc.stamp.load(Ordering::Relaxed) >> COUNT_SHIFT;
        if let Some(p) = self.acc_pending(count) {
            let saved = acc.saved.load(Ordering::Relaxed) != 0
                && acc.saved_minute.load(Ordering::Relaxed) == acc.minute.load(Ordering::Relaxed)
                && acc.saved_count.load(Ordering::Relaxed) == count;
            keep(&p, saved, self.mark(None));
        }
        for (w, stripe) in self.stripes().enumerate() {
            let m = stripe.minute() & !crate::stripe::FROZEN;
            if m == 0 || !leaves(r.bucket_of((m - 1) * 60)) {
                continue;
            }
            let (data, seq) = stripe.read_held(w);
            if let Some(p) = data.bucket() {
                let mark = self.mark(Some(w));
                let saved = acc.saved.load(Ordering::Relaxed) != 0 && mark.is_saved(seq);
                keep(&p, saved, mark); // (its minute may have started meanwhile)
            }
        }
        let leaving = kept_old.iter().map(|b| (b, unsaved[0]));
        for (bucket, lost) in leaving
            .chain(between[..n].iter().zip(unsaved[1..].iter().copied()))
            .filter(|(_, u)| *u > 0)
        {
            if !self.spill.push(self.id as u32, r, bucket) {
                drops.unsaved(r, lost);
            }
        }
    }

    /// The mark of writer stripe `w`'s pending minute, or with `None` the
    /// shared accumulator's (`mark.rs`).
    fn mark(&self, w: Option<usize>) -> &Mark {
        let writers = self.all_stripes.len() / self.capacity;
        &self.all_marks[w.unwrap_or(writers) * self.capacity + self.id]
    }

    /// Under `EXCLUSIVE`, before a fold: whether the series is exactly as
    /// the last saved read showed it (nothing folded, recorded or striped
    /// since), so the pending minute about to fold was saved as it is.
    fn pending_saved(&self, count: u64) -> bool {
        let acc = self.acc;
        let seq = acc.seq.load(Ordering::Relaxed);
        let stripes = self.stripes().fold(0u64, |sum, stripe| sum.wrapping_add(stripe.seq()));
        acc.saved.load(Ordering::Relaxed) == seq // the read's even seq, plus one
            && acc.saved_minute.load(Ordering::Relaxed) == acc.minute.load(Ordering::Relaxed)
            && acc.saved_count.load(Ordering::Relaxed) == count
            && acc.saved_stripes.load(Ordering::Relaxed) == stripes
    }

    /// A syncer saved what a read at `version` returned: every slot
    /// stamped before it is saved as it is now, and so is the pending
    /// minute if nothing changed since. Takes `EXCLUSIVE` (without moving
    /// `seq`), so a fold sees all of a mark or none of it.
    pub(crate) fn mark_saved(&self, version: SeriesVersion) {
        let acc = self.acc;
        let count = self.lock_with(false);
        if version.seq.wrapping_add(1) > acc.saved.load(Ordering::Relaxed) {
            acc.saved.store(version.seq.wrapping_add(1), Ordering::Relaxed);
            acc.saved_minute.store(version.minute, Ordering::Relaxed);
            acc.saved_count.store(version.count, Ordering::Relaxed);
            acc.saved_stripes.store(version.stripes, Ordering::Relaxed);
        }
        if acc.saved.load(Ordering::Relaxed) == version.seq.wrapping_add(1) {
            // Every stripe as the read saw it (their `seq`s only grow, so
            // an equal sum is equal `seq`s): each pending minute is saved.
            let mut seqs = [0u64; MAX_WRITERS];
            let mut sum = 0u64;
            for (s, stripe) in seqs.iter_mut().zip(self.stripes()) {
                *s = stripe.seq();
                sum = sum.wrapping_add(*s);
            }
            if sum == version.stripes {
                for (w, (&seq, stripe)) in seqs.iter().zip(self.stripes()).enumerate() {
                    if stripe.minute() != 0 {
                        self.mark(Some(w)).set_saved(seq);
                    }
                }
            }
        }
        self.unlock_with(count, false);
    }

    /// Nothing of the series counts as saved any more (a syncer to another
    /// target attaches, before it reads anything).
    pub(crate) fn forget_saved(&self) {
        let count = self.lock_with(false);
        self.acc.saved.store(0, Ordering::Relaxed);
        for w in 0..self.all_stripes.len() / self.capacity {
            self.mark(Some(w)).forget_saved();
        }
        self.unlock_with(count, false);
    }

    /// Read the accumulator consistently: `locked` when this reader holds
    /// `EXCLUSIVE` (nothing can change it). `None` when unlocked and a
    /// writer or an exclusive section was inside, or came and went (one
    /// failed try: the caller starts over).
    fn read_acc(&self, locked: bool) -> Option<(i64, Option<Bucket>, u64)> {
        let acc = self.acc;
        let s1 = acc.stamp.load(Ordering::Acquire);
        if !locked && s1 & (EXCLUSIVE | WRITERS_MASK) != 0 {
            return None;
        }
        let minute = acc.minute.load(Ordering::Relaxed);
        let sum = f(acc.sum.load(Ordering::Relaxed));
        let min = f(acc.min.load(Ordering::Relaxed));
        let max = f(acc.max.load(Ordering::Relaxed));
        let (last, at) = self.last_sample();
        fence(Ordering::Acquire);
        if !locked && acc.stamp.load(Ordering::Relaxed) != s1 {
            return None;
        }
        let count = s1 >> COUNT_SHIFT;
        let bucket = (minute != 0 && count > 0).then(|| Bucket {
            start: (minute - 1) * 60,
            count,
            sum,
            min,
            max,
            last,
            sampled_at: at,
        });
        Some((minute, bucket, count))
    }

    /// This series' writer stripes (stripe `w` is the `w`-th).
    fn stripes(&self) -> impl Iterator<Item = &Stripe> {
        self.all_stripes.iter().skip(self.id).step_by(self.capacity)
    }

    /// Read a consistent copy of everything: `visit(pending minutes)` runs
    /// inside the retry loop and must be restartable (it is called again
    /// after a concurrent fold). The pending minutes are the shared
    /// accumulator's bucket, then each non-empty stripe's, at 1min. Also
    /// returns how many tries it took (at most `OPTIMISTIC_READS + 1`).
    fn read_consistent<T>(&self, mut visit: impl FnMut(&[Bucket]) -> T) -> (T, SeriesVersion, u32) {
        self.check_generation();
        let spin = Spin::new();
        let mut pending = [EMPTY; MAX_WRITERS + 1];
        for tries in 1..=OPTIMISTIC_READS {
            if let Some((out, version)) = self.try_read(&mut visit, &mut pending) {
                return (out, version, tries);
            }
            spin.wait();
        }
        // Writers changed the series under every try: hold them off.
        let (out, version) = self.read_locked(&mut visit, &mut pending);
        (out, version, OPTIMISTIC_READS + 1)
    }

    /// The locked read of [`SeriesRef::read_consistent`] (see "Reading").
    #[cold]
    #[inline(never)]
    fn read_locked<T>(
        &self,
        visit: &mut impl FnMut(&[Bucket]) -> T,
        pending: &mut [Bucket; MAX_WRITERS + 1],
    ) -> (T, SeriesVersion) {
        let acc = self.acc;
        let count = self.lock_with(false);
        for stripe in self.stripes() {
            stripe.freeze();
        }
        let seq = acc.seq.load(Ordering::Relaxed);
        let (minute, acc_bucket, _) = self.read_acc(true).expect("a locked read always succeeds");
        let mut n = 0;
        if let Some(b) = acc_bucket {
            pending[n] = b;
            n += 1;
        }
        let mut stripes = 0u64;
        for (w, stripe) in self.stripes().enumerate() {
            let (data, seq) = stripe.read(w, None).expect("an unbounded stripe read always succeeds");
            stripes = stripes.wrapping_add(seq);
            if let Some(b) = data.bucket() {
                pending[n] = b;
                n += 1;
            }
        }
        let out = visit(&pending[..n]);
        for stripe in self.stripes() {
            stripe.unfreeze();
        }
        self.unlock_with(count, false);
        let version = SeriesVersion {
            seq,
            minute,
            count,
            stripes,
        };
        (out, version)
    }

    /// One optimistic try of [`SeriesRef::read_consistent`]: `None` if
    /// anything changed under it.
    #[inline(always)]
    fn try_read<T>(
        &self,
        visit: &mut impl FnMut(&[Bucket]) -> T,
        pending: &mut [Bucket; MAX_WRITERS + 1],
    ) -> Option<(T, SeriesVersion)> {
        let acc = self.acc;
        let seq1 = acc.seq.load(Ordering::Acquire);
        if seq1 & 1 == 1 {
            return None;
        }
        let (minute, acc_bucket, count) = self.read_acc(false)?;
        let mut n = 0;
        if let Some(b) = acc_bucket {
            pending[n] = b;
            n += 1;
        }
        let mut stripes = 0u64;
        for (w, stripe) in self.stripes().enumerate() {
            let (data, seq) = stripe.read(w, Some(STRIPE_TRIES))?;
            stripes = stripes.wrapping_add(seq);
            if let Some(b) = data.bucket() {
                pending[n] = b;
                n += 1;
            }
        }
        let out = visit(&pending[..n]);
        fence(Ordering::Acquire);
        (acc.seq.load(Ordering::Relaxed) == seq1).then_some((
            out,
            SeriesVersion {
                seq: seq1,
                minute,
                count,
                stripes,
            },
        ))
    }

    /// Buckets of resolution `r` starting in `[from_secs, to_secs)`, oldest
    /// first, appended to `out`.
    pub(crate) fn snapshot(&self, r: Resolution, from_secs: i64, to_secs: i64, out: &mut Vec<Bucket>) -> SeriesVersion {
        let ring = self.ring(r);
        let mark = out.len();
        let (_, version, _) = self.read_consistent(|pending| {
            out.truncate(mark);
            let _ = collect_ring(ring, r, self.kind, pending, false, out, |start| {
                start >= from_secs && start < to_secs
            });
        });
        version
    }

    /// Every bucket held at every resolution, oldest first. With
    /// `displaced`, also each bucket a pending minute will push out of its
    /// slot (what a syncer must save: a ring then shows one bucket more);
    /// and a pending minute whose slot already holds a newer bucket is
    /// settled ([`SeriesRef::settle`]).
    pub(crate) fn read_all(&self, out: &mut SeriesData, displaced: bool, drops: &DropCounters) {
        let mut hidden = false;
        let (_, version, _) = self.read_consistent(|pending| {
            hidden = false;
            for r in Resolution::ALL {
                let dst = &mut out.buckets[r.index()];
                dst.clear();
                hidden |= collect_ring(self.ring(r), r, self.kind, pending, displaced, dst, |_| true);
            }
        });
        out.version = version;
        if displaced && hidden && self.spill.is_active() {
            self.settle(drops);
        }
    }

    /// Some pending minute's slot already holds a newer bucket: what it
    /// recorded there will never be saved (only what an eviction kept of
    /// it: its mark). Count the rest as stale now and mark it accounted,
    /// rather than at its fold: its thread may never record again (it
    /// exited, or it recorded once more, descheduled across the eviction,
    /// and stopped). Under `EXCLUSIVE` (without moving `seq`: the rings do
    /// not change), with the stripes frozen, as a locked read.
    #[cold]
    fn settle(&self, drops: &DropCounters) {
        let count = self.lock_with(false);
        if let Some(p) = self.acc_pending(count) {
            self.settle_one(p.start, p.count, self.mark(None), drops);
        }
        for (w, stripe) in self.stripes().enumerate() {
            if stripe.minute() & !crate::stripe::FROZEN == 0 {
                continue;
            }
            let (data, _) = stripe.read_held(w);
            if let Some(p) = data.bucket() {
                self.settle_one(p.start, p.count, self.mark(Some(w)), drops);
            }
        }
        self.unlock_with(count, false);
    }

    /// [`SeriesRef::settle`] of one pending minute starting at `start`
    /// (unix seconds) with `count` observations.
    fn settle_one(&self, start: i64, count: u64, mark: &Mark, drops: &DropCounters) {
        for r in Resolution::ALL {
            let ring = self.ring(r);
            let bucket = r.bucket_of(start);
            let slot = &ring[bucket.rem_euclid(ring.len() as i64) as usize];
            if slot.bucket.load(Ordering::Relaxed) <= bucket + 1 {
                continue;
            }
            let accounted = mark.take(r);
            if count > accounted {
                drops.stale(r, count - accounted);
            }
            mark.set(r, count.max(accounted));
        }
    }

    /// The current version, without reading the data.
    pub(crate) fn version(&self) -> SeriesVersion {
        self.read_consistent(|_| ()).1
    }

    /// How many tries a read of this series took (for tests of the bound).
    pub(crate) fn read_tries(&self) -> u32 {
        self.read_consistent(|_| ()).2
    }
}

/// Most writer stripes a series can have ([`crate::Config::writers`]).
pub(crate) const MAX_WRITERS: usize = 64;

const EMPTY: Bucket = Bucket {
    start: 0,
    count: 0,
    sum: 0.0,
    min: f64::INFINITY,
    max: f64::NEG_INFINITY,
    last: 0.0,
    sampled_at: i64::MIN,
};

#[inline]
fn fetch_min(a: &AtomicU64, v: f64) {
    let mut cur = a.load(Ordering::Relaxed);
    while v < f(cur) {
        match a.compare_exchange_weak(cur, b(v), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(x) => cur = x,
        }
    }
}

#[inline]
fn fetch_max(a: &AtomicU64, v: f64) {
    let mut cur = a.load(Ordering::Relaxed);
    while v > f(cur) {
        match a.compare_exchange_weak(cur, b(v), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(x) => cur = x,
        }
    }
}

/// Append the buckets of `ring` whose start passes `keep`, sorted oldest
/// first, as the ring will hold them once the `pending` minutes are folded
/// in (in order, by the rules of `apply_rings`): a pending minute merges
/// into its slot's bucket, replaces an older one, and is hidden where the
/// slot holds a newer bucket or the merged sum would overflow. Returns
/// whether a pending minute's slot already holds a newer bucket.
fn collect_ring(
    ring: &[Slot],
    r: Resolution,
    kind: Kind,
    pending: &[Bucket],
    displaced: bool,
    out: &mut Vec<Bucket>,
    keep: impl Fn(i64) -> bool,
) -> bool {
    let depth = ring.len() as i64;
    let mut hidden = false;
    // The slot each pending minute folds into, and a quick filter of them.
    let mut touched = [usize::MAX; MAX_WRITERS + 1];
    let mut filter = 0u64;
    for (t, p) in touched.iter_mut().zip(pending) {
        *t = r.bucket_of(p.start).rem_euclid(depth) as usize;
        filter |= 1 << (*t % 64);
    }
    let touched = &touched[..pending.len()];
    let mark = out.len();
    for (idx, slot) in ring.iter().enumerate() {
        let tag = slot.bucket.load(Ordering::Relaxed) - 1;
        if filter & (1 << (idx % 64)) != 0 && touched.contains(&idx) {
            let mut mine = [0usize; MAX_WRITERS + 1];
            let mut k = 0;
            for (j, _) in touched.iter().enumerate().filter(|(_, t)| **t == idx) {
                mine[k] = j;
                k += 1;
            }
            let mine = &mine[..k];
            let bucket_of = |j: usize| r.bucket_of(pending[j].start);
            hidden |= mine.iter().any(|&j| bucket_of(j) < tag);
            let own = slot.read(tag, r);
            let mut cur = (tag, own.unwrap_or(EMPTY));
            for &j in mine {
                fold(&mut cur, &pending[j], r, kind);
            }
            if displaced && cur.0 != tag {
                // What the folds push out of the slot on their way (what an
                // eviction keeps): bucket `tag` with every pending minute of
                // it, then each bucket between that only pending minutes
                // hold; each once.
                let stages = std::iter::once(tag).chain(mine.iter().map(|&j| bucket_of(j)));
                for (x, b) in stages.enumerate() {
                    if b < tag
                        || b >= cur.0
                        || (x > 0 && (b == tag || mine[..x - 1].iter().any(|&j| bucket_of(j) == b)))
                    {
                        continue;
                    }
                    let mut stage = (b, if b == tag { own.unwrap_or(EMPTY) } else { EMPTY });
                    for &j in mine.iter().filter(|&&j| bucket_of(j) == b) {
                        fold(&mut stage, &pending[j], r, kind);
                    }
                    if stage.1.count > 0 && keep(stage.1.start) {
                        out.push(stage.1);
                    }
                }
            }
            if cur.1.count > 0 && keep(cur.1.start) {
                out.push(cur.1);
            }
            continue;
        }
        if tag < 0 || !keep(r.bucket_start(tag)) {
            continue;
        }
        out.extend(slot.read(tag, r));
    }
    out[mark..].sort_unstable_by_key(|x| x.start);
    hidden
}

/// Fold the pending minute `p` into a slot's `(bucket number, values)` as
/// `apply_rings` would, without counting drops.
fn fold(cur: &mut (i64, Bucket), p: &Bucket, r: Resolution, kind: Kind) {
    let bucket = r.bucket_of(p.start);
    if cur.0 > bucket {
        return; // the slot holds a newer bucket: the fold will drop it
    }
    let base = if cur.0 == bucket { cur.1 } else { EMPTY };
    let mut sum = base.sum + p.sum;
    if !sum.is_finite() {
        if kind != Kind::Gauge {
            return; // the fold will drop it as an overflow
        }
        sum = sum.clamp(f64::MIN, f64::MAX);
    }
    let later = p.sampled_at >= base.sampled_at;
    *cur = (
        bucket,
        Bucket {
            start: r.bucket_start(bucket),
            count: base.count + p.count,
            sum,
            min: base.min.min(p.min),
            max: base.max.max(p.max),
            last: if later { p.last } else { base.last },
            sampled_at: if later { p.sampled_at } else { base.sampled_at },
        },
    );
}
