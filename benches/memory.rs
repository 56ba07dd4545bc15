//! Memory: bytes reserved per series, and resident memory for 10,000 series
//! recorded once a minute for two simulated hours, with Chancy's full ring
//! depths and with the persisted depths a syncer allows. Prints a table.

use std::sync::Arc;

use ringmetrics::{Aggregator, Config, Kind, ManualClock};
use ringmetrics_benches::resident_bytes;

fn measure(name: &str, config: Config) {
    let before = resident_bytes();
    let clock = ManualClock::from_secs(1_767_225_600);
    let agg = Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap();
    let empty = resident_bytes();
    let series: Vec<_> = (0..10_000)
        .map(|i| {
            agg.register(Kind::Histogram, &format!("job:{i}:execution_time"), "seconds")
                .unwrap()
        })
        .collect();
    for _ in 0..120 {
        for s in &series {
            agg.record(*s, 0.5).unwrap();
        }
        clock.advance_secs(60);
    }
    let after = resident_bytes();
    println!(
        "| {name} | {} | {:.1} MiB | {:.1} MiB | {:.0} |",
        agg.bytes_per_series(),
        agg.allocated_bytes() as f64 / 1048576.0,
        (after - before) as f64 / 1048576.0,
        (after - empty) as f64 / 10_000.0,
    );
}

/// Resident bytes right after construction, before any series is used.
fn construction(capacity: usize) {
    let before = resident_bytes();
    let agg = Aggregator::new(Config::with_capacity(capacity)).unwrap();
    let after = resident_bytes();
    println!(
        "| {capacity} | {:.1} MiB | {:.2} MiB |",
        agg.allocated_bytes() as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1048576.0,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / cargo test --benches
    }
    println!("| series capacity (default config) | reserved | resident right after construction |");
    println!("|---:|---:|---:|");
    construction(10_000);
    construction(1_000_000);
    println!();
    println!(
        "| rings (1min/5min/1hour/1day) | reserved bytes per series | reserved for 10,240 series | resident after 10,000 series x 2 h | resident bytes per used series |"
    );
    println!("|---|---:|---:|---:|---:|");
    measure("Chancy's defaults 60/288/168/90", Config::with_capacity(10_240));
    measure("persisted 24/24/24/12", Config::with_capacity(10_240).persisted());
}
