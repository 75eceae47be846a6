//! RDAP (RFC 9083) domain lookups: `GET /domain/{domain}` answers `application/rdap+json` with the
//! domain's entities (jCard `vcardArray`s with roles) and events. The default base URL, rdap.org,
//! redirects to the registry's own RDAP server.
//!
//! Reported as facts: `registrar`, `registered_on` (the "registration" event's date) and
//! `registrant_org`; the registrant organisation is also the company name unless it is a privacy or
//! redaction placeholder.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use super::spec::{Deps, HTTP, SourceConfig, Spec};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{Identifier, fold_text};
use crate::domain::{is_disposable, is_webmail};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "rdap",
    schemes: HTTP,
    defaults: || SourceConfig::new("https://rdap.org", 3_000, 30, 0.8),
    build: |c: &SourceConfig, deps: &Deps| {
        let upstream = Upstream::new(deps.http.clone(), &c.base_url)
            .with_header("accept", "application/rdap+json");
        Arc::new(Rdap { upstream })
    },
};

pub struct Rdap {
    upstream: Upstream,
}

/// The parts of an RDAP domain object enrichd reads.
#[derive(Debug, Deserialize)]
struct DomainObject {
    #[serde(rename = "objectClassName")]
    object_class_name: String,
    #[serde(default)]
    entities: Vec<Entity>,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Entity {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(rename = "vcardArray")]
    vcard_array: Option<Value>,
    #[serde(default)]
    entities: Vec<Entity>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "eventAction")]
    event_action: String,
    #[serde(rename = "eventDate")]
    event_date: Option<String>,
}

impl Source for Rdap {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn domain_only(&self) -> bool {
        true
    }

    fn accepts(&self, id: &Identifier) -> bool {
        target_domain(id).is_some()
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Some(domain) = target_domain(id) else {
                return Ok(Vec::new());
            };
            match self
                .upstream
                .get_json::<DomainObject>(&format!("/domain/{domain}"))
                .await?
            {
                Fetched::NotFound => Ok(Vec::new()),
                Fetched::Found(d) if d.object_class_name != "domain" => Err(
                    SourceError::Malformed("the RDAP answer is not a domain object".to_string()),
                ),
                Fetched::Found(d) => Ok(observations(&d)),
            }
        }
        .boxed()
    }
}

/// Registration data describes the organisation behind a domain; webmail domains say nothing about
/// the person.
fn target_domain(id: &Identifier) -> Option<&str> {
    let domain = match id {
        Identifier::Domain(d) | Identifier::NameAtDomain(_, d) => d.as_str(),
        Identifier::Email(e) => e.domain(),
        _ => return None,
    };
    (!is_webmail(domain) && !is_disposable(domain)).then_some(domain)
}

fn observations(d: &DomainObject) -> Vec<Observation> {
    let fact = |name: &'static str, value: &str| Observation::new(Field::Fact(name), value);
    let mut out = Vec::new();
    if let Some(registrar) = find_role(&d.entities, "registrar")
        .and_then(|e| vcard_text(e, "fn").or_else(|| vcard_text(e, "org")))
    {
        out.push(fact("registrar", &registrar));
    }
    if let Some(date) = d
        .events
        .iter()
        .find(|e| e.event_action == "registration")
        .and_then(|e| e.event_date.as_deref())
    {
        out.push(fact("registered_on", date.get(..10).unwrap_or(date)));
    }
    let registrant = find_role(&d.entities, "registrant")
        .and_then(|e| vcard_text(e, "org").or_else(|| vcard_text(e, "fn")))
        .filter(|org| !is_placeholder(org));
    if let Some(org) = registrant {
        out.push(fact("registrant_org", &org));
        out.push(Observation::new(Field::CompanyName, org).with_detail("domain registrant"));
    }
    out
}

/// The first entity with `role`, searching nested entities too.
fn find_role<'a>(entities: &'a [Entity], role: &str) -> Option<&'a Entity> {
    entities
        .iter()
        .find(|e| e.roles.iter().any(|r| r == role))
        .or_else(|| entities.iter().find_map(|e| find_role(&e.entities, role)))
}

/// The text value of a jCard property (`["fn", {}, "text", "Example Inc."]`); structured values
/// (`org` with units) are joined with ", ".
fn vcard_text(entity: &Entity, property: &str) -> Option<String> {
    let props = entity.vcard_array.as_ref()?.get(1)?.as_array()?;
    props.iter().find_map(|p| {
        let p = p.as_array()?;
        if p.first()?.as_str()? != property {
            return None;
        }
        let text = match p.get(3)? {
            Value::String(s) => s.trim().to_string(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            _ => return None,
        };
        (!text.is_empty()).then_some(text)
    })
}

/// Whether a registrant name is a privacy service or redaction placeholder rather than an organisation.
pub fn is_placeholder(org: &str) -> bool {
    const MARKERS: [&str; 14] = [
        "redacted",
        "privacy",
        "data protected",
        "not disclosed",
        "non public",
        "withheld",
        "proxy",
        "whoisguard",
        "identity protect",
        "contact protect",
        "gdpr",
        "masked",
        "statutory masking",
        "domain protection",
    ];
    let folded = fold_text(org);
    folded.is_empty() || MARKERS.iter().any(|m| folded.contains(m))
}

/// A domain object read as `lookup` reads it (for the fuzz targets).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Observation>, serde_json::Error> {
    serde_json::from_slice::<DomainObject>(body).map(|d| observations(&d))
}

#[cfg(test)]
#[path = "rdap_tests.rs"]
mod tests;
