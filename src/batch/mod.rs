//! CSV batch enrichment: upload, processing, download, delete and opt-out purge, below the HTTP layer.
//!
//! - [`scan`] parses uploads as a stream (encoding, delimiter, quoting, limits) without loading them whole;
//!   `ingest` streams an upload into the store while scanning it.
//! - [`columns`] maps headers to query fields; [`output`] renders result rows as CSV (formula-neutralised)
//!   or NDJSON.
//! - `service` is [`BatchService`]: create/get/list/delete/result, the job dispatcher, the sweep;
//!   `job` runs one batch under its lease, `purge` removes an opted-out person's rows, `stored` reads
//!   and writes a batch's objects (parts row by row), `download` streams a result, `fair` picks the
//!   next job across tenants, `state` is what they share.
//! - `seams` and `index` are what the runner needs from the rest of the service ([`Enricher`],
//!   [`Notifier`], [`RowHasher`]); `bridge` implements them for the running service.
//!
//! Modules import downwards only: no module imports one that imports it back. Storage goes through
//! [`crate::blob::BlobStore`] on the shared [`crate::store::Store`].

mod bridge;
mod columns;
mod download;
mod error;
mod fair;
mod index;
mod ingest;
mod input;
mod job;
mod journal;
mod meta;
mod output;
mod purge;
mod scan;
mod seams;
mod service;
mod settings;
mod spend;
mod state;
mod stored;
pub mod webhook;

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod service_tests;

pub use bridge::{ExclusionRowHasher, PipelineEnricher, PurgeHook};
pub use columns::{Column, ColumnMap};
pub use error::{BatchError, ErrorKind, Limit};
pub use index::{PurgeReport, RowHasher};
pub use meta::{BatchMeta, BatchStatus, BatchSummary};
pub use output::{ENRICH_COLUMNS, Enrichment, Format, StoredRow, neutralise};
pub use purge::Held;
pub use scan::{Encoding, Scanner};
pub use seams::{Enricher, Notifier, RowContext, RowOutcome, RowSource};
pub use service::BatchService;
pub use settings::{BatchConfig, BatchLimits, BatchOptions, Concurrency};
pub use state::BatchStore;
