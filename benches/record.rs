//! Single-thread record cost: ringmetrics by handle and by key, side by side
//! with a relaxed `fetch_add` (the floor), a `Mutex<HashMap>` aggregator and
//! the `metrics` crate's counter; and the rarer record that rolls a minute
//! over (the fold into four rings), with and without a syncer saving.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics::{Counter, CounterFn};
use ringmetrics::{Aggregator, Config, Kind, ManualClock, Resolution};
use ringmetrics_benches::MutexAggregator;

/// The `metrics` crate's counter handle over an atomic, as its recorders
/// (metrics-util's `AtomicStorage`) back it.
struct AtomicCounter(AtomicU64);

impl CounterFn for AtomicCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::AcqRel);
    }
}

fn record(c: &mut Criterion) {
    let agg = Aggregator::new(Config::default()).unwrap();
    let counter = agg
        .register(Kind::Counter, "job:send_email:succeeded", "count")
        .unwrap();
    let hist = agg
        .register(Kind::Histogram, "job:send_email:execution_time", "seconds")
        .unwrap();
    let gauge = agg.register(Kind::Gauge, "queue:default:depth", "number").unwrap();
    let floor = AtomicU64::new(0);
    let mutex = MutexAggregator::default();
    let metrics_counter = Counter::from_arc(Arc::new(AtomicCounter(AtomicU64::new(0))));

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("floor: relaxed fetch_add", |b| {
        b.iter(|| floor.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.bench_function("ringmetrics: counter by handle", |b| {
        b.iter(|| agg.record(black_box(counter), 1.0))
    });
    g.bench_function("ringmetrics: histogram by handle", |b| {
        b.iter(|| agg.record(black_box(hist), 0.25))
    });
    g.bench_function("ringmetrics: gauge by handle", |b| {
        b.iter(|| agg.record(black_box(gauge), 3.0))
    });
    g.bench_function("ringmetrics: counter by existing key", |b| {
        b.iter(|| agg.increment_counter(black_box("job:send_email:succeeded"), 1.0))
    });
    g.bench_function("peer: Mutex<HashMap> by key", |b| {
        b.iter(|| mutex.record(black_box("job:send_email:succeeded"), 1.0))
    });
    g.bench_function("peer: metrics crate Counter::increment", |b| {
        b.iter(|| metrics_counter.increment(black_box(1)))
    });
    g.finish();

    let mut g = c.benchmark_group("snapshot");
    g.bench_function("one series at 5min (288 buckets)", |b| {
        b.iter(|| agg.snapshot(counter, Resolution::Min5, 0, i64::MAX / 2).unwrap())
    });
    let mut data = ringmetrics::SeriesData::default();
    g.bench_function("read_series (all resolutions)", |b| {
        b.iter(|| agg.read_series(counter, &mut data).unwrap())
    });
    g.finish();

    // Every record here starts a new minute: it folds the last one into
    // the four rings (persisted depths), evicting a bucket at 1min every
    // time. Saving, each bucket that leaves its ring unsaved goes to the
    // unsaved buffer, drained every 1,000 records as a syncer would.
    let mut g = c.benchmark_group("rollover");
    g.throughput(Throughput::Elements(1));
    for saving in [false, true] {
        let clock = ManualClock::from_secs(1_767_225_600);
        let agg = Aggregator::with_clock(Config::default().persisted(), Arc::new(clock.clone())).unwrap();
        let s = agg
            .register(Kind::Counter, "job:send_email:succeeded", "count")
            .unwrap();
        if saving {
            agg.start_saving();
        }
        let name = if saving {
            "counter into the next minute, a syncer saving"
        } else {
            "counter into the next minute, nothing saving"
        };
        let mut i = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                clock.advance_secs(60);
                agg.record(black_box(s), 1.0).unwrap();
                i += 1;
                if saving && i.is_multiple_of(1000) {
                    agg.drain_unsaved(|_, _, b| {
                        black_box(b);
                    });
                    agg.hold_unsaved(0);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
