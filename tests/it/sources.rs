//! Sources wired into the service: the paid waterfall and its cost, a provider's 451, coalescing, the
//! per-source rate limit and breaker seen through the API, email status, text extraction, `/v1/sources`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Fake, Reply, Server, Silent, Upstreams, status_of, wait_until};

/// Two paid providers on one loopback fake, in waterfall order: `first` (cost 0.05) then `second`
/// (cost 0.20), both keyed by email, key from an env var.
fn providers(url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "first"
enabled = true
url = "{url}/first?email={{email}}"
auth_header = "X-API-KEY"
auth_env = "FIRST_KEY"
cost_per_hit = 0.05
order = 1
[providers.fields]
phone = "/data/phone"
job_title = "/data/position"

[[providers]]
name = "second"
enabled = true
url = "{url}/second?email={{email}}"
auth_header = "X-API-KEY"
auth_env = "SECOND_KEY"
cost_per_hit = 0.2
order = 2
[providers.fields]
phone = "/person/phone_numbers"
"#,
    )
}

const KEYS: [(&str, &str); 2] = [("FIRST_KEY", "k-first"), ("SECOND_KEY", "k-second")];

/// The lookup deadline in the timeout tests: far past any source's own timeout, so a call the
/// source's timer did not end would run until this one.
const LONG_DEADLINE_MS: u64 = 20_000;

/// Each source named in the cases is configured alone against an upstream that never answers,
/// with a short timeout of its own: its status is `timeout`, it reports ending well before the
/// lookup's deadline (so its own timer ended it, not the deadline's), and the upstream sees the
/// connection closed (the call was abandoned, not left running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_answers_ends_in_timeout_at_its_own_timeout() {
    let cases: [(&str, &str, Value); 5] = [
        ("openpgp", "", json!({"email": "pat@acme.example"})),
        (
            "rdap",
            "",
            json!({"name": "Pat Doe", "domain": "acme.example"}),
        ),
        (
            "website",
            "/{domain}",
            json!({"name": "Pat Doe", "domain": "acme.example"}),
        ),
        (
            "keybase",
            "",
            json!({"profile_url": "https://keybase.io/pat"}),
        ),
        (
            "webfinger",
            "",
            json!({"profile_url": "https://mastodon.social/@pat"}),
        ),
    ];
    for (source, suffix, query) in cases {
        let upstream = Silent::start().await;
        let server = Server::start(&format!(
            "[lookup]\ndefault_timeout_ms = {LONG_DEADLINE_MS}\nmax_timeout_ms = {LONG_DEADLINE_MS}\n\
             [sources.{source}]\nbase_url = \"{}{suffix}\"\ntimeout_ms = 300\n",
            upstream.url
        ))
        .await;

        let (status, body) = server.lookup(query).await;

        assert_eq!(status, 200, "{source}: {body}");
        assert_eq!(status_of(&body, source), "timeout", "{source}: {body}");
        let latency = body["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == source))
            .and_then(|s| s["latency_ms"].as_u64())
            .expect("the source's latency");
        assert!(
            latency < LONG_DEADLINE_MS / 2,
            "{source} ran until the lookup's deadline ({latency} ms): no timeout of its own"
        );
        assert!(upstream.asked() >= 1, "{source} never reached its upstream");
        wait_until(&format!("{source}'s abandoned connection to close"), || {
            upstream.dropped() == upstream.asked()
        })
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn the_waterfall_stops_at_the_first_provider_that_finds_the_wanted_field() {
    let up = Upstreams::start().await;
    let paid = Fake::start().await;
    paid.on(
        "/first?email=ada%40acme.example",
        Reply::json(json!({"data": {"phone": "+44 20 7946 0958", "position": "CTO"}})),
    );
    paid.on(
        "/second?email=ada%40acme.example",
        Reply::json(json!({"person": {"phone_numbers": ["+33 1 45 67 89 10"]}})),
    );
    let config = format!("{}{}", up.config(), providers(&paid.url));
    let server = Server::start_with_env(&config, &KEYS).await;

    let (status, body) = server
        .lookup(json!({"email": "ada@acme.example", "want": ["phone"]}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(status_of(&body, "first"), "hit");
    assert_eq!(status_of(&body, "second"), "skipped");
    assert_eq!(paid.hits("/second?email=ada%40acme.example"), 0);
    assert_eq!(body["cost"], 0.05);
    assert_eq!(body["profile"]["phones"][0]["value"], "+442079460958");
    assert_eq!(body["profile"]["phones"][0]["sources"], json!(["first"]));
    server.stop().await;
}

#[tokio::test]
async fn the_waterfall_goes_on_while_the_wanted_field_is_missing() {
    let up = Upstreams::start().await;
    let paid = Fake::start().await;
    // The first provider knows the person but not their phone; the second has it.
    paid.on(
        "/first?email=bob%40acme.example",
        Reply::json(json!({"data": {"position": "Engineer"}})),
    );
    paid.on(
        "/second?email=bob%40acme.example",
        Reply::json(json!({"person": {"phone_numbers": ["+33 1 45 67 89 10"]}})),
    );
    let config = format!("{}{}", up.config(), providers(&paid.url));
    let server = Server::start_with_env(&config, &KEYS).await;

    let (_, body) = server
        .lookup(json!({"email": "bob@acme.example", "want": ["phone"]}))
        .await;

    assert_eq!(status_of(&body, "first"), "hit");
    assert_eq!(status_of(&body, "second"), "hit");
    assert_eq!(body["cost"], 0.25);
    assert_eq!(body["profile"]["phones"][0]["value"], "+33145678910");
    assert_eq!(body["profile"]["job_title"]["value"], "Engineer");

    // Asking for nothing the providers could add (the email is already known) calls no paid provider.
    let (_, body) = server
        .lookup(json!({"email": "carol@acme.example", "want": ["email"]}))
        .await;
    assert_eq!(status_of(&body, "first"), "skipped");
    assert_eq!(body["cost"], 0.0);
    assert_eq!(paid.hits("/first?email=carol%40acme.example"), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_provider_without_its_key_is_never_called_and_unknown_wants_are_refused() {
    let up = Upstreams::start().await;
    let paid = Fake::start().await;
    let config = format!("{}{}", up.config(), providers(&paid.url));
    let server = Server::start_with_env(&config, &[("FIRST_KEY", "k-first")]).await;

    let (_, body) = server
        .lookup(json!({"email": "dan@acme.example", "want": ["phone"]}))
        .await;
    assert_eq!(
        status_of(&body, "second"),
        "absent",
        "inactive providers are not in the fan-out"
    );
    assert_eq!(paid.hits("/second?email=dan%40acme.example"), 0);

    let (status, problem) = server
        .lookup(json!({"email": "dan@acme.example", "want": ["shoe_size"]}))
        .await;
    assert_eq!(status, 422);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("want")),
        "{problem}"
    );

    let listed: Value = server
        .get("/v1/sources")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let second = listed["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "second"))
        .expect("second is listed");
    assert_eq!(second["enabled"], false);
    assert_eq!(second["key"], "missing");
    assert!(
        second["disabled"]
            .as_str()
            .is_some_and(|d| d.contains("SECOND_KEY"))
    );
    let gravatar = listed["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "gravatar"))
        .expect("gravatar is listed");
    assert_eq!(gravatar["breaker"], "closed");
    assert!(
        !listed.to_string().contains("k-first"),
        "keys never leave the process"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_451_from_a_provider_withholds_the_whole_answer() {
    let up = Upstreams::start().await;
    up.gravatar_profile("erin@acme.example", "Erin Example", "Acme", None);
    let paid = Fake::start().await;
    paid.on(
        "/first?email=erin%40acme.example",
        Reply::status(
            451,
            r#"{"errors":[{"id":"unavailable_for_legal_reasons"}]}"#,
        ),
    );
    let config = format!("{}{}", up.config(), providers(&paid.url));
    let server = Server::start_with_env(&config, &KEYS).await;

    let (status, body) = server
        .lookup(json!({"email": "erin@acme.example", "want": ["phone"]}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(body["found"], false);
    assert_eq!(body["profile"], Value::Null);
    assert_eq!(body["cost"], 0.0);
    let statuses: Vec<&str> = body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert!(
        !statuses.contains(&"hit"),
        "a withheld answer claims no hit: {statuses:?}"
    );
    assert!(!body.to_string().contains("Erin"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_identical_lookups_ask_each_upstream_once() {
    let up = Upstreams::start().await;
    let email = "same@acme.example";
    up.slow_gravatar_hit(email, "Sam Same", Duration::from_millis(300));
    let server = Server::start(&up.config()).await;

    let lookups = (0..8).map(|_| server.lookup(json!({"email": email})));
    let answers = futures::future::join_all(lookups).await;

    for (status, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body["profile"]["name"]["value"], "Sam Same");
    }
    assert_eq!(up.gravatar.hits(&Upstreams::gravatar_path(email)), 1);
    assert_eq!(up.github.hits(&Upstreams::github_search_path(email)), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_source_over_its_rate_is_rate_limited_without_an_upstream_call() {
    let up = Upstreams::start().await;
    // Three a minute: a burst of three, then nothing for twenty seconds.
    let config = up.config().replace(
        "[sources.gravatar]\n",
        "[sources.gravatar]\nrate_per_minute = 3\n",
    );
    let server = Server::start(&config).await;

    let mut statuses = Vec::new();
    for i in 0..4 {
        let (_, body) = server
            .lookup(json!({"email": format!("r{i}@acme.example")}))
            .await;
        statuses.push(status_of(&body, "gravatar").to_string());
    }

    assert_eq!(statuses, ["miss", "miss", "miss", "rate_limited"]);
    assert_eq!(up.gravatar.total_hits(), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_failing_source_opens_its_breaker_and_is_then_skipped_without_a_call() {
    let up = Upstreams::start().await;
    up.gravatar
        .otherwise(Reply::status(500, r#"{"error":"internal"}"#));
    let config = up.config().replace(
        "[sources.gravatar]\n",
        "[sources.gravatar]\nrate_per_minute = 600\n",
    );
    let server = Server::start(&config).await;

    for i in 0..5 {
        let (_, body) = server
            .lookup(json!({"email": format!("b{i}@acme.example")}))
            .await;
        assert_eq!(status_of(&body, "gravatar"), "error");
    }
    let (_, body) = server.lookup(json!({"email": "b5@acme.example"})).await;

    assert_eq!(status_of(&body, "gravatar"), "skipped");
    assert_eq!(up.gravatar.total_hits(), 5);
    let listed: Value = server
        .get("/v1/sources")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let gravatar = listed["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "gravatar"))
        .expect("listed");
    assert_eq!(gravatar["breaker"], "open");
    server.stop().await;
}

#[tokio::test]
async fn a_finder_guess_confirmed_by_a_source_is_a_valid_email() {
    let up = Upstreams::start().await;
    // Gravatar knows first.last at the company; the other guesses exist nowhere.
    up.gravatar_profile(
        "ada.lovelace@engines.example",
        "Ada Lovelace",
        "Engines",
        None,
    );
    let config = format!("{}[sources.finder]\nenabled = true\n", up.config());
    let server = Server::start(&config).await;

    let (status, body) = server
        .lookup(json!({"name": "Ada Lovelace", "domain": "engines.example"}))
        .await;

    assert_eq!(status, 200);
    let emails = body["profile"]["emails"].as_array().expect("emails");
    let confirmed = emails
        .iter()
        .find(|e| e["value"] == "ada.lovelace@engines.example")
        .expect("the confirmed guess");
    assert_eq!(confirmed["status"], "valid");
    assert!(
        confirmed["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("gravatar"))
    );
    let guesses: Vec<&Value> = emails
        .iter()
        .filter(|e| e["value"] != "ada.lovelace@engines.example")
        .collect();
    assert!(!guesses.is_empty(), "the other candidates are reported too");
    for g in guesses {
        assert_eq!(g["status"], "unknown", "{g}");
        assert_eq!(g["sources"], json!(["finder"]));
    }
    assert!(
        confirmed["confidence"].as_f64() > emails.last().and_then(|e| e["confidence"].as_f64()),
        "the confirmed address ranks first"
    );
    server.stop().await;
}

#[tokio::test]
async fn extract_reads_a_signature_and_can_look_it_up_at_once() {
    let up = Upstreams::start().await;
    up.gravatar_profile(
        "j.dupont@acme-industries.example",
        "Jeanne Dupont",
        "Acme",
        None,
    );
    let server = Server::start(&up.config()).await;
    let signature = "Cordialement,\n\nJeanne Dupont\nDirectrice commerciale | Acme Industries\n\
                     Tél. : +33 1 45 67 89 10\nj.dupont@acme-industries.example\n\
                     https://www.linkedin.com/in/jeanne-dupont-42/";

    let resp = server
        .post("/v1/extract")
        .header("content-type", "text/plain")
        .body(signature)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["extracted"]["emails"],
        json!(["j.dupont@acme-industries.example"])
    );
    assert_eq!(body["extracted"]["phones"], json!(["+33145678910"]));
    assert_eq!(
        body["extracted"]["profile_urls"],
        json!(["https://linkedin.com/in/jeanne-dupont-42"])
    );
    assert_eq!(body["query"]["email"], "j.dupont@acme-industries.example");
    assert!(body.get("lookup").is_none(), "no lookup unless asked");
    assert_eq!(up.gravatar.total_hits(), 0);

    let resp = server
        .post("/v1/extract?lookup=true")
        .json(&json!({"text": signature}))
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["lookup"]["found"], true);
    assert_eq!(body["lookup"]["profile"]["name"]["value"], "Jeanne Dupont");

    let resp = server
        .post("/v1/extract?lookup=true")
        .json(&json!({"text": "Thanks, see you Tuesday!"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 422);
    let problem: Value = resp.json().await.expect("json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("text")),
        "{problem}"
    );

    let resp = server
        .post("/v1/extract")
        .header("content-type", "application/pdf")
        .body("%PDF")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 415);
    server.stop().await;
}

#[test]
fn enrichd_sources_lists_sources_and_providers_with_their_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("enrichd.toml");
    let text = format!(
        "[sources.rdap]\nenabled = false\n{}",
        providers("http://127.0.0.1:9")
    );
    std::fs::write(&config, text).expect("write config");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .arg("sources")
            .args(extra)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path())
            .env_clear()
            .env("FIRST_KEY", "k-first")
            .output()
            .expect("run enrichd")
    };

    let table = run(&[]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{table}"))
            .to_string()
    };
    assert!(line("gravatar").contains("yes") && line("gravatar").contains("closed"));
    assert!(line("rdap").contains(" no ") && line("rdap").contains("enabled = false"));
    assert!(line("first").contains("paid") && line("first").contains("present"));
    assert!(line("second").contains("missing") && line("second").contains("SECOND_KEY"));
    assert!(!table.contains("k-first"), "keys are never printed");

    let json = run(&["--json"]);
    let listed: Value = serde_json::from_slice(&json.stdout).expect("json output");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.first(), Some(&"gravatar"));
    assert_eq!(
        names.last(),
        Some(&"second"),
        "providers last, in waterfall order"
    );
}
