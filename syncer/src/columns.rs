//! Sending one transaction's rows to the upsert.
//!
//! A small batch (a worker's periodic flush) goes as one statement whose
//! parameters are flat arrays of rows and buckets: one round trip, nothing
//! created on the server. A large one (a backlog, a process with thousands
//! of series) is copied into a temporary table and upserted from there in
//! one statement: PostgreSQL's cost per row of the array form grows with
//! the statement's size (40,000 rows took 1.2-1.6x as long in one statement
//! as in eight of 5,000), while the upsert from a table costs what the
//! in-database floor costs (1.03x, measured side by side).

use std::io::Write as _;
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use postgres::Transaction;
use postgres::error::SqlState;
use postgres::types::Type;
use ringmetrics::{Bucket, Kind};

use crate::source::{Change, Source};
use crate::writer::time;

/// One row of a statement: the stored series id, its kind, who recorded it
/// and the buckets that changed.
pub(crate) struct Item<'a> {
    pub(crate) metric_id: i64,
    pub(crate) kind: Kind,
    pub(crate) source: &'a Source,
    pub(crate) change: &'a Change,
}

/// The flat parameter columns of one upsert.
#[derive(Default)]
struct Columns {
    metric_ids: Vec<i64>,
    resolutions: Vec<i32>,
    chunks: Vec<SystemTime>,
    offs: Vec<i32>,
    lens: Vec<i32>,
    kinds: Vec<i32>,
    sessions: Vec<uuid::Uuid>,
    workers: Vec<String>,
    starts: Vec<SystemTime>,
    counts: Vec<i64>,
    totals: Vec<f64>,
    mins: Vec<f64>,
    maxs: Vec<f64>,
    gauges: Vec<f64>,
    sampled: Vec<SystemTime>,
}

impl Columns {
    fn push(&mut self, item: &Item<'_>) {
        for row in &item.change.rows {
            self.metric_ids.push(item.metric_id);
            self.resolutions.push(row.resolution.seconds() as i32);
            self.chunks.push(time(row.chunk * 1_000_000_000));
            self.offs.push(self.starts.len() as i32 + 1);
            let buckets = item.change.buckets(row);
            self.lens.push(buckets.len() as i32);
            self.kinds.push(item.kind as i32);
            self.sessions.push(item.source.session_id);
            self.workers.push(item.source.worker_id.clone());
            for b in buckets {
                self.starts.push(time(b.start * 1_000_000_000));
                self.counts.push(b.count as i64);
                self.totals.push(b.sum);
                self.mins.push(b.min);
                self.maxs.push(b.max);
                self.gauges.push(b.last);
                self.sampled.push(time(b.sampled_at));
            }
        }
    }

    /// Send these rows in one upsert statement (`sql`, the parameters in
    /// this order).
    fn upsert(&self, tx: &mut Transaction<'_>, sql: &str) -> Result<u64, postgres::Error> {
        tx.execute_typed(
            sql,
            &[
                (&self.metric_ids, Type::INT8_ARRAY),
                (&self.resolutions, Type::INT4_ARRAY),
                (&self.chunks, Type::TIMESTAMPTZ_ARRAY),
                (&self.offs, Type::INT4_ARRAY),
                (&self.lens, Type::INT4_ARRAY),
                (&self.kinds, Type::INT4_ARRAY),
                (&self.sessions, Type::UUID_ARRAY),
                (&self.workers, Type::TEXT_ARRAY),
                (&self.starts, Type::TIMESTAMPTZ_ARRAY),
                (&self.counts, Type::INT8_ARRAY),
                (&self.totals, Type::FLOAT8_ARRAY),
                (&self.mins, Type::FLOAT8_ARRAY),
                (&self.maxs, Type::FLOAT8_ARRAY),
                (&self.gauges, Type::FLOAT8_ARRAY),
                (&self.sampled, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
    }
}

/// Rows up to which a batch goes as one statement with array parameters.
pub(crate) const STATEMENT_ROWS: usize = 5000;

/// The stored row's columns, in table order.
pub(crate) const TABLE_COLUMNS: &str = "metric_id, resolution, chunk, session_id, worker_id, buckets, counts, totals, \
                                        minimums, maximums, gauges, sampled_at";

/// The temporary table a large batch is copied into (dropped at commit),
/// always named with its schema: a `search_path` that lists `pg_temp` after
/// another schema would otherwise find a table of that name there first.
pub(crate) const STAGING: &str = "pg_temp.ringmetrics_staged_rows";

/// Send `items`: up to [`STATEMENT_ROWS`] rows as one statement
/// (`array_sql`, the parameters in [`Columns::upsert`]'s order); more
/// copied into [`STAGING`] and upserted by `staged_sql`. Where the role may
/// not create temporary tables (no `TEMPORARY` privilege on the database),
/// `staging` turns false for good and large batches go as several array
/// statements of at most [`STATEMENT_ROWS`] rows. Returns the rows written.
pub(crate) fn send(
    tx: &mut Transaction<'_>,
    metrics: &str,
    array_sql: &str,
    staged_sql: &str,
    items: &[Item<'_>],
    staging: &mut bool,
) -> Result<u64, SendError> {
    let rows: usize = items.iter().map(|i| i.change.rows.len()).sum();
    if rows > STATEMENT_ROWS && *staging {
        // In a savepoint, so a refusal leaves the transaction usable. Only
        // the columns written, without constraints: a column added to the
        // table with a default gets its default from the upsert.
        match tx.batch_execute(&format!(
            "SAVEPOINT ringmetrics_staging;
             CREATE TEMPORARY TABLE {STAGING} ON COMMIT DROP AS SELECT {TABLE_COLUMNS} FROM {metrics} WITH NO DATA"
        )) {
            Ok(()) => return copy_and_upsert(tx, staged_sql, items),
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT ringmetrics_staging")
                    .map_err(SendError::Database)?;
                *staging = false;
                log::info!(
                    "ringmetrics: this role may not create temporary tables; large flushes are sent as \
                     several statements instead"
                );
            }
            Err(e) => return Err(SendError::Database(e)),
        }
    }
    let mut written = 0;
    let mut columns = Columns::default();
    let mut rest = items.iter().peekable();
    while let Some(item) = rest.next() {
        columns.push(item);
        let full = rest
            .peek()
            .is_none_or(|next| columns.metric_ids.len() + next.change.rows.len() > STATEMENT_ROWS);
        if full && !columns.metric_ids.is_empty() {
            written += columns.upsert(tx, array_sql).map_err(SendError::Database)?;
            columns = Columns::default();
        }
    }
    Ok(written)
}

/// Copy `items` into the staging table just created, then upsert from it.
fn copy_and_upsert(tx: &mut Transaction<'_>, staged_sql: &str, items: &[Item<'_>]) -> Result<u64, SendError> {
    let mut sink = tx
        .copy_in(&format!("COPY {STAGING} ({TABLE_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .map_err(SendError::Database)?;
    // PostgreSQL's binary COPY: signature, flags, header extension, then
    // per row the field count and each field as length + value (-1: NULL).
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for item in items {
        let kind = item.kind;
        let worker = item.source.worker_id.as_bytes();
        for row in &item.change.rows {
            let b = item.change.buckets(row);
            buf.put_i16(12);
            buf.put_i32(8);
            buf.put_i64(item.metric_id);
            buf.put_i32(4);
            buf.put_i32(row.resolution.seconds() as i32);
            buf.put_i32(8);
            buf.put_i64(pg_micros(row.chunk.saturating_mul(1_000_000_000)));
            buf.put_i32(16);
            buf.put_slice(item.source.session_id.as_bytes());
            buf.put_i32(worker.len() as i32);
            buf.put_slice(worker);
            array(&mut buf, b, Of::Start);
            let histogram = kind == Kind::Histogram;
            for (of, kept) in [
                (Of::Count, histogram),
                (Of::Sum, kind != Kind::Gauge),
                (Of::Min, histogram),
                (Of::Max, histogram),
                (Of::Last, kind == Kind::Gauge),
            ] {
                if kept {
                    array(&mut buf, b, of);
                } else {
                    buf.put_i32(-1);
                }
            }
            array(&mut buf, b, Of::SampledAt);
            if buf.len() >= COPY_CHUNK {
                sink.write_all(&buf).map_err(SendError::Copy)?;
                buf.clear();
            }
        }
    }
    buf.put_i16(-1);
    sink.write_all(&buf).map_err(SendError::Copy)?;
    sink.finish().map_err(SendError::Database)?;
    tx.execute_typed(staged_sql, &[]).map_err(SendError::Database)
}

/// Bytes of COPY data sent at a time (the server parses one chunk while the
/// next is encoded).
const COPY_CHUNK: usize = 1 << 16;

/// Which bucket field an array holds.
#[derive(Debug, Clone, Copy)]
enum Of {
    Start,
    Count,
    Sum,
    Min,
    Max,
    Last,
    SampledAt,
}

/// Microseconds since 2000-01-01 (PostgreSQL's timestamp), truncated
/// toward it as `postgres-types` encodes a `SystemTime`.
fn pg_micros(nanos: i64) -> i64 {
    const PG_EPOCH_NANOS: i128 = 946_684_800 * 1_000_000_000;
    ((nanos as i128 - PG_EPOCH_NANOS) / 1000) as i64
}

/// One field of `buckets` as a COPY field: length, then a one-dimensional
/// array without NULLs in PostgreSQL's binary format.
fn array(buf: &mut BytesMut, buckets: &[Bucket], of: Of) {
    let element = match of {
        Of::Start | Of::SampledAt => Type::TIMESTAMPTZ,
        Of::Count => Type::INT8,
        Of::Sum | Of::Min | Of::Max | Of::Last => Type::FLOAT8,
    };
    // A chunk row holds at most CHUNK_BUCKETS buckets.
    let n = buckets.len() as i32;
    buf.put_i32(20 + 12 * n);
    buf.put_i32(1);
    buf.put_i32(0);
    buf.put_u32(element.oid());
    buf.put_i32(n);
    buf.put_i32(1);
    for b in buckets {
        buf.put_i32(8);
        match of {
            Of::Start => buf.put_i64(pg_micros(b.start.saturating_mul(1_000_000_000))),
            Of::SampledAt => buf.put_i64(pg_micros(b.sampled_at)),
            Of::Count => buf.put_i64(b.count as i64),
            Of::Sum => buf.put_f64(b.sum),
            Of::Min => buf.put_f64(b.min),
            Of::Max => buf.put_f64(b.max),
            Of::Last => buf.put_f64(b.last),
        }
    }
}

/// Why sending stopped: the server's error, or the COPY stream failed.
pub(crate) enum SendError {
    Database(postgres::Error),
    Copy(std::io::Error),
}
