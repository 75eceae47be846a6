use serde::{Deserialize, Serialize};

use super::{
    DomainName, Email, Identifier, Invalid, OrgName, PersonName, PhoneE164, ProfileUrl, Region,
};

/// What a client sent, before validation. Shared by the JSON body, the query string, the CLI and CSV rows
/// (request types flatten it in rather than repeat its fields).
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// International (`+44 20 7946 0958`), or national with `lookup.default_region` set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// A LinkedIn, GitHub, X or Keybase profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// One invalid field of a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    /// A sentence for API and command-line users; it names the field.
    pub message: String,
    /// What is wrong with the value itself, without the field's name (`must be an http or https
    /// URL`), so that a page for the public can put its own label in front. `None` for errors about
    /// the query as a whole (no identifier, a name alone).
    #[serde(skip)]
    pub problem: Option<String>,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            problem: None,
        }
    }

    /// A value that does not parse: `<field> <problem>`.
    fn value(field: &'static str, problem: Invalid) -> Self {
        Self {
            field,
            message: format!("{field} {problem}"),
            problem: Some(problem.0),
        }
    }
}

/// Cell and field values that stand for "nothing here" in exported spreadsheets and forms, compared
/// case-insensitively after trimming. Each is read as an empty field rather than as a value that
/// fails to parse. `na` is not among them: it is a surname.
const PLACEHOLDERS: [&str; 14] = [
    "-",
    "--",
    "\u{2013}",
    "\u{2014}",
    "?",
    "n/a",
    "n.a.",
    "#n/a",
    "none",
    "null",
    "nil",
    "unknown",
    "not available",
    "(blank)",
];

/// Whether a value is a placeholder for "no value" (`n/a`, `-`, `none`, `unknown`, `null`, `—`, ...).
pub fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    PLACEHOLDERS.iter().any(|p| value.eq_ignore_ascii_case(p))
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
    /// Validates every field and reports all invalid ones at once. Blank fields and placeholders
    /// ([`is_placeholder`]) count as absent; a query left with no identifier by a placeholder names
    /// that field.
    pub fn parse(input: &QueryInput, region: Option<Region>) -> Result<Self, Vec<FieldError>> {
        let (q, mut errors) = Self::parse_each(input, region);
        if errors.is_empty() && q.identifiers().iter().all(|i| !i.is_personal()) {
            if let Some((field, value)) = placeholder_field(input) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "{field} is '{value}', which stands for no value: give a real {field}, or \
                         another identifier (email, phone, profile_url, or name with company or domain)"
                    ),
                ));
                return Err(errors);
            }
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

    /// Every field parsed on its own: the query of the fields that are valid, and an error for each
    /// one that is not. A batch row's purge index takes the valid ones even when the row as a whole
    /// is refused (an invalid phone must not hide a valid email).
    pub fn parse_each(input: &QueryInput, region: Option<Region>) -> (Self, Vec<FieldError>) {
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
        (q, errors)
    }

    /// [`Query::parse`] for a row of a file, where one bad cell should not cost the whole row: fields
    /// that do not parse are left out when what remains still identifies someone, and come back as
    /// warnings. When nothing usable remains, the errors are those of [`Query::parse`].
    pub fn parse_usable(
        input: &QueryInput,
        region: Option<Region>,
    ) -> Result<(Self, Vec<FieldError>), Vec<FieldError>> {
        let errors = match Self::parse(input, region) {
            Ok(q) => return Ok((q, Vec::new())),
            Err(errors) => errors,
        };
        let mut usable = input.clone();
        for e in &errors {
            let slot = match e.field {
                "email" => &mut usable.email,
                "phone" => &mut usable.phone,
                "profile_url" => &mut usable.profile_url,
                "name" => &mut usable.name,
                "first_name" | "last_name" => {
                    usable.last_name = None;
                    &mut usable.first_name
                }
                "company" => &mut usable.company,
                "domain" => &mut usable.domain,
                _ => return Err(errors),
            };
            *slot = None;
        }
        match Self::parse(&usable, region) {
            Ok(q) => Ok((q, errors)),
            Err(_) => Err(errors),
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

/// Parses one optional field; a blank value or a placeholder counts as absent, an invalid one is
/// recorded.
fn check<T>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    raw: &Option<String>,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    let raw = nonblank(raw)?;
    parse(raw)
        .map_err(|e| errors.push(FieldError::value(field, e)))
        .ok()
}

fn nonblank(s: &Option<String>) -> Option<&str> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !is_placeholder(s))
}

/// The first identifier field holding a placeholder, with the placeholder as given.
fn placeholder_field(input: &QueryInput) -> Option<(&'static str, &str)> {
    [
        ("email", &input.email),
        ("phone", &input.phone),
        ("profile_url", &input.profile_url),
        ("name", &input.name),
        ("company", &input.company),
        ("domain", &input.domain),
    ]
    .into_iter()
    .find_map(|(field, v)| {
        let v = v.as_deref()?.trim();
        is_placeholder(v).then_some((field, v))
    })
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
    fn placeholders_are_read_as_empty_fields() {
        for placeholder in [
            "n/a", "N/A", " - ", "none", "unknown", "null", "\u{2014}", "#N/A",
        ] {
            let q = Query::parse(
                &input(&[("email", "ada@example.com"), ("phone", placeholder)]),
                None,
            )
            .unwrap_or_else(|e| panic!("{placeholder:?}: {e:?}"));
            assert!(q.phone.is_none(), "{placeholder:?}");
        }
        let q = Query::parse(
            &input(&[
                ("first_name", "Kim"),
                ("last_name", "Na"),
                ("company", "Acme"),
            ]),
            None,
        )
        .expect("Na is a surname, not a placeholder");
        assert_eq!(q.identifiers()[0].canonical(), "kim na|acme");
    }

    #[test]
    fn a_placeholder_as_the_only_identifier_is_named_without_parsing_it() {
        let errors = Query::parse(&input(&[("phone", "n/a")]), None).expect_err("no identifier");

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "phone");
        assert!(
            errors[0]
                .message
                .starts_with("phone is 'n/a', which stands for no value"),
            "{}",
            errors[0].message
        );
        assert!(
            !errors[0].message.contains("region"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_row_keeps_its_usable_identifiers_and_warns_about_the_rest() {
        let (q, warnings) = Query::parse_usable(
            &input(&[("email", "ada@example.com"), ("phone", "12")]),
            None,
        )
        .expect("the email is usable");
        assert!(q.email.is_some() && q.phone.is_none());
        assert_eq!(
            warnings.iter().map(|w| w.field).collect::<Vec<_>>(),
            ["phone"]
        );

        let (q, warnings) = Query::parse_usable(
            &input(&[("email", "ada@example.com"), ("first_name", "Ada")]),
            None,
        )
        .expect("a half name does not cost the email");
        assert!(q.name.is_none());
        assert_eq!(warnings[0].field, "last_name");

        let errors =
            Query::parse_usable(&input(&[("email", "nope"), ("name", "Ada Lovelace")]), None)
                .expect_err("a name alone is not enough");
        assert_eq!(
            errors.iter().map(|e| e.field).collect::<Vec<_>>(),
            ["email"]
        );
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
