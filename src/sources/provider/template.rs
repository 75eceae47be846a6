//! URL and body templates: `{placeholder}` slots filled from one identifier.
//!
//! Values are percent-encoded in URLs (RFC 3986 unreserved characters kept) and placed as JSON strings in
//! bodies, so no identifier can change a request's structure. A template is filled only when every slot
//! it uses has a value.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::domain::Identifier;

/// A value a template can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placeholder {
    Email,
    Domain,
    FirstName,
    LastName,
    FullName,
    Company,
    Phone,
    ProfileUrl,
}

impl Placeholder {
    pub const ALL: [Self; 8] = [
        Self::Email,
        Self::Domain,
        Self::FirstName,
        Self::LastName,
        Self::FullName,
        Self::Company,
        Self::Phone,
        Self::ProfileUrl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Domain => "domain",
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::FullName => "full_name",
            Self::Company => "company",
            Self::Phone => "phone",
            Self::ProfileUrl => "profile_url",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The placeholder values one identifier provides.
#[derive(Default)]
pub struct Values([Option<String>; 8]);

impl Values {
    pub fn of(id: &Identifier) -> Self {
        let mut v = Self::default();
        match id {
            Identifier::Email(e) => {
                v.set(Placeholder::Email, e.as_str());
                v.set(Placeholder::Domain, e.domain());
            }
            Identifier::Phone(p) => v.set(Placeholder::Phone, p.as_str()),
            Identifier::Profile(p) => v.set(Placeholder::ProfileUrl, &p.to_url()),
            Identifier::NameAtCompany(n, c) => {
                v.set_name(n.as_str());
                v.set(Placeholder::Company, c.as_str());
            }
            Identifier::NameAtDomain(n, d) => {
                v.set_name(n.as_str());
                v.set(Placeholder::Domain, d.as_str());
            }
            Identifier::Domain(d) => v.set(Placeholder::Domain, d.as_str()),
        }
        v
    }

    pub fn set(&mut self, p: Placeholder, value: &str) {
        self.0[p as usize] = Some(value.to_string());
    }

    /// "Ada King Lovelace": first name "Ada", last name "King Lovelace". A one-word name has neither.
    fn set_name(&mut self, full: &str) {
        self.set(Placeholder::FullName, full);
        if let Some((first, last)) = full.split_once(' ') {
            self.set(Placeholder::FirstName, first);
            self.set(Placeholder::LastName, last.trim());
        }
    }

    pub fn get(&self, p: Placeholder) -> Option<&str> {
        self.0[p as usize].as_deref()
    }

    pub fn has_all(&self, wanted: &BTreeSet<Placeholder>) -> bool {
        wanted.iter().all(|p| self.get(*p).is_some())
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Slot(Placeholder),
}

/// A text with `{placeholder}` slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `raw`; the error names the unknown or unclosed placeholder.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "has a '{' without a closing '}'".to_string())?;
            let name = &after[..close];
            let slot = Placeholder::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Placeholder::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "uses unknown placeholder {{{name}}}; known placeholders are {}",
                    known.join(", ")
                )
            })?;
            pieces.push(Piece::Slot(slot));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self(pieces))
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.0.iter().filter_map(|p| match p {
            Piece::Slot(s) => Some(*s),
            Piece::Text(_) => None,
        })
    }

    /// The template with every slot filled through `encode`; `None` when a value is missing.
    pub fn fill(&self, values: &Values, encode: fn(&str) -> String) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(s) => out.push_str(&encode(values.get(*s)?)),
            }
        }
        Some(out)
    }

    /// The one slot this template is made of, if it is exactly `{placeholder}`.
    fn whole_slot(&self) -> Option<Placeholder> {
        match self.0.as_slice() {
            [Piece::Slot(s)] => Some(*s),
            _ => None,
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters: safe in a path segment and a query.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn verbatim(s: &str) -> String {
    s.to_string()
}

/// A JSON body whose string values may hold placeholders.
#[derive(Clone, Debug, PartialEq)]
pub enum BodyTemplate {
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
    Literal(Value),
}

impl BodyTemplate {
    pub fn parse(v: &Value) -> Result<Self, String> {
        Ok(match v {
            Value::String(s) => Self::Text(Template::parse(s)?),
            Value::Array(items) => {
                Self::Array(items.iter().map(Self::parse).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Self::Literal(other.clone()),
        })
    }

    pub fn placeholders(&self, into: &mut BTreeSet<Placeholder>) {
        match self {
            Self::Text(t) => into.extend(t.placeholders()),
            Self::Array(items) => items.iter().for_each(|i| i.placeholders(into)),
            Self::Object(fields) => fields.iter().for_each(|(_, v)| v.placeholders(into)),
            Self::Literal(_) => {}
        }
    }

    pub fn fill(&self, values: &Values) -> Option<Value> {
        Some(match self {
            Self::Text(t) => match t.whole_slot() {
                Some(s) => Value::String(values.get(s)?.to_string()),
                None => Value::String(t.fill(values, verbatim)?),
            },
            Self::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.fill(values))
                    .collect::<Option<_>>()?,
            ),
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.fill(values)?)))
                    .collect::<Option<_>>()?,
            ),
            Self::Literal(v) => v.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainName, Email, PersonName};

    fn name_at_domain(name: &str, domain: &str) -> Identifier {
        Identifier::NameAtDomain(
            PersonName::parse(name).expect("name"),
            DomainName::parse(domain).expect("domain"),
        )
    }

    #[test]
    fn fills_and_percent_encodes_url_slots() {
        let t = Template::parse("https://h/x?first={first_name}&last={last_name}&d={domain}")
            .expect("valid");
        let v = Values::of(&name_at_domain("Zoë Ann O'Brien", "example.com"));
        assert_eq!(
            t.fill(&v, percent_encode).as_deref(),
            Some("https://h/x?first=Zo%C3%AB&last=Ann%20O%27Brien&d=example.com")
        );
    }

    #[test]
    fn a_missing_value_leaves_the_template_unfilled() {
        let t = Template::parse("https://h/{email}").expect("valid");
        let v = Values::of(&name_at_domain("Ada Lovelace", "example.com"));
        assert_eq!(t.fill(&v, percent_encode), None);
    }

    #[test]
    fn parse_errors_name_the_placeholder() {
        let cases = [
            ("https://h/{emial}", "{emial}"),
            ("https://h/{email", "closing"),
        ];
        for (raw, needle) in cases {
            let err = Template::parse(raw).expect_err(raw);
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn identifiers_provide_their_values() {
        let email = Values::of(&Identifier::Email(
            Email::parse("ada@example.com").expect("e"),
        ));
        assert_eq!(email.get(Placeholder::Domain), Some("example.com"));
        assert_eq!(email.get(Placeholder::FirstName), None);
        let one_word = Values::of(&name_at_domain("Madonna", "example.com"));
        assert_eq!(one_word.get(Placeholder::FullName), Some("Madonna"));
        assert_eq!(one_word.get(Placeholder::LastName), None);
    }

    #[test]
    fn body_values_stay_json_strings() {
        let raw =
            serde_json::json!({"email": "{email}", "note": "for {email}", "n": 3, "flag": [true]});
        let body = BodyTemplate::parse(&raw).expect("valid");
        let v = Values::of(&Identifier::Email(
            Email::parse("o'brien+{x}@example.com").expect("braces are legal in a local part"),
        ));
        let filled = body.fill(&v).expect("filled");
        assert_eq!(filled["email"], "o'brien+{x}@example.com");
        assert_eq!(filled["note"], "for o'brien+{x}@example.com");
        assert_eq!(filled["n"], 3);
    }
}
