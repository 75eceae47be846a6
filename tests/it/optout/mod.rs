//! Opting out over HTTP: enforcement before fan-out and after merge, expansion, the public form and
//! JSON endpoint, validation, the per-address limit, hooks, the admin surface, the privacy notice, and
//! that no raw identifier is left in the data directory or the logs.

mod admin;
mod audit;
mod enforcement;
mod hooks;
mod privacy;
mod public;

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::Server;

/// An excluded person's lookup is counted as a miss: no figure moves with one person's opt-out.
pub const MISSES: &str = r#"enrichd_lookups_total{outcome="miss"}"#;

pub fn statuses(body: &Value) -> Vec<(String, String)> {
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

pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

pub async fn streamed(server: &Server, accept: &str, body: Value) -> String {
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
