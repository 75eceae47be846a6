//! Keybase API 1.0: `GET /_/api/1.0/user/lookup.json?usernames={u}` (or `?github={login}` /
//! `?twitter={handle}`, which find the Keybase user who proved that account). The answer is a status
//! envelope and a `them` array with `basics`, `profile` and `proofs_summary.all[]` (`proof_type`,
//! `nametag`, `service_url`, `state`).
//!
//! Keybase proofs are cryptographically verified, so the proved GitHub and X accounts come back as
//! profiles (hops the fan-out follows) and proved web sites as websites.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::spec::{Deps, HTTP, SourceConfig, Spec};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{DomainName, Identifier, ProfileUrl, Service};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "keybase",
    schemes: HTTP,
    defaults: || SourceConfig::new("https://keybase.io", 2_500, 30, 0.8),
    build: |c: &SourceConfig, deps: &Deps| {
        let upstream =
            Upstream::new(deps.http.clone(), &c.base_url).with_header("accept", "application/json");
        Arc::new(Keybase { upstream })
    },
};

/// Keybase's status code for "no such user".
const NOT_FOUND: i64 = 205;

pub struct Keybase {
    upstream: Upstream,
}

#[derive(Debug, Deserialize)]
struct Lookup {
    status: Status,
    /// `null` entries stand for names that matched nobody.
    #[serde(default)]
    them: Vec<Option<User>>,
}

#[derive(Debug, Deserialize)]
struct Status {
    code: i64,
}

#[derive(Debug, Deserialize)]
struct User {
    basics: Basics,
    profile: Option<Profile>,
    proofs_summary: Option<ProofsSummary>,
    pictures: Option<Pictures>,
}

#[derive(Debug, Deserialize)]
struct Basics {
    username: String,
}

#[derive(Debug, Deserialize)]
struct Profile {
    full_name: Option<String>,
    location: Option<String>,
    bio: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProofsSummary {
    #[serde(default)]
    all: Vec<Proof>,
}

#[derive(Debug, Deserialize)]
struct Proof {
    proof_type: String,
    nametag: String,
    service_url: Option<String>,
    /// 1 is a live, verified proof.
    state: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Pictures {
    primary: Option<Picture>,
}

#[derive(Debug, Deserialize)]
struct Picture {
    url: Option<String>,
}

impl Source for Keybase {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        query_for(id).is_some()
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Some((param, handle)) = query_for(id) else {
                return Ok(Vec::new());
            };
            let handle: String = url::form_urlencoded::byte_serialize(handle.as_bytes()).collect();
            let path = format!(
                "/_/api/1.0/user/lookup.json?{param}={handle}&fields=basics,profile,proofs_summary,pictures"
            );
            let lookup = match self.upstream.get_json::<Lookup>(&path).await? {
                Fetched::NotFound => return Ok(Vec::new()),
                Fetched::Found(l) => l,
            };
            match lookup.status.code {
                0 => {}
                NOT_FOUND => return Ok(Vec::new()),
                code => {
                    return Err(SourceError::Malformed(format!(
                        "Keybase answered status code {code}"
                    )));
                }
            }
            Ok(lookup
                .them
                .into_iter()
                .flatten()
                .next()
                .map(observations)
                .unwrap_or_default())
        }
        .boxed()
    }
}

/// The lookup parameter and handle for an identifier: a Keybase user, or a proved GitHub / X account.
fn query_for(id: &Identifier) -> Option<(&'static str, &str)> {
    let Identifier::Profile(p) = id else {
        return None;
    };
    let param = match p.service() {
        Service::Keybase => "usernames",
        Service::Github => "github",
        Service::X => "twitter",
        _ => return None,
    };
    Some((param, p.handle()?))
}

fn observations(u: User) -> Vec<Observation> {
    let keybase = ProfileUrl::parse(&format!("https://keybase.io/{}", u.basics.username));
    // Found through a proof Keybase checked.
    let mut out: Vec<Observation> = keybase
        .into_iter()
        .map(|p| Observation::profile(p).verified())
        .collect();
    let mut text = |field, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            out.push(Observation::new(field, v));
        }
    };
    if let Some(p) = u.profile {
        text(Field::FullName, p.full_name);
        text(Field::Location, p.location);
        text(Field::Bio, p.bio);
    }
    text(
        Field::Photo,
        u.pictures.and_then(|p| p.primary).and_then(|p| p.url),
    );
    let proofs = u.proofs_summary.map(|s| s.all).unwrap_or_default();
    for proof in proofs
        .into_iter()
        .filter(|p| p.state.is_none_or(|s| s == 1))
    {
        let detail = "keybase proof";
        match proof.proof_type.as_str() {
            // A proof in state 1 is one Keybase checked.
            "github" => out.push(
                Observation::profile(ProfileUrl::github(&proof.nametag))
                    .with_detail(detail)
                    .verified(),
            ),
            "twitter" => out.push(
                Observation::profile(ProfileUrl::x(&proof.nametag))
                    .with_detail(detail)
                    .verified(),
            ),
            "generic_web_site" | "dns" => {
                if let Ok(d) = DomainName::parse(&proof.nametag) {
                    let url = proof
                        .service_url
                        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                        .unwrap_or_else(|| format!("https://{}", d.as_str()));
                    out.push(Observation::new(Field::Website, url).with_detail(detail));
                }
            }
            _ => {}
        }
    }
    out
}

/// A lookup answer read as `lookup` reads it (for the fuzz targets).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Observation>, serde_json::Error> {
    serde_json::from_slice::<Lookup>(body).map(|l| {
        l.them
            .into_iter()
            .flatten()
            .next()
            .map(observations)
            .unwrap_or_default()
    })
}

#[cfg(test)]
#[path = "keybase_tests.rs"]
mod tests;
