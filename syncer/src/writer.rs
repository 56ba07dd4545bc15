//! One flush: collect every attached aggregator's changed buckets, then
//! write them in as few transactions as the batch size allows: definitions
//! first, then every row of a batch in one statement that merges into the
//! stored rows bucket by bucket.
//!
//! The merge is what makes a saved bucket stay saved: a row is never
//! replaced by what the writer happens to hold (a ring shallower than the
//! chunk, a restarted syncer, a retry after an unclear commit), it only
//! gains buckets or gets newer absolute values for the buckets sent.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::Client;
use postgres::types::Type;

use crate::columns::{Item, STAGING, SendError, TABLE_COLUMNS, send};
use crate::config::ident;
use crate::connect::{Timeouts, begin};
use crate::error::{SyncError, db};
use crate::schema_v1::Schema;
use crate::source::{Change, Source};
use crate::thread::FlushReport;

/// Rows per transaction (one definitions lookup, one commit).
const TRANSACTION_ROWS: usize = 50_000;

/// Rows per transaction of the schema-1 writer.
const TRANSACTION_ROWS_V1: usize = 5000;

/// How often the writer warns about conflicting definitions.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The stored row's columns, in `unnest` order, and their aliases.
const COLUMNS: [(&str, &str); 7] = [
    ("buckets", "b"),
    ("counts", "n"),
    ("totals", "t"),
    ("minimums", "lo"),
    ("maximums", "hi"),
    ("gauges", "g"),
    ("sampled_at", "s"),
];

/// The merged value of one column of a conflicting row: the stored buckets
/// and the sent ones merged by bucket start, the sent values winning.
///
/// Three shapes cover the steady state and cost at most a concatenation:
/// the sent buckets include every stored one (the row is replaced), they all
/// come after the stored ones (a new bucket), or they start at the stored
/// row's last bucket (it changed, maybe newer ones too). Any other shape (a
/// late record into an earlier bucket, a resend after a restart) takes the
/// general merge. A column the row's kind leaves NULL stays NULL first.
fn merged(column: &str, alias: &str) -> String {
    let all_stored = COLUMNS
        .iter()
        .map(|(c, _)| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let all_sent = COLUMNS
        .iter()
        .map(|(c, _)| format!("EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let aliases = COLUMNS.iter().map(|(_, a)| *a).collect::<Vec<_>>().join(", ");
    format!(
        "CASE WHEN EXCLUDED.{column} IS NULL THEN NULL
              WHEN m.buckets[1] >= EXCLUDED.buckets[1] AND m.buckets <@ EXCLUDED.buckets THEN EXCLUDED.{column}
              WHEN m.buckets[cardinality(m.buckets)] < EXCLUDED.buckets[1] THEN m.{column} || EXCLUDED.{column}
              WHEN m.buckets[cardinality(m.buckets)] = EXCLUDED.buckets[1]
                   THEN m.{column}[:cardinality(m.buckets) - 1] || EXCLUDED.{column}
              ELSE (SELECT array_agg(u.{alias} ORDER BY u.b)
                    FROM (SELECT DISTINCT ON (x.b) x.* FROM (
                              SELECT e.*, 0 AS p FROM unnest({all_sent}) AS e({aliases})
                              UNION ALL
                              SELECT o.*, 1 FROM unnest({all_stored}) AS o({aliases})
                          ) x ORDER BY x.b, x.p) u)
         END"
    )
}

/// What a conflicting row becomes: the stored buckets and the sent ones
/// merged by bucket start ([`merged`]).
fn on_conflict() -> String {
    let set = COLUMNS
        .iter()
        .map(|(c, a)| format!("{c} = {}", merged(c, a)))
        .collect::<Vec<_>>()
        .join(",\n             ");
    format!(
        "ON CONFLICT (metric_id, resolution, chunk, session_id) DO UPDATE SET
             worker_id = EXCLUDED.worker_id,
             {set}"
    )
}

/// The upsert of a small batch: `$1..$8` describe rows (each takes
/// `[off, off + len)` of the bucket columns `$9..$15`).
fn upsert_sql(metrics: &str) -> String {
    format!(
        "WITH a AS (SELECT $9::timestamptz[] AS b, $10::int8[] AS n, $11::float8[] AS t, $12::float8[] AS lo,
                           $13::float8[] AS hi, $14::float8[] AS g, $15::timestamptz[] AS s)
         INSERT INTO {metrics} AS m ({TABLE_COLUMNS})
         SELECT r.metric_id, r.resolution, r.chunk, r.session_id, r.worker_id,
                a.b[r.off:r.off + r.len - 1],
                CASE WHEN r.kind = 2 THEN a.n[r.off:r.off + r.len - 1] END,
                CASE WHEN r.kind <> 1 THEN a.t[r.off:r.off + r.len - 1] END,
                CASE WHEN r.kind = 2 THEN a.lo[r.off:r.off + r.len - 1] END,
                CASE WHEN r.kind = 2 THEN a.hi[r.off:r.off + r.len - 1] END,
                CASE WHEN r.kind = 1 THEN a.g[r.off:r.off + r.len - 1] END,
                a.s[r.off:r.off + r.len - 1]
         FROM a, unnest($1::int8[], $2::int4[], $3::timestamptz[], $4::int4[], $5::int4[], $6::int4[],
                        $7::uuid[], $8::text[])
              AS r(metric_id, resolution, chunk, off, len, kind, session_id, worker_id)
         {}",
        on_conflict()
    )
}

/// The upsert of a large batch, from the rows copied into [`STAGING`].
fn staged_sql(metrics: &str) -> String {
    format!(
        "INSERT INTO {metrics} AS m ({TABLE_COLUMNS}) SELECT {TABLE_COLUMNS} FROM {STAGING} {}",
        on_conflict()
    )
}

/// The syncer thread's sources and what it has collected from them.
pub(crate) struct Writer {
    pub(crate) prefix: String,
    pub(crate) secret: Option<String>,
    /// `SET LOCAL` timeouts of every write transaction.
    pub(crate) timeouts: Timeouts,
    /// The layout written (chunk rows, or Chancy 0.25's arrays).
    pub(crate) schema: Schema,
    /// Chancy's retention per resolution, seconds (finest first).
    retention_secs: [i64; 4],
    pub(crate) sources: Vec<Source>,
    /// Collected but not yet saved: (index into `sources`, change).
    pending: Vec<(usize, Change)>,
    last_warning: Option<Instant>,
    /// Large batches go through a temporary staging table (false once the
    /// role turned out not to be allowed one).
    staging: bool,
    /// A warning for the status, not yet taken.
    pub(crate) warning: Option<String>,
}

impl Writer {
    pub(crate) fn new(prefix: String, secret: Option<String>, timeouts: Timeouts, retention_secs: [i64; 4]) -> Self {
        Writer {
            prefix,
            secret,
            timeouts,
            retention_secs,
            schema: Schema::V2,
            sources: Vec::new(),
            pending: Vec::new(),
            last_warning: None,
            staging: true,
            warning: None,
        }
    }

    /// Find what changed since the last successful save. Returns (series,
    /// chunk rows) pending.
    pub(crate) fn collect(&mut self) -> (u64, u64) {
        self.pending.clear();
        let mut changes = Vec::new();
        for (i, source) in self.sources.iter_mut().enumerate() {
            let now = source.agg.now().div_euclid(1_000_000_000);
            source.collect(now, &self.retention_secs, &mut changes);
            self.pending.extend(changes.drain(..).map(|c| (i, c)));
        }
        let rows = self.pending.iter().map(|(_, c)| c.rows.len() as u64).sum();
        let series = self.pending.iter().filter(|(_, c)| !c.rows.is_empty()).count() as u64;
        (series, rows)
    }

    /// Whether the last collect found rows to write.
    pub(crate) fn has_rows(&self) -> bool {
        self.pending.iter().any(|(_, c)| !c.rows.is_empty())
    }

    /// Series of every source whose stored definition conflicts.
    pub(crate) fn conflicts(&self) -> u64 {
        self.sources.iter().map(|s| s.conflicting.len() as u64).sum()
    }

    /// Settle a flush that found no rows to write.
    pub(crate) fn write_nothing(&mut self) -> Result<(), SyncError> {
        self.settle_empty();
        Ok(())
    }

    /// Mark every collected change without rows saved (nothing to write).
    fn settle_empty(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (i, change) in pending {
            if change.rows.is_empty() {
                self.sources[i].saved(change);
            } else {
                self.pending.push((i, change));
            }
        }
    }

    /// Write everything collected, adding what commits to `report`.
    /// Batches commit independently; a failure leaves the failed batch (and
    /// later ones) pending for the next flush, and `report` holds what the
    /// batches before it committed.
    pub(crate) fn write(&mut self, client: &mut Client, report: &mut FlushReport) -> Result<(), SyncError> {
        self.settle_empty();
        let pending = std::mem::take(&mut self.pending);
        let mut batches: Vec<Vec<(usize, Change)>> = Vec::new();
        let mut rows = 0;
        let limit = match self.schema {
            Schema::V2 => TRANSACTION_ROWS,
            Schema::V1 { .. } => TRANSACTION_ROWS_V1,
        };
        for item in pending {
            let n = item.1.rows.len();
            if batches.is_empty() || rows + n > limit {
                batches.push(Vec::new());
                rows = 0;
            }
            rows += n;
            batches.last_mut().expect("pushed above").push(item);
        }
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            let written = match self.schema {
                Schema::V2 => self.write_batch(client, &batch, report),
                Schema::V1 { max_points } => crate::writer_v1::write_batch(self, client, &batch, report, max_points),
            };
            match written {
                Ok(conflicts) => {
                    for (i, change) in batch {
                        if conflicts.contains(&(i, change.id)) {
                            self.sources[i].conflicted(change);
                        } else {
                            self.sources[i].saved(change);
                        }
                    }
                }
                Err(e) => {
                    self.pending = batch.into_iter().chain(batches.flatten()).collect();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Write one batch in one transaction (counted in `report` once it
    /// commits); returns the (source, series)
    /// pairs left out because their stored definition conflicts.
    fn write_batch(
        &mut self,
        client: &mut Client,
        batch: &[(usize, Change)],
        report: &mut FlushReport,
    ) -> Result<Vec<(usize, u32)>, SyncError> {
        let secret = self.secret.clone();
        let err = |e: postgres::Error| db(&e, secret.as_deref());
        let definitions = ident(&self.prefix, "metric_definitions");
        let metrics = ident(&self.prefix, "metrics");
        // One definition per key, whichever sources record it (borrowed
        // from the aggregators' registries: no copy per key).
        let sources = &self.sources;
        let mut keys: Vec<&str> = Vec::with_capacity(batch.len());
        let mut types: Vec<&'static str> = Vec::with_capacity(batch.len());
        let mut units: Vec<&str> = Vec::with_capacity(batch.len());
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        let mut insert = false;
        for (i, change) in batch {
            let source = &sources[*i];
            let info = source.agg.info(change.id).expect("registered series");
            index.entry(info.key).or_insert_with(|| {
                keys.push(info.key);
                types.push(info.kind.name());
                units.push(info.unit);
                keys.len() - 1
            });
            insert |= !source.known(change.id);
        }
        // Unnamed statements (execute_typed / query_typed; a large batch's
        // COPY is prepared and closed within it), inside a
        // transaction with the syncer's SET LOCAL timeouts: PgBouncer-safe.
        let mut tx = begin(client, &self.timeouts).map_err(err)?;
        // Definitions: insert only when some key of the batch has never been
        // seen in the catalog (an insert of existing keys still burns a
        // sequence value per key), then lock them all FOR KEY SHARE so a
        // concurrent cleanup cannot delete one under the rows. A known key
        // deleted since (by cleanup) is found missing and inserted again.
        let mut created = 0;
        let stored = loop {
            if insert {
                created += tx
                    .execute_typed(
                        &format!(
                            "INSERT INTO {definitions} (key, metric_type, unit)
                             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS i(key, metric_type, unit)
                             WHERE NOT EXISTS (SELECT 1 FROM {definitions} d WHERE d.key = i.key)
                             ORDER BY 1
                             ON CONFLICT (key) DO NOTHING"
                        ),
                        &[
                            (&keys, Type::TEXT_ARRAY),
                            (&types, Type::TEXT_ARRAY),
                            (&units, Type::TEXT_ARRAY),
                        ],
                    )
                    .map_err(err)?;
            }
            let stored = tx
                .query_typed(
                    &format!(
                        "SELECT id, key, metric_type, unit FROM {definitions}
                         WHERE key = ANY($1) ORDER BY id FOR KEY SHARE"
                    ),
                    &[(&keys, Type::TEXT_ARRAY)],
                )
                .map_err(err)?;
            if stored.len() == keys.len() {
                break stored;
            }
            if insert {
                return Err(SyncError::Database(
                    "the metric catalog changed during the flush; retrying".into(),
                ));
            }
            insert = true;
        };
        // (id, type, unit) stored for each of `keys`, borrowed from the rows.
        // A column of another type or a NULL (a catalog not made by
        // Chancy's migrations) is an error, never a panic.
        let mut ids: Vec<Option<(i64, &str, &str)>> = vec![None; keys.len()];
        for row in &stored {
            let catalog = |e: postgres::Error| SyncError::Database(format!("reading the metric catalog: {e}"));
            if let Some(&k) = index.get(row.try_get::<_, &str>(1).map_err(catalog)?) {
                ids[k] = Some((
                    row.try_get(0).map_err(catalog)?,
                    row.try_get(2).map_err(catalog)?,
                    row.try_get(3).map_err(catalog)?,
                ));
            }
        }
        // As many rows as keys, yet one not byte for byte (a `key` column
        // with a nondeterministic collation matches keys that differ): a
        // clear error, retried, never a guess at which definition is ours.
        if let Some(k) = ids.iter().position(Option::is_none) {
            return Err(SyncError::Database(format!(
                "the metric catalog returned no definition equal byte for byte to {:?} (its key column must use \
                 the \"C\" collation, as Chancy's migrations create it); retrying",
                keys[k]
            )));
        }
        let mut conflicts = Vec::new();
        let mut items = Vec::with_capacity(batch.len());
        let mut first_conflict = None;
        for (i, change) in batch.iter().filter(|(_, c)| !c.rows.is_empty()) {
            let source = &sources[*i];
            let info = source.agg.info(change.id).expect("registered series");
            let (id, ty, unit) = ids[index[info.key]].expect("every key found: checked above");
            if ty != info.kind.name() || unit != info.unit {
                first_conflict.get_or_insert((ty.to_owned(), unit.to_owned()));
                conflicts.push((*i, change.id));
                continue;
            }
            items.push(Item {
                metric_id: id,
                kind: info.kind,
                source,
                change,
            });
        }
        let sent = send(
            &mut tx,
            &metrics,
            &upsert_sql(&metrics),
            &staged_sql(&metrics),
            &items,
            &mut self.staging,
        );
        let written = sent.map_err(|e| match e {
            SendError::Database(e) => err(e),
            SendError::Copy(e) => SyncError::Database(format!("copying rows: {e}")),
        })?;
        drop(items);
        // A commit that fails may still have happened (the connection can
        // drop after the server committed): retrying merges the same
        // absolute buckets again, so either way the result is the same.
        tx.commit().map_err(|e| match db(&e, secret.as_deref()) {
            SyncError::Database(m) => SyncError::Database(format!("commit outcome unknown, will retry: {m}")),
            other => other,
        })?;
        report.rows_written += written;
        report.definitions_created += created;
        report.series_written +=
            batch.iter().filter(|(_, c)| !c.rows.is_empty()).count() as u64 - conflicts.len() as u64;
        if let Some((ty, unit)) = first_conflict {
            self.warn_conflicts(&conflicts, &ty, &unit);
        }
        Ok(conflicts)
    }

    /// Chancy's warning for a series dropped because its stored definition
    /// differs, at most once a minute.
    /// `ty` and `unit`: what the first conflicting series' key is stored as.
    fn warn_conflicts(&mut self, conflicts: &[(usize, u32)], ty: &str, unit: &str) {
        let (i, id) = conflicts[0];
        let info = self.sources[i].agg.info(id).expect("registered series");
        let message = format!(
            "ringmetrics: dropped metric conflicting with its stored definition: {:?} is stored as a {ty} in \
             {unit:?}, recorded as a {} in {:?}{}; it is kept in memory and checked again on every flush",
            info.key,
            info.kind.name(),
            info.unit,
            match conflicts.len() {
                1 => String::new(),
                n => format!(" ({} more series conflict)", n - 1),
            }
        );
        if !self.last_warning.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.last_warning = Some(Instant::now());
            log::warn!("{message}");
        }
        self.warning = Some(message);
    }
}

/// Nanoseconds since the epoch as a `SystemTime` (PostgreSQL keeps µs).
pub(crate) fn time(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}
