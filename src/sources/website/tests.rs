//! The website source against loopback HTTP servers, and the SSRF guard on user-supplied domains.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Path;
use axum::response::{Redirect, Response};
use axum::routing::get;

use super::*;
use crate::domain::{DomainName, Email};
use crate::sources::fake::{self, TableResolver};

const HOME: &str = r#"<!doctype html><html><head>
<title>Home | Acme Robotics</title>
<meta name="description" content="Warehouse robots that just work.">
</head><body><footer>
<a href="mailto:contact@acme.example">Contact</a> <a href="tel:+14155552671">Call us</a>
<a href="https://www.linkedin.com/company/acme-robotics">LinkedIn</a> <a href="https://github.com/acme-robotics">GitHub</a>
</footer></body></html>"#;

fn domain(d: &str) -> Identifier {
    Identifier::Domain(DomainName::parse(d).expect("valid domain"))
}

fn no_dns() -> Arc<dyn HostResolver> {
    Arc::new(TableResolver(HashMap::new()))
}

/// A site on loopback reached through an operator-configured template (trusted host).
async fn site(router: Router) -> Website {
    let addr = fake::serve(router).await;
    Website::new(
        &format!("http://{addr}/{{domain}}"),
        Duration::from_secs(2),
        no_dns(),
    )
}

fn page(status: u16, content_type: &'static str, body: &str) -> Response {
    fake::reply(status, content_type, body.to_string())
}

fn values(obs: &[Observation], name: &'static str) -> Vec<String> {
    obs.iter()
        .filter(|o| o.field == Field::Fact(name))
        .map(|o| o.value.to_string())
        .collect()
}

#[tokio::test]
async fn home_page_yields_company_facts() {
    let w = site(Router::new().route(
        "/{domain}",
        get(|Path(d): Path<String>| async move {
            assert_eq!(d, "acme.example", "the looked-up domain fills the template");
            page(200, "text/html; charset=utf-8", HOME)
        }),
    ))
    .await;
    let obs = w.lookup(&domain("acme.example")).await.expect("fetched");
    assert_eq!(values(&obs, "site_name"), ["Acme Robotics"]);
    assert_eq!(
        values(&obs, "site_description"),
        ["Warehouse robots that just work."]
    );
    assert_eq!(values(&obs, "contact_email"), ["contact@acme.example"]);
    assert_eq!(values(&obs, "contact_phone"), ["+14155552671"]);
    assert_eq!(
        values(&obs, "social"),
        [
            "https://linkedin.com/company/acme-robotics",
            "https://github.com/acme-robotics"
        ]
    );
    assert!(
        obs.iter()
            .any(|o| o.field == Field::Website && o.value == "https://acme.example")
    );
    assert!(
        !obs.iter()
            .any(|o| matches!(o.field, Field::Email | Field::Phone | Field::Profile)),
        "company contacts are facts, not the person's identifiers"
    );
}

#[tokio::test]
async fn missing_page_is_a_miss() {
    let w = site(Router::new().route(
        "/{d}",
        get(|| async { page(404, "text/html", "<h1>Not Found</h1>") }),
    ))
    .await;
    assert_eq!(
        w.lookup(&domain("acme.example")).await.expect("answered"),
        []
    );
}

#[tokio::test]
async fn non_html_and_oversized_bodies_are_malformed() {
    let big = format!("<html>{}</html>", "a".repeat(MAX_BODY + 1));
    let w = site(
        Router::new()
            .route(
                "/json.example",
                get(|| async { page(200, "application/json", "{}") }),
            )
            .route(
                "/big.example",
                get(move || async move { page(200, "text/html", &big) }),
            ),
    )
    .await;
    for d in ["json.example", "big.example"] {
        let got = w.lookup(&domain(d)).await;
        assert!(
            matches!(got, Err(SourceError::Malformed(_))),
            "{d}: {got:?}"
        );
    }
}

#[tokio::test]
async fn server_error_is_an_error() {
    let w =
        site(Router::new().route("/{d}", get(|| async { page(500, "text/html", "oops") }))).await;
    assert!(fake::is_status(
        &w.lookup(&domain("acme.example")).await,
        500
    ));
}

#[tokio::test]
async fn a_site_that_never_answers_ends_in_timeout_at_the_configured_timeout() {
    let upstream = fake::silent().await;
    let w = Website::new(
        &format!("http://{}/{{domain}}", upstream.addr),
        Duration::from_millis(200),
        no_dns(),
    );
    fake::assert_times_out(&upstream, w.lookup(&domain("acme.example"))).await;
}

#[tokio::test]
async fn redirects_to_internal_addresses_are_not_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let w = site(
        Router::new()
            .route(
                "/meta.example",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route(
                "/intranet.example",
                get(|| async { Redirect::temporary("http://10.0.0.1/") }),
            )
            .route(
                "/v6.example",
                get(|| async { Redirect::temporary("http://[::1]/") }),
            )
            .route(
                "/hop.example",
                get(|| async { Redirect::temporary("/acme.example") }),
            )
            .route(
                "/acme.example",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { page(200, "text/html", HOME) }
                }),
            ),
    )
    .await;
    for d in ["meta.example", "intranet.example", "v6.example"] {
        let got = w.lookup(&domain(d)).await;
        assert!(
            matches!(got, Err(SourceError::Transport(_))),
            "{d}: {got:?}"
        );
    }
    // A redirect within the operator's own host is followed.
    let obs = w.lookup(&domain("hop.example")).await.expect("followed");
    assert_eq!(values(&obs, "site_name"), ["Acme Robotics"]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn endless_redirects_stop_after_three() {
    let w = site(
        Router::new()
            .route(
                "/loop.example",
                get(|| async { Redirect::temporary("/loop.example?again") }),
            )
            .route(
                "/r1.example",
                get(|| async { Redirect::temporary("/r2.example") }),
            )
            .route(
                "/r2.example",
                get(|| async { Redirect::temporary("/r3.example") }),
            )
            .route(
                "/r3.example",
                get(|| async { Redirect::temporary("/acme.example") }),
            )
            .route(
                "/acme.example",
                get(|| async { page(200, "text/html", HOME) }),
            ),
    )
    .await;
    assert!(w.lookup(&domain("loop.example")).await.is_err());
    assert!(
        w.lookup(&domain("r1.example")).await.is_ok(),
        "three redirects are allowed"
    );
}

#[tokio::test]
async fn user_domains_resolving_to_internal_addresses_are_refused_before_any_request() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = fake::serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { page(200, "text/html", HOME) }
    }))
    .await;
    let resolver = TableResolver(HashMap::from([
        ("loopback.example", IpAddr::from([127, 0, 0, 1])),
        ("intranet.example", IpAddr::from([10, 0, 0, 1])),
        ("metadata.example", IpAddr::from([169, 254, 169, 254])),
        ("v6loop.example", "::1".parse().expect("ipv6 literal")),
    ]));
    // The host comes from the user's domain; the port points at the live loopback server, so a
    // missing guard would show up as a hit.
    let w = Website::new(
        &format!("http://{{domain}}:{}/", addr.port()),
        Duration::from_secs(2),
        Arc::new(resolver),
    );
    for d in [
        "loopback.example",
        "intranet.example",
        "metadata.example",
        "v6loop.example",
    ] {
        let got = w.lookup(&domain(d)).await;
        assert!(
            matches!(got, Err(SourceError::NotAttempted(_))),
            "{d}: {got:?}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request reached the internal server"
    );
}

#[test]
fn webmail_and_disposable_domains_have_no_company_site() {
    let w = Website::new("https://{domain}/", Duration::from_secs(1), no_dns());
    let email = |s: &str| Identifier::Email(Email::parse(s).expect("valid"));
    assert!(!w.accepts(&email("jane@gmail.com")));
    assert!(!w.accepts(&email("jane@yopmail.com")));
    assert!(w.accepts(&email("jane@acme.example")));
}

#[test]
fn title_names() {
    let cases = [
        ("Home | Acme Robotics", "Acme Robotics"),
        ("Acme – Warehouse robots", "Acme"),
        ("Solvéa - Accueil", "Solvéa"),
        ("Acme", "Acme"),
    ];
    for (title, want) in cases {
        assert_eq!(title_name(title), want, "{title}");
    }
}

/// Answers a public address first, loopback afterwards: a DNS-rebinding attacker's nameserver.
struct Rebinding(AtomicUsize);

impl HostResolver for Rebinding {
    fn lookup<'a>(
        &'a self,
        _host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<std::net::SocketAddr>>> {
        let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
        let ip = if first {
            IpAddr::from([93, 184, 215, 14])
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        async move { Ok(vec![std::net::SocketAddr::new(ip, port)]) }.boxed()
    }
}

#[tokio::test]
async fn dns_rebinding_after_the_check_cannot_reach_loopback() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = fake::serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { page(200, "text/html", HOME) }
    }))
    .await;
    let w = Website::new(
        &format!("http://{{domain}}:{}/", addr.port()),
        Duration::from_secs(2),
        Arc::new(Rebinding(AtomicUsize::new(0))),
    );
    let got = w.lookup(&domain("rebind.example")).await;
    // A site the lookup named fails as that host, not as the source (see `per_host`).
    assert!(
        matches!(&got, Err(SourceError::Host(e)) if matches!(**e, SourceError::Transport(_))),
        "{got:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the connection used a re-checked address"
    );
}

/// A home page of `n` distinct addresses, one per line.
fn stuffed_page(n: usize) -> String {
    let mut html = String::from("<html><head><title>Stuffed</title></head><body><pre>\n");
    for i in 0..n {
        html.push_str(&format!("p{i}@s.io\n"));
    }
    html.push_str("</pre></body></html>");
    html
}

#[tokio::test]
async fn a_page_of_forty_thousand_addresses_yields_the_first_few_in_order() {
    let html = stuffed_page(40_000);
    assert!(
        html.len() > 400 * 1024 && html.len() <= MAX_BODY,
        "{} bytes",
        html.len()
    );
    let w = site(Router::new().route(
        "/{domain}",
        get(move || {
            let html = html.clone();
            async move { page(200, "text/html", &html) }
        }),
    ))
    .await;

    let obs = w
        .lookup(&domain("stuffed.example"))
        .await
        .expect("a stuffed page is still a page");

    let emails = values(&obs, "contact_email");
    assert_eq!(emails.len(), crate::extract::MAX_FOUND);
    assert_eq!(emails[0], "p0@s.io");
    assert_eq!(emails[crate::extract::MAX_FOUND - 1], "p63@s.io");
    assert_eq!(values(&obs, "site_name"), ["Stuffed"]);
}
