//! Chancy's retention rule, shared by the writer (which must never bring
//! back a chunk that `cleanup` removes) and `cleanup` itself.

use ringmetrics::{CHUNK_BUCKETS, Resolution};

/// Chancy's defaults: `min(max_points * width, maximum_metric_age)` with
/// 60/288/168/90 points and 90 days, finest resolution first.
pub const DEFAULT_RETENTION_SECS: [i64; 4] = [60 * 60, 288 * 300, 168 * 3600, 90 * 86400];

/// The start of the oldest chunk Chancy keeps at `now_secs`: `cleanup`
/// deletes every chunk that starts before it (Chancy 0.26's
/// `bucket_time(bucket_time(now) + width - retention, 12 * width)`).
pub fn first_kept_chunk(r: Resolution, now_secs: i64, retention_secs: i64) -> i64 {
    let width = r.seconds();
    let cutoff = r.bucket_start(r.bucket_of(now_secs)) + width - retention_secs;
    cutoff.div_euclid(width * CHUNK_BUCKETS) * width * CHUNK_BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_chancys_cutoff() {
        // 1min, an hour of retention, at 10:30:15: the cutoff bucket is
        // 09:31, whose chunk starts at 09:24.
        let now = 10 * 3600 + 30 * 60 + 15;
        assert_eq!(first_kept_chunk(Resolution::Min1, now, 3600), 9 * 3600 + 24 * 60);
        // 1day, 90 days: chunks of 12 days.
        let day = 86400;
        let now = 400 * day + 5;
        let cutoff = 400 * day + day - 90 * day;
        assert_eq!(
            first_kept_chunk(Resolution::Day1, now, 90 * day),
            cutoff.div_euclid(12 * day) * 12 * day
        );
    }
}
