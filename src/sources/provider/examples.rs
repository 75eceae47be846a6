//! The providers `examples/providers.toml` documents, compiled once: what a lookup's hint names when
//! no enabled source can use the identifiers it was given.

use std::sync::OnceLock;

use serde::Deserialize;

use super::config::{Compiled, ProviderConfig, validate};
use super::template::Values;
use crate::domain::Identifier;

const EXAMPLES: &str = include_str!("../../../examples/providers.toml");

#[derive(Deserialize)]
struct File {
    providers: Vec<ProviderConfig>,
}

fn compiled() -> &'static [Compiled] {
    static ONCE: OnceLock<Vec<Compiled>> = OnceLock::new();
    ONCE.get_or_init(|| {
        // The file is part of the binary and its parsing is tested below; an error here could only
        // come from an edit the test refuses, so it leaves the hint without names rather than failing.
        toml::from_str::<File>(EXAMPLES)
            .ok()
            .and_then(|f| validate(&f.providers).ok())
            .unwrap_or_default()
    })
}

/// The example providers that could be asked about one of `ids`, in the file's order.
pub fn accepting(ids: &[&Identifier]) -> Vec<&'static str> {
    compiled()
        .iter()
        .filter(|p| ids.iter().any(|id| Values::of(id).has_all(&p.placeholders)))
        .map(|p| p.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainName, Email, OrgName, PersonName, PhoneE164};

    #[test]
    fn examples_are_matched_by_the_placeholders_an_identifier_fills() {
        let name = || PersonName::parse("Ada Lovelace").expect("name");
        let email = Identifier::Email(Email::parse("ada@example.org").expect("email"));
        let at_company =
            Identifier::NameAtCompany(name(), OrgName::parse("Analytical").expect("org"));
        let at_domain =
            Identifier::NameAtDomain(name(), DomainName::parse("example.org").expect("domain"));
        let phone = Identifier::Phone(PhoneE164::parse("+33612345678", None).expect("phone"));

        let by_email = accepting(&[&email]);
        assert!(by_email.contains(&"hunter_person"), "{by_email:?}");
        assert!(!by_email.contains(&"hunter_email_finder"), "{by_email:?}");
        let by_domain = accepting(&[&at_domain]);
        assert!(by_domain.contains(&"hunter_email_finder"), "{by_domain:?}");
        assert!(!by_domain.contains(&"hunter_person"), "{by_domain:?}");
        assert_eq!(accepting(&[&phone]), ["pdl_person_by_phone"]);
        assert_eq!(accepting(&[&at_company]), ["pdl_person_by_name"]);
    }
}
