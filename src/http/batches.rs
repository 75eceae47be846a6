//! `/v1/batches`: upload a CSV, follow its progress, download the result, delete it.
//!
//! # Upload
//! `POST /v1/batches` takes the file either as the whole body (`Content-Type: text/csv`, also
//! `application/csv` and `text/plain`) or as `multipart/form-data` with the file in a field named
//! `file`. The body is streamed into the blob area while it is scanned; it is never held whole.
//!
//! Options, all optional, as query parameters or (multipart only) as text fields placed *before*
//! the `file` field (a multipart field overrides the query parameter of the same name):
//! - `columns`: a JSON object mapping a header of the file to a field (`email`, `phone`,
//!   `profile_url`, `first_name`, `last_name`, `name`, `company`, `domain`, or `ignore`), e.g.
//!   `{"Work mail":"email","Notes":"ignore"}`. Headers are compared case- and accent-insensitively.
//! - `region`: ISO 3166 code for phone numbers written without a country code (`FR`).
//! - `webhook`: an `https://` (or `http://`) URL called once with a signed JSON summary when the batch
//!   is done or failed (see [`crate::batch::webhook`]).
//!
//! Another tenant's batch id, or a string that is not a batch id, answers 404 on every route.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{BodyErrors, Invalid, KeyErrors, Problem};
use super::body::{media_type, query};
use super::{ApiError, AppState, Tenant};
use crate::batch::{BatchError, BatchOptions, ErrorKind, Format};
use crate::blob::BatchId;

/// Multipart framing and option fields allowed on top of `batches.max_bytes`.
pub const MULTIPART_SLACK: u64 = 64 * 1024;

/// The longest option field (`columns`, `region`, `webhook`) accepted in a multipart upload.
const MAX_OPTION_BYTES: usize = 16 * 1024;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadParams {
    /// A JSON object mapping a header to a field (email, phone, profile_url, first_name, last_name,
    /// name, company, domain, ignore), e.g. `{"Work mail":"email"}`.
    columns: Option<String>,
    /// ISO 3166 region for phone numbers without a country code.
    region: Option<String>,
    /// Called once with the signed summary when the batch ends (`Enrichd-Signature:
    /// t=<unix>,v1=<hex keyed blake3 of '<t>.'+body>`); refused for private addresses.
    webhook: Option<String>,
    /// The most the batch's paid hits may cost, in the operator's currency unit: a plain decimal
    /// number such as `25` or `12.50`. Paid providers are not asked once a hit would pass it.
    #[param(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$")]
    max_cost: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ResultParams {
    /// `csv` (the default) or `ndjson` (exact values).
    #[param(pattern = "^(csv|ndjson)?$")]
    format: Option<String>,
}

/// A batch and its progress, as `GET /v1/batches/{id}` answers it.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = BatchSummary)]
struct BatchSummaryDoc {
    #[schema(pattern = "^[0-9a-f]{32}$")]
    id: String,
    #[schema(pattern = "^(queued|running|done|failed)$")]
    status: String,
    rows_total: u64,
    rows_done: u64,
    rows_found: u64,
    /// Rows that could not be enriched.
    rows_error: u64,
    /// The commonest reason those rows failed, when some did.
    rows_error_reason: Option<String>,
    /// Why the batch failed, when it did.
    error: Option<String>,
    /// Seconds until the batch should be done, from the rows left and the budgets of the sources
    /// they need; absent before the first rows are done, and once the batch is.
    eta_seconds: Option<u64>,
    /// Rows whose lookups are waiting for a source's budget right now.
    rows_waiting_for_budget: u64,
    /// What the paid providers' hits cost so far.
    cost: f64,
    /// `cost ÷ rows_found`; absent while nothing was found.
    cost_per_found: Option<f64>,
    /// The cap on `cost` set at upload (`max_cost`).
    max_cost: Option<f64>,
    #[schema(format = DateTime)]
    created_at: String,
    /// `created_at` + `retention.batch_results_days` (at most 30 days); from then on 410, erased.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// The answer to an upload.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = BatchCreated)]
struct BatchCreatedDoc {
    id: String,
    #[schema(pattern = "^queued$")]
    status: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    rows_total: u64,
}

/// The caller's batches.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = BatchList)]
struct BatchListDoc {
    batches: Vec<BatchSummaryDoc>,
}

/// The multipart form of an upload: options first, then the file.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct UploadForm {
    columns: Option<String>,
    region: Option<String>,
    webhook: Option<String>,
    max_cost: Option<String>,
    #[schema(format = Binary, content_media_type = "text/csv")]
    file: String,
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e.kind() {
            ErrorKind::NotFound => Self::NotFound("batch"),
            ErrorKind::Expired => Self::Gone("batch"),
            ErrorKind::TooLarge => Self::UploadTooLarge(e.to_string()),
            ErrorKind::QuotaExceeded => Self::QuotaExceeded(e.to_string()),
            ErrorKind::Invalid => {
                let field = match e {
                    BatchError::UnknownColumnHeader { .. }
                    | BatchError::UnknownColumnField { .. } => "columns",
                    BatchError::InvalidRegion { .. } => "region",
                    BatchError::InvalidWebhook { .. } => "webhook",
                    _ => "file",
                };
                Self::invalid(field, e.to_string())
            }
            ErrorKind::NotReady => Self::Conflict(e.to_string()),
            ErrorKind::BadUpload => Self::BadRequest(e.to_string()),
            ErrorKind::Unavailable => Self::unavailable(e),
            ErrorKind::Internal => Self::internal(e),
        }
    }
}

fn batch_id(raw: &str) -> Result<BatchId, ApiError> {
    BatchId::parse(raw).ok_or(ApiError::NotFound("batch"))
}

fn parse_columns(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    if raw.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(raw).map_err(|_| {
        ApiError::invalid(
            "columns",
            "columns must be a JSON object mapping a header to a field, e.g. {\"Work mail\":\"email\"}",
        )
    })
}

/// `max_cost`, strictly: a plain decimal number (digits, at most one point, at most six decimals, no
/// sign, exponent, `inf` or `NaN`), so that a typo cannot become an unexpected cap.
fn parse_max_cost(raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "max_cost",
            "max_cost must be a plain decimal number of the operator's currency unit, such as 25 or 12.50",
        )
    };
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > 6
        || (raw.contains('.') && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
    {
        return Err(bad());
    }
    raw.parse::<f64>().map(Some).map_err(|_| bad())
}

fn nonblank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Uploads a CSV for enrichment, streamed into the blob area (never held whole). UTF-8 with or
/// without BOM, or Windows-1252; comma, semicolon or tab; quoted newlines; CRLF.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    params(UploadParams),
    request_body(content((String = "text/csv"), (UploadForm = "multipart/form-data"))),
    responses(
        (status = 202, description = "Stored and queued.", body = BatchCreatedDoc,
         headers(("Location" = String))),
        (status = 400, description = "The body broke off or the multipart framing is malformed.",
         body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The tenant's stored batches would pass its storage quota \
         (`batches.tenant_quota_bytes`, or `tenants.storage_quota_bytes`): the detail says how much \
         is used of how much; delete batches no longer needed, or ask the operator.",
         body = Problem, content_type = "application/problem+json"),
        Invalid, BodyErrors, KeyErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let params: UploadParams = query(raw.as_deref())?;
    let mut options = BatchOptions {
        columns: parse_columns(params.columns.as_deref().unwrap_or(""))?,
        region: nonblank(params.region),
        webhook: nonblank(params.webhook),
        max_cost: parse_max_cost(params.max_cost.as_deref())?,
    };
    let media = media_type(req.headers());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let tenant = &*principal.tenant;
    let batches = &state.batches;
    let meta = match media.as_str() {
        "text/csv" | "application/csv" | "text/plain" => {
            if declared.is_some_and(|n| n > state.max_upload_bytes) {
                return Err(BatchError::TooLarge(crate::batch::Limit::Bytes(
                    state.max_upload_bytes,
                ))
                .into());
            }
            let body = req.into_body().into_data_stream();
            batches.create(tenant, body, options).await?
        }
        "multipart/form-data" => {
            if declared.is_some_and(|n| n > state.max_upload_bytes + MULTIPART_SLACK) {
                return Err(BatchError::TooLarge(crate::batch::Limit::Bytes(
                    state.max_upload_bytes,
                ))
                .into());
            }
            let mut multipart = Multipart::from_request(req, &state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
            let meta = loop {
                let field = multipart
                    .next_field()
                    .await
                    .map_err(|e| ApiError::BadRequest(e.body_text()))?
                    .ok_or_else(|| {
                        ApiError::invalid("file", "the multipart upload has no field named file")
                    })?;
                let name = field.name().unwrap_or("").to_string();
                match name.as_str() {
                    "file" => break batches.create(tenant, field, options).await?,
                    "columns" => options.columns = parse_columns(&option_text(field).await?)?,
                    "region" => options.region = nonblank(Some(option_text(field).await?)),
                    "webhook" => options.webhook = nonblank(Some(option_text(field).await?)),
                    "max_cost" => {
                        options.max_cost = parse_max_cost(Some(&option_text(field).await?))?;
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            "body",
                            format!(
                                "unknown multipart field '{}': expected file, columns, region, webhook or max_cost",
                                name.chars().take(40).collect::<String>()
                            ),
                        ));
                    }
                }
            };
            // Options after the file would be silently ignored: refuse them, and drop the batch.
            if let Ok(Some(extra)) = multipart.next_field().await {
                let name = extra
                    .name()
                    .unwrap_or("")
                    .chars()
                    .take(40)
                    .collect::<String>();
                drop(extra);
                if let Some(id) = BatchId::parse(&meta.id) {
                    batches.delete(tenant, id).await?;
                }
                return Err(ApiError::invalid(
                    "body",
                    format!("multipart field '{name}' must come before the file field"),
                ));
            }
            meta
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                expected: "text/csv or multipart/form-data",
            });
        }
    };
    let summary = meta.summary();
    let body = serde_json::json!({
        "id": summary.id,
        "status": summary.status,
        "created_at": summary.created_at,
        "expires_at": summary.expires_at,
        "rows_total": summary.rows_total,
    });
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/batches/{}", summary.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Reads a small multipart text field, refusing one longer than [`MAX_OPTION_BYTES`].
async fn option_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, ApiError> {
    let name: &'static str = match field.name() {
        Some("columns") => "columns",
        Some("region") => "region",
        Some("max_cost") => "max_cost",
        _ => "webhook",
    };
    let mut buf = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
    {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_OPTION_BYTES {
            return Err(ApiError::invalid(
                name,
                format!("{name} is longer than {MAX_OPTION_BYTES} bytes"),
            ));
        }
    }
    String::from_utf8(buf).map_err(|_| ApiError::invalid(name, format!("{name} is not UTF-8 text")))
}

/// The caller's live batches, newest first.
#[utoipa::path(get, path = "/v1/batches", tag = "batches",
    responses((status = 200, description = "Own batches only.", body = BatchListDoc), KeyErrors))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
) -> Result<Response, ApiError> {
    let batches = state.batches.list(&principal.tenant).await?;
    Ok(no_store(
        Json(serde_json::json!({ "batches": batches })).into_response(),
    ))
}

/// Progress of one batch.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Its summary.", body = BatchSummaryDoc),
        (status = 404, description = "Unknown id, or another tenant's.", body = Problem,
         content_type = "application/problem+json"),
        (status = 410, description = "Expired and erased.", body = Problem,
         content_type = "application/problem+json"),
        KeyErrors,
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let summary = state
        .batches
        .summary(&principal.tenant, batch_id(&id)?)
        .await?;
    Ok(no_store(Json(summary).into_response()))
}

/// Erases every object of the batch before answering.
#[utoipa::path(delete, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Erased."),
        (status = 404, description = "Unknown id, or another tenant's.", body = Problem,
         content_type = "application/problem+json"),
        (status = 410, description = "Expired and erased.", body = Problem,
         content_type = "application/problem+json"),
        KeyErrors,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .batches
        .delete(&principal.tenant, batch_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The result, streamed part by part: input columns unchanged first, then `enrichd_*` columns, one
/// row per input row (rows of people who opted out are removed). Cells a spreadsheet would execute
/// are prefixed with `'`; NDJSON keeps exact values.
#[utoipa::path(get, path = "/v1/batches/{id}/result.csv", tag = "batches",
    params(("id" = String, Path), ResultParams),
    responses(
        (status = 200, description = "The result.",
         content((String = "text/csv; charset=utf-8"), (String = "application/x-ndjson"))),
        (status = 404, description = "Unknown id, or another tenant's.", body = Problem,
         content_type = "application/problem+json"),
        (status = 409, description = "Not done yet.", body = Problem,
         content_type = "application/problem+json"),
        (status = 410, description = "Expired and erased.", body = Problem,
         content_type = "application/problem+json"),
        Invalid, KeyErrors,
    ))]
pub async fn result(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params: ResultParams = query(raw.as_deref())?;
    let format = match params.format.as_deref().map(str::trim) {
        None | Some("" | "csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(_) => {
            return Err(ApiError::invalid("format", "format must be csv or ndjson"));
        }
    };
    let id = batch_id(&id)?;
    let stream = state.batches.result(&principal.tenant, id, format).await?;
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let mut resp = Body::from_stream(stream).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"enrichd-{id}.{ext}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(no_store(resp))
}

/// Results hold personal data: no cache may keep them.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_cost_takes_plain_decimals_only() {
        for (raw, want) in [
            ("25", Some(25.0)),
            (" 12.50 ", Some(12.5)),
            ("", None),
            ("0", Some(0.0)),
        ] {
            assert_eq!(parse_max_cost(Some(raw)).ok(), Some(want), "{raw:?}");
        }
        for raw in [
            "-1",
            "1e3",
            "inf",
            "NaN",
            "1,5",
            "1.",
            ".5",
            "+2",
            "1.1234567",
            "0x10",
            "5 EUR",
        ] {
            assert!(parse_max_cost(Some(raw)).is_err(), "{raw:?} was taken");
        }
    }
}
