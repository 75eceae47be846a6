use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use super::SourceError;

/// Bodies above this are refused as malformed: no profile API answers with megabytes.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// An HTTP upstream: a base URL, a shared client, optional credentials, a body cap.
///
/// Paths appended to `base` are the real API's documented paths, so pointing `base` at a local server
/// that speaks the same API works.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base: String,
    /// `base` parsed once, when it is a plain http(s) URL: a request then sets its path and query on a
    /// copy instead of having reqwest parse the whole URL, host included, again.
    base_url: Option<Url>,
    headers: HeaderMap,
    secret_header: Option<(&'static str, SecretString, &'static str)>,
    max_body: usize,
}

/// Whether `haystack` contains the lower-case ASCII `needle`, in any case.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len().max(1))
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// What an upstream answered: a JSON document, or "not found".
pub enum Fetched<T> {
    Found(T),
    NotFound,
}

impl Upstream {
    pub fn new(client: reqwest::Client, base: &str) -> Self {
        let base = base.trim_end_matches('/').to_string();
        let base_url = Url::parse(&base).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.query().is_none()
                && u.fragment().is_none()
                && u.as_str().trim_end_matches('/') == base
        });
        Self {
            client,
            base,
            base_url,
            headers: HeaderMap::new(),
            secret_header: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// A fixed header sent with every request (`Accept`, an API version...).
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    /// A secret header such as `Authorization: Bearer <key>`; never logged.
    pub fn with_secret(
        mut self,
        name: &'static str,
        prefix: &'static str,
        secret: Option<SecretString>,
    ) -> Self {
        self.secret_header = secret.map(|s| (name, s, prefix));
        self
    }

    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs `base + path` (path already percent-encoded) and decodes a JSON body.
    /// 404 and 410 are `NotFound`; 429 and 403-with-rate-limit headers are `RateLimited`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Fetched<T>, SourceError> {
        match self.get_bytes(path, &["json"]).await? {
            Fetched::NotFound => Ok(Fetched::NotFound),
            Fetched::Found(body) => serde_json::from_slice(&body)
                .map(Fetched::Found)
                .map_err(|e| SourceError::invalid_json(&e)),
        }
    }

    /// GETs `base + path` and returns the capped body when its content type contains one of `types`.
    pub async fn get_bytes(
        &self,
        path: &str,
        types: &[&str],
    ) -> Result<Fetched<Bytes>, SourceError> {
        let mut req = match self.base_url.as_ref().and_then(|base| appended(base, path)) {
            Some(url) => self.client.get(url),
            None => {
                let mut url = String::with_capacity(self.base.len() + path.len());
                url.push_str(&self.base);
                url.push_str(path);
                self.client.get(url)
            }
        };
        // Header by header: `headers()` takes a whole map, which would be copied and then copied again.
        for (name, value) in &self.headers {
            req = req.header(name.clone(), value.clone());
        }
        if let Some((name, secret, prefix)) = &self.secret_header {
            req = req.header(*name, format!("{prefix}{}", secret.expose_secret()));
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => return Ok(Fetched::NotFound),
            451 => return Err(SourceError::Objected),
            429 => {
                return Err(SourceError::RateLimited {
                    retry_after: retry_after(resp.headers()),
                });
            }
            403 if resp
                .headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v == "0") =>
            {
                return Err(SourceError::RateLimited {
                    retry_after: retry_after(resp.headers()),
                });
            }
            _ => return Err(SourceError::Status { status }),
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !types
            .iter()
            .any(|t| contains_ignoring_case(content_type, t))
        {
            return Err(SourceError::Malformed(format!(
                "unexpected content type '{}'",
                content_type.to_ascii_lowercase()
            )));
        }
        let too_big =
            || SourceError::Malformed(format!("body larger than {} bytes", self.max_body));
        match resp.content_length() {
            Some(n) if n > self.max_body as u64 => return Err(too_big()),
            // A declared length within the cap: hyper stops reading at it, so take the body whole.
            Some(_) => return Ok(Fetched::Found(resp.bytes().await.map_err(transport)?)),
            None => {}
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            if body.len() + chunk.len() > self.max_body {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Found(Bytes::from(body)))
    }
}

/// The URL that parsing `base + path` gives (`path` percent-encoded, with its `?query` if any), built
/// by setting the path and query on a copy of `base`: the scheme and host are not parsed again. `None`
/// for a path with a `#`, which `set_path` would escape where a parse starts a fragment.
fn appended(base: &Url, path: &str) -> Option<Url> {
    if path.contains('#') {
        return None;
    }
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let prefix = base.path().trim_end_matches('/');
    let mut full = String::with_capacity(prefix.len() + path.len());
    full.push_str(prefix);
    full.push_str(path);
    let mut url = base.clone();
    url.set_path(&full);
    url.set_query(query);
    Some(url)
}

fn transport(e: reqwest::Error) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout
    } else {
        // reqwest's Display includes the URL, which may carry an identifier: keep only the kind.
        let kind = if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "body interrupted"
        } else {
            "request failed"
        };
        SourceError::Transport(kind.to_string())
    }
}

/// `Retry-After` as delta-seconds (HTTP dates are rare on APIs and read as absent).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every base the fast path takes, with paths the sources send and odd ones: the URL must be the one
    /// reqwest would have parsed from the joined string.
    #[test]
    fn appended_urls_are_the_parsed_joined_strings() {
        let bases = [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "https://api.github.com",
            "https://api.gravatar.com/v3",
            "https://example.com/api/v1/",
            "http://[::1]:9000/x",
            "https://xn--bcher-kva.example",
        ];
        let paths = [
            "",
            "/",
            "/profiles/0f3c9b2d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c",
            "/search/commits?q=author-email%3Aada%40example.com&per_page=5",
            "/users/ada-l",
            "/users/a%20b",
            "/users/a b",
            "/a/./b/../c",
            "/a\\b",
            "/q?x=1&y=%zz&z=a b",
            "/x?",
            "/x??y",
            "/caf\u{e9}?\u{e7}=1",
            "/x'y?a'b",
            "/%2e%2e/up",
        ];
        let client = reqwest::Client::new();
        let mut fast = 0;
        for base in bases {
            let upstream = Upstream::new(client.clone(), base);
            let Some(parsed_base) = &upstream.base_url else {
                continue;
            };
            fast += 1;
            for path in paths {
                let joined = format!("{}{path}", upstream.base);
                let expected = Url::parse(&joined).expect("joined test URL parses");
                assert_eq!(appended(parsed_base, path), Some(expected), "{joined}");
            }
        }
        assert_eq!(fast, bases.len(), "every test base takes the fast path");
    }

    #[test]
    fn unusual_bases_keep_the_string_path() {
        let client = reqwest::Client::new();
        for base in [
            "HTTP://Example.com",
            "http://example.com:80",
            "http://example.com/?k=v",
            "ftp://example.com",
            "not a url",
        ] {
            assert!(
                Upstream::new(client.clone(), base).base_url.is_none(),
                "{base}"
            );
        }
    }
}
