//! The Rust side of tests/c/bench.sh (`cargo run --release -p ringmetrics --example bench_record`): the same loops as tests/c/bench.c,
//! calling the aggregator directly. Prints "rust_handle_ns X" and
//! "rust_key_ns Y" (medians of 7 runs of 5M calls).

use std::hint::black_box;
use std::time::Instant;

use ringmetrics::{Aggregator, Config, Kind};

fn main() {
    let agg = Aggregator::new(Config::default()).expect("aggregator");
    let s = agg.register(Kind::Counter, "jobs:done", "count").expect("register");
    let (n, runs) = (5_000_000u32, 7);
    let (mut handle, mut key) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..n {
            let _ = black_box(agg.record(black_box(s), 1.0));
        }
        handle.push(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            let _ = black_box(agg.record_key(Kind::Counter, black_box("jobs:done"), "count", 1.0));
        }
        key.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    handle.sort_by(f64::total_cmp);
    key.sort_by(f64::total_cmp);
    println!(
        "rust_handle_ns {:.2}\nrust_key_ns {:.2}",
        handle[runs / 2],
        key[runs / 2]
    );
}
