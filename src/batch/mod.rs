//! CSV batch enrichment: upload, processing, download, delete and opt-out purge, below the HTTP layer.
//!
//! - [`scan`] parses uploads as a stream (encoding, delimiter, quoting, limits) without loading them whole.
//! - [`columns`] maps headers to query fields.
//! - [`output`] renders result rows as CSV (formula-neutralised) or NDJSON.
//! - [`service`] is [`BatchService`]: create/get/list/delete/result, workers, restart-safe jobs and purge.
//!
//! - [`bridge`] connects it to the running service: the pipeline, the exclusion list, the opt-out hook.
//!
//! Storage goes through [`crate::blob::BlobStore`]; the lookup pipeline is reached only through
//! [`Enricher`], and the opt-out list only through [`RowHasher`].

mod bridge;
mod columns;
mod error;
mod ingest;
mod job;
mod meta;
mod output;
mod purge;
mod scan;
mod service;
pub mod webhook;

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod service_tests;

pub use bridge::{ExclusionRowHasher, PipelineEnricher, PurgeHook};
pub use columns::{Column, ColumnMap};
pub use error::{BatchError, ErrorKind, Limit};
pub use meta::{BatchMeta, BatchStatus, BatchSummary};
pub use output::{ENRICH_COLUMNS, Enrichment, Format, StoredRow, neutralise};
pub use purge::{PurgeReport, RowHasher};
pub use scan::{BatchLimits, Encoding, Scanner};
pub use service::{
    BatchConfig, BatchOptions, BatchService, Concurrency, Enricher, Notifier, RowOutcome,
};
