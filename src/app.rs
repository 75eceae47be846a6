//! Builds the running service from a loaded configuration: the one place where parts are wired.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::ClientLimiter;
use crate::auth::{KeyError, KeyStore, TenantLimiter};
use crate::config::Loaded;
use crate::exclusion::log::LOG_FILE_NAME;
use crate::exclusion::{
    ExclusionCheck, ExclusionError, ExclusionKey, ExclusionList, ExclusionSnapshot,
    KeyError as ExclusionKeyError, KeySource, NoExclusions, OptOutHook,
};
use crate::http::{self, AppState, PrivacyNotice};
use crate::pipeline::{Limits, Pipeline, Want};
use crate::sources::SourceSet;
use crate::sources::provider::{ProviderError, build_providers};
use crate::sources::registry::Deps;
use crate::telemetry::Metrics;
use secrecy::ExposeSecret;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("exclusion key: {0}")]
    ExclusionKey(#[from] ExclusionKeyError),
    #[error("exclusion list: {0}")]
    Exclusion(#[from] ExclusionError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(
        "the exclusion log in {dir} exists but no exclusion key was found; set ENRICHD_EXCLUSION_KEY or \
         exclusion.key_file to the key it was written with"
    )]
    ExclusionKeyMissing { dir: PathBuf },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The built service: its state and the pieces the CLI needs.
pub struct App {
    pub state: AppState,
    pub data_dir: PathBuf,
}

/// The outbound HTTP client shared by every source: bounded connect time, few redirects, a clear agent.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("enrichd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
}

/// The lookup pipeline alone, for the CLI's in-process commands and the service.
pub fn pipeline(
    loaded: &Loaded,
    exclusion: Arc<dyn ExclusionCheck>,
    metrics: Arc<Metrics>,
) -> Result<Pipeline, AppError> {
    let deps = Deps {
        http: http_client()?,
    };
    let env = |var: &str| {
        loaded
            .provider_keys
            .get(var)
            .map(|k| k.expose_secret().to_string())
    };
    let providers = build_providers(&loaded.config.providers, deps.http.clone(), &env)?;
    let cache_ttl = Duration::from_secs(loaded.config.retention.source_cache_seconds);
    let sources = SourceSet::build(&loaded.sources, providers, &deps, cache_ttl);
    let l = &loaded.config.lookup;
    let limits = Limits {
        default_timeout: Duration::from_millis(l.default_timeout_ms),
        max_timeout: Duration::from_millis(l.max_timeout_ms),
        max_hops: l.max_hops,
        // Validated when the config was loaded.
        default_want: Want::parse_all(&l.default_want).unwrap_or_default(),
    };
    Ok(Pipeline::new(sources, exclusion, limits, metrics))
}

/// Opens the exclusion list under `<data_dir>/exclusion`, with the key from `ENRICHD_EXCLUSION_KEY`, or
/// `exclusion.key_file`, or `<data_dir>/exclusion.key`, or (first run only) a generated development
/// key, announced loudly. Takes the log's writer lock (a second process gets
/// [`ExclusionError::is_locked`]) and compacts away records past `retention.exclusion_days`.
pub fn open_exclusion(loaded: &Loaded, data_dir: &Path) -> Result<ExclusionList, AppError> {
    let key_file = loaded.config.exclusion.key_file.as_deref();
    let (key, source) = ExclusionKey::load(key_file, data_dir)?;
    if let KeySource::Generated(path) = &source {
        tracing::warn!(
            path = %path.display(),
            "no ENRICHD_EXCLUSION_KEY: generated a development exclusion key; back it up or set \
             ENRICHD_EXCLUSION_KEY, or every opt-out is lost with it"
        );
    }
    let retention = loaded.config.retention.exclusion_days;
    let now = std::time::SystemTime::now();
    let (list, report) = ExclusionList::open(&data_dir.join("exclusion"), key, retention, now)?;
    if report.torn_records > 0 {
        tracing::warn!(
            torn_records = report.torn_records,
            torn_bytes = report.torn_bytes,
            "exclusion log ended in a torn write (never acknowledged); truncated it"
        );
    }
    if report.expired > 0 {
        let removed = list.compact(now)?;
        tracing::info!(
            removed,
            retention_days = retention,
            "exclusion log compacted"
        );
    }
    tracing::info!(
        entries = report.entries,
        expired = report.expired,
        key_id = list.key_id(),
        "exclusion list open"
    );
    Ok(list)
}

/// The exclusion list for a process that only checks it (`enrichd lookup`): read without the writer
/// lock, never repaired, and no key generated. Without any key nothing was ever excluded with one, so
/// the answer is an empty list; a log that exists without its key is refused.
pub fn read_exclusion(
    loaded: &Loaded,
    data_dir: &Path,
) -> Result<Arc<dyn ExclusionCheck>, AppError> {
    let dir = data_dir.join("exclusion");
    let key_file = loaded.config.exclusion.key_file.as_deref();
    let Some((key, _)) = ExclusionKey::load_existing(key_file, data_dir)? else {
        if dir.join(LOG_FILE_NAME).exists() {
            return Err(AppError::ExclusionKeyMissing { dir });
        }
        return Ok(Arc::new(NoExclusions));
    };
    let retention = loaded.config.retention.exclusion_days;
    let (snapshot, report) =
        ExclusionSnapshot::load(&dir, &key, retention, std::time::SystemTime::now())?;
    tracing::debug!(entries = report.entries, "exclusion list read");
    Ok(Arc::new(snapshot))
}

impl App {
    pub fn build(loaded: &Loaded, data_dir: &Path) -> Result<Self, AppError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AppError::DataDir {
            path: data_dir.into(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let c = &loaded.config;
        let exclusion = Arc::new(open_exclusion(loaded, data_dir)?);
        let pipeline = pipeline(loaded, exclusion.clone(), metrics.clone())?;
        let privacy = Arc::new(PrivacyNotice::build(loaded, &pipeline));
        let optout_hooks: Vec<Arc<dyn OptOutHook>> = vec![Arc::new(pipeline.source_cache())];
        let state = AppState {
            pipeline,
            exclusion,
            optout_hooks: Arc::new(optout_hooks),
            keys: Arc::new(KeyStore::open(data_dir)?),
            limiter: Arc::new(TenantLimiter::new(
                c.tenants.rate_per_minute,
                c.tenants.burst,
            )),
            metrics,
            region: loaded.region,
            in_flight: Arc::new(Semaphore::new(c.server.max_in_flight)),
            max_json_bytes: c.server.max_json_bytes,
            max_timeout_ms: c.lookup.max_timeout_ms,
            optout_limiter: Arc::new(ClientLimiter::new(
                c.exclusion.optout_per_minute,
                c.exclusion.optout_burst,
            )),
            optout_expand_timeout: Duration::from_millis(c.exclusion.expand_timeout_ms),
            max_import_bytes: c.exclusion.max_import_bytes,
            privacy,
        };
        Ok(Self {
            state,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }
}
