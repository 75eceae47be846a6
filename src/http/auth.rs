//! The `Tenant` and `Admin` extractors: a valid key in `Authorization: Bearer` or `X-API-Key`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::{Principal, Role};

/// A caller with a valid key (tenant or admin), within its rate limit.
pub struct Tenant(pub Principal);

/// A caller with an admin key.
pub struct Admin(pub Principal);

fn presented(parts: &Parts) -> Option<&str> {
    let h = &parts.headers;
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    let auth = h.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = presented(parts)
            .and_then(|k| state.keys.verify(k))
            .ok_or(ApiError::Unauthorized)?;
        state
            .limiter
            .check(&principal.tenant)
            .map_err(|retry_after| ApiError::RateLimited {
                retry_after,
                policy: Some(state.limiter.policy()),
            })?;
        Ok(Self(principal))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Tenant(principal) = Tenant::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::Forbidden);
        }
        Ok(Self(principal))
    }
}
