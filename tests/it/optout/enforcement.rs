//! Enforcement: an excluded query answers like a miss and asks no one; a result holding an excluded
//! identifier is withheld everywhere; an opt-out expands to what the sources returned.

use serde_json::{Value, json};

use super::{MISSES, keys, statuses, streamed};
use crate::both_stores;
use crate::helpers::{Latch, Server, Upstreams, metric};

both_stores! {
    #[tokio::test]
    async fn an_excluded_query_is_answered_exactly_like_a_miss_and_asks_no_upstream(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile("known.person@example.com", "Known Person", "Acme", None);
        up.github_user(
            "known.person@example.com",
            "knownperson",
            "Known Person",
            "Acme",
        );
        let server = Server::start_in(mode, &up.config()).await;
        let (_, found) = server
            .lookup(json!({"email": "known.person@example.com"}))
            .await;
        let (miss_status, miss) = server.lookup(json!({"email": "nobody@example.com"})).await;
        assert_eq!(found["found"], true, "the upstreams do know this person");

        let (status, _) = server
            .optout(json!({"email": "Known.Person@Example.com"}))
            .await;
        assert_eq!(status, 200);
        let hits = up.total_hits();
        let (excluded_status, excluded) = server
            .lookup(json!({"email": "known.person@example.com"}))
            .await;

        assert_eq!(up.total_hits(), hits, "no upstream was contacted");
        assert_eq!(excluded_status, miss_status);
        assert_eq!(keys(&excluded), keys(&miss), "same body shape as a miss");
        assert_eq!(excluded["found"], false);
        assert_eq!(excluded["profile"], Value::Null);
        assert_eq!(statuses(&excluded), statuses(&miss), "same source statuses");
        let metrics = server.metrics().await;
        assert_eq!(metric(&metrics, MISSES), 2, "counted with the misses");
        assert!(
            !metrics.contains("excluded")
                && !metrics.contains("enrichd_optouts")
                && !metrics.contains("exclusion_entries"),
            "no figure names exclusions or opt-outs: {metrics}"
        );
        // On the public listener the figures are the operator's only: nobody else can watch them
        // move with one person's opt-out.
        let public = |key: Option<&str>| {
            let req = server.anon(reqwest::Method::GET, "/metrics");
            let req = match key {
                Some(k) => req.bearer_auth(k),
                None => req,
            };
            async move { req.send().await.expect("metrics").status().as_u16() }
        };
        assert_eq!(public(None).await, 401, "no key");
        assert_eq!(public(Some(&server.key)).await, 403, "a tenant's key");
        assert_eq!(public(Some(&server.admin_key)).await, 200, "the admin key");
        assert_eq!(server.exclusion_stats().await["by_origin"]["api"], 1);
        server.stop().await;
}
}

both_stores! {
    #[tokio::test]
    async fn a_result_holding_an_excluded_identifier_is_withheld_in_json_and_streams(mode) {
        let up = Upstreams::start().await;
        // Only this colleague's Gravatar answer holds the phone; nobody looks the phone up directly.
        up.gravatar_contact(
            "colleague@example.com",
            "Colleague Person",
            &["+44 20 7946 0777"],
            None,
            &[],
        );
        up.github_user(
            "colleague@example.com",
            "colleaguep",
            "Colleague Person",
            "Acme",
        );
        let server = Server::start_in(mode, &up.config()).await;
        let (status, _) = server.optout(json!({"phone": "+442079460777"})).await;
        assert_eq!(status, 200);
        let query = json!({"email": "colleague@example.com"});

        let (_, body) = server.lookup(query.clone()).await;
        let ndjson = streamed(&server, "application/x-ndjson", query.clone()).await;
        let sse = streamed(&server, "text/event-stream", query).await;

        assert_eq!(body["found"], false);
        assert_eq!(body["profile"], Value::Null);
        assert!(statuses(&body).iter().all(|(_, s)| s != "hit"), "{body}");
        let lines: Vec<Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect();
        let (result, events) = lines.split_last().expect("a result line");
        assert_eq!(result["type"], "result");
        assert_eq!(result["found"], false);
        assert_eq!(result["profile"], Value::Null);
        for e in events {
            assert_eq!(
                keys(e),
                ["fields", "latency_ms", "name", "status", "type"],
                "events carry no values"
            );
        }
        assert!(sse.contains("event: result"), "{sse}");
        for text in [body.to_string(), ndjson, sse] {
            for needle in ["Colleague Person", "7946", "colleaguep", "Acme"] {
                assert!(!text.contains(needle), "'{needle}' leaked: {text}");
            }
        }
        assert_eq!(metric(&server.metrics().await, MISSES), 3);
        server.stop().await;
}
}

both_stores! {
    #[tokio::test]
    async fn opting_out_by_email_also_blocks_the_accounts_a_source_verified_for_it(mode) {
        let up = Upstreams::start().await;
        up.gravatar_contact(
            "expand.me@example.com",
            "Expand Me",
            &["+44 20 7946 0555"],
            Some("expand.work@works.example"),
            &[
                "https://github.com/expandme",
                "https://uk.linkedin.com/in/expand-me",
            ],
        );
        // Were they not excluded, these would answer.
        up.gravatar_profile("expand.work@works.example", "Expand Me", "Works", None);
        up.github_user(
            "expand.work@works.example",
            "expandme",
            "Expand Me",
            "Works",
        );
        up.github.on(
            "/users/expandme",
            Upstreams::github_user_doc("expandme", "Expand Me", "Works"),
        );
        let server = Server::start_in(mode, &up.config()).await;

        let (status, _) = server
            .optout(json!({"email": "expand.me@example.com"}))
            .await;
        assert_eq!(status, 200);
        let hits = up.total_hits();
        let mut bodies = Vec::new();
        for query in [
            json!({"profile_url": "https://www.github.com/ExpandMe/"}),
            json!({"profile_url": "linkedin.com/in/expand-me?trk=x"}),
        ] {
            let (status, body) = server.lookup(query).await;
            assert_eq!(status, 200);
            bodies.push(body);
        }

        assert_eq!(
            up.total_hits(),
            hits,
            "no upstream was asked about any of them"
        );
        for body in &bodies {
            assert_eq!(body["found"], false, "{body}");
            assert_eq!(body["profile"], Value::Null);
        }
        let metrics = server.metrics().await;
        assert_eq!(metric(&metrics, MISSES), 2);
        assert_eq!(
            server.exclusion_stats().await["by_origin"]["expansion"],
            2,
            "the GitHub and LinkedIn accounts Gravatar verified; not the contact details typed in"
        );
        // The audit counts what the opt-out added: the email given and the two accounts found.
        let audit = server
            .admin(reqwest::Method::GET, "/v1/admin/audit")
            .send()
            .await
            .expect("audit")
            .text()
            .await
            .expect("audit text");
        let received: Vec<Value> = audit
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
            .filter(|e| e["event"] == "opt_out_received")
            .collect();
        assert_eq!(received.len(), 1, "{audit}");
        assert_eq!(received[0]["added"], 3, "{audit}");
        assert_eq!(
            metric(&metrics, r#"enrichd_lookups_total{outcome="found"}"#),
            0
        );
        server.stop().await;
}
}

both_stores! {
    #[tokio::test]
    async fn an_opt_out_landing_while_a_lookup_is_in_flight_withholds_its_answer(mode) {
        let up = Upstreams::start().await;
        // Gravatar names the person's GitHub account at once; GitHub answers for it only after a pause,
        // and the person opts out by that account during it. The lookup checked the account when Gravatar
        // reported it, before the opt-out.
        up.gravatar_contact(
            "mid.flight@example.com",
            "Mid Flight",
            &[],
            None,
            &["https://github.com/midflight"],
        );
        // GitHub answers only once the test lets it: after the opt-out is acknowledged (the
        // opt-out's own expansion, which asks GitHub too, gives up on it after its short timeout).
        let release = Latch::new();
        up.github.on(
            "/users/midflight",
            Upstreams::github_user_doc("midflight", "Mid Flight", "Acme").held(release.clone()),
        );
        // Timeouts no loaded machine reaches while the opt-out is made.
        let config = format!(
            "[lookup]\ndefault_timeout_ms = 60000\nmax_timeout_ms = 60000\n\
             [exclusion]\nexpand_timeout_ms = 300\n{}",
            up.config().replace("timeout_ms = 1500", "timeout_ms = 60000")
        );
        let server = Server::start_in(mode, &config).await;

        let in_flight = server
            .lookup_in_flight(json!({"email": "mid.flight@example.com"}), || {
                up.github.hits("/users/midflight") > 0
            })
            .await;
        assert_eq!(
            up.github.hits("/users/midflight"),
            1,
            "the lookup is waiting on GitHub"
        );
        let (status, _) = server
            .optout(json!({"profile_url": "https://github.com/midflight"}))
            .await;
        assert_eq!(status, 200);
        release.open();
        let resp = in_flight
            .await
            .expect("task")
            .expect("the lookup is answered");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");

        assert_eq!(body["found"], false, "{body}");
        assert_eq!(body["profile"], Value::Null);
        assert_eq!(
            statuses(&body),
            [
                ("github".to_string(), "miss".to_string()),
                ("gravatar".to_string(), "miss".to_string())
            ],
            "a withheld answer reads like a miss"
        );
        server.stop().await;
}
}
