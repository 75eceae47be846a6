//! The RDAP source against a loopback server answering RFC 9083 domain objects.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

use super::*;
use crate::domain::{DomainName, Email};
use crate::sources::fake;

/// A domain object shaped like a gTLD registry's answer (Verisign-style), registrant disclosed.
const ACME: &str = r#"{
  "objectClassName": "domain",
  "handle": "2336799_DOMAIN_COM-VRSN",
  "ldhName": "ACME.EXAMPLE",
  "links": [{"value": "https://rdap.example/domain/ACME.EXAMPLE", "rel": "self", "href": "https://rdap.example/domain/ACME.EXAMPLE", "type": "application/rdap+json"}],
  "status": ["client delete prohibited", "client transfer prohibited"],
  "entities": [
    {"objectClassName": "entity", "handle": "292", "roles": ["registrar"],
     "publicIds": [{"type": "IANA Registrar ID", "identifier": "292"}],
     "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "MarkMonitor Inc."]]],
     "entities": [{"objectClassName": "entity", "roles": ["abuse"],
       "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", ""], ["tel", {"type": "voice"}, "uri", "tel:+1.2086851750"], ["email", {}, "text", "abusecomplaints@markmonitor.com"]]]}]},
    {"objectClassName": "entity", "handle": "REG-1", "roles": ["registrant"],
     "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Domain Administrator"],
       ["org", {}, "text", "Acme Robotics, Inc."],
       ["adr", {}, "text", ["", "", "1 Main St", "San Francisco", "CA", "94105", "US"]]]]}
  ],
  "events": [
    {"eventAction": "registration", "eventDate": "1997-09-15T04:00:00Z"},
    {"eventAction": "expiration", "eventDate": "2028-09-14T04:00:00Z"},
    {"eventAction": "last update of RDAP database", "eventDate": "2024-05-01T12:00:00Z"}
  ],
  "secureDNS": {"delegationSigned": false},
  "nameservers": [{"objectClassName": "nameserver", "ldhName": "NS1.ACME.EXAMPLE"}],
  "rdapConformance": ["rdap_level_0", "icann_rdap_technical_implementation_guide_0", "icann_rdap_response_profile_0"],
  "notices": [{"title": "Terms of Use", "description": ["Service subject to Terms of Use."]}]
}"#;

/// Registrant redacted as ICANN's temporary specification requires.
const REDACTED: &str = r#"{
  "objectClassName": "domain", "ldhName": "private.example",
  "entities": [
    {"objectClassName": "entity", "roles": ["registrar"], "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "NameCheap, Inc."]]]},
    {"objectClassName": "entity", "roles": ["registrant"], "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", ""], ["org", {}, "text", "Privacy service provided by Withheld for Privacy ehf"]]]}
  ],
  "events": [{"eventAction": "registration", "eventDate": "2019-03-02T10:11:12.000Z"}],
  "redacted": [{"name": {"type": "Registrant Name"}, "method": "removal"}]
}"#;

const NOT_FOUND: &str = r#"{"errorCode": 404, "title": "Not Found", "description": ["The object does not exist."], "rdapConformance": ["rdap_level_0"]}"#;

async fn rdap() -> Rdap {
    let addr = fake::serve(Router::new().route(
        "/domain/{domain}",
        get(|Path(domain): Path<String>| async move {
            let rdap = "application/rdap+json";
            match domain.as_str() {
                "acme.example" => fake::reply(200, rdap, ACME),
                "private.example" => fake::reply(200, rdap, REDACTED),
                "garbage.example" => fake::reply(200, rdap, "{\"objectClassName\":"),
                "entity.example" => fake::reply(200, rdap, r#"{"objectClassName":"entity"}"#),
                "down.example" => fake::reply(500, rdap, "{}"),
                _ => fake::reply(404, rdap, NOT_FOUND),
            }
        }),
    ))
    .await;
    Rdap {
        upstream: Upstream::new(reqwest::Client::new(), &format!("http://{addr}")),
    }
}

fn domain(d: &str) -> Identifier {
    Identifier::Domain(DomainName::parse(d).expect("valid domain"))
}

fn fact(obs: &[Observation], name: &'static str) -> Option<String> {
    obs.iter()
        .find(|o| o.field == Field::Fact(name))
        .map(|o| o.value.to_string())
}

#[tokio::test]
async fn disclosed_registrant_gives_company_registrar_and_date() {
    let obs = rdap()
        .await
        .lookup(&domain("acme.example"))
        .await
        .expect("answered");
    assert_eq!(fact(&obs, "registrar").as_deref(), Some("MarkMonitor Inc."));
    assert_eq!(fact(&obs, "registered_on").as_deref(), Some("1997-09-15"));
    assert_eq!(
        fact(&obs, "registrant_org").as_deref(),
        Some("Acme Robotics, Inc.")
    );
    assert!(
        obs.iter()
            .any(|o| o.field == Field::CompanyName && o.value == "Acme Robotics, Inc.")
    );
}

#[tokio::test]
async fn privacy_placeholder_is_not_a_company() {
    let obs = rdap()
        .await
        .lookup(&domain("private.example"))
        .await
        .expect("answered");
    assert_eq!(fact(&obs, "registrar").as_deref(), Some("NameCheap, Inc."));
    assert_eq!(fact(&obs, "registrant_org"), None);
    assert!(!obs.iter().any(|o| o.field == Field::CompanyName));
}

#[tokio::test]
async fn unknown_domain_is_a_miss_and_faults_are_errors() {
    let src = rdap().await;
    assert_eq!(
        src.lookup(&domain("unknown.example"))
            .await
            .expect("answered"),
        []
    );
    for d in ["garbage.example", "entity.example"] {
        let got = src.lookup(&domain(d)).await;
        assert!(
            matches!(got, Err(SourceError::Malformed(_))),
            "{d}: {got:?}"
        );
    }
    assert!(fake::is_status(
        &src.lookup(&domain("down.example")).await,
        500
    ));
}

#[test]
fn placeholders_are_recognised() {
    for org in [
        "REDACTED FOR PRIVACY",
        "Data Protected",
        "Privacy service provided by Withheld for Privacy ehf",
        "Domains By Proxy, LLC",
        "Contact Privacy Inc. Customer 0123",
        "",
        "Statutory Masking Enabled",
    ] {
        assert!(is_placeholder(org), "{org}");
    }
    for org in ["Acme Robotics, Inc.", "Müller Maschinenbau GmbH"] {
        assert!(!is_placeholder(org), "{org}");
    }
}

#[test]
fn webmail_domains_are_not_looked_up() {
    let src = Rdap {
        upstream: Upstream::new(reqwest::Client::new(), "http://127.0.0.1:9"),
    };
    let email = |s: &str| Identifier::Email(Email::parse(s).expect("valid"));
    assert!(!src.accepts(&email("a@gmail.com")));
    assert!(src.accepts(&email("a@acme.example")));
}
