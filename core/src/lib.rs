//! `ringmetrics`: a zero-allocation, lock-free, multi-resolution metrics
//! aggregator with the semantics of Chancy's metrics plugin.
//!
//! # Recording
//! - [`Aggregator`]: register series ([`Aggregator::register`]) and record
//!   by [`Series`] handle or by key, at the clock's time or an explicit one.
//! - [`Kind`]: counters sum, gauges keep the latest value, histograms keep
//!   count, sum, min and max.
//! - [`Config`]: capacity, key space and ring depth per [`Resolution`], all
//!   allocated once, fallibly, as lazily zeroed memory (`mem.rs`).
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: where time comes from.
//!
//! # Reading
//! - [`Aggregator::snapshot`]: one series, one resolution, a window.
//! - [`Aggregator::read_series`] and [`Aggregator::version`]: everything a
//!   series holds, and a version that tells a syncer what changed.
//! - [`Bucket`], [`SeriesData`]: absolute bucket values.
//!
//! # Storage identity
//! - [`Session`]: the one session id an aggregator's data is saved under,
//!   one writer at a time, never from a forked child.
//!
//! # Refusals
//! - [`Error`]: what a refused call broke; [`Drops`] / [`DropReason`]: the
//!   counters every refusal increments.
//!
//! # How it works
//! See `series.rs` for the record and rollover protocol (checked with loom in
//! `tests/loom.rs`), `stripe.rs` and `thread_slot.rs` for the per-thread
//! writer stripes that make a record a few plain stores, and `registry.rs`
//! for the lock-free key lookup.
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]

mod aggregator;
mod bucket;
mod clock;
mod config;
mod drops;
mod error;
mod fork;
mod kind;
mod mark;
mod mem;
mod registry;
mod resolution;
mod series;
mod session;
mod spill;
mod stripe;
mod sync;
mod thread_slot;
pub mod validate;

pub use aggregator::{Aggregator, Series};
pub use bucket::{Bucket, SeriesData, SeriesVersion};
pub use clock::{Builtin, Clock, ManualClock, Nanos, OverridableClock, SystemClock};
pub use config::{
    Config, DEFAULT_BUCKETS, DEFAULT_SPILL, DEFAULT_WRITERS, MAX_BUCKETS, MAX_KEY_BYTES, MAX_RESERVED_BYTES,
    MAX_SERIES, MAX_SPILL, MAX_WRITERS,
};
pub use drops::{DropReason, Drops};
pub use error::Error;
pub use fork::QUIESCE_LIMIT as FORK_QUIESCE_LIMIT;
pub use kind::Kind;
pub use registry::SeriesInfo;
pub use resolution::{CHUNK_BUCKETS, Resolution};
pub use series::OPTIMISTIC_READS;
pub use session::{Session, SessionError};

/// The writer slot the current thread holds (its stripe index in every
/// aggregator), if it has recorded and holds one. For tests and diagnostics.
#[doc(hidden)]
pub fn current_writer_slot() -> Option<u32> {
    Some(thread_slot::peek()).filter(|&s| (s as usize) < thread_slot::MAX_SLOTS)
}
