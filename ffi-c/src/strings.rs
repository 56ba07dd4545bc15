//! Strings and byte views from C: keys and units as pointer + length,
//! configuration strings NUL-terminated.

use std::ffi::{CStr, c_char};

use ringmetrics::{DropReason, Kind};

use crate::result::remember;
use crate::rm_result::{self, *};

/// A `&str` from pointer + length; NULL with length 0 is the empty string.
pub(crate) fn text<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, rm_result> {
    if ptr.is_null() {
        return if len == 0 { Ok("") } else { Err(RM_NULL_POINTER) };
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`.
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

/// Raw bytes from pointer + length (`None` for NULL with a length).
#[inline]
pub(crate) fn bytes<'a>(ptr: *const c_char, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`.
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
    let key = text(key, key_len).map_err(|e| (e, DropReason::InvalidKey))?;
    let unit = match text(unit, unit_len) {
        Ok("") => kind.default_unit(),
        Ok(u) => u,
        Err(e) => return Err((e, DropReason::InvalidUnit)),
    };
    Ok((key, unit))
}
