//! "Pages of unused series are never touched": resident memory right after
//! construction stays small, however many series the aggregator can hold.
//! One test in its own binary, so no other test allocates meanwhile.

use ringmetrics::{Aggregator, Config, Kind};

/// Resident bytes of this process (VmRSS).
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[test]
#[cfg(target_os = "linux")]
fn construction_touches_no_per_series_pages() {
    const MIB: usize = 1 << 20;
    for (capacity, limit) in [(10_000, 4 * MIB), (1_000_000, 16 * MIB)] {
        let before = resident();
        let agg = Aggregator::new(Config::with_capacity(capacity)).unwrap();
        let empty = resident();
        assert!(
            empty.saturating_sub(before) < limit,
            "{capacity} series: {} bytes resident right after construction (reserved {})",
            empty - before,
            agg.allocated_bytes()
        );
        // Using a few series makes only their pages resident.
        for i in 0..100 {
            let s = agg.register(Kind::Counter, &format!("k{i}"), "count").unwrap();
            agg.record(s, 1.0).unwrap();
        }
        assert_eq!(agg.len(), 100);
        let used = resident();
        assert!(
            used.saturating_sub(before) < limit + 8 * MIB,
            "{capacity} series, 100 used: {} bytes resident",
            used - before
        );
        drop(agg);
    }
}
