//! One flush: find the series whose version moved, read their chunks, merge
//! them with what this session wrote before, and upsert the chunks that
//! differ — definitions first, then every row of a batch in one statement.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::Client;
use ringmetrics::{Aggregator, Bucket, CHUNK_BUCKETS, Kind, Resolution, SeriesData, SeriesVersion};

use crate::config::ident;
use crate::error::{SyncError, db};
use crate::thread::FlushReport;

/// Rows per transaction.
const BATCH_ROWS: usize = 5000;

/// One chunk row to write: absolute values of every bucket this session
/// holds for the chunk.
struct Row {
    resolution: Resolution,
    chunk: i64,
    buckets: Vec<Bucket>,
}

/// A series with something new, and the version its rows were read at.
struct Pending {
    id: u32,
    version: SeriesVersion,
    rows: Vec<Row>,
}

/// The syncer thread's memory of what it saved.
pub(crate) struct Writer {
    agg: Arc<Aggregator>,
    prefix: String,
    worker_id: String,
    session_id: uuid::Uuid,
    secret: Option<String>,
    /// Per series id: the version whose data is saved.
    saved: Vec<Option<SeriesVersion>>,
    /// Per series id: its key was in the catalog at the last commit, so a
    /// flush can skip inserting it.
    known: Vec<bool>,
    /// What this session last wrote per (series, resolution, chunk start):
    /// the row in the database, bucket for bucket. Lets a small ring that
    /// already dropped a chunk's early buckets rewrite the chunk without
    /// losing them, and lets unchanged chunks be skipped.
    written: HashMap<(u32, Resolution, i64), Vec<Bucket>>,
    /// Series whose stored definition has another type or unit.
    pub(crate) dropped: HashSet<u32>,
    scratch: SeriesData,
    /// Collected but not yet saved.
    pending: Vec<Pending>,
}

impl Writer {
    pub(crate) fn new(
        agg: Arc<Aggregator>,
        prefix: String,
        worker_id: String,
        session_id: uuid::Uuid,
        secret: Option<String>,
    ) -> Self {
        Writer {
            agg,
            prefix,
            worker_id,
            session_id,
            secret,
            saved: Vec::new(),
            known: Vec::new(),
            written: HashMap::new(),
            dropped: HashSet::new(),
            scratch: SeriesData::default(),
            pending: Vec::new(),
        }
    }

    /// Find what changed since the last successful save. Returns
    /// (series, chunk rows) pending.
    pub(crate) fn collect(&mut self) -> (u64, u64) {
        self.pending.clear();
        let n = self.agg.len();
        self.saved.resize(n, None);
        self.known.resize(n, false);
        for id in 0..n as u32 {
            if self.dropped.contains(&id) {
                continue;
            }
            let Some(series) = self.agg.series(id) else { continue };
            let Ok(version) = self.agg.version(series) else {
                continue;
            };
            if self.saved[id as usize] == Some(version) {
                continue;
            }
            if self.agg.read_series(series, &mut self.scratch).is_err() {
                continue;
            }
            let mut rows = Vec::new();
            for r in Resolution::ALL {
                let buckets = self.scratch.at(r);
                let mut i = 0;
                while i < buckets.len() {
                    let chunk = r.chunk_start(r.bucket_of(buckets[i].start));
                    let end = chunk + CHUNK_BUCKETS * r.seconds();
                    let j = i + buckets[i..].iter().take_while(|b| b.start < end).count();
                    let merged = merge(self.written.get(&(id, r, chunk)), &buckets[i..j]);
                    if self.written.get(&(id, r, chunk)) != Some(&merged) {
                        rows.push(Row {
                            resolution: r,
                            chunk,
                            buckets: merged,
                        });
                    }
                    i = j;
                }
            }
            self.pending.push(Pending {
                id,
                version: self.scratch.version,
                rows,
            });
        }
        let rows = self.pending.iter().map(|p| p.rows.len() as u64).sum();
        (self.pending.len() as u64, rows)
    }

    /// Write everything collected. Batches commit independently; a failure
    /// leaves the failed batch (and later ones) pending for the next flush.
    pub(crate) fn write(&mut self, client: &mut Client) -> Result<FlushReport, SyncError> {
        let mut report = FlushReport::default();
        let pending = std::mem::take(&mut self.pending);
        let mut start = 0;
        while start < pending.len() {
            let mut end = start;
            let mut rows = 0;
            while end < pending.len() && (end == start || rows + pending[end].rows.len() <= BATCH_ROWS) {
                rows += pending[end].rows.len();
                end += 1;
            }
            let batch = &pending[start..end];
            if let Err(e) = self.write_batch(client, batch, &mut report) {
                self.pending = pending.into_iter().skip(start).collect();
                return Err(e);
            }
            start = end;
        }
        self.evict();
        Ok(report)
    }

    fn write_batch(
        &mut self,
        client: &mut Client,
        batch: &[Pending],
        report: &mut FlushReport,
    ) -> Result<(), SyncError> {
        let secret = self.secret.clone();
        let err = |e: postgres::Error| db(&e, secret.as_deref());
        let with_rows: Vec<&Pending> = batch.iter().filter(|p| !p.rows.is_empty()).collect();
        if with_rows.is_empty() {
            for p in batch {
                self.saved[p.id as usize] = Some(p.version);
            }
            return Ok(());
        }
        let definitions = ident(&self.prefix, "metric_definitions");
        let metrics = ident(&self.prefix, "metrics");
        let mut keys = Vec::with_capacity(with_rows.len());
        let mut types = Vec::with_capacity(with_rows.len());
        let mut units = Vec::with_capacity(with_rows.len());
        for p in &with_rows {
            let info = self.agg.info(p.id).expect("registered series");
            keys.push(info.key.to_owned());
            types.push(info.kind.name().to_owned());
            units.push(info.unit.to_owned());
        }
        let mut tx = client.transaction().map_err(err)?;
        // Definitions: insert only when some key of the batch has never been
        // seen in the catalog (an insert of existing keys still burns a
        // sequence value per key), then lock them all FOR KEY SHARE so a
        // concurrent cleanup cannot delete one under the rows. A known key
        // deleted since (by cleanup) is found missing and inserted again.
        let mut insert = with_rows.iter().any(|p| !self.known[p.id as usize]);
        let stored = loop {
            if insert {
                report.definitions_created += tx
                    .execute(
                        &format!(
                            "INSERT INTO {definitions} (key, metric_type, unit)
                             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS i(key, metric_type, unit)
                             WHERE NOT EXISTS (SELECT 1 FROM {definitions} d WHERE d.key = i.key)
                             ORDER BY 1
                             ON CONFLICT (key) DO NOTHING"
                        ),
                        &[&keys, &types, &units],
                    )
                    .map_err(err)?;
            }
            let stored = tx
                .query(
                    &format!(
                        "SELECT id, key, metric_type, unit FROM {definitions}
                         WHERE key = ANY($1) ORDER BY id FOR KEY SHARE"
                    ),
                    &[&keys],
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
        let mut ids: HashMap<String, (i64, String, String)> = HashMap::with_capacity(stored.len());
        for row in stored {
            ids.insert(row.get(1), (row.get(0), row.get(2), row.get(3)));
        }
        // Flat columns; each row takes [off, off + len) of them.
        let (mut metric_ids, mut resolutions, mut chunks, mut offs, mut lens, mut kinds) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut starts, mut counts, mut totals, mut mins, mut maxs, mut gauges, mut sampled) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut conflicts = Vec::new();
        for (p, key) in with_rows.iter().zip(&keys) {
            let kind = self.agg.info(p.id).map(|i| i.kind).unwrap_or(Kind::Counter);
            let (id, ty, unit) = &ids[key];
            let info = self.agg.info(p.id).expect("registered series");
            if ty != kind.name() || unit != info.unit {
                log::warn!(
                    "ringmetrics: dropping metric {key:?}: stored as a {ty} in {unit:?}, recorded as a {} in {:?}",
                    kind.name(),
                    info.unit
                );
                conflicts.push(p.id);
                continue;
            }
            for row in &p.rows {
                metric_ids.push(*id);
                resolutions.push(row.resolution.seconds() as i32);
                chunks.push(time(row.chunk * 1_000_000_000));
                offs.push(starts.len() as i32 + 1);
                lens.push(row.buckets.len() as i32);
                kinds.push(kind as i32);
                for b in &row.buckets {
                    starts.push(time(b.start * 1_000_000_000));
                    counts.push(b.count as i64);
                    totals.push(b.sum);
                    mins.push(b.min);
                    maxs.push(b.max);
                    gauges.push(b.last);
                    sampled.push(time(b.sampled_at));
                }
            }
        }
        let written = tx
            .execute(
                &format!(
                    "WITH a AS (SELECT $9::timestamptz[] AS b, $10::int8[] AS n, $11::float8[] AS t, $12::float8[] AS lo,
                                       $13::float8[] AS hi, $14::float8[] AS g, $15::timestamptz[] AS s)
                     INSERT INTO {metrics} (metric_id, resolution, chunk, session_id, worker_id, buckets,
                                            counts, totals, minimums, maximums, gauges, sampled_at)
                     SELECT r.metric_id, r.resolution, r.chunk, $7, $8,
                            a.b[r.off:r.off + r.len - 1],
                            CASE WHEN r.kind = 2 THEN a.n[r.off:r.off + r.len - 1] END,
                            CASE WHEN r.kind <> 1 THEN a.t[r.off:r.off + r.len - 1] END,
                            CASE WHEN r.kind = 2 THEN a.lo[r.off:r.off + r.len - 1] END,
                            CASE WHEN r.kind = 2 THEN a.hi[r.off:r.off + r.len - 1] END,
                            CASE WHEN r.kind = 1 THEN a.g[r.off:r.off + r.len - 1] END,
                            a.s[r.off:r.off + r.len - 1]
                     FROM a, unnest($1::int8[], $2::int4[], $3::timestamptz[], $4::int4[], $5::int4[], $6::int4[])
                          AS r(metric_id, resolution, chunk, off, len, kind)
                     ON CONFLICT (metric_id, resolution, chunk, session_id) DO UPDATE SET
                         buckets = EXCLUDED.buckets, counts = EXCLUDED.counts, totals = EXCLUDED.totals,
                         minimums = EXCLUDED.minimums, maximums = EXCLUDED.maximums,
                         gauges = EXCLUDED.gauges, sampled_at = EXCLUDED.sampled_at"
                ),
                &[
                    &metric_ids,
                    &resolutions,
                    &chunks,
                    &offs,
                    &lens,
                    &kinds,
                    &self.session_id,
                    &self.worker_id,
                    &starts,
                    &counts,
                    &totals,
                    &mins,
                    &maxs,
                    &gauges,
                    &sampled,
                ],
            )
            .map_err(err)?;
        // A commit that fails may still have happened (the connection can
        // drop after the server committed): retrying rewrites the same
        // absolute rows, so either way the result is the same.
        tx.commit().map_err(|e| match db(&e, secret.as_deref()) {
            SyncError::Database(m) => SyncError::Database(format!("commit outcome unknown, will retry: {m}")),
            other => other,
        })?;
        report.rows_written += written;
        for id in conflicts {
            self.dropped.insert(id);
        }
        for p in batch {
            if self.dropped.contains(&p.id) {
                continue;
            }
            self.saved[p.id as usize] = Some(p.version);
            if !p.rows.is_empty() {
                self.known[p.id as usize] = true;
                report.series_written += 1;
            }
            for row in &p.rows {
                self.written
                    .insert((p.id, row.resolution, row.chunk), row.buckets.clone());
            }
        }
        Ok(())
    }

    /// Forget chunks no record can change any more (older than the ring).
    fn evict(&mut self) {
        let now = self.agg.now().div_euclid(1_000_000_000);
        let depths = self.agg.config().buckets;
        self.written.retain(|(_, r, chunk), _| {
            let end = chunk + CHUNK_BUCKETS * r.seconds();
            end > now - (depths[r.index()] as i64 + 1) * r.seconds()
        });
    }

    /// Series dropped because their stored definition conflicts.
    pub(crate) fn conflicts(&self) -> u64 {
        self.dropped.len() as u64
    }
}

/// `cached` with every bucket of `fresh` replacing the one of the same
/// start; both sorted, result sorted.
fn merge(cached: Option<&Vec<Bucket>>, fresh: &[Bucket]) -> Vec<Bucket> {
    let Some(cached) = cached else { return fresh.to_vec() };
    let mut out = Vec::with_capacity(cached.len().max(fresh.len()));
    let (mut i, mut j) = (0, 0);
    while i < cached.len() || j < fresh.len() {
        match (cached.get(i), fresh.get(j)) {
            (Some(c), Some(f)) if c.start == f.start => {
                out.push(*f);
                i += 1;
                j += 1;
            }
            (Some(c), Some(f)) if c.start < f.start => {
                out.push(*c);
                i += 1;
            }
            (Some(c), None) => {
                out.push(*c);
                i += 1;
            }
            (_, Some(f)) => {
                out.push(*f);
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Nanoseconds since the epoch as a `SystemTime` (PostgreSQL keeps µs).
pub(crate) fn time(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}
