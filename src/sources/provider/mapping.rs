//! The `fields` table: profile fields read from an answer through RFC 6901 JSON pointers.
//!
//! A pointer may end at a string, a number, or an array of strings (each element is one value). Values
//! are checked by kind: emails, phones and profile URLs must parse, and so must photo and website URLs;
//! anything that does not is dropped rather than reported.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{DomainName, Email, PhoneE164, ProfileUrl};
use crate::profile::{Field, Observation};

/// The field names a `fields` table may use.
pub const FIELD_NAMES: [&str; 16] = [
    "full_name",
    "first_name",
    "last_name",
    "job_title",
    "company",
    "company_domain",
    "location",
    "email",
    "phone",
    "linkedin",
    "profile_url",
    "photo",
    "bio",
    "website",
    "twitter",
    "email_status",
];

/// Verdicts an `email_status` pointer may yield (Hunter's vocabulary, which enrichd reports too).
const EMAIL_STATUSES: [&str; 6] = [
    "valid",
    "invalid",
    "accept_all",
    "webmail",
    "disposable",
    "unknown",
];

/// Free text values longer than this are not a name or a title: dropped.
const MAX_TEXT: usize = 2_000;

/// One pointer or several for the same field.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Pointers {
    One(String),
    Many(Vec<String>),
}

impl Pointers {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Many(ps) => ps,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text(Field),
    Email,
    Phone,
    Profile,
    Linkedin,
    Twitter,
    Domain,
    Url(Field),
    /// Not a value: the provider's verdict on the email(s) it reported, attached as their detail.
    EmailStatus,
}

/// One row of the `fields` table, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldMap {
    kind: Kind,
    pointers: Vec<String>,
}

impl FieldMap {
    /// Checks a field name and its pointers; the error says what is wrong with which.
    pub fn parse(name: &str, pointers: &Pointers) -> Result<Self, String> {
        let kind = match name {
            "full_name" => Kind::Text(Field::FullName),
            "first_name" => Kind::Text(Field::FirstName),
            "last_name" => Kind::Text(Field::LastName),
            "job_title" => Kind::Text(Field::JobTitle),
            "company" => Kind::Text(Field::CompanyName),
            "location" => Kind::Text(Field::Location),
            "bio" => Kind::Text(Field::Bio),
            "company_domain" => Kind::Domain,
            "email" => Kind::Email,
            "phone" => Kind::Phone,
            "linkedin" => Kind::Linkedin,
            "twitter" => Kind::Twitter,
            "profile_url" => Kind::Profile,
            "photo" => Kind::Url(Field::Photo),
            "website" => Kind::Url(Field::Website),
            "email_status" => Kind::EmailStatus,
            other => {
                return Err(format!(
                    "'{other}' is not a profile field; known fields are {}",
                    FIELD_NAMES.join(", ")
                ));
            }
        };
        let pointers = pointers.as_slice().to_vec();
        if pointers.is_empty() {
            return Err(format!("'{name}' lists no JSON pointer"));
        }
        if let Some(bad) = pointers.iter().find(|p| !p.starts_with('/')) {
            return Err(format!(
                "'{name}' has '{bad}', which is not a JSON pointer (RFC 6901: it starts with '/')"
            ));
        }
        Ok(Self { kind, pointers })
    }

    /// The values this field takes in `doc`.
    fn read(&self, doc: &Value, out: &mut Vec<Observation>) {
        if self.kind == Kind::EmailStatus {
            return;
        }
        for pointer in &self.pointers {
            for raw in strings_at(doc.pointer(pointer)) {
                if let Some(o) = self.observe(raw.trim())
                    && !out.contains(&o)
                {
                    out.push(o);
                }
            }
        }
    }

    fn observe(&self, v: &str) -> Option<Observation> {
        if v.is_empty() {
            return None;
        }
        match self.kind {
            Kind::Text(field) => {
                (v.chars().count() <= MAX_TEXT).then(|| Observation::new(field, v))
            }
            Kind::Email => Email::parse(v).ok().map(Observation::email),
            Kind::Phone => PhoneE164::parse(v, None).ok().map(Observation::phone),
            Kind::Profile => ProfileUrl::parse(v).ok().map(Observation::profile),
            Kind::Linkedin => ProfileUrl::parse(&linkedin_url(v))
                .ok()
                .map(Observation::profile),
            Kind::Twitter => ProfileUrl::parse(&twitter_url(v))
                .ok()
                .map(Observation::profile),
            Kind::Domain => {
                domain_of(v).map(|d| Observation::new(Field::CompanyDomain, d.as_str()))
            }
            Kind::Url(field) => url::Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .map(|u| Observation::new(field, u.as_str())),
            Kind::EmailStatus => None,
        }
    }
}

/// Reads every field of `mappings` from `doc`. No value found is a miss (an empty list).
pub fn observations(mappings: &[FieldMap], doc: &Value) -> Vec<Observation> {
    let mut out = Vec::new();
    for m in mappings {
        m.read(doc, &mut out);
    }
    let verdict = mappings
        .iter()
        .filter(|m| m.kind == Kind::EmailStatus)
        .flat_map(|m| m.pointers.iter())
        .flat_map(|p| strings_at(doc.pointer(p)))
        .map(|v| v.trim().to_ascii_lowercase())
        .find(|v| EMAIL_STATUSES.contains(&v.as_str()));
    if let Some(verdict) = verdict {
        for o in out.iter_mut().filter(|o| o.field == Field::Email) {
            o.detail = Some(verdict.clone());
        }
    }
    out
}

fn strings_at(v: Option<&Value>) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// APIs give LinkedIn as a URL, a host-relative path (`linkedin.com/in/x`), a handle path (`in/x`)
/// or a bare slug.
fn linkedin_url(v: &str) -> String {
    if v.contains("linkedin.com") {
        v.to_string()
    } else if v.starts_with("in/") || v.starts_with("pub/") {
        format!("linkedin.com/{v}")
    } else {
        format!("linkedin.com/in/{v}")
    }
}

/// X/Twitter as a URL or a handle, with or without `@`.
fn twitter_url(v: &str) -> String {
    if v.contains("twitter.com") || v.contains("x.com") {
        v.to_string()
    } else {
        format!("x.com/{}", v.trim_start_matches('@'))
    }
}

/// `acme.com`, `www.acme.com` or `https://www.acme.com/about` all name the domain `acme.com`.
fn domain_of(v: &str) -> Option<DomainName> {
    let host = v
        .split_once("://")
        .map_or(v, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()?;
    let host = host.strip_prefix("www.").unwrap_or(host);
    DomainName::parse(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, pointers: &[&str]) -> FieldMap {
        let ps = Pointers::Many(pointers.iter().map(|p| p.to_string()).collect());
        FieldMap::parse(name, &ps).expect("valid mapping")
    }

    #[test]
    fn an_email_status_verdict_becomes_the_emails_detail() {
        let doc = serde_json::json!({"data": {"email": "ada@acme.example",
            "verification": {"status": "Accept_All"}}});
        let maps = [
            map("email", &["/data/email"]),
            map("email_status", &["/data/verification/status"]),
        ];
        let got = observations(&maps, &doc);
        assert_eq!(got.len(), 1, "the verdict is not a value of its own");
        assert_eq!(got[0].detail.as_deref(), Some("accept_all"));
        let odd = serde_json::json!({"data": {"email": "ada@acme.example",
            "verification": {"status": "probably"}}});
        assert_eq!(
            observations(&maps, &odd)[0].detail,
            None,
            "unknown verdicts are dropped"
        );
    }

    #[test]
    fn values_are_read_and_checked_by_kind() {
        let doc = serde_json::json!({"d": {
            "name": " Ada Lovelace ", "emails": ["ADA@Example.com", "not an email"],
            "phone": "+44 20 7946 0958", "li": "in/ada-lovelace", "tw": "@ada",
            "site": "https://www.engines.example/about", "photo": "javascript:alert(1)",
            "score": 97, "nothing": null
        }});
        let cases: [(&str, &str, Vec<&str>); 8] = [
            ("full_name", "/d/name", vec!["Ada Lovelace"]),
            ("email", "/d/emails", vec!["ada@example.com"]),
            ("phone", "/d/phone", vec!["+442079460958"]),
            (
                "linkedin",
                "/d/li",
                vec!["https://linkedin.com/in/ada-lovelace"],
            ),
            ("twitter", "/d/tw", vec!["https://x.com/ada"]),
            ("company_domain", "/d/site", vec!["engines.example"]),
            ("photo", "/d/photo", vec![]),
            ("job_title", "/d/nothing", vec![]),
        ];
        for (field, pointer, expected) in cases {
            let got: Vec<String> = observations(&[map(field, &[pointer])], &doc)
                .into_iter()
                .map(|o| o.value.to_string())
                .collect();
            assert_eq!(got, expected, "{field} at {pointer}");
        }
    }

    #[test]
    fn several_pointers_add_values_without_duplicates() {
        let doc =
            serde_json::json!({"work": "a@x.example", "personal": ["b@y.example", "a@x.example"]});
        let got = observations(&[map("email", &["/work", "/personal"])], &doc);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn bad_rows_are_explained() {
        let cases = [
            (
                "jobtitle",
                Pointers::One("/x".into()),
                "not a profile field",
            ),
            ("email", Pointers::One("data.email".into()), "RFC 6901"),
            ("email", Pointers::Many(vec![]), "no JSON pointer"),
        ];
        for (name, ps, needle) in cases {
            let err = FieldMap::parse(name, &ps).expect_err(name);
            assert!(err.contains(needle), "{name}: {err}");
        }
    }
}
