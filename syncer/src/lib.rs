//! `ringmetrics-postgres`: the syncer thread that writes a ringmetrics
//! [`Aggregator`](ringmetrics::Aggregator) into exactly the tables Chancy
//! 0.26 uses, plus Chancy's cleanup and cluster-wide read.
//!
//! - [`Syncer`] / [`SyncerConfig`]: a named background thread that owns one
//!   `postgres::Client` and, every interval or on demand, upserts each changed
//!   12-bucket chunk as absolute values (idempotent: a retry never double
//!   counts). Several aggregators can share one syncer ([`Syncer::attach`],
//!   [`Syncer::detach`]); each keeps its own session for life.
//!   [`SyncStatus`] reports progress and failures.
//! - [`cleanup`]: Chancy's `cleanup()` (expired chunks, then orphan keys).
//! - [`read_metrics`]: Chancy's merge of every worker's rows, from Rust or C.
//! - [`schema_sql`]: Chancy's DDL for a prefix, as the syncer creates it.
//! - [`Schema`]: write Chancy 0.26's chunk rows (the default) or Chancy
//!   0.25's schema-1 arrays (`writer_v1.rs`); [`schema_v1_sql`] its DDL.
//! - [`Connector`]: a DSN read the way libpq reads it (URI or `key=value`,
//!   service file, `PG*` variables, password file), connecting with libpq's
//!   `sslmode` semantics over rustls; [`begin`] opens a transaction with
//!   the syncer's statement and lock timeouts.
//! - [`SyncError`]: what went wrong; never contains the DSN's password.
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]

mod columns;
mod config;
mod connect;
mod dsn;
mod error;
mod read;
mod retention;
mod schema;
mod schema_v1;
mod source;
mod thread;
mod tls;
mod writer;
mod writer_v1;

pub use config::SyncerConfig;
pub use connect::{APPLICATION_NAME, Connector, Timeouts, begin};
pub use dsn::{ConnInfo, HostTarget, supported_keywords};
pub use error::SyncError;
pub use read::{ReadPoint, ReadQuery, ReadSeries, cleanup, read_metrics};
pub use retention::{DEFAULT_RETENTION_SECS, first_kept_chunk};
pub use schema::schema_sql;
pub use schema_v1::{Schema, V1_DEFAULT_MAX_POINTS, schema_v1_sql};
pub use thread::{FlushReport, SyncStatus, Syncer};
pub use tls::SslMode;
