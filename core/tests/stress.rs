//! Stress: several threads record into shared and distinct series across
//! many minute rollovers while readers snapshot; totals are exact and no
//! snapshot is ever torn. Bounded: a fixed number of records per thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use ringmetrics::*;

const T0: i64 = 1_767_225_600;
const THREADS: usize = 4;
const PER_THREAD: u64 = 200_000;

/// The tests of this file one at a time: writer slots are per process,
/// and a test that checks who holds one must not race another's threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn exact_totals_and_no_torn_reads_shared_path() {
    let _serial = serial();
    exact_totals_and_no_torn_reads_across_rollovers(0);
}

#[test]
fn exact_totals_and_no_torn_reads_stripes_and_shared() {
    let _serial = serial();
    exact_totals_and_no_torn_reads_across_rollovers(2);
}

#[test]
fn exact_totals_and_no_torn_reads_all_striped() {
    let _serial = serial();
    exact_totals_and_no_torn_reads_across_rollovers(DEFAULT_WRITERS);
}

/// `writers` stripes: 0 puts all four writers on the shared accumulator, 2
/// gives two of them (at least) a stripe, 8 gives each its own.
fn exact_totals_and_no_torn_reads_across_rollovers(writers: usize) {
    let clock = ManualClock::from_secs(T0);
    let config = Config {
        writers,
        ..Config::with_capacity(16)
    };
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let shared = agg.register(Kind::Histogram, "shared", "number").unwrap();
    let own: Vec<Series> = (0..THREADS)
        .map(|i| agg.register(Kind::Histogram, &format!("own:{i}"), "number").unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));

    // The clock moves a minute every ~20k records of thread 0: dozens of
    // rollovers while everybody records.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (agg, stop) = (agg.clone(), stop.clone());
            thread::spawn(move || {
                let mut checked = 0u64;
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for r in Resolution::ALL {
                        agg.snapshot_into(shared, r, 0, i64::MAX / 2, &mut buf).unwrap();
                        for b in &buf {
                            assert_eq!(b.sum, b.count as f64, "torn bucket {b:?} at {r}");
                            assert_eq!((b.min, b.max, b.last), (1.0, 1.0, 1.0), "torn bucket {b:?} at {r}");
                            checked += 1;
                        }
                    }
                }
                checked
            })
        })
        .collect();
    let writers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (agg, clock, mine) = (agg.clone(), clock.clone(), own[i]);
            thread::spawn(move || {
                for n in 0..PER_THREAD {
                    agg.record(shared, 1.0).unwrap();
                    agg.record(mine, 1.0).unwrap();
                    if i == 0 && n % 20_000 == 0 {
                        clock.advance_secs(61);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checked > 0, "readers never saw data");

    // Rings at the default depth hold everything recorded (< 60 minutes of
    // rollovers at 1min, one day at coarser ones).
    for r in Resolution::ALL {
        let buckets = agg.snapshot(shared, r, 0, i64::MAX / 2).unwrap();
        let count: u64 = buckets.iter().map(|b| b.count).sum();
        assert_eq!(count, THREADS as u64 * PER_THREAD, "shared total at {r}");
        assert_eq!(
            buckets.iter().map(|b| b.sum).sum::<f64>(),
            (THREADS as u64 * PER_THREAD) as f64
        );
        for s in &own {
            let count: u64 = agg
                .snapshot(*s, r, 0, i64::MAX / 2)
                .unwrap()
                .iter()
                .map(|b| b.count)
                .sum();
            assert_eq!(count, PER_THREAD, "own total at {r}");
        }
    }
    let m = agg.snapshot(shared, Resolution::Min1, 0, i64::MAX / 2).unwrap();
    assert!(m.len() > 5, "expected many minutes, got {}", m.len());
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
}

#[test]
fn concurrent_registration_of_the_same_and_new_keys() {
    let _serial = serial();
    let agg = Arc::new(Aggregator::new(Config::with_capacity(1000)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let agg = agg.clone();
            thread::spawn(move || {
                for i in 0..400 {
                    // Every thread registers keys 0..200 (shared) and its own.
                    let key = if i < 200 { format!("k:{i}") } else { format!("t{t}:{i}") };
                    agg.increment_counter(&key, 1.0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(agg.len(), 200 + 4 * 200);
    for i in 0..200 {
        let info = agg.lookup(&format!("k:{i}")).unwrap();
        let s = agg.series(info.id).unwrap();
        let total: f64 = agg
            .snapshot(s, Resolution::Day1, 0, i64::MAX / 2)
            .unwrap()
            .iter()
            .map(|b| b.sum)
            .sum();
        assert_eq!(total, 4.0);
    }
}

/// Short-lived threads one after another: each exiting thread gives its
/// writer slot back, so thread after thread records through a stripe (not
/// the shared path), and a new owner of a stripe continues the previous
/// owner's minute without losing or doubling anything.
#[test]
fn exiting_threads_hand_their_stripe_on() {
    let _serial = serial();
    let clock = ManualClock::from_secs(T0);
    let agg = Arc::new(Aggregator::with_clock(Config::with_capacity(4), Arc::new(clock.clone())).unwrap());
    let s = agg.register(Kind::Counter, "jobs", "count").unwrap();
    const ROUNDS: u64 = 1500; // more threads than there are writer slots
    for round in 0..ROUNDS {
        let (agg, clock) = (agg.clone(), clock.clone());
        let slot = thread::spawn(move || {
            for _ in 0..10 {
                agg.record(s, 1.0).unwrap();
            }
            if round % 100 == 99 {
                clock.advance_secs(60);
            }
            current_writer_slot()
        })
        .join()
        .unwrap();
        let slot = slot.expect("a recording thread holds a writer slot");
        assert!(
            (slot as usize) < DEFAULT_WRITERS,
            "slot {slot}: exited threads did not give theirs back"
        );
    }
    for r in Resolution::ALL {
        let total: u64 = agg
            .snapshot(s, r, 0, i64::MAX / 2)
            .unwrap()
            .iter()
            .map(|b| b.count)
            .sum();
        assert_eq!(total, ROUNDS * 10, "total at {r}");
    }
    assert_eq!(agg.drops().total(), 0);
}

/// Several threads churn (spawn, record, exit) while others keep their
/// stripes and a reader snapshots: exact totals, no torn bucket.
#[test]
fn churning_threads_with_a_reader() {
    let _serial = serial();
    let clock = ManualClock::from_secs(T0);
    let agg = Arc::new(Aggregator::with_clock(Config::with_capacity(4), Arc::new(clock.clone())).unwrap());
    let s = agg.register(Kind::Histogram, "h", "number").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (agg, stop) = (agg.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                agg.snapshot_into(s, Resolution::Min5, 0, i64::MAX / 2, &mut buf)
                    .unwrap();
                for b in &buf {
                    assert_eq!((b.sum, b.min, b.max), (b.count as f64, 1.0, 1.0), "torn bucket {b:?}");
                }
            }
        })
    };
    let steady: Vec<_> = (0..2)
        .map(|_| {
            let agg = agg.clone();
            thread::spawn(move || {
                for _ in 0..100_000 {
                    agg.record(s, 1.0).unwrap();
                }
            })
        })
        .collect();
    for round in 0..200 {
        let churn: Vec<_> = (0..3)
            .map(|_| {
                let agg = agg.clone();
                thread::spawn(move || {
                    for _ in 0..500 {
                        agg.record(s, 1.0).unwrap();
                    }
                })
            })
            .collect();
        for t in churn {
            t.join().unwrap();
        }
        if round % 20 == 0 {
            clock.advance_secs(60);
        }
    }
    for t in steady {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let total: u64 = agg
        .snapshot(s, Resolution::Day1, 0, i64::MAX / 2)
        .unwrap()
        .iter()
        .map(|b| b.count)
        .sum();
    assert_eq!(total, 2 * 100_000 + 200 * 3 * 500);
    assert_eq!(agg.drops().total(), 0);
}

/// The setting: 12 threads, 4 of them beyond the stripes (shared
/// path), recording into one series without pause while a reader reads it
/// over and over. Every read takes at most `OPTIMISTIC_READS + 1` tries
/// (then holds the writers off for one read), and nothing recorded is lost.
#[test]
fn reads_under_sustained_writes_take_bounded_tries() {
    let _serial = serial();
    let agg = Arc::new(Aggregator::new(Config::with_capacity(16)).unwrap());
    let s = agg.register(Kind::Counter, "hot", "count").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..12)
        .map(|_| {
            let (agg, stop) = (agg.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    agg.record(s, 1.0).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut most = 0;
    for _ in 0..2000 {
        let tries = agg.read_tries(s).unwrap();
        assert!(tries <= OPTIMISTIC_READS + 1, "{tries} tries");
        most = most.max(tries);
        agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let recorded: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let read: u64 = Resolution::ALL
        .iter()
        .map(|&r| {
            agg.snapshot(s, r, 0, i64::MAX / 2)
                .unwrap()
                .iter()
                .map(|b| b.count)
                .sum::<u64>()
        })
        .max()
        .unwrap();
    assert_eq!(read, recorded);
    eprintln!("most tries of one read: {most}");
}

/// The unsaved-bucket buffer under load: striped and shared writers record
/// across 300 minute rollovers into rings of two buckets while a saver
/// drains the buffer, reads what to save and marks it saved, as a syncer
/// does. Nothing hangs (evictions freeze and read other threads' stripes);
/// the day bucket is exact; per minute, what the saver holds (last read or
/// drained) never exceeds what was recorded, and what is missing is counted
/// as dropped.
#[test]
fn evictions_under_load_lose_nothing_uncounted() {
    let _serial = serial();
    const MINUTES: i64 = 300;
    let clock = ManualClock::from_secs(T0);
    let config = Config {
        buckets: [2, 2, 2, 2],
        writers: 4,
        spill: 1 << 20,
        ..Config::with_capacity(2)
    };
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let s = agg.register(Kind::Counter, "c", "count").unwrap();
    agg.start_saving();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let (agg, clock, stop) = (agg.clone(), clock.clone(), stop.clone());
            thread::spawn(move || {
                let mut per_minute = std::collections::HashMap::<i64, u64>::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = clock.now();
                    if agg.record_at(s, 1.0, t).is_ok() {
                        *per_minute.entry(t.div_euclid(60 * 1_000_000_000)).or_default() += 1;
                    }
                }
                per_minute
            })
        })
        .collect();
    let saver = {
        let (agg, stop) = (agg.clone(), stop.clone());
        thread::spawn(move || {
            let mut held = std::collections::HashMap::<i64, u64>::new();
            let mut data = SeriesData::default();
            let keep = |held: &mut std::collections::HashMap<i64, u64>, start: i64, count: u64| {
                let c = held.entry(start / 60).or_default();
                *c = (*c).max(count);
            };
            loop {
                let done = stop.load(Ordering::Relaxed);
                agg.drain_unsaved(|_, r, b| {
                    if r == Resolution::Min1 {
                        keep(&mut held, b.start, b.count);
                    }
                });
                agg.hold_unsaved(0);
                agg.read_series_to_save(s, &mut data).unwrap();
                for b in data.at(Resolution::Min1) {
                    keep(&mut held, b.start, b.count);
                }
                agg.mark_saved(s, data.version).unwrap();
                if done {
                    return held;
                }
                thread::yield_now();
            }
        })
    };
    for _ in 0..MINUTES {
        thread::sleep(std::time::Duration::from_micros(300));
        clock.advance_secs(60);
    }
    stop.store(true, Ordering::Relaxed);
    let mut recorded = std::collections::HashMap::<i64, u64>::new();
    for w in writers {
        for (m, n) in w.join().unwrap() {
            *recorded.entry(m).or_default() += n;
        }
    }
    // One more round after every writer stopped: the saver sees the end.
    let held = saver.join().unwrap();
    let mut data = SeriesData::default();
    agg.read_series_to_save(s, &mut data).unwrap();
    let mut held = held;
    for b in data.at(Resolution::Min1) {
        let c = held.entry(b.start / 60).or_default();
        *c = (*c).max(b.count);
    }
    agg.drain_unsaved(|_, r, b| {
        if r == Resolution::Min1 {
            let c = held.entry(b.start / 60).or_default();
            *c = (*c).max(b.count);
        }
    });
    let total: u64 = recorded.values().sum();
    assert!(total > 0);
    let day: u64 = agg
        .snapshot(s, Resolution::Day1, 0, i64::MAX / 2)
        .unwrap()
        .iter()
        .map(|b| b.count)
        .sum();
    assert_eq!(day, total, "the day bucket holds every record");
    for (m, n) in &held {
        assert!(
            n <= recorded.get(m).unwrap_or(&0),
            "minute {m}: held {n} of {recorded:?}"
        );
    }
    let d = agg.drops();
    let kept: u64 = held.values().sum();
    assert!(
        kept + d.stale[0] + d.expired[0] + d.unsaved[0] >= total,
        "kept {kept} + dropped {d:?} < recorded {total}"
    );
    assert_eq!(d.unsaved, [0; 4]);
}
