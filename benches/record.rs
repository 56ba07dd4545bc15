//! Single-thread record cost: ringmetrics by handle and by key, side by side
//! with a relaxed `fetch_add` (the floor), a `Mutex<HashMap>` aggregator and
//! the `metrics` crate's counter.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics::{Counter, CounterFn};
use ringmetrics::{Aggregator, Config, Kind, Resolution};
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
}

criterion_group!(benches, record);
criterion_main!(benches);
