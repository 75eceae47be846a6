//! NDJSON and SSE framing of streamed lookups: one progress event per source, values only at the end.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Server, Upstreams};

async fn streamed(server: &Server, accept: &str) -> (String, String) {
    let resp = server
        .post("/v1/lookup")
        .header("accept", accept)
        .json(&json!({"email": "stream@example.com"}))
        .send()
        .await
        .expect("request");
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    let mut body = String::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    (content_type, body)
}

async fn setup() -> (Upstreams, Server) {
    let up = Upstreams::start().await;
    up.gravatar_profile("stream@example.com", "Stream Person", "Acme", None);
    up.github_user("stream@example.com", "streamer", "Stream Person", "Acme");
    let server = Server::start(&up.config()).await;
    (up, server)
}

#[tokio::test]
async fn ndjson_streams_one_event_per_source_call_then_the_result() {
    let (_up, server) = setup().await;

    let (content_type, body) = streamed(&server, "application/x-ndjson").await;

    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let (last, events) = lines.split_last().expect("at least the result");
    assert_eq!(last["type"], "result");
    assert_eq!(last["found"], true);
    assert_eq!(last["profile"]["name"]["value"], "Stream Person");
    let mut names: Vec<&str> = events
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["github", "gravatar"]);
    for e in events {
        assert_eq!(e["type"], "source");
        let keys: Vec<&str> = e
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["fields", "latency_ms", "name", "status", "type"],
            "events carry no values"
        );
        assert!(e["fields"].as_u64().is_some_and(|n| n > 0));
    }
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("Stream Person"))
    );
    server.stop().await;
}

#[tokio::test]
async fn sse_frames_events_and_the_result() {
    let (_up, server) = setup().await;

    let (content_type, body) = streamed(&server, "text/event-stream").await;

    assert_eq!(content_type, "text/event-stream");
    let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.len(), 3, "two source events and the result: {body}");
    for (i, frame) in frames.iter().enumerate() {
        let (event, data) = frame.split_once('\n').expect("event and data lines");
        let want = if i + 1 == frames.len() {
            "event: result"
        } else {
            "event: source"
        };
        assert_eq!(event, want);
        let json: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data line"))
            .expect("json data");
        assert!(json["type"].is_string());
    }
    assert!(body.ends_with("\n\n"));
    server.stop().await;
}
