//! The SSRF guard for URLs whose host comes from user input (a company domain, a Mastodon host, a
//! batch webhook).
//!
//! A URL passes when its scheme is http(s), it carries no credentials, and every address its host
//! stands for is public: not private (10/8, 172.16/12, 192.168/16), loopback, link-local (including the
//! cloud metadata address 169.254.169.254), unique-local, CGNAT (100.64/10), unspecified, broadcast or
//! multicast. [`guarded_client`] checks inside the HTTP client's own resolver, so the address that is
//! checked is the address that is connected to (no DNS-rebinding window), and re-checks every
//! redirect target (at most [`MAX_REDIRECTS`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use url::{Host, Url};

/// Redirects followed before the fetch is abandoned.
pub const MAX_REDIRECTS: usize = 3;

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("the URL is not a valid absolute URL")]
    Invalid,
    #[error("the URL's scheme must be http or https")]
    Scheme,
    #[error("the URL carries credentials")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL's host is a {0} address")]
    Forbidden(&'static str),
    #[error("the URL's host could not be resolved")]
    Unresolved,
}

/// The forbidden range `ip` falls in, if any.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if let Some(v4) = v6.to_ipv4() {
                // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
                forbidden_v4(v4)
            } else if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
                let [.., a, b, c, d] = v6.octets();
                forbidden_v4(Ipv4Addr::new(a, b, c, d))
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

/// Checks what can be checked without DNS: scheme, credentials, literal IP hosts and `localhost`.
pub fn check_url(raw: &str) -> Result<Url, SsrfError> {
    let url = Url::parse(raw).map_err(|_| SsrfError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SsrfError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    match url.host() {
        None => return Err(SsrfError::NoHost),
        Some(Host::Ipv4(ip)) => refuse_ip(IpAddr::V4(ip))?,
        Some(Host::Ipv6(ip)) => refuse_ip(IpAddr::V6(ip))?,
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            if d == "localhost" || d.ends_with(".localhost") {
                return Err(SsrfError::Forbidden("loopback"));
            }
        }
    }
    Ok(url)
}

fn refuse_ip(ip: IpAddr) -> Result<(), SsrfError> {
    forbidden_range(ip).map_or(Ok(()), |r| Err(SsrfError::Forbidden(r)))
}

/// Resolves host names; injectable so tests can make a public-looking name point at loopback.
pub trait HostResolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str, port: u16)
    -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver.
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) }.boxed()
    }
}

/// [`check_url`], then resolves the host and refuses it if any of its addresses is forbidden.
/// Returns the URL and the checked addresses.
pub async fn check_url_resolved(
    raw: &str,
    resolver: &dyn HostResolver,
) -> Result<(Url, Vec<SocketAddr>), SsrfError> {
    let url = check_url(raw)?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(d)) => resolve_checked(resolver, d, port).await?,
        None => return Err(SsrfError::NoHost),
    };
    Ok((url, addrs))
}

async fn resolve_checked(
    resolver: &dyn HostResolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, SsrfError> {
    let addrs = resolver
        .lookup(host, port)
        .await
        .map_err(|_| SsrfError::Unresolved)?;
    if addrs.is_empty() {
        return Err(SsrfError::Unresolved);
    }
    // One forbidden address refuses the name: the client could pick any of them.
    for a in &addrs {
        refuse_ip(a.ip())?;
    }
    Ok(addrs)
}

/// The HTTP client's resolver: every name it connects to is resolved here and refused when forbidden,
/// except the operator's own configured hosts.
struct GuardedDns {
    resolver: Arc<dyn HostResolver>,
    trusted: Arc<Vec<String>>,
}

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.resolver.clone();
        let trusted = self.trusted.iter().any(|t| t == name.as_str());
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = if trusted {
                resolver.lookup(&host, 0).await?
            } else {
                resolve_checked(resolver.as_ref(), &host, 0).await?
            };
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// A client for user-influenced URLs: names resolve through the guard, every redirect is re-checked and
/// at most [`MAX_REDIRECTS`] are followed. `trusted_hosts` are hosts the operator configured (a test
/// server on loopback); they and their redirects to themselves are not refused.
pub fn guarded_client(
    resolver: Arc<dyn HostResolver>,
    trusted_hosts: Vec<String>,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let trusted = Arc::new(trusted_hosts);
    let for_redirects = trusted.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        let host = attempt.url().host_str().unwrap_or("").to_string();
        if for_redirects.contains(&host) {
            return attempt.follow();
        }
        match check_url(attempt.url().as_str()) {
            Ok(_) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedDns { resolver, trusted }))
        .redirect(policy)
        .timeout(timeout)
        .build()
}

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// The host of a URL template's authority when it is filled from user input (`https://{domain}/`),
/// or the operator's fixed host otherwise.
pub fn template_host(template: &str) -> TemplateHost {
    let filled = template
        .replace("{domain}", "example.invalid")
        .replace("{host}", "example.invalid");
    match Url::parse(&filled)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        Some(h) if h.contains("example.invalid") => TemplateHost::User,
        Some(h) => TemplateHost::Operator(h.trim_matches(['[', ']']).to_string()),
        None => TemplateHost::User,
    }
}

/// Who chose the host a source connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateHost {
    /// The host comes from the identifier: guarded.
    User,
    /// The operator configured this host (`base_url`): trusted.
    Operator(String),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use std::net::Ipv6Addr;

    use crate::sources::fake::TableResolver;

    #[test]
    fn literal_internal_addresses_from_user_input_are_refused() {
        let cases = [
            ("http://127.0.0.1/", "loopback"),
            ("http://127.1.2.3:8080/x", "loopback"),
            ("http://10.0.0.1/", "private"),
            ("http://172.16.5.4/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[::1]/", "loopback"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fd00::1]/", "unique-local"),
            ("http://[fec0::1]/", "site-local"),
            ("http://[feff:ffff::1]/", "site-local"),
            ("http://[ff02::1]/", "multicast"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://100.64.0.1/", "shared (CGNAT)"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://0.1.2.3/", "unspecified"),
            ("http://224.0.0.1/", "multicast or reserved"),
            ("http://localhost:8080/", "loopback"),
            // Numeric host spellings that browsers and resolvers read as 127.0.0.1.
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://[::127.0.0.1]/", "loopback"),
            ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ];
        for (url, range) in cases {
            assert_eq!(check_url(url), Err(SsrfError::Forbidden(range)), "{url}");
        }
    }

    #[test]
    fn other_refusals() {
        assert_eq!(check_url("file:///etc/passwd"), Err(SsrfError::Scheme));
        assert_eq!(check_url("gopher://example.com/"), Err(SsrfError::Scheme));
        assert_eq!(
            check_url("http://user:pw@example.com/"),
            Err(SsrfError::Credentials)
        );
        assert_eq!(
            check_url("http://user@example.com/"),
            Err(SsrfError::Credentials),
            "a user name alone"
        );
        assert_eq!(check_url("not a url"), Err(SsrfError::Invalid));
    }

    #[test]
    fn public_urls_pass() {
        for url in [
            "https://example.com/",
            "http://93.184.215.14/",
            "https://[2606:4700::1111]/",
            // Next to the shared (CGNAT) block 100.64.0.0/10, and its second octet elsewhere.
            "http://100.63.255.255/",
            "http://100.128.0.1/",
            "http://8.64.0.1/",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let resolver = TableResolver(HashMap::from([
            ("rebind.example", IpAddr::from([127, 0, 0, 1])),
            ("metadata.example", IpAddr::from([169, 254, 169, 254])),
            ("intranet.example", IpAddr::from([10, 0, 0, 1])),
            ("v6.example", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("public.example", IpAddr::from([93, 184, 215, 14])),
        ]));
        for (url, range) in [
            ("https://rebind.example/", "loopback"),
            ("https://metadata.example/", "link-local"),
            ("https://intranet.example/", "private"),
            ("https://v6.example/", "loopback"),
        ] {
            let got = check_url_resolved(url, &resolver).await.map(|(_, a)| a);
            assert_eq!(got, Err(SsrfError::Forbidden(range)), "{url}");
        }
        let (_, addrs) = check_url_resolved("https://public.example/", &resolver)
            .await
            .expect("public address passes");
        assert_eq!(addrs, [SocketAddr::from(([93, 184, 215, 14], 443))]);
        assert_eq!(
            check_url_resolved("https://missing.example/", &resolver)
                .await
                .map(|_| ()),
            Err(SsrfError::Unresolved)
        );
    }

    /// The client's own resolver lets only the operator's named hosts reach loopback: the same
    /// server, under a trusted name and an untrusted one, answers the first and is refused the second.
    #[tokio::test]
    async fn the_guarded_client_resolves_only_trusted_names_to_loopback() {
        let addr = crate::sources::fake::serve(
            axum::Router::new().route("/", axum::routing::get(|| async { "ok" })),
        )
        .await;
        let resolver = Arc::new(TableResolver(HashMap::from([
            ("operator.example", addr.ip()),
            ("rebind.example", addr.ip()),
        ])));
        let client = guarded_client(
            resolver,
            vec!["operator.example".into()],
            Duration::from_secs(5),
        )
        .expect("client");
        let trusted = client
            .get(format!("http://operator.example:{}/", addr.port()))
            .send()
            .await
            .expect("the operator's host is reached");
        assert_eq!(trusted.status(), 200);
        let refused = client
            .get(format!("http://rebind.example:{}/", addr.port()))
            .send()
            .await;
        assert!(
            refused.is_err(),
            "a user-supplied name resolving to loopback was connected to"
        );
    }

    #[test]
    fn template_host_tells_user_hosts_from_operator_hosts() {
        assert_eq!(template_host("https://{domain}/"), TemplateHost::User);
        assert_eq!(template_host("https://{host}"), TemplateHost::User);
        assert_eq!(
            template_host("http://127.0.0.1:8080/sites/{domain}/"),
            TemplateHost::Operator("127.0.0.1".into())
        );
    }
}
