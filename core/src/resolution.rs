//! The four resolutions and the bucket and chunk arithmetic Chancy uses.

use std::fmt;

/// Buckets per stored chunk row (Chancy's `CHUNK_SIZE`).
pub const CHUNK_BUCKETS: i64 = 12;

/// A bucket width. Chancy stores exactly these four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Resolution {
    /// 60-second buckets (`"1min"`).
    Min1 = 0,
    /// 300-second buckets (`"5min"`).
    Min5 = 1,
    /// 3,600-second buckets (`"1hour"`).
    Hour1 = 2,
    /// 86,400-second buckets (`"1day"`).
    Day1 = 3,
}

impl Resolution {
    /// All resolutions, finest first.
    pub const ALL: [Resolution; 4] = [Resolution::Min1, Resolution::Min5, Resolution::Hour1, Resolution::Day1];

    /// Bucket width in seconds (60, 300, 3600, 86400).
    #[inline]
    pub const fn seconds(self) -> i64 {
        match self {
            Resolution::Min1 => 60,
            Resolution::Min5 => 300,
            Resolution::Hour1 => 3600,
            Resolution::Day1 => 86400,
        }
    }

    /// Chancy's name: `"1min"`, `"5min"`, `"1hour"` or `"1day"`.
    pub const fn name(self) -> &'static str {
        match self {
            Resolution::Min1 => "1min",
            Resolution::Min5 => "5min",
            Resolution::Hour1 => "1hour",
            Resolution::Day1 => "1day",
        }
    }

    /// Parse Chancy's name.
    pub fn from_name(name: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The resolution whose width is `seconds`.
    pub fn from_seconds(seconds: i64) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.seconds() == seconds)
    }

    /// Index 0..4, finest first.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Bucket number of a time in whole seconds: `floor(secs / width)`.
    #[inline]
    pub const fn bucket_of(self, secs: i64) -> i64 {
        secs.div_euclid(self.seconds())
    }

    /// Start, in seconds, of a bucket number.
    #[inline]
    pub const fn bucket_start(self, bucket: i64) -> i64 {
        bucket * self.seconds()
    }

    /// Start, in seconds, of the 12-bucket chunk holding a bucket number:
    /// `floor(bucket_start / (12 * width)) * (12 * width)`.
    #[inline]
    pub const fn chunk_start(self, bucket: i64) -> i64 {
        bucket.div_euclid(CHUNK_BUCKETS) * CHUNK_BUCKETS * self.seconds()
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
