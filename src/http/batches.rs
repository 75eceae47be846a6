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

use super::body::{media_type, query};
use super::{ApiError, AppState, Tenant};
use crate::batch::{BatchError, BatchOptions, ErrorKind, Format};
use crate::blob::BatchId;

/// Multipart framing and option fields allowed on top of `batches.max_bytes`.
pub const MULTIPART_SLACK: u64 = 64 * 1024;

/// The longest option field (`columns`, `region`, `webhook`) accepted in a multipart upload.
const MAX_OPTION_BYTES: usize = 16 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    columns: Option<String>,
    region: Option<String>,
    webhook: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultParams {
    format: Option<String>,
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e.kind() {
            ErrorKind::NotFound => Self::NotFound("batch"),
            ErrorKind::Expired => Self::Gone("batch"),
            ErrorKind::TooLarge => Self::UploadTooLarge(e.to_string()),
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

fn nonblank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `POST /v1/batches`.
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
                    _ => {
                        return Err(ApiError::invalid(
                            "body",
                            format!(
                                "unknown multipart field '{}': expected file, columns, region or webhook",
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

/// `GET /v1/batches`: the caller's live batches, newest first.
pub async fn list(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
) -> Result<Response, ApiError> {
    let batches = state.batches.list(&principal.tenant).await?;
    Ok(no_store(
        Json(serde_json::json!({ "batches": batches })).into_response(),
    ))
}

/// `GET /v1/batches/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Tenant(principal): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let meta = state.batches.get(&principal.tenant, batch_id(&id)?).await?;
    Ok(no_store(Json(meta.summary()).into_response()))
}

/// `DELETE /v1/batches/{id}`: erases every object of the batch before answering 204.
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

/// `GET /v1/batches/{id}/result.csv[?format=ndjson]`: the result, streamed part by part.
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
