//! Email status: what the lookup learned about each address, and the evidence, without SMTP probing.
//!
//! Rules, first match wins:
//! 1. a paid provider reported a verification status from its vocabulary (Hunter's is the same): that;
//! 2. the domain is on the disposable list: `disposable`;
//! 3. a source other than the finder reported the address (a Gravatar profile, a signed commit, a
//!    published key, a provider's record): `valid`;
//! 4. DNS says the address's domain accepts no mail: `invalid`;
//! 5. the domain is a webmail provider: `webmail`;
//! 6. otherwise `unknown` (a finder's unconfirmed guess says which pattern made it).
//!
//! `accept_all` needs an SMTP conversation, which enrichd never starts; it appears only when a provider
//! reports it.

use serde::Serialize;

use super::{Profile, Sourced};
use crate::domain::Identifier;
use crate::domain::{is_disposable, is_webmail};

/// The finder's name; its addresses are guesses until another source confirms one.
const FINDER: &str = "finder";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmailStatus {
    Valid,
    Invalid,
    AcceptAll,
    Webmail,
    Disposable,
    Unknown,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::AcceptAll => "accept_all",
            Self::Webmail => "webmail",
            Self::Disposable => "disposable",
            Self::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Valid,
            Self::Invalid,
            Self::AcceptAll,
            Self::Webmail,
            Self::Disposable,
            Self::Unknown,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Sets `status` and `evidence` on every email of `profile`.
pub fn annotate(profile: &mut Profile) {
    let no_mail_domain = domain_without_mail(profile);
    for email in &mut profile.emails {
        let (status, evidence) = judge(email, no_mail_domain.as_deref());
        email.status = Some(status);
        email.evidence = Some(evidence);
    }
}

/// The domain DNS found accepting no mail, when the profile's addresses share that one domain (the
/// DNS facts are per lookup, not per address).
fn domain_without_mail(profile: &Profile) -> Option<String> {
    let accepts = profile.facts.get("accepts_mail")?;
    if accepts.best.value != "false" {
        return None;
    }
    let mut domains = profile.emails.iter().filter_map(domain_of);
    let first = domains.next()?;
    domains.all(|d| d == first).then(|| first.to_string())
}

/// The domain of an email value.
fn domain_of(email: &Sourced) -> Option<&str> {
    match email.value.identifier() {
        Some(Identifier::Email(e)) => Some(e.domain()),
        _ => None,
    }
}

fn judge(email: &Sourced, no_mail_domain: Option<&str>) -> (EmailStatus, String) {
    let domain = domain_of(email).unwrap_or("");
    let confirming: Vec<&str> = email
        .sources
        .iter()
        .map(|s| &**s)
        .filter(|s| *s != FINDER)
        .collect();
    if let Some(reported) = email.detail.as_deref().and_then(EmailStatus::parse) {
        return (
            reported,
            format!("reported by {}", email.sources.join(", ")),
        );
    }
    if is_disposable(domain) {
        return (
            EmailStatus::Disposable,
            format!("{domain} is a disposable-address domain"),
        );
    }
    if !confirming.is_empty() {
        return (
            EmailStatus::Valid,
            format!("address known to {}", confirming.join(", ")),
        );
    }
    if no_mail_domain == Some(domain) {
        return (
            EmailStatus::Invalid,
            format!("{domain} accepts no mail (DNS)"),
        );
    }
    if is_webmail(domain) {
        return (
            EmailStatus::Webmail,
            format!("{domain} is a webmail provider"),
        );
    }
    let evidence = match email.detail.as_deref() {
        Some("candidate") => "a likely address pattern, not confirmed by any source".to_string(),
        _ => "not confirmed by any source".to_string(),
    };
    (EmailStatus::Unknown, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Field, Observation, Ranked};

    fn email(value: &str, sources: &[&str], detail: Option<&str>) -> Sourced {
        Sourced {
            value: Observation::new(Field::Email, value).value,
            confidence: 0.5,
            sources: sources.iter().map(|s| std::sync::Arc::from(*s)).collect(),
            detail: detail.map(str::to_string),
            status: None,
            evidence: None,
        }
    }

    fn statuses(profile: &mut Profile) -> Vec<EmailStatus> {
        annotate(profile);
        profile.emails.iter().filter_map(|e| e.status).collect()
    }

    #[test]
    fn each_rule_in_order() {
        let mut p = Profile {
            emails: vec![
                email("ada@acme.example", &["hunter"], Some("accept_all")),
                email("x@mailinator.com", &["gravatar"], None),
                email(
                    "ada@acme.example",
                    &["gravatar", "finder"],
                    Some("candidate"),
                ),
                email("ada.l@gmail.com", &["finder"], None),
                email("a.lovelace@acme.example", &["finder"], Some("candidate")),
            ],
            ..Profile::default()
        };
        assert_eq!(
            statuses(&mut p),
            [
                EmailStatus::AcceptAll,
                EmailStatus::Disposable,
                EmailStatus::Valid,
                EmailStatus::Webmail,
                EmailStatus::Unknown
            ]
        );
        assert_eq!(
            p.emails[2].evidence.as_deref(),
            Some("address known to gravatar")
        );
        assert_eq!(
            p.emails[4].evidence.as_deref(),
            Some("a likely address pattern, not confirmed by any source")
        );
    }

    #[test]
    fn a_domain_without_mail_makes_its_guesses_invalid() {
        let mut p = Profile {
            emails: vec![email("ada@gone.example", &["finder"], Some("candidate"))],
            ..Profile::default()
        };
        p.facts.insert(
            "accepts_mail",
            Ranked {
                best: email("false", &["dns"], None),
                alternatives: Vec::new(),
            },
        );
        assert_eq!(statuses(&mut p), [EmailStatus::Invalid]);
    }
}
