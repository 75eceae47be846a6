//! Which CSV column holds which identifier: header recognition and the `columns` override. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{QueryInput, fold_text};

use super::error::BatchError;

/// A query field a CSV column can feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Email,
    Phone,
    ProfileUrl,
    FirstName,
    LastName,
    FullName,
    Company,
    Domain,
}

/// Header spellings, folded (lower case, no accents, punctuation as spaces), per field.
const SYNONYMS: &[(Column, &[&str])] = &[
    (
        Column::Email,
        &[
            "email",
            "e mail",
            "mail",
            "email address",
            "e mail address",
            "courriel",
            "adresse email",
            "adresse e mail",
            "work email",
        ],
    ),
    (
        Column::Phone,
        &[
            "phone",
            "mobile",
            "telephone",
            "tel",
            "cell",
            "phone number",
            "mobile phone",
            "cell phone",
            "portable",
        ],
    ),
    (
        Column::ProfileUrl,
        &[
            "linkedin",
            "linkedin url",
            "linkedin profile",
            "profile",
            "profile url",
        ],
    ),
    (
        Column::FirstName,
        &["first name", "firstname", "prenom", "given name"],
    ),
    (
        Column::LastName,
        &["last name", "lastname", "surname", "nom", "family name"],
    ),
    (Column::FullName, &["full name", "fullname", "name"]),
    (
        Column::Company,
        &[
            "company",
            "organisation",
            "organization",
            "societe",
            "entreprise",
            "account",
            "company name",
            "account name",
        ],
    ),
    (
        Column::Domain,
        &["domain", "website", "company domain", "url", "web site"],
    ),
];

impl Column {
    /// Recognises a header by its folded spelling.
    pub fn from_header(header: &str) -> Option<Self> {
        let folded = fold_text(header);
        SYNONYMS
            .iter()
            .find(|(_, names)| names.contains(&folded.as_str()))
            .map(|(c, _)| *c)
    }

    /// Reads a field name of the `columns` override (`email`, `phone`, `profile_url`, `first_name`,
    /// `last_name`, `name`/`full_name`, `company`, `domain`).
    pub fn from_field(field: &str) -> Option<Self> {
        Some(match field.trim().to_ascii_lowercase().as_str() {
            "email" => Self::Email,
            "phone" => Self::Phone,
            "profile_url" => Self::ProfileUrl,
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "name" | "full_name" => Self::FullName,
            "company" => Self::Company,
            "domain" => Self::Domain,
            _ => return None,
        })
    }
}

/// For each input column, the field it feeds (at most one column per field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMap {
    pub by_index: Vec<Option<Column>>,
}

impl ColumnMap {
    /// Maps headers to fields. `overrides` maps a header (compared folded) to a field name, or to
    /// `""`/`"ignore"` to leave a column out; overridden fields win over recognised headers.
    pub fn new(
        headers: &[String],
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, BatchError> {
        let folded: Vec<String> = headers.iter().map(|h| fold_text(h)).collect();
        let mut by_index: Vec<Option<Column>> = vec![None; headers.len()];
        let mut forced = vec![false; headers.len()];
        for (header, field) in overrides {
            let want = fold_text(header);
            let Some(idx) = folded.iter().position(|h| *h == want) else {
                return Err(BatchError::UnknownColumnHeader {
                    header: header.clone(),
                });
            };
            let field_norm = field.trim().to_ascii_lowercase();
            by_index[idx] = if field_norm.is_empty() || field_norm == "ignore" {
                None
            } else {
                Some(Column::from_field(&field_norm).ok_or_else(|| {
                    BatchError::UnknownColumnField {
                        header: header.clone(),
                        field: field.clone(),
                    }
                })?)
            };
            forced[idx] = true;
        }
        for (idx, header) in headers.iter().enumerate() {
            if forced[idx] {
                continue;
            }
            if let Some(col) = Column::from_header(header)
                && !by_index.contains(&Some(col))
            {
                by_index[idx] = Some(col);
            }
        }
        let map = Self { by_index };
        if !map.has_identifier() {
            return Err(BatchError::NoIdentifierColumn {
                headers: headers.to_vec(),
            });
        }
        Ok(map)
    }

    fn has(&self, col: Column) -> bool {
        self.by_index.contains(&Some(col))
    }

    /// Whether some row could hold a personal identifier: an email, phone or profile column, or a name
    /// (full, or first and last) with a company or domain column.
    pub fn has_identifier(&self) -> bool {
        let name = self.has(Column::FullName)
            || (self.has(Column::FirstName) && self.has(Column::LastName));
        self.has(Column::Email)
            || self.has(Column::Phone)
            || self.has(Column::ProfileUrl)
            || (name && (self.has(Column::Company) || self.has(Column::Domain)))
    }

    /// The query fields of one row (cells beyond the header are ignored).
    pub fn input(&self, cells: &[String]) -> QueryInput {
        let mut q = QueryInput::default();
        for (col, cell) in self.by_index.iter().zip(cells) {
            let Some(col) = col else { continue };
            if cell.trim().is_empty() {
                continue;
            }
            let slot = match col {
                Column::Email => &mut q.email,
                Column::Phone => &mut q.phone,
                Column::ProfileUrl => &mut q.profile_url,
                Column::FirstName => &mut q.first_name,
                Column::LastName => &mut q.last_name,
                Column::FullName => &mut q.name,
                Column::Company => &mut q.company,
                Column::Domain => &mut q.domain,
            };
            *slot = Some(cell.clone());
        }
        q
    }
}

/// Whether a row holds anything a lookup could start from; rows that do not are `skipped`.
pub fn row_has_identifier(q: &QueryInput) -> bool {
    let name = q.name.is_some() || (q.first_name.is_some() || q.last_name.is_some());
    q.email.is_some()
        || q.phone.is_some()
        || q.profile_url.is_some()
        || (name && (q.company.is_some() || q.domain.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn header_synonyms_are_recognised_case_and_accent_insensitively() {
        let cases = [
            ("Email", Column::Email),
            ("E-mail", Column::Email),
            ("MAIL", Column::Email),
            ("Email Address", Column::Email),
            ("Courriel", Column::Email),
            ("Phone", Column::Phone),
            ("Mobile", Column::Phone),
            ("Téléphone", Column::Phone),
            ("tel", Column::Phone),
            ("Cell", Column::Phone),
            ("LinkedIn", Column::ProfileUrl),
            ("LinkedIn URL", Column::ProfileUrl),
            ("profile_url", Column::ProfileUrl),
            ("First Name", Column::FirstName),
            ("firstname", Column::FirstName),
            ("Prénom", Column::FirstName),
            ("Last name", Column::LastName),
            ("Surname", Column::LastName),
            ("Nom", Column::LastName),
            ("Full Name", Column::FullName),
            ("name", Column::FullName),
            ("Company", Column::Company),
            ("Organisation", Column::Company),
            ("Organization", Column::Company),
            ("Société", Column::Company),
            ("Entreprise", Column::Company),
            ("Account", Column::Company),
            ("Domain", Column::Domain),
            ("Website", Column::Domain),
            ("Company Domain", Column::Domain),
            ("URL", Column::Domain),
        ];
        for (h, want) in cases {
            assert_eq!(Column::from_header(h), Some(want), "{h}");
        }
        assert_eq!(Column::from_header("Notes"), None);
    }

    #[test]
    fn first_column_wins_when_two_headers_mean_the_same_field() {
        let map = ColumnMap::new(&headers(&["Email", "Mail"]), &BTreeMap::new()).expect("mapped");
        assert_eq!(map.by_index, [Some(Column::Email), None]);
    }

    #[test]
    fn override_maps_an_unrecognised_header_and_beats_recognition() {
        let overrides = BTreeMap::from([
            ("Contact".to_string(), "email".to_string()),
            ("Email".to_string(), "ignore".to_string()),
        ]);
        let map = ColumnMap::new(&headers(&["Email", "contact"]), &overrides).expect("mapped");
        assert_eq!(map.by_index, [None, Some(Column::Email)]);
    }

    #[test]
    fn override_with_unknown_field_or_header_is_refused() {
        let bad_field = BTreeMap::from([("Email".to_string(), "shoe_size".to_string())]);
        let err = ColumnMap::new(&headers(&["Email"]), &bad_field).expect_err("bad field");
        assert!(
            matches!(err, BatchError::UnknownColumnField { .. }),
            "{err}"
        );
        let bad_header = BTreeMap::from([("Nope".to_string(), "email".to_string())]);
        let err = ColumnMap::new(&headers(&["Email"]), &bad_header).expect_err("bad header");
        assert!(
            matches!(err, BatchError::UnknownColumnHeader { .. }),
            "{err}"
        );
    }

    #[test]
    fn file_without_identifier_column_is_refused_with_its_headers() {
        for h in [
            &["Notes", "Company"][..],
            &["First name", "Company"][..],
            &["Domain"][..],
        ] {
            let err = ColumnMap::new(&headers(h), &BTreeMap::new()).expect_err("no identifier");
            match err {
                BatchError::NoIdentifierColumn { headers: seen } => assert_eq!(seen, headers(h)),
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[test]
    fn name_with_company_is_an_identifier_column_set() {
        let map = ColumnMap::new(&headers(&["Prénom", "Nom", "Société"]), &BTreeMap::new())
            .expect("mapped");
        let q = map.input(&headers(&["Ada", "Lovelace", "Acme"]));
        assert_eq!(q.first_name.as_deref(), Some("Ada"));
        assert_eq!(q.last_name.as_deref(), Some("Lovelace"));
        assert_eq!(q.company.as_deref(), Some("Acme"));
    }

    #[test]
    fn rows_without_identifier_are_detected() {
        let map =
            ColumnMap::new(&headers(&["Email", "Company"]), &BTreeMap::new()).expect("mapped");
        assert!(!row_has_identifier(&map.input(&headers(&["  ", "Acme"]))));
        assert!(row_has_identifier(&map.input(&headers(&["a@b.com", ""]))));
    }
}
