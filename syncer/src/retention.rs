//! Chancy's retention rule, shared by the writer (which must never bring
//! back a chunk that `cleanup` removes) and `cleanup` itself.

use ringmetrics::{CHUNK_BUCKETS, Resolution};

/// Chancy's defaults: `min(max_points * width, maximum_metric_age)` with
/// 60/288/168/90 points and 90 days, finest resolution first.
pub const DEFAULT_RETENTION_SECS: [i64; 4] = [60 * 60, 288 * 300, 168 * 3600, 90 * 86400];

/// The largest time, in seconds either side of the epoch, a bucket, window
/// or retention may reach (about the year 2255: nanoseconds since the
/// epoch still fit an `i64`). A longer retention keeps everything.
pub const MAX_SECS: i64 = 9_000_000_000;

/// The start of the oldest chunk Chancy keeps at `now_secs`: `cleanup`
/// deletes every chunk that starts before it (Chancy 0.26's
/// `bucket_time(bucket_time(now) + width - retention, 12 * width)`). A
/// retention beyond [`MAX_SECS`] counts as `MAX_SECS` (keep everything).
pub fn first_kept_chunk(r: Resolution, now_secs: i64, retention_secs: i64) -> i64 {
    let width = r.seconds();
    let now_secs = now_secs.clamp(-MAX_SECS, MAX_SECS);
    let cutoff = r.bucket_start(r.bucket_of(now_secs)) + width - retention_secs.min(MAX_SECS);
    cutoff.div_euclid(width * CHUNK_BUCKETS) * width * CHUNK_BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_too_long_to_count_keeps_everything() {
        for r in Resolution::ALL {
            let kept = first_kept_chunk(r, 1_767_225_600, i64::MAX);
            assert!(kept < -MAX_SECS / 2, "{r}: {kept}");
            assert!(kept.checked_mul(1_000_000_000).is_some(), "{r}: {kept} ns overflow");
        }
    }

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
