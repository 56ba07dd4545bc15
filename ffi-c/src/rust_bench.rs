//! A Rust side for `tests/c/bench.sh` that C can be fairly held to: the
//! loops of `core/examples/bench_record.rs`, with every argument the C call
//! passes (kind, key, unit, value) hidden from the optimizer, as they are
//! behind the C ABI.
//!
//! In the core's example the value `1.0` and the unit `"count"` are
//! constants the optimizer sees. Its private copy of the core's
//! `Aggregator::record_inner` has only those two call sites, both passing
//! `1.0`, so LLVM specializes it for that value (its finiteness check is
//! gone), and the unit comparison folds against the literal instead of
//! calling `memcmp`. A C caller's value and unit are run-time data: no
//! build of the library can do that for it. (Counted with valgrind on a
//! copy of the example, that is 11 to 17 instructions per record by handle
//! and about 50 by key, depending on the core's version.)
//!
//! Prints `rust_opaque_handle_ns X` and `rust_opaque_key_ns Y` (medians of
//! `RM_BENCH_RUNS` (7) runs of `RM_BENCH_N` (5M) calls; `RM_BENCH_ONLY=handle`
//! or `key` runs one loop, for counting instructions under valgrind):
//!
//! ```sh
//! cargo test --release -p ringmetrics-ffi --lib rust_bench -- --ignored --nocapture
//! ```

use std::hint::black_box;
use std::time::Instant;

use ringmetrics::{Aggregator, Config, Kind};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "a benchmark, run by tests/c/bench.sh"]
fn rust_bench() {
    let agg = Aggregator::new(Config::default()).expect("aggregator");
    let s = agg.register(Kind::Counter, "jobs:done", "count").expect("register");
    let (n, runs) = (env("RM_BENCH_N", 5_000_000), env("RM_BENCH_RUNS", 7).max(1) as usize);
    let only = std::env::var("RM_BENCH_ONLY").unwrap_or_default();
    let (mut handle, mut key) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..if only == "key" { 0 } else { n } {
            let _ = black_box(agg.record(black_box(s), black_box(1.0)));
        }
        handle.push(t.elapsed().as_nanos() as f64 / n.max(1) as f64);
        let t = Instant::now();
        for _ in 0..if only == "handle" { 0 } else { n } {
            let _ = black_box(agg.record_key(
                black_box(Kind::Counter),
                black_box("jobs:done"),
                black_box("count"),
                black_box(1.0),
            ));
        }
        key.push(t.elapsed().as_nanos() as f64 / n.max(1) as f64);
    }
    handle.sort_by(f64::total_cmp);
    key.sort_by(f64::total_cmp);
    println!(
        "rust_opaque_handle_ns {:.2}\nrust_opaque_key_ns {:.2}",
        handle[runs / 2],
        key[runs / 2]
    );
}
