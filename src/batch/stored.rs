//! A batch's objects as the service reads and writes them: names, the metadata (updated only from the
//! version last read, so concurrent writers never lose each other's changes), result parts and their
//! indexes. Everything is sealed by the blob area.

use super::error::BatchError;
use super::index::{PartIndex, PartRef};
use super::meta::BatchMeta;
use super::output::StoredRow;
use crate::blob::{Area, BatchKey, BlobError, BlobStore, META};

/// Object name of the stored upload.
pub(crate) const INPUT: &str = "input";

/// A conditional update lost this many times in a row means something is wrong, not busy.
const MAX_CONFLICTS: usize = 50;

pub(crate) fn part_object(r: PartRef) -> String {
    format!("part-{}", r.suffix())
}

/// Stored metadata and the version it was read at.
pub(crate) struct StoredMeta {
    pub(crate) meta: BatchMeta,
    pub(crate) etag: Option<String>,
}

fn parse_meta(key: &BatchKey, bytes: &[u8]) -> Result<BatchMeta, BatchError> {
    serde_json::from_slice(bytes).map_err(|e| {
        BatchError::from(BlobError::Corrupt {
            batch: key.id.to_string(),
            reason: e.to_string(),
        })
    })
}

fn encode<T: serde::Serialize>(key: &BatchKey, value: &T) -> Result<Vec<u8>, BatchError> {
    serde_json::to_vec(value).map_err(|e| {
        BatchError::from(BlobError::Corrupt {
            batch: key.id.to_string(),
            reason: e.to_string(),
        })
    })
}

/// The metadata whatever the batch's age.
pub(crate) async fn read_meta(blobs: &BlobStore, key: &BatchKey) -> Result<StoredMeta, BatchError> {
    let (bytes, etag) = blobs.get(key, Area::Data, META).await?;
    Ok(StoredMeta {
        meta: parse_meta(key, &bytes)?,
        etag,
    })
}

/// The metadata of a batch that may be served ([`BatchError::Expired`] otherwise).
pub(crate) async fn live_meta(blobs: &BlobStore, key: &BatchKey) -> Result<BatchMeta, BatchError> {
    blobs.check_live(key).await?;
    Ok(read_meta(blobs, key).await?.meta)
}

/// Writes the first metadata of a new batch.
pub(crate) async fn create_meta(
    blobs: &BlobStore,
    key: &BatchKey,
    meta: &BatchMeta,
) -> Result<(), BatchError> {
    blobs
        .create(key, Area::Data, META, &encode(key, meta)?)
        .await?;
    Ok(())
}

/// Applies `change` to the stored metadata and writes it back from the version read; on a conflict
/// (another replica, or a purge, wrote meanwhile) reads again and re-applies. `change` may refuse with
/// an error, which is returned as it is and writes nothing.
pub(crate) async fn modify_meta<T>(
    blobs: &BlobStore,
    key: &BatchKey,
    mut change: impl FnMut(&mut BatchMeta) -> Result<T, BatchError>,
) -> Result<(BatchMeta, T), BatchError> {
    for _ in 0..MAX_CONFLICTS {
        let StoredMeta { mut meta, etag } = read_meta(blobs, key).await?;
        let out = change(&mut meta)?;
        let bytes = encode(key, &meta)?;
        let written = match &etag {
            Some(etag) => blobs.update(key, Area::Data, META, &bytes, etag).await,
            None => blobs.put(key, Area::Data, META, &bytes).await,
        };
        match written {
            Ok(_) => return Ok((meta, out)),
            Err(BlobError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::Conflict(key.id.to_string()).into())
}

/// Result rows as stored: one JSON object per line.
pub(crate) fn encode_rows(
    key: &BatchKey,
    part: u32,
    rows: &[StoredRow],
) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row).map_err(|e| BatchError::CorruptPart {
            batch: key.id.to_string(),
            part,
            reason: e.to_string(),
        })?;
        out.push(b'\n');
    }
    Ok(out)
}

/// A part's rows and the version they were read at.
pub(crate) async fn read_part(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
) -> Result<(Vec<StoredRow>, Option<String>), BatchError> {
    let (bytes, etag) = blobs.get(key, Area::Data, &part_object(part)).await?;
    let rows = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| BatchError::CorruptPart {
                batch: key.id.to_string(),
                part: part.part,
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((rows, etag))
}

pub(crate) async fn read_index(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
) -> Result<PartIndex, BatchError> {
    let (bytes, _) = blobs.get(key, Area::Index, &part.suffix()).await?;
    serde_json::from_slice(&bytes).map_err(|e| BatchError::CorruptPart {
        batch: key.id.to_string(),
        part: part.part,
        reason: e.to_string(),
    })
}

pub(crate) async fn write_index(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
    index: &PartIndex,
) -> Result<(), BatchError> {
    blobs
        .put(key, Area::Index, &part.suffix(), &encode(key, index)?)
        .await?;
    Ok(())
}

/// Writes a part's rows whole (replacing any object of that name).
pub(crate) async fn write_part(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
    rows: &[StoredRow],
) -> Result<(), BatchError> {
    let body = encode_rows(key, part.part, rows)?;
    blobs
        .put(key, Area::Data, &part_object(part), &body)
        .await?;
    Ok(())
}
