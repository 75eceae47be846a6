//! The live lookup: merge, concurrency, timeouts, failures, deadline, auth, validation, privacy of logs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Latch, Reply, Server, Upstreams, assert_problem_type, captured_logs, closing_upstream,
    status_of,
};

#[tokio::test]
async fn lookup_merges_both_sources_with_provenance_and_rising_confidence() {
    let up = Upstreams::start().await;
    up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        None,
    );
    up.github_user(
        "ada@analytical.example",
        "adalove",
        "Ada Lovelace",
        "Analytical Engines",
    );
    let server = Server::start(&up.config()).await;

    let (status, body) = server
        .lookup(json!({"email": "Ada@Analytical.example"}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(body["found"], true);
    assert_eq!(status_of(&body, "gravatar"), "hit");
    assert_eq!(status_of(&body, "github"), "hit");
    let name = &body["profile"]["name"];
    assert_eq!(name["value"], "Ada Lovelace");
    assert_eq!(name["sources"], json!(["github", "gravatar"]));
    let agreed = name["confidence"].as_f64().expect("confidence");
    let single = body["profile"]["job_title"]["confidence"]
        .as_f64()
        .expect("confidence");
    assert!(
        agreed > single,
        "two agreeing sources ({agreed}) beat one ({single})"
    );
    assert!((0.0..=1.0).contains(&agreed));
    let profiles: Vec<&str> = body["profile"]["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .filter_map(|p| p["value"].as_str())
        .collect();
    assert!(profiles.contains(&"https://github.com/adalove"));
    assert!(body["took_ms"].as_u64().is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_profile_reported_by_one_source_is_followed_by_another() {
    let up = Upstreams::start().await;
    // Gravatar lists a verified GitHub account; GitHub's commit search knows nothing of the email.
    up.gravatar_profile(
        "grace@navy.example",
        "Grace Hopper",
        "US Navy",
        Some("ghopper"),
    );
    up.github.on(
        "/users/ghopper",
        Upstreams::github_user_doc("ghopper", "Grace Hopper", "navy"),
    );
    let server = Server::start(&up.config()).await;

    let (_, body) = server.lookup(json!({"email": "grace@navy.example"})).await;

    assert_eq!(
        up.github.hits("/users/ghopper"),
        1,
        "the hop reached GitHub's user endpoint"
    );
    assert_eq!(status_of(&body, "github"), "hit");
    assert_eq!(
        body["profile"]["name"]["sources"],
        json!(["github", "gravatar"])
    );
    server.stop().await;
}

/// Each fake answers only once the other has been asked too: asked one after the other, the first
/// would wait out its timeout and read `timeout`.
#[tokio::test]
async fn sources_are_asked_concurrently() {
    let up = Upstreams::start().await;
    let email = "slow.both@example.com";
    let both = Arc::new(tokio::sync::Barrier::new(2));
    let reply = up.gravatar_profile(email, "Slow Both", "Acme", None);
    up.gravatar
        .on(&Upstreams::gravatar_path(email), reply.gated(both.clone()));
    up.github.on(
        &Upstreams::github_search_path(email),
        Reply::json(json!({"total_count": 0, "incomplete_results": false, "items": []}))
            .gated(both),
    );
    let server = Server::start(&up.config()).await;

    let (_, body) = server.lookup(json!({"email": email})).await;

    assert_eq!(status_of(&body, "gravatar"), "hit", "{body}");
    assert_eq!(status_of(&body, "github"), "miss", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_source_past_its_timeout_is_timeout_and_the_others_still_answer() {
    let up = Upstreams::start().await;
    let email = "patient@example.com";
    up.gravatar_profile(email, "Pat Ient", "Acme", None);
    up.github.on(
        &Upstreams::github_search_path(email),
        Reply::json(json!({"items": []})).after(Duration::from_secs(5)),
    );
    let config = format!("{}\n", up.config()).replace(
        "timeout_ms = 1500\n[sources.github]",
        "timeout_ms = 1500\n[sources.github]\n",
    ) + "";
    let config = config.replacen(
        &format!("base_url = \"{}\"\ntimeout_ms = 1500", up.github.url),
        &format!("base_url = \"{}\"\ntimeout_ms = 200", up.github.url),
        1,
    );
    let server = Server::start(&config).await;

    let (_, body) = server.lookup(json!({"email": email})).await;

    assert_eq!(status_of(&body, "github"), "timeout");
    assert_eq!(status_of(&body, "gravatar"), "hit");
    assert_eq!(body["found"], true);
    // Relative to the slow answer (5 s), with seconds of margin: the lookup did not wait for it.
    assert!(
        body["took_ms"].as_u64().is_some_and(|t| t < 5_000),
        "the slow source held the lookup: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_broken_source_is_error_and_the_others_still_answer() {
    let huge = vec![b'['; 3 * 1024 * 1024];
    let faults: Vec<(&str, Option<Reply>)> = vec![
        (
            "http 500",
            Some(Reply::status(500, r#"{"message":"Server Error"}"#)),
        ),
        (
            "http 502 html",
            Some(Reply::raw(
                502,
                "text/html",
                b"<html>Bad Gateway</html>".to_vec(),
            )),
        ),
        (
            "garbage json",
            Some(Reply::raw(
                200,
                "application/json",
                b"{\"items\": [tru".to_vec(),
            )),
        ),
        (
            "wrong content type",
            Some(Reply::raw(
                200,
                "text/html",
                b"<html>login page</html>".to_vec(),
            )),
        ),
        ("huge body", Some(Reply::raw(200, "application/json", huge))),
        ("connection closed without an answer", None),
    ];
    for (fault, reply) in faults {
        let up = Upstreams::start().await;
        let email = "broken.case@example.com";
        up.gravatar_profile(email, "Bro Ken", "Acme", None);
        let mut config = up.config();
        match reply {
            Some(r) => {
                up.github.otherwise(r);
            }
            None => config = config.replace(&up.github.url, &closing_upstream().await),
        }
        let server = Server::start(&config).await;

        let (status, body) = server.lookup(json!({"email": email})).await;

        assert_eq!(status, 200, "{fault}");
        assert_eq!(status_of(&body, "github"), "error", "{fault}");
        assert_eq!(status_of(&body, "gravatar"), "hit", "{fault}");
        assert_eq!(body["profile"]["name"]["value"], "Bro Ken", "{fault}");
        server.stop().await;
    }
}

#[tokio::test]
async fn an_upstream_429_is_rate_limited() {
    let up = Upstreams::start().await;
    up.gravatar
        .otherwise(Reply::status(429, r#"{"error":"Too Many Requests"}"#));
    let server = Server::start(&up.config()).await;

    let (_, body) = server
        .lookup(json!({"email": "busy@example.com", "sources": ["gravatar"]}))
        .await;

    assert_eq!(status_of(&body, "gravatar"), "rate_limited");
    assert_eq!(
        status_of(&body, "github"),
        "skipped",
        "a source left out by `sources` is not asked"
    );
    assert_eq!(up.github.total_hits(), 0);
    server.stop().await;
}

#[tokio::test]
async fn the_overall_deadline_holds_even_when_every_source_is_slow() {
    let up = Upstreams::start().await;
    up.gravatar
        .otherwise(Reply::json(json!({})).after(Duration::from_secs(5)));
    up.github
        .otherwise(Reply::json(json!({})).after(Duration::from_secs(5)));
    let server = Server::start(
        &up.config()
            .replace("timeout_ms = 1500", "timeout_ms = 10000"),
    )
    .await;

    let (status, body) = server
        .lookup(json!({"email": "deadline@example.com", "timeout_ms": 300}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(body["found"], false);
    assert_eq!(status_of(&body, "gravatar"), "timeout");
    assert_eq!(status_of(&body, "github"), "timeout");
    // Relative to what the sources alone would allow (5 s answers under 10 s timeouts), with
    // seconds of margin: the lookup's own deadline ended it.
    assert!(
        body["took_ms"].as_u64().is_some_and(|t| t < 5_000),
        "the 300 ms deadline did not end the lookup: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_problems() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;
    let url = format!("{}/v1/lookup?email=a%40example.com", server.url);

    let cases = [
        (None, "no key"),
        (Some("Bearer ek_nope"), "wrong key"),
        (Some("Basic abc"), "wrong scheme"),
    ];
    for (auth, case) in cases {
        let mut req = server.http.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 401, "{case}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["status"], 401, "{case}");
        assert_problem_type(&body, "unauthorized");
    }
    let via_header = server
        .http
        .get(&url)
        .header("x-api-key", &server.key)
        .send()
        .await
        .expect("request");
    assert_eq!(via_header.status(), 200, "X-API-Key is accepted");
    assert_eq!(
        up.gravatar.total_hits() + up.github.total_hits(),
        2,
        "only the authorised lookup reached upstreams"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_429_with_retry_after() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[tenants]\nrate_per_minute = 1\nburst = 2\n",
        up.config()
    ))
    .await;

    let mut statuses = Vec::new();
    let mut retry_after = None;
    let mut fields = (None, None);
    for _ in 0..3 {
        let resp = server
            .get("/v1/lookup?email=r%40example.com")
            .send()
            .await
            .expect("request");
        statuses.push(resp.status().as_u16());
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        fields = (header("ratelimit-policy"), header("ratelimit"));
    }

    assert_eq!(statuses, [200, 200, 429]);
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After in seconds: {retry_after:?}"
    );
    // The IETF fields (draft-ietf-httpapi-ratelimit-headers): 1 request per 60 s, none left, and as
    // many seconds until one is as Retry-After says.
    let secs = retry_after.unwrap_or_default();
    assert_eq!(
        fields,
        (
            Some("\"tenant\";q=1;w=60".to_string()),
            Some(format!("\"tenant\";r=0;t={secs}"))
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn each_invalid_field_is_a_422_naming_it_and_asks_no_upstream() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;
    let cases = [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b.com", "phone": "12345"}), "phone"),
        (
            json!({"profile_url": "https://github.com/org/repo"}),
            "profile_url",
        ),
        (json!({"name": "Ada Lovelace"}), "name"),
        (json!({"first_name": "Ada", "company": "Acme"}), "last_name"),
        (
            json!({"email": "a@b.com", "domain": "not a domain"}),
            "domain",
        ),
        (json!({"email": "a@b.com", "timeout_ms": 0}), "timeout_ms"),
        (
            json!({"email": "a@b.com", "timeout_ms": 999999}),
            "timeout_ms",
        ),
        (
            json!({"email": "a@b.com", "sources": ["gravatar", "nope"]}),
            "sources",
        ),
        (json!({"emial": "a@b.com"}), "body"),
        (json!({}), "email"),
    ];
    for (body, field) in cases {
        let resp = server
            .post("/v1/lookup")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 422, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.expect("json");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: expected {field} in {fields:?}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(
        up.gravatar.total_hits() + up.github.total_hits(),
        0,
        "invalid input reached no upstream"
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_media_type_and_oversized_bodies_are_refused() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[server]\nmax_json_bytes = 1024\n",
        up.config()
    ))
    .await;

    let form = server
        .post("/v1/lookup")
        .header("content-type", "text/plain")
        .body("email=a@b.com")
        .send()
        .await
        .expect("request");
    let big = json!({"email": "a@b.com", "company": "x".repeat(4096)});
    let large = server
        .post("/v1/lookup")
        .json(&big)
        .send()
        .await
        .expect("request");

    assert_eq!(form.status(), 415);
    assert_eq!(large.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn get_lookup_takes_the_same_fields_as_query_parameters() {
    let up = Upstreams::start().await;
    up.gravatar_profile("q@example.com", "Query Param", "Acme", None);
    let server = Server::start(&up.config()).await;

    let resp = server
        .get("/v1/lookup?email=q%40example.com&sources=gravatar&timeout_ms=2000")
        .send()
        .await
        .expect("request");
    let bad = server
        .get("/v1/lookup?email=q%40example.com&timeout_ms=soon")
        .send()
        .await
        .expect("request");

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["profile"]["name"]["value"], "Query Param");
    assert_eq!(bad.status(), 422);
    server.stop().await;
}

#[tokio::test]
async fn operational_endpoints_answer_without_a_key() {
    let up = Upstreams::start().await;
    up.gravatar_profile("m@example.com", "Metric Person", "Acme", None);
    let server = Server::start(&up.config()).await;
    server.lookup(json!({"email": "m@example.com"})).await;

    let health = server
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("healthz");
    let ready = server
        .http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .expect("readyz");
    let openapi: Value = server
        .http
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let metrics = server.metrics().await;

    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    assert!(openapi["paths"]["/v1/lookup"]["post"].is_object());
    assert!(
        metrics.contains(r#"enrichd_source_requests_total{source="gravatar",status="hit"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"enrichd_lookups_total{outcome="found"} 1"#));
    assert!(metrics.contains(r#"route="/v1/lookup""#));
    assert!(
        !metrics.contains("m@example.com") && !metrics.contains("Metric Person"),
        "no identifier in metrics"
    );
    server.stop().await;
}

#[tokio::test]
async fn logs_never_carry_the_identifiers_looked_up() {
    let up = Upstreams::start().await;
    let email = "secret.person@hidden-corp.example";
    up.gravatar_profile(email, "Secret Person", "Hidden Corp", Some("secretperson"));
    up.github
        .on("/users/secretperson", Reply::status(500, "{}"));
    let server = Server::start(&up.config()).await;

    server
        .lookup(json!({"email": email, "phone": "+44 20 7946 0123"}))
        .await;
    server.lookup(json!({"email": "not-valid-secret@", "profile_url": "https://github.com/secretperson/repo"})).await;
    let _ = server
        .get("/v1/lookup?email=secret.person%40hidden-corp.example&sources=github")
        .send()
        .await;

    let logs = captured_logs();
    assert!(
        logs.contains("Upstream call failed"),
        "the capture does see the service's logs"
    );
    for needle in [
        "secret.person",
        "hidden-corp",
        "Secret Person",
        "+442079460123",
        "7946 0123",
        "secretperson",
        "not-valid-secret",
    ] {
        assert!(!logs.contains(needle), "a log line carries '{needle}'");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"source="gravatar""#) && metrics.contains(r#"route="/v1/lookup""#),
        "labels are source names and route templates: {metrics}"
    );
    // Names and labels only: a sample value such as a duration sum may hold any digits.
    let names_and_labels: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _value)| series))
        .collect();
    assert!(!names_and_labels.is_empty(), "{metrics}");
    for needle in ["secret", "hidden-corp", "7946", "not-valid"] {
        assert!(
            !names_and_labels
                .iter()
                .any(|series| series.contains(needle)),
            "a metric label carries '{needle}'"
        );
        assert!(
            !metrics
                .lines()
                .filter(|l| l.starts_with('#'))
                .any(|l| l.contains(needle)),
            "a metric's help text carries '{needle}'"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn lookups_leave_no_personal_data_in_the_data_dir() {
    let up = Upstreams::start().await;
    up.gravatar_profile("at.rest@example.com", "Rest Person", "Acme", None);
    let server = Server::start(&up.config()).await;

    let (_, body) = server.lookup(json!({"email": "at.rest@example.com"})).await;
    let admin = server
        .http
        .get(format!(
            "{}/v1/lookup?email=at.rest%40example.com",
            server.url
        ))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .expect("request");

    assert_eq!(body["found"], true);
    assert_eq!(admin.status(), 200, "an admin key may look up too");
    let mut stack = vec![server.data_dir.path().to_path_buf()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
            assert!(
                !text.contains("at.rest") && !text.contains("Rest Person"),
                "{} holds personal data",
                path.display()
            );
        }
    }
    assert!(files >= 1, "the data dir holds at least the key file");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_the_lookup_in_flight_then_refuses_new_connections() {
    let up = Upstreams::start().await;
    let email = "draining@example.com";
    // Gravatar answers only once the test has seen the shutdown begin: the lookup is in flight for
    // the whole drain, whatever the machine's load.
    let answer = Latch::new();
    let reply = up.gravatar_profile(email, "Drain Ing", "Acme", None);
    up.gravatar
        .on(&Upstreams::gravatar_path(email), reply.held(answer.clone()));
    let config = format!(
        "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 60000\n[lookup]\ndefault_timeout_ms = 60000\nmax_timeout_ms = 60000\n",
        up.gravatar.url
    );
    let server = Server::start(&config).await;
    let url = server.url.clone();

    let in_flight = server
        .lookup_in_flight(json!({"email": email}), || up.gravatar.total_hits() > 0)
        .await;
    let stopped = tokio::spawn(server.stop());

    // Draining: new connections are refused while the lookup is still held upstream.
    // No pooled connection: each probe is a new one.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match http.get(format!("{url}/healthz")).send().await {
            Err(e) if e.is_connect() => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still accepting connections after the shutdown began: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the lookup ended before its upstream answered"
    );
    assert!(
        !stopped.is_finished(),
        "the server stopped with a lookup in flight"
    );

    answer.open();
    let resp = in_flight
        .await
        .expect("request task")
        .expect("the lookup in flight is answered, not cut off");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(status_of(&body, "gravatar"), "hit");
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the server stops once its last request is answered")
        .expect("server task");
    let late = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect_err("no connection is accepted after shutdown");
    assert!(late.is_connect(), "{late}");
}

#[tokio::test]
async fn a_server_at_its_in_flight_limit_refuses_at_once_with_503() {
    let up = Upstreams::start().await;
    let email = "busy@example.com";
    // The first lookup holds the only slot until the test lets its upstream answer.
    let release = Arc::new(tokio::sync::Barrier::new(2));
    let reply = up.gravatar_profile(email, "Bu Sy", "Acme", None);
    up.gravatar.on(
        &Upstreams::gravatar_path(email),
        reply.gated(release.clone()),
    );
    let server = Server::start(&format!("[server]\nmax_in_flight = 1\n{}", up.config())).await;

    let in_flight = server
        .lookup_in_flight(json!({"email": email}), || up.gravatar.total_hits() > 0)
        .await;
    // Answered while the slot is still held: a refusal at once, not a queue (a queued request would
    // wait for ever here, and the bound below turns that into a failure).
    let refused = tokio::time::timeout(Duration::from_secs(60), server.get("/v1/sources").send())
        .await
        .expect("answered while the slot is held")
        .expect("request");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem: Value = refused.json().await.expect("problem body");
    assert_problem_type(&problem, "overloaded");
    let health = server.get("/healthz").send().await.expect("healthz");
    assert_eq!(health.status(), 200, "the probe holds no slot");
    let ready = server.get("/readyz").send().await.expect("readyz");
    assert_eq!(ready.status(), 503, "but says the service is full");

    release.wait().await;
    let answered = in_flight
        .await
        .expect("task")
        .expect("the first lookup is answered");
    assert_eq!(answered.status(), 200);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("http_in_flight_requests 0"),
        "the slot came back once answered: {metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_lookup_no_source_can_take_says_so_and_names_a_provider_that_could() {
    let up = Upstreams::start().await;
    up.gravatar_profile("h@example.com", "Hint Person", "Acme", None);
    let server = Server::start(&up.config()).await;

    let (status, by_phone) = server.lookup(json!({"phone": "+33612345678"})).await;
    let (_, by_email) = server.lookup(json!({"email": "h@example.com"})).await;

    assert_eq!(status, 200);
    assert_eq!(by_phone["found"], false);
    let statuses: Vec<&str> = by_phone["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == "skipped"),
        "{by_phone}"
    );
    let hint = by_phone["hints"][0].as_str().expect("a hint");
    assert!(
        hint.starts_with("no enabled source can look up a phone number")
            && hint.contains("pdl_person_by_phone"),
        "{hint}"
    );
    // A LinkedIn profile and a name at a company without a domain: no default source takes them.
    for query in [
        json!({"profile_url": "https://www.linkedin.com/in/ada-lovelace"}),
        json!({"name": "Ada Lovelace", "company": "Analytical Engines"}),
    ] {
        let (status, answer) = server.lookup(query.clone()).await;
        assert_eq!((status, &answer["found"]), (200, &json!(false)), "{answer}");
        let hint = answer["hints"][0].as_str().expect("a hint");
        assert!(
            hint.starts_with("no enabled source can look up a "),
            "{query}: {hint}"
        );
    }
    assert_eq!(by_email["found"], true);
    assert!(by_email.get("hints").is_none(), "{by_email}");
    assert_eq!(
        up.gravatar.hits(&Upstreams::gravatar_path("h@example.com")),
        1,
        "only the email was sent upstream"
    );
    server.stop().await;
}
