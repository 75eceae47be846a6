//! The audit log and subject access, on both stores: the audit export carries what happened and no
//! identifier a test used, tenants get 403, and subject access counts a person's stored rows with
//! their expiry and says nothing else.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_stores;
use crate::helpers::{Server, Upstreams};

async fn upload(server: &Server, csv: &str) -> String {
    let resp = server
        .post("/v1/batches")
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

async fn wait_done(server: &Server, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let s: Value = server
            .get(&format!("/v1/batches/{id}"))
            .send()
            .await
            .expect("summary")
            .json()
            .await
            .expect("json");
        if s["status"] == "done" {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never done: {s}");
        // Rows wait for Gravatar's budget (16 a minute by default): polled slowly enough to stay
        // within the tenant's own rate.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn audit(server: &Server, query: &str) -> (u16, String) {
    let resp = server
        .admin(Method::GET, &format!("/v1/admin/audit{query}"))
        .send()
        .await
        .expect("audit");
    (resp.status().as_u16(), resp.text().await.expect("text"))
}

fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

async fn subject_access(server: &Server, body: Value) -> (u16, Value) {
    let resp = server
        .admin(Method::POST, "/v1/admin/subject-access")
        .json(&body)
        .send()
        .await
        .expect("subject access");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

both_stores! {
    #[tokio::test]
    async fn the_audit_export_tells_what_happened_without_any_identifier(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile("audit.ada@example.com", "Audit Ada", "Acme", None);
        let server = Server::start_in(mode, &up.config()).await;
        let start = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let id = upload(&server, "email,company\naudit.ada@example.com,Acme\naudit.bob@example.com,Acme\n").await;
        wait_done(&server, &id).await;
        let result = server.get(&format!("/v1/batches/{id}/result.csv")).send().await.expect("result");
        assert_eq!(result.status().as_u16(), 200);
        let (status, _) = server.optout(json!({"email": "audit.ada@example.com", "phone": "+44 20 7946 0111"})).await;
        assert_eq!(status, 200);
        let deleted = server.delete(&format!("/v1/batches/{id}")).send().await.expect("delete");
        assert_eq!(deleted.status().as_u16(), 204);

        let (status, text) = audit(&server, "").await;

        assert_eq!(status, 200, "{text}");
        let all = events(&text);
        let kinds: Vec<&str> = all.iter().filter_map(|e| e["event"].as_str()).collect();
        for want in ["config_loaded", "key_created", "batch_created", "batch_finished",
                     "batch_downloaded", "opt_out_received", "batch_deleted"] {
            assert!(kinds.contains(&want), "{want} in {kinds:?}");
        }
        let optout = all.iter().find(|e| e["event"] == "opt_out_received").expect("opt-out");
        assert_eq!(optout["kinds"], json!(["email", "phone"]));
        assert_eq!(optout["added"], 2);
        assert_eq!(optout["receipt"].as_str().map(str::len), Some(32));
        let finished = all.iter().find(|e| e["event"] == "batch_finished").expect("finished");
        assert_eq!((finished["batch"].as_str(), &finished["rows"], &finished["found"]), (Some(id.as_str()), &json!(2), &json!(1)));
        for needle in ["audit.ada", "audit.bob", "2079460111", "7946 0111", "Audit Ada", "Acme", "example.com", "test"] {
            assert!(!text.contains(needle), "{needle} in the audit export: {text}");
        }
        let times: Vec<&str> = all.iter().filter_map(|e| e["at"].as_str()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

        // Time filters: nothing before the test's start is in a window that starts there, and a
        // window that ends at the start holds only what came before (the configuration, keys).
        let (_, later) = audit(&server, &format!("?since={start}")).await;
        assert!(events(&later).iter().all(|e| e["event"] != "config_loaded"), "{later}");
        assert!(events(&later).iter().any(|e| e["event"] == "batch_deleted"));
        let (_, before) = audit(&server, &format!("?until={start}")).await;
        assert!(events(&before).iter().all(|e| e["event"] != "batch_created"), "{before}");
        let (status, _) = audit(&server, "?since=last%20tuesday").await;
        assert_eq!(status, 422);

        let tenant = server.get("/v1/admin/audit").send().await.expect("as a tenant");
        assert_eq!(tenant.status().as_u16(), 403, "{:?}", tenant.headers());
        let anon = server.anon(Method::GET, "/v1/admin/audit").send().await.expect("anonymous");
        assert_eq!(anon.status().as_u16(), 401);
    }
}

both_stores! {
    #[tokio::test]
    async fn subject_access_counts_a_persons_stored_rows_and_says_nothing_else(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile("sar.ada@example.com", "Sar Ada", "Acme", None);
        let server = Server::start_in(mode, &up.config()).await;
        let first = upload(&server, "email,company\nsar.ada@example.com,Acme\nsar.bob@example.com,Acme\nsar.ada@example.com,Acme\n").await;
        let other_tenant = server.tenant_key("other").await;
        let second = server
            .http
            .post(format!("{}/v1/batches", server.url))
            .bearer_auth(&other_tenant)
            .header("content-type", "text/csv")
            .body("Email\nsar.ada@example.com\n")
            .send()
            .await
            .expect("upload");
        assert_eq!(second.status().as_u16(), 202);
        let second: Value = second.json().await.expect("json");
        let second_id = second["id"].as_str().expect("id").to_string();
        let third = upload(&server, "email\nsar.carol@example.com\n").await;
        wait_done(&server, &first).await;
        for id in [&second_id, &third] {
            let start = Instant::now();
            loop {
                let s: Value = server.http.get(format!("{}/v1/batches/{id}", server.url))
                    .bearer_auth(if *id == second_id { &other_tenant } else { &server.key })
                    .send().await.expect("summary").json().await.expect("json");
                if s["status"] == "done" { break; }
                assert!(start.elapsed() < Duration::from_secs(60), "{s}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let summary = wait_done(&server, &first).await;

        let (status, ada) = subject_access(&server, json!({"email": "sar.ada@example.com"})).await;

        assert_eq!(status, 200, "{ada}");
        assert_eq!(ada["listed"], false);
        assert!(ada.get("listed_since").is_none(), "{ada}");
        assert_eq!(ada["stored_rows"], 3, "two rows in one batch, one in another tenant's: {ada}");
        let results = ada["stored_results"].as_array().expect("results");
        let mut rows: Vec<u64> = results.iter().filter_map(|r| r["rows"].as_u64()).collect();
        rows.sort_unstable();
        assert_eq!(rows, [1, 2]);
        assert!(results.iter().any(|r| r["expires_at"] == summary["expires_at"]), "{ada}");
        let mut keys: Vec<&String> = ada.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["listed", "stored_results", "stored_rows"]);
        for r in results {
            let mut fields: Vec<&String> = r.as_object().expect("object").keys().collect();
            fields.sort();
            assert_eq!(fields, ["expires_at", "rows"], "nothing about the batch or its tenant");
        }
        let text = ada.to_string();
        for secret in [first.as_str(), second_id.as_str(), "Sar Ada", "other", "test", "Acme"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let (_, nobody) = subject_access(&server, json!({"email": "sar.nobody@example.com"})).await;
        assert_eq!(nobody, json!({"listed": false, "stored_rows": 0, "stored_results": []}));

        // After an opt-out: listed since then, and nothing stored any more.
        let (status, _) = server.optout(json!({"email": "sar.ada@example.com"})).await;
        assert_eq!(status, 200);
        let (_, after) = subject_access(&server, json!({"email": "sar.ada@example.com"})).await;
        assert_eq!(after["listed"], true);
        let since = after["listed_since"].as_str().expect("since");
        assert!(humantime::parse_rfc3339(since).is_ok(), "{since}");
        assert_eq!(after["stored_rows"], 0, "{after}");

        let (status, _) = subject_access(&server, json!({"email": "not an email"})).await;
        assert_eq!(status, 422);
        let tenant = server.post("/v1/admin/subject-access").json(&json!({"email": "sar.ada@example.com"})).send().await.expect("tenant");
        assert_eq!(tenant.status().as_u16(), 403, "{:?}", tenant.headers());
    }
}
