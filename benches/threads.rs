//! Throughput with two threads: distinct series (should scale) and the same
//! series (contended), against one thread.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringmetrics::{Aggregator, Config, Kind};

const PER_THREAD: u64 = 1_000_000;

fn run(agg: &Aggregator, series: &[ringmetrics::Series]) -> Duration {
    let barrier = Barrier::new(series.len());
    let start = Instant::now();
    std::thread::scope(|s| {
        for &h in series {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..PER_THREAD {
                    let _ = agg.record(h, 1.0);
                }
            });
        }
    });
    start.elapsed()
}

fn threads(c: &mut Criterion) {
    let agg = Aggregator::new(Config::default()).unwrap();
    let a = agg.register(Kind::Counter, "a", "count").unwrap();
    let b = agg.register(Kind::Counter, "b", "count").unwrap();
    let mut g = c.benchmark_group("record_threads");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PER_THREAD));
    g.bench_function("1 thread", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| run(&agg, &[a])).sum())
    });
    g.throughput(Throughput::Elements(2 * PER_THREAD));
    g.bench_function("2 threads, distinct series", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| run(&agg, &[a, b])).sum())
    });
    g.bench_function("2 threads, same series", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| run(&agg, &[a, a])).sum())
    });
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
