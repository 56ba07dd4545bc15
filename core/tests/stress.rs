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

#[test]
fn exact_totals_and_no_torn_reads_across_rollovers() {
    let clock = ManualClock::from_secs(T0);
    let agg = Arc::new(Aggregator::with_clock(Config::with_capacity(16), Arc::new(clock.clone())).unwrap());
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
