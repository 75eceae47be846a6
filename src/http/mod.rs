//! The HTTP service: routes, extractors, middleware. Handlers validate input, call the pipeline (or the
//! batch and exclusion services) and shape responses; they never call an upstream directly.

mod admin;
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
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::Semaphore;

pub use auth::{Admin, Tenant};
pub use client::TrustedProxies;
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

/// The full router. Tests and `serve` both build it from an [`AppState`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/lookup", get(lookup::get).post(lookup::post))
        .route("/v1/extract", post(extract::post))
        .route("/v1/sources", get(ops::sources))
        .merge(optout::routes())
        .merge(privacy::routes())
        .merge(admin::routes(state.max_import_bytes))
        .route("/app", get(webapp::page))
        .route(
            "/v1/batches",
            get(batches::list)
                .post(batches::create)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(
                        state
                            .max_upload_bytes
                            .saturating_add(batches::MULTIPART_SLACK),
                    )
                    .unwrap_or(usize::MAX),
                )),
        )
        .route(
            "/v1/batches/{id}",
            get(batches::get).delete(batches::delete),
        )
        .route("/v1/batches/{id}/result.csv", get(batches::result))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(state.max_json_bytes))
        .layer(guard::GuardLayer(state.clone()))
        .with_state(state)
}
