//! What sources report ([`Observation`]) and the merged, per-value sourced [`Profile`].
//!
//! Merging is pure: no I/O, no clock. It lives in [`merge`].

mod email_status;
mod merge;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

pub use email_status::{EmailStatus, annotate as annotate_emails};
pub use merge::merge;

use crate::domain::{DomainName, Email, Identifier, OrgName, PersonName, PhoneE164, ProfileUrl};

/// A profile field a source can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    FullName,
    FirstName,
    LastName,
    JobTitle,
    CompanyName,
    CompanyDomain,
    Location,
    Email,
    Phone,
    Profile,
    Photo,
    Bio,
    Website,
    /// A named fact that is not about the person (registrar, mail provider, ...).
    Fact(&'static str),
}

impl Field {
    /// Whether a value of this field says something about a person, and so makes a lookup `found`.
    /// An organisation's name, domain or web site, and named facts (mail server, registrar, site
    /// metadata), are about a company or a domain: they never turn a miss into a hit.
    pub fn is_personal(self) -> bool {
        !matches!(
            self,
            Self::CompanyName | Self::CompanyDomain | Self::Website | Self::Fact(_)
        )
    }

    /// Fields that hold a set of values rather than one value with alternatives.
    pub fn is_multi(self) -> bool {
        matches!(
            self,
            Self::Email | Self::Phone | Self::Profile | Self::Website
        )
    }
}

/// A value as a source reported it, typed when the source's answer was read: the identifiers the
/// fan-out follows and the exclusion list checks, and the names the list's name pairs are built from,
/// are parsed once there and carried, never parsed again from their text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An email, phone or profile URL.
    Id(Identifier),
    /// A person's full name.
    Name(PersonName),
    /// An organisation's name.
    Org(OrgName),
    /// A company's web domain.
    Domain(DomainName),
    Text(String),
}

impl Value {
    /// The value as an answer shows it (a profile URL with its scheme).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Id(Identifier::Profile(p)) => Cow::Owned(p.to_url()),
            Self::Id(id) => id.canonical_str(),
            Self::Name(n) => Cow::Borrowed(n.as_str()),
            Self::Org(o) => Cow::Borrowed(o.as_str()),
            Self::Domain(d) => Cow::Borrowed(d.as_str()),
            Self::Text(t) => Cow::Borrowed(t),
        }
    }

    /// The identifier this value is, for emails, phones and profile URLs.
    pub fn identifier(&self) -> Option<&Identifier> {
        match self {
            Self::Id(id) => Some(id),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::Text(t) if t.is_empty())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(Identifier::Profile(p)) => write!(f, "https://{}", p.canonical()),
            other => f.write_str(&other.text()),
        }
    }
}

/// Text, as given.
impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_string())
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.text() == *other
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Id(Identifier::Profile(_)) => serializer.collect_str(self),
            other => serializer.serialize_str(&other.text()),
        }
    }
}

/// One value one source reported: which field it is, the typed value, and what the source said
/// about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub field: Field,
    pub value: Value,
    /// Extra information about this value, e.g. an email's deliverability status.
    pub detail: Option<String>,
    /// The source bound this identifier to the one it was asked about through a link it verified
    /// (an account Gravatar verified, the address GitHub verified for the account it links a commit
    /// to, a key server's verified user ID, a Keybase proof), not merely a value someone typed. Only
    /// such identifiers widen an opt-out.
    pub verified: bool,
}

impl Observation {
    /// A value as a source's answer gives it, trimmed and parsed for its field: emails, phones and
    /// profile URLs become identifiers, full names and company names and domains their types; a
    /// value that does not parse, and every other field, is text.
    pub fn new(field: Field, value: impl Into<String>) -> Self {
        let mut text: String = value.into();
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            text = trimmed.to_string();
        }
        let value = match field {
            Field::Email => Email::parse(&text)
                .ok()
                .map(|e| Value::Id(Identifier::Email(e))),
            Field::Phone => PhoneE164::parse(&text, None)
                .ok()
                .map(|p| Value::Id(Identifier::Phone(p))),
            Field::Profile => ProfileUrl::parse(&text)
                .ok()
                .map(|p| Value::Id(Identifier::Profile(p))),
            Field::FullName => PersonName::parse(&text).ok().map(Value::Name),
            Field::CompanyName => OrgName::parse(&text).ok().map(Value::Org),
            Field::CompanyDomain => DomainName::parse(&text).ok().map(Value::Domain),
            _ => None,
        };
        Self {
            field,
            value: value.unwrap_or(Value::Text(text)),
            detail: None,
            verified: false,
        }
    }

    pub fn email(e: Email) -> Self {
        Self::of(Field::Email, Value::Id(Identifier::Email(e)))
    }

    pub fn phone(p: PhoneE164) -> Self {
        Self::of(Field::Phone, Value::Id(Identifier::Phone(p)))
    }

    pub fn profile(p: ProfileUrl) -> Self {
        Self::of(Field::Profile, Value::Id(Identifier::Profile(p)))
    }

    /// A company's domain, parsed already.
    pub fn domain(d: DomainName) -> Self {
        Self::of(Field::CompanyDomain, Value::Domain(d))
    }

    fn of(field: Field, value: Value) -> Self {
        Self {
            field,
            value,
            detail: None,
            verified: false,
        }
    }

    /// Marks the identifier as bound through a verified link (see [`Observation::verified`]).
    pub fn verified(mut self) -> Self {
        self.verified = true;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The identifier this value is, if it is one. The fan-out follows these and checks them against the
    /// exclusion list before any value is released.
    pub fn identifier(&self) -> Option<&Identifier> {
        self.value.identifier()
    }
}

/// Observations from one source, with the weight (prior reliability, 0..1) of that source.
#[derive(Clone, Debug)]
pub struct Reported<'a> {
    pub source: &'a str,
    pub weight: f64,
    pub observations: &'a [Observation],
}

/// One merged value: who reported it and how much to trust it.
///
/// Serialised as `{value, confidence, sources, detail?, status?, evidence?}`, the value as its text.
#[derive(Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct Sourced {
    #[schema(value_type = String)]
    pub value: Value,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence: f64,
    /// Source names, sorted. The list is shared by the values one source reported alone.
    #[schema(value_type = Vec<String>)]
    pub sources: Arc<[Arc<str>]>,
    pub detail: Option<String>,
    /// Emails only: what the lookup learned about the address.
    pub status: Option<EmailStatus>,
    /// Emails only: why `status` is what it is.
    pub evidence: Option<String>,
}

/// The best value for a single-valued field, and the conflicting ones, ranked.
///
/// Serialised as the best value's fields plus `alternatives` when there are any.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub best: Sourced,
    pub alternatives: Vec<Sourced>,
}

impl Sourced {
    fn field_count(&self) -> usize {
        3 + usize::from(self.detail.is_some())
            + usize::from(self.status.is_some())
            + usize::from(self.evidence.is_some())
    }

    fn serialize_fields<S: SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
        s.serialize_field("value", &self.value)?;
        s.serialize_field("confidence", &self.confidence)?;
        s.serialize_field("sources", &self.sources)?;
        if let Some(detail) = &self.detail {
            s.serialize_field("detail", detail)?;
        }
        if let Some(status) = &self.status {
            s.serialize_field("status", status)?;
        }
        if let Some(evidence) = &self.evidence {
            s.serialize_field("evidence", evidence)?;
        }
        Ok(())
    }
}

impl Serialize for Sourced {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Sourced", self.field_count())?;
        self.serialize_fields(&mut s)?;
        s.end()
    }
}

impl Serialize for Ranked {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let alternatives = !self.alternatives.is_empty();
        let len = self.best.field_count() + usize::from(alternatives);
        let mut s = serializer.serialize_struct("Ranked", len)?;
        self.best.serialize_fields(&mut s)?;
        if alternatives {
            s.serialize_field("alternatives", &self.alternatives)?;
        }
        s.end()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Company {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Ranked>,
}

/// The merged profile. Only built in memory, only released after the exclusion check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<Company>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Ranked>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Sourced>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Sourced>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Sourced>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio: Option<Ranked>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub websites: Vec<Sourced>,
    /// Kept apart from the person in an answer: see [`Facts`].
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = std::collections::BTreeMap<String, Ranked>)]
    pub facts: Facts,
}

/// The detail the address finder puts on the addresses it guesses from a name and a domain: a guess
/// no source confirmed is not a person found.
pub const CANDIDATE: &str = "candidate";

/// Named facts about a domain (mail server, registrar, site metadata, the contacts a site
/// publishes), by name.
pub type Facts = std::collections::BTreeMap<&'static str, Ranked>;

impl Profile {
    /// Whether the profile holds anything about a person ([`Field::is_personal`]; an address only
    /// guessed ([`CANDIDATE`]) is not): what makes a lookup `found`.
    pub fn about_a_person(&self) -> bool {
        [
            &self.name,
            &self.first_name,
            &self.last_name,
            &self.job_title,
            &self.location,
            &self.photo,
            &self.bio,
        ]
        .iter()
        .any(|v| v.is_some())
            || self
                .emails
                .iter()
                .any(|e| e.detail.as_deref() != Some(CANDIDATE))
            || !(self.phones.is_empty() && self.profiles.is_empty())
    }

    /// Every personal identifier the profile holds, each once: every email, phone and profile URL
    /// among its values (alternatives and facts included), and each name with each company name and
    /// domain. The exclusion check before release runs over exactly this set.
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut out: Vec<Identifier> = Vec::new();
        self.for_each_identifier(|id| {
            if !out.contains(id) {
                out.push(id.clone());
            }
        });
        out
    }

    /// Calls `visit` with each of [`identifiers`](Self::identifiers) (some more than once), borrowing
    /// those the profile holds.
    pub fn for_each_identifier(&self, mut visit: impl FnMut(&Identifier)) {
        for id in self.values().filter_map(|s| s.value.identifier()) {
            visit(id);
        }
        let Some(company) = &self.company else {
            return;
        };
        let names = self.name.iter().flat_map(Ranked::values);
        for name in names.filter_map(|n| match &n.value {
            Value::Name(n) => Some(n),
            _ => None,
        }) {
            let parts = [&company.name, &company.domain];
            for v in parts.into_iter().flatten().flat_map(Ranked::values) {
                match &v.value {
                    Value::Org(o) => visit(&Identifier::NameAtCompany(name.clone(), o.clone())),
                    Value::Domain(d) => visit(&Identifier::NameAtDomain(name.clone(), d.clone())),
                    _ => {}
                }
            }
        }
    }

    /// Every value the profile holds, alternatives and facts included.
    pub fn values(&self) -> impl Iterator<Item = &Sourced> {
        let ranked = [
            &self.name,
            &self.first_name,
            &self.last_name,
            &self.job_title,
            &self.location,
            &self.photo,
            &self.bio,
        ];
        let company = self
            .company
            .iter()
            .flat_map(|c| [&c.name, &c.domain])
            .flatten();
        ranked
            .into_iter()
            .flatten()
            .chain(company)
            .chain(self.facts.values())
            .flat_map(Ranked::values)
            .chain(&self.emails)
            .chain(&self.phones)
            .chain(&self.profiles)
            .chain(&self.websites)
    }
}

impl Ranked {
    /// The values `keep` accepts, the best of them first; `None` when it accepts none.
    pub fn retain(self, mut keep: impl FnMut(&Sourced) -> bool) -> Option<Self> {
        let mut kept = std::iter::once(self.best)
            .chain(self.alternatives)
            .filter(|v| keep(v));
        let best = kept.next()?;
        Some(Self {
            best,
            alternatives: kept.collect(),
        })
    }

    /// The best value, then the alternatives.
    pub fn values(&self) -> impl Iterator<Item = &Sourced> {
        std::iter::once(&self.best).chain(&self.alternatives)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sourced(value: &str, confidence: f64, sources: &[&str]) -> Sourced {
        Sourced {
            value: Value::Text(value.into()),
            confidence,
            sources: sources.iter().map(|s| Arc::from(*s)).collect(),
            detail: None,
            status: None,
            evidence: None,
        }
    }

    #[test]
    fn ranked_serialises_the_best_value_inline_and_alternatives_only_when_present() {
        let alone = Ranked {
            best: sourced("London", 0.7, &["github"]),
            alternatives: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&alone).ok().as_deref(),
            Some(r#"{"value":"London","confidence":0.7,"sources":["github"]}"#)
        );
        let contested = Ranked {
            best: Sourced {
                detail: Some("work".into()),
                ..sourced("London, UK", 0.377, &["gravatar"])
            },
            alternatives: vec![sourced("London", 0.277, &["github"])],
        };
        assert_eq!(
            serde_json::to_string(&contested).ok().as_deref(),
            Some(
                r#"{"value":"London, UK","confidence":0.377,"sources":["gravatar"],"detail":"work","alternatives":[{"value":"London","confidence":0.277,"sources":["github"]}]}"#
            )
        );
    }

    #[test]
    fn sourced_emails_carry_status_and_evidence_and_never_the_identifier() {
        let email = Sourced {
            status: Some(EmailStatus::Valid),
            evidence: Some("address known to gravatar".into()),
            ..sourced("a@example.com", 0.7, &["gravatar"])
        };
        assert_eq!(
            serde_json::to_string(&email).ok().as_deref(),
            Some(
                r#"{"value":"a@example.com","confidence":0.7,"sources":["gravatar"],"status":"valid","evidence":"address known to gravatar"}"#
            )
        );
    }
}
