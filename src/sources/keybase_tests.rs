//! The Keybase source against a loopback server answering the API 1.0 lookup format.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

use super::*;
use crate::sources::fake;

const CHRIS: &str = r#"{
  "status": {"code": 0, "name": "OK"},
  "them": [{
    "id": "23260c2ce19420f97b58d7d95b68ca00",
    "basics": {"username": "chris", "ctime": 1380000000, "mtime": 1500000000, "id_version": 300,
      "track_version": 20, "last_id_change": 1500000000, "username_cased": "chris", "status": 0, "salt": "x",
      "eldest_seqno": 1},
    "profile": {"mtime": 1500000000, "full_name": "Chris Coyne", "location": "New York, NY",
      "bio": "I write code.", "bio_version": 1},
    "pictures": {"primary": {"url": "https://s3.amazonaws.com/keybase_processed_uploads/abc_360_360.jpg",
      "width": 360, "height": 360, "source": null}},
    "proofs_summary": {
      "all": [
        {"proof_type": "twitter", "nametag": "malgorithms", "state": 1, "service_url": "https://twitter.com/malgorithms",
         "proof_url": "https://twitter.com/malgorithms/status/1", "sig_id": "s1", "proof_id": "p1", "human_url": "h",
         "presentation_group": "twitter", "presentation_tag": "twitter"},
        {"proof_type": "github", "nametag": "malgorithms", "state": 1, "service_url": "https://github.com/malgorithms",
         "proof_url": "https://gist.github.com/x", "sig_id": "s2", "proof_id": "p2", "human_url": "h",
         "presentation_group": "github", "presentation_tag": "github"},
        {"proof_type": "generic_web_site", "nametag": "chriscoyne.com", "state": 1, "service_url": "https://chriscoyne.com",
         "proof_url": "https://chriscoyne.com/keybase.txt", "sig_id": "s3", "proof_id": "p3", "human_url": "h",
         "presentation_group": "chriscoyne.com", "presentation_tag": "web"},
        {"proof_type": "reddit", "nametag": "malgorithms", "state": 1, "service_url": "https://reddit.com/user/malgorithms",
         "proof_url": "x", "sig_id": "s4", "proof_id": "p4", "human_url": "h", "presentation_group": "reddit"},
        {"proof_type": "github", "nametag": "revoked-account", "state": 2, "service_url": "https://github.com/revoked-account",
         "proof_url": "x", "sig_id": "s5", "proof_id": "p5", "human_url": "h", "presentation_group": "github"}
      ],
      "by_presentation_group": {}, "by_sig_id": {}, "has_web": true
    }
  }]
}"#;

const NOT_FOUND_BODY: &str = r#"{"status":{"code":205,"name":"NOT_FOUND","desc":"Not found"}}"#;

async fn keybase() -> Keybase {
    let addr = fake::serve(Router::new().route(
        "/_/api/1.0/user/lookup.json",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            assert!(
                q.get("fields")
                    .is_some_and(|f| f.contains("proofs_summary"))
            );
            let json = "application/json; charset=utf-8";
            let key = ["usernames", "github", "twitter"]
                .iter()
                .find_map(|k| q.get(*k).map(|v| (*k, v.as_str())));
            match key {
                Some(
                    ("usernames", "chris") | ("github", "malgorithms") | ("twitter", "malgorithms"),
                ) => fake::reply(200, json, CHRIS),
                Some(("usernames", "ghost")) => fake::reply(
                    200,
                    json,
                    r#"{"status":{"code":0,"name":"OK"},"them":[null]}"#,
                ),
                Some(("usernames", "garbage")) => fake::reply(200, json, "<html>"),
                Some(("usernames", "badinput")) => {
                    fake::reply(200, json, r#"{"status":{"code":100,"name":"INPUT_ERROR"}}"#)
                }
                Some(("usernames", "down")) => fake::reply(500, json, "{}"),
                _ => fake::reply(404, json, NOT_FOUND_BODY),
            }
        }),
    ))
    .await;
    Keybase {
        upstream: Upstream::new(reqwest::Client::new(), &format!("http://{addr}")),
    }
}

fn profile(url: &str) -> Identifier {
    Identifier::Profile(ProfileUrl::parse(url).expect("valid profile url"))
}

#[tokio::test]
async fn keybase_user_yields_name_location_and_proved_accounts() {
    let obs = keybase()
        .await
        .lookup(&profile("https://keybase.io/chris"))
        .await
        .expect("answered");
    let has = |f: Field, v: &str| obs.iter().any(|o| o.field == f && o.value == v);
    assert!(has(Field::FullName, "Chris Coyne"));
    assert!(has(Field::Location, "New York, NY"));
    assert!(has(Field::Profile, "https://keybase.io/chris"));
    assert!(has(Field::Profile, "https://github.com/malgorithms"));
    assert!(has(Field::Profile, "https://x.com/malgorithms"));
    assert!(has(Field::Website, "https://chriscoyne.com"));
    assert!(
        !obs.iter().any(|o| o.value.text().contains("revoked")),
        "proofs not in state 1 are ignored"
    );
}

#[tokio::test]
async fn github_and_x_profiles_find_the_keybase_user() {
    let src = keybase().await;
    for url in [
        "https://github.com/malgorithms",
        "https://x.com/malgorithms",
    ] {
        let obs = src.lookup(&profile(url)).await.expect("answered");
        assert!(
            obs.iter().any(|o| o.value == "https://keybase.io/chris"),
            "{url}"
        );
    }
}

#[tokio::test]
async fn unknown_users_are_misses() {
    let src = keybase().await;
    for url in [
        "https://keybase.io/nobody",
        "https://keybase.io/ghost",
        "https://github.com/nobody",
    ] {
        assert_eq!(
            src.lookup(&profile(url)).await.expect("answered"),
            [],
            "{url}"
        );
    }
}

#[tokio::test]
async fn malformed_slow_and_failing_answers() {
    let src = keybase().await;
    for url in ["https://keybase.io/garbage", "https://keybase.io/badinput"] {
        let got = src.lookup(&profile(url)).await;
        assert!(
            matches!(got, Err(SourceError::Malformed(_))),
            "{url}: {got:?}"
        );
    }
    assert!(fake::is_status(
        &src.lookup(&profile("https://keybase.io/down")).await,
        500
    ));
}

#[test]
fn accepts_keybase_github_and_x_profiles_only() {
    let src = Keybase {
        upstream: Upstream::new(reqwest::Client::new(), "http://127.0.0.1:9"),
    };
    assert!(src.accepts(&profile("https://keybase.io/chris")));
    assert!(src.accepts(&profile("https://twitter.com/chris")));
    assert!(!src.accepts(&profile("https://linkedin.com/in/chris")));
    assert!(!src.accepts(&profile("https://mastodon.social/@chris")));
}
