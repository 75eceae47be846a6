//! A batch's stored input (`input`, the upload as received) read back record by record, and blanked
//! row by row when someone in it opts out.
//!
//! The input lives only while its batch waits or runs: the job deletes it when the batch ends. A
//! purge blanks a row in place (every cell emptied, the record kept) so that row numbers, and the
//! job's checkpoint that counts them, stay as they were; the row is listed in the metadata's
//! `input_purged` first, and the job drops it instead of writing it.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use super::error::BatchError;
use super::index::RowHasher;
use super::meta::BatchMeta;
use super::scan::{RawRecord, Scanner};
use super::settings::BatchLimits;
use super::stored::INPUT;
use crate::blob::{Area, BatchKey, BlobError, BlobStore};
use crate::domain::{Identifier, Query, QueryInput, Region};

/// Records gathered before each write of a rewritten input.
const REWRITE_CHUNK_RECORDS: usize = 512;

/// Every identifier a row's input holds, each field parsed on its own (an invalid phone does not hide
/// a valid email from the purge index).
pub(crate) fn input_identifiers(q: &QueryInput, region: Option<Region>) -> Vec<Identifier> {
    Query::parse_each(q, region).0.identifiers()
}

/// The region the batch reads national phone numbers in.
pub(crate) fn region(meta: &BatchMeta) -> Option<Region> {
    meta.input
        .region
        .as_deref()
        .and_then(|r| r.parse::<Region>().ok())
}

/// The row keys of one input record's personal identifiers.
fn record_keys(hasher: &dyn RowHasher, meta: &BatchMeta, record: &RawRecord) -> Vec<[u8; 16]> {
    let cells: Vec<String> = record
        .iter()
        .map(|c| meta.input.encoding.decode(c))
        .collect();
    input_identifiers(&meta.input.columns.input(&cells), region(meta))
        .iter()
        .filter(|id| id.is_personal())
        .filter_map(|id| hasher.row_keys(id))
        .collect()
}

/// The data rows (1-based, header not counted) of the stored input that hold one of `keys`.
pub(crate) async fn rows_holding(
    blobs: &BlobStore,
    key: &BatchKey,
    meta: &BatchMeta,
    hasher: &dyn RowHasher,
    keys: &[[u8; 16]],
) -> Result<Vec<u64>, BatchError> {
    let mut reader = RecordReader::open(blobs, key, meta.input.delimiter).await?;
    reader.skip(1).await?;
    let mut row = 0;
    let mut out = Vec::new();
    while let Some(record) = reader.next().await? {
        row += 1;
        if record_keys(hasher, meta, &record)
            .iter()
            .any(|k| keys.contains(k))
        {
            out.push(row);
        }
    }
    Ok(out)
}

/// Writes the stored input again with the data rows in `blank` (sorted) emptied cell by cell.
pub(crate) async fn blank_rows(
    blobs: &BlobStore,
    key: &BatchKey,
    delimiter: u8,
    blank: &[u64],
) -> Result<(), BatchError> {
    let mut reader = RecordReader::open(blobs, key, delimiter).await?;
    let mut writer = blobs.writer(key, Area::Data, INPUT).await?;
    let written = async {
        let mut csv = new_csv(delimiter);
        let mut pending = 0;
        // Record 0 is the header.
        let mut n: u64 = 0;
        while let Some(record) = reader.next().await? {
            let out: Vec<&[u8]> = if n > 0 && blank.binary_search(&n).is_ok() {
                vec![&[][..]; record.len()]
            } else {
                record.iter().map(Vec::as_slice).collect()
            };
            csv.write_record(out).map_err(rewrite_error(key))?;
            n += 1;
            pending += 1;
            if pending == REWRITE_CHUNK_RECORDS {
                writer.write(&take(&mut csv, delimiter, key)?).await?;
                pending = 0;
            }
        }
        writer.write(&take(&mut csv, delimiter, key)?).await?;
        Ok::<_, BatchError>(())
    }
    .await;
    match written {
        Ok(()) => Ok(writer.finish().await?),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

fn new_csv(delimiter: u8) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .delimiter(delimiter)
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(Vec::new())
}

/// The bytes written so far, leaving a fresh writer in place.
fn take(
    csv: &mut csv::Writer<Vec<u8>>,
    delimiter: u8,
    key: &BatchKey,
) -> Result<Vec<u8>, BatchError> {
    let done = std::mem::replace(csv, new_csv(delimiter));
    done.into_inner()
        .map_err(|e| rewrite_error(key)(e.into_error()))
}

fn rewrite_error<E: std::fmt::Display>(key: &BatchKey) -> impl Fn(E) -> BatchError + '_ {
    move |e| {
        BatchError::from(BlobError::Corrupt {
            batch: key.id.to_string(),
            reason: format!("the input could not be rewritten: {e}"),
        })
    }
}

/// Reads the stored input back record by record, holding one chunk at a time.
pub(crate) struct RecordReader {
    chunks: BoxStream<'static, Result<Bytes, BlobError>>,
    scanner: Scanner,
    ready: VecDeque<RawRecord>,
    ended: bool,
}

impl RecordReader {
    pub(crate) async fn open(
        blobs: &BlobStore,
        key: &BatchKey,
        delimiter: u8,
    ) -> Result<Self, BatchError> {
        // Limits were enforced at upload; reading back only needs to be bounded, not strict.
        let limits = BatchLimits {
            max_bytes: u64::MAX,
            max_rows: u64::MAX,
            max_columns: u64::MAX,
            max_field_bytes: u64::MAX,
        };
        Ok(Self {
            chunks: blobs.get_stream(key, Area::Data, INPUT).await?,
            scanner: Scanner::new(limits, Some(delimiter)),
            ready: VecDeque::new(),
            ended: false,
        })
    }

    pub(crate) async fn next(&mut self) -> Result<Option<RawRecord>, BatchError> {
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

    pub(crate) async fn skip(&mut self, n: u64) -> Result<(), BatchError> {
        for _ in 0..n {
            if self.next().await?.is_none() {
                break;
            }
        }
        Ok(())
    }
}
