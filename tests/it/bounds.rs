//! Batches within bounds: parts capped in bytes (and read row by row by downloads and purges), the
//! per-tenant storage quota (507), fair scheduling of jobs across tenants, and opt-outs that a full
//! blob area or a tenant at its quota cannot make fail.

use std::time::Duration;

use serde_json::Value;

use crate::batches::{
    ada_upstream, config, knowing_ada, problem_detail, result, rows, summary, upload, upload_csv,
    wait_done,
};
use crate::both_stores;
use crate::helpers::{
    Latch, Reply, Server, Upstreams, assert_problem_type, files_under, wait_until,
};

/// A CSV of `n` rows after Ada's, each with a note of about 200 bytes.
fn wide_csv(n: usize) -> String {
    let mut csv = String::from("email,note\nada@analytical.example,first\n");
    for i in 0..n {
        csv.push_str(&format!(
            "person{i}@example.org,{}\n",
            "a note the tenant keeps with the row ".repeat(5)
        ));
    }
    csv
}

both_stores! {
    #[tokio::test]
    async fn parts_close_at_part_bytes_and_downloads_and_purges_read_them_row_by_row(mode) {
        let up = ada_upstream().await;
        let server = Server::start_in(mode, &config(&up, "part_rows = 1000\npart_bytes = 2048")).await;
        let (status, created) = upload_csv(&server, &server.key, wide_csv(40)).await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().expect("id").to_string();
        wait_done(&server, &id).await;

        // Sealing adds a 24-byte header and a 16-byte tag per 64 KiB to what was capped.
        let part_sizes = || async {
            server
                .batch_objects()
                .await
                .into_iter()
                .filter(|(name, _)| name.rsplit('/').next().is_some_and(|n| n.starts_with("part-")))
                .map(|(_, bytes)| bytes.len())
                .collect::<Vec<_>>()
        };
        let sizes = part_sizes().await;
        assert!(sizes.len() >= 5, "41 rows of ~300 bytes need several 2 KiB parts: {sizes:?}");
        assert!(sizes.iter().all(|s| *s <= 2048 + 40), "a part passed part_bytes: {sizes:?}");
        let (_, _, ndjson) = result(&server, &id, "?format=ndjson").await;
        let numbers: Vec<u64> = ndjson
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("line")["row"].as_u64().expect("row"))
            .collect();
        assert_eq!(numbers, (1..=41).collect::<Vec<u64>>(), "every row once, in order");

        // The purge rewrites Ada's part from the rows it streams: her row goes, the rest stay.
        let (status, _) = server.optout(serde_json::json!({"email": "ada@analytical.example"})).await;
        assert_eq!(status, 200);
        let (_, _, csv) = result(&server, &id, "").await;
        let table = rows(&csv, b',');
        assert_eq!(table.len(), 41, "the header and 40 rows: Ada's is gone");
        assert!(!csv.contains("ada@"), "{csv}");
        assert_eq!(table[1][0], "person0@example.org");
        let after = part_sizes().await;
        assert!(after.iter().all(|s| *s <= 2048 + 40), "{after:?}");
    }
}

#[tokio::test]
async fn an_upload_past_the_tenants_storage_quota_is_507_and_one_past_max_bytes_stays_413() {
    let (_up, server) = knowing_ada(
        "max_bytes = 20000\ntenant_quota_bytes = 6000\n\
         [tenants.storage_quota_bytes]\ngenerous = 1000000\n",
    )
    .await;
    let first = upload_csv(&server, &server.key, wide_csv(10)).await;
    assert_eq!(first.0, 202, "{}", first.1);
    let first = first.1["id"].as_str().expect("id").to_string();
    wait_done(&server, &first).await;

    // Stored: its input, result part, index and metadata; 15 more rows do not fit in what is left.
    let (status, problem) = upload_csv(&server, &server.key, wide_csv(15)).await;
    assert_eq!(status, 507, "{problem}");
    assert_problem_type(&problem, "storage-quota");
    let detail = problem_detail(&problem);
    assert!(detail.contains("of your 6000 bytes"), "{detail}");
    assert!(
        detail.contains("DELETE /v1/batches/"),
        "it says what to do: {detail}"
    );
    assert_eq!(
        server.batches().await["batches"].as_array().map(Vec::len),
        Some(1),
        "nothing of the refused upload is kept"
    );

    // One upload past max_bytes is too large whatever the quota.
    let (status, problem) = upload_csv(&server, &server.key, wide_csv(120)).await;
    assert_eq!(status, 413, "{problem}");

    // A tenant the operator gave more room is not held to the default.
    let generous = server.tenant_key("generous").await;
    assert_eq!(upload_csv(&server, &generous, wide_csv(15)).await.0, 202);

    // Deleting a batch gives its room back.
    let deleted = server
        .delete(&format!("/v1/batches/{first}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    let (status, body) = upload_csv(&server, &server.key, wide_csv(15)).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn a_tenants_single_batch_starts_before_another_tenants_backlog_drains() {
    let up = Upstreams::start().await;
    let (first, second) = (Latch::new(), Latch::new());
    for (email, latch) in [("a1@example.org", &first), ("a2@example.org", &second)] {
        up.gravatar.on(
            &Upstreams::gravatar_path(email),
            Reply::status(404, "{\"error\":\"Profile not found\"}").held(latch.clone()),
        );
    }
    // Held calls must outlast the test's waits: long source and lookup timeouts.
    let server = Server::start(&format!(
        "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 60000\nrate_per_minute = 60000\n\
         [lookup]\ndefault_timeout_ms = 60000\nmax_timeout_ms = 60000\n\
         [tenants]\nrate_per_minute = 60000\nburst = 1000\n\
         [batches]\nmax_jobs = 1\nmax_jobs_per_tenant = 2\n",
        up.gravatar.url
    ))
    .await;
    let a1 = upload(&server, b"email\na1@example.org\n").await;
    let a2 = upload(&server, b"email\na2@example.org\n").await;
    let a3 = upload(&server, b"email\na3@example.org\n").await;
    let a1_path = Upstreams::gravatar_path("a1@example.org");
    wait_until("tenant a's first batch asks its upstream", || {
        up.gravatar.hits(&a1_path) > 0
    })
    .await;
    let b_key = server.tenant_key("tenant-b").await;
    let (status, created) = upload_csv(&server, &b_key, &b"email\nb1@example.org\n"[..]).await;
    assert_eq!(status, 202, "{created}");
    let b1 = created["id"].as_str().expect("id").to_string();

    first.open();
    // The next job to start is b's (a was just served), not a's second: wait for whichever shows.
    let a2_path = Upstreams::gravatar_path("a2@example.org");
    let b_status = || async {
        let resp = server
            .http
            .get(format!("{}/v1/batches/{b1}", server.url))
            .bearer_auth(&b_key)
            .send()
            .await
            .expect("summary");
        resp.json::<Value>().await.expect("json")["status"].clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b_status().await != "done" && up.gravatar.hits(&a2_path) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither b's batch nor a's second ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b_status().await, "done", "b's batch ran before a's second");
    assert_eq!(
        summary(&server, &a3).await.1["status"],
        "queued",
        "a's backlog still waits"
    );
    second.open();
    wait_done(&server, &a2).await;
    wait_done(&server, &a3).await;
    wait_done(&server, &a1).await;
}

#[tokio::test]
async fn a_tenant_at_its_storage_quota_never_makes_an_opt_out_fail() {
    // The blob area on its own filesystem (here: its own directory), apart from the exclusion log.
    let blob_dir = tempfile::tempdir().expect("tempdir");
    let (_up, server) = knowing_ada(&format!(
        "tenant_quota_bytes = 4000\n[store]\nblob_dir = \"{}\"\n",
        blob_dir.path().display()
    ))
    .await;
    let (status, created) = upload_csv(&server, &server.key, wide_csv(10)).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(wait_done(&server, &id).await["rows_found"], 1);
    let (status, problem) = upload_csv(&server, &server.key, wide_csv(15)).await;
    assert_eq!(status, 507, "the tenant is at its quota: {problem}");
    assert!(
        !files_under(&blob_dir.path().join("blobs").join("batches")).is_empty(),
        "the batch is stored in the blob directory"
    );
    let in_data_dir = server.data_dir.path().join("blobs").join("batches");
    assert!(
        !in_data_dir.exists() || files_under(&in_data_dir).is_empty(),
        "and nothing of it in the data directory"
    );

    let (status, receipt) = server
        .optout(serde_json::json!({"email": "ada@analytical.example"}))
        .await;
    assert_eq!(status, 200, "{receipt}");
    let (_, answer) = server
        .lookup(serde_json::json!({"email": "ada@analytical.example"}))
        .await;
    assert_eq!(answer["found"], false, "the opt-out is enforced: {answer}");
    let (_, _, csv) = result(&server, &id, "").await;
    assert!(!csv.contains("ada@"), "her stored row is purged: {csv}");
}
