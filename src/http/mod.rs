//! The HTTP service: routes, extractors, middleware. Handlers validate input, call the pipeline (or the
//! batch and exclusion services) and shape responses; they never call an upstream directly.

mod admin;
mod api;
mod auth;
mod batches;
mod body;
mod client;
mod extract;
mod guard;
mod html;
mod lookup;
mod ops;
mod optout;
mod privacy;
mod problem;
mod serve;
mod webapp;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Admin, Tenant};
pub use client::{TrustedProxies, Via, client_of};
pub use optout::ClientAddr;
pub use privacy::PrivacyNotice;
pub use problem::ApiError;
pub use serve::{Connections, Served, serve};

use crate::auth::{ClientLimiter, KeyStore, TenantLimiter};
use crate::batch::BatchService;
use crate::domain::Region;
use crate::exclusion::{ExclusionList, OptOutHook};
use crate::pipeline::Pipeline;
use crate::telemetry::Metrics;

/// Everything a handler may use, behind one `Arc`.
///
/// axum clones the state for the middleware and for each extractor that takes it, several times per
/// request. One reference count shared by the worker threads costs less than one per service.
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }

    /// The services, to change before the state is shared (`None` once a router holds a clone).
    pub fn get_mut(&mut self) -> Option<&mut AppServices> {
        Arc::get_mut(&mut self.0)
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct AppServices {
    pub pipeline: Pipeline,
    /// The opt-out list; the pipeline checks it through [`crate::exclusion::ExclusionCheck`].
    pub exclusion: Arc<ExclusionList>,
    /// Run after every opt-out is durable and before it is acknowledged.
    pub optout_hooks: Arc<Vec<Arc<dyn OptOutHook>>>,
    pub keys: Arc<KeyStore>,
    /// The audit log (no personal data).
    pub audit: crate::audit::AuditLog,
    pub limiter: Arc<TenantLimiter>,
    pub metrics: Arc<Metrics>,
    pub region: Option<Region>,
    pub in_flight: Arc<Semaphore>,
    pub max_json_bytes: usize,
    pub max_timeout_ms: u64,
    /// Public opt-out submissions per client address.
    pub optout_limiter: Arc<ClientLimiter>,
    /// Deadline of an opt-out's expansion lookup.
    pub optout_expand_timeout: Duration,
    /// Largest admin bulk import body.
    pub max_import_bytes: usize,
    /// The privacy notice, built from the running configuration.
    pub privacy: Arc<PrivacyNotice>,
    /// CSV batches: upload, progress, download, delete.
    pub batches: BatchService,
    /// Largest batch upload, in bytes (`batches.max_bytes`).
    pub max_upload_bytes: u64,
    /// Connection caps and timers, trusted proxies, the upload slots (`[server]`).
    pub connections: Arc<Connections>,
}

/// The router with the connection limits of its state: what [`serve`] runs.
pub fn service(state: AppState) -> Served {
    Served::new(router(state.clone()), state)
}

/// The full router and its OpenAPI document, built together from the handlers.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let upload_limit = usize::try_from(
        state
            .max_upload_bytes
            .saturating_add(batches::MULTIPART_SLACK),
    )
    .unwrap_or(usize::MAX);
    let (schemas, paths, batch_routes) = routes!(batches::list, batches::create);
    OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics_with_key))
        .routes(routes!(ops::openapi))
        .routes(routes!(lookup::get, lookup::post))
        .routes(routes!(extract::post))
        .routes(routes!(ops::sources))
        .merge(optout::routes())
        .merge(privacy::routes())
        .merge(admin::routes(state.max_import_bytes))
        .routes(routes!(webapp::page))
        .routes((
            schemas,
            paths,
            batch_routes.layer(DefaultBodyLimit::max(upload_limit)),
        ))
        .routes(routes!(batches::get, batches::delete))
        .routes(routes!(batches::result))
}

/// The operator's listener (`server.metrics_listen`): `GET /metrics` without a key, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics))
        .fallback(ops::not_found)
        .with_state(state)
}

/// The full router. Tests and `serve` both build it from an [`AppState`].
pub fn router(state: AppState) -> Router {
    let (router, api) = routes(&state).split_for_parts();
    let doc = ops::OpenApiJson(api::document(api, &state).into());
    router
        .fallback(ops::not_found)
        .layer(Extension(doc))
        .layer(DefaultBodyLimit::max(state.max_json_bytes))
        .layer(guard::GuardLayer(state.clone()))
        .with_state(state)
}

/// The OpenAPI document of a router built from `state`, as `/openapi.json` serves it.
pub fn openapi_document(state: &AppState) -> String {
    let (_, api) = routes(state).split_for_parts();
    api::document(api, state)
}
