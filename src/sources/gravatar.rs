//! Gravatar REST API v3: `GET /profiles/{sha256(email)}`.
//!
//! Without an API key Gravatar answers a reduced profile (and at most 4 verified accounts); with one
//! (`api_key_env`, sent as `Authorization: Bearer`) it adds contact info and more.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::spec::{Deps, SourceConfig, Spec};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{Email, Identifier, PhoneE164, ProfileUrl};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "gravatar",
    schemes: super::spec::HTTP,
    defaults: || {
        SourceConfig::new("https://api.gravatar.com/v3", 2_000, 16, 0.7)
            .with_key_env("GRAVATAR_API_KEY")
    },
    build: |c: &SourceConfig, deps: &Deps| {
        let upstream = Upstream::new(deps.http.clone(), &c.base_url)
            .with_header("accept", "application/json")
            .with_secret("authorization", "Bearer ", c.api_key.clone());
        Arc::new(Gravatar { upstream })
    },
};

pub struct Gravatar {
    upstream: Upstream,
}

/// The fields of Gravatar's `Profile` object that enrichd reads; the rest is ignored.
#[derive(Debug, Deserialize)]
struct Profile {
    display_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    job_title: Option<String>,
    company: Option<String>,
    location: Option<String>,
    description: Option<String>,
    avatar_url: Option<String>,
    #[serde(default)]
    verified_accounts: Vec<VerifiedAccount>,
    contact_info: Option<ContactInfo>,
}

#[derive(Debug, Deserialize)]
struct VerifiedAccount {
    url: Option<String>,
    #[serde(default)]
    is_hidden: bool,
}

#[derive(Debug, Deserialize)]
struct ContactInfo {
    home_phone: Option<String>,
    work_phone: Option<String>,
    cell_phone: Option<String>,
    email: Option<String>,
}

impl Source for Gravatar {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::Email(_))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Identifier::Email(email) = id else {
                return Ok(Vec::new());
            };
            let path = format!("/profiles/{}", profile_hash(email));
            match self.upstream.get_json::<Profile>(&path).await? {
                Fetched::NotFound => Ok(Vec::new()),
                Fetched::Found(p) => Ok(observations(p)),
            }
        }
        .boxed()
    }
}

/// Gravatar identifies a profile by the hex SHA-256 of the trimmed, lower-cased address.
pub fn profile_hash(email: &Email) -> String {
    hex::encode(Sha256::digest(email.as_str().as_bytes()))
}

fn observations(p: Profile) -> Vec<Observation> {
    // Eight text fields, a few accounts and contacts.
    let mut out = Vec::with_capacity(12);
    let mut text = |field, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            out.push(Observation::new(field, v));
        }
    };
    text(Field::FullName, p.display_name);
    text(Field::FirstName, p.first_name);
    text(Field::LastName, p.last_name);
    text(Field::JobTitle, p.job_title);
    text(Field::CompanyName, p.company);
    text(Field::Location, p.location);
    text(Field::Bio, p.description);
    text(Field::Photo, p.avatar_url);
    for account in p.verified_accounts.into_iter().filter(|a| !a.is_hidden) {
        if let Some(url) = account.url.and_then(|u| ProfileUrl::parse(&u).ok()) {
            // Gravatar verified the account belongs to the address's owner.
            out.push(Observation::profile(url).verified());
        }
    }
    if let Some(c) = p.contact_info {
        for phone in [c.cell_phone, c.work_phone, c.home_phone]
            .into_iter()
            .flatten()
        {
            if let Ok(p) = PhoneE164::parse(&phone, None) {
                out.push(Observation::phone(p));
            }
        }
        if let Some(e) = c.email.and_then(|e| Email::parse(&e).ok()) {
            out.push(Observation::email(e));
        }
    }
    out
}

/// An answer body read as `lookup` reads it (for the fuzz targets).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Observation>, serde_json::Error> {
    serde_json::from_slice::<Profile>(body).map(observations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_normalised_email() {
        let e = Email::parse("  MyEmailAddress@example.com ").expect("valid");
        // The example from Gravatar's documentation.
        assert_eq!(
            profile_hash(&e),
            "84059b07d4be67b806386c0aad8070a23f18836bbaae342275dc0a83414c32ee"
        );
    }

    #[test]
    fn reads_documented_profile_fields() {
        let body = r#"{"hash":"x","display_name":"Ada Lovelace","profile_url":"https://gravatar.com/ada",
            "avatar_url":"https://0.gravatar.com/avatar/x","avatar_alt_text":"","location":"London",
            "description":"Analyst","job_title":"Mathematician","company":"Analytical Engines Ltd",
            "verified_accounts":[{"service_type":"github","service_label":"GitHub","service_icon":"i",
            "url":"https://github.com/ada","is_hidden":false},{"service_type":"x","service_label":"X",
            "service_icon":"i","url":"https://x.com/hidden","is_hidden":true}],"pronunciation":"","pronouns":"",
            "contact_info":{"cell_phone":"+44 20 7946 0958","email":"ada@work.example"}}"#;
        let p: Profile = serde_json::from_str(body).expect("documented shape parses");
        let obs = observations(p);
        let has = |f: Field, v: &str| obs.iter().any(|o| o.field == f && o.value == v);
        assert!(has(Field::FullName, "Ada Lovelace"));
        assert!(has(Field::JobTitle, "Mathematician"));
        assert!(has(Field::Profile, "https://github.com/ada"));
        assert!(
            !obs.iter().any(|o| o.value.text().contains("hidden")),
            "hidden accounts are not reported"
        );
        assert!(has(Field::Phone, "+442079460958"));
        assert!(has(Field::Email, "ada@work.example"));
    }
}
