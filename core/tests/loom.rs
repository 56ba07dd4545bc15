//! Loom models of the record / rollover / read protocol (`series.rs`) and
//! of the unsaved-bucket buffer against it (`spill.rs`).
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p ringmetrics --test loom`.
//! Each model explores every interleaving (up to the preemption bound) of a
//! few threads recording and reading one series, and checks that nothing is
//! lost, nothing lands in the wrong bucket and no read is torn.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use ringmetrics::*;

const NS: i64 = 1_000_000_000;
const T0: i64 = 1_767_225_600; // a day boundary

/// `writers`: 0 puts every thread on the shared accumulator; 1 gives the
/// first thread to record a stripe and the others the shared path; 2 gives
/// the first two a stripe (every model has at most two recording threads
/// at once, plus ones that ran before). Each model below runs in all three layouts.
fn setup_with(kind: Kind, writers: usize) -> (Arc<Aggregator>, Series, ManualClock) {
    setup_rings(kind, writers, 2)
}

/// [`setup_with`] with rings of `depth` buckets at every resolution.
fn setup_rings(kind: Kind, writers: usize, depth: usize) -> (Arc<Aggregator>, Series, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    let config = Config {
        capacity: 1,
        key_bytes: 64,
        buckets: [depth; 4],
        max_future_secs: 60,
        writers,
        spill: 4,
    };
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let s = agg.register(kind, "k", kind.default_unit()).unwrap();
    (agg, s, clock)
}

fn total(agg: &Aggregator, s: Series, r: Resolution) -> (u64, f64) {
    let b = agg.snapshot(s, r, 0, i64::MAX / 2).unwrap();
    (b.iter().map(|x| x.count).sum(), b.iter().map(|x| x.sum).sum())
}

/// A reader racing two fast-path writers never sees a torn bucket.
fn concurrent_writers_and_reader_same_minute(writers: usize) {
    loom::model(move || {
        let (agg, s, _clock) = setup_with(Kind::Histogram, writers);
        agg.record(s, 1.0).unwrap(); // the accumulator now holds the minute
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let agg = agg.clone();
                thread::spawn(move || agg.record(s, 1.0).unwrap())
            })
            .collect();
        for b in agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap() {
            assert_eq!(b.sum, b.count as f64, "torn read: {b:?}");
            assert_eq!((b.min, b.max), (1.0, 1.0));
            assert!((1..=3).contains(&b.count));
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(total(&agg, s, Resolution::Min1), (3, 3.0));
        assert_eq!(total(&agg, s, Resolution::Day1), (3, 3.0));
    });
}

/// One writer rolls the minute over while another, delayed, records into
/// the old minute: both values land in their own buckets, none is lost.
fn writer_delayed_across_rollover(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_with(Kind::Counter, writers);
        agg.record(s, 1.0).unwrap(); // minute 0 in the accumulator
        clock.advance_secs(60); // now in minute 1
        let late = {
            let agg = agg.clone();
            // Observed in minute 0, recorded while minute 1 may already have
            // rolled the accumulator over.
            thread::spawn(move || agg.record_at(s, 10.0, T0 * NS + 30 * NS).unwrap())
        };
        let roll = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 100.0).unwrap())
        };
        late.join().unwrap();
        roll.join().unwrap();
        let m = agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!((m[0].start, m[0].count, m[0].sum), (T0, 2, 11.0));
        assert_eq!((m[1].start, m[1].count, m[1].sum), (T0 + 60, 1, 100.0));
        assert_eq!(total(&agg, s, Resolution::Min5), (3, 111.0));
        assert_eq!(agg.drops().total(), 0);
    });
}

/// Two threads race to roll the same minute over: the fold happens once.
fn racing_rollovers(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_with(Kind::Histogram, writers);
        agg.record(s, 1.0).unwrap();
        clock.advance_secs(60);
        let t = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 1.0).unwrap())
        };
        agg.record(s, 1.0).unwrap();
        t.join().unwrap();
        let m = agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap();
        assert_eq!(
            m.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
            vec![(T0, 1), (T0 + 60, 2)]
        );
        assert_eq!(total(&agg, s, Resolution::Hour1), (3, 3.0));
    });
}

/// A reader racing a rollover sees the folded minute exactly once: before
/// the fold (in the accumulator) or after it (in the rings), never both or
/// neither, and never half of it.
fn reader_during_rollover(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_with(Kind::Histogram, writers);
        agg.record(s, 1.0).unwrap();
        agg.record(s, 1.0).unwrap();
        clock.advance_secs(60);
        let t = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 1.0).unwrap())
        };
        let (count, sum) = total(&agg, s, Resolution::Min5);
        assert_eq!(sum, count as f64);
        assert!(count == 2 || count == 3, "saw {count}");
        t.join().unwrap();
        assert_eq!(total(&agg, s, Resolution::Min5), (3, 3.0));
    });
}

/// A syncer-style reader takes a version and data while a writer records:
/// if the version it saved equals the current one, the data it read is
/// complete (nothing changed after it read).
fn version_covers_what_was_read(writers: usize) {
    loom::model(move || {
        let (agg, s, _clock) = setup_with(Kind::Counter, writers);
        agg.record(s, 1.0).unwrap();
        let w = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 2.0).unwrap())
        };
        let mut data = SeriesData::default();
        agg.read_series(s, &mut data).unwrap();
        w.join().unwrap();
        let seen: f64 = data.at(Resolution::Min1).iter().map(|b| b.sum).sum();
        if agg.version(s).unwrap() == data.version {
            assert_eq!(seen, 3.0);
        } else {
            assert_eq!(seen, 1.0);
        }
    });
}

/// A stripe's owner folds its minute into the rings while another thread
/// reads: the reader sees the folded minute exactly once and never a torn
/// bucket.
fn stripe_fold_during_read(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_with(Kind::Histogram, writers);
        let w = {
            let (agg, clock) = (agg.clone(), clock.clone());
            thread::spawn(move || {
                agg.record(s, 1.0).unwrap();
                clock.advance_secs(60);
                agg.record(s, 1.0).unwrap(); // folds minute 0
            })
        };
        // Each minute holds one record: seen once (before or after the
        // fold), never twice, never torn.
        for b in agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap() {
            assert_eq!((b.count, b.sum, b.min, b.max), (1, 1.0, 1.0, 1.0), "{b:?}");
        }
        w.join().unwrap();
        let m = agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap();
        assert_eq!(
            m.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
            vec![(T0, 1), (T0 + 60, 1)]
        );
    });
}

/// Two threads fold the same series at once, each its own pending minute
/// (a stripe and the shared accumulator, or two stripes): both folds land
/// once, in the right buckets.
fn two_folds_at_once(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_with(Kind::Counter, writers);
        agg.record(s, 1.0).unwrap();
        let t = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 10.0).unwrap())
        };
        t.join().unwrap();
        clock.advance_secs(60);
        let t = {
            let agg = agg.clone();
            thread::spawn(move || agg.record(s, 100.0).unwrap())
        };
        agg.record(s, 1000.0).unwrap();
        t.join().unwrap();
        let m = agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap();
        assert_eq!(
            m.iter().map(|b| (b.start, b.count, b.sum)).collect::<Vec<_>>(),
            vec![(T0, 2, 11.0), (T0 + 60, 2, 1100.0)]
        );
        assert_eq!(total(&agg, s, Resolution::Day1), (4, 1111.0));
        assert_eq!(agg.drops().total(), 0);
    });
}

/// Reader retries are bounded: two writers recording while a reader reads
/// can fail its optimistic try (loom's models use one), after which it
/// takes the series' exclusive section and freezes the stripes, so it
/// finishes in at most `OPTIMISTIC_READS + 1` tries and the writers it held
/// off still land. (Every other model here reads through the same path, so
/// they check that a locked read is never torn.) With `writers == 1` the
/// first writer owns a stripe (the freeze path), with 2 both do.
fn reader_retries_are_bounded(writers: usize) {
    loom::model(move || {
        let (agg, s, _clock) = setup_with(Kind::Counter, writers);
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let agg = agg.clone();
                thread::spawn(move || agg.record(s, 1.0).unwrap())
            })
            .collect();
        let tries = agg.read_tries(s).unwrap();
        assert!(tries <= OPTIMISTIC_READS + 1, "{tries} tries");
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(total(&agg, s, Resolution::Min1), (2, 2.0));
    });
}

/// Minutes 0 and 1 recorded by this thread (1 still pending, in its
/// stripe or the shared accumulator) into rings of one bucket, the clock in
/// minute 2 and the aggregator saving: this thread's next record folds
/// minute 1 over minute 0's slot.
fn before_an_eviction(writers: usize) -> (Arc<Aggregator>, Series) {
    let (agg, s, clock) = setup_rings(Kind::Counter, writers, 1);
    agg.start_saving();
    for v in [1.0, 2.0] {
        agg.record(s, v).unwrap();
        clock.advance_secs(60);
    }
    (agg, s)
}

fn is_minute_0(b: &Bucket) -> bool {
    (b.start, b.count, b.sum) == (T0, 1, 1.0)
}

/// A syncer-style save races the fold that pushes minute 0 out of its
/// ring: the save takes the series' version (what its read returns is
/// fixed by the version: `version_covers_what_was_read`), then marks it
/// saved. Whatever the interleaving, minute 0 is in what a read at that
/// version returns (the pending minute's displaced bucket, checked before
/// the race) or it goes to the unsaved buffer. (The read itself is taken
/// out of the race: reading all four rings during a fold that writes them
/// all is beyond loom's reach.)
fn eviction_races_a_save(writers: usize) {
    loom::model(move || {
        let (agg, s) = before_an_eviction(writers);
        let mut before = SeriesData::default();
        agg.read_series_to_save(s, &mut before).unwrap();
        assert!(before.at(Resolution::Min1).iter().any(is_minute_0), "{before:?}");
        let save = {
            let agg = agg.clone();
            thread::spawn(move || {
                let version = agg.version(s).unwrap();
                agg.mark_saved(s, version).unwrap();
                version
            })
        };
        agg.record(s, 8.0).unwrap();
        let version = save.join().unwrap();
        let mut drained = Vec::new();
        agg.drain_unsaved(|_, r, b| drained.push((r, b)));
        let spilled = drained.iter().any(|(r, b)| *r == Resolution::Min1 && is_minute_0(b));
        assert!(
            version == before.version || spilled,
            "minute 0 lost: saved at {version:?} (before the fold: {:?}), drained {drained:?}",
            before.version
        );
        assert_eq!(agg.drops().total(), 0);
        assert_eq!(total(&agg, s, Resolution::Day1), (3, 11.0));
    });
}

/// The unsaved buffer's push (in the fold) races its drain: minute 0 is
/// drained exactly once, whole.
fn eviction_races_a_drain(writers: usize) {
    loom::model(move || {
        let (agg, s) = before_an_eviction(writers);
        let drain = {
            let agg = agg.clone();
            thread::spawn(move || {
                let mut drained = Vec::new();
                agg.drain_unsaved(|_, r, b| drained.push((r, b)));
                drained
            })
        };
        agg.record(s, 8.0).unwrap();
        let mut drained = drain.join().unwrap();
        agg.drain_unsaved(|_, r, b| drained.push((r, b)));
        assert_eq!(drained.len(), 1, "{drained:?}");
        assert!(
            drained[0].0 == Resolution::Min1 && is_minute_0(&drained[0].1),
            "{drained:?}"
        );
        assert_eq!(agg.drops().total(), 0);
    });
}

/// Another thread's fold evicts this thread's pending minute 0 (rings of
/// one bucket: its minute 1 takes the 1min slot) while this thread records
/// into minute 0 once more. Each observation of minute 0 is kept in the
/// unsaved buffer or counted stale at 1min, exactly once: settled by a
/// syncer's read, then folded (nothing counted twice), and every
/// observation is in the 5min and day buckets.
fn a_kept_minute_races_its_owners_record(writers: usize) {
    loom::model(move || {
        let (agg, s, clock) = setup_rings(Kind::Counter, writers, 1);
        agg.start_saving();
        clock.set((T0 + 120) * NS);
        agg.record_at(s, 1.0, T0 * NS).unwrap();
        let other = {
            let agg = agg.clone();
            thread::spawn(move || {
                agg.record_at(s, 10.0, (T0 + 60) * NS).unwrap();
                agg.record_at(s, 10.0, (T0 + 120) * NS).unwrap(); // folds minute 1
            })
        };
        agg.record_at(s, 2.0, T0 * NS).unwrap();
        other.join().unwrap();
        let mut data = SeriesData::default();
        agg.read_series_to_save(s, &mut data).unwrap();
        let mut kept = 0;
        agg.drain_unsaved(|_, r, b| {
            if r == Resolution::Min1 && b.start == T0 {
                kept += b.count;
            }
        });
        assert_eq!(kept + agg.drops().stale[0], 2, "kept {kept}, {:?}", agg.drops());
        clock.set((T0 + 180) * NS);
        agg.record_at(s, 0.0, (T0 + 180) * NS).unwrap(); // folds minute 0
        assert_eq!(kept + agg.drops().stale[0], 2, "kept {kept}, {:?}", agg.drops());
        assert_eq!(agg.drops().total(), agg.drops().stale[0]);
        assert_eq!(total(&agg, s, Resolution::Day1), (5, 23.0));
    });
}

mod shared {
    #[test]
    fn eviction_races_a_save() {
        super::eviction_races_a_save(0)
    }
    #[test]
    fn eviction_races_a_drain() {
        super::eviction_races_a_drain(0)
    }
    #[test]
    fn reader_retries_are_bounded() {
        super::reader_retries_are_bounded(0)
    }
    #[test]
    fn concurrent_writers_and_reader_same_minute() {
        super::concurrent_writers_and_reader_same_minute(0)
    }
    #[test]
    fn writer_delayed_across_rollover() {
        super::writer_delayed_across_rollover(0)
    }
    #[test]
    fn racing_rollovers() {
        super::racing_rollovers(0)
    }
    #[test]
    fn reader_during_rollover() {
        super::reader_during_rollover(0)
    }
    #[test]
    fn version_covers_what_was_read() {
        super::version_covers_what_was_read(0)
    }
    #[test]
    fn two_folds_at_once() {
        super::two_folds_at_once(0)
    }
}

/// The first thread to record owns a stripe; the others share the
/// accumulator. (Two fast-path writers racing a reader is `shared`'s model:
/// here the reader would only add its own stripe's reads to the search.)
mod mixed {
    #[test]
    fn a_kept_minute_races_its_owners_record() {
        super::a_kept_minute_races_its_owners_record(1)
    }
    #[test]
    fn eviction_races_a_save() {
        super::eviction_races_a_save(1)
    }
    #[test]
    fn eviction_races_a_drain() {
        super::eviction_races_a_drain(1)
    }
    #[test]
    fn reader_retries_are_bounded() {
        super::reader_retries_are_bounded(1)
    }
    #[test]
    fn writer_delayed_across_rollover() {
        super::writer_delayed_across_rollover(1)
    }
    #[test]
    fn racing_rollovers() {
        super::racing_rollovers(1)
    }
    #[test]
    fn reader_during_rollover() {
        super::reader_during_rollover(1)
    }
    #[test]
    fn version_covers_what_was_read() {
        super::version_covers_what_was_read(1)
    }
    #[test]
    fn stripe_fold_during_read() {
        super::stripe_fold_during_read(1)
    }
    #[test]
    fn two_folds_at_once() {
        super::two_folds_at_once(1)
    }
}

mod striped {
    #[test]
    fn a_kept_minute_races_its_owners_record() {
        super::a_kept_minute_races_its_owners_record(2)
    }
    #[test]
    fn eviction_races_a_save() {
        super::eviction_races_a_save(2)
    }
    #[test]
    fn eviction_races_a_drain() {
        super::eviction_races_a_drain(2)
    }
    #[test]
    fn reader_retries_are_bounded() {
        super::reader_retries_are_bounded(2)
    }
    #[test]
    fn concurrent_writers_and_reader_same_minute() {
        super::concurrent_writers_and_reader_same_minute(2)
    }
    #[test]
    fn writer_delayed_across_rollover() {
        super::writer_delayed_across_rollover(2)
    }
    #[test]
    fn racing_rollovers() {
        super::racing_rollovers(2)
    }
    #[test]
    fn reader_during_rollover() {
        super::reader_during_rollover(2)
    }
    #[test]
    fn version_covers_what_was_read() {
        super::version_covers_what_was_read(2)
    }
    #[test]
    fn stripe_fold_during_read() {
        super::stripe_fold_during_read(2)
    }
    #[test]
    fn two_folds_at_once() {
        super::two_folds_at_once(2)
    }
}
