//! Adversarial tests of commit f29ac62 (the fixes to the unsaved-bucket
//! buffer), core only: a model saver does what the syncer does (read to
//! save, drain the buffer, mark the read saved) and keeps the newest
//! absolute value of every bucket it was handed. Every bucket ever recorded
//! must reach it exactly, at every resolution, or be counted as dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use ringmetrics::{Aggregator, Config, ManualClock, Resolution, SeriesData};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, a day boundary
const NS: i64 = 1_000_000_000;

/// (resolution index, bucket start) -> (count, sum), as saved.
type Db = BTreeMap<(usize, i64), (u64, f64)>;

fn setup(config: Config) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    agg.start_saving();
    (agg, clock)
}

fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        writers: 64,
        ..Config::with_capacity(4)
    }
}

/// What the syncer does at a flush of series `key`: read to save, take
/// the unsaved buffer, and (`mark`) report the read as committed.
fn save(agg: &Aggregator, key: &str, db: &mut Db, mark: bool) {
    let id = agg.lookup(key).unwrap().id;
    let series = agg.series(id).unwrap();
    let mut data = SeriesData::default();
    agg.read_series_to_save(series, &mut data).unwrap();
    for r in Resolution::ALL {
        for b in data.at(r) {
            db.insert((r.index(), b.start), (b.count, b.sum));
        }
    }
    agg.drain_unsaved(|sid, r, b| {
        assert_eq!(sid, id);
        db.insert((r.index(), b.start), (b.count, b.sum));
    });
    agg.hold_unsaved(0);
    if mark {
        agg.mark_saved(series, data.version).unwrap();
    }
}

/// Every bucket of `records` (unix seconds, value) at every resolution.
fn expected(records: &[(i64, f64)]) -> Db {
    let mut db = Db::new();
    for &(t, v) in records {
        for r in Resolution::ALL {
            let e = db
                .entry((r.index(), r.bucket_start(r.bucket_of(t))))
                .or_insert((0, 0.0));
            e.0 += 1;
            e.1 += v;
        }
    }
    db
}

#[path = "support/held_thread.rs"]
mod held_thread;
use held_thread::Helper;

fn at_minute(clock: &ManualClock, m: i64) -> i64 {
    clock.set((T0 + 60 * m) * NS);
    T0 + 60 * m
}

fn only(db: &Db, r: Resolution) -> Vec<(i64, u64, f64)> {
    db.iter()
        .filter(|((i, _), _)| *i == r.index())
        .map(|(&(_, s), &(c, v))| (s, c, v))
        .collect()
}

/// The read a syncer saves shows 1min minute 0 only as the bucket the
/// main thread's pending minute 6 displaces (its slot's own content, count
/// 1), while another thread's pending minute 0 also adds to it. That thread
/// then folds its minute 0 with nothing else changed since the saved read:
/// `pending_saved` judges the fold covered and stamps the slot saved, so
/// when minute 6 takes the slot, minute 0 (now count 2) leaves the ring
/// without going through the buffer: one observation of minute 0 is lost,
/// uncounted.
#[test]
fn a_fold_judged_saved_for_a_minute_the_read_showed_only_displaced_loses_nothing() {
    let (agg, clock) = setup(small());
    let helper = Helper::new();
    let mut db = Db::new();
    let mut records = Vec::new();
    records.push((at_minute(&clock, 0), 1.0));
    agg.increment_counter("c", 1.0).unwrap(); // main stripe: minute 0
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap()); // helper stripe: minute 0
    }
    records.push((T0, 1.0));
    records.push((at_minute(&clock, 1), 1.0));
    agg.increment_counter("c", 1.0).unwrap(); // folds main's minute 0 into the ring
    records.push((at_minute(&clock, 6), 1.0));
    agg.increment_counter("c", 1.0).unwrap(); // main pending: minute 6 (slot of minute 0)
    save(&agg, "c", &mut db, true);
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap()); // folds helper's minute 0
    }
    records.push((T0 + 360, 1.0));
    records.push((at_minute(&clock, 7), 1.0));
    agg.increment_counter("c", 1.0).unwrap(); // folds minute 6: minute 0 leaves the 1min ring
    save(&agg, "c", &mut db, false);
    let want = expected(&records);
    assert_eq!(
        only(&db, Resolution::Min1),
        only(&want, Resolution::Min1),
        "1min (start, count, sum); drops {:?}",
        agg.drops()
    );
    assert_eq!(db, want, "drops {:?}", agg.drops());
    assert_eq!(agg.drops().total(), 0);
}

/// An idle thread recorded once into minute 0 (its writer stripe) and
/// nothing else ever put minute 0 into the 1min ring: when minute 6 takes
/// that slot (which held nothing), `evict` is never called (tag 0), so the
/// idle thread's pending minute is not pushed with anything. No flush ran in
/// between (an outage, or a sync interval longer than the ring).
#[test]
fn an_idle_threads_minute_whose_slot_was_empty_is_not_lost() {
    let (agg, clock) = setup(small());
    let helper = Helper::new();
    let mut db = Db::new();
    let mut records = vec![(T0, 1.0)];
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap());
    }
    for m in 1..=7 {
        records.push((at_minute(&clock, m), 1.0));
        agg.increment_counter("c", 1.0).unwrap();
    }
    save(&agg, "c", &mut db, false);
    let want = expected(&records);
    assert_eq!(
        only(&db, Resolution::Min1),
        only(&want, Resolution::Min1),
        "1min; drops {:?}",
        agg.drops()
    );
    assert_eq!(db, want);
}

/// The same at 5min: the idle thread's minute 0 is the only record of 5min
/// bucket 0; when bucket 6 takes that (empty) slot, the minute vanishes at
/// 5min (and at 1min), silently. No flush in those 31 minutes (an outage).
#[test]
fn an_idle_threads_minute_alone_in_its_5min_bucket_is_not_lost() {
    let (agg, clock) = setup(small());
    let helper = Helper::new();
    let mut db = Db::new();
    let mut records = vec![(T0, 1.0)];
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap());
    }
    for m in 5..=31 {
        records.push((at_minute(&clock, m), 1.0));
        agg.increment_counter("c", 1.0).unwrap();
    }
    save(&agg, "c", &mut db, false);
    let want = expected(&records);
    assert_eq!(
        only(&db, Resolution::Min5),
        only(&want, Resolution::Min5),
        "5min; drops {:?}",
        agg.drops()
    );
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
}

/// The shared accumulator's pending minute 0 (writers: 0) and a future
/// record into minute 6 (allowed by max_future_secs) that takes minute 0's
/// still-empty 1min slot: minute 0 must still reach the saver.
#[test]
fn the_shared_accumulators_minute_is_not_lost_when_a_future_record_takes_its_empty_slot() {
    let (agg, _clock) = setup(Config {
        writers: 0,
        max_future_secs: 600,
        ..small()
    });
    let mut db = Db::new();
    agg.increment_counter("c", 1.0).unwrap();
    let id = agg.lookup("c").unwrap().id;
    agg.record_at(agg.series(id).unwrap(), 1.0, (T0 + 360) * NS).unwrap();
    save(&agg, "c", &mut db, false);
    let want = expected(&[(T0, 1.0), (T0 + 360, 1.0)]);
    assert_eq!(
        only(&db, Resolution::Min1),
        only(&want, Resolution::Min1),
        "1min; drops {:?}",
        agg.drops()
    );
    assert_eq!(db, want);
}

/// The eviction merges an idle thread's pending minute 0 into the bucket it
/// pushes to the buffer (saved, exactly). When that thread records again,
/// its stripe folds minute 0, whose 1min slot now holds a newer bucket: the
/// fold must not count as dropped what the buffer already kept.
#[test]
fn a_pending_minute_kept_at_eviction_is_not_counted_dropped_when_it_folds() {
    let (agg, clock) = setup(small());
    let helper = Helper::new();
    let mut db = Db::new();
    let mut records = vec![(T0, 1.0), (T0, 1.0)];
    agg.increment_counter("c", 1.0).unwrap();
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap());
    }
    for m in 1..=7 {
        records.push((at_minute(&clock, m), 1.0));
        agg.increment_counter("c", 1.0).unwrap();
    }
    {
        let agg = agg.clone();
        helper.run(move || agg.increment_counter("c", 1.0).unwrap()); // folds its minute 0
    }
    records.push((T0 + 420, 1.0));
    save(&agg, "c", &mut db, false);
    assert_eq!(db, expected(&records), "drops {:?}", agg.drops());
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
}

/// mark_saved takes the series' exclusive section: with writer threads
/// recording without pause, a saver that reads, marks and drains in a loop
/// never hangs and, with evictions under way, every observation is saved
/// or counted (the day bucket is exact).
#[test]
fn marking_and_evicting_under_writers_loses_nothing_uncounted() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (agg, clock) = setup(Config {
        spill: 100_000,
        ..small()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (agg, stop, total) = (agg.clone(), stop.clone(), total.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                agg.increment_counter("c", 1.0).unwrap();
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut db = Db::new();
    for m in 1..200 {
        while agg.lookup("c").is_none() {
            std::thread::yield_now();
        }
        save(&agg, "c", &mut db, true);
        clock.set((T0 + 60 * m) * NS);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    clock.set((T0 + 60 * 200) * NS);
    agg.increment_counter("c", 0.0).unwrap();
    save(&agg, "c", &mut db, false);
    let drops = agg.drops();
    let n = total.load(Ordering::Relaxed);
    let day = db[&(Resolution::Day1.index(), T0)];
    assert_eq!((day.0, day.1), (n + 1, n as f64), "{drops:?}");
    let lost: u64 = drops.stale[0] + drops.unsaved[0];
    let minutes: u64 = only(&db, Resolution::Min1).iter().map(|b| b.1).sum();
    assert_eq!(minutes + lost, n + 1, "1min saved + counted lost; {drops:?}");
}

/// Two threads record without pause while a saver reads, drains and marks
/// every clock minute (the clock runs far ahead of a thread the scheduler
/// holds back, so its pending minute loses its slot while a record of it
/// is still in flight; the thread may then stop for good). Each thread
/// tallies the minutes it recorded: every 1min bucket saved is at most
/// what was recorded in it, and what is missing is exactly what is counted
/// dropped.
#[test]
fn every_minute_is_saved_exactly_or_counted_with_threads_descheduled_across_evictions() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (agg, clock) = setup(Config {
        spill: 100_000,
        ..small()
    });
    let series = agg.register(ringmetrics::Kind::Counter, "c", "number").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (agg, stop) = (agg.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut per: BTreeMap<i64, u64> = BTreeMap::new();
            let mut seq = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let now = agg.now();
                agg.record_at(series, 1.0, now).unwrap();
                let m = now.div_euclid(60 * NS) * 60;
                *per.entry(m).or_default() += 1;
                if seq.last() != Some(&m) {
                    seq.push(m);
                }
            }
            (per, seq)
        }));
    }
    let mut db = Db::new();
    for m in 1..200 {
        save(&agg, "c", &mut db, true);
        clock.set((T0 + 60 * m) * NS);
    }
    stop.store(true, Ordering::Relaxed);
    let mut want: BTreeMap<i64, u64> = BTreeMap::new();
    let mut seqs = Vec::new();
    for t in threads {
        let (per, seq) = t.join().unwrap();
        for (k, v) in per {
            *want.entry(k).or_default() += v;
        }
        seqs.push(seq);
    }
    save(&agg, "c", &mut db, false);
    let drops = agg.drops();
    let got: BTreeMap<i64, u64> = only(&db, Resolution::Min1).iter().map(|b| (b.0, b.1)).collect();
    let mut missing = 0;
    for (k, v) in &want {
        let g = got.get(k).copied().unwrap_or(0);
        assert!(g <= *v, "minute {} saved {g} of {v}", (k - T0) / 60);
        missing += v - g;
    }
    assert!(
        got.keys().all(|k| want.contains_key(k)),
        "a minute nobody recorded was saved"
    );
    if missing != drops.stale[0] + drops.unsaved[0] {
        for s in &seqs {
            eprintln!(
                "a thread's minutes: {:?}",
                s.iter().map(|m| (m - T0) / 60).collect::<Vec<_>>()
            );
        }
        panic!("{missing} missing at 1min, {drops:?}");
    }
}
