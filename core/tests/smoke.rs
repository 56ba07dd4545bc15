use std::sync::Arc;

use ringmetrics::*;

const T0: i64 = 1_700_000_000; // a minute boundary? 1_700_000_000 % 60 == 20

#[test]
fn counter_gauge_histogram_basic() {
    let clock = ManualClock::from_secs(T0 - T0 % 86400);
    let agg = Aggregator::with_clock(Config::with_capacity(16), Arc::new(clock.clone())).unwrap();
    let c = agg.register(Kind::Counter, "jobs", "count").unwrap();
    agg.record(c, 1.0).unwrap();
    agg.record(c, 2.0).unwrap();
    clock.advance_secs(61);
    agg.record(c, 4.0).unwrap();
    let day0 = T0 - T0 % 86400;
    let m = agg.snapshot(c, Resolution::Min1, 0, i64::MAX).unwrap();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].start, day0);
    assert_eq!(m[0].sum, 3.0);
    assert_eq!(m[0].count, 2);
    assert_eq!(m[1].start, day0 + 60);
    assert_eq!(m[1].sum, 4.0);
    let d = agg.snapshot(c, Resolution::Day1, 0, i64::MAX).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].sum, 7.0);
    assert_eq!(d[0].count, 3);
    assert_eq!(d[0].min, 1.0);
    assert_eq!(d[0].max, 4.0);
    assert_eq!(d[0].last, 4.0);

    agg.record_gauge("g", 5.0).unwrap();
    clock.advance(1);
    agg.record_gauge("g", 3.0).unwrap();
    let g = agg.register(Kind::Gauge, "g", "number").unwrap();
    let h = agg.snapshot(g, Resolution::Hour1, 0, i64::MAX).unwrap();
    assert_eq!(h[0].last, 3.0);
    assert!(agg.increment_counter("g", 1.0).is_err());
    assert_eq!(agg.drops().get(DropReason::Conflict), 1);
    assert!(agg.increment_counter("x", f64::NAN).is_err());
    assert!(agg.lookup("x").is_none());
}

/// Threads on stripes and on the shared path record while a reader reads,
/// across a rollover: small enough for Miri's data-race detector
/// (`scripts/miri.sh`), exact totals.
#[test]
fn stripes_and_shared_path_together() {
    let clock = ManualClock::from_secs(1_767_225_600);
    let config = Config {
        writers: 2,
        ..Config::with_capacity(2)
    };
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let s = agg.register(Kind::Histogram, "h", "number").unwrap();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (agg, clock) = (agg.clone(), clock.clone());
            std::thread::spawn(move || {
                for n in 0..20 {
                    agg.record(s, 1.0).unwrap();
                    if i == 0 && n == 10 {
                        clock.advance_secs(60);
                    }
                }
            })
        })
        .collect();
    for _ in 0..5 {
        for b in agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2).unwrap() {
            assert_eq!((b.sum, b.min, b.max), (b.count as f64, 1.0, 1.0), "{b:?}");
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let total: u64 = agg
        .snapshot(s, Resolution::Hour1, 0, i64::MAX / 2)
        .unwrap()
        .iter()
        .map(|b| b.count)
        .sum();
    assert_eq!(total, 60);
}
