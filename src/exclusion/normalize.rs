//! The exact text hashed for an identifier on the exclusion list.
//!
//! Pure: two spellings of the same person's identifier give the same text, so an opt-out given as
//! `Ada.Lovelace+news@GoogleMail.com` also blocks a lookup of `adalovelace@gmail.com`. The text is only
//! ever fed to the keyed hash; it is never stored, logged or returned.

use std::borrow::Cow;

use crate::domain::{Email, Identifier};

/// Mail domains whose local part ignores dots and `+tags`, folded to the first one.
const GMAIL_DOMAINS: [&str; 2] = ["gmail.com", "googlemail.com"];

/// The normalised text to hash for `id`, or `None` when it does not identify a person
/// ([`Identifier::Domain`] is never excluded on its own).
///
/// Borrowed when the identifier already holds that text: checks run on every lookup, so most of them
/// allocate nothing.
pub fn exclusion_text(id: &Identifier) -> Option<Cow<'_, str>> {
    match id {
        Identifier::Email(email) => Some(email_text(email)),
        Identifier::Phone(phone) => Some(Cow::Borrowed(phone.as_str())),
        Identifier::Profile(url) => Some(Cow::Borrowed(url.canonical())),
        Identifier::NameAtCompany(..) | Identifier::NameAtDomain(..) => Some(id.canonical_str()),
        Identifier::Domain(_) => None,
    }
}

/// Lower case (already done by [`Email::parse`]); for Gmail, dots and `+tag` dropped from the local part
/// and `googlemail.com` folded to `gmail.com`, since Gmail delivers all of those to one mailbox.
fn email_text(email: &Email) -> Cow<'_, str> {
    let (local, domain) = (email.local(), email.domain());
    if !GMAIL_DOMAINS.contains(&domain) {
        return Cow::Borrowed(email.as_str());
    }
    let base = local.split_once('+').map_or(local, |(base, _tag)| base);
    let base: String = base.chars().filter(|&c| c != '.').collect();
    Cow::Owned(format!("{base}@{}", GMAIL_DOMAINS[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainName, OrgName, PersonName, PhoneE164, ProfileUrl};

    fn email(raw: &str) -> Identifier {
        Identifier::Email(Email::parse(raw).expect("test email is valid"))
    }

    fn phone(raw: &str) -> Identifier {
        let fr = Some("FR".parse().expect("FR is a region"));
        Identifier::Phone(PhoneE164::parse(raw, fr).expect("test phone is valid"))
    }

    fn profile(raw: &str) -> Identifier {
        Identifier::Profile(ProfileUrl::parse(raw).expect("test profile URL is valid"))
    }

    fn name_at_company(name: &str, company: &str) -> Identifier {
        Identifier::NameAtCompany(
            PersonName::parse(name).expect("test name is valid"),
            OrgName::parse(company).expect("test company is valid"),
        )
    }

    fn name_at_domain(name: &str, domain: &str) -> Identifier {
        Identifier::NameAtDomain(
            PersonName::parse(name).expect("test name is valid"),
            DomainName::parse(domain).expect("test domain is valid"),
        )
    }

    #[test]
    fn spellings_of_one_identifier_give_one_text() {
        let cases: [(Identifier, &str); 28] = [
            (email("ada@example.com"), "ada@example.com"),
            (email("  Ada@Example.COM "), "ada@example.com"),
            (email("mailto:ADA@example.com"), "ada@example.com"),
            (
                email("ada.lovelace@example.com"),
                "ada.lovelace@example.com",
            ),
            (email("ada+news@example.com"), "ada+news@example.com"),
            (email("ada.lovelace@gmail.com"), "adalovelace@gmail.com"),
            (email("A.D.A.Lovelace@Gmail.com"), "adalovelace@gmail.com"),
            (email("adalovelace+crm@gmail.com"), "adalovelace@gmail.com"),
            (
                email("ada.love.lace+a+b@gmail.com"),
                "adalovelace@gmail.com",
            ),
            (
                email("ada.lovelace@googlemail.com"),
                "adalovelace@gmail.com",
            ),
            (
                email("AdaLovelace+x@GoogleMail.COM"),
                "adalovelace@gmail.com",
            ),
            (phone("+33 6 12 34 56 78"), "+33612345678"),
            (phone("0033612345678"), "+33612345678"),
            (phone("06.12.34.56.78"), "+33612345678"),
            (phone("+33 (0)6 12 34 56 78"), "+33612345678"),
            (
                profile("https://www.linkedin.com/in/Ada-Lovelace/"),
                "linkedin.com/in/ada-lovelace",
            ),
            (
                profile("fr.linkedin.com/in/ada-lovelace?trk=abc"),
                "linkedin.com/in/ada-lovelace",
            ),
            (
                profile("http://uk.linkedin.com/pub/ada-lovelace#x"),
                "linkedin.com/in/ada-lovelace",
            ),
            (profile("https://twitter.com/AdaL"), "x.com/adal"),
            (profile("mobile.twitter.com/adal/"), "x.com/adal"),
            (profile("https://x.com/ADAL?s=20"), "x.com/adal"),
            (profile("github.com/Octocat/"), "github.com/octocat"),
            (
                name_at_company("Zoë O'Brien", "ACME, Inc."),
                "zoe o brien|acme",
            ),
            (
                name_at_company("  ZOE   o brien", "Acme"),
                "zoe o brien|acme",
            ),
            (name_at_company("José María", "Café Ltd"), "jose maria|cafe"),
            (
                name_at_domain("Élodie Durand", "https://www.Example.com/"),
                "elodie durand|example.com",
            ),
            (
                name_at_domain("elodie  DURAND", "example.com"),
                "elodie durand|example.com",
            ),
            (
                name_at_domain("Ｅｌｏｄｉｅ Durand", "example.com"),
                "elodie durand|example.com",
            ),
        ];
        for (id, want) in cases {
            assert_eq!(exclusion_text(&id).as_deref(), Some(want), "{want}");
        }
    }

    #[test]
    fn gmail_folding_applies_to_gmail_only() {
        assert_eq!(
            exclusion_text(&email("ada.lovelace+x@example.com")).as_deref(),
            Some("ada.lovelace+x@example.com")
        );
        assert_eq!(
            exclusion_text(&email("ada.lovelace@gmail.co.uk")).as_deref(),
            Some("ada.lovelace@gmail.co.uk")
        );
    }

    #[test]
    fn distinct_people_keep_distinct_texts() {
        let (ada, adb) = (email("ada@gmail.com"), email("adb@gmail.com"));
        let a = exclusion_text(&ada);
        let b = exclusion_text(&adb);
        assert_ne!(a, b);
        let (acme, globex) = (
            name_at_company("Ada Lovelace", "Acme"),
            name_at_company("Ada Lovelace", "Globex"),
        );
        let x = exclusion_text(&acme);
        let y = exclusion_text(&globex);
        assert_ne!(x, y);
    }

    #[test]
    fn a_domain_alone_is_never_excluded() {
        let id = Identifier::Domain(DomainName::parse("example.com").expect("valid"));
        assert_eq!(exclusion_text(&id), None);
    }
}
