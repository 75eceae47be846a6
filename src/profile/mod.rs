//! What sources report ([`Observation`]) and the merged, per-value sourced [`Profile`].
//!
//! Merging is pure: no I/O, no clock. It lives in [`merge`].

mod email_status;
mod merge;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

pub use email_status::{EmailStatus, annotate as annotate_emails};
pub use merge::merge;

use crate::domain::{Email, Identifier, PhoneE164, ProfileUrl};

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
    /// Fields that hold a set of values rather than one value with alternatives.
    pub fn is_multi(self) -> bool {
        matches!(
            self,
            Self::Email | Self::Phone | Self::Profile | Self::Website
        )
    }
}

/// One value one source reported. Identifier-like values (email, phone, profile) are canonical already.
///
/// The fields are read-only in practice: nothing changes an observation once built, because the
/// identifier a value is gets parsed once, when it is built, and kept beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub field: Field,
    pub value: String,
    /// Extra information about this value, e.g. an email's deliverability status.
    pub detail: Option<String>,
    /// The identifier `value` is, for email, phone and profile fields that parse as one. Boxed: most
    /// values are not identifiers, and inline it would make every observation 128 bytes instead of 80.
    id: Option<Box<Identifier>>,
}

// A source's answer of a dozen values stays within 1 KiB: see `gravatar::observations`.
const _: () = assert!(std::mem::size_of::<Observation>() <= 80);

impl Observation {
    pub fn new(field: Field, value: impl Into<String>) -> Self {
        let mut value: String = value.into();
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            value = trimmed.to_string();
        }
        let id = identifier_of(field, &value).map(Box::new);
        Self {
            field,
            value,
            detail: None,
            id,
        }
    }

    /// An observation of an identifier already parsed: nothing to parse again.
    fn of(field: Field, value: String, id: Identifier) -> Self {
        Self {
            field,
            value,
            detail: None,
            id: Some(Box::new(id)),
        }
    }

    pub fn email(e: &Email) -> Self {
        Self::of(
            Field::Email,
            e.as_str().to_string(),
            Identifier::Email(e.clone()),
        )
    }

    pub fn phone(p: &PhoneE164) -> Self {
        Self::of(
            Field::Phone,
            p.as_str().to_string(),
            Identifier::Phone(p.clone()),
        )
    }

    pub fn profile(p: &ProfileUrl) -> Self {
        Self::of(Field::Profile, p.to_url(), Identifier::Profile(p.clone()))
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The identifier this value is, if it is one. The fan-out follows these and checks them against the
    /// exclusion list before any value is released.
    pub fn identifier(&self) -> Option<&Identifier> {
        self.id.as_deref()
    }
}

/// The identifier a trimmed `field` value is, for email, phone and profile fields that parse as one.
fn identifier_of(field: Field, value: &str) -> Option<Identifier> {
    match field {
        Field::Email => Email::parse(value).ok().map(Identifier::Email),
        Field::Phone => PhoneE164::parse(value, None).ok().map(Identifier::Phone),
        Field::Profile => ProfileUrl::parse(value).ok().map(Identifier::Profile),
        _ => None,
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
/// Serialised as `{value, confidence, sources, detail?, status?, evidence?}`; the identifier stays
/// in memory.
#[derive(Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct Sourced {
    pub value: String,
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
    /// The identifier `value` is (emails, phones, profiles), as the merge found it; never serialised.
    #[schema(ignore)]
    pub id: Option<Identifier>,
}

/// The best value for a single-valued field, and the conflicting ones, ranked.
///
/// Serialised as the best value's fields plus `alternatives` when there are any (written by hand:
/// serde's `flatten` buffers every field of the best value first, on every answer).
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
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = std::collections::BTreeMap<String, Ranked>)]
    pub facts: std::collections::BTreeMap<&'static str, Ranked>,
}

impl Profile {
    /// Every personal identifier the profile holds: its emails, phones, profile URLs, and the best name
    /// with each company name and domain. The exclusion check runs over exactly this set.
    pub fn identifiers(&self) -> Vec<Identifier> {
        self.identifiers_borrowed()
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    /// [`identifiers`](Self::identifiers), borrowing those the profile holds already (the exclusion
    /// check before release only reads them).
    pub fn identifiers_borrowed(&self) -> Vec<Cow<'_, Identifier>> {
        use crate::domain::{DomainName, OrgName, PersonName};
        let mut out: Vec<Cow<'_, Identifier>> = Vec::new();
        for (list, field) in [
            (&self.emails, Field::Email),
            (&self.phones, Field::Phone),
            (&self.profiles, Field::Profile),
        ] {
            out.extend(list.iter().filter_map(|s| s.identifier_borrowed(field)));
        }
        let names = self.name.iter().flat_map(ranked_values);
        for name in names.filter_map(|n| PersonName::parse(n).ok()) {
            if let Some(company) = &self.company {
                for c in company
                    .name
                    .iter()
                    .flat_map(ranked_values)
                    .filter_map(|c| OrgName::parse(c).ok())
                {
                    out.push(Cow::Owned(Identifier::NameAtCompany(name.clone(), c)));
                }
                for d in company
                    .domain
                    .iter()
                    .flat_map(ranked_values)
                    .filter_map(|d| DomainName::parse(d).ok())
                {
                    out.push(Cow::Owned(Identifier::NameAtDomain(name.clone(), d)));
                }
            }
        }
        out
    }
}

impl Sourced {
    /// The identifier this value is as a `field` value: the one the merge kept, else parsed from the
    /// value (a `Sourced` built elsewhere, e.g. in tests, carries none).
    pub fn identifier(&self, field: Field) -> Option<Identifier> {
        self.identifier_borrowed(field).map(Cow::into_owned)
    }

    /// [`identifier`](Self::identifier), borrowed when the merge kept one.
    pub fn identifier_borrowed(&self, field: Field) -> Option<Cow<'_, Identifier>> {
        match &self.id {
            Some(id) => Some(Cow::Borrowed(id)),
            None => identifier_of(field, self.value.trim()).map(Cow::Owned),
        }
    }
}

fn ranked_values(r: &Ranked) -> impl Iterator<Item = &str> {
    std::iter::once(r.best.value.as_str()).chain(r.alternatives.iter().map(|a| a.value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sourced(value: &str, confidence: f64, sources: &[&str]) -> Sourced {
        Sourced {
            value: value.into(),
            confidence,
            sources: sources.iter().map(|s| Arc::from(*s)).collect(),
            detail: None,
            status: None,
            evidence: None,
            id: None,
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
            id: Email::parse("a@example.com").ok().map(Identifier::Email),
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
