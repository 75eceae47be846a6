use serde::Deserialize;

use super::{
    DomainName, Email, Identifier, Invalid, OrgName, PersonName, PhoneE164, ProfileUrl, Region,
};

/// What a client sent, before validation. Shared by the JSON body, the query string, the CLI and CSV rows.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub profile_url: Option<String>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub domain: Option<String>,
}

/// One invalid field of a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A validated lookup query: at least one personal identifier is present.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub email: Option<Email>,
    pub phone: Option<PhoneE164>,
    pub profile_url: Option<ProfileUrl>,
    pub name: Option<PersonName>,
    pub company: Option<OrgName>,
    pub domain: Option<DomainName>,
}

impl Query {
    /// Validates every field and reports all invalid ones at once.
    pub fn parse(input: &QueryInput, region: Option<Region>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut q = Query {
            email: check(&mut errors, "email", &input.email, Email::parse),
            phone: check(&mut errors, "phone", &input.phone, |s| {
                PhoneE164::parse(s, region)
            }),
            profile_url: check(
                &mut errors,
                "profile_url",
                &input.profile_url,
                ProfileUrl::parse,
            ),
            name: check(&mut errors, "name", &input.name, PersonName::parse),
            company: check(&mut errors, "company", &input.company, OrgName::parse),
            domain: check(&mut errors, "domain", &input.domain, DomainName::parse),
        };
        if q.name.is_none() {
            match (nonblank(&input.first_name), nonblank(&input.last_name)) {
                (Some(f), Some(l)) => {
                    q.name = check(&mut errors, "first_name", &input.first_name, |_| {
                        PersonName::from_parts(f, l)
                    });
                }
                (Some(_), None) => errors.push(FieldError::new(
                    "last_name",
                    "last_name is required with first_name",
                )),
                (None, Some(_)) => errors.push(FieldError::new(
                    "first_name",
                    "first_name is required with last_name",
                )),
                (None, None) => {}
            }
        }
        if errors.is_empty() && q.identifiers().iter().all(|i| !i.is_personal()) {
            let (field, message) = if q.name.is_some() {
                (
                    "name",
                    "a name alone is not an identifier: add company or domain",
                )
            } else {
                (
                    "email",
                    "at least one identifier is required: email, phone, profile_url, or name with company or domain",
                )
            };
            errors.push(FieldError::new(field, message));
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }

    /// The identifiers this query can be looked up by, personal ones first.
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut out = Vec::with_capacity(4);
        out.extend(self.email.clone().map(Identifier::Email));
        out.extend(self.phone.clone().map(Identifier::Phone));
        out.extend(self.profile_url.clone().map(Identifier::Profile));
        if let Some(name) = &self.name {
            out.extend(
                self.company
                    .clone()
                    .map(|c| Identifier::NameAtCompany(name.clone(), c)),
            );
            out.extend(
                self.domain
                    .clone()
                    .map(|d| Identifier::NameAtDomain(name.clone(), d)),
            );
        }
        out.extend(self.domain.clone().map(Identifier::Domain));
        out
    }
}

/// Parses one optional field; a blank value counts as absent, an invalid one is recorded.
fn check<T>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    raw: &Option<String>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    let raw = nonblank(raw)?;
    parse(raw)
        .map_err(|e| errors.push(FieldError::new(field, format!("{field} {e}"))))
        .ok()
}

fn nonblank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pairs: &[(&str, &str)]) -> QueryInput {
        let mut q = QueryInput::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "email" => q.email = v,
                "phone" => q.phone = v,
                "profile_url" => q.profile_url = v,
                "name" => q.name = v,
                "first_name" => q.first_name = v,
                "last_name" => q.last_name = v,
                "company" => q.company = v,
                "domain" => q.domain = v,
                other => panic!("unknown field {other}"),
            }
        }
        q
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<&'static str> {
        Query::parse(&input(pairs), None)
            .expect_err("should fail")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    /// Query pairs, then the fields the refusal must name.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn each_invalid_field_is_named() {
        let cases: [Case; 7] = [
            (&[("email", "nope")], &["email"]),
            (&[("email", "a@b.com"), ("phone", "12")], &["phone"]),
            (&[("profile_url", "ftp://x")], &["profile_url"]),
            (
                &[("email", "x"), ("phone", "y"), ("domain", "z")],
                &["email", "phone", "domain"],
            ),
            (&[("name", "Ada Lovelace")], &["name"]),
            (&[("domain", "example.com")], &["email"]),
            (
                &[("first_name", "Ada"), ("company", "Acme")],
                &["last_name"],
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(fields(pairs), want, "{pairs:?}");
        }
    }

    #[test]
    fn empty_query_needs_an_identifier() {
        assert_eq!(fields(&[]), ["email"]);
    }

    #[test]
    fn name_with_company_is_an_identifier() {
        let q = Query::parse(
            &input(&[
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("company", "Acme"),
            ]),
            None,
        )
        .expect("valid");
        let ids = q.identifiers();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].canonical(), "ada lovelace|acme");
    }

    #[test]
    fn blank_fields_are_ignored() {
        let q = Query::parse(
            &input(&[("email", "ada@example.com"), ("phone", "  ")]),
            None,
        )
        .expect("valid");
        assert!(q.phone.is_none());
    }
}
