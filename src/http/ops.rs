//! Public operational endpoints: health, readiness, metrics, the OpenAPI document, the 404 fallback.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiError, AppState};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the state is built (exclusion list loaded, keys read) and while requests can be taken.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.in_flight.available_permits() == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n");
    }
    (StatusCode::OK, "ready\n")
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// `GET /v1/sources`: every configured source and provider with its live state.
pub async fn sources(
    State(state): State<AppState>,
    _: super::Tenant,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "sources": state.pipeline.source_states() }))
}
