//! CSV batches over real HTTP: upload (CSV and multipart), messy files, limits, progress, result shape,
//! NDJSON, tenant isolation, delete, expiry, restart resume, opt-out purge, the webhook, and what is left
//! on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use enrichd::batch::ENRICH_COLUMNS;
use enrichd::blob::ManualClock;
use enrichd::domain::{Email, Identifier};
use enrichd::exclusion::Origin;
use serde_json::Value;

use crate::both_stores;
use crate::helpers::{Launch, Mode, Reply, Server, Upstreams};

/// A webhook delivery as received: the signature header and the raw body.
type Delivery = (String, Vec<u8>);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Only the Gravatar fake is enabled; every other built-in source is off (see `loopback_only`). The
/// tenant's rate allows polling a batch for as long as a job takeover takes.
pub(crate) fn config(up: &Upstreams, batches: &str) -> String {
    format!(
        "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 1500\nrate_per_minute = 60000\n\
         [tenants]\nrate_per_minute = 60000\nburst = 1000\n[batches]\n{batches}\n",
        up.gravatar.url
    )
}

/// A server whose Gravatar fake knows Ada Lovelace (`ada@analytical.example`), with `[batches]` set
/// as given.
pub(crate) async fn knowing_ada(batches: &str) -> (Upstreams, Server) {
    let up = ada_upstream().await;
    let server = Server::start(&config(&up, batches)).await;
    (up, server)
}

/// Upstream fakes whose Gravatar knows Ada Lovelace (`ada@analytical.example`).
pub(crate) async fn ada_upstream() -> Upstreams {
    let up = Upstreams::start().await;
    up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        None,
    );
    up
}

pub(crate) async fn upload_csv(
    server: &Server,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    upload_csv_to(server, key, "/v1/batches", body).await
}

/// A CSV upload to `path` (`/v1/batches` with query options) with `key`; status and JSON answer.
async fn upload_csv_to(
    server: &Server,
    key: &str,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let resp = server
        .http
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn upload(server: &Server, body: &'static [u8]) -> String {
    let (status, json) = upload_csv(server, &server.key, body).await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().expect("id").to_string()
}

/// A multipart upload to `/v1/batches` with the tenant key.
async fn post_form(server: &Server, form: reqwest::multipart::Form) -> reqwest::Response {
    server
        .post("/v1/batches")
        .multipart(form)
        .send()
        .await
        .expect("upload")
}

/// A multipart upload that must be accepted; the new batch's id.
async fn upload_form(server: &Server, form: reqwest::multipart::Form) -> String {
    let resp = post_form(server, form).await;
    assert_eq!(resp.status().as_u16(), 202);
    resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub(crate) async fn summary(server: &Server, id: &str) -> (u16, Value) {
    let resp = server
        .get(&format!("/v1/batches/{id}"))
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn wait_done(server: &Server, id: &str) -> Value {
    let s = wait_finished(server, id).await;
    assert_eq!(s["status"], "done", "batch failed: {s}");
    s
}

/// Polls until the batch leaves `queued` and `running`; its summary.
pub(crate) async fn wait_finished(server: &Server, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, s) = summary(server, id).await;
        assert_eq!(status, 200, "{s}");
        if !matches!(s["status"].as_str(), Some("queued" | "running")) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "batch never finished: {s}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

pub(crate) async fn result(server: &Server, id: &str, query: &str) -> (u16, String, String) {
    let resp = server
        .get(&format!("/v1/batches/{id}/result.csv{query}"))
        .send()
        .await
        .expect("result");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, resp.text().await.expect("body"))
}

/// Parses a CSV result into rows of cells.
pub(crate) fn rows(text: &str, delimiter: u8) -> Vec<Vec<String>> {
    let text = text.trim_start_matches('\u{feff}');
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("csv row").iter().map(str::to_string).collect())
        .collect()
}

pub(crate) fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// The names of every stored object of the batch area (directory or bucket).
async fn blob_files(server: &Server) -> Vec<String> {
    server
        .batch_objects()
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

pub(crate) fn problem_detail(json: &Value) -> String {
    json["detail"].as_str().unwrap_or_default().to_string()
}

both_stores! {
    #[tokio::test]
    async fn csv_upload_is_enriched_with_input_columns_first_one_row_each_and_neutralised(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile(
            "ada@analytical.example",
            "Ada Lovelace",
            "Analytical Engines",
            None,
        );
        let server = Server::start_in(mode, &config(&up, "")).await;
        let body: &'static [u8] = b"Email,Phone,Note\r\n\
            ada@analytical.example,+33612345678,=HYPERLINK(\"http://x\")\r\n\
            bob@nowhere.example,,-5\r\n\
            ,,just a note\r\n";

        let (status, created) = upload_csv(&server, &server.key, body).await;
        assert_eq!(status, 202, "{created}");
        for field in ["id", "status", "created_at", "expires_at"] {
            assert!(created[field].is_string(), "{field} in {created}");
        }
        let id = created["id"].as_str().expect("id");
        let done = wait_done(&server, id).await;
        assert_eq!(done["rows_total"], 3);
        assert_eq!(done["rows_done"], 3);
        assert_eq!(done["rows_found"], 1);

        let (status, ct, text) = result(&server, id, "").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/csv"), "{ct}");
        let table = rows(&text, b',');
        let header = &table[0];
        let mut want: Vec<String> = vec!["Email".into(), "Phone".into(), "Note".into()];
        want.extend(ENRICH_COLUMNS.iter().map(|s| s.to_string()));
        assert_eq!(header, &want, "input columns first, then enrichment");
        assert_eq!(table.len(), 4, "one output row per input row: {text}");
        let (status_col, name_col, company_col) = (
            col(header, "enrichd_status"),
            col(header, "enrichd_name"),
            col(header, "enrichd_company"),
        );
        assert_eq!(table[1][0], "ada@analytical.example");
        assert_eq!(
            table[1][1], "'+33612345678",
            "E.164 phones are neutralised too"
        );
        assert_eq!(table[1][2], "'=HYPERLINK(\"http://x\")");
        assert_eq!(table[1][status_col], "found");
        assert_eq!(table[1][name_col], "Ada Lovelace");
        assert_eq!(table[1][company_col], "Analytical Engines");
        assert_eq!(table[2][2], "'-5");
        assert_eq!(table[2][status_col], "not_found");
        assert_eq!(table[3][2], "just a note");
        assert_eq!(
            table[3][status_col], "skipped",
            "a row without identifier is kept"
        );

        let (status, ct, nd) = result(&server, id, "?format=ndjson").await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/x-ndjson");
        let lines: Vec<Value> = nd
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["row"], 1);
        assert_eq!(
            lines[0]["input"]["Phone"], "+33612345678",
            "NDJSON keeps exact values"
        );
        assert_eq!(lines[0]["enrichment"]["name"], "Ada Lovelace");
        assert_eq!(lines[2]["status"], "skipped");

        let (status, bad) = {
            let resp = server
                .get(&format!("/v1/batches/{id}/result.csv?format=xlsx"))
                .send()
                .await
                .expect("get");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        };
        assert_eq!(status, 422);
        assert_eq!(bad["errors"][0]["field"], "format");
}
}

both_stores! {
    #[tokio::test]
    async fn multipart_upload_takes_the_file_field_and_a_columns_mapping_before_it(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile("grace@navy.example", "Grace Hopper", "US Navy", None);
        let server = Server::start_in(mode, &config(&up, "")).await;
        let form = reqwest::multipart::Form::new()
            .text("columns", r#"{"Contact":"email"}"#)
            .part(
                "file",
                reqwest::multipart::Part::bytes(
                    b"Contact,Team\ngrace@navy.example,Compilers\n".to_vec(),
                )
                .file_name("people.csv")
                .mime_str("text/csv")
                .expect("mime"),
            );

        let id = upload_form(&server, form).await;

        let done = wait_done(&server, &id).await;
        assert_eq!(done["rows_found"], 1);
        let (_, _, text) = result(&server, &id, "").await;
        let table = rows(&text, b',');
        assert_eq!(table[1][col(&table[0], "enrichd_name")], "Grace Hopper");

        // No file field, an unknown field, and a field after the file are each refused with a reason.
        let no_file = reqwest::multipart::Form::new().text("columns", "{}");
        let resp = post_form(&server, no_file).await;
        assert_eq!(resp.status().as_u16(), 422);
        assert_eq!(
            resp.json::<Value>().await.expect("json")["errors"][0]["field"],
            "file"
        );
        let late = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(b"email\na@b.example\n".to_vec()),
            )
            .text("columns", "{}");
        let resp = post_form(&server, late).await;
        assert_eq!(resp.status().as_u16(), 422);
        let detail = problem_detail(&resp.json::<Value>().await.expect("json"));
        assert!(detail.contains("before the file"), "{detail}");
        let listed: Value = server.batches().await;
        assert_eq!(
            listed["batches"].as_array().map(Vec::len),
            Some(1),
            "the refused upload was dropped"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn messy_files_are_read_whatever_their_encoding_delimiter_and_line_ends(mode) {
        let up = Upstreams::start().await;
        let server = Server::start_in(mode, &config(&up, "")).await;
        // UTF-8 with BOM, semicolons, CRLF, a quoted field with a newline and an embedded delimiter.
        let bom: &'static [u8] =
            b"\xEF\xBB\xBFE-mail;Pr\xC3\xA9nom;Remarque\r\nzoe@example.org;Zo\xC3\xA9;\"line one\r\nline two; still\"\r\nyann@example.org;Yann;ok\r\n";
        // Latin-1 (Windows-1252), tab-separated, LF only.
        let latin1: &'static [u8] =
            b"Mail\tSoci\xE9t\xE9\tNom complet\nrene@example.org\tCaf\xE9 R\xE9publique\tRen\xE9 Fran\xE7ois\n";

        let a = upload(&server, bom).await;
        let b = upload(&server, latin1).await;

        assert_eq!(wait_done(&server, &a).await["rows_total"], 2);
        assert_eq!(wait_done(&server, &b).await["rows_total"], 1);
        let (_, _, text) = result(&server, &a, "").await;
        assert!(text.starts_with('\u{feff}'), "a BOM in keeps a BOM out");
        let table = rows(&text, b';');
        assert_eq!(&table[0][..3], ["E-mail", "Prénom", "Remarque"]);
        assert_eq!(table[1][2], "line one\r\nline two; still");
        assert_eq!(table.len(), 3);
        let (_, _, text) = result(&server, &b, "").await;
        let table = rows(&text, b'\t');
        assert_eq!(&table[0][..3], ["Mail", "Société", "Nom complet"]);
        assert_eq!(
            table[1][1], "Café République",
            "Latin-1 is converted to UTF-8"
        );
        assert_eq!(table[1][2], "René François");
}
}

both_stores! {
    #[tokio::test]
    async fn limits_are_413_or_422_with_the_limit_named_and_nothing_is_stored(mode) {
        let up = Upstreams::start().await;
        let server = Server::start_in(mode, &config(
            &up,
            "max_bytes = 400\nmax_rows = 3\nmax_columns = 4\nmax_field_bytes = 40\n",
        ))
        .await;
        let long_field = format!("email\n{}@example.org\n", "x".repeat(60));
        let big = format!("email\n{}", "someone@example.org\n".repeat(30));
        let cases: Vec<(String, u16, &str)> = vec![
            (big, 413, "400 bytes"),
            (
                "email\na@x.org\nb@x.org\nc@x.org\nd@x.org\n".into(),
                413,
                "3 rows",
            ),
            (
                "email,a,b,c,d\nx@y.org,1,2,3,4\n".into(),
                422,
                "the limit is 4",
            ),
            (long_field, 422, "longer than 40 bytes"),
            ("name,notes\nAda,hi\n".into(), 422, "no identifier column"),
            (String::new(), 422, "header line is required"),
        ];
        for (body, want, detail) in cases {
            let (status, json) = upload_csv(&server, &server.key, body).await;
            assert_eq!(status, want, "{json}");
            assert!(problem_detail(&json).contains(detail), "{detail} in {json}");
            assert_eq!(
                json["type"],
                if want == 413 {
                    "/problems/too-large"
                } else {
                    "/problems/invalid-input"
                }
            );
        }
        let resp = server
            .post("/v1/batches")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 415);
        let (status, json) = upload_csv_to(
            &server,
            &server.key,
            "/v1/batches?columns=not-json",
            "email\na@b.org\n",
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(json["errors"][0]["field"], "columns");
        let (status, json) = upload_csv_to(
            &server,
            &server.key,
            "/v1/batches?columns=%7B%22Nope%22%3A%22email%22%7D",
            "email\na@b.org\n",
        )
        .await;
        assert_eq!(status, 422);
        assert!(problem_detail(&json).contains("Nope"));

        let listed: Value = server.batches().await;
        assert_eq!(listed["batches"], serde_json::json!([]));
        assert_eq!(
            blob_files(&server).await,
            Vec::<String>::new(),
            "refused uploads leave nothing"
        );
}
}

#[tokio::test]
async fn metrics_label_a_parameterised_route_by_its_template_never_by_its_path() {
    let up = Upstreams::start().await;
    let server = Server::start(&config(&up, "")).await;
    let id = upload(&server, b"email\nada@example.org\n").await;
    wait_done(&server, &id).await;
    assert_eq!(summary(&server, &id).await.0, 200);
    let result = server
        .get(&format!("/v1/batches/{id}/result.csv"))
        .send()
        .await
        .expect("result");
    assert_eq!(result.status().as_u16(), 200);

    let metrics = server.metrics().await;

    assert!(metrics.contains(r#"route="/v1/batches/{id}""#), "{metrics}");
    assert!(
        metrics.contains(r#"route="/v1/batches/{id}/result.csv""#),
        "{metrics}"
    );
    assert!(!metrics.contains(&id), "a batch id in a label: {metrics}");
}

both_stores! {
    #[tokio::test]
    async fn another_tenants_batch_is_404_everywhere_and_lists_show_own_batches_only(mode) {
        let up = Upstreams::start().await;
        let server = Server::start_in(mode, &config(&up, "")).await;
        let id = upload(&server, b"email\nada@example.org\n").await;
        wait_done(&server, &id).await;
        let other = server.tenant_key("tenant-b").await;

        let as_b = |method: reqwest::Method, path: String| {
            server
                .http
                .request(method, format!("{}{path}", server.url))
                .bearer_auth(&other)
        };
        // An id of the same shape that was never issued: A's real batch must read exactly like it.
        let never = format!("{:032x}", u128::from_str_radix(&id, 16).expect("hex id") ^ 1);
        for (method, tail) in [
            (reqwest::Method::GET, ""),
            (reqwest::Method::GET, "/result.csv"),
            (reqwest::Method::DELETE, ""),
        ] {
            let mut seen = Vec::new();
            for target in [&id, &never] {
                let path = format!("/v1/batches/{target}{tail}");
                let resp = as_b(method.clone(), path).send().await.expect("request");
                let status = resp.status().as_u16();
                let mut headers: Vec<(String, String)> = resp
                    .headers()
                    .iter()
                    .filter(|(k, _)| *k != "date")
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                headers.sort();
                let body = resp.text().await.expect("body").replace(target.as_str(), "{id}");
                seen.push((status, headers, body));
            }
            assert_eq!(seen[0].0, 404, "{method} {tail}");
            assert_eq!(seen[0], seen[1], "{method} {tail}: another tenant's batch vs an unknown id");
        }
        let listed: Value = as_b(reqwest::Method::GET, "/v1/batches".into())
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["batches"], serde_json::json!([]));
        let (b_status, _) = upload_csv(&server, &other, "email\nb@example.org\n").await;
        assert_eq!(b_status, 202);

        let mine: Value = server.batches().await;
        let ids: Vec<&str> = mine["batches"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|b| b["id"].as_str())
            .collect();
        assert_eq!(ids, [id.as_str()]);
        assert_eq!(summary(&server, &id).await.0, 200, "B's delete did nothing");
        assert_eq!(summary(&server, "not-a-batch-id").await.0, 404);
}
}

both_stores! {
    #[tokio::test]
    async fn delete_erases_the_result_from_disk_at_once(mode) {
        let up = Upstreams::start().await;
        let server = Server::start_in(mode, &config(&up, "")).await;
        let id = upload(&server, b"email\nada@example.org\nbob@example.org\n").await;
        wait_done(&server, &id).await;
        let before = blob_files(&server).await;
        assert!(
            before.iter().any(|p| p.contains(&id)),
            "{before:?}"
        );

        let resp = server
            .delete(&format!("/v1/batches/{id}"))
            .send()
            .await
            .expect("delete");

        assert_eq!(resp.status().as_u16(), 204);
        assert_eq!(summary(&server, &id).await.0, 404);
        assert_eq!(result(&server, &id, "").await.0, 404);
        let after = blob_files(&server).await;
        assert!(
            !after.iter().any(|p| p.contains(&id)),
            "files left: {after:?}"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn a_result_is_served_on_day_29_and_gone_on_day_30(mode) {
        let up = Upstreams::start().await;
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let server = Server::launch(
            &config(&up, ""),
            Launch {
                mode: Some(mode),
                clock: Some(clock.clone()),
                ..Launch::default()
            },
        )
        .await;
        let id = upload(&server, b"email\nada@example.org\n").await;
        wait_done(&server, &id).await;

        clock.advance(29 * DAY);
        assert_eq!(summary(&server, &id).await.0, 200);
        assert_eq!(result(&server, &id, "").await.0, 200);
        server.state.batches.sweep().await.expect("sweep");
        assert!(!blob_files(&server).await.is_empty(), "day 29: still stored");

        clock.advance(DAY);
        let (status, json) = summary(&server, &id).await;
        assert_eq!(status, 410, "{json}");
        assert_eq!(result(&server, &id, "").await.0, 410);
        let listed: Value = server.batches().await;
        assert_eq!(listed["batches"], serde_json::json!([]));
        let report = server.state.batches.sweep().await.expect("sweep");
        assert_eq!(report.batches_removed, 1);
        assert_eq!(
            blob_files(&server).await,
            Vec::<String>::new(),
            "day 30: gone from disk"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn a_batch_interrupted_by_a_restart_resumes_and_every_row_is_written_once(mode) {
        let up = Upstreams::start().await;
        up.gravatar.otherwise(
            Reply::status(404, r#"{"error":"Profile not found"}"#).after(Duration::from_millis(25)),
        );
        let cfg = config(&up, "part_rows = 4\nconcurrency_per_tenant = 2\n");
        let server = Server::start_in(mode, &cfg).await;
        let emails: Vec<String> = (1..=40).map(|i| format!("person{i}@example.org")).collect();
        let body = format!("email\n{}\n", emails.join("\n"));
        let (status, created) = upload_csv(&server, &server.key, body).await;
        assert_eq!(status, 202);
        let id = created["id"].as_str().expect("id").to_string();
        let start = Instant::now();
        loop {
            let (_, s) = summary(&server, &id).await;
            if s["rows_done"].as_u64().unwrap_or(0) >= 8 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no progress: {s}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let (data_dir, s3) = server.kill_keep_data().await;
        let hits_at_kill: Vec<usize> = emails
            .iter()
            .map(|e| up.gravatar.hits(&Upstreams::gravatar_path(e)))
            .collect();
        assert!(hits_at_kill.contains(&0), "the kill came before the end");
        let server = Server::launch(
            &cfg,
            Launch {
                mode: Some(mode),
                data_dir: Some(data_dir),
                s3,
                ..Launch::default()
            },
        )
        .await;
        let done = wait_done(&server, &id).await;

        assert_eq!(done["rows_done"], 40);
        let (_, _, nd) = result(&server, &id, "?format=ndjson").await;
        let numbers = crate::helpers::ndjson_rows(&nd);
        assert_eq!(
            numbers,
            (1..=40).collect::<Vec<u64>>(),
            "every row once, in order"
        );
        let hits: Vec<usize> = emails
            .iter()
            .map(|e| up.gravatar.hits(&Upstreams::gravatar_path(e)))
            .collect();
        assert!(hits.iter().all(|h| *h >= 1), "{hits:?}");
        for (i, h) in hits.iter().enumerate().take(8) {
            assert_eq!(
                *h,
                1,
                "row {} was in a part committed before the kill",
                i + 1
            );
        }
        let repeated = hits.iter().filter(|h| **h > 1).count();
        assert!(
            repeated <= 4,
            "only the part in flight is asked again: {hits:?}"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn an_opt_out_purges_the_persons_rows_from_stored_results_within_the_request(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile(
            "ada@analytical.example",
            "Ada Lovelace",
            "Analytical Engines",
            None,
        );
        let server = Server::start_in(mode, &config(&up, "")).await;
        let id = upload(
            &server,
            b"email,note\nada@analytical.example,first\nbob@example.org,second\nADA@analytical.example,again\n",
        )
        .await;
        assert_eq!(wait_done(&server, &id).await["rows_found"], 2);
        let hooks = server.state.optout_hooks.clone();
        assert!(
            hooks.iter().any(|h| h.name() == "batches"),
            "the purge hook is registered"
        );

        // What the opt-out handlers do: record durably, then run every hook before answering.
        let ids = vec![Identifier::Email(
            Email::parse("ada@analytical.example").expect("email"),
        )];
        server
            .state
            .exclusion
            .add(&ids, Origin::Api)
            .await
            .expect("opt-out recorded");
        for hook in hooks.iter() {
            hook.opted_out(&ids).await.expect("hook");
        }

        let (_, _, text) = result(&server, &id, "").await;
        let table = rows(&text, b',');
        assert_eq!(table.len(), 2, "only bob's row is left: {text}");
        assert_eq!(table[1][0], "bob@example.org");
        assert!(!text.to_lowercase().contains("ada@"), "{text}");
        let s = summary(&server, &id).await.1;
        assert_eq!(s["rows_found"], 0);
        let stored: Vec<u8> = server
            .batch_objects()
            .await
            .into_iter()
            .flat_map(|(_, bytes)| bytes)
            .collect();
        assert!(
            !String::from_utf8_lossy(&stored)
                .to_lowercase()
                .contains("analytical"),
            "no stored object holds her in the clear"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn the_completion_webhook_is_signed_and_private_addresses_are_refused(mode) {
        let up = Upstreams::start().await;
        let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let sink = received.clone();
        let hook = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let sig = headers
                            .get("enrichd-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        sink.lock().expect("lock").push((sig, body.to_vec()));
                        "ok"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, hook).await });
        let key_dir = tempfile::tempdir().expect("tempdir");
        let key_file = key_dir.path().join("webhook.key");
        std::fs::write(&key_file, "ab".repeat(32)).expect("key file");
        let server = Server::start_in(mode, &config(
            &up,
            &format!(
                "webhook_trusted_hosts = [\"127.0.0.1\"]\nwebhook_key_file = \"{}\"\n",
                key_file.display()
            ),
        ))
        .await;

        let (status, json) = upload_csv_to(
            &server,
            &server.key,
            "/v1/batches?webhook=http://10.1.2.3/hook",
            "email\na@example.org\n",
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(json["errors"][0]["field"], "webhook");

        let q: String = url::form_urlencoded::byte_serialize(hook_url.as_bytes()).collect();
        let path = format!("/v1/batches?webhook={q}");
        let (status, json) = upload_csv_to(&server, &server.key, &path, "email\na@example.org\n").await;
        assert_eq!(status, 202);
        let id = json["id"].as_str().expect("id").to_string();
        wait_done(&server, &id).await;
        let start = Instant::now();
        let (sig, body) = loop {
            if let Some(got) = received.lock().expect("lock").first().cloned() {
                break got;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no webhook");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let json: Value = serde_json::from_slice(&body).expect("json body");
        assert_eq!(json["id"], id.as_str());
        assert_eq!(json["status"], "done");
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .expect("signature form");
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&body);
        assert_eq!(
            v1,
            blake3::keyed_hash(&[0xab; 32], &signed).to_hex().as_str()
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("a@example.org"),
            "counts only"
        );
}
}

both_stores! {
    #[tokio::test]
    async fn no_file_holding_personal_data_outlives_a_request_outside_the_blob_area(mode) {
        let up = Upstreams::start().await;
        up.gravatar_profile(
            "ada@analytical.example",
            "Ada Lovelace",
            "Analytical Engines",
            None,
        );
        let server = Server::start_in(mode, &config(&up, "max_rows = 2\n")).await;
        let id = upload(&server, b"email\nada@analytical.example\n").await;
        wait_done(&server, &id).await;
        let (refused, _) = upload_csv(
            &server,
            &server.key,
            "email\nada@analytical.example\nb@x.org\nc@x.org\n",
        )
        .await;
        assert_eq!(refused, 413);
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"email\nada@analytical.example\n".to_vec()),
        );
        let multipart = upload_form(&server, form).await;
        // Every write this test caused has finished before the files are read: a batch still running
        // holds its staging file open, which is not one that outlived its write.
        wait_done(&server, &multipart).await;
        let _ = result(&server, &id, "").await;

        if mode == Mode::S3 {
            let left = files_under(server.data_dir.path());
            assert!(left.is_empty(), "a replica's disk holds nothing: {left:?}");
        }
        let blobs = server.data_dir.path().join("blobs");
        for file in files_under(server.data_dir.path()) {
            if file.starts_with(&blobs) {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                assert!(
                    !name.contains('#'),
                    "a staging file outlived its write: {file:?}"
                );
                continue;
            }
            let bytes = std::fs::read(&file).expect("read");
            assert!(
                !String::from_utf8_lossy(&bytes)
                    .to_lowercase()
                    .contains("analytical"),
                "personal data outside the blob area in {file:?}"
            );
        }
}
}

#[tokio::test]
async fn a_batch_whose_every_row_failed_is_failed_with_the_commonest_reason() {
    let up = Upstreams::start().await;
    up.gravatar
        .otherwise(Reply::status(503, r#"{"error":"Service Unavailable"}"#));
    let server = Server::start(&config(&up, "")).await;

    let id = upload(
        &server,
        b"email\na@example.org\nb@example.org\nc@example.org\n",
    )
    .await;
    let done = wait_finished(&server, &id).await;

    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        (&done["rows_done"], &done["rows_error"]),
        (&Value::from(3), &Value::from(3))
    );
    assert_eq!(
        done["error"],
        "no row could be enriched; the commonest reason: every source asked failed (gravatar error)"
    );
    let listed = server.batches().await;
    assert_eq!(
        listed["batches"][0]["status"], "failed",
        "the list says so too"
    );
}

#[tokio::test]
async fn rows_use_their_valid_identifiers_and_say_what_was_left_out() {
    let (_up, server) = knowing_ada("").await;

    let id = upload(
        &server,
        b"email,phone\nada@analytical.example,n/a\nada@analytical.example,12\n-,N/A\nnope,+1\n",
    )
    .await;
    let done = wait_finished(&server, &id).await;
    let (_, _, text) = result(&server, &id, "").await;

    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        (&done["rows_found"], &done["rows_error"]),
        (&Value::from(2), &Value::from(1))
    );
    let rows = rows(&text, b',');
    let status = |r: &Vec<String>| r[2].clone();
    let note = |r: &Vec<String>| r.iter().rev().nth(1).cloned().unwrap_or_default();
    assert_eq!(
        rows[0].iter().rev().nth(1).map(String::as_str),
        Some("enrichd_note")
    );
    assert_eq!(rows[0].last().map(String::as_str), Some("enrichd_sources"));
    assert_eq!(
        (status(&rows[1]), note(&rows[1])),
        ("found".into(), String::new())
    );
    assert_eq!(
        (status(&rows[2]), note(&rows[2])),
        (
            "found".into(),
            "phone is a national number and no default region is configured: use +<country \
             code>; looked up without it"
                .into()
        )
    );
    assert_eq!(
        status(&rows[3]),
        "skipped",
        "placeholders only: nothing to look up"
    );
    assert_eq!(status(&rows[4]), "invalid:email,phone");
    assert_eq!(
        done["rows_error_reason"],
        "email is not an email address: it has no '@'; phone is not a phone number"
    );
    assert_eq!(rows[2][3], "Ada Lovelace", "looked up by the email");
}
