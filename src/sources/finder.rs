//! The email finder: from a person's name and a company domain, the usual address patterns ranked by
//! how common they are in company mailboxes. Pure: it calls nothing and never probes SMTP.
//!
//! As a source (`finder`, for name + domain queries) it reports the top [`REPORTED`] candidates as
//! `Email` values with detail `candidate`; the fan-out follows emails as hops, so other sources
//! (Gravatar, GitHub, OpenPGP...) confirm the ones that exist.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::spec::{Deps, SourceConfig, Spec};
use super::{Source, SourceError};
use crate::domain::{DomainName, Email, Identifier, PersonName, fold_text};
use crate::domain::{is_disposable, is_webmail};
use crate::profile::{Field, Observation};

/// How many candidates the source reports.
pub const REPORTED: usize = 3;

pub const SPEC: Spec = Spec {
    name: "finder",
    schemes: &[],
    defaults: || SourceConfig::new("", 100, 6_000, 0.2),
    build: |_c: &SourceConfig, _deps: &Deps| Arc::new(Finder),
};

/// Address patterns, most common first (`f`/`l` are initials).
pub const PATTERNS: [&str; 12] = [
    "first.last",
    "first",
    "flast",
    "firstlast",
    "f.last",
    "first_last",
    "firstl",
    "last",
    "last.first",
    "first-last",
    "lastf",
    "lastfirst",
];

/// One generated address and the pattern that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub email: Email,
    pub pattern: &'static str,
}

/// Particles that belong to the last name ("van der Berg" -> "vanderberg").
const PARTICLES: [&str; 12] = [
    "van", "der", "den", "de", "von", "da", "di", "du", "del", "la", "le", "dos",
];

/// First and last name as ASCII address parts: accents folded, punctuation dropped inside a word
/// ("Jean-Luc" -> "jeanluc", "O'Brien" -> "obrien"), particles kept with the last name.
pub fn name_parts(name: &PersonName) -> Option<(String, String)> {
    let words: Vec<String> = name
        .as_str()
        .split_whitespace()
        .map(|w| fold_text(w).replace(' ', ""))
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .collect();
    let (first, rest) = words.split_first()?;
    let last_at = rest.len().checked_sub(1)?;
    let mut start = last_at;
    while start > 0 && PARTICLES.contains(&rest[start - 1].as_str()) {
        start -= 1;
    }
    Some((first.clone(), rest[start..].concat()))
}

/// Every pattern's address for `name` at `domain`, most likely first, without duplicates.
pub fn candidates(name: &PersonName, domain: &DomainName) -> Vec<Candidate> {
    let Some((first, last)) = name_parts(name) else {
        return Vec::new();
    };
    let (f, l) = (&first[..1], &last[..1]);
    let mut out: Vec<Candidate> = Vec::new();
    for pattern in PATTERNS {
        let local = match pattern {
            "first.last" => format!("{first}.{last}"),
            "first" => first.clone(),
            "flast" => format!("{f}{last}"),
            "firstlast" => format!("{first}{last}"),
            "f.last" => format!("{f}.{last}"),
            "first_last" => format!("{first}_{last}"),
            "firstl" => format!("{first}{l}"),
            "last" => last.clone(),
            "last.first" => format!("{last}.{first}"),
            "first-last" => format!("{first}-{last}"),
            "lastf" => format!("{last}{f}"),
            _ => format!("{last}{first}"),
        };
        if let Ok(email) = Email::parse(&format!("{local}@{}", domain.as_str()))
            && !out.iter().any(|c| c.email == email)
        {
            out.push(Candidate { email, pattern });
        }
    }
    out
}

pub struct Finder;

impl Source for Finder {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn calls_nobody(&self) -> bool {
        true
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::NameAtDomain(_, d) if !is_webmail(d.as_str()) && !is_disposable(d.as_str()))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            if !self.accepts(id) {
                return Ok(Vec::new());
            }
            let Identifier::NameAtDomain(name, domain) = id else {
                return Ok(Vec::new());
            };
            Ok(candidates(name, domain)
                .into_iter()
                .take(REPORTED)
                .map(|c| Observation::new(Field::Email, c.email.as_str()).with_detail("candidate"))
                .collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PersonName {
        PersonName::parse(s).expect("valid name")
    }

    fn domain() -> DomainName {
        DomainName::parse("acme.example").expect("valid domain")
    }

    #[test]
    fn patterns_in_rank_order() {
        let got: Vec<(String, &str)> = candidates(&name("Ada Lovelace"), &domain())
            .into_iter()
            .map(|c| (c.email.local().to_string(), c.pattern))
            .collect();
        let want = [
            ("ada.lovelace", "first.last"),
            ("ada", "first"),
            ("alovelace", "flast"),
            ("adalovelace", "firstlast"),
            ("a.lovelace", "f.last"),
            ("ada_lovelace", "first_last"),
            ("adal", "firstl"),
            ("lovelace", "last"),
            ("lovelace.ada", "last.first"),
            ("ada-lovelace", "first-last"),
            ("lovelacea", "lastf"),
            ("lovelaceada", "lastfirst"),
        ];
        let want: Vec<(String, &str)> = want.iter().map(|(l, p)| (l.to_string(), *p)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn names_are_folded_to_address_parts() {
        let cases = [
            ("Élodie Martin", ("elodie", "martin")),
            ("Jean-Luc O'Brien", ("jeanluc", "obrien")),
            ("Katrin  Schäfer", ("katrin", "schafer")),
            ("Ada King Lovelace", ("ada", "lovelace")),
            ("Pieter van der Berg", ("pieter", "vanderberg")),
            ("José María García", ("jose", "garcia")),
        ];
        for (raw, (first, last)) in cases {
            assert_eq!(
                name_parts(&name(raw)),
                Some((first.to_string(), last.to_string())),
                "{raw}"
            );
        }
        assert_eq!(name_parts(&name("Madonna")), None, "one word is not enough");
    }

    #[tokio::test]
    async fn source_reports_top_three_as_candidates() {
        let id = Identifier::NameAtDomain(name("Élodie Martin"), domain());
        let obs = Finder.lookup(&id).await.expect("pure");
        let values: Vec<String> = obs.iter().map(|o| o.value.to_string()).collect();
        assert_eq!(
            values,
            [
                "elodie.martin@acme.example",
                "elodie@acme.example",
                "emartin@acme.example"
            ]
        );
        assert!(
            obs.iter()
                .all(|o| o.field == Field::Email && o.detail.as_deref() == Some("candidate"))
        );
    }

    #[test]
    fn webmail_domains_and_other_identifiers_are_not_accepted() {
        let gmail = DomainName::parse("gmail.com").expect("valid");
        assert!(!Finder.accepts(&Identifier::NameAtDomain(name("Ada Lovelace"), gmail)));
        assert!(!Finder.accepts(&Identifier::Domain(domain())));
        assert!(Finder.accepts(&Identifier::NameAtDomain(name("Ada Lovelace"), domain())));
    }
}
