//! Seconds from Python as durations. Every float that becomes a `Duration`
//! goes through here, so none reaches `Duration::from_secs_f64`, which
//! panics on NaN, negative and overflowing values.
//!
//! The rules (the C ABI's, `RM_MAX_DURATION_SECS`):
//! - a timeout is `0..=MAX_SECS` seconds; NaN, infinite, negative or larger
//!   raises ValueError (nothing is waited for or done);
//! - an interval (the sync interval, the retry backoff cap) is at least a
//!   nanosecond (1e-9 s); NaN, zero, negative or shorter raises ValueError. Over `MAX_SECS`, +infinity
//!   included, it is clamped to `MAX_SECS`: Chancy accepts any positive
//!   `sync_interval` (`Metrics(sync_interval=10**20)`), which means "no
//!   periodic sync" there, and means the same here: flushes on demand and
//!   the final flush at stop still write.

use std::time::Duration;

use crate::Error;

/// The longest duration accepted, in seconds (about 31.7 years).
pub(crate) const MAX_SECS: f64 = 1e9;

/// A timeout: `0..=MAX_SECS` seconds, else ValueError.
pub(crate) fn timeout(secs: f64) -> Result<Duration, Error> {
    if (0.0..=MAX_SECS).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Error::Value(format!(
            "timeout must be from 0 to {MAX_SECS:e} seconds, not {secs}"
        )))
    }
}

/// An interval named `name` (for the message): at least 1e-9 seconds (a
/// shorter one would round to zero), else ValueError; clamped to `MAX_SECS`.
pub(crate) fn interval(name: &str, secs: f64) -> Result<Duration, Error> {
    if secs >= 1e-9 {
        Ok(Duration::from_secs_f64(secs.min(MAX_SECS)))
    } else {
        Err(Error::Value(format!(
            "{name} must be at least 1e-9 seconds, not {secs}"
        )))
    }
}
