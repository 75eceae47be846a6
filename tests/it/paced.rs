//! Batches paced to their sources' budgets: rows wait for budget instead of failing, live lookups keep
//! their reserved share meanwhile, an upstream's `429 Retry-After` is waited out and the call made
//! again, the batch's `max_cost` stops the paid waterfall, and the summary tells the ETA and cost.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Fake, Reply, Server, Upstreams, files_under, status_of};

/// Only the Gravatar fake, at `rate_per_minute` with the default `batch_share` (0.8); parts of 25 rows
/// so that progress is checkpointed while the batch runs.
fn gravatar_at(up: &Upstreams, rate_per_minute: u32, extra: &str) -> String {
    format!(
        "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 1500\nrate_per_minute = {rate_per_minute}\n\
         [tenants]\nrate_per_minute = 60000\nburst = 1000\n[batches]\npart_rows = 25\n{extra}",
        up.gravatar.url
    )
}

/// A CSV of `n` distinct addresses nobody knows.
fn emails(n: usize) -> String {
    let mut csv = String::from("email\n");
    for i in 0..n {
        csv.push_str(&format!("person{i}@paced.example\n"));
    }
    csv
}

async fn upload(server: &Server, path: &str, csv: String) -> (u16, Value) {
    let resp = server
        .post(path)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn summary(server: &Server, id: &str) -> Value {
    let resp = server
        .get(&format!("/v1/batches/{id}"))
        .send()
        .await
        .expect("summary");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("json")
}

/// The batch's summaries while it runs, polled every 50 ms, and its final one.
async fn follow(server: &Server, id: &str, deadline: Duration) -> (Vec<Value>, Value) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let s = summary(server, id).await;
        if !matches!(s["status"].as_str(), Some("queued" | "running")) {
            return (seen, s);
        }
        assert!(start.elapsed() < deadline, "batch never finished: {s}");
        seen.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The NDJSON result's rows.
async fn ndjson(server: &Server, id: &str) -> Vec<Value> {
    let text = server
        .get(&format!("/v1/batches/{id}/result.csv?format=ndjson"))
        .send()
        .await
        .expect("result")
        .text()
        .await
        .expect("body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

#[tokio::test]
async fn a_batch_larger_than_the_burst_is_paced_to_the_budget_and_live_lookups_keep_their_share() {
    // 1500 calls a minute, 0.8 of it for batches: 20 calls a second, a burst of 3. 200 rows of one
    // Gravatar call each need (200 - 3) / 20 = 9.85 s of budget, and no less.
    const ROWS: usize = 200;
    let budget_time = Duration::from_secs_f64((ROWS as f64 - 3.0) / 20.0);
    let up = Upstreams::start().await;
    let server = Server::start(&gravatar_at(&up, 1500, "")).await;

    let started = Instant::now();
    let (status, created) = upload(&server, "/v1/batches", emails(ROWS)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    // Live lookups while the batch runs: one every 250 ms, well within the 5 a second kept for them.
    let live = {
        let (http, url, key) = (server.http.clone(), server.url.clone(), server.key.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..20 {
                let asked = Instant::now();
                let resp = http
                    .post(format!("{url}/v1/lookup"))
                    .bearer_auth(&key)
                    .json(&json!({"email": format!("live{i}@paced.example")}))
                    .send()
                    .await
                    .expect("live lookup");
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.expect("json");
                answers.push((status, body, asked.elapsed()));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            answers
        })
    };
    let (running, done) = follow(&server, &id, Duration::from_secs(60)).await;
    let took = started.elapsed();

    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        (done["rows_done"].as_u64(), done["rows_error"].as_u64()),
        (Some(200), Some(0))
    );
    assert!(
        took >= budget_time && took <= budget_time.mul_f64(1.1),
        "took {took:?}; the budget allows it in {budget_time:?}, and no more than 10 % more"
    );
    let rows = ndjson(&server, &id).await;
    assert_eq!(rows.len(), ROWS);
    for row in &rows {
        assert_eq!(row["status"], "not_found", "{row}");
        assert_eq!(row["sources"], json!({"gravatar": "miss"}), "{row}");
    }
    for i in 0..ROWS {
        let path = Upstreams::gravatar_path(&format!("person{i}@paced.example"));
        assert_eq!(up.gravatar.hits(&path), 1, "row {i} asked Gravatar once");
    }
    // Progress told while running: rows waiting for budget, and an ETA never beyond the budget's.
    assert!(
        running
            .iter()
            .any(|s| s["rows_waiting_for_budget"].as_u64() > Some(0)),
        "no summary showed rows waiting for budget: {running:?}"
    );
    let etas: Vec<u64> = running
        .iter()
        .filter_map(|s| s["eta_seconds"].as_u64())
        .collect();
    assert!(!etas.is_empty(), "no summary had an ETA: {running:?}");
    assert!(
        etas.iter().all(|&e| e <= budget_time.as_secs() + 1),
        "an ETA above the whole batch's budget time: {etas:?}"
    );
    // The live lookups were answered, by Gravatar, within their deadline, while the batch ran.
    for (status, body, latency) in live.await.expect("live task") {
        assert_eq!(status, 200, "{body}");
        assert_eq!(status_of(&body, "gravatar"), "miss", "{body}");
        assert!(latency < Duration::from_millis(1500), "{latency:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_upstream_429_with_retry_after_is_waited_out_and_every_row_still_answered() {
    const ROWS: usize = 20;
    let up = Upstreams::start().await;
    up.gravatar.otherwise(
        Reply::status(429, r#"{"error":"Rate limit exceeded"}"#).with_header("retry-after", "2"),
    );
    let server = Server::start(&gravatar_at(&up, 60_000, "")).await;

    let started = Instant::now();
    let (status, created) = upload(&server, "/v1/batches", emails(ROWS)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    // The upstream refuses until it has refused a few calls; then it answers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.gravatar.total_hits() < 3 {
        assert!(Instant::now() < deadline, "Gravatar was never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.gravatar
        .otherwise(Reply::status(404, r#"{"error":"Not Found"}"#));
    let (_, done) = follow(&server, &id, Duration::from_secs(30)).await;

    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["rows_error"], 0, "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the Retry-After of 2 s was not waited out"
    );
    let rows = ndjson(&server, &id).await;
    assert_eq!(rows.len(), ROWS);
    for row in &rows {
        assert_eq!(row["status"], "not_found", "{row}");
        assert_eq!(row["sources"], json!({"gravatar": "miss"}), "{row}");
    }
    // Each row needed one answered call; the three or more refused ones were made again.
    assert!(
        up.gravatar.total_hits() >= ROWS + 3,
        "refused calls were not made again: {} calls",
        up.gravatar.total_hits()
    );
    for i in 0..ROWS {
        let path = Upstreams::gravatar_path(&format!("person{i}@paced.example"));
        assert!(
            up.gravatar.hits(&path) >= 1,
            "row {i} never reached Gravatar"
        );
    }
    server.stop().await;
}

/// A paid provider that finds everyone's phone, at 0.05 a hit.
pub(crate) fn paid(url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "dialer"
enabled = true
url = "{url}/people?email={{email}}"
auth_header = "X-API-KEY"
auth_env = "DIALER_KEY"
cost_per_hit = 0.05
order = 1
[providers.fields]
phone = "/data/phone"
"#
    )
}

#[tokio::test]
async fn max_cost_stops_the_paid_waterfall_at_the_cap_and_reports_cost_per_found() {
    const ROWS: usize = 10;
    let up = Upstreams::start().await;
    let provider = Fake::start().await;
    provider.otherwise(Reply::json(json!({"data": {"phone": "+44 20 7946 0958"}})));
    let config = format!("{}{}", gravatar_at(&up, 60_000, ""), paid(&provider.url));
    let server = Server::start_with_env(&config, &[("DIALER_KEY", "k")]).await;

    let (status, created) = upload(&server, "/v1/batches?max_cost=0.2", emails(ROWS)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let (_, done) = follow(&server, &id, Duration::from_secs(30)).await;

    // 0.2 buys four hits at 0.05: the fifth would pass the cap, so nobody asks for it.
    assert_eq!(provider.total_hits(), 4);
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["rows_found"], 4, "{done}");
    assert_eq!(done["cost"], 0.2, "{done}");
    assert_eq!(done["cost_per_found"], 0.05, "{done}");
    assert_eq!(done["max_cost"], 0.2, "{done}");
    let rows = ndjson(&server, &id).await;
    let capped: Vec<&Value> = rows
        .iter()
        .filter(|r| r["sources"]["dialer"] == "capped")
        .collect();
    assert_eq!(capped.len(), ROWS - 4, "{rows:?}");
    for row in capped {
        assert_eq!(row["status"], "not_found", "{row}");
        assert!(
            row["note"].as_str().is_some_and(|n| n.contains("max_cost")),
            "{row}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_max_cost_that_is_not_a_plain_number_is_refused_by_name() {
    let up = Upstreams::start().await;
    let server = Server::start(&gravatar_at(&up, 60_000, "")).await;

    for bad in ["-1", "1e3", "NaN", "2,50", "ten"] {
        let (status, body) =
            upload(&server, &format!("/v1/batches?max_cost={bad}"), emails(1)).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("max_cost")),
            "{bad}: {body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_s_monthly_budget_spans_its_batches_and_is_kept_in_the_store() {
    const ROWS: usize = 5;
    let up = Upstreams::start().await;
    let provider = Fake::start().await;
    provider.otherwise(Reply::json(json!({"data": {"phone": "+44 20 7946 0958"}})));
    // The test server's tenant key belongs to `tenant-a`: 0.15 a month buys three hits at 0.05.
    let config = format!(
        "{}\n[tenants.monthly_budget]\ntenant-a = 0.15\n{}",
        gravatar_at(&up, 60_000, ""),
        paid(&provider.url)
    );
    let server = Server::start_with_env(&config, &[("DIALER_KEY", "k")]).await;

    let mut found = Vec::new();
    for _ in 0..2 {
        let (status, created) = upload(&server, "/v1/batches", emails(ROWS)).await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().expect("id").to_string();
        let (_, done) = follow(&server, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "done", "{done}");
        found.push(done["rows_found"].as_u64());
    }

    assert_eq!(
        found,
        [Some(3), Some(0)],
        "the second batch found the month spent"
    );
    assert_eq!(provider.total_hits(), 3);
    let month = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let spend = files_under(&server.data_dir.path().join("blobs").join("spend"));
    assert_eq!(
        spend.len(),
        1,
        "one object for the tenant and month: {spend:?}"
    );
    assert!(spend[0].ends_with(&month[..7]), "{spend:?}");
    let spent: Value =
        serde_json::from_slice(&std::fs::read(&spend[0]).expect("read")).expect("json");
    assert!(
        (spent["spent"].as_f64().unwrap_or_default() - 0.15).abs() < 1e-9,
        "{spent}"
    );
    server.stop().await;
}

/// A batch of people who opted out takes the budget a batch of misses takes: each row waits for
/// and spends the cell a miss's call would have (without any call), so the batch lasts as long,
/// shows rows waiting for budget, and its summary and rows read the same. Were the excluded rows
/// free, a tenant with scarce budget could tell who opted out from how fast their rows come back.
#[tokio::test]
async fn an_excluded_persons_rows_wait_for_and_spend_the_budget_a_miss_would() {
    const ROWS: usize = 40;
    // 1500 a minute, 0.8 for batches: 20 a second and a burst of 3, so 40 rows need 1.85 s.
    let budget_time = Duration::from_secs_f64((ROWS as f64 - 3.0) / 20.0);
    let up = Upstreams::start().await;
    let server = Server::start(&gravatar_at(&up, 1500, "")).await;
    let excluded: Vec<String> = (0..ROWS)
        .map(|i| format!("gone{i}@paced.example"))
        .collect();
    let identifiers: Vec<Value> = excluded.iter().map(|e| json!({"email": e})).collect();
    let resp = server
        .admin(reqwest::Method::POST, "/v1/admin/exclusions")
        .json(&json!({ "identifiers": identifiers }))
        .send()
        .await
        .expect("import");
    assert_eq!(resp.status().as_u16(), 200);

    let mut runs = Vec::new();
    for csv in [format!("email\n{}\n", excluded.join("\n")), emails(ROWS)] {
        // Each batch starts from a full burst: the previous one's cells have come back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let (status, created) = upload(&server, "/v1/batches", csv).await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().expect("id").to_string();
        let (running, done) = follow(&server, &id, Duration::from_secs(60)).await;
        runs.push((started.elapsed(), running, done, ndjson(&server, &id).await));
    }
    let [
        (gone_took, gone_running, gone, gone_rows),
        (_, _, miss, miss_rows),
    ] = &runs[..]
    else {
        unreachable!("two batches ran")
    };

    assert!(
        *gone_took >= budget_time,
        "the excluded rows took {gone_took:?}, less than the {budget_time:?} their budget needs"
    );
    assert!(
        gone_running
            .iter()
            .any(|s| s["rows_waiting_for_budget"].as_u64() > Some(0)),
        "no summary of the excluded batch showed rows waiting for budget: {gone_running:?}"
    );
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(gone), keys(miss), "{gone}\n{miss}");
    for field in ["status", "rows_done", "rows_found", "rows_error"] {
        assert_eq!(gone[field], miss[field], "{field}: {gone}\n{miss}");
    }
    assert_eq!(gone_rows.len(), miss_rows.len());
    for (g, m) in gone_rows.iter().zip(miss_rows) {
        assert_eq!(keys(g), keys(m), "{g}\n{m}");
        assert_eq!((&g["status"], &g["sources"]), (&m["status"], &m["sources"]));
    }
    for e in &excluded {
        assert_eq!(
            up.gravatar.hits(&Upstreams::gravatar_path(e)),
            0,
            "asked about {e}"
        );
    }
    server.stop().await;
}
