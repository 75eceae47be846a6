//! The WebFinger source against a loopback server answering Mastodon's JRD, and the SSRF guard on
//! user-supplied hosts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

use super::*;
use crate::sources::fake::{self, TableResolver};

/// Mastodon's answer for a local account (field order and members as Mastodon sends them).
const GARGRON: &str = r#"{
  "subject": "acct:Gargron@mastodon.social",
  "aliases": ["https://mastodon.social/@Gargron", "https://mastodon.social/users/Gargron"],
  "links": [
    {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": "https://mastodon.social/@Gargron"},
    {"rel": "self", "type": "application/activity+json", "href": "https://mastodon.social/users/Gargron"},
    {"rel": "http://ostatus.org/schema/1.0/subscribe", "template": "https://mastodon.social/authorize_interaction?uri={uri}"},
    {"rel": "http://webfinger.net/rel/avatar", "type": "image/png", "href": "https://files.mastodon.social/accounts/avatars/000/000/001/original/a.png"}
  ]
}"#;

fn no_dns() -> Arc<dyn HostResolver> {
    Arc::new(TableResolver(HashMap::new()))
}

async fn server() -> Webfinger {
    let addr = fake::serve(Router::new().route(
        "/.well-known/webfinger",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let jrd = "application/jrd+json; charset=utf-8";
            match q.get("resource").map(String::as_str) {
                Some("acct:gargron@mastodon.social") => fake::reply(200, jrd, GARGRON),
                Some("acct:garbage@mastodon.social") => fake::reply(200, jrd, "[1,2"),
                Some("acct:down@mastodon.social") => fake::reply(500, "text/html", "oops"),
                _ => fake::reply(404, "text/html", ""),
            }
        }),
    ))
    .await;
    Webfinger::new(&format!("http://{addr}"), Duration::from_secs(2), no_dns())
}

fn profile(url: &str) -> Identifier {
    Identifier::Profile(ProfileUrl::parse(url).expect("valid profile url"))
}

#[tokio::test]
async fn mastodon_account_yields_profile_page_handle_and_avatar() {
    let obs = server()
        .await
        .lookup(&profile("https://mastodon.social/@Gargron"))
        .await
        .expect("answered");
    let has = |f: Field, v: &str| obs.iter().any(|o| o.field == f && o.value == v);
    assert!(
        has(Field::Fact("fediverse_account"), "@Gargron@mastodon.social"),
        "{obs:?}"
    );
    assert!(has(Field::Profile, "https://mastodon.social/@gargron"));
    assert!(
        obs.iter()
            .any(|o| o.field == Field::Photo && o.value.text().ends_with("a.png"))
    );
    assert!(
        !obs.iter().any(|o| o.value.text().contains("/users/")),
        "ActivityPub ids are not profiles"
    );
}

#[tokio::test]
async fn unknown_account_is_a_miss_and_faults_are_errors() {
    let src = server().await;
    assert_eq!(
        src.lookup(&profile("https://mastodon.social/@nobody"))
            .await
            .expect("answered"),
        []
    );
    let got = src
        .lookup(&profile("https://mastodon.social/@garbage"))
        .await;
    assert!(matches!(got, Err(SourceError::Malformed(_))), "{got:?}");
    assert!(fake::is_status(
        &src.lookup(&profile("https://mastodon.social/@down")).await,
        500
    ));
}

#[tokio::test]
async fn a_host_that_never_answers_ends_in_timeout_at_the_configured_timeout() {
    let upstream = fake::silent().await;
    let src = Webfinger::new(
        &format!("http://{}", upstream.addr),
        Duration::from_millis(200),
        no_dns(),
    );
    fake::assert_times_out(
        &upstream,
        src.lookup(&profile("https://mastodon.social/@pat")),
    )
    .await;
}

#[tokio::test]
async fn internal_hosts_from_user_profiles_are_refused() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = fake::serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { fake::reply(200, "application/jrd+json", GARGRON) }
    }))
    .await;
    let resolver = TableResolver(HashMap::from([("social.rebind.example", addr.ip())]));
    let src = Webfinger::new(
        &format!("http://{{host}}:{}", addr.port()),
        Duration::from_secs(2),
        Arc::new(resolver),
    );
    for url in [
        "https://127.0.0.1/@ada",
        "https://10.0.0.1/@ada",
        "https://169.254.169.254/@ada",
        "https://[::1]/@ada",
        "https://social.rebind.example/@ada",
    ] {
        let id = profile(url);
        assert!(src.accepts(&id), "{url} is a Mastodon-style profile");
        let got = src.lookup(&id).await;
        assert!(
            matches!(got, Err(SourceError::NotAttempted(_))),
            "{url}: {got:?}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn only_mastodon_style_profiles_are_accepted() {
    let src = Webfinger::new("https://{host}", Duration::from_secs(1), no_dns());
    assert!(src.accepts(&profile("https://fosstodon.org/@ada")));
    assert!(!src.accepts(&profile("https://github.com/ada")));
    assert!(!src.accepts(&profile("https://example.com/team/ada")));
}

/// A call feigned for an excluded person meets what a lookup of a person at the same host meets:
/// the host's own pause (after its `429`), and the refusal of an internal address.
#[tokio::test]
async fn a_feigned_call_meets_the_refusals_a_lookup_at_that_host_meets() {
    let src = Webfinger::new("https://{host}", Duration::from_secs(1), no_dns());
    let status = |r: &Result<Vec<Observation>, SourceError>| {
        r.as_ref().map_err(|e| e.status()).map(|o| o.len())
    };
    // The host asked for a pause once.
    let refused: Result<(), SourceError> = src
        .hosts
        .call("paused.example", async {
            Err(SourceError::RateLimited {
                retry_after: Some(Duration::from_secs(3600)),
            })
        })
        .await;
    assert!(refused.is_err());
    let latency = Duration::from_millis(5);
    for (host, why) in [
        ("paused.example", "the host's pause"),
        ("127.0.0.1", "an internal address"),
    ] {
        let looked = src
            .lookup(&profile(&format!("https://{host}/@someone")))
            .await;
        let feigned = src
            .feign(&profile(&format!("https://{host}/@optedout")), latency)
            .await;
        assert!(
            matches!(looked, Err(SourceError::NotAttempted(_))),
            "{why}: {looked:?}"
        );
        assert_eq!(status(&feigned), status(&looked), "{why}");
    }
    // Where the host does not resolve, a lookup is not attempted, nor is the feigned call.
    assert!(matches!(
        src.feign(&profile("https://fine.example/@optedout"), latency)
            .await,
        Err(SourceError::NotAttempted(_))
    ));
    // A host nothing holds back (a public address, which the feigned call never connects to; the
    // documentation ranges count as internal): a miss, after its latency.
    let public = TableResolver(HashMap::from([(
        "fine.example",
        "93.184.215.14".parse().expect("an address"),
    )]));
    let src = Webfinger::new("https://{host}", Duration::from_secs(1), Arc::new(public));
    let feigned = src
        .feign(&profile("https://fine.example/@optedout"), latency)
        .await;
    assert_eq!(status(&feigned), Ok(0));
}
