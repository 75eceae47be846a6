//! Built-in domain lists: free webmail providers and disposable-address services. One domain a line,
//! `#` comments; a subdomain of a listed domain counts as listed.

use std::collections::HashSet;
use std::sync::LazyLock;

static WEBMAIL: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| parse(include_str!("webmail.txt")));
static DISPOSABLE: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| parse(include_str!("disposable.txt")));

fn parse(list: &'static str) -> HashSet<&'static str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn listed(set: &HashSet<&str>, domain: &str) -> bool {
    let mut d = domain.trim_end_matches('.');
    loop {
        if set.contains(d) {
            return true;
        }
        match d.split_once('.') {
            Some((_, parent)) if parent.contains('.') => d = parent,
            _ => return false,
        }
    }
}

/// Whether `domain` is a free webmail provider's (gmail.com, outlook.fr, gmx.de, ...).
pub fn is_webmail(domain: &str) -> bool {
    listed(&WEBMAIL, domain)
}

/// Whether `domain` belongs to a disposable-address service (mailinator.com, yopmail.com, ...).
pub fn is_disposable(domain: &str) -> bool {
    listed(&DISPOSABLE, domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_loaded_and_match_subdomains() {
        assert!(WEBMAIL.len() >= 100, "webmail list has {}", WEBMAIL.len());
        assert!(
            DISPOSABLE.len() >= 100,
            "disposable list has {}",
            DISPOSABLE.len()
        );
        assert!(is_webmail("gmail.com"));
        assert!(is_disposable("mailinator.com"));
        assert!(is_disposable("eu.mailinator.com"));
        assert!(!is_webmail("acme.com"));
        assert!(!is_disposable("com"));
    }
}
