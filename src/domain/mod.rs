//! Identifiers parsed at the boundary.
//!
//! Everything past the HTTP/CLI edge takes these validated types, never raw strings. Parsing is pure and
//! cannot fail for I/O reasons; every failure names the field it came from so the edge can answer a
//! precise 422.

mod email;
mod identifier;
mod mail_domains;
mod name;
mod phone;
mod profile_url;
mod query;

pub use email::Email;
pub use identifier::{Identifier, IdentifierKind};
pub use mail_domains::{is_disposable, is_webmail};
pub use name::{DomainName, OrgName, PersonName, fold_text};
pub use phone::{PhoneE164, Region};
pub use profile_url::{ProfileUrl, Service};
pub use query::{FieldError, Query, QueryInput, is_placeholder};

/// Why one value failed to parse. The caller attaches the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
