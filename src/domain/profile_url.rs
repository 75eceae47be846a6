use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;
use url::Url;

use super::Invalid;

/// A social service enrichd knows how to canonicalise profile URLs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Linkedin,
    Github,
    X,
    Keybase,
    Mastodon,
    Other,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linkedin => "linkedin",
            Self::Github => "github",
            Self::X => "x",
            Self::Keybase => "keybase",
            Self::Mastodon => "mastodon",
            Self::Other => "other",
        }
    }
}

/// A profile URL in canonical form: `linkedin.com/in/<slug>`, `github.com/<login>`, `x.com/<handle>`,
/// `keybase.io/<user>`; other URLs keep host and path, lower-cased host, no query, fragment or trailing
/// slash. The canonical form has no scheme: it is what hashes and comparisons use.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileUrl {
    service: Service,
    canonical: String,
}

impl ProfileUrl {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        let (host, segments) = match plain_parts(trimmed) {
            Some(parts) => parts,
            None => url_parts(trimmed)?,
        };
        if host.trim_matches('.').is_empty() {
            return Err(Invalid::new("has no host"));
        }
        let first = segments.first().map(|s| &**s);
        let second = segments.get(1).map(|s| &**s);

        if host == "linkedin.com" || host.ends_with(".linkedin.com") {
            return match (first, second) {
                (Some("in" | "pub"), Some(slug)) if valid_handle(slug, 100) => Ok(Self::known(
                    Service::Linkedin,
                    format!("linkedin.com/in/{slug}"),
                )),
                _ => Err(Invalid::new(
                    "is a LinkedIn URL but not a profile (linkedin.com/in/<name>)",
                )),
            };
        }
        if host == "github.com" {
            return match (first, second) {
                (Some(login), None) if valid_handle(login, 39) => Ok(Self::github(login)),
                _ => Err(Invalid::new(
                    "is a GitHub URL but not a user profile (github.com/<login>)",
                )),
            };
        }
        if matches!(&*host, "x.com" | "twitter.com" | "mobile.twitter.com") {
            return match (first, second) {
                (Some(handle), None) if valid_handle(handle, 15) => Ok(Self::x(handle)),
                _ => Err(Invalid::new(
                    "is an X URL but not a profile (x.com/<handle>)",
                )),
            };
        }
        if host == "keybase.io" {
            return match (first, second) {
                (Some(user), None) if valid_handle(user, 16) => {
                    Ok(Self::known(Service::Keybase, format!("keybase.io/{user}")))
                }
                _ => Err(Invalid::new(
                    "is a Keybase URL but not a profile (keybase.io/<user>)",
                )),
            };
        }
        let service = if first.is_some_and(|f| f.starts_with('@')) {
            Service::Mastodon
        } else {
            Service::Other
        };
        let path = segments
            .iter()
            .map(|s| canonical_segment(s))
            .collect::<Vec<_>>()
            .join("/");
        let canonical = if path.is_empty() {
            host.into_owned()
        } else {
            format!("{host}/{path}")
        };
        Ok(Self::known(service, canonical))
    }

    /// `github.com/<login>` from a bare login.
    pub fn github(login: &str) -> Self {
        let mut canonical = String::with_capacity(11 + login.len());
        canonical.push_str("github.com/");
        push_lowercase(&mut canonical, login);
        Self::known(Service::Github, canonical)
    }

    /// `x.com/<handle>` from a bare handle (with or without `@`).
    pub fn x(handle: &str) -> Self {
        Self::known(
            Service::X,
            format!("x.com/{}", handle.trim_start_matches('@').to_lowercase()),
        )
    }

    fn known(service: Service, canonical: String) -> Self {
        Self { service, canonical }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// The canonical form without scheme, e.g. `github.com/octocat`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The user name on the service, for the known services.
    pub fn handle(&self) -> Option<&str> {
        match self.service {
            Service::Other | Service::Mastodon => None,
            _ => self.canonical.rsplit('/').next(),
        }
    }

    /// A browsable URL.
    pub fn to_url(&self) -> String {
        let mut url = String::with_capacity(8 + self.canonical.len());
        url.push_str("https://");
        url.push_str(&self.canonical);
        url
    }
}

/// A URL's host (lower-case, without `www.`) and its path segments (decoded, lower-case), borrowed
/// from the text when it already reads that way.
type Parts<'a> = (Cow<'a, str>, SmallVec<[Cow<'a, str>; 4]>);

/// `s` lower-cased onto the end of `out`.
fn push_lowercase(out: &mut String, s: &str) {
    if s.is_ascii() {
        let from = out.len();
        out.push_str(s);
        out[from..].make_ascii_lowercase();
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// The host (lower-case, without `www.`) and the path segments (decoded, lower-case) of a URL, or of
/// `https://` + `raw` when it has no scheme, as the `url` crate reads them.
fn url_parts<'a>(raw: &str) -> Result<Parts<'a>, Invalid> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| Invalid::new("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Invalid::new("must be an http or https URL"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Invalid::new("has no host"))?
        .to_lowercase();
    let segments = url
        .path_segments()
        .map(|s| {
            s.map(|p| Cow::<str>::Owned(segment(p).into_owned()))
                .filter(|p| kept(p))
                .collect()
        })
        .unwrap_or_default();
    Ok((without_www(Cow::Owned(host)), segments))
}

/// [`url_parts`] for the plain URLs sources report (`https://github.com/octocat`), without building
/// a `Url`: printable ASCII, an http(s) scheme or none, a host of letter-digit-hyphen labels ending in
/// a name (no port, user, IP address or punycode), a path with nothing to decode, normalise or escape.
/// `None` for anything else, which [`url_parts`] then reads.
fn plain_parts(raw: &str) -> Option<Parts<'_>> {
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let rest = match raw.split_once("://") {
        None => raw,
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") =>
        {
            rest
        }
        Some(_) => return None,
    };
    let (host, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let plain_label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let names_a_host = host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_alphabetic()));
    if !(host.split('.').all(plain_label) && names_a_host) {
        return None;
    }
    let plain_path = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b))
        && !path.split('/').any(|s| s == "." || s == "..");
    if !plain_path {
        return None;
    }
    let segments = path.split('/').map(segment).filter(|p| kept(p)).collect();
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((without_www(host), segments))
}

/// The host without every leading `www.`: removing only one made `www.www.x` canonical as `www.x`,
/// which read again became `x` (found by the `identifiers` fuzz target).
fn without_www(host: Cow<'_, str>) -> Cow<'_, str> {
    match host {
        Cow::Borrowed(h) => Cow::Borrowed(h.trim_start_matches("www.")),
        Cow::Owned(h) if h.starts_with("www.") => {
            Cow::Owned(h.trim_start_matches("www.").to_string())
        }
        owned => owned,
    }
}

/// A path segment as compared: decoded, lower-case; borrowed when it is that already.
fn segment(p: &str) -> Cow<'_, str> {
    if p.contains(['%', '+', '&', '=']) {
        Cow::Owned(percent_decode(p).to_lowercase())
    } else if !p.is_ascii() || p.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(p.to_lowercase())
    } else {
        Cow::Borrowed(p)
    }
}

/// Whether a decoded segment is part of the path: an empty one is not, nor one that decodes to nothing
/// (`&`, `=`), nor a `.` or `..` that decoding made (`&.`), which a URL parser would resolve away
/// when the canonical URL is read again (it resolves `%2E` too).
fn kept(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..")
}

/// A decoded segment as the canonical form writes it, so that the canonical URL reads back to
/// itself: as it is, or with what reading would change percent-encoded (whitespace and controls, and
/// the characters [`segment`] decodes or the URL parser treats as delimiters).
fn canonical_segment(s: &str) -> Cow<'_, str> {
    let changes = |c: char| c.is_control() || c.is_whitespace() || "%+&=/?#\\".contains(c);
    if !s.contains(changes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if changes(c) {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn valid_handle(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| format!("{k}{v}"))
        .collect()
}

impl fmt::Debug for ProfileUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProfileUrl({}, <redacted>)", self.service.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_url_reads_back_to_itself() {
        // Found by the `identifiers` fuzz target: `+` decodes to a space, which the canonical URL kept
        // raw and the next reading trimmed, so one profile had two canonical forms.
        for raw in [
            "m/CGCG:A\0\0DA@\u{FFFD}XAMPLE.CCGOM+",
            "example.org/a+b/c%2Bd/%2F/%3F%23",
            "example.org/%2e%2e/x",
            "example.org/a%26b/c=d/tab%09here",
            "mastodon.example/@ada+x",
            // A segment that decodes to nothing is dropped, not kept as an empty one.
            "Adl////'////&///o.v4ILac//o.v2IL[ce+n///'////2co.uk",
            "mastodon.example/&/@ada",
            // Nor is a `.` or `..` that decoding made, which a parser would resolve.
            "example.org/o//&.//x/.&./y",
            // A host with two `www.` lost one per reading (`www.www.ex4` → `www.ex4` → `ex4`).
            "www.www.ex4///\u{FFFD}///'//////////\u{FFFD}\u{FFFD}",
            "https://WWW.www.www.example.org/a",
        ] {
            let first = ProfileUrl::parse(raw).expect("parses");
            let again = ProfileUrl::parse(&first.to_url()).expect("the canonical URL parses");
            assert_eq!(again.canonical(), first.canonical(), "{raw:?}");
            assert_eq!(again.service(), first.service(), "{raw:?}");
        }
    }

    #[test]
    fn a_url_whose_host_is_only_www_is_refused() {
        // Found by the `identifiers` fuzz target: `www.` lost its `www.` and became an empty host,
        // whose canonical URL (`https://`) was no URL at all.
        for raw in ["www.", "https://www./x", "www..", "."] {
            assert!(ProfileUrl::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn canonicalises_known_services() {
        let cases = [
            (
                "https://www.linkedin.com/in/Ada-Lovelace/",
                "linkedin.com/in/ada-lovelace",
                Service::Linkedin,
            ),
            (
                "fr.linkedin.com/in/ada-lovelace?trk=x",
                "linkedin.com/in/ada-lovelace",
                Service::Linkedin,
            ),
            (
                "http://linkedin.com/in/ada-lovelace#top",
                "linkedin.com/in/ada-lovelace",
                Service::Linkedin,
            ),
            (
                "https://github.com/Octocat",
                "github.com/octocat",
                Service::Github,
            ),
            ("https://twitter.com/AdaL", "x.com/adal", Service::X),
            ("x.com/adal/", "x.com/adal", Service::X),
            ("https://keybase.io/ada", "keybase.io/ada", Service::Keybase),
            (
                "https://mastodon.social/@ada",
                "mastodon.social/@ada",
                Service::Mastodon,
            ),
            (
                "https://Example.com/team/ada/",
                "example.com/team/ada",
                Service::Other,
            ),
        ];
        for (raw, canonical, service) in cases {
            let p = ProfileUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((p.canonical(), p.service()), (canonical, service), "{raw}");
        }
    }

    #[test]
    fn refuses_non_profiles() {
        for raw in [
            "",
            "ftp://github.com/x",
            "https://github.com/org/repo",
            "https://linkedin.com/company/acme",
            "https://x.com/a/status/1",
        ] {
            assert!(ProfileUrl::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn handle_of_known_services() {
        assert_eq!(ProfileUrl::github("Octocat").handle(), Some("octocat"));
        assert_eq!(ProfileUrl::x("@AdaL").canonical(), "x.com/adal");
    }

    /// The plain-URL fast path must read every URL it accepts exactly as the `url` crate does, and
    /// must accept the URLs sources actually report.
    #[test]
    fn plain_parts_agree_with_the_url_crate() {
        for raw in [
            "https://github.com/octocat",
            "HTTPS://GitHub.com/Octocat/",
            "http://www.linkedin.com/in/ada-lovelace?trk=x#top",
            "x.com/adal",
            "https://mastodon.social/@ada",
            "https://example.co.uk/team/a+b/c=d&e",
        ] {
            let plain = plain_parts(raw).unwrap_or_else(|| panic!("{raw} takes the fast path"));
            assert_eq!(Ok(plain), url_parts(raw), "{raw}");
        }
        let pieces = [
            "https://",
            "http://",
            "ftp://",
            "://",
            "www.",
            "github.com",
            "x",
            "Ab",
            "0",
            "12",
            "-",
            ".",
            "..",
            "/",
            "//",
            ":",
            "@",
            "?",
            "#",
            "%",
            "%2e",
            "+",
            "=",
            "&",
            "_",
            "~",
            "'",
            "!",
            "xn--",
            "[",
            "]",
            "\\",
            " ",
            "\t",
            "é",
            "0x1",
            "in",
            "com",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut fast = 0;
        for _ in 0..200_000 {
            let len = 1 + next() % 8;
            let raw: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            if let Some(plain) = plain_parts(&raw) {
                fast += 1;
                assert_eq!(Ok(plain), url_parts(&raw), "{raw:?}");
            }
        }
        assert!(
            fast > 5_000,
            "only {fast} generated URLs took the fast path"
        );
    }
}
