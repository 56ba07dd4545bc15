//! Result codes, the calling thread's error detail, and the panic boundary
//! every exported body runs in.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use ringmetrics_postgres::SyncError;

/// Every result code. Values are stable across releases.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rm_result {
    /// Success.
    RM_OK = 0,
    /// A required pointer argument was NULL.
    RM_NULL_POINTER = 1,
    /// A key, unit or string was not valid UTF-8.
    RM_INVALID_UTF8 = 2,
    /// The key is empty, longer than 1024 bytes, or holds a NUL byte (a
    /// `key_len` over 1024 is refused without reading the key).
    RM_INVALID_KEY = 3,
    /// The unit is longer than 64 characters or holds a NUL byte (a
    /// `unit_len` over 256 bytes is refused without reading the unit).
    RM_INVALID_UNIT = 4,
    /// The value is NaN or infinite.
    RM_NON_FINITE_VALUE = 5,
    /// The timestamp is before 1970 or too far ahead of the clock.
    RM_INVALID_TIMESTAMP = 6,
    /// The key exists with another kind or unit.
    RM_CONFLICT = 7,
    /// The bucket's sum would overflow.
    RM_OVERFLOW = 8,
    /// No series slot or key space left.
    RM_CAPACITY_EXHAUSTED = 9,
    /// The series handle belongs to another aggregator.
    RM_UNKNOWN_SERIES = 10,
    /// A configuration value is invalid (including an unparsable DSN).
    RM_INVALID_CONFIG = 11,
    /// The output buffer is too small; the needed size was written.
    RM_BUFFER_TOO_SMALL = 12,
    /// PostgreSQL failed (connection, query).
    RM_DATABASE = 13,
    /// The metrics tables are at another schema version.
    RM_SCHEMA_VERSION = 14,
    /// The syncer did not answer in time.
    RM_TIMEOUT = 15,
    /// The syncer has stopped.
    RM_STOPPED = 16,
    /// A record at an explicit time was stored in no resolution (too old).
    RM_NOT_STORED = 17,
    /// An argument is out of range (an unknown kind or resolution, an index,
    /// a timeout that is NaN, infinite, negative or over
    /// `RM_MAX_DURATION_SECS`).
    RM_INVALID_ARGUMENT = 18,
    /// The aggregator has no manual clock.
    RM_NOT_MANUAL_CLOCK = 19,
    /// The system refused the memory a configuration needs (see
    /// `rm_last_error_detail` for how much).
    RM_OUT_OF_MEMORY = 20,
    /// Rust panicked; the operation did not complete.
    RM_PANIC = 100,
}

use rm_result::*;

/// The text of a result code: a static, NUL-terminated string (never NULL).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn rm_result_message(result: rm_result) -> *const c_char {
    let s: &'static CStr = match result {
        RM_OK => c"ok",
        RM_NULL_POINTER => c"a required pointer argument was NULL",
        RM_INVALID_UTF8 => c"a string was not valid UTF-8",
        RM_INVALID_KEY => c"invalid metric key: it must be 1..1024 UTF-8 bytes without NUL",
        RM_INVALID_UNIT => c"invalid unit: it must be 1..64 characters without NUL",
        RM_NON_FINITE_VALUE => c"the value is NaN or infinite",
        RM_INVALID_TIMESTAMP => c"the timestamp is before 1970 or too far ahead of the clock",
        RM_CONFLICT => c"the key is registered with another kind or unit",
        RM_OVERFLOW => c"the bucket's sum would overflow",
        RM_CAPACITY_EXHAUSTED => c"capacity exhausted: no series slot or key space left",
        RM_UNKNOWN_SERIES => c"the series handle belongs to another aggregator",
        RM_INVALID_CONFIG => c"invalid configuration",
        RM_BUFFER_TOO_SMALL => c"the output buffer is too small",
        RM_DATABASE => c"database error",
        RM_SCHEMA_VERSION => c"the metrics tables are at another schema version: run Chancy's migrations",
        RM_TIMEOUT => c"timed out waiting for the syncer",
        RM_STOPPED => c"the syncer has stopped",
        RM_NOT_STORED => c"the record is older than every ring's retention",
        RM_INVALID_ARGUMENT => c"an argument is out of range",
        RM_NOT_MANUAL_CLOCK => c"the aggregator has no manual clock",
        RM_OUT_OF_MEMORY => c"the system refused the memory the configuration needs",
        RM_PANIC => c"internal error (a Rust panic was caught)",
    };
    s.as_ptr()
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn remember(detail: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = detail);
}

/// Copy the calling thread's last error detail (a fuller message than
/// [`rm_result_message`], e.g. the database's) into `buf` as a
/// NUL-terminated string, truncated to `cap` bytes; `*written` gets the
/// length without the NUL. Never contains a DSN's password.
///
/// Thread safety: per thread; any thread, any time.
///
/// # Safety
/// `buf` must point to `cap` writable bytes; `written` must be valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_last_error_detail(buf: *mut c_char, cap: usize, written: *mut usize) -> rm_result {
    boundary(|| {
        if buf.is_null() || written.is_null() || cap == 0 {
            return RM_NULL_POINTER;
        }
        // SAFETY: the caller's contract, checked non-NULL and cap > 0.
        LAST_ERROR.with(|e| unsafe { copy_out(&e.borrow(), buf, cap, written) });
        RM_OK
    })
}

/// Copy `text` into `buf` as a NUL-terminated string truncated to `cap`
/// bytes (at a byte boundary); `*written` gets the length without the NUL.
///
/// # Safety
/// `buf` points to `cap > 0` writable bytes; `written` is valid.
pub(crate) unsafe fn copy_out(text: &str, buf: *mut c_char, cap: usize, written: *mut usize) {
    let n = text.len().min(cap - 1);
    // SAFETY: the caller promises `cap` writable bytes at `buf`, and
    // `n + 1 <= cap`; `written` is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
        *written = n;
    }
}

/// Drop a `Box` handed to C by `Box::into_raw` (NULL is fine), inside the
/// panic boundary.
///
/// # Safety
/// `ptr` is NULL or came from `Box::into_raw` and is not used afterwards.
pub(crate) unsafe fn free_box<T>(ptr: *mut T) {
    let _ = boundary(|| {
        if !ptr.is_null() {
            // SAFETY: by this function's contract.
            drop(unsafe { Box::from_raw(ptr) });
        }
        RM_OK
    });
}

/// The panic boundary around every exported body.
#[inline(always)]
pub(crate) fn boundary(f: impl FnOnce() -> rm_result) -> rm_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panicked(),
    }
}

#[cold]
#[inline(never)]
fn panicked() -> rm_result {
    remember("a Rust panic was caught at the C boundary".into());
    RM_PANIC
}

#[cold]
#[inline(never)]
pub(crate) fn core_error(e: ringmetrics::Error) -> rm_result {
    let code = match &e {
        ringmetrics::Error::InvalidConfig { .. } => RM_INVALID_CONFIG,
        ringmetrics::Error::InvalidKey { .. } => RM_INVALID_KEY,
        ringmetrics::Error::InvalidUnit { .. } => RM_INVALID_UNIT,
        ringmetrics::Error::NonFiniteValue(_) => RM_NON_FINITE_VALUE,
        ringmetrics::Error::InvalidTimestamp { .. } => RM_INVALID_TIMESTAMP,
        ringmetrics::Error::Conflict { .. } => RM_CONFLICT,
        ringmetrics::Error::Overflow { .. } => RM_OVERFLOW,
        ringmetrics::Error::CapacityExhausted { .. } => RM_CAPACITY_EXHAUSTED,
        ringmetrics::Error::UnknownSeries(_) => RM_UNKNOWN_SERIES,
        ringmetrics::Error::NotStored { .. } => RM_NOT_STORED,
        ringmetrics::Error::AllocationFailed { .. } => RM_OUT_OF_MEMORY,
        _ => RM_INVALID_ARGUMENT,
    };
    remember(e.to_string());
    code
}

pub(crate) fn sync_error(e: SyncError) -> rm_result {
    let code = match &e {
        SyncError::InvalidConfig(_) => RM_INVALID_CONFIG,
        SyncError::Database(_) => RM_DATABASE,
        SyncError::SchemaVersion { .. } => RM_SCHEMA_VERSION,
        SyncError::Timeout => RM_TIMEOUT,
        SyncError::Stopped => RM_STOPPED,
        _ => RM_DATABASE,
    };
    remember(e.to_string());
    code
}
