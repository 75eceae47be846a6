//! The DNS source against a tiny UDP nameserver on loopback answering crafted responses.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::*;
use crate::domain::{DomainName, Email};
use crate::testkit::dns::{Zone, nameserver};

fn source(addr: SocketAddr, timeout_ms: u64) -> Dns {
    Dns {
        resolver: resolver(&format!("udp://{addr}"), Duration::from_millis(timeout_ms)),
    }
}

fn email(s: &str) -> Identifier {
    Identifier::Email(Email::parse(s).expect("valid email"))
}

fn facts(obs: &[Observation]) -> HashMap<&'static str, String> {
    obs.iter()
        .filter_map(|o| match o.field {
            Field::Fact(name) => Some((name, o.value.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn google_hosted_company_domain() {
    let zone = Zone::default()
        .mx("acme.example.", 1, "aspmx.l.google.com.")
        .mx("acme.example.", 5, "alt1.aspmx.l.google.com.")
        .txt("acme.example.", "google-site-verification=abc")
        .txt("acme.example.", "v=spf1 include:_spf.google.com ~all")
        .txt(
            "_dmarc.acme.example.",
            "v=DMARC1; p=quarantine; rua=mailto:d@acme.example",
        );
    let (addr, _) = nameserver(zone).await;
    let obs = source(addr, 1_000)
        .lookup(&email("jane@acme.example"))
        .await
        .expect("answered");
    let f = facts(&obs);
    assert_eq!(f["accepts_mail"], "true");
    assert_eq!(f["mail_provider"], "google");
    assert_eq!(f["email_kind"], "corporate");
    assert_eq!(f["spf"], "true");
    assert_eq!(f["dmarc"], "true");
    let dmarc = obs
        .iter()
        .find(|o| o.field == Field::Fact("dmarc"))
        .expect("dmarc fact");
    assert_eq!(dmarc.detail.as_deref(), Some("p=quarantine"));
}

#[tokio::test]
async fn microsoft_hosted_domain_without_spf_or_dmarc() {
    let zone = Zone::default().mx(
        "contoso.example.",
        0,
        "contoso-example.mail.protection.outlook.com.",
    );
    let (addr, _) = nameserver(zone).await;
    let id = Identifier::Domain(DomainName::parse("contoso.example").expect("valid"));
    let f = facts(&source(addr, 1_000).lookup(&id).await.expect("answered"));
    assert_eq!(f["mail_provider"], "microsoft");
    assert_eq!(f["spf"], "false");
    assert_eq!(f["dmarc"], "false");
}

#[tokio::test]
async fn webmail_and_disposable_domains_are_classified() {
    let zone = Zone::default()
        .mx("gmail.com.", 5, "gmail-smtp-in.l.google.com.")
        .mx("mailinator.com.", 1, "mail.mailinator.com.");
    let (addr, _) = nameserver(zone).await;
    let dns = source(addr, 1_000);
    let gmail = facts(&dns.lookup(&email("a@gmail.com")).await.expect("answered"));
    assert_eq!(gmail["email_kind"], "webmail");
    let temp = facts(
        &dns.lookup(&email("a@mailinator.com"))
            .await
            .expect("answered"),
    );
    assert_eq!(
        (temp["email_kind"].as_str(), temp["mail_provider"].as_str()),
        ("disposable", "other")
    );
}

#[tokio::test]
async fn null_mx_means_no_mail() {
    let zone = Zone::default().mx("nomail.example.", 0, ".");
    let (addr, _) = nameserver(zone).await;
    let f = facts(
        &source(addr, 1_000)
            .lookup(&email("x@nomail.example"))
            .await
            .expect("answered"),
    );
    assert_eq!(f["accepts_mail"], "false");
    assert!(!f.contains_key("mail_provider"));
}

#[tokio::test]
async fn nxdomain_says_the_domain_accepts_no_mail() {
    let zone = Zone {
        nx: vec!["gone.example.".into(), "_dmarc.gone.example.".into()],
        ..Zone::default()
    };
    let (addr, _) = nameserver(zone).await;
    let obs = source(addr, 1_000)
        .lookup(&email("x@gone.example"))
        .await
        .expect("answered");
    assert_eq!(obs.len(), 1, "{obs:?}");
    assert_eq!(obs[0].value, "false");
    assert_eq!(obs[0].detail.as_deref(), Some("the domain does not exist"));
}

#[tokio::test]
async fn servfail_is_an_error() {
    let (addr, _) = nameserver(Zone {
        servfail: true,
        ..Zone::default()
    })
    .await;
    let got = source(addr, 1_000).lookup(&email("x@acme.example")).await;
    assert!(matches!(got, Err(SourceError::Transport(_))), "{got:?}");
}

#[tokio::test]
async fn silent_nameserver_times_out() {
    // Bound but never read: queries go unanswered.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = silent.local_addr().expect("bound address");
    let dns = source(addr, 150);
    let got = tokio::time::timeout(Duration::from_secs(5), dns.lookup(&email("x@acme.example")))
        .await
        .expect("the resolver's own timeout fires first");
    assert!(matches!(got, Err(SourceError::Timeout)), "{got:?}");
    drop(silent);
}

#[test]
fn base_url_must_name_an_ip() {
    assert!(resolver("dns://1.1.1.1:53", Duration::from_secs(1)).is_some());
    assert!(resolver("tcp://[2606:4700:4700::1111]:53", Duration::from_secs(1)).is_some());
    assert!(resolver("dns://resolver.example:53", Duration::from_secs(1)).is_none());
}

#[test]
fn mx_hosts_map_to_providers() {
    let cases = [
        ("aspmx.l.google.com", "google"),
        ("acme-com.mail.protection.outlook.com.", "microsoft"),
        ("mail.protonmail.ch", "proton"),
        ("mx.zoho.eu", "zoho"),
        ("mx1.mail.ovh.net", "ovh"),
        ("mx.acme.example", "other"),
        ("notgoogle.com", "other"),
    ];
    for (host, want) in cases {
        assert_eq!(mail_provider(host), want, "{host}");
    }
}

#[test]
fn registry_accepts_nameserver_urls_for_dns_only() {
    use std::collections::BTreeMap;

    use crate::sources::registry::{SourceOverrides, resolve};

    let env = |_: &str| None;
    let with = |source: &str, base: &str| {
        let o = SourceOverrides {
            base_url: Some(base.to_string()),
            ..SourceOverrides::default()
        };
        resolve(&BTreeMap::from([(source.to_string(), o)]), &env)
    };
    let defaults = resolve(&BTreeMap::new(), &env).expect("every built-in default is valid");
    assert_eq!(defaults["dns"].base_url, "dns://1.1.1.1:53");
    assert_eq!(defaults["website"].base_url, "https://{domain}/");
    assert!(with("dns", "udp://127.0.0.1:5353").is_ok());
    assert!(with("dns", "https://1.1.1.1/dns-query").is_err());
    assert!(with("github", "dns://1.1.1.1:53").is_err());
    assert!(with("website", "http://127.0.0.1:8081/{domain}").is_ok());
}
