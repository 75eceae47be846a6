//! A finished batch's result as it is downloaded: each committed part opened in turn and read row by
//! row ([`PartRows`]), every row screened against the exclusion list, rendered, and handed on in
//! pieces of about [`PIECE`] bytes. What a download holds is one sealed chunk, one row, the piece
//! being filled and, while a part is opened, the text of that part's index (read entry by entry for
//! the rows to screen, then dropped): whatever the size of the result, and less than the part for
//! a part. `benches/download.rs` measures it.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use super::error::BatchError;
use super::index::{PartRef, RowHasher};
use super::output::{Renderer, StoredRow};
use super::stored::{self, PartRows};
use crate::blob::{BatchKey, BlobStore};

/// Rendered bytes gathered before they are sent.
pub(crate) const PIECE: usize = 64 * 1024;

/// The read-time filter, a second line of defence behind the purge: a row holding an identifier on
/// the exclusion list (given or found, as its part's index lists them) is served as a miss reads,
/// the tenant's input and nothing added ([`StoredRow::as_miss`]). A part whose index is missing
/// cannot be checked, so every enriched row of it is served that way.
pub(crate) struct Screen {
    /// The part's rows holding a listed key; `None` when the part has no index.
    listed: Option<Vec<u64>>,
}

impl Screen {
    /// The screen of a part whose index lists `listed` rows as holding a key on the list (`None`:
    /// the part has no index).
    pub(crate) fn new(listed: Option<Vec<u64>>) -> Self {
        Self { listed }
    }

    /// Makes `row` a miss if it must be served as one; whether it changed.
    pub(crate) fn apply(&self, row: &mut StoredRow, impersonal: &[Arc<str>]) -> bool {
        let listed = self
            .listed
            .as_ref()
            .is_none_or(|rows| rows.contains(&row.row));
        if listed && row.enrichment.is_some() {
            row.as_miss(impersonal);
            return true;
        }
        false
    }
}

/// What a download needs besides the parts.
pub(crate) struct Source {
    pub(crate) blobs: BlobStore,
    pub(crate) key: BatchKey,
    pub(crate) renderer: Arc<Renderer>,
    pub(crate) hasher: Arc<dyn RowHasher>,
    pub(crate) impersonal: Arc<[Arc<str>]>,
}

/// The part being read.
struct Open {
    part: u32,
    rows: PartRows,
    screen: Screen,
    screened: usize,
}

struct Download {
    source: Source,
    parts: std::vec::IntoIter<PartRef>,
    open: Option<Open>,
}

/// The rows of `parts`, rendered, in pieces of about [`PIECE`] bytes.
pub(crate) fn rows(
    source: Source,
    parts: Vec<PartRef>,
) -> BoxStream<'static, Result<Bytes, BatchError>> {
    let download = Download {
        source,
        parts: parts.into_iter(),
        open: None,
    };
    stream::try_unfold(download, |mut d| async move {
        Ok(d.piece().await?.map(|piece| (piece, d)))
    })
    .boxed()
}

impl Download {
    /// The next piece of rendered rows; `None` once every part is read.
    async fn piece(&mut self) -> Result<Option<Bytes>, BatchError> {
        let mut out = Vec::with_capacity(PIECE + 4096);
        loop {
            let Some(open) = self.open.as_mut() else {
                let Some(part) = self.parts.next() else {
                    return Ok((!out.is_empty()).then(|| Bytes::from(out)));
                };
                self.open = Some(start(&self.source, part).await?);
                continue;
            };
            match open.rows.next().await? {
                Some(mut row) => {
                    if open.screen.apply(&mut row, &self.source.impersonal) {
                        open.screened += 1;
                    }
                    self.source.renderer.row(&row, &mut out);
                    if out.len() >= PIECE {
                        return Ok(Some(Bytes::from(out)));
                    }
                }
                None => {
                    if open.screened > 0 {
                        tracing::warn!(batch = %self.source.key.id, part = open.part, rows = open.screened, "Rows of opted-out people were still stored; served as misses (their purge is pending or was cut short).");
                    }
                    self.open = None;
                }
            }
        }
    }
}

/// Opens a part: its index (for the screen), then its rows.
async fn start(source: &Source, part: PartRef) -> Result<Open, BatchError> {
    let Source {
        blobs, key, hasher, ..
    } = source;
    let listed = stored::listed_rows(blobs, key, part, &|k| hasher.is_excluded(k)).await?;
    let (rows, _) = PartRows::open(blobs, key, part).await?;
    Ok(Open {
        part: part.part,
        rows,
        screen: Screen::new(listed),
        screened: 0,
    })
}
