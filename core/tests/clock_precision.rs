//! A gauge's `sampled_at` is precise to (better than) a microsecond on the
//! system clock, so "latest" across workers is decided by time, as Chancy
//! does, and not by a 4 ms tick. Counters and histograms keep the coarse
//! clock (their `sampled_at` decides nothing).

use std::time::{Duration, Instant};

use ringmetrics::*;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn latest(agg: &Aggregator, s: Series) -> Bucket {
    *agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2)
        .unwrap()
        .last()
        .unwrap()
}

#[test]
fn gauge_samples_20_microseconds_apart_have_distinct_times() {
    let agg = Aggregator::new(Config::with_capacity(4)).unwrap();
    let g = agg.register(Kind::Gauge, "queue:depth", "number").unwrap();
    let mut prev = None;
    for i in 0..10 {
        agg.record(g, i as f64).unwrap();
        let b = latest(&agg, g);
        assert_eq!(b.last, i as f64);
        if let Some(p) = prev {
            // A new minute may start between two samples: compare only
            // within one.
            if b.count > 1 {
                assert!(
                    b.sampled_at > p,
                    "sample {i}: sampled_at {} not after {p}",
                    b.sampled_at
                );
            }
        }
        prev = Some(b.sampled_at);
        spin(Duration::from_micros(20));
    }
}

#[test]
fn the_later_of_two_threads_gauge_samples_wins_by_time() {
    use std::sync::mpsc::{Sender, channel};
    let agg = std::sync::Arc::new(Aggregator::new(Config::with_capacity(4)).unwrap());
    let g = agg.register(Kind::Gauge, "queue:depth", "number").unwrap();
    let claim = agg.register(Kind::Counter, "claim", "count").unwrap();
    // Two live threads, each holding its own writer stripe; `low` claims
    // first (the lower slot). Whoever is read or folded last wins a tie of
    // times, and that is the higher slot: so `high` records first and `low`
    // 20 µs later, and `low`'s sample must win by its time.
    let worker = |a: std::sync::Arc<Aggregator>| {
        let (tx, rx) = channel::<(f64, Sender<()>)>();
        let h = std::thread::spawn(move || {
            a.record(claim, 1.0).unwrap();
            for (v, done) in rx {
                a.record(g, v).unwrap();
                done.send(()).unwrap();
            }
        });
        (tx, h)
    };
    let run = |w: &Sender<(f64, Sender<()>)>, v: f64| {
        let (tx, rx) = channel();
        w.send((v, tx)).unwrap();
        rx.recv().unwrap();
    };
    let (low, hl) = worker(agg.clone());
    run(&low, 0.0);
    let (high, hh) = worker(agg.clone());
    run(&high, 0.0);
    for round in 0..5 {
        run(&high, 1.0);
        spin(Duration::from_micros(20));
        run(&low, 2.0);
        let b = latest(&agg, g);
        if b.count >= 2 {
            assert_eq!(b.last, 2.0, "round {round}: {b:?}");
        }
    }
    drop((low, high));
    hl.join().unwrap();
    hh.join().unwrap();
}
