use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::Invalid;

/// Folds text for comparison: NFKD, combining marks dropped, lower case, punctuation to spaces,
/// whitespace collapsed. `"Zoë  O'Brien-Smith"` becomes `"zoe o brien smith"`.
pub fn fold_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// Appends [`fold_text`]`(s)` to `out`.
pub fn fold_into(s: &str, out: &mut String) {
    let start = out.len();
    // NFKD leaves ASCII alone, and for ASCII "alphanumeric" and "lower case" are byte tests: most
    // text takes this path.
    if s.is_ascii() {
        let mut space = true;
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() {
                out.push(char::from(b.to_ascii_lowercase()));
                space = false;
            } else if !space {
                out.push(' ');
                space = true;
            }
        }
    } else {
        fold_chars(s.nfkd(), out);
    }
    if out.len() > start && out.ends_with(' ') {
        out.pop();
    }
}

/// The general path of [`fold_into`], without dropping the trailing space.
fn fold_chars(chars: impl Iterator<Item = char>, out: &mut String) {
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
}

/// `raw`'s words separated by one space each.
fn collapse_whitespace(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
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
        let display = collapse_whitespace(raw);
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

    /// Appends [`folded`](Self::folded) to `out`.
    pub fn fold_into(&self, out: &mut String) {
        fold_into(&self.display, out);
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

/// Legal forms that [`OrgName::folded`] drops from the end of a name.
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

/// An organisation name as given (trimmed); compared folded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = collapse_whitespace(raw);
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
        let mut out = String::with_capacity(self.0.len());
        self.fold_into(&mut out);
        out
    }

    /// Appends [`folded`](Self::folded) to `out`. A name made only of suffixes ("Co") keeps them all.
    pub fn fold_into(&self, out: &mut String) {
        let start = out.len();
        fold_into(&self.0, out);
        let folded = &out[start..];
        // Walks back over the trailing suffixes; `end` is where the kept words end.
        let mut end = folded.len();
        loop {
            let word_start = folded[..end].rfind(' ').map_or(0, |i| i + 1);
            if !SUFFIXES.contains(&&folded[word_start..end]) {
                break;
            }
            if word_start == 0 {
                end = folded.len();
                break;
            }
            end = word_start - 1;
        }
        out.truncate(start + end);
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
        let s = without_www(s);
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

/// `www.` prefixes removed for as long as what remains still has two labels, so that parsing a parsed
/// name gives it back: `www.www.example.com` is `example.com`, `www.qq` stays `www.qq`.
fn without_www(mut s: &str) -> &str {
    while let Some(rest) = s.strip_prefix("www.") {
        if !rest.contains('.') {
            break;
        }
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general (NFKD) fold of `raw`, as [`fold_into`] does for text that is not ASCII.
    fn fold_unicode(raw: &str) -> String {
        let mut out = String::new();
        fold_chars(raw.nfkd(), &mut out);
        if out.ends_with(' ') {
            out.pop();
        }
        out
    }

    /// How organisation names were folded before the in-place walk: split, find the last word that is
    /// not a suffix, join.
    fn org_folded_by_words(org: &OrgName) -> String {
        let folded = fold_text(&org.0);
        let words: Vec<&str> = folded.split(' ').collect();
        let keep = words
            .iter()
            .rposition(|w| !SUFFIXES.contains(w))
            .map_or(words.len(), |i| i + 1);
        words[..keep].join(" ")
    }

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

    proptest::proptest! {
        #[test]
        fn folding_ascii_byte_by_byte_matches_the_unicode_path(raw in "[ -~\t\n]{0,24}") {
            proptest::prop_assert_eq!(fold_text(&raw), fold_unicode(&raw));
        }

        #[test]
        fn org_suffixes_walked_back_in_place_match_split_and_join(
            words in proptest::collection::vec(
                "(inc|Inc\\.|co|Co,|ltd|GmbH|sa|acme|Benchco|x|-|Zoë|  )",
                0..6,
            )
        ) {
            let Ok(org) = OrgName::parse(&words.join(" ")) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(org.folded(), org_folded_by_words(&org));
            let mut appended = String::from("ada|");
            org.fold_into(&mut appended);
            proptest::prop_assert_eq!(appended, format!("ada|{}", org.folded()));
        }

        #[test]
        fn names_keep_their_words_with_one_space_between(raw in "[ a-zA-Z\t\n]{0,24}") {
            let words: Vec<&str> = raw.split_whitespace().collect();
            proptest::prop_assert_eq!(collapse_whitespace(&raw), words.join(" "));
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
            ("www.www.example.com", "example.com"),
            // Found by the `identifiers` fuzz target: `www.www.qq` became `www.qq`, which parsed again
            // to the single label `qq` and was refused.
            ("www.www.qq", "www.qq"),
            ("www.qq", "www.qq"),
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
