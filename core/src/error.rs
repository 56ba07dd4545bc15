//! The one error type of the core. Each variant names the bad value and the
//! rule it broke; every rejected record is also counted in [`crate::Drops`].

use std::fmt;

use crate::Kind;

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is out of range.
    InvalidConfig {
        /// The field's name, as in [`crate::Config`].
        field: &'static str,
        /// The rule it broke.
        reason: String,
    },
    /// The key is empty, longer than 1,024 UTF-8 bytes, or holds a NUL byte.
    InvalidKey {
        /// Its length in bytes.
        len: usize,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The unit is empty, longer than 64 characters, or holds a NUL byte.
    InvalidUnit {
        /// The rule it broke.
        reason: &'static str,
    },
    /// The value is NaN or infinite.
    NonFiniteValue(f64),
    /// The timestamp is before 1970 or too far in the future.
    InvalidTimestamp {
        /// Nanoseconds since the epoch.
        nanos: i64,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The key was registered with another kind or unit.
    Conflict {
        /// The key.
        key: String,
        /// What the key is registered as.
        existing: (Kind, String),
        /// What this call asked for.
        requested: (Kind, String),
    },
    /// Adding the value would make a bucket's sum infinite.
    Overflow {
        /// The key.
        key: String,
    },
    /// Every series slot (or every byte of key space) is in use.
    CapacityExhausted {
        /// `"series"` or `"key_bytes"`.
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// A record at an explicit time that no resolution could store: older
    /// than every ring's retention, or every slot already held a newer
    /// bucket. Counted per resolution in [`crate::Drops`].
    NotStored {
        /// The record's time, nanoseconds since the epoch.
        nanos: i64,
    },
    /// A handle from another aggregator, or a stale series id.
    UnknownSeries(u32),
    /// The operating system refused memory for an array of a valid
    /// configuration (address space or overcommit limits). Nothing was
    /// allocated; the process is unharmed.
    AllocationFailed {
        /// Which array (`"ring slots"`, `"writer stripes"`, ...).
        what: &'static str,
        /// The bytes asked for (`usize::MAX` when the size overflowed).
        bytes: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid config `{field}`: {reason}")
            }
            Error::InvalidKey { len, reason } => {
                write!(f, "invalid metric key ({len} bytes): {reason}")
            }
            Error::InvalidUnit { reason } => write!(f, "invalid unit: {reason}"),
            Error::NonFiniteValue(v) => write!(f, "metric value {v} is not finite"),
            Error::InvalidTimestamp { nanos, reason } => {
                write!(f, "invalid timestamp {nanos} ns: {reason}")
            }
            Error::Conflict {
                key,
                existing,
                requested,
            } => write!(
                f,
                "metric {key:?} is a {} in {:?}; cannot record it as a {} in {:?}",
                existing.0, existing.1, requested.0, requested.1
            ),
            Error::Overflow { key } => write!(f, "metric {key:?}: the bucket's sum would overflow"),
            Error::CapacityExhausted { what, limit } => {
                write!(f, "capacity exhausted: all {limit} {what} are in use")
            }
            Error::NotStored { nanos } => write!(
                f,
                "record at {nanos} ns not stored: older than every ring's retention or behind a newer bucket"
            ),
            Error::UnknownSeries(id) => write!(f, "unknown series id {id}"),
            Error::AllocationFailed { what, bytes } => {
                write!(f, "out of memory: could not reserve {bytes} bytes for the {what}")
            }
        }
    }
}

impl std::error::Error for Error {}
