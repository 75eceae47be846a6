//! What one exclusion entry is: a kind, a keyed hash and where the opt-out came from; plus the text
//! form in which admins import pre-computed hashes.
//!
//! ## Bulk hash import format
//! One entry per line, `<kind>:<hex>`, where `<kind>` is one of `email`, `phone`, `profile_url`,
//! `name_company`, `name_domain` and `<hex>` is either the full 64-hex-character keyed hash or its
//! first 32 hex characters (128 bits, all the in-memory set uses). Blank lines and lines starting with
//! `#` are ignored. The hash is `blake3::keyed_hash(subkey, text)` with
//! `subkey = blake3::derive_key("enrichd exclusion v1 <kind>", secret)` and `text` the normalised
//! identifier (see [`super::normalize`]). Example: `email:5f0c…e1` (64 hex characters).

use std::fmt;

use crate::domain::IdentifierKind;

/// Where an opt-out came from; stored as a one-byte code with each log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The public HTML form (`POST /optout`).
    PublicForm,
    /// The public JSON endpoint (`POST /v1/optout`).
    Api,
    /// `enrichd optout` run by an operator.
    Cli,
    /// An admin bulk import of identifiers or hashes.
    AdminImport,
    /// Identifiers that a lookup of the opted-out person returned, added so they are blocked too.
    Expansion,
    /// An upstream answered HTTP 451 for this person.
    Upstream451,
}

impl Origin {
    pub const ALL: [Origin; 6] = [
        Self::PublicForm,
        Self::Api,
        Self::Cli,
        Self::AdminImport,
        Self::Expansion,
        Self::Upstream451,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicForm => "public_form",
            Self::Api => "api",
            Self::Cli => "cli",
            Self::AdminImport => "admin_import",
            Self::Expansion => "expansion",
            Self::Upstream451 => "upstream_451",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::PublicForm => 1,
            Self::Api => 2,
            Self::Cli => 3,
            Self::AdminImport => 4,
            Self::Expansion => 5,
            Self::Upstream451 => 6,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }
}

/// The personal identifier kinds, the only ones an entry can have.
pub(crate) const PERSONAL_KINDS: [IdentifierKind; 5] = [
    IdentifierKind::Email,
    IdentifierKind::Phone,
    IdentifierKind::ProfileUrl,
    IdentifierKind::NameCompany,
    IdentifierKind::NameDomain,
];

pub(crate) fn kind_code(kind: IdentifierKind) -> Option<u8> {
    match kind {
        IdentifierKind::Email => Some(1),
        IdentifierKind::Phone => Some(2),
        IdentifierKind::ProfileUrl => Some(3),
        IdentifierKind::NameCompany => Some(4),
        IdentifierKind::NameDomain => Some(5),
        IdentifierKind::Domain => None,
    }
}

pub(crate) fn kind_from_code(code: u8) -> Option<IdentifierKind> {
    PERSONAL_KINDS
        .into_iter()
        .find(|&k| kind_code(k) == Some(code))
}

fn kind_from_name(name: &str) -> Option<IdentifierKind> {
    PERSONAL_KINDS.into_iter().find(|k| k.as_str() == name)
}

/// A keyed hash of one personal identifier: the full 32 bytes, or the first 16 when an admin imported
/// a truncated one. Only the first 16 bytes take part in membership.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hashed {
    kind: IdentifierKind,
    digest: [u8; 32],
    full: bool,
}

impl Hashed {
    /// A full 32-byte hash; `None` for a non-personal kind.
    pub fn full(kind: IdentifierKind, digest: [u8; 32]) -> Option<Self> {
        kind_code(kind)?;
        Some(Self {
            kind,
            digest,
            full: true,
        })
    }

    /// A hash truncated to its first 16 bytes; `None` for a non-personal kind.
    pub fn truncated(kind: IdentifierKind, prefix: [u8; 16]) -> Option<Self> {
        kind_code(kind)?;
        let mut digest = [0u8; 32];
        digest[..16].copy_from_slice(&prefix);
        Some(Self {
            kind,
            digest,
            full: false,
        })
    }

    pub fn kind(&self) -> IdentifierKind {
        self.kind
    }

    /// Whether all 32 bytes are known (else only the first 16).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The stored bytes: 32, or 16 followed by zeros when truncated.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The 128-bit key the in-memory set holds (first 16 bytes, big-endian).
    pub fn set_key(&self) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.digest[..16]);
        u128::from_be_bytes(first)
    }

    /// The hash as hex: 64 characters, or 32 when truncated.
    pub fn to_hex(&self) -> String {
        let len = if self.full { 32 } else { 16 };
        hex::encode(&self.digest[..len])
    }

    /// The first 8 hex characters: short enough for a log line, useless for reversing.
    pub fn prefix(&self) -> String {
        hex::encode(&self.digest[..4])
    }

    /// The bulk-import text form, `<kind>:<hex>`.
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.to_hex())
    }
}

/// Debug shows the kind and the short prefix only.
impl fmt::Debug for Hashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hashed({}, {}…)", self.kind.as_str(), self.prefix())
    }
}

/// A bad line in a bulk hash import. Names the line number and what is wrong, never echoes the line
/// (an admin may have pasted raw identifiers by mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct HashLineError {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses the bulk import text form (see the module docs). Stops at the first bad line.
pub fn parse_hash_lines(text: &str) -> Result<Vec<Hashed>, HashLineError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if let Some(hashed) = parse_hash_line(index + 1, raw)? {
            out.push(hashed);
        }
    }
    Ok(out)
}

/// What [`parse_hash_lines_lenient`] read: the good entries, and every bad line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HashLines {
    pub hashes: Vec<Hashed>,
    pub rejected: Vec<HashLineError>,
}

/// Parses the bulk import text form, keeping every good line and reporting every bad one.
pub fn parse_hash_lines_lenient(text: &str) -> HashLines {
    let mut out = HashLines::default();
    for (index, raw) in text.lines().enumerate() {
        match parse_hash_line(index + 1, raw) {
            Ok(Some(hashed)) => out.hashes.push(hashed),
            Ok(None) => {}
            Err(err) => out.rejected.push(err),
        }
    }
    out
}

/// One line of the import form: `None` for a blank line or a comment.
fn parse_hash_line(line: usize, raw: &str) -> Result<Option<Hashed>, HashLineError> {
    let text = raw.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let err = |reason| HashLineError { line, reason };
    let (kind, hex) = text
        .split_once(':')
        .ok_or_else(|| err("expected <kind>:<hex>"))?;
    let kind = kind_from_name(kind.trim()).ok_or_else(|| {
        err("unknown kind: expected email, phone, profile_url, name_company or name_domain")
    })?;
    let hex = hex.trim();
    let hashed = match hex.len() {
        64 => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex, &mut digest).map_err(|_| err("hash is not hex"))?;
            Hashed::full(kind, digest)
        }
        32 => {
            let mut prefix = [0u8; 16];
            hex::decode_to_slice(hex, &mut prefix).map_err(|_| err("hash is not hex"))?;
            Hashed::truncated(kind, prefix)
        }
        _ => return Err(err("hash must be 64 or 32 hex characters")),
    };
    hashed.map(Some).ok_or_else(|| err("kind is not personal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_full_and_truncated_hashes_skipping_comments() {
        let text = format!("# export\n\nemail:{FULL}\n  phone:{}  \n", &FULL[..32]);
        let parsed = parse_hash_lines(&text).expect("valid");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].to_line(), format!("email:{FULL}"));
        assert!(parsed[0].is_full());
        assert_eq!(parsed[1].kind(), IdentifierKind::Phone);
        assert!(!parsed[1].is_full());
        assert_eq!(parsed[0].set_key(), parsed[1].set_key());
    }

    #[test]
    fn bad_lines_are_named_by_number_without_echoing_them() {
        let cases = [
            ("ada@example.com", 1, "expected <kind>:<hex>"),
            ("\nfax:00", 2, "unknown kind"),
            (&format!("email:{FULL}\nemail:abc") as &str, 2, "64 or 32"),
            (&format!("email:{}", "zz".repeat(32)), 1, "not hex"),
            (&format!("domain:{FULL}"), 1, "unknown kind"),
        ];
        for (text, line, reason) in cases {
            let err = parse_hash_lines(text).expect_err("bad line");
            assert_eq!(err.line, line, "{text}");
            assert!(err.reason.contains(reason), "{}", err.reason);
            assert!(!err.to_string().contains("ada@"), "echoed the line");
        }
    }

    #[test]
    fn the_lenient_parser_keeps_good_lines_and_names_every_bad_one() {
        let text = format!(
            "email:{FULL}\nada@example.com\n# note\nphone:{}\nfax:00\n",
            &FULL[..32]
        );

        let parsed = parse_hash_lines_lenient(&text);

        assert_eq!(parsed.hashes.len(), 2);
        let lines: Vec<usize> = parsed.rejected.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn codes_round_trip() {
        for origin in Origin::ALL {
            assert_eq!(Origin::from_code(origin.code()), Some(origin));
        }
        for kind in PERSONAL_KINDS {
            let code = kind_code(kind).expect("personal kinds have codes");
            assert_eq!(kind_from_code(code), Some(kind));
        }
        assert_eq!(kind_code(IdentifierKind::Domain), None);
        assert_eq!(Origin::from_code(0), None);
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let h = Hashed::full(IdentifierKind::Email, [0xab; 32]).expect("personal");
        assert_eq!(format!("{h:?}"), "Hashed(email, abababab…)");
        assert_eq!(h.prefix().len(), 8);
    }
}
