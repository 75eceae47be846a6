//! Operational endpoints: health, readiness, the OpenAPI document, the 404 fallback (public), and
//! metrics (on the operator's listener, or with an admin key on the public one).

use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::api::KeyErrors;
use super::{ApiError, AppState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the state is built (exclusion list loaded, keys read) and while requests can be taken.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "`overloaded`: every in-flight slot is taken.", body = String,
         content_type = "text/plain"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.in_flight.available_permits() == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n");
    }
    (StatusCode::OK, "ready\n")
}

/// `GET /metrics` on the public listener: operators only (an admin key). The operator's own listener
/// (`server.metrics_listen`) serves the same text without a key.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The Prometheus text exposition (labels are route \
               templates, source names and statuses, never personal data).", body = String,
               content_type = "text/plain; version=0.0.4; charset=utf-8"), super::api::AdminErrors))]
pub async fn metrics_with_key(state: State<AppState>, _: super::auth::Admin) -> impl IntoResponse {
    metrics(state).await
}

/// The Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
pub async fn openapi(Extension(doc): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

/// The served OpenAPI document, written once at start.
#[derive(Clone)]
pub struct OpenApiJson(pub axum::body::Bytes);

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// Every configured source and provider with its live state (enabled, key present, breaker).
#[utoipa::path(get, path = "/v1/sources", tag = "operations",
    responses((status = 200, description = "`{\"sources\": [...]}`", body = Object), KeyErrors))]
pub async fn sources(
    State(state): State<AppState>,
    _: super::Tenant,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "sources": state.pipeline.source_states() }))
}
