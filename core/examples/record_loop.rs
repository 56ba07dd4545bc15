//! A fixed loop of records for instruction counting under callgrind:
//! `valgrind --tool=callgrind target/release/examples/record_loop N`.
//! Records N times by handle, then N times by key.

use std::hint::black_box;

use ringmetrics::{Aggregator, Config, Kind};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let agg = Aggregator::new(Config::default()).expect("aggregator");
    let s = agg.register(Kind::Counter, "jobs:done", "count").expect("register");
    for _ in 0..n {
        let _ = black_box(agg.record(black_box(s), 1.0));
    }
    for _ in 0..n {
        let _ = black_box(agg.record_key(Kind::Counter, black_box("jobs:done"), "count", 1.0));
    }
}
