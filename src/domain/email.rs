use std::fmt;

use super::{DomainName, Invalid};

/// A syntactically valid email address, trimmed and lower-cased.
///
/// Validation is deliberately practical rather than RFC 5322 complete: one `@`, a dot-atom local part
/// of at most 64 bytes and a valid DNS domain. Quoted local parts are refused; no lead list holds them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let lowered = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            trimmed.to_lowercase()
        };
        let s = lowered.strip_prefix("mailto:").unwrap_or(&lowered);
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| Invalid::new("is not an email address: it has no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(Invalid::new("has an empty or over-long local part"));
        }
        let local_ok = local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(Invalid::new("has characters not allowed before the '@'"));
        }
        let parsed = DomainName::parse(domain)
            .map_err(|e| Invalid::new(format!("has an invalid domain: {e}")))?;
        // Usually the lower-cased text is the address already: keep it rather than build it again.
        let rebuilt = (s.len() != lowered.len() || parsed.as_str() != domain)
            .then(|| format!("{local}@{}", parsed.as_str()));
        Ok(Self(rebuilt.unwrap_or(lowered)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(l, _)| l)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Debug never prints the address: a stray `{:?}` in a log line must not leak it.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How addresses were parsed before the lower-cased text was kept: every address built anew.
    fn parse_by_format(raw: &str) -> Result<String, Invalid> {
        let s = raw.trim().to_lowercase();
        let s = s.strip_prefix("mailto:").unwrap_or(&s);
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| Invalid::new("no @"))?;
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        if local.is_empty()
            || local.len() > 64
            || !local_ok
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(Invalid::new("bad local part"));
        }
        let domain = DomainName::parse(domain)?;
        Ok(format!("{local}@{}", domain.as_str()))
    }

    proptest::proptest! {
        #[test]
        fn keeping_the_lowered_text_gives_the_address_built_anew(
            raw in "( |mailto:|MAILTO:)?[a-zA-Z0-9.+_'é-]{0,6}@?(www\\.|WWW\\.|https://)?[a-zA-Z0-9-]{0,5}(\\.[a-zA-Zé]{0,3}){0,2}\\.?(/x)?( )?"
        ) {
            proptest::prop_assert_eq!(
                Email::parse(&raw).map(|e| e.0).ok(),
                parse_by_format(&raw).ok()
            );
        }
    }

    #[test]
    fn parses_and_normalises() {
        let cases = [
            ("Ada@Example.COM", "ada@example.com"),
            (
                "  ada.lovelace+crm@example.co.uk ",
                "ada.lovelace+crm@example.co.uk",
            ),
            ("mailto:ada@example.com", "ada@example.com"),
            ("o'brien@example.ie", "o'brien@example.ie"),
        ];
        for (raw, want) in cases {
            assert_eq!(Email::parse(raw).map(|e| e.0).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_invalid() {
        for raw in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a..b@example.com",
            "ada@localhost",
            "a b@example.com",
            "ada@exa mple.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw} should be refused");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let e = Email::parse("ada@example.com").expect("valid");
        assert!(!format!("{e:?}").contains("ada"));
    }
}
