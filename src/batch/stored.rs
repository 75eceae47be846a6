//! A batch's objects as the service reads and writes them: names, the metadata (updated only from the
//! version last read, so concurrent writers never lose each other's changes), result parts and their
//! indexes. Everything is sealed by the blob area.
//!
//! Parts are read row by row as they are opened ([`PartRows`]) and written sealed as their rows come
//! ([`PartWriter`]). A part object is sealed whole in the sense that it is written in one put (a
//! rewrite must be a conditional update, which a streamed multipart write cannot be), so the part
//! size cap (`[batches] part_bytes`) is what bounds the memory of writing one; reading one never
//! holds more than a sealed chunk and a line.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use super::error::BatchError;
use super::index::{PartIndex, PartRef};
use super::meta::BatchMeta;
use super::output::StoredRow;
use crate::blob::{Area, BatchKey, BlobError, BlobStore, META, SealedBuffer};

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

/// Appends one result row as stored: a JSON object and a newline.
fn encode_row(
    key: &BatchKey,
    part: u32,
    row: &StoredRow,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    serde_json::to_writer(&mut *out, row).map_err(|e| BatchError::CorruptPart {
        batch: key.id.to_string(),
        part,
        reason: e.to_string(),
    })?;
    out.push(b'\n');
    Ok(())
}

/// The bytes one row takes in a part object (before sealing), for cutting parts at
/// `[batches] part_bytes`.
pub(crate) fn stored_len(row: &StoredRow) -> u64 {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail; a row that does not serialise is refused when written.
    let _ = serde_json::to_writer(&mut counter, row);
    counter.0 + 1
}

struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A part's rows, read as the part is opened: what is held is one sealed chunk (64 KiB) and the
/// line being read, never the part. Downloads and purges go through this, so their memory does not
/// grow with a part's size.
pub(crate) struct PartRows {
    batch: String,
    part: u32,
    chunks: BoxStream<'static, Result<Bytes, BlobError>>,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    at: usize,
    ended: bool,
}

impl PartRows {
    /// Opens a stored part; with the version being read (what a conditional rewrite starts from).
    pub(crate) async fn open(
        blobs: &BlobStore,
        key: &BatchKey,
        part: PartRef,
    ) -> Result<(Self, Option<String>), BatchError> {
        let (chunks, etag) = blobs
            .get_stream_versioned(key, Area::Data, &part_object(part))
            .await?;
        Ok((Self::new(key, part.part, chunks), etag))
    }

    pub(crate) fn new(
        key: &BatchKey,
        part: u32,
        chunks: BoxStream<'static, Result<Bytes, BlobError>>,
    ) -> Self {
        Self {
            batch: key.id.to_string(),
            part,
            chunks,
            buf: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    /// The next row, or `None` at the end of the part.
    pub(crate) async fn next(&mut self) -> Result<Option<StoredRow>, BatchError> {
        loop {
            let unread = &self.buf[self.at..];
            if let Some(len) = unread.iter().position(|b| *b == b'\n') {
                let line = self.at..self.at + len;
                self.at += len + 1;
                if line.is_empty() {
                    continue;
                }
                return self.parse(line).map(Some);
            }
            if self.ended {
                if unread.is_empty() {
                    return Ok(None);
                }
                let line = self.at..self.buf.len();
                self.at = self.buf.len();
                return self.parse(line).map(Some);
            }
            self.buf.drain(..self.at);
            self.at = 0;
            match self.chunks.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => self.ended = true,
            }
        }
    }

    fn parse(&self, line: std::ops::Range<usize>) -> Result<StoredRow, BatchError> {
        serde_json::from_slice(&self.buf[line]).map_err(|e| BatchError::CorruptPart {
            batch: self.batch.clone(),
            part: self.part,
            reason: e.to_string(),
        })
    }
}

/// A part's rows, all of them (tests).
#[cfg(test)]
pub(crate) async fn read_part(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
) -> Result<Vec<StoredRow>, BatchError> {
    let (mut rows, _) = PartRows::open(blobs, key, part).await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push(row);
    }
    Ok(out)
}

/// A part being written: rows are encoded and sealed as they come, so what is held is the sealed
/// part, never a plaintext copy beside it. Written whole ([`PartWriter::put`]), or under a version
/// check ([`PartWriter::update`]) when it rewrites a part a purge read.
pub(crate) struct PartWriter {
    key: BatchKey,
    part: u32,
    buffer: SealedBuffer,
    line: Vec<u8>,
}

impl PartWriter {
    pub(crate) async fn start(
        blobs: &BlobStore,
        key: &BatchKey,
        part: PartRef,
    ) -> Result<Self, BatchError> {
        Ok(Self {
            key: key.clone(),
            part: part.part,
            buffer: blobs.buffer(key, Area::Data, &part_object(part)).await?,
            line: Vec::new(),
        })
    }

    pub(crate) fn push(&mut self, row: &StoredRow) -> Result<(), BatchError> {
        self.line.clear();
        encode_row(&self.key, self.part, row, &mut self.line)?;
        self.buffer.push(&self.line)?;
        Ok(())
    }

    /// Writes the part, replacing any object of its name.
    pub(crate) async fn put(self, blobs: &BlobStore) -> Result<(), BlobError> {
        blobs.put_buffer(self.buffer).await.map(drop)
    }

    /// Writes the part only if it is still at `etag`.
    pub(crate) async fn update(self, blobs: &BlobStore, etag: &str) -> Result<(), BlobError> {
        blobs.update_buffer(self.buffer, etag).await.map(drop)
    }
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

/// The rows of a part whose index lists a key for which `pred` holds; `None` when the part has no
/// index. The index is opened as it streams and read entry by entry ([`super::index::rows_where`]).
pub(crate) async fn listed_rows(
    blobs: &BlobStore,
    key: &BatchKey,
    part: PartRef,
    pred: &(dyn Fn(&[u8; 16]) -> bool + Sync),
) -> Result<Option<Vec<u64>>, BatchError> {
    let mut chunks = match blobs.get_stream(key, Area::Index, &part.suffix()).await {
        Ok(chunks) => chunks,
        Err(BlobError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut json = Vec::new();
    while let Some(chunk) = chunks.next().await {
        json.extend_from_slice(&chunk?);
    }
    super::index::rows_where(&json, pred)
        .map(Some)
        .map_err(|e| BatchError::CorruptPart {
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
    let mut writer = PartWriter::start(blobs, key, part).await?;
    for row in rows {
        writer.push(row)?;
    }
    Ok(writer.put(blobs).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BatchId, TenantKey};

    fn row(n: u64, note: &str) -> StoredRow {
        StoredRow {
            row: n,
            cells: vec![format!("person{n}@example.org"), note.to_string()],
            status: "not_found".into(),
            enrichment: None,
            note: None,
            sources: Vec::new(),
        }
    }

    /// Rows come out whole and in order whatever the chunks cut them at: inside a row, right after a
    /// newline, and with the last row missing its newline.
    #[tokio::test]
    async fn part_rows_are_read_whole_across_any_chunk_boundary() {
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        let rows: Vec<StoredRow> = (1..=5)
            .map(|n| row(n, &"x".repeat(n as usize * 7)))
            .collect();
        let mut bytes = Vec::new();
        for r in &rows {
            encode_row(&key, 1, r, &mut bytes).expect("encode");
        }
        assert_eq!(
            rows.iter().map(stored_len).sum::<u64>(),
            bytes.len() as u64,
            "stored_len counts what is written"
        );
        bytes.pop();
        for size in [1, 2, 3, 17, 64, bytes.len()] {
            let chunks: Vec<Result<Bytes, BlobError>> = bytes
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let mut read = PartRows::new(&key, 1, futures::stream::iter(chunks).boxed());
            let mut got = Vec::new();
            while let Some(r) = read.next().await.expect("row") {
                got.push(r);
            }
            assert_eq!(got, rows, "chunks of {size} bytes");
        }
        let broken = vec![Ok(Bytes::from_static(b"not json\n"))];
        let mut read = PartRows::new(&key, 3, futures::stream::iter(broken).boxed());
        assert!(matches!(
            read.next().await,
            Err(BatchError::CorruptPart { part: 3, .. })
        ));
    }
}
