//! An opt-out's expansion cannot be turned against other people: it adds at most
//! `MAX_EXPANSION` identifiers, and only those a source bound to the given ones through a verified
//! link — never what a host the requester chose answers, never a value merely typed into a profile.

use serde_json::json;

use crate::helpers::{Fake, Reply, Server, Upstreams};
use enrichd::optout::MAX_EXPANSION;

const ALIASES: usize = 2_000;

fn config(up: &Upstreams, webfinger: &Fake) -> String {
    format!(
        "{}[sources.webfinger]\nbase_url = \"{}\"\n",
        up.config(),
        webfinger.url
    )
}

#[tokio::test]
async fn an_answer_listing_two_thousand_verified_aliases_adds_only_the_cap() {
    let up = Upstreams::start().await;
    let accounts: Vec<String> = (0..ALIASES)
        .map(|i| format!("https://github.com/alias{i}"))
        .collect();
    let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
    up.gravatar_contact(
        "many.aliases@example.com",
        "Many Aliases",
        &[],
        None,
        &accounts,
    );
    let webfinger = Fake::start().await;
    let server = Server::start(&config(&up, &webfinger)).await;

    let (status, _) = server
        .optout(json!({"email": "many.aliases@example.com"}))
        .await;

    assert_eq!(status, 200);
    let stats = server.exclusion_stats().await;
    assert_eq!(
        stats["by_origin"]["expansion"],
        json!(MAX_EXPANSION),
        "the first {MAX_EXPANSION} verified accounts and no more: {stats}"
    );
    let (_, first) = server
        .lookup(json!({"profile_url": "https://github.com/alias0"}))
        .await;
    assert_eq!(first["found"], false);
    server.stop().await;
}

#[tokio::test]
async fn what_a_requester_chosen_host_or_a_typed_contact_lists_never_widens_an_opt_out() {
    let up = Upstreams::start().await;
    // Contact details typed into a Gravatar profile are not verified by Gravatar.
    up.gravatar_contact(
        "typed.contact@example.com",
        "Typed Contact",
        &["+44 20 7946 0999"],
        Some("someone.else@example.org"),
        &[],
    );
    // A WebFinger host the requester names answers with thousands of other people's profiles.
    let aliases: Vec<String> = (0..ALIASES)
        .map(|i| format!("https://github.com/victim{i}"))
        .collect();
    let webfinger = Fake::start().await;
    webfinger.otherwise(Reply::json(json!({
        "subject": "acct:listmaker@social.example",
        "aliases": aliases,
        "links": [{"rel": "http://webfinger.net/rel/profile-page", "type": "text/html",
                   "href": "https://github.com/victim-page"}]
    })));
    let server = Server::start(&config(&up, &webfinger)).await;

    let (a, _) = server
        .optout(json!({"profile_url": "https://social.example/@listmaker"}))
        .await;
    let (b, _) = server
        .optout(json!({"email": "typed.contact@example.com"}))
        .await;

    assert_eq!((a, b), (200, 200));
    assert!(webfinger.total_hits() > 0, "the host was asked");
    let stats = server.exclusion_stats().await;
    assert!(
        stats["by_origin"]["expansion"].as_u64().unwrap_or(0) == 0,
        "nothing added beyond what was given: {stats}"
    );
    server.stop().await;
}
