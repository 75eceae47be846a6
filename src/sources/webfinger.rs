//! WebFinger (RFC 7033) for Mastodon-style profiles (`host/@user`):
//! `GET https://{host}/.well-known/webfinger?resource=acct:user@host` answers a JRD
//! (`application/jrd+json`) with `subject`, `aliases` and `links`; the
//! `http://webfinger.net/rel/profile-page` link is the canonical profile page (it may live on another
//! host than the one asked), the `http://webfinger.net/rel/avatar` link the photo.
//!
//! The host comes from the user's profile URL, so the default `base_url` template `https://{host}`
//! goes through the [SSRF guard](super::ssrf); an operator-set fixed base URL (a test server) is
//! trusted.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::per_host::PerHost;
use super::spec::{Deps, HTTP, SourceConfig, Spec};
use super::ssrf::{self, HostResolver, SystemResolver, TemplateHost};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{Identifier, ProfileUrl, Service};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "webfinger",
    schemes: HTTP,
    defaults: || SourceConfig::new("https://{host}", 2_500, 60, 0.7),
    build: |c: &SourceConfig, _deps: &Deps| {
        Arc::new(Webfinger::new(
            &c.base_url,
            Duration::from_millis(c.timeout_ms),
            Arc::new(SystemResolver),
        ))
    },
};

const PROFILE_PAGE: &str = "http://webfinger.net/rel/profile-page";
const AVATAR: &str = "http://webfinger.net/rel/avatar";

pub struct Webfinger {
    template: String,
    host: TemplateHost,
    resolver: Arc<dyn HostResolver>,
    client: Option<reqwest::Client>,
    /// Pause, breaker, rate and slots per server, when the server is the profile's own host.
    hosts: PerHost,
}

/// A JSON Resource Descriptor; unknown members are ignored.
#[derive(Debug, Deserialize)]
struct Jrd {
    subject: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    rel: String,
    href: Option<String>,
}

impl Webfinger {
    pub fn new(template: &str, timeout: Duration, resolver: Arc<dyn HostResolver>) -> Self {
        let host = ssrf::template_host(template);
        let trusted = match &host {
            TemplateHost::Operator(h) => vec![h.clone()],
            TemplateHost::User => Vec::new(),
        };
        Self {
            template: template.trim_end_matches('/').to_string(),
            client: ssrf::guarded_client(resolver.clone(), trusted, timeout).ok(),
            host,
            resolver,
            hosts: PerHost::new(),
        }
    }

    /// Asks the profile's host within its own etiquette when the host is the profile's (so that it
    /// can neither pause nor trip the source for other lookups), or the operator's server.
    async fn fetch(&self, host: &str, user: &str) -> Result<Vec<Observation>, SourceError> {
        match self.host {
            TemplateHost::User => self.hosts.call(host, self.ask(host, user)).await,
            TemplateHost::Operator(_) => self.ask(host, user).await,
        }
    }

    /// A lookup's check of a host the profile chose, before anything is sent: it must resolve to
    /// public addresses only. Asks the resolver about the host alone.
    async fn check_host(&self, base: &str) -> Result<(), SourceError> {
        if self.host == TemplateHost::User {
            ssrf::check_url_resolved(base, self.resolver.as_ref())
                .await
                .map_err(|_| SourceError::NotAttempted("the SSRF guard refused the target host"))?;
        }
        Ok(())
    }

    async fn ask(&self, host: &str, user: &str) -> Result<Vec<Observation>, SourceError> {
        let base = self.template.replace("{host}", host);
        self.check_host(&base).await?;
        let client = self.client.clone().ok_or(SourceError::NotAttempted(
            "the HTTP client could not be built",
        ))?;
        let resource: String =
            url::form_urlencoded::byte_serialize(format!("acct:{user}@{host}").as_bytes())
                .collect();
        let jrd = Upstream::new(client, &base)
            .with_header("accept", "application/jrd+json, application/json")
            .with_max_body(64 * 1024)
            .get_json::<Jrd>(&format!("/.well-known/webfinger?resource={resource}"))
            .await?;
        Ok(match jrd {
            Fetched::NotFound => Vec::new(),
            Fetched::Found(jrd) => observations(jrd),
        })
    }
}

impl Source for Webfinger {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        account(id).is_some()
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            match account(id) {
                Some((host, user)) => self.fetch(host, user).await,
                None => Ok(Vec::new()),
            }
        }
        .boxed()
    }

    /// As a miss would go: within the host's own etiquette and after the same check of the host
    /// (which names the host only), then `latency` with nothing sent.
    fn feign<'a>(
        &'a self,
        id: &'a Identifier,
        latency: Duration,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Some((host, _)) = account(id) else {
                return Ok(Vec::new());
            };
            let feigned = async {
                self.check_host(&self.template.replace("{host}", host))
                    .await?;
                tokio::time::sleep(latency).await;
                Ok(Vec::new())
            };
            match self.host {
                TemplateHost::User => self.hosts.call(host, feigned).await,
                TemplateHost::Operator(_) => feigned.await,
            }
        }
        .boxed()
    }
}

/// Host and user of a Mastodon-style profile (`host/@user`).
fn account(id: &Identifier) -> Option<(&str, &str)> {
    let Identifier::Profile(p) = id else {
        return None;
    };
    if p.service() != Service::Mastodon {
        return None;
    }
    let (host, user) = p.canonical().split_once("/@")?;
    let user = user.split('/').next()?;
    (!host.is_empty() && !user.is_empty() && !user.contains('@')).then_some((host, user))
}

fn observations(jrd: Jrd) -> Vec<Observation> {
    let Some(acct) = jrd.subject.strip_prefix("acct:") else {
        return Vec::new();
    };
    let mut out = vec![Observation::new(
        Field::Fact("fediverse_account"),
        format!("@{acct}"),
    )];
    let mut pages: Vec<&str> = jrd
        .links
        .iter()
        .filter(|l| l.rel == PROFILE_PAGE)
        .filter_map(|l| l.href.as_deref())
        .collect();
    pages.extend(jrd.aliases.iter().map(String::as_str));
    for page in pages {
        if let Some(p) = ProfileUrl::parse(page)
            .ok()
            .filter(|p| p.service() != Service::Other)
        {
            let obs = Observation::profile(p);
            if !out.contains(&obs) {
                out.push(obs);
            }
        }
    }
    if let Some(avatar) = jrd
        .links
        .iter()
        .find(|l| l.rel == AVATAR)
        .and_then(|l| l.href.clone())
    {
        out.push(Observation::new(Field::Photo, avatar));
    }
    out
}

/// A JRD read as `lookup` reads it (for the fuzz targets).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Observation>, serde_json::Error> {
    serde_json::from_slice::<Jrd>(body).map(observations)
}

#[cfg(test)]
#[path = "webfinger_tests.rs"]
mod tests;
