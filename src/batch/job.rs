//! Running one batch: read the stored input part by part, enrich, write each part, checkpoint.
//!
//! Restart safety: a part is written in three atomic steps, `part-N`, then `index-N`, then the metadata
//! with `parts_done = N`. A job starting on a batch resumes after `parts_done`; if `part-N+1` and its
//! index already exist (a crash between the index and the checkpoint), the part is adopted as it is,
//! so no row is enriched twice. A crash before the index is written redoes that part, overwriting it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use crate::blob::{BatchKey, BlobError, BlobStore};
use crate::domain::{Identifier, Query, QueryInput, Region};

use super::BatchError;
use super::columns::row_has_identifier;
use super::meta::{BatchMeta, BatchStatus};
use super::output::{Enrichment, StoredRow};
use super::purge::PartIndex;
use super::scan::{BatchLimits, RawRecord, Scanner};
use super::service::{INPUT, Inner, RowOutcome, index_name, lock, part_name};

/// Runs a batch to its end (or until it is deleted). Failures are recorded in its metadata.
pub(crate) async fn run(inner: &Arc<Inner>, key: &BatchKey) {
    run_to_end(inner, key).await;
    if let Some(notifier) = inner.notifier.get()
        && let Ok(meta) = inner.blobs.live_meta::<BatchMeta>(key).await
        && matches!(meta.status, BatchStatus::Done | BatchStatus::Failed)
        && let Some(url) = meta.webhook.clone()
    {
        notifier.finished(url, meta.summary());
    }
}

async fn run_to_end(inner: &Arc<Inner>, key: &BatchKey) {
    match run_inner(inner, key).await {
        Ok(()) => {}
        Err(BatchError::NotFound | BatchError::Expired) => {
            tracing::info!(batch = %key.id, "Batch job stopped: the batch is gone.");
        }
        Err(e) => {
            tracing::error!(batch = %key.id, error = %e, "Batch job failed.");
            let _commit = inner.commit.lock().await;
            if inner.is_cancelled(key) {
                return;
            }
            if let Ok(mut meta) = inner.blobs.live_meta::<BatchMeta>(key).await {
                meta.status = BatchStatus::Failed;
                meta.error = Some(format!("{:?}", e.kind()));
                let _ = inner.blobs.put_meta(key, &meta).await;
            }
        }
    }
}

async fn run_inner(inner: &Arc<Inner>, key: &BatchKey) -> Result<(), BatchError> {
    let mut meta: BatchMeta = inner.blobs.live_meta(key).await?;
    if matches!(meta.status, BatchStatus::Done | BatchStatus::Failed) {
        return Ok(());
    }
    if meta.status != BatchStatus::Running {
        meta.status = BatchStatus::Running;
        checkpoint(inner, key, &meta).await?;
    }
    let region = meta
        .input
        .region
        .as_deref()
        .and_then(|r| r.parse::<Region>().ok());
    let mut reader = RecordReader::open(&inner.blobs, key, meta.input.delimiter).await?;
    let part_rows = u64::from(meta.part_rows.max(1));
    // The header, then every row of the parts already done.
    reader
        .skip(1 + u64::from(meta.parts_done) * part_rows)
        .await?;
    loop {
        let first_row = u64::from(meta.parts_done) * part_rows + 1;
        let mut records = Vec::with_capacity(part_rows as usize);
        while (records.len() as u64) < part_rows {
            match reader.next().await? {
                Some(r) => records.push(r),
                None => break,
            }
        }
        if records.is_empty() {
            break;
        }
        let n = meta.parts_done + 1;
        if let Some(adopted) = adopt_part(inner, key, n).await? {
            meta.rows_done += records.len() as u64;
            meta.rows_found += adopted;
            meta.parts_done = n;
            checkpoint(inner, key, &meta).await?;
            continue;
        }
        let rows = enrich_part(inner, key, &meta, region, first_row, records).await;
        commit_part(inner, key, &mut meta, n, rows).await?;
    }
    meta.status = BatchStatus::Done;
    checkpoint(inner, key, &meta).await?;
    tracing::info!(batch = %key.id, rows = meta.rows_done, found = meta.rows_found, "Batch done.");
    Ok(())
}

/// A row ready to be written, with the keys of the identifiers it holds.
struct Done {
    row: StoredRow,
    keys: Vec<[u8; 16]>,
}

async fn enrich_part(
    inner: &Arc<Inner>,
    key: &BatchKey,
    meta: &BatchMeta,
    region: Option<Region>,
    first_row: u64,
    records: Vec<RawRecord>,
) -> Vec<Done> {
    let tenant = inner.tenant_permits(&key.tenant);
    let width = inner.config.concurrency.per_tenant.max(1);
    let encoding = meta.input.encoding;
    let columns = &meta.input.columns;
    stream::iter(records.into_iter().enumerate())
        .map(|(i, record)| {
            let cells: Vec<String> = record.iter().map(|c| encoding.decode(c)).collect();
            let input = columns.input(&cells);
            let (tenant, global, inner) = (tenant.clone(), inner.global.clone(), inner.clone());
            async move {
                let (status, profile) = if !row_has_identifier(&input) {
                    ("skipped".to_string(), None)
                } else {
                    match Query::parse(&input, region) {
                        Err(errors) => {
                            let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
                            (format!("invalid:{}", fields.join(",")), None)
                        }
                        Ok(q) => {
                            let _t = tenant.acquire_owned().await;
                            let _g = global.acquire_owned().await;
                            // Each row's lookup is its own task, so a part's rows use every worker
                            // thread; dropping the part (a deleted batch) aborts them.
                            let lookup =
                                AbortOnDropHandle::new(tokio::spawn(inner.enricher.enrich(q)));
                            let outcome: RowOutcome =
                                lookup.await.unwrap_or_else(|_| RowOutcome::error());
                            (outcome.status, outcome.profile)
                        }
                    }
                };
                let mut ids = input_identifiers(&input, region);
                if let Some(p) = &profile {
                    ids.extend(p.identifiers());
                }
                let mut keys: Vec<[u8; 16]> = ids
                    .iter()
                    .filter(|id| id.is_personal())
                    .filter_map(|id| inner.hasher.row_keys(id))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                Done {
                    row: StoredRow {
                        row: first_row + i as u64,
                        cells,
                        status,
                        enrichment: profile.as_ref().map(Enrichment::from_profile),
                    },
                    keys,
                }
            }
        })
        .buffered(width)
        .collect()
        .await
}

/// Every identifier a row's input holds, each field parsed on its own (an invalid phone does not hide
/// a valid email from the purge index).
fn input_identifiers(q: &QueryInput, region: Option<Region>) -> Vec<Identifier> {
    Query::parse_each(q, region).0.identifiers()
}

/// Writes part `n`, its index, then the checkpoint. Rows of people on the exclusion list are dropped.
async fn commit_part(
    inner: &Arc<Inner>,
    key: &BatchKey,
    meta: &mut BatchMeta,
    n: u32,
    rows: Vec<Done>,
) -> Result<(), BatchError> {
    let _commit = inner.commit.lock().await;
    if inner.is_cancelled(key) {
        return Err(BatchError::NotFound);
    }
    let processed = rows.len() as u64;
    let mut body = Vec::new();
    let mut index = PartIndex::default();
    let mut found = 0;
    let mut purged = 0;
    for done in rows {
        if done.keys.iter().any(|k| inner.hasher.is_excluded(k)) {
            purged += 1;
            continue;
        }
        found += u64::from(done.row.enrichment.is_some());
        index.push(done.row.row, &done.keys);
        write_line(&mut body, &done.row, key, n)?;
    }
    inner
        .blobs
        .put(key, &part_name(n), Bytes::from(body))
        .await?;
    put_index(&inner.blobs, key, n, &index).await?;
    meta.parts_done = n;
    meta.rows_done += processed;
    meta.rows_found += found;
    meta.rows_purged += purged;
    inner.blobs.put_meta(key, meta).await?;
    lock(&inner.index).insert_part(key, n, &index);
    Ok(())
}

/// Writes the metadata unless the batch was deleted meanwhile.
async fn checkpoint(
    inner: &Arc<Inner>,
    key: &BatchKey,
    meta: &BatchMeta,
) -> Result<(), BatchError> {
    let _commit = inner.commit.lock().await;
    if inner.is_cancelled(key) {
        return Err(BatchError::NotFound);
    }
    Ok(inner.blobs.put_meta(key, meta).await?)
}

/// A part written before a crash whose index is complete: take it as done. Returns its found rows.
async fn adopt_part(inner: &Arc<Inner>, key: &BatchKey, n: u32) -> Result<Option<u64>, BatchError> {
    let index = match read_index(&inner.blobs, key, n).await {
        Ok(index) => index,
        Err(BatchError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let rows = read_part(&inner.blobs, key, n).await?;
    lock(&inner.index).insert_part(key, n, &index);
    tracing::info!(batch = %key.id, part = n, "Adopted a part written before a restart.");
    Ok(Some(
        rows.iter().filter(|r| r.enrichment.is_some()).count() as u64
    ))
}

/// Rewrites part `n` without the rows holding any of `keys`; returns how many rows went.
pub(crate) async fn purge_part(
    inner: &Arc<Inner>,
    key: &BatchKey,
    n: u32,
    keys: &[[u8; 16]],
) -> Result<u64, BatchError> {
    let index = match read_index(&inner.blobs, key, n).await {
        Ok(index) => index,
        Err(BatchError::NotFound) => return Ok(0),
        Err(e) => return Err(e),
    };
    let doomed = index.rows_holding(keys);
    if doomed.is_empty() {
        return Ok(0);
    }
    let rows = read_part(&inner.blobs, key, n).await?;
    let mut body = Vec::new();
    let mut removed = 0;
    let mut found_removed = 0;
    for row in &rows {
        if doomed.contains(&row.row) {
            removed += 1;
            found_removed += u64::from(row.enrichment.is_some());
        } else {
            write_line(&mut body, row, key, n)?;
        }
    }
    // Part first: if we stop between the two writes, the index still lists the removed rows, which
    // only makes a later purge look at this part again.
    inner
        .blobs
        .put(key, &part_name(n), Bytes::from(body))
        .await?;
    let kept = index.without_rows(&doomed);
    put_index(&inner.blobs, key, n, &kept).await?;
    lock(&inner.index).insert_part(key, n, &kept);
    if let Ok(mut meta) = inner.blobs.live_meta::<BatchMeta>(key).await {
        meta.rows_purged += removed;
        meta.rows_found = meta.rows_found.saturating_sub(found_removed);
        inner.blobs.put_meta(key, &meta).await?;
    }
    tracing::info!(batch = %key.id, part = n, rows = removed, "Opted-out rows purged.");
    Ok(removed)
}

fn write_line(
    out: &mut Vec<u8>,
    row: &StoredRow,
    key: &BatchKey,
    n: u32,
) -> Result<(), BatchError> {
    serde_json::to_writer(&mut *out, row).map_err(|e| BatchError::CorruptPart {
        batch: key.id.to_string(),
        part: n,
        reason: e.to_string(),
    })?;
    out.push(b'\n');
    Ok(())
}

async fn put_index(
    blobs: &BlobStore,
    key: &BatchKey,
    n: u32,
    index: &PartIndex,
) -> Result<(), BatchError> {
    let json = serde_json::to_vec(index).map_err(|e| BatchError::CorruptPart {
        batch: key.id.to_string(),
        part: n,
        reason: e.to_string(),
    })?;
    Ok(blobs.put(key, &index_name(n), Bytes::from(json)).await?)
}

pub(crate) async fn read_part(
    blobs: &BlobStore,
    key: &BatchKey,
    n: u32,
) -> Result<Vec<StoredRow>, BatchError> {
    let bytes = blobs.get(key, &part_name(n)).await?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| BatchError::CorruptPart {
                batch: key.id.to_string(),
                part: n,
                reason: e.to_string(),
            })
        })
        .collect()
}

pub(crate) async fn read_index(
    blobs: &BlobStore,
    key: &BatchKey,
    n: u32,
) -> Result<PartIndex, BatchError> {
    let bytes = blobs.get(key, &index_name(n)).await?;
    serde_json::from_slice(&bytes).map_err(|e| BatchError::CorruptPart {
        batch: key.id.to_string(),
        part: n,
        reason: e.to_string(),
    })
}

/// Reads the stored input back record by record, holding one chunk at a time.
struct RecordReader {
    chunks: BoxStream<'static, Result<Bytes, BlobError>>,
    scanner: Scanner,
    ready: VecDeque<RawRecord>,
    ended: bool,
}

impl RecordReader {
    async fn open(blobs: &BlobStore, key: &BatchKey, delimiter: u8) -> Result<Self, BatchError> {
        // Limits were enforced at upload; reading back only needs to be bounded, not strict.
        let limits = BatchLimits {
            max_bytes: u64::MAX,
            max_rows: u64::MAX,
            max_columns: u64::MAX,
            max_field_bytes: u64::MAX,
        };
        Ok(Self {
            chunks: blobs.get_stream(key, INPUT).await?,
            scanner: Scanner::new(limits, Some(delimiter)),
            ready: VecDeque::new(),
            ended: false,
        })
    }

    async fn next(&mut self) -> Result<Option<RawRecord>, BatchError> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if self.ended {
                return Ok(None);
            }
            match self.chunks.next().await {
                Some(chunk) => self.scanner.feed(&chunk?, &mut self.ready)?,
                None => {
                    self.ended = true;
                    self.scanner.finish(&mut self.ready)?;
                }
            }
        }
    }

    async fn skip(&mut self, n: u64) -> Result<(), BatchError> {
        for _ in 0..n {
            if self.next().await?.is_none() {
                break;
            }
        }
        Ok(())
    }
}
