use super::{DomainName, Email, OrgName, PersonName, PhoneE164, ProfileUrl};

/// One thing a source can look a person up by, or that a source reported and the fan-out may follow.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identifier {
    Email(Email),
    Phone(PhoneE164),
    Profile(ProfileUrl),
    /// A person's name at an organisation.
    NameAtCompany(PersonName, OrgName),
    /// A person's name at a web domain.
    NameAtDomain(PersonName, DomainName),
    /// A company's domain: not personal, never excluded on its own.
    Domain(DomainName),
}

/// The kind of an identifier: keys per-kind hashing, metrics labels and source capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentifierKind {
    Email,
    Phone,
    ProfileUrl,
    NameCompany,
    NameDomain,
    Domain,
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::ProfileUrl => "profile_url",
            Self::NameCompany => "name_company",
            Self::NameDomain => "name_domain",
            Self::Domain => "domain",
        }
    }
}

impl Identifier {
    pub fn kind(&self) -> IdentifierKind {
        match self {
            Self::Email(_) => IdentifierKind::Email,
            Self::Phone(_) => IdentifierKind::Phone,
            Self::Profile(_) => IdentifierKind::ProfileUrl,
            Self::NameAtCompany(..) => IdentifierKind::NameCompany,
            Self::NameAtDomain(..) => IdentifierKind::NameDomain,
            Self::Domain(_) => IdentifierKind::Domain,
        }
    }

    /// Whether this identifies a person (and so may be on the exclusion list).
    pub fn is_personal(&self) -> bool {
        !matches!(self, Self::Domain(_))
    }

    /// A stable text form: normalised value, no scheme, folded names. Two spellings of the same
    /// identifier give the same text. Hash it; never log it.
    pub fn canonical(&self) -> String {
        self.canonical_str().into_owned()
    }

    /// [`canonical`](Self::canonical), borrowed when the identifier already holds that text (all but
    /// the name pairs).
    pub fn canonical_str(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Self::Email(e) => Cow::Borrowed(e.as_str()),
            Self::Phone(p) => Cow::Borrowed(p.as_str()),
            Self::Profile(p) => Cow::Borrowed(p.canonical()),
            Self::NameAtCompany(n, c) => Cow::Owned(name_and(n, c.as_str(), |s| c.fold_into(s))),
            Self::NameAtDomain(n, d) => {
                Cow::Owned(name_and(n, d.as_str(), |s| s.push_str(d.as_str())))
            }
            Self::Domain(d) => Cow::Borrowed(d.as_str()),
        }
    }
}

/// `<folded name>|<other>`, the other part written by `push` (`other` only sizes the buffer).
fn name_and(name: &PersonName, other: &str, push: impl FnOnce(&mut String)) -> String {
    let mut s = String::with_capacity(name.as_str().len() + other.len() + 1);
    name.fold_into(&mut s);
    s.push('|');
    push(&mut s);
    s
}
