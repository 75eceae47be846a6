//! The admin exclusion surface (admin key; tenant keys get 403):
//! - `POST /v1/admin/exclusions`: bulk import, either `application/json`
//!   `{"identifiers": [{"email": ...}, {"name": ..., "company": ...}, ...]}` or `text/plain` hash lines
//!   (`<kind>:<hex>`, see [`crate::exclusion::parse_hash_lines`]). Good entries are recorded, bad ones
//!   reported by index or line number; nothing about a bad entry is echoed back or logged.
//! - `GET /v1/admin/exclusions/stats`: counts by kind and origin, log size, key fingerprint.
//! - `GET /v1/admin/exclusions/export`: the audit export, streamed. NDJSON, one object per log record:
//!   `{"kind", "hash", "truncated", "origin", "recorded_at", "key_version"}`; with `?format=hashes`, the
//!   import text form instead, ready to load into another instance that shares the key. Never a raw
//!   identifier: the list holds none.
//! - `GET /v1/admin/audit?since=&until=`: the audit log ([`crate::audit`]), NDJSON, oldest first.
//! - `POST /v1/admin/subject-access`: a person's identifiers in, whether they are listed (and since
//!   when) and how many stored rows hold them until when out ([`crate::optout::subject_access`]).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, RawQuery, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{AdminErrors, BodyErrors, Invalid, Problem};
use super::body::{JsonBody, media_type, query, rejected_body};
use super::{Admin, ApiError, AppState};
use crate::domain::{Identifier, Query, QueryInput};
use crate::exclusion::parse_hash_lines_lenient;
use crate::optout::{Import, OptOutError};

/// Bytes per chunk of the streamed export.
const EXPORT_CHUNK: usize = 64 * 1024;

pub fn routes(max_import_bytes: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, import) = routes!(import);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            import.layer(DefaultBodyLimit::max(max_import_bytes)),
        ))
        .routes(routes!(stats))
        .routes(routes!(export))
        .routes(routes!(audit))
        .routes(routes!(subject_access))
}

/// One refused entry of an import: where it was and why, never what it said.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Rejected {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ImportReport {
    receipt_id: String,
    /// Entries read (good and bad; blank lines and comments not counted).
    received: usize,
    added: usize,
    already_present: usize,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IdentifierImport {
    /// Each an opt-out body (`QueryInput`): any of email, phone, profile_url, or a name with company
    /// or domain. An item that is not one is reported in `rejected` by its index, not refused.
    identifiers: Vec<serde_json::Value>,
}

/// Bulk import into the exclusion list: identifiers (JSON) or keyed hash lines (`text/plain`,
/// `<kind>:<hex>` per line, `#` comments). Good entries are recorded; bad ones are reported by index
/// or line, never echoed.
#[utoipa::path(
    post,
    path = "/v1/admin/exclusions",
    tag = "admin",
    request_body(content((IdentifierImport = "application/json"), (String = "text/plain"))),
    responses(
        (status = 200, description = "What was recorded and what was refused.", body = ImportReport),
        (status = 400, description = "The body broke off before its end.", body = Problem,
         content_type = "application/problem+json"),
        Invalid, BodyErrors, AdminErrors,
    )
)]
async fn import(
    State(state): State<AppState>,
    Admin(_): Admin,
    req: Request,
) -> Result<Response, ApiError> {
    let media = media_type(req.headers());
    if media != "application/json" && media != "text/plain" {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/json or text/plain",
        });
    }
    let body = Bytes::from_request(req, &state)
        .await
        .map_err(|e| rejected_body(e, state.max_import_bytes))?;
    let (entries, received, rejected) = if media == "text/plain" {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::invalid("body", "the hash lines are not valid UTF-8"))?;
        let parsed = parse_hash_lines_lenient(text);
        let received = parsed.hashes.len() + parsed.rejected.len();
        let rejected = parsed
            .rejected
            .into_iter()
            .map(|e| Rejected {
                line: Some(e.line),
                index: None,
                field: None,
                reason: e.reason.to_string(),
            })
            .collect();
        (Import::Hashes(parsed.hashes), received, rejected)
    } else {
        let doc: IdentifierImport = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                "identifiers",
                format!(
                    "body must be {{\"identifiers\": [...]}}: {}",
                    safe_serde_reason(&e)
                ),
            )
        })?;
        let received = doc.identifiers.len();
        let (ids, rejected) = parse_identifiers(doc.identifiers, &state);
        (Import::Identifiers(ids), received, rejected)
    };
    let imported = match state.optout().import(entries).await {
        Ok(imported) => imported,
        Err(OptOutError::Incomplete { receipt_id, what }) => {
            return Err(ApiError::OptOutIncomplete {
                receipt_id,
                what,
                retry_after_secs: 5,
            });
        }
        Err(err @ OptOutError::Unavailable(_)) => return Err(ApiError::unavailable(err)),
        Err(err @ OptOutError::NotRecorded(_)) => return Err(ApiError::internal(err)),
    };
    Ok(Json(ImportReport {
        receipt_id: imported.receipt_id,
        received,
        added: imported.added,
        already_present: imported.already_present,
        rejected,
    })
    .into_response())
}

/// Parses each JSON item as a lookup-style object (`email`, `phone`, `profile_url`, `name` with
/// `company` or `domain`, ...). A bad item is reported by its index and field.
fn parse_identifiers(
    items: Vec<serde_json::Value>,
    state: &AppState,
) -> (Vec<Identifier>, Vec<Rejected>) {
    let mut ids = Vec::new();
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let reject = |field, reason: String| Rejected {
            line: None,
            index: Some(index),
            field,
            reason,
        };
        if !item.is_object() {
            rejected.push(reject(
                None,
                "each identifier must be a JSON object such as {\"email\": \"...\"}".into(),
            ));
            continue;
        }
        let input: QueryInput = match serde_json::from_value(item) {
            Ok(input) => input,
            Err(e) => {
                rejected.push(reject(None, safe_serde_reason(&e)));
                continue;
            }
        };
        match Query::parse(&input, state.region) {
            Ok(q) => ids.extend(q.identifiers().into_iter().filter(Identifier::is_personal)),
            Err(errors) => {
                rejected.extend(errors.into_iter().map(|e| reject(Some(e.field), e.message)))
            }
        }
    }
    (ids, rejected)
}

/// A serde message that names a field but never quotes a value (which may be an identifier).
fn safe_serde_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        msg
    } else if e.is_syntax() || e.is_eof() {
        format!("not valid JSON (line {}, column {})", e.line(), e.column())
    } else {
        "every field must be a string".into()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct StatsBody {
    entries: u64,
    by_kind: BTreeMap<&'static str, u64>,
    by_origin: BTreeMap<&'static str, u64>,
    log_bytes: u64,
    key_id: String,
    key_version: u16,
    retention_days: u32,
}

/// Exclusion list statistics: entries by kind and origin, log size, key fingerprint and version,
/// retention.
#[utoipa::path(get, path = "/v1/admin/exclusions/stats", tag = "admin",
    responses((status = 200, description = "The statistics.", body = StatsBody), AdminErrors))]
async fn stats(State(state): State<AppState>, Admin(_): Admin) -> Json<StatsBody> {
    let list = &state.exclusion;
    let s = list.stats().await;
    Json(StatsBody {
        entries: s.entries,
        by_kind: s.by_kind,
        by_origin: s.by_origin,
        log_bytes: s.log_bytes,
        key_id: list.key_id().to_string(),
        key_version: list.key_version(),
        retention_days: list.retention_days(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    /// `ndjson` (the default) or `hashes` (the import's text form).
    #[param(pattern = "^(ndjson|hashes)$")]
    format: Option<String>,
}

#[derive(Clone, Copy)]
enum ExportFormat {
    Ndjson,
    Hashes,
}

/// One exported record.
#[derive(Serialize)]
struct ExportLine {
    kind: &'static str,
    hash: String,
    truncated: bool,
    origin: &'static str,
    recorded_at: String,
    key_version: u16,
}

/// Every log record, streamed: NDJSON `{kind, hash, truncated, origin, recorded_at, key_version}`,
/// or with `format=hashes` the import's text form. Hashes only: the list holds no raw identifier.
#[utoipa::path(get, path = "/v1/admin/exclusions/export", tag = "admin", params(ExportParams),
    responses(
        (status = 200, description = "The export.",
         content((String = "application/x-ndjson"), (String = "text/plain; charset=utf-8"))),
        Invalid, AdminErrors,
    ))]
async fn export(
    State(state): State<AppState>,
    Admin(_): Admin,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params: ExportParams = query(raw.as_deref())?;
    let format = match params.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("hashes") => ExportFormat::Hashes,
        Some(_) => {
            return Err(ApiError::invalid(
                "format",
                "format must be ndjson or hashes",
            ));
        }
    };
    let list = state.exclusion.clone();
    let records = list.records().await.map_err(ApiError::internal)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = String::with_capacity(EXPORT_CHUNK + 256);
        for record in records {
            let record = match record {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(error = %err, "Exclusion export stopped: the log could not be read.");
                    let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
                    return;
                }
            };
            match format {
                ExportFormat::Hashes => chunk.push_str(&record.hashed.to_line()),
                ExportFormat::Ndjson => {
                    let at = UNIX_EPOCH + Duration::from_secs(record.timestamp);
                    let line = ExportLine {
                        kind: record.kind().as_str(),
                        hash: record.hashed.to_hex(),
                        truncated: !record.hashed.is_full(),
                        origin: record.origin.as_str(),
                        recorded_at: humantime::format_rfc3339_seconds(at).to_string(),
                        key_version: record.key_version,
                    };
                    // Serialising plain strings and numbers cannot fail.
                    chunk.push_str(&serde_json::to_string(&line).unwrap_or_default());
                }
            }
            chunk.push('\n');
            if chunk.len() >= EXPORT_CHUNK {
                let full = std::mem::replace(&mut chunk, String::with_capacity(EXPORT_CHUNK + 256));
                if tx.blocking_send(Ok(Bytes::from(full))).is_err() {
                    return; // The client went away.
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (content_type, file) = match format {
        ExportFormat::Ndjson => ("application/x-ndjson", "exclusions.ndjson"),
        ExportFormat::Hashes => ("text/plain; charset=utf-8", "exclusions.txt"),
    };
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(state.exclusion.key_id()) {
        h.insert("x-enrichd-exclusion-key-id", v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Events at or after this time: RFC 3339 (`2026-12-01T00:00:00Z`, any offset), a time that
    /// exists in the calendar.
    since: Option<String>,
    /// Events before this time, in the same form.
    until: Option<String>,
}

/// The audit log, oldest first: one JSON object per line, `{"at", "event", ...}` with ids, counts,
/// kinds and hashes only (opt-outs received, exclusion imports, batches created, finished,
/// downloaded, deleted and expired, keys created and revoked, configurations loaded).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditParams),
    responses(
        (status = 200, description = "The events in the window.",
         content((String = "application/x-ndjson"))),
        Invalid, AdminErrors,
    ))]
async fn audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params: AuditParams = query(raw.as_deref())?;
    let time = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|t| crate::audit::parse_rfc3339(t).map_err(|e| ApiError::invalid(field, e)))
            .transpose()
    };
    let (since, until) = (time("since", &params.since)?, time("until", &params.until)?);
    let records = state
        .audit
        .read(since, until)
        .await
        .map_err(ApiError::unavailable)?;
    let mut body = String::new();
    for record in &records {
        // Plain strings and numbers: serialising cannot fail.
        body.push_str(&serde_json::to_string(record).unwrap_or_default());
        body.push('\n');
    }
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A stored batch holding the person: how many rows, until when. Nothing else.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct HeldBody {
    rows: u64,
    /// RFC 3339: when the batch, and these rows with it, are erased.
    expires_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubjectAccessBody {
    /// One of the identifiers is on the exclusion list.
    listed: bool,
    /// RFC 3339: when the oldest record of them was written; absent when not listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    listed_since: Option<String>,
    /// Stored rows holding the person, across every batch (results, and uploads waiting to run).
    stored_rows: u64,
    /// Per stored batch holding the person, soonest expiry first: never its id, tenant or content.
    stored_results: Vec<HeldBody>,
}

/// Subject access: whether a person is on the exclusion list (and since when) and how many stored
/// batch rows hold them until when. Never the rows, the batches or their tenants. The operator
/// verifies who is asking before calling this.
#[utoipa::path(
    post,
    path = "/v1/admin/subject-access",
    tag = "admin",
    request_body(content = QueryInput, content_type = "application/json",
                 description = "The person's identifiers: any of email, phone, profile_url, or a \
                                name with company or domain."),
    responses(
        (status = 200, description = "What is stored about the person.", body = SubjectAccessBody),
        Invalid, BodyErrors, AdminErrors,
    )
)]
async fn subject_access(
    State(state): State<AppState>,
    Admin(_): Admin,
    JsonBody(input): JsonBody<QueryInput>,
) -> Result<Json<SubjectAccessBody>, ApiError> {
    let query = Query::parse(&input, state.region).map_err(ApiError::Invalid)?;
    let ids: Vec<Identifier> = query.identifiers();
    let access = crate::optout::subject_access(&state.exclusion, &state.batches, &ids)
        .await
        .map_err(ApiError::unavailable)?;
    let time = |t| humantime::format_rfc3339_seconds(t).to_string();
    tracing::info!("Subject access request answered.");
    Ok(Json(SubjectAccessBody {
        listed: access.listed,
        listed_since: access.listed_since.map(time),
        stored_rows: access.rows(),
        stored_results: access
            .stored
            .iter()
            .map(|h| HeldBody {
                rows: h.rows,
                expires_at: time(h.expires_at),
            })
            .collect(),
    }))
}
