//! Input rules, exactly Chancy's: a key is 1..=1024 UTF-8 bytes without NUL,
//! a unit 1..=64 characters without NUL, a value finite.

use crate::error::Error;

/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest unit, in characters.
pub const MAX_UNIT_CHARS: usize = 64;

/// Check a key.
#[inline]
pub fn key(key: &str) -> Result<(), Error> {
    let len = key.len();
    if len == 0 {
        return Err(Error::InvalidKey {
            len,
            reason: "a key must not be empty",
        });
    }
    if len > MAX_KEY_BYTES {
        return Err(Error::InvalidKey {
            len,
            reason: "a key must be at most 1024 UTF-8 bytes",
        });
    }
    if key.as_bytes().contains(&0) {
        return Err(Error::InvalidKey {
            len,
            reason: "a key must not contain a NUL byte",
        });
    }
    Ok(())
}

/// Check a unit.
pub fn unit(unit: &str) -> Result<(), Error> {
    if unit.is_empty() {
        return Err(Error::InvalidUnit {
            reason: "a unit must not be empty",
        });
    }
    if unit.len() > MAX_UNIT_CHARS && unit.chars().count() > MAX_UNIT_CHARS {
        return Err(Error::InvalidUnit {
            reason: "a unit must be at most 64 characters",
        });
    }
    if unit.as_bytes().contains(&0) {
        return Err(Error::InvalidUnit {
            reason: "a unit must not contain a NUL byte",
        });
    }
    Ok(())
}

/// Check a value.
#[inline]
pub fn value(v: f64) -> Result<(), Error> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteValue(v))
    }
}
