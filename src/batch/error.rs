//! [`BatchError`]: every way a batch call can fail, with [`ErrorKind`] for the HTTP edge to map.
//!
//! Messages name rows, columns (by header) and limits; they never quote cell contents.

use crate::blob::BlobError;

/// Which size limit an upload broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Bytes(u64),
    Rows(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{n} bytes"),
            Self::Rows(n) => write!(f, "{n} rows"),
        }
    }
}

/// How the edge should answer an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: unknown id, or another tenant's.
    NotFound,
    /// 410: past its retention.
    Expired,
    /// 413: upload above a size limit.
    TooLarge,
    /// 507: the tenant's stored batches would pass its storage quota.
    QuotaExceeded,
    /// 422: the file or the options are not usable; the message names the row, column or option.
    Invalid,
    /// 409: the result is not ready yet.
    NotReady,
    /// 400: the request body broke off.
    BadUpload,
    /// 503: the store cannot be reached now; try again.
    Unavailable,
    /// 500: our fault.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch not found")]
    NotFound,
    #[error("batch has expired")]
    Expired,
    #[error("upload exceeds the limit of {0}")]
    TooLarge(Limit),
    #[error(
        "storage quota: your stored batches take {used} of your {quota} bytes, and this upload does \
         not fit in what is left; delete batches you no longer need (DELETE /v1/batches/{{id}}) or \
         ask the operator for a larger quota"
    )]
    QuotaExceeded { used: u64, quota: u64 },
    #[error("row {row} has {columns} columns; the limit is {limit}")]
    TooManyColumns { row: u64, columns: u64, limit: u64 },
    #[error("row {row}, column {column}: field is longer than {limit} bytes")]
    FieldTooLong {
        row: u64,
        column: String,
        limit: u64,
    },
    #[error("row {row} has {found} non-empty fields but the header has {expected} columns")]
    RaggedRow { row: u64, found: u64, expected: u64 },
    #[error("the file is empty: a header line is required")]
    EmptyFile,
    #[error(
        "no identifier column: need email, phone, profile URL, or a name with company or domain; headers seen: {}",
        headers.join(", ")
    )]
    NoIdentifierColumn { headers: Vec<String> },
    #[error("columns: no header named '{header}' in the file")]
    UnknownColumnHeader { header: String },
    #[error("columns: '{header}' maps to unknown field '{field}'")]
    UnknownColumnField { header: String, field: String },
    #[error("region: '{value}' is not an ISO 3166 region code")]
    InvalidRegion { value: String },
    #[error("webhook: {reason}")]
    InvalidWebhook { reason: String },
    #[error("the upload broke off: {0}")]
    Upload(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("batch result is not ready (status {status})")]
    NotReady { status: &'static str },
    #[error("stored part {part} of batch {batch} is unreadable: {reason}")]
    CorruptPart {
        batch: String,
        part: u32,
        reason: String,
    },
    /// Another replica took the batch's job over (its lease generation is newer): stop, write nothing.
    #[error("another replica runs this batch now")]
    LeaseLost,
    #[error(transparent)]
    Blob(BlobError),
}

impl From<BlobError> for BatchError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(_) => Self::NotFound,
            BlobError::Expired(_) => Self::Expired,
            e => Self::Blob(e),
        }
    }
}

impl BatchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::Expired => ErrorKind::Expired,
            Self::TooLarge(_) => ErrorKind::TooLarge,
            Self::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
            Self::TooManyColumns { .. }
            | Self::FieldTooLong { .. }
            | Self::RaggedRow { .. }
            | Self::EmptyFile
            | Self::NoIdentifierColumn { .. }
            | Self::UnknownColumnHeader { .. }
            | Self::UnknownColumnField { .. }
            | Self::InvalidRegion { .. }
            | Self::InvalidWebhook { .. } => ErrorKind::Invalid,
            Self::Upload(_) => ErrorKind::BadUpload,
            Self::NotReady { .. } => ErrorKind::NotReady,
            Self::Blob(e) if e.is_unavailable() => ErrorKind::Unavailable,
            Self::CorruptPart { .. } | Self::Blob(_) | Self::LeaseLost => ErrorKind::Internal,
        }
    }
}
