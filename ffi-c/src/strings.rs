//! Strings and byte views from C: keys and units as pointer + length,
//! configuration strings NUL-terminated. A key or unit length over its
//! limit is refused before the pointer is read.

use std::ffi::{CStr, c_char};

use ringmetrics::{DropReason, Kind};

use crate::result::remember;
use crate::rm_result::{self, *};

/// Longest key a caller may pass, in bytes (the core's limit, Chancy's).
/// A longer `key_len` is refused before a byte of the key is read.
pub(crate) const MAX_KEY_BYTES: usize = ringmetrics::validate::MAX_KEY_BYTES;

/// Longest unit a caller may pass, in bytes: 64 characters of at most 4
/// UTF-8 bytes each. A longer `unit_len` is refused before a byte of the
/// unit is read; a shorter one with more than 64 characters is refused by
/// the core.
pub(crate) const MAX_UNIT_BYTES: usize = 4 * ringmetrics::validate::MAX_UNIT_CHARS;

/// A `&str` from pointer + length; NULL with length 0 is the empty string.
/// A length over `max` is `Err(too_long)`, with nothing read.
fn text<'a>(ptr: *const c_char, len: usize, max: usize, too_long: rm_result) -> Result<&'a str, rm_result> {
    if len > max {
        return Err(refuse_length(len, max, too_long));
    }
    if ptr.is_null() {
        return if len == 0 { Ok("") } else { Err(RM_NULL_POINTER) };
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`, and
    // `len <= max` (at most 1024 bytes), far below `isize::MAX`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    // Keys and units are nearly always ASCII: a word-at-a-time check, where
    // `from_utf8` walks a short string byte by byte.
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| {
        remember("a string was not valid UTF-8".into());
        RM_INVALID_UTF8
    })
}

#[cold]
#[inline(never)]
fn refuse_length(len: usize, max: usize, code: rm_result) -> rm_result {
    let what = if code == RM_INVALID_KEY { "key" } else { "unit" };
    remember(format!(
        "the {what} length {len} is over the limit of {max} bytes: nothing was read"
    ));
    code
}

/// A key from pointer + length, as text (`RM_INVALID_KEY` for a length
/// over [`MAX_KEY_BYTES`], unread).
#[inline]
pub(crate) fn key_text<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, rm_result> {
    text(ptr, len, MAX_KEY_BYTES, RM_INVALID_KEY)
}

/// A unit from pointer + length, as text (`RM_INVALID_UNIT` for a length
/// over [`MAX_UNIT_BYTES`], unread).
#[inline]
pub(crate) fn unit_text<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, rm_result> {
    text(ptr, len, MAX_UNIT_BYTES, RM_INVALID_UNIT)
}

/// Raw bytes from pointer + length: `None` for NULL with a length, or for a
/// length over `max` (then nothing is read: the slow path refuses it).
#[inline(always)]
pub(crate) fn bytes<'a>(ptr: *const c_char, len: usize, max: usize) -> Option<&'a [u8]> {
    if len > max {
        return None;
    }
    if ptr.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`, and
    // `len <= max`, far below `isize::MAX`.
    Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

/// A NUL-terminated `&str`; NULL gives `None`.
pub(crate) fn cstr<'a>(ptr: *const c_char) -> Result<Option<&'a str>, rm_result> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(Some).map_err(|_| RM_INVALID_UTF8)
}

/// A key and unit given as pointer + length, as text: the unit NULL/0 is
/// the kind's default. On failure, the result code and the drop reason the
/// bad argument falls under.
pub(crate) fn key_and_unit<'a>(
    kind: Kind,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
) -> Result<(&'a str, &'a str), (rm_result, DropReason)> {
    let key = key_text(key, key_len).map_err(|e| (e, DropReason::InvalidKey))?;
    let unit = match unit_text(unit, unit_len) {
        Ok("") => kind.default_unit(),
        Ok(u) => u,
        Err(e) => return Err((e, DropReason::InvalidUnit)),
    };
    Ok((key, unit))
}
