//! Opting out over HTTP: enforcement before fan-out and after merge, expansion, the public form and
//! JSON endpoint, validation, the per-address limit, the admin surface, the privacy notice, and that no
//! raw identifier is left in the data directory or the logs.

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Server, Upstreams, captured_logs, grep_dir, metric};

const EXCLUDED: &str = r#"enrichd_lookups_total{outcome="excluded"}"#;

fn statuses(body: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

async fn streamed(server: &Server, accept: &str, body: Value) -> String {
    let resp = server
        .post("/v1/lookup")
        .header("accept", accept)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    text
}

#[tokio::test]
async fn an_excluded_query_is_answered_exactly_like_a_miss_and_asks_no_upstream() {
    let up = Upstreams::start().await;
    up.gravatar_profile("known.person@example.com", "Known Person", "Acme", None);
    up.github_user(
        "known.person@example.com",
        "knownperson",
        "Known Person",
        "Acme",
    );
    let server = Server::start(&up.config()).await;
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
    assert_eq!(metric(&metrics, EXCLUDED), 1, "counted apart from misses");
    assert_eq!(
        metric(&metrics, r#"enrichd_lookups_total{outcome="miss"}"#),
        1
    );
    assert_eq!(
        metric(&metrics, r#"enrichd_optouts_total{origin="api"}"#),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_result_holding_an_excluded_identifier_is_withheld_in_json_and_streams() {
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
    let server = Server::start(&up.config()).await;
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
    assert_eq!(metric(&server.metrics().await, EXCLUDED), 3);
    server.stop().await;
}

#[tokio::test]
async fn opting_out_by_email_also_blocks_what_the_sources_returned_for_it() {
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
    let server = Server::start(&up.config()).await;

    let (status, _) = server
        .optout(json!({"email": "expand.me@example.com"}))
        .await;
    assert_eq!(status, 200);
    let hits = up.total_hits();
    let mut bodies = Vec::new();
    for query in [
        json!({"phone": "+44 20 7946 0555"}),
        json!({"email": "Expand.Work@works.example"}),
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
    assert_eq!(metric(&metrics, EXCLUDED), 4);
    assert_eq!(
        metric(
            &metrics,
            r#"enrichd_exclusion_entries_added_total{origin="expansion"}"#
        ),
        4,
        "phone, work email, GitHub and LinkedIn profiles"
    );
    assert_eq!(
        metric(&metrics, r#"enrichd_lookups_total{outcome="found"}"#),
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn the_public_form_is_plain_accessible_html_and_opts_out() {
    let up = Upstreams::start().await;
    up.gravatar_profile("form.user@example.com", "Form User", "Acme", None);
    let server = Server::start(&up.config()).await;

    let form = server
        .anon(Method::GET, "/optout")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 200);
    assert_eq!(form.headers()["content-type"], "text/html; charset=utf-8");
    let html = form.text().await.expect("html");
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<form method=\"post\" action=\"/optout\""));
    for field in ["email", "phone", "profile_url", "name", "company", "domain"] {
        assert!(
            html.contains(&format!("<label for=\"{field}\">")),
            "{field} has a label"
        );
        assert!(html.contains(&format!("<input id=\"{field}\" name=\"{field}\"")));
    }
    assert!(!html.contains("<script"), "works without JavaScript");
    assert!(html.contains("href=\"/privacy\""));

    let receipt = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=Form.User%40example.com&phone=&submit=Opt+out")
        .send()
        .await
        .expect("submit");
    assert_eq!(receipt.status(), 200);
    let page = receipt.text().await.expect("html");
    assert!(page.contains("You are opted out"), "{page}");
    let id = page
        .split("<code>")
        .nth(1)
        .and_then(|s| s.split("</code>").next())
        .expect("a receipt id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        !page.contains("form.user"),
        "the receipt does not echo the person"
    );
    let hits = up.total_hits();
    let (_, body) = server
        .lookup(json!({"email": "form.user@example.com"}))
        .await;
    assert_eq!(body["found"], false);
    assert_eq!(up.total_hits(), hits);
    assert_eq!(
        metric(
            &server.metrics().await,
            r#"enrichd_optouts_total{origin="public_form"}"#
        ),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn the_json_answer_is_a_receipt_that_does_not_say_whether_the_person_was_listed() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;

    let (first_status, first) = server
        .optout(json!({"email": "twice@example.com", "name": "Ada Lovelace", "company": "Acme"}))
        .await;
    let (second_status, second) = server.optout(json!({"email": "TWICE@example.com"})).await;

    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(keys(&first), ["detail", "receipt_id", "status"]);
    assert_eq!(keys(&first), keys(&second));
    assert_eq!(first["status"], second["status"]);
    assert_eq!(first["detail"], second["detail"]);
    let (a, b) = (
        first["receipt_id"].as_str().expect("id"),
        second["receipt_id"].as_str().expect("id"),
    );
    assert!(a.len() == 32 && b.len() == 32 && a != b);
    let stats = server.exclusion_stats().await;
    assert_eq!(stats["entries"], 2, "email and name + company: {stats}");
    assert_eq!(stats["by_kind"]["name_company"], 1);
    server.stop().await;
}

#[tokio::test]
async fn invalid_opt_outs_are_422_naming_the_field_and_change_nothing() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[exclusion]\noptout_burst = 100\n",
        up.config()
    ))
    .await;
    let before = server.exclusion_stats().await;
    let cases = [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b.com", "phone": "12345"}), "phone"),
        (json!({"phone": "020 7946 0958"}), "phone"),
        (
            json!({"profile_url": "https://github.com/org/repo"}),
            "profile_url",
        ),
        (json!({"name": "Ada Lovelace"}), "name"),
        (json!({"domain": "example.com"}), "email"),
        (
            json!({"name": "Ada Lovelace", "domain": "not a domain"}),
            "domain",
        ),
        (json!({"email": "ok@example.com", "emial": "typo"}), "body"),
        (json!({}), "email"),
    ];
    for (body, field) in cases {
        let resp = server
            .anon(Method::POST, "/v1/optout")
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
        assert!(fields.contains(&field), "{body}: {fields:?}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let form = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ada+%3CLovelace%3E")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 422);
    let html = form.text().await.expect("html");
    assert!(html.contains("There is a problem"));
    assert!(html.contains("a name alone is not an identifier"), "{html}");
    assert!(html.contains("<a href=\"#name\">"));
    assert!(
        html.contains("value=\"Ada &lt;Lovelace&gt;\""),
        "kept, escaped"
    );
    let wrong_type = server
        .anon(Method::POST, "/v1/optout")
        .header("content-type", "text/plain")
        .body("email=a@b.com")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_type.status(), 415);

    assert_eq!(
        server.exclusion_stats().await,
        before,
        "nothing was written"
    );
    assert_eq!(before["entries"], 0);
    assert_eq!(up.total_hits(), 0, "no expansion ran");
    server.stop().await;
}

#[tokio::test]
async fn opt_outs_are_rate_limited_per_client_address() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[exclusion]\noptout_per_minute = 1\noptout_burst = 2\n",
        up.config()
    ))
    .await;

    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..3 {
        let resp = server
            .anon(Method::POST, "/v1/optout")
            .json(&json!({"email": format!("limited{i}@example.com")}))
            .send()
            .await
            .expect("request");
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }
    let form = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=limited3%40example.com")
        .send()
        .await
        .expect("form");

    assert_eq!(statuses, [200, 200, 429]);
    let last = last.expect("a response");
    let retry: u64 = last.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
    assert_eq!(last.headers()["content-type"], "application/problem+json");
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));
    assert!(
        form.text()
            .await
            .expect("html")
            .contains("Nothing was recorded")
    );
    assert_eq!(server.exclusion_stats().await["entries"], 2);
    server.stop().await;
}

/// The keyed hash lines an admin would prepare offline with the same key.
fn hash_lines(server: &Server, ids: &[enrichd::domain::Identifier]) -> Vec<String> {
    let hex = std::fs::read_to_string(server.data_dir.path().join("exclusion.key")).expect("key");
    let key = enrichd::exclusion::ExclusionKey::from_hex(&hex).expect("hex key");
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) =
        enrichd::exclusion::ExclusionList::open(dir.path(), key, 30, std::time::SystemTime::now())
            .expect("scratch list");
    ids.iter()
        .map(|id| list.hash(id).expect("personal").to_line())
        .collect()
}

#[tokio::test]
async fn admins_import_identifiers_and_hash_lines_and_get_counts() {
    use enrichd::domain::{Email, Identifier, PhoneE164};
    let up = Upstreams::start().await;
    up.gravatar_profile("hashed@example.com", "Hashed Person", "Acme", None);
    let server = Server::start(&up.config()).await;
    let import = |body: reqwest::RequestBuilder| async move {
        let resp = body.send().await.expect("import");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("json"))
    };

    let (status, report) = import(server.admin(Method::POST, "/v1/admin/exclusions").json(
        &json!({"identifiers": [
            {"email": "bulk.one@example.com"},
            {"phone": "+44 20 7946 0100"},
            {"email": "broken"},
            "bulk.two@example.com",
            {"name": "Only A Name"},
            {"emial": "typo@example.com"},
            {"name": "Bulk Three", "company": "Acme"}
        ]}),
    ))
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["received"], 7);
    assert_eq!(report["added"], 3);
    assert_eq!(report["already_present"], 0);
    let rejected: Vec<u64> = report["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["index"].as_u64())
        .collect();
    assert_eq!(rejected, [2, 3, 4, 5]);
    assert_eq!(report["rejected"][0]["field"], "email");
    assert!(
        !report.to_string().contains("bulk.two"),
        "bad items are not echoed"
    );

    let (_, again) = import(
        server
            .admin(Method::POST, "/v1/admin/exclusions")
            .json(&json!({"identifiers": [{"email": "BULK.ONE@example.com"}]})),
    )
    .await;
    assert_eq!(
        (again["added"].as_u64(), again["already_present"].as_u64()),
        (Some(0), Some(1))
    );

    let lines = hash_lines(
        &server,
        &[
            Identifier::Email(Email::parse("hashed@example.com").expect("email")),
            Identifier::Phone(PhoneE164::parse("+14155552671", None).expect("phone")),
        ],
    );
    let text = format!(
        "# exported from the old instance\n{}\nhashed@example.com\n{}\nfax:00\n",
        lines[0],
        &lines[1][..6 + 32]
    );
    let (status, report) = import(
        server
            .admin(Method::POST, "/v1/admin/exclusions")
            .header("content-type", "text/plain")
            .body(text),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["received"].as_u64(), report["added"].as_u64()),
        (Some(4), Some(2))
    );
    let lines_rejected: Vec<u64> = report["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["line"].as_u64())
        .collect();
    assert_eq!(lines_rejected, [3, 5]);

    let hits = up.total_hits();
    let (_, body) = server.lookup(json!({"email": "hashed@example.com"})).await;
    assert_eq!(body["found"], false);
    let (_, body) = server.lookup(json!({"phone": "+1 415 555 2671"})).await;
    assert_eq!(body["found"], false);
    assert_eq!(up.total_hits(), hits);
    let stats = server.exclusion_stats().await;
    assert_eq!(stats["entries"], 5);
    assert_eq!(stats["by_origin"]["admin_import"], 5);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_surface_wants_an_admin_key() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;
    for (method, path) in [
        (Method::POST, "/v1/admin/exclusions"),
        (Method::GET, "/v1/admin/exclusions/stats"),
        (Method::GET, "/v1/admin/exclusions/export"),
    ] {
        let tenant = server
            .anon(method.clone(), path)
            .bearer_auth(&server.key)
            .header("content-type", "application/json")
            .body(r#"{"identifiers":[{"email":"x@example.com"}]}"#)
            .send()
            .await
            .expect("request");
        let anonymous = server.anon(method, path).send().await.expect("request");
        assert_eq!(tenant.status(), 403, "{path}");
        assert_eq!(tenant.headers()["content-type"], "application/problem+json");
        assert_eq!(anonymous.status(), 401, "{path}");
    }
    assert_eq!(server.exclusion_stats().await["entries"], 0);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_export_lists_every_record_as_hashes_only() {
    let up = Upstreams::start().await;
    up.gravatar_contact(
        "audited@example.com",
        "Audited Person",
        &["+44 20 7946 0888"],
        None,
        &[],
    );
    let server = Server::start(&up.config()).await;
    server.optout(json!({"email": "audited@example.com"})).await;
    server.optout(json!({"email": "audited@example.com"})).await;

    let resp = server
        .admin(Method::GET, "/v1/admin/exclusions/export")
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let key_id = resp.headers()["x-enrichd-exclusion-key-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let ndjson = resp.text().await.expect("body");
    let hashes = server
        .admin(Method::GET, "/v1/admin/exclusions/export?format=hashes")
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let bad = server
        .admin(Method::GET, "/v1/admin/exclusions/export?format=csv")
        .send()
        .await
        .expect("export");

    let records: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let origins: Vec<&str> = records
        .iter()
        .map(|r| r["origin"].as_str().expect("origin"))
        .collect();
    assert_eq!(
        origins,
        ["api", "expansion", "api", "expansion"],
        "every record, in order"
    );
    for r in &records {
        assert_eq!(
            keys(r),
            [
                "hash",
                "key_version",
                "kind",
                "origin",
                "recorded_at",
                "truncated"
            ]
        );
        assert_eq!(r["hash"].as_str().expect("hash").len(), 64);
        assert!(r["recorded_at"].as_str().expect("time").ends_with('Z'));
    }
    assert_eq!(records[1]["kind"], "phone");
    assert_eq!(key_id, server.exclusion_stats().await["key_id"]);
    let parsed = enrichd::exclusion::parse_hash_lines(&hashes).expect("re-importable");
    assert_eq!(parsed.len(), 4);
    assert_eq!(bad.status(), 422);
    for text in [&ndjson, &hashes] {
        assert!(!text.contains("audited") && !text.contains("7946"));
    }
    server.stop().await;
}

#[tokio::test]
async fn the_privacy_notice_is_rendered_from_the_running_configuration() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[retention]\nbatch_results_days = 7\nsource_cache_seconds = 120\nexclusion_days = 400\n",
        up.config()
    ))
    .await;

    let notice: Value = server
        .anon(Method::GET, "/privacy.json")
        .send()
        .await
        .expect("json")
        .json()
        .await
        .expect("json");
    let html_resp = server
        .anon(Method::GET, "/privacy")
        .send()
        .await
        .expect("html");
    assert_eq!(
        html_resp.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = html_resp.text().await.expect("html");

    let stored = notice["stored"].as_array().expect("stored");
    let seconds: Vec<Option<u64>> = stored
        .iter()
        .map(|s| s["kept_for_seconds"].as_u64())
        .collect();
    assert_eq!(
        &seconds[..3],
        [Some(7 * 86_400), Some(400 * 86_400), Some(120)]
    );
    let sources: Vec<&str> = notice["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(sources, ["gravatar", "github"], "only the enabled sources");
    assert_eq!(notice["sources"][0]["asked_about"], json!(["email"]));
    assert_eq!(
        notice["sources"][1]["asked_about"],
        json!(["email", "profile_url:github"])
    );
    assert_eq!(notice["sources"][0]["recipient"], up.gravatar.url.as_str());
    assert_eq!(notice["opt_out"]["form"], "/optout");
    assert_eq!(notice["opt_out"]["list_retention_days"], 400);
    assert!(html.contains("7 days after the batch was created"));
    assert!(html.contains("400 days"));
    assert!(html.contains("<td>gravatar</td><td>email address</td>"));
    assert!(html.contains("href=\"/optout\""));
    assert!(
        !html.contains("keys.openpgp.org"),
        "disabled sources are not listed"
    );
    server.stop().await;
}

#[tokio::test]
async fn after_opting_out_no_raw_identifier_is_in_the_data_dir_or_the_logs() {
    let up = Upstreams::start().await;
    up.gravatar_contact(
        "zqgrep.target@example.com",
        "Zqgrep Target",
        &["+44 20 7946 0444"],
        Some("zqgrep.work@zqworks.example"),
        &["https://github.com/zqgreptarget"],
    );
    let server = Server::start(&up.config()).await;

    server
        .optout(json!({"email": "zqgrep.target@example.com", "name": "Zqgrep Target", "company": "Zqcorp"}))
        .await;
    server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("profile_url=https%3A%2F%2Fx.com%2Fzqgrephandle")
        .send()
        .await
        .expect("form");
    server
        .admin(Method::POST, "/v1/admin/exclusions")
        .json(&json!({"identifiers": [{"email": "zqgrep.admin@example.com"}]}))
        .send()
        .await
        .expect("import");
    server
        .lookup(json!({"email": "zqgrep.target@example.com"}))
        .await;

    let needles: Vec<String> = [
        "zqgrep",
        "zqworks",
        "zqcorp",
        "+442079460444",
        "20 7946 0444",
        "79460444",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let in_files = grep_dir(server.data_dir.path(), &needles);
    assert!(in_files.is_empty(), "found in the data dir: {in_files:?}");
    let stats = server.exclusion_stats().await;
    assert_eq!(
        stats["entries"], 7,
        "given 2 + expanded 3 + form 1 + admin 1: {stats}"
    );
    let logs = captured_logs().to_lowercase();
    assert!(
        logs.contains("opt-out recorded"),
        "the capture sees the opt-outs"
    );
    for n in &needles {
        assert!(!logs.contains(n.as_str()), "a log line carries '{n}'");
    }
    server.stop().await;
}

#[tokio::test]
async fn openapi_documents_the_opt_out_admin_and_privacy_routes() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;

    let doc: Value = server
        .anon(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");

    for (path, method) in [
        ("/optout", "get"),
        ("/optout", "post"),
        ("/v1/optout", "post"),
        ("/privacy", "get"),
        ("/privacy.json", "get"),
        ("/v1/admin/exclusions", "post"),
        ("/v1/admin/exclusions/stats", "get"),
        ("/v1/admin/exclusions/export", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(doc["paths"]["/v1/optout"]["post"]["security"], json!([]));
    server.stop().await;
}

/// A store that fails its first purge and records, for each call, what it was given and whether the
/// list already held it.
struct FlakyStore {
    list: std::sync::Arc<enrichd::exclusion::ExclusionList>,
    calls: std::sync::Mutex<Vec<Vec<(String, bool)>>>,
}

impl enrichd::exclusion::OptOutHook for FlakyStore {
    fn name(&self) -> &'static str {
        "test_store"
    }

    fn opted_out<'a>(
        &'a self,
        ids: &'a [enrichd::domain::Identifier],
    ) -> futures::future::BoxFuture<'a, Result<(), enrichd::exclusion::HookError>> {
        use enrichd::exclusion::ExclusionCheck;
        let seen: Vec<(String, bool)> = ids
            .iter()
            .map(|id| (id.canonical(), self.list.is_excluded(id)))
            .collect();
        let mut calls = self.calls.lock().expect("lock");
        calls.push(seen);
        let first = calls.len() == 1;
        Box::pin(async move {
            if first {
                Err(enrichd::exclusion::HookError {
                    what: "test_store",
                    detail: "disk quota exceeded".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn a_failed_hook_is_a_503_that_says_the_opt_out_is_recorded_and_resubmitting_is_safe() {
    let up = Upstreams::start().await;
    up.gravatar_contact(
        "hooked@example.com",
        "Hooked Person",
        &["+44 20 7946 0999"],
        None,
        &[],
    );
    let store = std::sync::Arc::new(std::sync::OnceLock::new());
    let server = Server::start_custom(&up.config(), &[], {
        let store = store.clone();
        move |app| {
            let hook = std::sync::Arc::new(FlakyStore {
                list: app.state.exclusion.clone(),
                calls: std::sync::Mutex::new(Vec::new()),
            });
            let _ = store.set(hook.clone());
            app.state.optout_hooks = std::sync::Arc::new(vec![
                hook as std::sync::Arc<dyn enrichd::exclusion::OptOutHook>,
            ]);
        }
    })
    .await;

    let first = server
        .anon(Method::POST, "/v1/optout")
        .json(&json!({"email": "hooked@example.com"}))
        .send()
        .await
        .expect("optout");
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "5");
    assert_eq!(first.headers()["content-type"], "application/problem+json");
    let problem: Value = first.json().await.expect("json");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("is recorded"), "{detail}");
    assert!(detail.contains("again is safe"), "{detail}");
    assert!(
        !detail.contains("quota"),
        "the hook's own error stays in the log"
    );
    let hits = up.total_hits();
    let (_, body) = server.lookup(json!({"email": "hooked@example.com"})).await;
    assert_eq!(body["found"], false, "already enforced");
    assert_eq!(up.total_hits(), hits);

    let (second, _) = server.optout(json!({"email": "hooked@example.com"})).await;

    assert_eq!(second, 200, "resubmitting completes it");
    let calls = store
        .get()
        .expect("hook registered")
        .calls
        .lock()
        .expect("lock")
        .clone();
    assert_eq!(calls.len(), 2);
    let mut given: Vec<&str> = calls[0].iter().map(|(id, _)| id.as_str()).collect();
    given.sort_unstable();
    assert_eq!(
        given,
        ["+442079460999", "hooked@example.com"],
        "given and expanded"
    );
    assert!(
        calls.iter().flatten().all(|(_, listed)| *listed),
        "hooks run only once the list holds every identifier"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_service_compacts_away_opt_outs_past_their_retention_at_start() {
    use enrichd::domain::{Email, Identifier};
    use enrichd::exclusion::{ExclusionCheck, ExclusionKey, ExclusionList, Origin};
    use std::time::{Duration, SystemTime};
    let data = tempfile::tempdir().expect("data dir");
    let dir = data.path().join("exclusion");
    let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
    {
        // The key the service will read, and two opt-outs: one 10 days old, one fresh.
        let (key, _) = ExclusionKey::load(None, data.path()).expect("key");
        let (list, _) = ExclusionList::open(&dir, key, 30, SystemTime::now()).expect("list");
        let list = list.with_clock(move || old);
        let id = |e: &str| Identifier::Email(Email::parse(e).expect("email"));
        list.add(&[id("old@example.com")], Origin::Cli)
            .expect("old");
        let list = list.with_clock(SystemTime::now);
        list.add(&[id("fresh@example.com")], Origin::Cli)
            .expect("fresh");
    }
    let config = crate::helpers::loopback_only(
        "[retention]\nbatch_results_days = 30\nsource_cache_seconds = 60\nexclusion_days = 7\n",
    );
    let loaded = enrichd::config::Config::from_toml(&config, &[]).expect("config");

    let app = enrichd::app::App::build(&loaded, data.path()).expect("app");

    let list = &app.state.exclusion;
    let stats = list.stats();
    assert_eq!(stats.entries, 1);
    assert_eq!(
        stats.log_bytes,
        32 + 56,
        "the old record is gone from the file"
    );
    assert!(list.is_excluded(&Identifier::Email(
        Email::parse("fresh@example.com").expect("email")
    )));
    assert!(!list.is_excluded(&Identifier::Email(
        Email::parse("old@example.com").expect("email")
    )));
}
