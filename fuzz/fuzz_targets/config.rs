//! Arbitrary configurations (every field around its cap, and totals around
//! `MAX_RESERVED_BYTES`) through `Aggregator::new`: it builds exactly when
//! the documented rules allow, refuses naming the first bad field, reports
//! refused memory as `AllocationFailed`, and never panics or aborts; a
//! small built aggregator records and reads back (`configs::check`).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringmetrics::{Config, MAX_BUCKETS, MAX_KEY_BYTES, MAX_SERIES, MAX_SPILL, MAX_WRITERS};
use ringmetrics_tests::model::configs::check;

/// A size: mostly small, else right at, just past, or anywhere below `cap`,
/// or any bit pattern.
fn size(u: &mut Unstructured, cap: usize) -> Result<usize> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=4 => u.int_in_range(1..=64)?,
        5 => cap,
        6 => cap.saturating_add(1),
        7 => u.int_in_range(0..=cap)?,
        8 => 0,
        _ => u.arbitrary()?,
    })
}

fn config(u: &mut Unstructured) -> Result<Config> {
    Ok(Config {
        capacity: size(u, MAX_SERIES)?,
        key_bytes: size(u, MAX_KEY_BYTES)?,
        buckets: [
            size(u, MAX_BUCKETS)?,
            size(u, MAX_BUCKETS)?,
            size(u, MAX_BUCKETS)?,
            size(u, MAX_BUCKETS)?,
        ],
        max_future_secs: match u.int_in_range(0..=3u8)? {
            0 => 60,
            1 => u.int_in_range(-1..=86_401)?,
            _ => u.arbitrary()?,
        },
        writers: size(u, MAX_WRITERS)?,
        spill: size(u, MAX_SPILL)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(c) = config(&mut u)
        && let Err(e) = check(c, 64 << 20)
    {
        panic!("{e}");
    }
});
