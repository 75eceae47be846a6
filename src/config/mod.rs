//! Typed configuration: embedded defaults, an optional TOML file, `ENRICHD_<SECTION>__<KEY>` env overrides.
//!
//! Every key is optional and unknown keys are refused with their name. Secrets never live in the TOML:
//! sources name the env var that holds their key (`api_key_env`).

mod env;
mod listen;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use crate::pipeline::Want;

pub use env::KNOWN_VARS;
pub use listen::{LISTEN_EXAMPLES, ListenAddr};

use crate::domain::Region;
use crate::sources::SourceOverrides;
use crate::sources::provider::{self, ProviderConfig, ProviderError};
use crate::sources::registry::{self, SourceConfig, SourceConfigError};

/// How to make a 32-byte secret (the exclusion, webhook and storage keys), for errors about one.
pub const SECRET_HINT: &str =
    "make one with `enrichd secret` (or `openssl rand -hex 32`) and keep a copy somewhere safe";

/// The embedded retention policy (`policies/retention.toml`).
pub const RETENTION_POLICY: &str = include_str!("../../policies/retention.toml");

/// The storage (master) key: 64 hex characters, the same on every replica.
pub const STORAGE_KEY_ENV: &str = "ENRICHD_STORAGE_KEY";
/// Env variable holding the webhook signing key (64 hex characters).
pub const WEBHOOK_KEY_ENV: &str = "ENRICHD_WEBHOOK_KEY";
/// Older storage keys still accepted to unwrap, comma-separated, while `enrichd store rewrap` runs.
pub const STORAGE_KEY_PREVIOUS_ENV: &str = "ENRICHD_STORAGE_KEY_PREVIOUS";

/// The largest answer cache a config may ask for (4 GiB): a larger value is a unit mistake.
const MAX_SOURCE_CACHE_MIB: u64 = 4096;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub lookup: LookupConfig,
    pub tenants: TenantConfig,
    pub retention: Retention,
    pub exclusion: ExclusionConfig,
    pub batches: BatchesConfig,
    pub store: StoreConfig,
    pub operator: OperatorConfig,
    pub sources: BTreeMap<String, SourceOverrides>,
    /// Bring-your-own-key HTTP providers (`[[providers]]`), see `examples/providers.toml`.
    pub providers: Vec<ProviderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: ListenAddr,
    /// Where `GET /metrics` is served without a key, for the operator's scraper only: loopback by
    /// default. On the public listener it needs an admin key.
    pub metrics_listen: ListenAddr,
    pub data_dir: PathBuf,
    /// Largest JSON request body accepted, in bytes.
    pub max_json_bytes: usize,
    /// Requests being worked on at once before new ones get 503. A request counts from the moment
    /// its body has arrived, and a streamed answer until its last event.
    pub max_in_flight: usize,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Time a client has to send a request's head (line and headers), counted from the moment the
    /// connection is ready for a request.
    pub header_read_timeout_ms: u64,
    /// A connection with no request being worked on and no byte moving for this long is closed; so
    /// is one whose client has not taken a byte of its answer for this long.
    pub idle_timeout_ms: u64,
    /// A request body may take this long before the minimum rate applies.
    pub body_grace_ms: u64,
    /// After the grace period a body must have arrived at this average rate, or it is answered 408.
    pub body_min_bytes_per_second: u64,
    /// Open connections, all clients together, before new ones are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64) before new ones are answered 429;
    /// behind a trusted proxy, requests at once from one forwarded client.
    pub max_connections_per_client: usize,
    /// Batch uploads received at once (they hold an upload slot rather than an in-flight one).
    pub max_uploads: usize,
    /// On SIGTERM: how long requests already in progress may take to finish before the process
    /// closes their connections.
    pub drain_timeout_ms: u64,
    /// Proxies (addresses or CIDR blocks) whose `Forwarded` / `X-Forwarded-For` headers name the
    /// real client. A list, or one comma-separated string from the environment.
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// How many times the fan-out follows identifiers that sources reported.
    pub max_hops: u32,
    /// Fields the paid-provider waterfall stops at when a lookup names none (`want`).
    pub default_want: Vec<String>,
    /// ISO region for national phone numbers (`"FR"`); unset means numbers must be international.
    pub default_region: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Lookups per minute per tenant before 429.
    pub rate_per_minute: u32,
    /// Lookups a tenant may make at once above its steady rate.
    pub burst: u32,
    /// What each named tenant's batches may spend on paid providers in a calendar month (UTC), in
    /// the operator's currency unit; kept in the store as `spend/<tenant-hash>/<YYYY-MM>`. Tenants
    /// not named have no monthly cap.
    pub monthly_budget: std::collections::BTreeMap<String, f64>,
    /// Per named tenant, what its stored batches may take in the blob area, in bytes, instead of
    /// `batches.tenant_quota_bytes`.
    pub storage_quota_bytes: std::collections::BTreeMap<String, u64>,
}

/// `[exclusion]`: where the opt-out key lives and how the public opt-out behaves. The key itself never
/// appears here: `ENRICHD_EXCLUSION_KEY` wins, else `key_file`, else `<data_dir>/exclusion.key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExclusionConfig {
    /// A file holding the exclusion key as 64 hex characters.
    pub key_file: Option<PathBuf>,
    /// Deadline of the live lookup that expands an opt-out to the other identifiers sources know.
    pub expand_timeout_ms: u64,
    /// Opt-out submissions per minute per client address before 429.
    pub optout_per_minute: u32,
    /// Submissions a client address may make at once above its steady rate.
    pub optout_burst: u32,
    /// Largest admin bulk import body, in bytes.
    pub max_import_bytes: usize,
}

/// `[operator]`: who runs this instance (the controller, in data protection terms), named on the
/// privacy notice and the opt-out receipt so that the people looked up know whom to write to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// The organisation or person running the service, e.g. "Example Ltd".
    pub name: Option<String>,
    /// How to reach them: an email address, a web page or a postal address.
    pub contact: Option<String>,
    /// Where privacy questions and requests go, if not to `contact` (a data protection officer).
    pub privacy_contact: Option<String>,
}

/// CSV batches (`[batches]`): upload limits, concurrency, the expiry sweep and the completion webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchesConfig {
    /// Largest upload, in bytes (the file itself; multipart framing is allowed on top).
    pub max_bytes: u64,
    /// Most data rows in one upload (the header is not counted).
    pub max_rows: u64,
    pub max_columns: u64,
    /// Longest single cell, in bytes.
    pub max_field_bytes: u64,
    /// Rows looked up at once for one tenant.
    pub concurrency_per_tenant: usize,
    /// Rows looked up at once, all tenants together.
    pub concurrency_global: usize,
    /// Batches processed at once.
    pub max_jobs: usize,
    /// Batches of one tenant processed at once; the next job is taken round-robin across tenants,
    /// so a tenant with a long queue cannot hold back another's single batch.
    pub max_jobs_per_tenant: usize,
    /// What one tenant's stored batches (inputs, results, indexes) may take in the blob area, in
    /// bytes, unless `[tenants.storage_quota_bytes]` names the tenant; an upload that would pass it
    /// is answered 507.
    pub tenant_quota_bytes: u64,
    /// Input rows per stored part: the checkpoint a restarted job resumes from.
    pub part_rows: u32,
    /// Bytes per stored part: a part closes at `part_rows` rows or at this many bytes, whichever
    /// comes first. It bounds the memory of writing a part and of an opt-out's purge rewriting one.
    pub part_bytes: u64,
    /// Seconds between two sweeps of expired batches (one also runs at start).
    pub sweep_interval_seconds: u64,
    /// Timeout of one completion webhook delivery, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Webhook hosts the operator trusts even though the SSRF guard would refuse them (an internal
    /// receiver, a loopback test server). Empty by default: only public addresses are called.
    pub webhook_trusted_hosts: Vec<String>,
    /// File holding the webhook signing key (64 hex characters) when `ENRICHD_WEBHOOK_KEY` is unset.
    /// Without either, uploads that ask for a webhook are refused.
    pub webhook_key_file: Option<PathBuf>,
}

impl Default for BatchesConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_rows: 1_000_000,
            max_columns: 200,
            max_field_bytes: 32 * 1024,
            concurrency_per_tenant: 16,
            concurrency_global: 64,
            max_jobs: 4,
            max_jobs_per_tenant: 2,
            tenant_quota_bytes: 10 * 1024 * 1024 * 1024,
            part_rows: 1000,
            part_bytes: 4 * 1024 * 1024,
            sweep_interval_seconds: 3600,
            webhook_timeout_ms: 5_000,
            webhook_trusted_hosts: Vec::new(),
            webhook_key_file: None,
        }
    }
}

/// `[store]`: where shared state lives and how replicas follow it. The storage key never appears here:
/// `ENRICHD_STORAGE_KEY` wins, else `key_file`, else (local store only) `<data_dir>/storage.key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file://DIR` or `s3://bucket/prefix`; unset means `file://<data_dir>`.
    pub url: Option<String>,
    /// A file holding the storage (master) key as 64 hex characters.
    pub key_file: Option<PathBuf>,
    /// With a local store: the directory of the blob area (batch inputs, results, their indexes and
    /// keys), so that it can sit on another filesystem than the exclusion log and the store's state.
    /// Tenants fill the blob area; a full one must never make an opt-out fail. Unset: under the data
    /// directory with everything else.
    pub blob_dir: Option<PathBuf>,
    /// How often each replica lists the store's shared state (keys, opt-outs, jobs, replicas).
    pub refresh_ms: u64,
    /// How long a job or sweep lease lives without renewal before another replica takes it over.
    pub lease_ms: u64,
    /// How often each replica writes its heartbeat on a shared store.
    pub heartbeat_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_file: None,
            blob_dir: None,
            refresh_ms: 500,
            lease_ms: 5_000,
            heartbeat_ms: 2_000,
        }
    }
}

impl StoreConfig {
    /// The parsed `store.url`, or the default `file://<data_dir>`.
    pub fn url_or(&self, data_dir: &Path) -> crate::store::StoreUrl {
        self.url
            .as_deref()
            .and_then(|u| crate::store::StoreUrl::parse(u).ok())
            .unwrap_or_else(|| crate::store::StoreUrl::default_for(data_dir))
    }
}

/// Retention settings. The defaults are what the embedded `policies/retention.toml` ships (a test holds
/// them equal); a `[retention]` table or an `ENRICHD_RETENTION__*` variable may set any one of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub batch_results_days: u32,
    pub source_cache_seconds: u64,
    /// Memory the in-memory answer cache may hold, in MiB; 0 turns it off.
    pub source_cache_mib: u64,
    pub exclusion_days: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::from(SocketAddr::from(([127, 0, 0, 1], 8080))),
            metrics_listen: ListenAddr::from(SocketAddr::from(([127, 0, 0, 1], 9464))),
            data_dir: PathBuf::from("./data"),
            max_json_bytes: 64 * 1024,
            max_in_flight: 1024,
            log_format: "text".into(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 10_000,
            body_grace_ms: 10_000,
            body_min_bytes_per_second: 8 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 256,
            max_uploads: 16,
            drain_timeout_ms: 20_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 3_000,
            max_timeout_ms: 15_000,
            max_hops: 2,
            default_want: vec!["email".into(), "phone".into()],
            default_region: None,
        }
    }
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            rate_per_minute: 600,
            burst: 60,
            monthly_budget: std::collections::BTreeMap::new(),
            storage_quota_bytes: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for ExclusionConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            expand_timeout_ms: 3_000,
            optout_per_minute: 6,
            optout_burst: 10,
            max_import_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            batch_results_days: 30,
            source_cache_seconds: 300,
            source_cache_mib: crate::sources::etiquette::DEFAULT_MAX_BYTES >> 20,
            exclusion_days: 1095,
        }
    }
}

/// A list of strings from TOML (`["a", "b"]`), or one string of comma-separated items, which is how an
/// `ENRICHD_<SECTION>__<KEY>` variable carries a list.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// Why the configuration is refused. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value that parsed but is refused; `at` says where it was set (`enrichd.toml:3`, `set by
    /// ENRICHD_LOOKUP__MAX_HOPS`), when it was not the default.
    #[error(
        "invalid configuration: {key}{} {problem}",
        at.as_ref().map(|a| format!(" ({a})")).unwrap_or_default()
    )]
    Invalid {
        key: &'static str,
        problem: String,
        at: Option<String>,
    },
    #[error("invalid configuration: {0}")]
    Source(#[from] SourceConfigError),
    #[error("invalid configuration: {0}")]
    Provider(#[from] ProviderError),
}

/// A loaded, validated configuration with the sources resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<&'static str, SourceConfig>,
    pub region: Option<Region>,
    /// The values of the env vars that providers name in `auth_env`, read at load time.
    pub provider_keys: BTreeMap<String, SecretString>,
    /// The `AWS_*` variables (endpoint, credentials, region, `AWS_ALLOW_HTTP`) for an S3 store.
    pub aws: Vec<(String, SecretString)>,
    /// `ENRICHD_STORAGE_KEY` and `ENRICHD_STORAGE_KEY_PREVIOUS`, as given.
    pub storage_key: Option<SecretString>,
    pub storage_key_previous: Option<SecretString>,
    /// `ENRICHD_EXCLUSION_KEY` and `ENRICHD_WEBHOOK_KEY`, as given. Read from the variables passed
    /// to the loader, never from the process, so that a test's server sees only what the test gives.
    pub exclusion_key: Option<SecretString>,
    pub webhook_key: Option<SecretString>,
    /// Things that do not stop the service but are most likely mistakes (a misspelt variable);
    /// each command logs them once logging is set up.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the file (if any), applies env overrides from `vars`, validates.
    pub fn load(path: Option<&Path>, vars: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.into(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_source(&text, path, vars)
    }

    /// Parses TOML text, applies env overrides, validates. Used by `load` and by tests.
    pub fn from_toml(text: &str, vars: &[(String, String)]) -> Result<Loaded, ConfigError> {
        Self::from_source(text, None, vars)
    }

    /// The file's text alone is read first, so that its errors can name their line; then the
    /// overrides, whose errors name their variable.
    fn from_source(
        text: &str,
        file: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let origin = report::Origin::new(text, file, vars);
        toml::from_str::<Config>(text).map_err(|e| ConfigError::Parse(origin.file_error(&e)))?;
        let file_table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(origin.file_error(&e)))?;
        let mut table = file_table.clone();
        env::apply_overrides(&mut table, vars)?;
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| env::blame::<Config>(&file_table, vars, e))?;
        let lookup_env = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let sources = registry::resolve(&config.sources, &lookup_env)?;
        provider::validate(&config.providers)?;
        let provider_keys = config
            .providers
            .iter()
            .filter_map(|p| p.auth_env.as_deref())
            .filter_map(|var| Some((var.to_string(), SecretString::from(lookup_env(var)?))))
            .collect();
        let region = config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, problem, .. } => ConfigError::Invalid {
                key,
                problem,
                at: origin.where_set(key),
            },
            other => other,
        })?;
        let aws = vars
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.clone(), SecretString::from(v.clone())))
            .collect();
        let secret = |name: &str| {
            lookup_env(name)
                .filter(|v| !v.trim().is_empty())
                .map(SecretString::from)
        };
        Ok(Loaded {
            config,
            sources,
            region,
            provider_keys,
            aws,
            storage_key: secret(STORAGE_KEY_ENV),
            storage_key_previous: secret(STORAGE_KEY_PREVIOUS_ENV),
            exclusion_key: secret(crate::exclusion::key::KEY_ENV),
            webhook_key: secret(WEBHOOK_KEY_ENV),
            warnings: env::unknown_vars(vars),
        })
    }

    fn validate(&self) -> Result<Option<Region>, ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
                at: None,
            })
        };
        if self.retention.batch_results_days == 0 || self.retention.batch_results_days > 30 {
            return invalid(
                "retention.batch_results_days",
                "must be between 1 and 30: batch results never live longer than 30 days",
            );
        }
        if self.retention.source_cache_mib > MAX_SOURCE_CACHE_MIB {
            return invalid(
                "retention.source_cache_mib",
                &format!("must be at most {MAX_SOURCE_CACHE_MIB} (MiB); 0 turns the cache off"),
            );
        }
        let l = &self.lookup;
        if l.default_timeout_ms == 0 || l.max_timeout_ms < l.default_timeout_ms {
            return invalid(
                "lookup.default_timeout_ms",
                "must be above 0 and at most lookup.max_timeout_ms",
            );
        }
        if let Err(unknown) = Want::parse_all(&l.default_want) {
            return invalid(
                "lookup.default_want",
                &format!("names '{unknown}'; known fields are {}", Want::names()),
            );
        }
        if self
            .tenants
            .monthly_budget
            .values()
            .any(|b| !b.is_finite() || *b < 0.0)
        {
            return invalid(
                "tenants.monthly_budget",
                "must map tenant names to amounts of 0 or more",
            );
        }
        if self.tenants.rate_per_minute == 0 {
            return invalid("tenants.rate_per_minute", "must be above 0");
        }
        let x = &self.exclusion;
        if x.expand_timeout_ms == 0 || x.expand_timeout_ms > l.max_timeout_ms {
            return invalid(
                "exclusion.expand_timeout_ms",
                "must be above 0 and at most lookup.max_timeout_ms",
            );
        }
        if x.optout_per_minute == 0 {
            return invalid("exclusion.optout_per_minute", "must be above 0");
        }
        if self.retention.exclusion_days == 0 {
            return invalid(
                "retention.exclusion_days",
                "must be above 0: an opt-out must outlive the request that made it",
            );
        }
        let b = &self.batches;
        if b.max_bytes == 0 || b.max_rows == 0 || b.max_columns == 0 || b.max_field_bytes == 0 {
            return invalid(
                "batches.max_bytes",
                "batch limits (max_bytes, max_rows, max_columns, max_field_bytes) must be above 0",
            );
        }
        if b.concurrency_per_tenant == 0 || b.concurrency_global == 0 || b.max_jobs == 0 {
            return invalid(
                "batches.concurrency_global",
                "batch concurrency (concurrency_per_tenant, concurrency_global, max_jobs) must be above 0",
            );
        }
        if b.part_rows == 0 {
            return invalid("batches.part_rows", "must be above 0");
        }
        if b.part_bytes == 0 {
            return invalid("batches.part_bytes", "must be above 0");
        }
        if b.max_jobs_per_tenant == 0 {
            return invalid("batches.max_jobs_per_tenant", "must be above 0");
        }
        if b.tenant_quota_bytes == 0 {
            return invalid(
                "batches.tenant_quota_bytes",
                "must be above 0: it is what each tenant's stored batches may take",
            );
        }
        if let Some((name, _)) = self
            .tenants
            .storage_quota_bytes
            .iter()
            .find(|(_, q)| **q == 0)
        {
            return invalid(
                "tenants.storage_quota_bytes",
                &format!("the quota of tenant '{name}' must be above 0"),
            );
        }
        if self.store.blob_dir.is_some()
            && self
                .store
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("s3://"))
        {
            return invalid(
                "store.blob_dir",
                "applies to a local store only; with an s3:// store the blob area is in the bucket",
            );
        }
        if b.sweep_interval_seconds == 0 {
            return invalid("batches.sweep_interval_seconds", "must be above 0");
        }
        if let Some(url) = &self.store.url
            && let Err(problem) = crate::store::StoreUrl::parse(url)
        {
            return invalid("store.url", &problem);
        }
        let st = &self.store;
        if st.refresh_ms == 0 || st.refresh_ms > 1_000 {
            return invalid(
                "store.refresh_ms",
                "must be between 1 and 1000: other replicas' opt-outs and key revocations must take \
                 effect within 2 seconds",
            );
        }
        if st.lease_ms < 1_000 || st.heartbeat_ms == 0 {
            return invalid(
                "store.lease_ms",
                "must be at least 1000 (and store.heartbeat_ms above 0)",
            );
        }
        let s = &self.server;
        for (key, value) in [
            ("server.max_in_flight", s.max_in_flight as u64),
            ("server.header_read_timeout_ms", s.header_read_timeout_ms),
            ("server.idle_timeout_ms", s.idle_timeout_ms),
            (
                "server.body_min_bytes_per_second",
                s.body_min_bytes_per_second,
            ),
            ("server.max_connections", s.max_connections as u64),
            (
                "server.max_connections_per_client",
                s.max_connections_per_client as u64,
            ),
            ("server.max_uploads", s.max_uploads as u64),
            ("server.drain_timeout_ms", s.drain_timeout_ms),
        ] {
            if value == 0 {
                return invalid(key, "must be above 0");
            }
        }
        if let Err(bad) = crate::http::TrustedProxies::parse(&s.trusted_proxies) {
            return invalid(
                "server.trusted_proxies",
                &format!("holds '{bad}', which is neither an IP address nor a CIDR block"),
            );
        }
        for (key, value) in [
            ("operator.name", &self.operator.name),
            ("operator.contact", &self.operator.contact),
            ("operator.privacy_contact", &self.operator.privacy_contact),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 500)
            {
                return invalid(
                    key,
                    "must be between 1 and 500 characters, e.g. \"Example Ltd\" or \
                     \"privacy@example.com\"; leave it out to name no one",
                );
            }
        }
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            return invalid("server.log_format", "must be \"text\" or \"json\"");
        }
        match &self.lookup.default_region {
            None => Ok(None),
            Some(r) => {
                r.parse()
                    .map(Some)
                    .map_err(|e: crate::domain::Invalid| ConfigError::Invalid {
                        key: "lookup.default_region",
                        problem: e.to_string(),
                        at: None,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load() {
        let loaded = Config::from_toml("", &[]).expect("defaults are valid");
        assert_eq!(loaded.config.retention.batch_results_days, 30);
        assert!(loaded.sources.contains_key("gravatar"));
        let parsed: Retention = toml::from_str(RETENTION_POLICY).expect("embedded policy parses");
        assert_eq!(
            parsed,
            Retention::default(),
            "the shipped policy and the defaults agree"
        );
        for key in [
            "batch_results_days",
            "source_cache_seconds",
            "source_cache_mib",
            "exclusion_days",
        ] {
            assert!(
                RETENTION_POLICY.contains(&format!("\n{key} = ")),
                "{key} is shipped"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Config::from_toml("[server]\nlisten_addr = \"x\"\n", &[]).expect_err("unknown key");
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err =
            Config::from_toml("[sources.nope]\nenabled = true\n", &[]).expect_err("unknown source");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Config::from_toml("[sources.github]\nbase = \"x\"\n", &[])
            .expect_err("unknown source key");
        assert!(err.to_string().contains("base"), "{err}");
    }

    #[test]
    fn retention_above_thirty_days_is_refused() {
        let err = Config::from_toml(
            "[retention]\nbatch_results_days = 31\nsource_cache_seconds = 1\nexclusion_days = 1\n",
            &[],
        )
        .expect_err("31 days");
        assert!(err.to_string().contains("batch_results_days"), "{err}");
    }

    #[test]
    fn the_answer_cache_budget_has_a_default_an_override_and_a_ceiling() {
        // A `[retention]` table written before the key existed still loads, with the default.
        let older = Config::from_toml(
            "[retention]\nbatch_results_days = 7\nsource_cache_seconds = 60\nexclusion_days = 30\n",
            &[],
        )
        .expect("older table");
        assert_eq!(older.config.retention.source_cache_mib, 16);
        // One key alone, the others from the shipped policy.
        let env = Config::from_toml("", &vars(&[("ENRICHD_RETENTION__SOURCE_CACHE_MIB", "0")]))
            .expect("0 turns the cache off");
        assert_eq!(
            env.config.retention,
            Retention {
                source_cache_mib: 0,
                ..Retention::default()
            }
        );
        let err = Config::from_toml(
            "",
            &vars(&[("ENRICHD_RETENTION__SOURCE_CACHE_MIB", "9000")]),
        )
        .expect_err("above the ceiling");
        assert!(
            err.to_string().contains("retention.source_cache_mib"),
            "{err}"
        );
    }

    #[test]
    fn batch_settings_load_and_zero_limits_are_named() {
        let loaded = Config::from_toml(
            "[batches]\nmax_rows = 10\npart_rows = 5\nwebhook_trusted_hosts = [\"127.0.0.1\"]\n",
            &vars(&[("ENRICHD_BATCHES__MAX_JOBS", "2")]),
        )
        .expect("valid");
        assert_eq!(loaded.config.batches.max_rows, 10);
        assert_eq!(loaded.config.batches.part_rows, 5);
        assert_eq!(loaded.config.batches.max_jobs, 2);
        let err = Config::from_toml("[batches]\nmax_bytes = 0\n", &[]).expect_err("zero");
        assert!(err.to_string().contains("batches.max_bytes"), "{err}");
        let err = Config::from_toml("[batches]\nmax_byte = 1\n", &[]).expect_err("typo");
        assert!(err.to_string().contains("max_byte"), "{err}");
    }

    #[test]
    fn part_bytes_quotas_and_the_jobs_per_tenant_load_and_zeros_are_named() {
        let loaded = Config::from_toml(
            "[batches]\npart_bytes = 1024\ntenant_quota_bytes = 5000\nmax_jobs_per_tenant = 1\n\
             [tenants.storage_quota_bytes]\nacme = 9000\n[store]\nblob_dir = \"/mnt/blobs\"\n",
            &[],
        )
        .expect("valid");
        let b = &loaded.config.batches;
        assert_eq!(
            (b.part_bytes, b.tenant_quota_bytes, b.max_jobs_per_tenant),
            (1024, 5000, 1)
        );
        assert_eq!(loaded.config.tenants.storage_quota_bytes["acme"], 9000);
        let defaults = BatchesConfig::default();
        assert_eq!(defaults.part_bytes, 4 << 20);
        assert_eq!(defaults.tenant_quota_bytes, 10 << 30);
        assert_eq!(defaults.max_jobs_per_tenant, 2);
        for (toml, key) in [
            ("[batches]\npart_bytes = 0\n", "batches.part_bytes"),
            (
                "[batches]\ntenant_quota_bytes = 0\n",
                "batches.tenant_quota_bytes",
            ),
            (
                "[batches]\nmax_jobs_per_tenant = 0\n",
                "batches.max_jobs_per_tenant",
            ),
            (
                "[tenants.storage_quota_bytes]\nacme = 0\n",
                "tenants.storage_quota_bytes",
            ),
            (
                "[store]\nurl = \"s3://b/p\"\nblob_dir = \"/mnt/blobs\"\n",
                "store.blob_dir",
            ),
        ] {
            let err = Config::from_toml(toml, &[]).expect_err(key);
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn env_overrides_any_key() {
        let loaded = Config::from_toml(
            "[lookup]\nmax_hops = 1\n",
            &vars(&[
                ("ENRICHD_LOOKUP__MAX_HOPS", "3"),
                ("ENRICHD_SOURCES__GITHUB__BASE_URL", "http://127.0.0.1:9"),
                ("ENRICHD_SERVER__LOG_FORMAT", "json"),
                ("ENRICHD_EXCLUSION_KEY", "not a config key"),
            ]),
        )
        .expect("valid");
        assert_eq!(loaded.config.lookup.max_hops, 3);
        assert_eq!(loaded.sources["github"].base_url, "http://127.0.0.1:9");
        assert_eq!(loaded.config.server.log_format, "json");
    }

    #[test]
    fn exclusion_section_has_defaults_and_is_validated() {
        let loaded = Config::from_toml("", &[]).expect("defaults");
        assert_eq!(loaded.config.exclusion.expand_timeout_ms, 3_000);
        assert!(loaded.config.exclusion.key_file.is_none());
        let loaded = Config::from_toml(
            "[exclusion]\nkey_file = \"/run/secrets/exclusion.key\"\noptout_per_minute = 2\n",
            &vars(&[("ENRICHD_EXCLUSION__EXPAND_TIMEOUT_MS", "500")]),
        )
        .expect("valid");
        let x = &loaded.config.exclusion;
        assert_eq!(
            x.key_file.as_deref(),
            Some(Path::new("/run/secrets/exclusion.key"))
        );
        assert_eq!((x.optout_per_minute, x.expand_timeout_ms), (2, 500));
        for (toml, key) in [
            (
                "[exclusion]\nexpand_timeout_ms = 0\n",
                "exclusion.expand_timeout_ms",
            ),
            (
                "[exclusion]\nexpand_timeout_ms = 99999\n",
                "exclusion.expand_timeout_ms",
            ),
            (
                "[exclusion]\noptout_per_minute = 0\n",
                "exclusion.optout_per_minute",
            ),
            ("[exclusion]\nkey = \"secret\"\n", "key"),
        ] {
            let err = Config::from_toml(toml, &[]).expect_err(toml);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn the_store_section_takes_a_url_and_refuses_a_bad_one_by_name() {
        let loaded = Config::from_toml(
            "",
            &vars(&[
                ("ENRICHD_STORE__URL", "s3://enrichd-test/eu"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                ("ENRICHD_STORAGE_KEY", &"ab".repeat(32)),
            ]),
        )
        .expect("valid");
        assert!(loaded.config.store.url_or(Path::new("d")).is_shared());
        assert_eq!(loaded.aws.len(), 1);
        assert!(loaded.storage_key.is_some());
        assert!(
            !format!("{loaded:?}").contains("abab"),
            "secrets never print"
        );
        let default = Config::from_toml("", &[]).expect("defaults");
        assert_eq!(
            default.config.store.url_or(Path::new("/srv/d")).to_string(),
            "file:///srv/d"
        );
        let err = Config::from_toml("[store]\nurl = \"ftp://x\"\n", &[]).expect_err("bad url");
        assert!(err.to_string().contains("store.url"), "{err}");
        let err = Config::from_toml("[store]\nrefresh_ms = 5000\n", &[]).expect_err("too slow");
        assert!(err.to_string().contains("store.refresh_ms"), "{err}");
    }

    #[test]
    fn env_override_of_unknown_key_is_named() {
        let err =
            Config::from_toml("", &vars(&[("ENRICHD_LOOKUP__MAX_HOOPS", "3")])).expect_err("typo");
        assert!(err.to_string().contains("max_hoops"), "{err}");
    }

    #[test]
    fn a_misspelt_variable_is_named_as_the_variable() {
        let err = Config::from_toml("", &vars(&[("ENRICHD_LOOKUP__DEFAULT_TIMOUT_MS", "5000")]))
            .expect_err("typo");

        assert_eq!(
            err.to_string(),
            "invalid configuration: ENRICHD_LOOKUP__DEFAULT_TIMOUT_MS sets lookup.default_timout_ms, \
             which is not a setting; expected one of `default_timeout_ms`, `max_timeout_ms`, \
             `max_hops`, `default_want`, `default_region`"
        );
    }

    #[test]
    fn a_bad_value_names_the_file_and_line_or_the_variable_and_what_is_valid() {
        let file = "[lookup]\ndefault_timeout_ms = \"5s\"\n";
        let err = Config::from_toml(file, &[]).expect_err("5s");
        assert_eq!(
            err.to_string(),
            "invalid configuration: lookup.default_timeout_ms (line 2) must be a whole number of \
             milliseconds, e.g. 5000, not string \"5s\""
        );

        let err = Config::from_toml("", &vars(&[("ENRICHD_LOOKUP__DEFAULT_TIMEOUT_MS", "5s")]))
            .expect_err("5s");
        assert_eq!(
            err.to_string(),
            "invalid configuration: ENRICHD_LOOKUP__DEFAULT_TIMEOUT_MS sets \
             lookup.default_timeout_ms, which must be a whole number of milliseconds, e.g. 5000, \
             not string \"5s\""
        );
    }

    #[test]
    fn a_refused_value_says_where_it_was_set() {
        let file = "[server]\nmax_in_flight = 5\n\n[retention]\nbatch_results_days = 31\n";
        let err = Config::from_toml(file, &[]).expect_err("31 days");
        assert!(
            err.to_string().starts_with(
                "invalid configuration: retention.batch_results_days (line 5) must be"
            ),
            "{err}"
        );

        let err = Config::from_toml("", &vars(&[("ENRICHD_TENANTS__RATE_PER_MINUTE", "0")]))
            .expect_err("zero");
        assert_eq!(
            err.to_string(),
            "invalid configuration: tenants.rate_per_minute (set by \
             ENRICHD_TENANTS__RATE_PER_MINUTE) must be above 0"
        );
    }

    #[test]
    fn listen_takes_host_names_as_well_as_addresses() {
        let loaded =
            Config::from_toml("[server]\nlisten = \"localhost:8080\"\n", &[]).expect("a host name");
        assert_eq!(loaded.config.server.listen.as_str(), "localhost:8080");

        let err =
            Config::from_toml("[server]\nlisten = \"localhost\"\n", &[]).expect_err("no port");
        assert!(
            err.to_string().contains("server.listen (line 2)")
                && err.to_string().contains(LISTEN_EXAMPLES),
            "{err}"
        );
    }

    #[test]
    fn an_enrichd_variable_that_sets_nothing_is_warned_about() {
        let loaded = Config::from_toml(
            "",
            &vars(&[
                ("ENRICHD_LOOKUP_MAX_HOPS", "1"),
                ("ENRICHD_EXCLUSION_KEY", "x"),
                ("ENRICHD_LISTEN", "x"),
            ]),
        )
        .expect("valid");

        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].starts_with("ENRICHD_LOOKUP_MAX_HOPS is not a variable"));
    }

    #[test]
    fn the_operator_is_optional_and_must_not_be_blank() {
        let loaded = Config::from_toml(
            "[operator]\nname = \"Example Ltd\"\nprivacy_contact = \"dpo@example.com\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(loaded.config.operator.name.as_deref(), Some("Example Ltd"));
        assert!(loaded.config.operator.contact.is_none());
        let err = Config::from_toml("[operator]\ncontact = \" \"\n", &[]).expect_err("blank");
        assert!(
            err.to_string().contains("operator.contact (line 2)"),
            "{err}"
        );
    }

    #[test]
    fn api_keys_come_from_the_environment() {
        let loaded =
            Config::from_toml("", &vars(&[("GITHUB_TOKEN", "ghp_secret")])).expect("valid");
        assert!(loaded.sources["github"].api_key.is_some());
        assert!(
            !format!("{loaded:?}").contains("ghp_secret"),
            "secrets never print"
        );
    }
}
