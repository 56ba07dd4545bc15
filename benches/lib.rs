//! Peers the benchmarks compare against, written the obvious way.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A `Mutex<HashMap>` aggregator: key -> the current bucket of each of the
/// four resolutions (count, sum, min, max, last), as a first implementation
/// would do it.
#[derive(Default)]
pub struct MutexAggregator {
    inner: Mutex<HashMap<String, [Bucket; 4]>>,
}

/// (bucket number, count, sum, min, max, last)
type Bucket = (i64, u64, f64, f64, f64, f64);

impl MutexAggregator {
    pub fn record(&self, key: &str, value: f64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut map = self.inner.lock().unwrap();
        let entry = match map.get_mut(key) {
            Some(e) => e,
            None => map
                .entry(key.to_owned())
                .or_insert([(0, 0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 0.0); 4]),
        };
        for (i, width) in [60, 300, 3600, 86400].into_iter().enumerate() {
            let b = &mut entry[i];
            let bucket = now / width;
            if b.0 != bucket {
                *b = (bucket, 0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 0.0);
            }
            b.1 += 1;
            b.2 += value;
            b.3 = b.3.min(value);
            b.4 = b.4.max(value);
            b.5 = value;
        }
    }
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
pub fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}
