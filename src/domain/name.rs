use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::Invalid;

/// Folds text for comparison: NFKD, combining marks dropped, lower case, punctuation to spaces,
/// whitespace collapsed. `"Zoë  O'Brien-Smith"` becomes `"zoe o brien smith"`.
pub fn fold_text(s: &str) -> String {
    // NFKD leaves ASCII alone: most text skips the decomposition.
    if s.is_ascii() {
        fold_chars(s.chars(), s.len())
    } else {
        fold_unicode(s)
    }
}

fn fold_unicode(s: &str) -> String {
    fold_chars(s.nfkd(), s.len())
}

fn fold_chars(chars: impl Iterator<Item = char>, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut space = true;
    for c in chars {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// A person's name as given, trimmed; comparisons use [`PersonName::folded`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonName {
    display: String,
}

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let display = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if display.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        if display.chars().count() > 200 {
            return Err(Invalid::new("is longer than 200 characters"));
        }
        if !display.chars().any(char::is_alphabetic) {
            return Err(Invalid::new("contains no letters"));
        }
        Ok(Self { display })
    }

    pub fn from_parts(first: &str, last: &str) -> Result<Self, Invalid> {
        Self::parse(&format!("{} {}", first.trim(), last.trim()))
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    pub fn folded(&self) -> String {
        fold_text(&self.display)
    }

    /// First and last token of the folded name, for email pattern generation.
    pub fn first_last(&self) -> Option<(String, String)> {
        let folded = self.folded();
        let mut parts = folded.split(' ');
        let first = parts.next()?.to_string();
        let last = parts.next_back()?.to_string();
        Some((first, last))
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(<redacted>)")
    }
}

/// An organisation name as given (trimmed); compared folded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        if s.chars().count() > 200 {
            return Err(Invalid::new("is longer than 200 characters"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Folded, with common legal suffixes removed: "ACME, Inc." and "Acme" compare equal.
    pub fn folded(&self) -> String {
        const SUFFIXES: [&str; 14] = [
            "inc",
            "incorporated",
            "ltd",
            "limited",
            "llc",
            "gmbh",
            "sa",
            "sas",
            "sarl",
            "ag",
            "bv",
            "plc",
            "corp",
            "co",
        ];
        let folded = fold_text(&self.0);
        let words: Vec<&str> = folded.split(' ').collect();
        let keep = words
            .iter()
            .rposition(|w| !SUFFIXES.contains(w))
            .map_or(words.len(), |i| i + 1);
        words[..keep].join(" ")
    }
}

impl fmt::Debug for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgName({:?})", self.0)
    }
}

/// A DNS domain name: lower case, no scheme, path or trailing dot, at least two labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let mut s = raw.trim().to_lowercase();
        for scheme in ["https://", "http://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                s = rest.to_string();
            }
        }
        let s = s.split(['/', '?', '#']).next().unwrap_or("");
        let s = s.trim_end_matches('.');
        let s = s.strip_prefix("www.").unwrap_or(s);
        if s.len() > 253 || !s.contains('.') {
            return Err(Invalid::new(
                "is not a domain name with at least two labels",
            ));
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(Invalid::new(format!("has an invalid label '{label}'")));
            }
        }
        if s.rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(Invalid::new("is an IP address, not a domain name"));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_folding_matches_the_unicode_path() {
        for raw in [
            "",
            "  ",
            "Ada Lovelace",
            "  O'Brien-Smith,  Jr. ",
            "ACME\tCorp\n(UK) Ltd.",
            "x_y__z--9",
            "@benchco",
        ] {
            assert_eq!(fold_text(raw), fold_unicode(raw), "{raw:?}");
        }
    }

    #[test]
    fn folds_text() {
        let cases = [
            ("Zoë  O'Brien-Smith", "zoe o brien smith"),
            ("ÉLODIE", "elodie"),
            ("  José María ", "jose maria"),
            ("Ｆｕｌｌ", "full"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(fold_text(raw), want, "{raw}");
        }
    }

    #[test]
    fn org_suffixes_fold_away() {
        let a = OrgName::parse("ACME, Inc.").expect("valid");
        let b = OrgName::parse("Acme").expect("valid");
        assert_eq!(a.folded(), b.folded());
    }

    #[test]
    fn domains_parse() {
        let cases = [
            ("Example.COM", "example.com"),
            ("https://www.example.com/about", "example.com"),
            ("example.co.uk.", "example.co.uk"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                DomainName::parse(raw).map(|d| d.0).as_deref(),
                Ok(want),
                "{raw}"
            );
        }
        for raw in ["localhost", "exa_mple.com", "-a.com", "10.0.0.1", ""] {
            assert!(DomainName::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn person_name_first_last() {
        let n = PersonName::parse("Ada  King Lovelace").expect("valid");
        assert_eq!(n.first_last(), Some(("ada".into(), "lovelace".into())));
        assert!(PersonName::parse("  ").is_err());
        assert!(PersonName::parse("1234").is_err());
    }
}
