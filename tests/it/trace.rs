//! Logs at TRACE, every crate included, hold nothing personal: representative scenarios run with the
//! test binary's capture at `trace`, and no identifier they used, nor any value a fake returned,
//! appears in what was logged.

use serde_json::json;

use crate::helpers::{Reply, Server, Upstreams, captured_logs};

/// Distinctive values: nothing else in the test binary uses them.
const EMAIL: &str = "zqtrace.person@tracecorp.example";
const COLLEAGUE: &str = "zqtrace.colleague@tracecorp.example";
const GONE: &str = "zqtrace.gone@tracecorp.example";
const LOGIN: &str = "zqtracelogin";
const NAME: &str = "Zqtrace Person";
const PHONE: &str = "+44 20 7946 0321";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_personal_is_logged_at_trace_in_lookups_streams_opt_outs_and_batches() {
    let up = Upstreams::start().await;
    up.gravatar_contact(
        EMAIL,
        NAME,
        &[PHONE],
        Some("zqtrace.work@tracecorp.example"),
        &["https://github.com/zqtracelogin"],
    );
    up.github_user(EMAIL, LOGIN, NAME, "Zqtraceworks");
    // A garbled answer whose parse error would quote the value it choked on.
    up.github.on(
        &Upstreams::github_search_path(COLLEAGUE),
        Reply::raw(
            200,
            "application/json",
            br#"{"total_count": 1, "items": "zqtrace.quoted@tracecorp.example"}"#.to_vec(),
        ),
    );
    up.gravatar_contact(
        GONE,
        "Zqtrace Gone",
        &[],
        None,
        &["https://github.com/zqtracegone"],
    );
    let server = Server::start(&up.config()).await;

    let (_, hit) = server.lookup(json!({"email": EMAIL, "phone": PHONE})).await;
    assert_eq!(hit["found"], true, "{hit}");
    server.lookup(json!({"email": COLLEAGUE})).await;
    server
        .lookup(json!({"profile_url": format!("https://github.com/{LOGIN}"), "name": NAME, "company": "Zqtraceworks"}))
        .await;
    server
        .lookup(json!({"email": "zqtrace.invalid@", "phone": "zqtrace-not-a-phone"}))
        .await;
    for accept in ["application/x-ndjson", "text/event-stream"] {
        let text = server
            .post("/v1/lookup")
            .header("accept", accept)
            .json(&json!({"email": EMAIL}))
            .send()
            .await
            .expect("stream")
            .text()
            .await
            .expect("text");
        assert!(text.contains("result"), "{text}");
    }
    assert_eq!(
        server
            .optout(json!({"email": GONE, "name": "Zqtrace Gone", "company": "Zqtracegoneco"}))
            .await
            .0,
        200
    );
    let (_, gone) = server.lookup(json!({"email": GONE})).await;
    assert_eq!(gone["found"], false);
    let (_, csv) = server
        .run_batch(format!(
            "email,name\n{EMAIL},{NAME}\n{GONE},x\nzqtrace.bad@,\n"
        ))
        .await;
    assert!(csv.contains(NAME), "the batch did enrich: {csv}");
    server.stop().await;

    let logs = captured_logs();
    assert!(
        logs.contains("Upstream call failed"),
        "the capture sees the garbled answer's log"
    );
    for needle in [
        "zqtrace",
        "Zqtrace",
        "ZQTRACE",
        "7946 0321",
        "79460321",
        "tracecorp",
    ] {
        let line = logs.lines().find(|l| l.contains(needle));
        assert!(line.is_none(), "a log line carries '{needle}': {line:?}");
    }
}
