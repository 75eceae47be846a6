//! What a source plugin declares about itself: its name, defaults and how to build it. The registry
//! lists the plugins; plugins need only this.

use std::sync::Arc;

use secrecy::SecretString;

use super::Source;
use crate::store::replicas::ReplicaShare;

/// One built-in source: its name, its defaults, and how to build it from its resolved config.
pub struct Spec {
    pub name: &'static str,
    /// URL schemes `base_url` may use ([`HTTP`] for web APIs); `{placeholders}` in it are allowed.
    /// Empty for a source that calls nothing (its `base_url` is ignored).
    pub schemes: &'static [&'static str],
    pub defaults: fn() -> SourceConfig,
    pub build: fn(&SourceConfig, &Deps) -> Arc<dyn Source>,
}

/// The schemes of an HTTP API's `base_url`.
pub const HTTP: &[&str] = &["http", "https"];

/// What a source may need to build itself.
pub struct Deps {
    pub http: reqwest::Client,
    /// This replica's share of each source's budget (see [`crate::store::replicas`]).
    pub share: ReplicaShare,
}

/// A source's resolved settings (`[sources.<name>]` over the source's defaults).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub enabled: bool,
    pub base_url: String,
    pub timeout_ms: u64,
    pub rate_per_minute: u32,
    /// The share of `rate_per_minute` batches may use (0 < share ≤ 1); the rest is kept for live
    /// lookups.
    pub batch_share: f64,
    pub concurrency: usize,
    pub weight: f64,
    /// Name of the env var that holds the API key, if the source takes one.
    pub api_key_env: Option<String>,
    /// The key itself, read from `api_key_env` at load time.
    pub api_key: Option<SecretString>,
}

impl SourceConfig {
    pub fn new(base_url: &str, timeout_ms: u64, rate_per_minute: u32, weight: f64) -> Self {
        Self {
            enabled: true,
            base_url: base_url.to_string(),
            timeout_ms,
            rate_per_minute,
            batch_share: super::etiquette::DEFAULT_BATCH_SHARE,
            concurrency: 32,
            weight,
            api_key_env: None,
            api_key: None,
        }
    }

    pub fn with_key_env(mut self, var: &str) -> Self {
        self.api_key_env = Some(var.to_string());
        self
    }
}
