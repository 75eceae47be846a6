//! Body and query-string extractors whose failures are problem+json with the offending field named.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};

/// A JSON body: 415 without a JSON content type, 413 past the size limit, 422 naming what is wrong.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if media_type(req.headers()) != "application/json" {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| rejected_body(e, state.max_json_bytes))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::invalid(field_of(&e.to_string()), format!("body is not valid: {e}"))
        })
    }
}

/// Why a body could not be read, for a body limited to `limit` bytes: 413 past the limit, 408 when it
/// arrived too slowly, 400 when it broke off.
pub fn body_failure(err: &(dyn std::error::Error + 'static), limit: usize) -> ApiError {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::TooLarge { limit };
        }
        if e.is::<super::serve::BodyTooSlow>() {
            return ApiError::RequestTimeout;
        }
        cause = e.source();
    }
    ApiError::BadRequest("the request body broke off before its end".into())
}

/// [`body_failure`] for axum's `Bytes` extractor.
pub fn rejected_body(rejection: BytesRejection, limit: usize) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(e) => body_failure(&e, limit),
        other => ApiError::invalid("body", other.body_text()),
    }
}

/// The request's media type without parameters, lower-cased (`text/csv; charset=utf-8` -> `text/csv`);
/// empty when there is none.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a query string, naming the offending parameter when serde does.
pub fn query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        ApiError::invalid(
            field_of(&e.to_string()),
            format!("query string is not valid: {e}"),
        )
    })
}

/// Best effort: the field a serde message is about. An unknown field is reported as `body` (the detail
/// names it); a known field is named when the message quotes it.
fn field_of(msg: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "email",
        "phone",
        "profile_url",
        "name",
        "first_name",
        "last_name",
        "company",
        "domain",
        "sources",
        "timeout_ms",
        "want",
        "text",
    ];
    if msg.starts_with("unknown field") {
        return "body";
    }
    KNOWN
        .iter()
        .find(|k| msg.contains(&format!("`{k}`")))
        .copied()
        .unwrap_or("body")
}
