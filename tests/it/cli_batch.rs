//! `enrichd batch`: local through the same pipeline, and `--server` against the real service.

use std::path::Path;

use crate::helpers::{Server, Upstreams, loopback_only};

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// How a command failed: its exit code and what it said on stderr.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

/// `enrichd <args>` as a process of its own, from an empty environment (nothing the machine running
/// the tests has set reaches it).
async fn run(args: &[&str]) -> Result<(), Failure> {
    let out = tokio::process::Command::new(crate::binary::bin())
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("run enrichd");
    if out.status.success() {
        return Ok(());
    }
    Err(Failure {
        code: out.status.code().unwrap_or(-1),
        message: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test]
async fn local_batch_enriches_through_the_pipeline_and_writes_the_output_atomically() {
    let up = Upstreams::start().await;
    up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        None,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("enrichd.toml");
    std::fs::write(
        &config,
        loopback_only(&format!(
            "[sources.gravatar]\nbase_url = \"{}\"\n",
            up.gravatar.url
        )),
    )
    .expect("config");
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "Email;Note\nada@analytical.example;+1\nbob@example.org;x\n",
    )
    .expect("input");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let output = out_dir.join("out.csv");

    run(&[
        "batch",
        input.to_str().expect("path"),
        "-o",
        output.to_str().expect("path"),
        "--config",
        config.to_str().expect("path"),
        "--data-dir",
        dir.path().join("data").to_str().expect("path"),
    ])
    .await
    .expect("batch succeeds");

    let text = std::fs::read_to_string(&output).expect("output");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("Email;Note;enrichd_status;enrichd_name"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("ada@analytical.example;'+1;found;Ada Lovelace"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("bob@example.org;x;not_found"),
        "{text}"
    );
    assert_eq!(
        leftovers(&out_dir),
        Vec::<String>::new(),
        "no working dir or temp file left"
    );
    assert_eq!(up.gravatar.total_hits(), 2);
}

#[tokio::test]
async fn server_batch_uploads_follows_downloads_and_deletes() {
    let up = Upstreams::start().await;
    up.gravatar_profile("grace@navy.example", "Grace Hopper", "US Navy", None);
    let server = Server::start(&format!(
        "[sources.gravatar]\nbase_url = \"{}\"\n",
        up.gravatar.url
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "Contact,Team\ngrace@navy.example,Compilers\n").expect("input");
    let output = dir.path().join("out.ndjson");

    run(&[
        "batch",
        input.to_str().expect("path"),
        "-o",
        output.to_str().expect("path"),
        "--server",
        &server.url,
        "--key",
        &server.key,
        "--columns",
        r#"{"Contact":"email"}"#,
        "--format",
        "ndjson",
        "--delete",
    ])
    .await
    .expect("batch succeeds");

    let text = std::fs::read_to_string(&output).expect("output");
    let row: serde_json::Value = serde_json::from_str(text.trim()).expect("one json line");
    assert_eq!(row["enrichment"]["name"], "Grace Hopper");
    assert_eq!(row["input"]["Team"], "Compilers");
    let listed: serde_json::Value = server.batches().await;
    assert_eq!(
        listed["batches"],
        serde_json::json!([]),
        "--delete erased it"
    );
}

#[tokio::test]
async fn a_refused_upload_is_a_runtime_failure_naming_the_problem_and_writes_nothing() {
    let server = Server::start("").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "name,notes\nAda,hi\n").expect("input");
    let output = dir.path().join("out.csv");

    let err = run(&[
        "batch",
        input.to_str().expect("path"),
        "-o",
        output.to_str().expect("path"),
        "--server",
        &server.url,
        "--key",
        &server.key,
    ])
    .await
    .expect_err("refused");

    assert_eq!(err.code, 1);
    assert!(
        err.message.contains("422") && err.message.contains("no identifier column"),
        "{}",
        err.message
    );
    assert!(!output.exists());
    let missing = run(&[
        "batch",
        "/nonexistent/in.csv",
        "-o",
        output.to_str().expect("path"),
    ])
    .await
    .expect_err("missing input");
    assert_eq!(missing.code, 2);
}
