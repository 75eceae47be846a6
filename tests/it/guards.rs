//! Promises about excluded people on every path that reaches the pipeline: identifiers the merge
//! composes, `/v1/extract?lookup=true`, a batch uploaded after the opt-out, hops, and stream events.

use serde_json::{Value, json};

use crate::helpers::{Server, Upstreams};

/// Ada's Gravatar profile (name, company, a verified GitHub account) and her GitHub user.
fn ada(up: &Upstreams) {
    up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        Some("adalovelace"),
    );
    up.github.on(
        "/users/adalovelace",
        Upstreams::github_user_doc("adalovelace", "Ada Lovelace", "Analytical Engines"),
    );
}

async fn opt_out(server: &Server, body: Value) {
    let (status, answer) = server.optout(body).await;
    assert_eq!(status, 200, "{answer}");
}

fn assert_nothing_about_ada(text: &str) {
    for needle in ["Ada", "Lovelace", "adalovelace", "Analytical"] {
        assert!(!text.contains(needle), "'{needle}' leaked: {text}");
    }
}

/// The lookup by email is not excluded, and none of the identifiers a source names is; only the
/// name at the company, which the merge composes from two fields, is.
#[tokio::test]
async fn a_name_at_a_company_composed_by_the_merge_is_checked_before_release() {
    let up = Upstreams::start().await;
    ada(&up);
    let server = Server::start(&up.config()).await;
    let (_, before) = server
        .lookup(json!({"email": "ada@analytical.example"}))
        .await;
    assert_eq!(before["found"], true, "the sources know her: {before}");

    opt_out(
        &server,
        json!({"name": "Ada Lovelace", "company": "Analytical Engines"}),
    )
    .await;
    let (status, after) = server
        .lookup(json!({"email": "ada@analytical.example"}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(after["found"], false, "{after}");
    assert_eq!(after["profile"], Value::Null);
    assert_nothing_about_ada(&after.to_string());
    server.stop().await;
}

#[tokio::test]
async fn extract_with_lookup_never_reveals_an_opted_out_person() {
    let up = Upstreams::start().await;
    ada(&up);
    let server = Server::start(&up.config()).await;
    opt_out(&server, json!({"email": "ada@analytical.example"})).await;
    let hits = up.total_hits();

    let resp = server
        .post("/v1/extract?lookup=true")
        .json(&json!({"text": "Best,\nA.\nada@analytical.example"}))
        .send()
        .await
        .expect("request");

    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["lookup"]["found"], false, "{body}");
    assert_eq!(body["lookup"]["profile"], Value::Null);
    assert_nothing_about_ada(&body.to_string());
    assert_eq!(up.total_hits(), hits, "no upstream was asked about her");
    server.stop().await;
}

#[tokio::test]
async fn a_batch_uploaded_after_an_opt_out_never_reveals_the_person() {
    let up = Upstreams::start().await;
    ada(&up);
    up.gravatar_profile("grace@navy.example", "Grace Hopper", "Navy", None);
    let server = Server::start(&up.config()).await;
    let rows = "email\nada@analytical.example\ngrace@navy.example\n";
    let before = server.run_batch(rows).await.1;
    assert!(
        before.contains("Ada Lovelace"),
        "unlisted, her row is enriched: {before}"
    );

    opt_out(&server, json!({"email": "ada@analytical.example"})).await;
    let csv = server.run_batch(rows).await.1;

    assert!(
        csv.contains("Grace Hopper"),
        "the other row is enriched: {csv}"
    );
    let ada_row = csv
        .lines()
        .find(|l| l.contains("ada@analytical.example"))
        .expect("her row, with the tenant's input echoed");
    assert!(ada_row.contains("not_found"), "{ada_row}");
    assert_nothing_about_ada(&csv.replace("ada@analytical.example", ""));
    server.stop().await;
}

/// Gravatar names a GitHub account; the account is listed, the address looked up is not. The hop
/// that would ask GitHub about it never happens (the fake records every request), while the same
/// hop for someone else does.
#[tokio::test]
async fn an_excluded_identifier_met_mid_lookup_is_never_sent_to_another_upstream() {
    let up = Upstreams::start().await;
    ada(&up);
    up.gravatar_profile(
        "grace@navy.example",
        "Grace Hopper",
        "Navy",
        Some("ghopper"),
    );
    up.github.on(
        "/users/ghopper",
        Upstreams::github_user_doc("ghopper", "Grace Hopper", "Navy"),
    );
    let server = Server::start(&up.config()).await;
    opt_out(
        &server,
        json!({"profile_url": "https://github.com/adalovelace"}),
    )
    .await;
    // The opt-out's own expansion may ask GitHub about the account it lists; the lookup must not.
    let asked_by_the_opt_out = up.github.hits("/users/adalovelace");

    let (_, other) = server.lookup(json!({"email": "grace@navy.example"})).await;
    let (_, listed) = server
        .lookup(json!({"email": "ada@analytical.example"}))
        .await;

    assert_eq!(other["found"], true);
    assert!(
        up.github.hits("/users/ghopper") >= 1,
        "the hop is followed for others"
    );
    assert_eq!(listed["found"], false, "{listed}");
    assert_eq!(
        up.github.hits("/users/adalovelace"),
        asked_by_the_opt_out,
        "the lookup sent the listed account to GitHub"
    );
    assert_nothing_about_ada(&listed.to_string());
    server.stop().await;
}

/// A result withheld because a source named a listed identifier: no stream event says any source
/// hit, in NDJSON or SSE.
#[tokio::test]
async fn stream_events_of_a_withheld_answer_never_claim_a_hit() {
    let up = Upstreams::start().await;
    ada(&up);
    up.github_user(
        "ada@analytical.example",
        "adalovelace",
        "Ada Lovelace",
        "Analytical Engines",
    );
    let server = Server::start(&up.config()).await;
    let (_, before) = server
        .lookup(json!({"email": "ada@analytical.example"}))
        .await;
    assert!(
        before["sources"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["status"] == "hit")),
        "unlisted, the sources hit: {before}"
    );
    opt_out(
        &server,
        json!({"profile_url": "https://github.com/adalovelace"}),
    )
    .await;
    let query = json!({"email": "ada@analytical.example"});

    let ndjson = crate::optout::streamed(&server, "application/x-ndjson", query.clone()).await;
    let sse = crate::optout::streamed(&server, "text/event-stream", query).await;

    let events: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    let (result, progress) = events.split_last().expect("a result line");
    assert_eq!(result["found"], false, "{ndjson}");
    assert!(!progress.is_empty(), "progress events were sent");
    for e in progress {
        assert_ne!(e["status"], "hit", "{e}");
    }
    for e in result["sources"].as_array().expect("sources") {
        assert_ne!(e["status"], "hit", "{e}");
    }
    assert!(
        !sse.contains(r#""status":"hit""#),
        "an SSE event claims a hit: {sse}"
    );
    assert_nothing_about_ada(&ndjson);
    assert_nothing_about_ada(&sse);
    server.stop().await;
}
