//! What sources report ([`Observation`]) and the merged, per-value sourced [`Profile`].
//!
//! Merging is pure: no I/O, no clock. It lives in [`merge`].

mod email_status;
mod merge;

use serde::Serialize;

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
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub field: Field,
    pub value: String,
    /// Extra information about this value, e.g. an email's deliverability status.
    pub detail: Option<String>,
}

impl Observation {
    pub fn new(field: Field, value: impl Into<String>) -> Self {
        Self {
            field,
            value: value.into().trim().to_string(),
            detail: None,
        }
    }

    pub fn email(e: &Email) -> Self {
        Self::new(Field::Email, e.as_str())
    }

    pub fn phone(p: &PhoneE164) -> Self {
        Self::new(Field::Phone, p.as_str())
    }

    pub fn profile(p: &ProfileUrl) -> Self {
        Self::new(Field::Profile, p.to_url())
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The identifier this value is, if it is one. The fan-out follows these and checks them against the
    /// exclusion list before any value is released.
    pub fn identifier(&self) -> Option<Identifier> {
        match self.field {
            Field::Email => Email::parse(&self.value).ok().map(Identifier::Email),
            Field::Phone => PhoneE164::parse(&self.value, None)
                .ok()
                .map(Identifier::Phone),
            Field::Profile => ProfileUrl::parse(&self.value).ok().map(Identifier::Profile),
            _ => None,
        }
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
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sourced {
    pub value: String,
    pub confidence: f64,
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Emails only: what the lookup learned about the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<EmailStatus>,
    /// Emails only: why `status` is what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// The best value for a single-valued field, and the conflicting ones, ranked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    #[serde(flatten)]
    pub best: Sourced,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<Sourced>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Company {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Ranked>,
}

/// The merged profile. Only built in memory, only released after the exclusion check.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
    pub facts: std::collections::BTreeMap<&'static str, Ranked>,
}

impl Profile {
    /// Every personal identifier the profile holds: its emails, phones, profile URLs, and the best name
    /// with each company name and domain. The exclusion check runs over exactly this set.
    pub fn identifiers(&self) -> Vec<Identifier> {
        use crate::domain::{DomainName, OrgName, PersonName};
        let mut out: Vec<Identifier> = Vec::new();
        for (list, field) in [
            (&self.emails, Field::Email),
            (&self.phones, Field::Phone),
            (&self.profiles, Field::Profile),
        ] {
            out.extend(
                list.iter()
                    .filter_map(|s| Observation::new(field, s.value.clone()).identifier()),
            );
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
                    out.push(Identifier::NameAtCompany(name.clone(), c));
                }
                for d in company
                    .domain
                    .iter()
                    .flat_map(ranked_values)
                    .filter_map(|d| DomainName::parse(d).ok())
                {
                    out.push(Identifier::NameAtDomain(name.clone(), d));
                }
            }
        }
        out
    }
}

fn ranked_values(r: &Ranked) -> impl Iterator<Item = &str> {
    std::iter::once(r.best.value.as_str()).chain(r.alternatives.iter().map(|a| a.value.as_str()))
}
