//! Builds the running service from a loaded configuration: the one place where parts are wired.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::ClientLimiter;
use crate::auth::{KeyError, KeyStore, TenantLimiter};
use crate::batch::webhook::{WebhookKey, WebhookSender};
use crate::batch::{
    BatchConfig, BatchError, BatchService, ExclusionRowHasher, PipelineEnricher, PurgeHook,
    RowHasher,
};
use crate::blob::{BlobError, BlobStore, Clock, SystemClock};
use crate::config::Loaded;
use crate::exclusion::log::LOG_FILE_NAME;
use crate::exclusion::{
    ExclusionCheck, ExclusionError, ExclusionKey, ExclusionList, ExclusionSnapshot,
    KeyError as ExclusionKeyError, KeySource, NoExclusions, OptOutHook,
};
use crate::http::{self, AppServices, AppState, PrivacyNotice};
use crate::pipeline::{Limits, Pipeline, Want};
use crate::sources::SourceSet;
use crate::sources::etiquette::SourceCache;
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
    #[error("batch storage: {0}")]
    Blob(#[from] BlobError),
    #[error("batch storage: {0}")]
    Batch(#[from] BatchError),
    #[error("webhook key: {0}")]
    WebhookKey(String),
}

/// Env variable holding the webhook signing key (64 hex characters).
pub const WEBHOOK_KEY_ENV: &str = "ENRICHD_WEBHOOK_KEY";

/// The webhook signing key from `ENRICHD_WEBHOOK_KEY`, else `batches.webhook_key_file`, else none.
fn webhook_key(loaded: &Loaded) -> Result<Option<WebhookKey>, AppError> {
    if let Some(value) = std::env::var(WEBHOOK_KEY_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return WebhookKey::from_hex(&value).map(Some).ok_or_else(|| {
            AppError::WebhookKey(format!("{WEBHOOK_KEY_ENV} must be 64 hex characters"))
        });
    }
    let Some(path) = &loaded.config.batches.webhook_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::WebhookKey(format!("cannot read {}: {e}", path.display())))?;
    WebhookKey::from_hex(&text).map(Some).ok_or_else(|| {
        AppError::WebhookKey(format!("{} must hold 64 hex characters", path.display()))
    })
}

/// The built service: its state and the pieces the CLI needs.
pub struct App {
    pub state: AppState,
    pub data_dir: PathBuf,
    sweep_every: Duration,
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
    let r = &loaded.config.retention;
    let cache = SourceCache::new(
        r.source_cache_mib.saturating_mul(1 << 20),
        Duration::from_secs(r.source_cache_seconds),
    );
    let sources = SourceSet::build(&loaded.sources, providers, &deps, cache);
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

/// The batch service's settings from `[batches]` and the retention policy.
pub fn batch_config(loaded: &Loaded) -> BatchConfig {
    BatchConfig::from_settings(
        &loaded.config.batches,
        loaded.config.retention.batch_results_days,
    )
}

/// The batch service over `<data_dir>/blobs`, enriching through `pipeline`, keyed by `exclusion`.
/// Returns the service and its row hasher (the opt-out hook needs the same one).
pub fn batch_service(
    loaded: &Loaded,
    data_dir: &Path,
    pipeline: Pipeline,
    exclusion: Arc<ExclusionList>,
    clock: Arc<dyn Clock>,
) -> Result<(BatchService, Arc<dyn RowHasher>), AppError> {
    let blobs = BlobStore::local(data_dir, clock)?;
    let hasher: Arc<dyn RowHasher> = Arc::new(ExclusionRowHasher::new(exclusion));
    let service = BatchService::new(
        blobs,
        Arc::new(PipelineEnricher::new(pipeline)),
        hasher.clone(),
        batch_config(loaded),
    );
    Ok((service, hasher))
}

/// The service's background tasks (batch workers and the expiry sweeper). Dropping it stops them.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Stops every task now; a running batch resumes from its last checkpoint at the next start.
    pub fn stop(self) {}
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl App {
    pub fn build(loaded: &Loaded, data_dir: &Path) -> Result<Self, AppError> {
        Self::build_with_clock(loaded, data_dir, Arc::new(SystemClock))
    }

    /// [`App::build`] with the clock that decides batch expiry (tests move a manual one).
    pub fn build_with_clock(
        loaded: &Loaded,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AppError::DataDir {
            path: data_dir.into(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let c = &loaded.config;
        let exclusion = Arc::new(open_exclusion(loaded, data_dir)?);
        let pipeline = pipeline(loaded, exclusion.clone(), metrics.clone())?;
        let privacy = Arc::new(PrivacyNotice::build(loaded, &pipeline));
        let (batches, row_hasher) =
            batch_service(loaded, data_dir, pipeline.clone(), exclusion.clone(), clock)?;
        if let Some(key) = webhook_key(loaded)? {
            let sender = WebhookSender::new(
                key,
                c.batches.webhook_trusted_hosts.clone(),
                Duration::from_millis(c.batches.webhook_timeout_ms),
            )?;
            batches.set_notifier(Arc::new(sender));
        }
        let optout_hooks: Vec<Arc<dyn OptOutHook>> = vec![
            Arc::new(pipeline.source_cache()),
            Arc::new(PurgeHook::new(batches.clone(), row_hasher)),
        ];
        let state = AppState::new(AppServices {
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
            batches,
            max_upload_bytes: c.batches.max_bytes,
            connections: Arc::new(http::Connections::new(&c.server)),
        });
        Ok(Self {
            state,
            data_dir: data_dir.to_path_buf(),
            sweep_every: Duration::from_secs(c.batches.sweep_interval_seconds),
        })
    }

    /// Starts the background work: sweeps expired batches, resumes every unfinished batch where it
    /// stopped, starts the batch workers and a sweeper that runs every `batches.sweep_interval_seconds`.
    pub async fn start_background(&self) -> Result<Background, AppError> {
        let batches = self.state.batches.clone();
        let swept = batches.sweep().await?;
        let resumed = batches.resume_all().await?;
        tracing::info!(swept = swept.batches_removed, resumed, "Batch store ready.");
        let workers = batches.spawn_workers();
        let every = self.sweep_every;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = batches.sweep().await {
                    tracing::error!(error = %e, "Sweeping expired batches failed; retrying later.");
                }
            }
        });
        Ok(Background {
            tasks: vec![workers, sweeper],
        })
    }

    /// The routes and the connection limits they are served under.
    pub fn router(&self) -> http::Served {
        http::service(self.state.clone())
    }
}
