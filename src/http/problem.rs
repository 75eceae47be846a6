//! Every HTTP error, mapped to `application/problem+json` (RFC 9457) in exactly one place.

use std::time::Duration;

use super::api::Problem;
use crate::domain::FieldError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An HTTP-facing error. Client faults carry a precise, safe message; our faults are opaque.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this key's role may not do that")]
    Forbidden,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0} has expired and was erased")]
    Gone(&'static str),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// 413 with a precise reason (a byte or row limit of an upload).
    #[error("{0}")]
    UploadTooLarge(String),
    /// 507: the tenant's stored batches would pass its storage quota; the message says how much is
    /// used of how much, and what to do.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 400: the request could not be read (a body that broke off, malformed multipart framing).
    #[error("{0}")]
    BadRequest(String),
    /// 409: the resource is not in a state that allows this yet.
    #[error("{0}")]
    Conflict(String),
    #[error("content type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("{}", .0.first().map_or("invalid input", |e| e.message.as_str()))]
    Invalid(Vec<FieldError>),
    /// 429; `policy` names the limit in the IETF `RateLimit` / `RateLimit-Policy` fields.
    #[error("too many requests")]
    RateLimited {
        retry_after: Duration,
        policy: Option<crate::auth::RatePolicy>,
    },
    #[error("the service is overloaded")]
    Overloaded,
    /// 429: the client's address holds as many connections (or, through a proxy, requests) as it may.
    #[error("too many connections from your address at once; close some, or retry later")]
    TooManyConnections,
    /// 408: the request body did not keep the minimum pace (`server.body_min_bytes_per_second`).
    #[error("the request body arrived too slowly")]
    RequestTimeout,
    #[error(
        "your opt-out {receipt_id} is recorded and lookups by what you gave are already refused, but \
         {what} did not finish; submitting the same opt-out again is safe and completes it"
    )]
    OptOutIncomplete {
        receipt_id: String,
        what: String,
        retry_after_secs: u64,
    },
    /// 503: the store cannot be reached now; nothing was changed.
    #[error("storage is unavailable right now; nothing was changed, please try again shortly")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Seconds a client is asked to wait when the store is unavailable.
const RETRY_UNAVAILABLE_SECS: u64 = 5;

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(err))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::TooLarge { .. } | Self::UploadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded | Self::OptOutIncomplete { .. } | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::Gone(_) => "expired",
            Self::TooLarge { .. } | Self::UploadTooLarge(_) => "too-large",
            Self::QuotaExceeded(_) => "storage-quota",
            Self::BadRequest(_) => "bad-request",
            Self::Conflict(_) => "not-ready",
            Self::UnsupportedMediaType { .. } => "unsupported-media-type",
            Self::Invalid(_) => "invalid-input",
            Self::RateLimited { .. } => "rate-limited",
            Self::TooManyConnections => "too-many-connections",
            Self::RequestTimeout => "request-timeout",
            Self::Overloaded => "overloaded",
            Self::OptOutIncomplete { .. } => "optout-incomplete",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(err) | Self::Unavailable(err) = &self {
            // The full cause chain goes to the log, never to the client.
            let mut chain = err.to_string();
            let mut src = err.source();
            while let Some(s) = src {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                src = s.source();
            }
            if matches!(self, Self::Internal(_)) {
                tracing::error!(error = %chain, "Request failed with an internal error.");
            } else {
                tracing::warn!(error = %chain, "Request refused: the store is unavailable.");
            }
        }
        let body = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Invalid(errors) => Some(errors.clone()),
                _ => None,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry = match &self {
            Self::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            Self::Overloaded | Self::TooManyConnections => Some(1),
            Self::Unavailable(_) => Some(RETRY_UNAVAILABLE_SECS),
            Self::OptOutIncomplete {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if let Self::RateLimited {
                policy: Some(p), ..
            } = &self
            {
                // draft-ietf-httpapi-ratelimit-headers: the policy, and what is left of it (nothing)
                // with the seconds until some is.
                let fields = [
                    (
                        "ratelimit-policy",
                        format!("\"{}\";q={};w={}", p.name, p.quota, p.window_secs),
                    ),
                    ("ratelimit", format!("\"{}\";r=0;t={secs}", p.name)),
                ];
                for (name, value) in fields {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        headers.insert(name, v);
                    }
                }
            }
        }
        if matches!(self, Self::RequestTimeout) {
            // The rest of the body may still be on its way: the connection cannot carry another
            // request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
