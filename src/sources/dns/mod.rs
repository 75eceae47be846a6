//! DNS facts about an email's domain: MX (does it accept mail, which provider hosts it), SPF and DMARC
//! presence, and whether the domain is a webmail provider's, a disposable-address service's or a
//! company's ([`crate::domain::is_webmail`]).
//!
//! `base_url` names the nameserver to ask: `dns://1.1.1.1:53` or `udp://...` (UDP), `tcp://...` (TCP).
//! The host must be an IP address. Names are queried fully qualified; no hosts file, no search list.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::spec::{Deps, SourceConfig, Spec};
use super::{Source, SourceError};
use crate::domain::{Identifier, is_disposable, is_webmail};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "dns",
    schemes: &["dns", "udp", "tcp"],
    defaults: || SourceConfig::new("dns://1.1.1.1:53", 2_000, 600, 0.9),
    build: |c: &SourceConfig, _deps: &Deps| {
        Arc::new(Dns {
            resolver: resolver(&c.base_url, Duration::from_millis(c.timeout_ms)),
        })
    },
};

pub struct Dns {
    /// `None` when `base_url` does not name a nameserver by IP address.
    resolver: Option<TokioResolver>,
}

/// A resolver that asks only the nameserver in `base_url`.
pub fn resolver(base_url: &str, timeout: Duration) -> Option<TokioResolver> {
    let url = url::Url::parse(base_url).ok()?;
    let ip: IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    let protocol = if url.scheme() == "tcp" {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let server = NameServerConfig::new(SocketAddr::new(ip, url.port().unwrap_or(53)), protocol);
    let config =
        ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(vec![server]));
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = 0;
    Some(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

impl Source for Dns {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn domain_only(&self) -> bool {
        true
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::Email(_) | Identifier::Domain(_))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let domain = match id {
                Identifier::Email(e) => e.domain(),
                Identifier::Domain(d) => d.as_str(),
                _ => return Ok(Vec::new()),
            };
            let resolver = self.resolver.as_ref().ok_or(SourceError::NotAttempted(
                "dns base_url must name a nameserver by IP address",
            ))?;
            let found = query(resolver, domain).await?;
            Ok(observations(domain, &found))
        }
        .boxed()
    }
}

/// What the three queries found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MailDns {
    /// The domain does not exist (NXDOMAIN).
    pub nx_domain: bool,
    /// MX exchange host names, lower case, without the final dot, by preference.
    pub mx: Vec<String>,
    pub spf: Option<String>,
    pub dmarc: Option<String>,
}

async fn query(resolver: &TokioResolver, domain: &str) -> Result<MailDns, SourceError> {
    let fqdn = format!("{domain}.");
    let dmarc_name = format!("_dmarc.{domain}.");
    let (mx, txt, dmarc) = tokio::join!(
        resolver.mx_lookup(fqdn.as_str()),
        resolver.txt_lookup(fqdn.as_str()),
        resolver.txt_lookup(dmarc_name.as_str()),
    );
    let mut found = MailDns::default();
    match mx {
        Ok(lookup) => {
            let mut records: Vec<(u16, String)> = lookup
                .iter()
                .map(|mx| {
                    (
                        mx.preference(),
                        mx.exchange()
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_lowercase(),
                    )
                })
                .collect();
            records.sort();
            found.mx = records
                .into_iter()
                .map(|(_, h)| h)
                .filter(|h| !h.is_empty())
                .collect();
        }
        Err(e) => match answer_kind(&e) {
            Negative::NxDomain => {
                found.nx_domain = true;
                return Ok(found);
            }
            Negative::NoData => {}
            Negative::Failed => return Err(dns_error(&e)),
        },
    }
    found.spf = first_txt(txt, "v=spf1")?;
    found.dmarc = first_txt(dmarc, "v=dmarc1")?;
    Ok(found)
}

fn first_txt(
    answer: Result<hickory_resolver::lookup::TxtLookup, ResolveError>,
    prefix: &str,
) -> Result<Option<String>, SourceError> {
    match answer {
        Ok(lookup) => Ok(lookup.iter().find_map(|txt| {
            let joined: String = txt
                .txt_data()
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect();
            let lower = joined.trim().to_ascii_lowercase();
            (lower == prefix
                || lower.starts_with(&format!("{prefix} "))
                || lower.starts_with(&format!("{prefix};")))
            .then_some(joined.trim().to_string())
        })),
        Err(e) if answer_kind(&e) == Negative::Failed => Err(dns_error(&e)),
        Err(_) => Ok(None),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Negative {
    NxDomain,
    NoData,
    Failed,
}

/// What a failed lookup means: hickory reports SERVFAIL and REFUSED as "no records" too, with the
/// response code inside.
fn answer_kind(e: &ResolveError) -> Negative {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Negative::NxDomain,
            ResponseCode::NoError => Negative::NoData,
            _ => Negative::Failed,
        },
        _ => Negative::Failed,
    }
}

fn dns_error(e: &ResolveError) -> SourceError {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::Timeout) => SourceError::Timeout,
        _ => SourceError::Transport("DNS query failed".to_string()),
    }
}

/// The mail provider an MX host belongs to.
pub fn mail_provider(mx_host: &str) -> &'static str {
    const PROVIDERS: &[(&str, &str)] = &[
        ("google.com", "google"),
        ("googlemail.com", "google"),
        ("outlook.com", "microsoft"),
        ("hotmail.com", "microsoft"),
        ("protection.outlook.com", "microsoft"),
        ("protonmail.ch", "proton"),
        ("proton.me", "proton"),
        ("zoho.com", "zoho"),
        ("zoho.eu", "zoho"),
        ("zohomail.com", "zoho"),
        ("ovh.net", "ovh"),
        ("mail.ovh.net", "ovh"),
    ];
    let host = mx_host.trim_end_matches('.').to_ascii_lowercase();
    PROVIDERS
        .iter()
        .find(|(suffix, _)| host == *suffix || host.ends_with(&format!(".{suffix}")))
        .map_or("other", |(_, p)| p)
}

/// Webmail, disposable or corporate, from the built-in lists.
pub fn email_kind(domain: &str) -> &'static str {
    if is_disposable(domain) {
        "disposable"
    } else if is_webmail(domain) {
        "webmail"
    } else {
        "corporate"
    }
}

fn observations(domain: &str, found: &MailDns) -> Vec<Observation> {
    let fact = |name: &'static str, value: &str| Observation::new(Field::Fact(name), value);
    let kind = email_kind(domain);
    if found.nx_domain {
        let mut out = vec![fact("accepts_mail", "false").with_detail("the domain does not exist")];
        // A listed domain is still worth naming even when it no longer resolves.
        if kind != "corporate" {
            out.push(fact("email_kind", kind));
        }
        return out;
    }
    // RFC 7505: a single MX "." (null MX) says the domain accepts no mail.
    let accepts = !found.mx.is_empty();
    let mut out = vec![
        match found.mx.first() {
            Some(host) => fact("accepts_mail", "true").with_detail(format!("mx {host}")),
            None => fact("accepts_mail", "false").with_detail("no MX record"),
        },
        fact("email_kind", kind),
        fact("spf", if found.spf.is_some() { "true" } else { "false" }),
    ];
    if accepts {
        out.push(fact("mail_provider", mail_provider(&found.mx[0])));
    }
    let dmarc = fact(
        "dmarc",
        if found.dmarc.is_some() {
            "true"
        } else {
            "false"
        },
    );
    out.push(match found.dmarc.as_deref().and_then(dmarc_policy) {
        Some(p) => dmarc.with_detail(format!("p={p}")),
        None => dmarc,
    });
    out
}

/// The `p=` tag of a DMARC record.
fn dmarc_policy(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("p")).then(|| v.trim().to_ascii_lowercase())
    })
}
