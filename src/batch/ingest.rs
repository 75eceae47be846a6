//! The upload pass: stream the body into the blob area while scanning it (limits, encoding, delimiter,
//! header mapping). Nothing is held but the current chunk, the header and one record.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};

use crate::blob::BlobWriter;

use super::columns::ColumnMap;
use super::error::{BatchError, Limit};
use super::meta::InputFormat;
use super::scan::{Encoding, Scanner};
use super::settings::{BatchLimits, BatchOptions};

/// What the upload pass learnt.
pub(crate) struct Ingested {
    pub(crate) rows: u64,
    pub(crate) format: InputFormat,
}

/// Streams the upload into `writer` while scanning it: limits, encoding, delimiter, header mapping.
pub(crate) async fn ingest<S, E>(
    body: S,
    writer: &mut BlobWriter,
    limits: BatchLimits,
    options: &BatchOptions,
) -> Result<Ingested, BatchError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut scanner = Scanner::new(limits, None);
    let mut records = VecDeque::new();
    let mut header: Option<Vec<Vec<u8>>> = None;
    let mut bytes: u64 = 0;
    let mut check_header = |records: &mut VecDeque<Vec<Vec<u8>>>| {
        if header.is_none()
            && let Some(h) = records.pop_front()
        {
            let names: Vec<String> = h.iter().map(|c| Encoding::guess(c).decode(c)).collect();
            ColumnMap::new(&names, &options.columns)?;
            header = Some(h);
        }
        records.clear();
        Ok::<_, BatchError>(())
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BatchError::Upload(e.into()))?;
        bytes += chunk.len() as u64;
        if bytes > limits.max_bytes {
            return Err(BatchError::TooLarge(Limit::Bytes(limits.max_bytes)));
        }
        scanner.feed(&chunk, &mut records)?;
        check_header(&mut records)?;
        writer.write(&chunk).await?;
    }
    scanner.finish(&mut records)?;
    check_header(&mut records)?;
    let Some(header) = header else {
        return Err(BatchError::EmptyFile);
    };
    let encoding = scanner.encoding();
    let headers: Vec<String> = header.iter().map(|c| encoding.decode(c)).collect();
    let columns = ColumnMap::new(&headers, &options.columns)?;
    Ok(Ingested {
        rows: scanner.records().saturating_sub(1),
        format: InputFormat {
            encoding,
            bom: scanner.had_bom(),
            delimiter: scanner.delimiter(),
            headers,
            columns,
            region: options.region.clone(),
            bytes,
        },
    })
}
