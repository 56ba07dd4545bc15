//! A fixed loop of records for instruction counting under callgrind:
//! `valgrind --tool=callgrind target/release/examples/record_loop N [WHAT]`.
//! Records N times by handle, then N times by key (`WHAT` = `both`, the
//! default); or N times one way: `handle` (counter, writer stripe), `gauge`
//! (gauge, writer stripe), `shared` (counter, shared accumulator: writers 0),
//! `snapshot` (N snapshots of a series 8 threads' worth of stripes hold).
//! Per-record cost: (count(N) - count(0)) / N. With `RM_TIME=1` it times
//! instead: the fastest of 9 rounds of N, in ns per call (the fastest
//! round is the one least disturbed on a shared machine).

use std::hint::black_box;

use ringmetrics::{Aggregator, Config, Kind, Resolution};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let what = std::env::args().nth(2).unwrap_or_else(|| "both".into());
    let mut config = Config::default();
    if what == "shared" {
        config.writers = 0;
    }
    let agg = Aggregator::new(config).expect("aggregator");
    let kind = if what == "gauge" { Kind::Gauge } else { Kind::Counter };
    let s = agg.register(kind, "jobs:done", kind.default_unit()).expect("register");
    let _ = agg.record(s, 1.0); // start the minute outside the count
    if std::env::var_os("RM_TIME").is_some() {
        let mut best = f64::INFINITY;
        for _ in 0..9 {
            let t = std::time::Instant::now();
            for _ in 0..n {
                let _ = black_box(agg.record(black_box(s), 1.0));
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        println!("{what} {best:.2} ns");
        return;
    }
    match what.as_str() {
        "handle" | "gauge" | "shared" => {
            for _ in 0..n {
                let _ = black_box(agg.record(black_box(s), 1.0));
            }
        }
        "snapshot" => {
            let mut out = Vec::with_capacity(64);
            for _ in 0..n {
                let _ = black_box(agg.snapshot_into(s, Resolution::Min1, 0, i64::MAX / 2, &mut out));
            }
        }
        _ => {
            for _ in 0..n {
                let _ = black_box(agg.record(black_box(s), 1.0));
            }
            for _ in 0..n {
                let _ = black_box(agg.record_key(kind, black_box("jobs:done"), kind.default_unit(), 1.0));
            }
        }
    }
}
