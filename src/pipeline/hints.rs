//! What to tell a client whose lookup no source could take: every source `skipped` is otherwise
//! indistinguishable from "nobody knows this person". Depends only on the query's shape and the
//! sources configured, never on what any source answered or on the exclusion list, so it reads the
//! same for everyone queried the same way.

use crate::domain::{Identifier, IdentifierKind};
use crate::sources::provider::examples;

/// The hint for a lookup in which every source was skipped, naming what the query gave and the
/// example providers (`examples/providers.toml`) that could have been asked.
pub(super) fn nothing_asked(ids: &[Identifier]) -> String {
    let mut kinds: Vec<&str> = ids.iter().map(|id| words(id.kind())).collect();
    kinds.dedup();
    let given = kinds.join(" or ");
    let refs: Vec<&Identifier> = ids.iter().collect();
    let providers = examples::accepting(&refs);
    if providers.is_empty() {
        format!(
            "no enabled source can look up a {given}, so none was asked; add a [[providers]] entry \
             whose url uses what you have (examples/providers.toml shows the form), or give an \
             email address"
        )
    } else {
        format!(
            "no enabled source can look up a {given}, so none was asked; a bring-your-own-key \
             provider can: {} in examples/providers.toml (copy it into your config, set its key); \
             `enrichd sources` lists what is enabled",
            providers.join(", ")
        )
    }
}

fn words(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email address",
        IdentifierKind::Phone => "phone number",
        IdentifierKind::ProfileUrl => "profile URL",
        IdentifierKind::NameCompany => "name at a company",
        IdentifierKind::NameDomain => "name at a domain",
        IdentifierKind::Domain => "domain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrgName, PersonName, PhoneE164};

    #[test]
    fn a_phone_is_pointed_at_the_provider_that_takes_one() {
        let phone = Identifier::Phone(PhoneE164::parse("+33612345678", None).expect("phone"));
        assert_eq!(
            nothing_asked(&[phone]),
            "no enabled source can look up a phone number, so none was asked; a bring-your-own-key \
             provider can: pdl_person_by_phone in examples/providers.toml (copy it into your \
             config, set its key); `enrichd sources` lists what is enabled"
        );
    }

    #[test]
    fn a_name_at_a_company_names_its_kind() {
        let id = Identifier::NameAtCompany(
            PersonName::parse("Ada Lovelace").expect("name"),
            OrgName::parse("Analytical").expect("org"),
        );
        assert!(
            nothing_asked(&[id]).starts_with("no enabled source can look up a name at a company,")
        );
    }
}
