//! The company's home page: site name, description, social links and the contact emails and phones it
//! publishes, read with [`crate::extract`].
//!
//! `base_url` is a URL template; `{domain}` is replaced by the domain looked up. The default,
//! `https://{domain}/`, puts the user-supplied domain in the host, so the [SSRF guard](super::ssrf)
//! applies: the host must resolve to public addresses only, the connection goes to the checked
//! addresses, redirects are re-checked (at most three). An operator may point the template at a fixed
//! host (`http://127.0.0.1:8081/{domain}` for a local mirror or a test): that host is the operator's
//! choice and is trusted; redirects away from it are checked again. Bodies are capped at
//! [`MAX_BODY`] and must be `text/html`.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::per_host::PerHost;
use super::spec::{Deps, HTTP, SourceConfig, Spec};
use super::ssrf::{self, HostResolver, SystemResolver, TemplateHost};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::Identifier;
use crate::domain::{is_disposable, is_webmail};
use crate::extract;
use crate::profile::{Field, Observation};

/// Home pages above this are refused.
pub const MAX_BODY: usize = 512 * 1024;

pub const SPEC: Spec = Spec {
    name: "website",
    schemes: HTTP,
    defaults: || SourceConfig::new("https://{domain}/", 3_000, 60, 0.5),
    build: |c: &SourceConfig, _deps: &Deps| {
        Arc::new(Website::new(
            &c.base_url,
            Duration::from_millis(c.timeout_ms),
            Arc::new(SystemResolver),
        ))
    },
};

pub struct Website {
    template: String,
    host: TemplateHost,
    resolver: Arc<dyn HostResolver>,
    /// `None` if the TLS backend could not be initialised; lookups then report `NotAttempted`.
    client: Option<reqwest::Client>,
    /// Pause, breaker, rate and slots per site, when the site is the one the lookup names.
    hosts: PerHost,
}

impl Website {
    /// A website source fetching `template` (with `{domain}`), resolving user-supplied hosts with
    /// `resolver`.
    pub fn new(template: &str, timeout: Duration, resolver: Arc<dyn HostResolver>) -> Self {
        let host = ssrf::template_host(template);
        let trusted = match &host {
            TemplateHost::Operator(h) => vec![h.clone()],
            TemplateHost::User => Vec::new(),
        };
        let client = ssrf::guarded_client(resolver.clone(), trusted, timeout).ok();
        Self {
            template: template.to_string(),
            host,
            resolver,
            client,
            hosts: PerHost::new(),
        }
    }

    /// The page of `domain`; a site the lookup chose is asked within its own etiquette, so that it can
    /// neither pause nor trip the source for other lookups.
    async fn fetch(&self, domain: &str) -> Result<Vec<Observation>, SourceError> {
        match self.host {
            TemplateHost::User => self.hosts.call(domain, self.read(domain)).await,
            TemplateHost::Operator(_) => self.read(domain).await,
        }
    }

    async fn read(&self, domain: &str) -> Result<Vec<Observation>, SourceError> {
        let url = self.template.replace("{domain}", domain);
        if self.host == TemplateHost::User {
            ssrf::check_url_resolved(&url, self.resolver.as_ref())
                .await
                .map_err(|_| SourceError::NotAttempted("the SSRF guard refused the target host"))?;
        }
        let client = self.client.clone().ok_or(SourceError::NotAttempted(
            "the HTTP client could not be built",
        ))?;
        let page = Upstream::new(client, &url)
            .with_header("accept", "text/html")
            .with_max_body(MAX_BODY)
            .get_bytes("", &["text/html"])
            .await?;
        match page {
            Fetched::NotFound => Ok(Vec::new()),
            // Reading up to a megabyte of markup is CPU work: it runs on the blocking pool, so that a
            // large page never holds an async worker (and the other lookups' deadlines) hostage.
            Fetched::Found(body) => {
                let domain = domain.to_string();
                tokio::task::spawn_blocking(move || {
                    observations(&domain, &String::from_utf8_lossy(&body))
                })
                .await
                .map_err(|_| SourceError::NotAttempted("the page could not be read"))
            }
        }
    }
}

impl Source for Website {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn domain_only(&self) -> bool {
        true
    }

    fn accepts(&self, id: &Identifier) -> bool {
        target_domain(id).is_some()
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            match target_domain(id) {
                Some(domain) => self.fetch(domain).await,
                None => Ok(Vec::new()),
            }
        }
        .boxed()
    }
}

/// The company domain an identifier points at; webmail and disposable domains have no company site.
fn target_domain(id: &Identifier) -> Option<&str> {
    let domain = match id {
        Identifier::Domain(d) | Identifier::NameAtDomain(_, d) => d.as_str(),
        Identifier::Email(e) => e.domain(),
        _ => return None,
    };
    (!is_webmail(domain) && !is_disposable(domain)).then_some(domain)
}

/// Company facts from a home page. Contacts a company publishes are the company's, not a person's:
/// they are facts, never `Email`/`Phone`/`Profile` values the fan-out would follow.
pub fn observations(domain: &str, html: &str) -> Vec<Observation> {
    let meta = extract::page_meta(html);
    let found = extract::extract(html, None);
    let fact = |name: &'static str, value: &str| Observation::new(Field::Fact(name), value);
    let mut out = vec![
        Observation::new(Field::Website, format!("https://{domain}")),
        Observation::new(Field::CompanyDomain, domain),
    ];
    if let Some(name) = meta
        .site_name
        .or_else(|| meta.title.as_deref().map(title_name))
    {
        out.push(fact("site_name", &name));
    }
    if let Some(d) = meta.description {
        out.push(fact("site_description", &d));
    }
    for page in &found.company_pages {
        out.push(fact("social", &format!("https://{page}")));
    }
    for p in &found.profile_urls {
        out.push(fact("social", &p.to_url()));
    }
    for e in &found.emails {
        out.push(fact("contact_email", e.as_str()));
    }
    for p in &found.phones {
        out.push(fact("contact_phone", p.as_str()));
    }
    out
}

/// The name part of a `<title>` such as "Acme – Warehouse robots" or "Home | Acme".
fn title_name(title: &str) -> String {
    const GENERIC: [&str; 5] = ["home", "accueil", "startseite", "inicio", "welcome"];
    let title = title.replace(" - ", " | ");
    title
        .split(['|', '–', '—', '·'])
        .map(str::trim)
        .find(|p| !p.is_empty() && !GENERIC.contains(&p.to_lowercase().as_str()))
        .unwrap_or(title.trim())
        .to_string()
}
