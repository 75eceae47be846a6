use std::fmt;

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
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("https://{trimmed}")
        };
        let url = Url::parse(&with_scheme).map_err(|_| Invalid::new("is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::new("must be an http or https URL"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Invalid::new("has no host"))?
            .to_lowercase();
        let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| {
                s.filter(|p| !p.is_empty())
                    .map(|p| percent_decode(p).to_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let first = segments.first().map(String::as_str);
        let second = segments.get(1).map(String::as_str);

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
        if matches!(
            host.as_str(),
            "x.com" | "twitter.com" | "mobile.twitter.com"
        ) {
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
        let path = segments.join("/");
        let canonical = if path.is_empty() {
            host
        } else {
            format!("{host}/{path}")
        };
        Ok(Self::known(service, canonical))
    }

    /// `github.com/<login>` from a bare login.
    pub fn github(login: &str) -> Self {
        Self::known(
            Service::Github,
            format!("github.com/{}", login.to_lowercase()),
        )
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
        format!("https://{}", self.canonical)
    }
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
}
