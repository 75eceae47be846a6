//! Which CSV column holds which identifier: header recognition and the `columns` override. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{QueryInput, fold_text, is_placeholder};

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
            "raison sociale",
        ],
    ),
    (
        Column::Domain,
        &["domain", "website", "company domain", "url", "web site"],
    ),
];

/// Words that make a column about an identifier rather than the identifier itself ("Email Status",
/// "Phone Type", "Photo URL", "Contact Owner"): such a column feeds nothing.
const ABOUT: &[&str] = &[
    "status",
    "statut",
    "type",
    "verified",
    "verification",
    "valid",
    "validity",
    "opt",
    "optout",
    "optin",
    "unsubscribed",
    "consent",
    "date",
    "time",
    "count",
    "score",
    "confidence",
    "source",
    "bounced",
    "bounce",
    "sent",
    "opened",
    "clicks",
    "photo",
    "avatar",
    "image",
    "picture",
    "logo",
    "owner",
    "proprietaire",
    "extension",
    "ext",
    "format",
    "quality",
    "qualite",
];

/// Words of a place: "Company Address" or "Company Country" is not the company's name.
const PLACE: &[&str] = &[
    "address",
    "adresse",
    "street",
    "rue",
    "city",
    "ville",
    "country",
    "pays",
    "zip",
    "postal",
    "postcode",
    "state",
    "region",
    "size",
    "taille",
    "industry",
    "secteur",
    "revenue",
    "employees",
];

const EMAIL: &[&str] = &["email", "mail", "courriel", "emailaddress"];
const PHONE: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "mobile",
    "cell",
    "cellphone",
    "portable",
    "gsm",
    "mobilephone",
    "phonenumber",
];
const PROFILE_SITE: &[&str] = &["linkedin", "github", "twitter", "keybase"];
const PROFILE: &[&str] = &["profile", "profil"];
const DOMAIN: &[&str] = &[
    "domain", "domaine", "website", "site", "web", "homepage", "url",
];
const COMPANY: &[&str] = &[
    "company",
    "organisation",
    "organization",
    "org",
    "societe",
    "entreprise",
    "employer",
    "employeur",
    "account",
    "firm",
    "business",
    "organisme",
];
const NAME: &[&str] = &["name", "nom"];

impl Column {
    /// Recognises a header by its folded spelling, or else by its words, as spreadsheets and CRMs
    /// export them: "Work Email Address", "Contact Phone Number", "LinkedIn Profile URL",
    /// "Company Name", "Numéro de téléphone portable", "WorkEmail".
    pub fn from_header(header: &str) -> Option<Self> {
        let folded = fold_text(header);
        SYNONYMS
            .iter()
            .find(|(_, names)| names.contains(&folded.as_str()))
            .map(|(c, _)| *c)
            .or_else(|| Self::from_words(&fold_text(&split_camel_case(header))))
    }

    /// The field a folded header's words name, in order of how specific each kind of word is.
    fn from_words(folded: &str) -> Option<Self> {
        let words: Vec<&str> = folded.split(' ').filter(|w| !w.is_empty()).collect();
        let has = |set: &[&str]| words.iter().any(|w| set.contains(w));
        let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
        if has(ABOUT) {
            return None;
        }
        let company = has(COMPANY);
        if has(PROFILE_SITE) || has_pair("linked", "in") {
            // A company's own LinkedIn page is not a person's profile.
            return (!company).then_some(Self::ProfileUrl);
        }
        if has(EMAIL) || has_pair("e", "mail") {
            return Some(if has(DOMAIN) {
                Self::Domain
            } else {
                Self::Email
            });
        }
        if has(PHONE) {
            return Some(Self::Phone);
        }
        if has(PROFILE) {
            return (!company).then_some(Self::ProfileUrl);
        }
        let place = has(PLACE);
        if has(DOMAIN) {
            return (!place).then_some(Self::Domain);
        }
        if place {
            return None;
        }
        let first = has(&["first", "given", "fore", "prenom", "firstname", "forename"]);
        let last = has(&["last", "family", "sur", "surname", "lastname", "famille"]);
        let name = has(NAME) || has(&["firstname", "lastname", "surname", "prenom", "forename"]);
        if first && name {
            return Some(Self::FirstName);
        }
        if last && name {
            return Some(Self::LastName);
        }
        if company {
            return Some(Self::Company);
        }
        name.then_some(Self::FullName)
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

/// `WorkEmail` as `Work Email`: a space before an upper-case letter that follows a lower-case one.
fn split_camel_case(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 4);
    let mut lower_before = false;
    for c in header.chars() {
        if c.is_uppercase() && lower_before {
            out.push(' ');
        }
        lower_before = c.is_lowercase();
        out.push(c);
    }
    out
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

    /// The query fields of one row (cells beyond the header are ignored). Blank cells and
    /// placeholders (`n/a`, `-`, `unknown`, ...) are left empty.
    pub fn input(&self, cells: &[String]) -> QueryInput {
        let mut q = QueryInput::default();
        for (col, cell) in self.by_index.iter().zip(cells) {
            let Some(col) = col else { continue };
            if cell.trim().is_empty() || is_placeholder(cell) {
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
    fn headers_are_recognised_by_their_words_as_crms_export_them() {
        let cases = [
            ("Work Email Address", Some(Column::Email)),
            ("Business E-mail", Some(Column::Email)),
            ("Person - Email - Work", Some(Column::Email)),
            ("WorkEmail", Some(Column::Email)),
            ("Adresse e-mail professionnelle", Some(Column::Email)),
            ("Courriel du contact", Some(Column::Email)),
            ("Contact Phone Number", Some(Column::Phone)),
            ("Work Direct Phone", Some(Column::Phone)),
            ("Mobile Number", Some(Column::Phone)),
            ("Numéro de téléphone portable", Some(Column::Phone)),
            ("Tél. bureau", Some(Column::Phone)),
            ("LinkedIn Profile URL", Some(Column::ProfileUrl)),
            ("Person Linkedin Url", Some(Column::ProfileUrl)),
            ("LinkedInProfile", Some(Column::ProfileUrl)),
            ("GitHub profile", Some(Column::ProfileUrl)),
            ("Profil LinkedIn", Some(Column::ProfileUrl)),
            ("Company Linkedin Url", None),
            ("Company Name", Some(Column::Company)),
            ("Organization - Name", Some(Column::Company)),
            ("Nom de l'entreprise", Some(Column::Company)),
            ("Employer", Some(Column::Company)),
            ("Raison sociale", Some(Column::Company)),
            ("Company Website", Some(Column::Domain)),
            ("Website URL", Some(Column::Domain)),
            ("Email Domain", Some(Column::Domain)),
            ("Site web de l'entreprise", Some(Column::Domain)),
            ("Contact First Name", Some(Column::FirstName)),
            ("Given name", Some(Column::FirstName)),
            ("Prénom du contact", Some(Column::FirstName)),
            ("Contact Last Name", Some(Column::LastName)),
            ("Nom de famille", Some(Column::LastName)),
            ("Contact Name", Some(Column::FullName)),
            ("Nom complet", Some(Column::FullName)),
            // About an identifier, not the identifier.
            ("Email Status", None),
            ("Phone Type", None),
            ("Photo URL", None),
            ("Contact Owner", None),
            ("Company Address", None),
            ("Company Size", None),
            ("Mailing Address", None),
            ("Notes", None),
        ];
        for (h, want) in cases {
            assert_eq!(Column::from_header(h), want, "{h}");
        }
    }

    #[test]
    fn a_crm_export_maps_each_field_once() {
        let h = headers(&[
            "Record ID",
            "First Name",
            "Last Name",
            "Email Status",
            "Work Email Address",
            "Contact Phone Number",
            "Company Name",
            "Company Linkedin Url",
            "LinkedIn Profile URL",
            "Company Website",
        ]);
        let map = ColumnMap::new(&h, &BTreeMap::new()).expect("mapped");
        assert_eq!(
            map.by_index,
            [
                None,
                Some(Column::FirstName),
                Some(Column::LastName),
                None,
                Some(Column::Email),
                Some(Column::Phone),
                Some(Column::Company),
                None,
                Some(Column::ProfileUrl),
                Some(Column::Domain),
            ]
        );
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
