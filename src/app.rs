//! Builds the running service from a loaded configuration: the one place where parts are wired.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::audit::{AuditLog, Event};
use crate::auth::ClientLimiter;
use crate::auth::{KeyError, KeyStore, TenantLimiter};
use crate::batch::webhook::{WebhookKey, WebhookSender};
use crate::batch::{
    BatchConfig, BatchError, BatchService, BatchStore, ExclusionRowHasher, PipelineEnricher,
    PurgeHook, RowHasher,
};
use crate::blob::{BlobError, Clock, SystemClock};
use crate::config::{Loaded, SECRET_HINT, STORAGE_KEY_ENV, STORAGE_KEY_PREVIOUS_ENV};
use crate::exclusion::log::LOG_FILE_NAME;
use crate::exclusion::{
    ExclusionCheck, ExclusionError, ExclusionKey, ExclusionList, ExclusionSnapshot,
    KeyError as ExclusionKeyError, KeySource, NoExclusions, OptOutHook,
};
use crate::http::{self, AppServices, AppState, PrivacyNotice};
use crate::pipeline::{Limits, Pipeline, Want};
use crate::seal::{Keyring, MasterKey};
use crate::sources::SourceSet;
use crate::sources::etiquette::SourceCache;
use crate::sources::provider::{ProviderError, build_providers};
use crate::sources::registry::Deps;
use crate::store::replicas::{Heartbeat, ReplicaShare};
use crate::store::watch::Watch;
use crate::store::{OpenError, Store, StoreUrl};
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
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("storage key: {0}")]
    StorageKey(String),
}

impl AppError {
    /// Whether the operator's configuration is at fault (a malformed or missing secret, a log
    /// written with another key, a provider that cannot be built), rather than the machine.
    pub fn is_configuration(&self) -> bool {
        use crate::exclusion::log::LogError;
        match self {
            Self::ExclusionKey(e) => matches!(
                e,
                ExclusionKeyError::BadEnv | ExclusionKeyError::BadFile { .. }
            ),
            Self::Exclusion(ExclusionError::Log(LogError::KeyMismatch { .. })) => true,
            Self::ExclusionKeyMissing { .. }
            | Self::WebhookKey(_)
            | Self::StorageKey(_)
            | Self::Provider(_) => true,
            _ => false,
        }
    }
}

pub use crate::config::WEBHOOK_KEY_ENV;

/// The webhook signing key from `ENRICHD_WEBHOOK_KEY`, else `batches.webhook_key_file`, else none.
fn webhook_key(loaded: &Loaded) -> Result<Option<WebhookKey>, AppError> {
    if let Some(value) = &loaded.webhook_key {
        return WebhookKey::from_hex(value.expose_secret())
            .map(Some)
            .ok_or_else(|| {
                AppError::WebhookKey(format!(
                    "{WEBHOOK_KEY_ENV} must be 64 hex characters; {SECRET_HINT}"
                ))
            });
    }
    let Some(path) = &loaded.config.batches.webhook_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::WebhookKey(format!("cannot read {}: {e}", path.display())))?;
    WebhookKey::from_hex(&text).map(Some).ok_or_else(|| {
        AppError::WebhookKey(format!(
            "{} must hold 64 hex characters; {SECRET_HINT}",
            path.display()
        ))
    })
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

/// The lookup pipeline alone, for the CLI's in-process commands and the service. `share` is this
/// replica's share of each source's budget ([`ReplicaShare::single`] for one process).
pub fn pipeline(
    loaded: &Loaded,
    exclusion: Arc<dyn ExclusionCheck>,
    metrics: Arc<Metrics>,
    share: ReplicaShare,
) -> Result<Pipeline, AppError> {
    let deps = Deps {
        http: http_client()?,
        share,
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

/// The store `store.url` names (default `file://<data_dir>`), with its blob area in
/// `store.blob_dir` when that is set. A shared store is probed for the conditional writes replicas
/// coordinate with, and refused without them.
pub async fn open_store(
    loaded: &Loaded,
    data_dir: &Path,
    metrics: Arc<Metrics>,
) -> Result<Store, AppError> {
    let url = loaded.config.store.url_or(data_dir);
    let mut store = Store::open(&url, &loaded.aws, metrics.clone())?;
    if store.is_shared() {
        store.probe().await?;
    } else if let Some(dir) = &loaded.config.store.blob_dir {
        store = store.with_blob_dir(dir, metrics)?;
    }
    Ok(store)
}

/// The development storage key's file name inside the data directory (local store only).
pub const STORAGE_KEY_FILE: &str = "storage.key";

/// The storage keyring: `ENRICHD_STORAGE_KEY` (or `store.key_file`) wraps, and the keys in
/// `ENRICHD_STORAGE_KEY_PREVIOUS` still unwrap. On a local store with neither, a development key is
/// generated into `<data_dir>/storage.key` and announced loudly; a shared store refuses to start
/// without one (every replica must hold the same key, and none may depend on its own disk).
pub fn storage_keyring(
    loaded: &Loaded,
    data_dir: &Path,
    shared: bool,
) -> Result<Keyring, AppError> {
    let bad = AppError::StorageKey;
    let parse = |text: &str, from: &str| {
        crate::secret::parse_hex32(text)
            .map(MasterKey::from_bytes)
            .ok_or_else(|| {
                bad(format!(
                    "{from} must hold exactly 64 hex characters (32 bytes); {SECRET_HINT}"
                ))
            })
    };
    let read = |path: &Path| {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        parse(&text, &path.display().to_string())
    };
    let current = if let Some(value) = &loaded.storage_key {
        parse(value.expose_secret(), STORAGE_KEY_ENV)?
    } else if let Some(path) = &loaded.config.store.key_file {
        read(path)?
    } else if shared {
        return Err(bad(format!(
            "with an s3:// store every replica needs the same storage key: set {STORAGE_KEY_ENV} \
             (64 hex characters, e.g. from `openssl rand -hex 32`) or store.key_file"
        )));
    } else {
        let path = data_dir.join(STORAGE_KEY_FILE);
        if path.exists() {
            tracing::warn!(
                path = %path.display(),
                "no ENRICHD_STORAGE_KEY: using the development storage key generated in the data \
                 directory; back it up or set ENRICHD_STORAGE_KEY to its 64 hex characters, or \
                 every stored batch result is unreadable without it"
            );
            read(&path)?
        } else {
            let bytes = crate::secret::generate_into(&path)
                .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
            tracing::warn!(
                path = %path.display(),
                "no ENRICHD_STORAGE_KEY: generated a development storage key; back it up or set \
                 ENRICHD_STORAGE_KEY, or every stored batch result is unreadable without it"
            );
            MasterKey::from_bytes(bytes)
        }
    };
    let previous = match &loaded.storage_key_previous {
        None => Vec::new(),
        Some(list) => list
            .expose_secret()
            .split([',', ' ', '\n'])
            .filter(|k| !k.trim().is_empty())
            .map(|k| parse(k, STORAGE_KEY_PREVIOUS_ENV))
            .collect::<Result<_, _>>()?,
    };
    Ok(Keyring::new(current, previous))
}

/// Opens the exclusion list: on a local store the fsynced log under `<dir>/exclusion`, with the key
/// from `ENRICHD_EXCLUSION_KEY`, `exclusion.key_file`, `<data_dir>/exclusion.key`, or (first run
/// only) a generated development key, announced loudly; the log's writer lock is taken (a second
/// process gets [`ExclusionError::is_locked`]). On a shared store the segments in the bucket, with the
/// key from the environment or `exclusion.key_file` only. Either way records past
/// `retention.exclusion_days` are compacted away.
pub async fn open_exclusion(
    loaded: &Loaded,
    data_dir: &Path,
    store: &Store,
) -> Result<ExclusionList, AppError> {
    let key_file = loaded.config.exclusion.key_file.as_deref();
    let retention = loaded.config.retention.exclusion_days;
    let now = std::time::SystemTime::now();
    let (list, report) = match store.url() {
        StoreUrl::File(dir) => {
            let (key, source) = ExclusionKey::resolve(exclusion_env(loaded), key_file, data_dir)?;
            warn_generated(&source, key_file);
            ExclusionList::open(&dir.join("exclusion"), key, retention, now)?
        }
        StoreUrl::S3 { .. } => {
            let (key, _) = ExclusionKey::resolve_shared(exclusion_env(loaded), key_file)?;
            ExclusionList::open_store(store, key, retention, now).await?
        }
    };
    if report.torn_records > 0 {
        tracing::warn!(
            torn_records = report.torn_records,
            torn_bytes = report.torn_bytes,
            "exclusion log ended in a torn write (never acknowledged); truncated it"
        );
    }
    if report.expired > 0 {
        let removed = list.compact(now).await?;
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

/// `ENRICHD_EXCLUSION_KEY` as the loader read it from the variables it was given.
fn exclusion_env(loaded: &Loaded) -> Option<&str> {
    loaded.exclusion_key.as_ref().map(|k| k.expose_secret())
}

/// Said at every start while the development key is in use, not only when it is made: a warning seen
/// once is easily lost, and the key is as easily lost with the data directory.
fn warn_generated(source: &KeySource, key_file: Option<&Path>) {
    match source {
        KeySource::Generated(path) => tracing::warn!(
            path = %path.display(),
            "no ENRICHD_EXCLUSION_KEY: generated a development exclusion key; back it up or set \
             ENRICHD_EXCLUSION_KEY, or every opt-out is lost with it"
        ),
        KeySource::File(path) if key_file.is_none() => tracing::warn!(
            path = %path.display(),
            "no ENRICHD_EXCLUSION_KEY: using the development exclusion key generated in the data \
             directory; back it up or set ENRICHD_EXCLUSION_KEY to its 64 hex characters, or every \
             opt-out is lost with it"
        ),
        KeySource::File(_) | KeySource::Env => {}
    }
}

/// The exclusion list for a process that only checks it (`enrichd lookup`): on a local store read
/// without the writer lock, never repaired, and no key generated (without any key nothing was ever
/// excluded with one, so the answer is an empty list; a log that exists without its key is refused).
/// On a shared store, the list in the bucket as it is now.
pub async fn read_exclusion(
    loaded: &Loaded,
    data_dir: &Path,
) -> Result<Arc<dyn ExclusionCheck>, AppError> {
    let key_file = loaded.config.exclusion.key_file.as_deref();
    let retention = loaded.config.retention.exclusion_days;
    let now = std::time::SystemTime::now();
    let dir = match loaded.config.store.url_or(data_dir) {
        StoreUrl::File(dir) => dir.join("exclusion"),
        StoreUrl::S3 { .. } => {
            let store = open_store(loaded, data_dir, Arc::new(Metrics::new())).await?;
            let (key, _) = ExclusionKey::resolve_shared(exclusion_env(loaded), key_file)?;
            let (list, _) = ExclusionList::open_store(&store, key, retention, now).await?;
            return Ok(Arc::new(list));
        }
    };
    let Some((key, _)) = ExclusionKey::resolve_existing(exclusion_env(loaded), key_file, data_dir)?
    else {
        if dir.join(LOG_FILE_NAME).exists() {
            return Err(AppError::ExclusionKeyMissing { dir });
        }
        return Ok(Arc::new(NoExclusions));
    };
    let (snapshot, report) = ExclusionSnapshot::load(&dir, &key, retention, now)?;
    tracing::debug!(entries = report.entries, "exclusion list read");
    Ok(Arc::new(snapshot))
}

/// The batch service's settings from `[batches]` and the retention policy.
pub fn batch_config(loaded: &Loaded) -> BatchConfig {
    BatchConfig::from_settings(
        &loaded.config.batches,
        loaded.config.retention.batch_results_days,
    )
    .with_monthly_budgets(&loaded.config.tenants.monthly_budget)
    .with_storage_quotas(&loaded.config.tenants.storage_quota_bytes)
}

/// The batch service on `batches`, enriching through `pipeline`, keyed by `exclusion`. Returns the
/// service and its row hasher (the opt-out hook needs the same one).
pub fn batch_service(
    loaded: &Loaded,
    batches: BatchStore,
    pipeline: Pipeline,
    exclusion: Arc<ExclusionList>,
) -> (BatchService, Arc<dyn RowHasher>) {
    let hasher: Arc<dyn RowHasher> = Arc::new(ExclusionRowHasher::new(exclusion));
    let service = BatchService::new(
        batches,
        Arc::new(PipelineEnricher::new(pipeline)),
        hasher.clone(),
        batch_config(loaded),
    );
    (service, hasher)
}

/// The first 16 bytes of the blake3 hash of the configuration as loaded (defaults and overrides
/// applied; secrets are not part of it), as hex: tells in the audit log when it changed.
fn config_hash(config: &crate::config::Config) -> String {
    let text = format!("{config:?}");
    hex::encode(&blake3::hash(text.as_bytes()).as_bytes()[..16])
}

/// A replica's name in leases and heartbeats: random per process, so a restart is a new replica.
fn replica_id() -> Arc<str> {
    Arc::from(format!("r-{:016x}", rand::random::<u64>()))
}

/// The built service: its state and the pieces the CLI needs.
pub struct App {
    pub state: AppState,
    pub data_dir: PathBuf,
    pub store: Store,
    /// This replica's id in leases and heartbeats.
    pub replica: Arc<str>,
    share: ReplicaShare,
    sweep_every: Duration,
    refresh_every: Duration,
    heartbeat_every: Duration,
}

/// The service's background tasks: following the store, batch workers, the expiry sweeper, the
/// heartbeat. Dropping it stops them; [`Background::stop`] also withdraws the heartbeat at once.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    heartbeat: Option<Heartbeat>,
}

impl Background {
    /// Stops every task now; a running batch resumes from its last checkpoint (here at the next start,
    /// or on another replica once its lease lapses).
    pub async fn stop(mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop().await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl App {
    pub async fn build(loaded: &Loaded, data_dir: &Path) -> Result<Self, AppError> {
        Self::build_with_clock(loaded, data_dir, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with the clock that decides batch expiry (tests move a manual one).
    pub async fn build_with_clock(
        loaded: &Loaded,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        let metrics = Arc::new(Metrics::new());
        let c = &loaded.config;
        let store = open_store(loaded, data_dir, metrics.clone()).await?;
        if !store.is_shared() {
            std::fs::create_dir_all(data_dir).map_err(|source| AppError::DataDir {
                path: data_dir.into(),
                source,
            })?;
        }
        let replica = replica_id();
        let share = ReplicaShare::single();
        let exclusion = Arc::new(open_exclusion(loaded, data_dir, &store).await?);
        let keyring = Arc::new(storage_keyring(loaded, data_dir, store.is_shared())?);
        let legacy_keys = match store.url() {
            StoreUrl::File(dir) => Some(dir.join("keys.json")),
            StoreUrl::S3 { .. } => None,
        };
        let keys = Arc::new(KeyStore::open(&store, legacy_keys.as_deref()).await?);
        let pipeline = pipeline(loaded, exclusion.clone(), metrics.clone(), share.clone())?;
        let privacy = Arc::new(PrivacyNotice::build(loaded, &pipeline));
        let batch_store = BatchStore::new(
            &store,
            keyring,
            clock,
            replica.clone(),
            Duration::from_millis(c.store.lease_ms),
        );
        batch_store.blobs.check_keyring().await.map_err(|e| {
            AppError::StorageKey(format!(
                "the stored batches cannot be read with the configured storage key ({e}); set \
                 {STORAGE_KEY_ENV} to the key they were written with, or list it in \
                 {STORAGE_KEY_PREVIOUS_ENV}"
            ))
        })?;
        let (batches, row_hasher) =
            batch_service(loaded, batch_store, pipeline.clone(), exclusion.clone());
        if let Some(key) = webhook_key(loaded)? {
            let sender = WebhookSender::new(
                key,
                c.batches.webhook_trusted_hosts.clone(),
                Duration::from_millis(c.batches.webhook_timeout_ms),
            )?;
            batches.set_notifier(Arc::new(sender));
        }
        let audit = AuditLog::new(store.objects().clone());
        audit
            .record(Event::ConfigLoaded {
                config_hash: config_hash(&loaded.config),
            })
            .await;
        let optout_hooks: Vec<Arc<dyn OptOutHook>> = vec![
            Arc::new(pipeline.source_cache()),
            Arc::new(PurgeHook::new(batches.clone(), row_hasher)),
        ];
        let state = AppState::new(AppServices {
            pipeline,
            exclusion,
            optout_hooks: Arc::new(optout_hooks),
            keys,
            audit,
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
            store,
            replica,
            share,
            sweep_every: Duration::from_secs(c.batches.sweep_interval_seconds),
            refresh_every: Duration::from_millis(c.store.refresh_ms),
            heartbeat_every: Duration::from_millis(c.store.heartbeat_ms),
        })
    }

    /// Starts the background work: follows the store's shared state (keys; on a shared store also
    /// other replicas' opt-outs, jobs and heartbeats), sweeps expired batches, queues every batch
    /// waiting for a job, starts the batch workers and a sweeper that runs every
    /// `batches.sweep_interval_seconds`.
    pub async fn start_background(&self) -> Result<Background, AppError> {
        let objects = self.store.objects().clone();
        let (watch, listing) = Watch::spawn(objects.clone(), self.refresh_every);
        let mut tasks = vec![listing];
        let keys = self.state.keys.clone();
        let follower = watch.follow();
        tasks.push(tokio::spawn(async move { keys.follow(follower).await }));
        let shared = self.store.is_shared();
        let mut heartbeat = None;
        if shared {
            let list = self.state.exclusion.clone();
            let follower = watch.follow();
            tasks.push(tokio::spawn(async move { list.follow(follower).await }));
            heartbeat = Some(Heartbeat::spawn(
                objects,
                &self.replica,
                self.heartbeat_every,
                watch.follow(),
                self.share.clone(),
                self.state.metrics.clone(),
            ));
        }
        let batches = self.state.batches.clone();
        let swept = batches.sweep().await?;
        let resumed = batches.resume_all().await?;
        tracing::info!(swept = swept.batches_removed, resumed, store = %self.store.url(), replica = %self.replica, "Batch store ready.");
        tasks.push(batches.spawn_workers(shared.then(|| watch.follow())));
        let every = self.sweep_every;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = batches.sweep().await {
                    tracing::error!(error = %e, "Sweeping expired batches failed; retrying later.");
                }
            }
        }));
        Ok(Background { tasks, heartbeat })
    }

    /// The routes and the connection limits they are served under.
    pub fn router(&self) -> http::Served {
        http::service(self.state.clone())
    }

    /// The operator's router for `server.metrics_listen`.
    pub fn metrics_router(&self) -> http::Served {
        http::Served::new(http::metrics_router(self.state.clone()), self.state.clone())
    }
}
