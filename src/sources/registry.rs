//! The built-in sources and their configuration: the registry lists the plugins, each of which
//! describes itself in a [`Spec`]; plugins do not need the registry.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

pub use super::spec::{Deps, SourceConfig, Spec};
use super::{dns, finder, github, gravatar, keybase, openpgp, rdap, webfinger, website};

/// The built-in sources. Adding one is adding its file and one line here.
pub const BUILTIN: &[Spec] = &[
    gravatar::SPEC,
    github::SPEC,
    dns::SPEC,
    website::SPEC,
    openpgp::SPEC,
    rdap::SPEC,
    keybase::SPEC,
    webfinger::SPEC,
    finder::SPEC,
];

/// `[sources.<name>]` as written in the TOML: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOverrides {
    pub enabled: Option<bool>,
    pub base_url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub rate_per_minute: Option<u32>,
    /// The share of `rate_per_minute` batches may use, in (0, 1]; default 0.8.
    pub batch_share: Option<f64>,
    pub concurrency: Option<usize>,
    pub weight: Option<f64>,
    pub api_key_env: Option<String>,
}

/// Why the sources' configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceConfigError {
    #[error("[sources.{0}] is not a known source; known sources are: {1}")]
    Unknown(String, String),
    #[error("[sources.{name}] {key} {problem}")]
    Invalid {
        name: String,
        key: &'static str,
        problem: String,
    },
}

/// Resolves every built-in source's config from the overrides and the environment.
pub fn resolve(
    overrides: &BTreeMap<String, SourceOverrides>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<&'static str, SourceConfig>, SourceConfigError> {
    if let Some(unknown) = overrides
        .keys()
        .find(|k| !BUILTIN.iter().any(|s| s.name == k.as_str()))
    {
        let known: Vec<&str> = BUILTIN.iter().map(|s| s.name).collect();
        return Err(SourceConfigError::Unknown(
            unknown.clone(),
            known.join(", "),
        ));
    }
    let mut out = BTreeMap::new();
    for spec in BUILTIN {
        let mut c = (spec.defaults)();
        if let Some(o) = overrides.get(spec.name) {
            apply(&mut c, o);
        }
        let invalid = |key, problem: &str| SourceConfigError::Invalid {
            name: spec.name.to_string(),
            key,
            problem: problem.to_string(),
        };
        if !base_url_allowed(&c.base_url, spec.schemes) {
            return Err(invalid(
                "base_url",
                &format!(
                    "must be an absolute URL with scheme {}",
                    spec.schemes.join(" or ")
                ),
            ));
        }
        if c.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be above 0"));
        }
        if !(c.batch_share > 0.0 && c.batch_share <= 1.0) {
            return Err(invalid("batch_share", "must be above 0 and at most 1"));
        }
        if c.concurrency == 0 {
            return Err(invalid("concurrency", "must be above 0"));
        }
        if !(c.weight > 0.0 && c.weight < 1.0) {
            return Err(invalid("weight", "must be between 0 and 1, exclusive"));
        }
        c.api_key = c
            .api_key_env
            .as_deref()
            .and_then(env)
            .filter(|k| !k.is_empty())
            .map(SecretString::from);
        out.insert(spec.name, c);
    }
    Ok(out)
}

/// Whether `base` parses as an absolute URL with one of `schemes` once `{placeholders}` are filled in.
fn base_url_allowed(base: &str, schemes: &[&str]) -> bool {
    if schemes.is_empty() {
        return true;
    }
    let filled = base
        .replace("{domain}", "example.com")
        .replace("{host}", "example.com");
    url::Url::parse(&filled).is_ok_and(|u| schemes.contains(&u.scheme()) && u.has_host())
}

fn apply(c: &mut SourceConfig, o: &SourceOverrides) {
    if let Some(v) = o.enabled {
        c.enabled = v;
    }
    if let Some(v) = &o.base_url {
        c.base_url.clone_from(v);
    }
    if let Some(v) = o.timeout_ms {
        c.timeout_ms = v;
    }
    if let Some(v) = o.rate_per_minute {
        c.rate_per_minute = v;
    }
    if let Some(v) = o.batch_share {
        c.batch_share = v;
    }
    if let Some(v) = o.concurrency {
        c.concurrency = v;
    }
    if let Some(v) = o.weight {
        c.weight = v;
    }
    if let Some(v) = &o.api_key_env {
        c.api_key_env = Some(v.clone());
    }
}
