//! Text extraction: identifiers and a name / title / company line from free text.
//!
//! Feeds `POST /v1/extract` (an email signature or a pasted page) and the `website` source. Pure: no
//! I/O, regexes compiled once. Phones come out in E.164 (national formats need a region and a label or
//! a `tel:` link, so that order numbers and dates are not read as phones); emails, profile URLs and
//! websites come out canonical.

mod html;
mod signature;
#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use regex::Regex;

pub use html::{PageMeta, decode_entities, links, looks_like_html, page_meta, to_text};

use crate::domain::{DomainName, Email, PhoneE164, ProfileUrl, Region};

/// At most this many values of each kind come out of one text: a signature or a company's contact
/// page holds a handful, and a page stuffed with 40,000 addresses must not cost more than a linear scan
/// (every list below is searched before a push, so the cap also bounds that search).
pub const MAX_FOUND: usize = 64;

/// What [`extract`] found, each list in order of first appearance, without duplicates, at most
/// [`MAX_FOUND`] of each kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub emails: Vec<Email>,
    pub phones: Vec<PhoneE164>,
    /// Person profiles (LinkedIn `/in/`, GitHub, X, Keybase, Mastodon).
    pub profile_urls: Vec<ProfileUrl>,
    /// Organisation pages on social services (`linkedin.com/company/<slug>`), canonical, no scheme.
    pub company_pages: Vec<String>,
    /// Other web sites mentioned, as `https://<domain>`.
    pub websites: Vec<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9](?:[a-z0-9\-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,62}[a-z0-9])?)*\.[a-z]{2,24}")
        .expect("static regex")
});
/// `jane [at] acme [dot] com` and `jane(at)acme.com`.
static OBFUSCATED_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z0-9._%+\-]+)\s*[\[(]\s*at\s*[\])]\s*([a-z0-9\-]+(?:\s*(?:[\[(]\s*dot\s*[\])]|\.)\s*[a-z0-9\-]+)+)")
        .expect("static regex")
});
static DOT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s*(?:[\[(]\s*dot\s*[\])]|\.)\s*").expect("static regex"));
/// A run that may be a phone number: optional `+`/`00`, digits with the usual separators.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+|\b00|\(\+?)?\d[\d \u{a0}().\-/]{5,22}\d").expect("static regex")
});
/// Labels that say the rest of the line is a phone number, in the languages we table-test.
static PHONE_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:^|[\s|•·,;])(?:tel|tél|téléphone|telephone|telefon|teléfono|telefono|phone|ph|mobile|mobil|mob|portable|port|handy|cell|movil|móvil|fax|direct|dir|ligne directe|standard|office|bureau|[tmfpd])\.?\s*[:.]")
        .expect("static regex")
});
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:https?://)?(?:[a-z0-9](?:[a-z0-9\-]{0,62}[a-z0-9])?\.)+[a-z]{2,24}(?:/[^\s"'<>()\[\]|,]*)?"#)
        .expect("static regex")
});

/// Finds emails, phones, profile URLs, websites and a name / title / company in `text` (plain text or
/// HTML). `region` reads national phone numbers.
pub fn extract(text: &str, region: Option<Region>) -> Extracted {
    let (plain, hrefs) = if looks_like_html(text) {
        (to_text(text), links(text))
    } else {
        (text.to_string(), Vec::new())
    };
    let mut out = Extracted::default();
    for href in &hrefs {
        if let Some(rest) = strip_prefix_ci(href, "mailto:") {
            let addr = rest.split('?').next().unwrap_or("");
            push_email(&mut out.emails, &url_decode(addr));
        } else if let Some(rest) = strip_prefix_ci(href, "tel:") {
            push_phone(&mut out.phones, &url_decode(rest), region, true);
        }
    }
    for m in EMAIL.find_iter(&plain) {
        push_email(&mut out.emails, m.as_str());
    }
    for c in OBFUSCATED_EMAIL.captures_iter(&plain) {
        let domain = DOT.replace_all(&c[2], ".");
        push_email(&mut out.emails, &format!("{}@{domain}", &c[1]));
    }
    for line in plain.lines() {
        let labelled = PHONE_LABEL.is_match(line);
        for m in PHONE.find_iter(line) {
            push_phone(&mut out.phones, m.as_str(), region, labelled);
        }
    }
    let email_domains: Vec<String> = out.emails.iter().map(|e| e.domain().to_string()).collect();
    let web_links = hrefs.iter().filter(|h| {
        let l = h.to_ascii_lowercase();
        l.starts_with("http://") || l.starts_with("https://")
    });
    for candidate in web_links
        .map(String::as_str)
        .chain(URL.find_iter(&plain).filter_map(|m| {
            // An email's domain is not a website mention.
            let after_at = m.start() > 0 && plain[..m.start()].ends_with('@');
            (!after_at).then_some(m.as_str())
        }))
    {
        classify_url(candidate, &email_domains, &mut out);
    }
    let guess = signature::guess(&plain);
    out.name = guess.name;
    out.title = guess.title;
    out.company = guess.company;
    out
}

fn classify_url(raw: &str, email_domains: &[String], out: &mut Extracted) {
    let raw = raw.trim_end_matches(['.', ';', ':', '!', '?']);
    let lower = raw.to_ascii_lowercase();
    let bare = lower
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_start_matches("www.");
    if let Some(slug) = bare
        .split_once("linkedin.com/company/")
        .map(|(_, s)| s.split(['/', '?', '#']).next().unwrap_or(""))
        .filter(|s| !s.is_empty())
    {
        push_unique(
            &mut out.company_pages,
            format!("linkedin.com/company/{slug}"),
        );
        return;
    }
    let social = [
        "linkedin.com",
        "github.com",
        "x.com",
        "twitter.com",
        "keybase.io",
    ]
    .iter()
    .any(|s| bare.starts_with(s) || bare.contains(&format!(".{s}")));
    if let Ok(p) = ProfileUrl::parse(raw)
        && (social || p.service() == crate::domain::Service::Mastodon)
    {
        if out.profile_urls.len() < MAX_FOUND && !out.profile_urls.contains(&p) {
            out.profile_urls.push(p);
        }
        return;
    }
    if social {
        return;
    }
    // Bare words like "Inc.com" are rare; require a scheme, "www." or a path-free known-looking domain.
    let explicit = lower.starts_with("http") || lower.starts_with("www.");
    if let Ok(d) = DomainName::parse(raw) {
        let mentioned_by_email = email_domains.iter().any(|e| e == d.as_str());
        if explicit || mentioned_by_email {
            push_unique(&mut out.websites, format!("https://{}", d.as_str()));
        }
    }
}

fn push_email(list: &mut Vec<Email>, raw: &str) {
    if list.len() >= MAX_FOUND {
        return;
    }
    if let Ok(e) = Email::parse(raw.trim_end_matches('.'))
        && !list.contains(&e)
    {
        list.push(e);
    }
}

fn push_phone(list: &mut Vec<PhoneE164>, raw: &str, region: Option<Region>, labelled: bool) {
    if list.len() >= MAX_FOUND {
        return;
    }
    // "+33 (0)1 ..." carries a trunk prefix that must go in international form.
    let cleaned = raw.replace("(0)", "").replace('\u{a0}', " ");
    let cleaned = cleaned.trim_start_matches('(').trim();
    let digits = cleaned.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return;
    }
    let international = cleaned.starts_with('+') || cleaned.starts_with("00");
    if !international && !labelled {
        return;
    }
    if let Ok(p) = PhoneE164::parse(cleaned, region)
        && !list.contains(&p)
    {
        list.push(p);
    }
}

fn push_unique(list: &mut Vec<String>, v: String) {
    if list.len() < MAX_FOUND && !list.contains(&v) {
        list.push(v);
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.replace('+', "%2B").as_bytes())
        .map(|(k, v)| format!("{k}{v}"))
        .collect()
}
