//! `enrichd keys` and `enrichd store` against a running server on the local store, as an operator
//! runs them: a key made or revoked from the command line takes effect in the server within 2 s, the
//! lifecycle rule is printed, and a storage-key rotation is finished by `store rewrap`.

use std::time::{Duration, Instant};

use crate::binary::{Setup, created_key, text_of};

const STORAGE_A: &str = "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0c1c2c3c4c5c6c7c8c9d0d1d2";
const STORAGE_B: &str = "f1f2f3f4f5f6f7f8f9e0e1e2e3e4e5e6e7e8e9d0d1d2d3d4d5d6d7d8d9c0c1c2";

async fn status(s: &Setup, url: &str, key: &str, path: &str) -> u16 {
    s.http
        .get(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn within_2s(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: never");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "{what} after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_or_revoked_on_the_command_line_takes_effect_in_the_running_server_within_2s() {
    let s = Setup::new("").await;
    let inst = s.start().await.expect("serve");
    let (key, id) = created_key(&s.run(&["keys", "new", "--tenant", "late"]));
    within_2s("the new key works", async || {
        status(&s, &inst.url, &key, "/v1/sources").await == 200
    })
    .await;

    let listed = text_of(&s.run(&["keys", "list"]).stdout);
    assert!(listed.contains(&id) && listed.contains("late"), "{listed}");
    let out = s.run(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    within_2s("the revoked key is refused", async || {
        status(&s, &inst.url, &key, "/v1/sources").await == 401
    })
    .await;
    assert!(text_of(&s.run(&["keys", "list"]).stdout).contains("revoked"));
    let unknown = s.run(&["keys", "revoke", "k_000000000000"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text_of(&unknown.stderr).contains("keys list"));
    assert_eq!(
        status(&s, &inst.url, &s.tenant_key, "/v1/sources").await,
        200,
        "the setup's own key still works"
    );
}

#[test]
fn the_lifecycle_rule_expires_keys_with_the_retention_and_aborts_uploads() {
    let out = std::process::Command::new(crate::binary::bin())
        .args(["store", "lifecycle"])
        .env_clear()
        .env("ENRICHD_STORE__URL", "s3://bucket/eu/prod")
        .env("ENRICHD_RETENTION__BATCH_RESULTS_DAYS", "14")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    let rules: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rules = rules["Rules"].as_array().expect("rules");
    assert_eq!(rules[0]["Filter"]["Prefix"], "eu/prod/batch-keys/");
    assert_eq!(rules[0]["Expiration"]["Days"], 14);
    assert!(
        rules
            .iter()
            .any(|r| r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_key_rotation_is_finished_by_rewrap_and_a_wrong_key_refuses_the_start() {
    let s = Setup::new("").await;
    let inst = s
        .start_with(&[("ENRICHD_STORAGE_KEY", STORAGE_A)])
        .await
        .expect("serve");
    let created: serde_json::Value = s
        .http
        .post(format!("{}/v1/batches", inst.url))
        .bearer_auth(&s.tenant_key)
        .header("content-type", "text/csv")
        .body("email\nrotate@example.org\n")
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let path = format!("/v1/batches/{id}/result.csv");
    let start = Instant::now();
    while status(&s, &inst.url, &s.tenant_key, &path).await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "batch never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inst.kill();

    let (code, stderr) = match s.start_with(&[("ENRICHD_STORAGE_KEY", STORAGE_B)]).await {
        Ok(_) => panic!("a key that unwraps no batch must refuse the start"),
        Err(failed) => failed,
    };
    assert_eq!(code, Some(1));
    assert!(stderr.contains("ENRICHD_STORAGE_KEY_PREVIOUS"), "{stderr}");

    let out = s
        .command(&["store", "rewrap"])
        .env("ENRICHD_STORAGE_KEY", STORAGE_B)
        .env("ENRICHD_STORAGE_KEY_PREVIOUS", STORAGE_A)
        .output()
        .expect("rewrap");
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert!(
        text_of(&out.stdout).contains("re-wrapped 1"),
        "{}",
        text_of(&out.stdout)
    );

    let inst = s
        .start_with(&[("ENRICHD_STORAGE_KEY", STORAGE_B)])
        .await
        .expect("the new key alone reads every batch");
    assert_eq!(status(&s, &inst.url, &s.tenant_key, &path).await, 200);
}
