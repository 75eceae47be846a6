//! The fields a lookup wants found: the waterfall's stopping rule.
//!
//! Free sources always run; paid providers run one at a time, in their configured order, only while a
//! wanted field is still missing. A field counts as found when the query itself holds it or a source
//! reported it; a finder's unconfirmed guess (detail `candidate`) does not count.

use std::fmt;

use crate::domain::Identifier;
use crate::profile::{Field, Observation};

/// A field a lookup may ask for (`want: ["email", "phone"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Want {
    Email,
    Phone,
    Name,
    JobTitle,
    Company,
    Location,
    Profile,
    Photo,
}

impl Want {
    pub const ALL: [Want; 8] = [
        Self::Email,
        Self::Phone,
        Self::Name,
        Self::JobTitle,
        Self::Company,
        Self::Location,
        Self::Profile,
        Self::Photo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Name => "name",
            Self::JobTitle => "job_title",
            Self::Company => "company",
            Self::Location => "location",
            Self::Profile => "profile_url",
            Self::Photo => "photo",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "profile" | "profiles" | "social" => Some(Self::Profile),
            "title" => Some(Self::JobTitle),
            "full_name" => Some(Self::Name),
            "emails" => Some(Self::Email),
            "phones" => Some(Self::Phone),
            other => Self::ALL.into_iter().find(|w| w.as_str() == other),
        }
    }

    /// Parses every name, or returns the first unknown one.
    pub fn parse_all<S: AsRef<str>>(names: &[S]) -> Result<Vec<Self>, String> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let w = Self::parse(n.as_ref()).ok_or_else(|| n.as_ref().to_string())?;
            if !out.contains(&w) {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// The names accepted, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    fn matches(self, field: Field) -> bool {
        match self {
            Self::Email => field == Field::Email,
            Self::Phone => field == Field::Phone,
            Self::Name => matches!(field, Field::FullName | Field::FirstName | Field::LastName),
            Self::JobTitle => field == Field::JobTitle,
            Self::Company => matches!(field, Field::CompanyName | Field::CompanyDomain),
            Self::Location => field == Field::Location,
            Self::Profile => field == Field::Profile,
            Self::Photo => field == Field::Photo,
        }
    }

    fn in_query<'a>(self, mut query: impl Iterator<Item = &'a Identifier>) -> bool {
        query.any(|id| {
            matches!(
                (self, id),
                (Self::Email, Identifier::Email(_))
                    | (Self::Phone, Identifier::Phone(_))
                    | (Self::Profile, Identifier::Profile(_))
                    | (
                        Self::Name,
                        Identifier::NameAtCompany(..) | Identifier::NameAtDomain(..)
                    )
                    | (Self::Company, Identifier::NameAtCompany(..))
            )
        })
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wanted fields still missing after the query's identifiers and `observed`.
pub fn missing<'a>(
    wanted: &[Want],
    query: impl Iterator<Item = &'a Identifier> + Clone,
    observed: impl Iterator<Item = &'a Observation> + Clone,
) -> Vec<Want> {
    wanted
        .iter()
        .copied()
        .filter(|w| {
            !w.in_query(query.clone())
                && !observed
                    .clone()
                    .any(|o| w.matches(o.field) && o.detail.as_deref() != Some("candidate"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Query, QueryInput};

    fn query(email: &str) -> Query {
        let input = QueryInput {
            email: Some(email.into()),
            ..QueryInput::default()
        };
        Query::parse(&input, None).expect("valid")
    }

    #[test]
    fn names_parse_with_synonyms_and_unknown_is_named() {
        assert_eq!(
            Want::parse_all(&["email", "Phone", "title", "social", "email"]),
            Ok(vec![
                Want::Email,
                Want::Phone,
                Want::JobTitle,
                Want::Profile
            ])
        );
        assert_eq!(
            Want::parse_all(&["email", "shoe_size"]),
            Err("shoe_size".into())
        );
    }

    #[test]
    fn query_fields_and_confirmed_observations_count_but_guesses_do_not() {
        let q = query("ada@example.com");
        let wanted = [Want::Email, Want::Phone, Want::JobTitle];
        let none: Vec<Observation> = Vec::new();
        assert_eq!(
            missing(&wanted, q.identifiers().iter(), none.iter()),
            [Want::Phone, Want::JobTitle]
        );
        let obs = [
            Observation::new(Field::Phone, "+442071838750").with_detail("candidate"),
            Observation::new(Field::JobTitle, "Engineer"),
        ];
        assert_eq!(
            missing(&wanted, q.identifiers().iter(), obs.iter()),
            [Want::Phone]
        );
        let obs = [Observation::new(Field::Phone, "+442071838750")];
        assert_eq!(
            missing(&[Want::Phone], q.identifiers().iter(), obs.iter()),
            Vec::<Want>::new()
        );
    }
}
