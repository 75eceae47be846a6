//! `enrichd optout` and `enrichd lookup` as an operator runs them, beside or instead of a server.

use serde_json::{Value, json};

use crate::binary::{Setup, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optout_is_refused_with_one_sentence_while_a_server_holds_the_list() {
    let s = Setup::new("").await;
    let inst = s.start().await.expect("start");
    let before = std::fs::read(s.log_path()).expect("log");

    let out = s.run(&["optout", "--email", "by.mail@example.com"]);

    assert_eq!(out.status.code(), Some(1));
    let stderr = text_of(&out.stderr);
    let last = stderr.lines().last().expect("an error line");
    assert!(
        last.starts_with("enrichd: a running enrichd server holds the exclusion list"),
        "{stderr}"
    );
    assert!(
        last.contains(&format!("POST {}/v1/optout", inst.url)),
        "names the server's real address: {last}"
    );
    assert!(!stderr.contains("by.mail"), "the identifier is not echoed");
    assert_eq!(
        std::fs::read(s.log_path()).expect("log"),
        before,
        "nothing written"
    );
    assert!(out.stdout.is_empty());
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optout_records_and_expands_and_lookup_honours_it_beside_a_running_server() {
    let s = Setup::new("").await;
    s.up.gravatar_contact(
        "cli.person@example.com",
        "Cli Person",
        &["+44 20 7946 0321"],
        None,
        &[],
    );

    let out = s.run(&["optout", "--email", "Cli.Person@example.com"]);

    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    let stdout = text_of(&out.stdout);
    let receipt = stdout.lines().last().expect("receipt line");
    assert_eq!(receipt.len(), 32, "{stdout}");
    assert!(receipt.chars().all(|c| c.is_ascii_hexdigit()));
    // `lookup` reads the list without its lock, so it works while a server runs.
    let inst = s.start().await.expect("start");
    let hits = s.up.total_hits();
    for args in [
        ["lookup", "--email", "cli.person@example.com"],
        ["lookup", "--phone", "+442079460321"],
    ] {
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(v["found"], false, "{args:?}");
    }
    let served = s.lookup(&inst, json!({"phone": "+44 20 7946 0321"})).await;
    assert_eq!(served["found"], false);
    assert_eq!(
        s.up.total_hits(),
        hits,
        "neither the CLI nor the server asked an upstream"
    );
    inst.kill();
    let stderr = s.stderr.lock().expect("lock").clone();
    // The phone's distinctive digits, not a short run that random ids and timestamps can hold.
    let personal: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            ["cli.person", "2079460321", "7946 0321"]
                .iter()
                .any(|n| l.contains(n))
        })
        .collect();
    assert!(
        personal.is_empty(),
        "personal data on stderr: {personal:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optout_usage_errors_exit_2_and_write_nothing() {
    let s = Setup::new("").await;
    for args in [
        vec!["optout", "--name", "Ada Lovelace"],
        vec!["optout", "--email", "not-an-email"],
        vec!["optout"],
        vec!["optout", "--emial", "a@example.com"],
    ] {
        let out = s.run(&args);

        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text_of(&out.stderr)
        );
        assert!(!text_of(&out.stderr).trim().is_empty());
    }
    assert!(!s.log_path().exists(), "no list was even opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_refuses_a_list_whose_key_is_missing() {
    let s = Setup::new("").await;
    assert_eq!(
        s.run(&["optout", "--email", "keyed@example.com"])
            .status
            .code(),
        Some(0)
    );
    let hits = s.up.total_hits();

    let out = s
        .command(&["lookup", "--email", "keyed@example.com"])
        .env_remove("ENRICHD_EXCLUSION_KEY")
        .output()
        .expect("run");

    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let stderr = text_of(&out.stderr);
    assert!(stderr.contains("no exclusion key was found"), "{stderr}");
    assert!(out.stdout.is_empty(), "no answer without the list");
    assert_eq!(s.up.total_hits(), hits, "no lookup ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_prints_what_happened_as_ndjson_without_the_person_beside_a_running_server() {
    let s = Setup::new("").await;
    let out = s.run(&[
        "optout",
        "--email",
        "audit.cli@example.com",
        "--phone",
        "+44 20 7946 0999",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    let receipt = text_of(&out.stdout)
        .lines()
        .last()
        .expect("receipt")
        .to_string();
    let inst = s.start().await.expect("start");

    let out = s.run(&["audit", "--since", "1h"]);

    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    let stdout = text_of(&out.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let optout = events
        .iter()
        .find(|e| e["event"] == "opt_out_received")
        .expect("the opt-out");
    assert_eq!(optout["receipt"], receipt.as_str());
    assert_eq!(optout["origin"], "cli");
    assert_eq!(optout["kinds"], json!(["email", "phone"]));
    assert!(events.iter().any(|e| e["event"] == "key_created"));
    assert!(events.iter().any(|e| e["event"] == "config_loaded"));
    assert!(
        !stdout.contains("audit.cli") && !stdout.contains("2079460999"),
        "{stdout}"
    );
    let none = s.run(&["audit", "--until", "2000-01-01"]);
    assert_eq!(text_of(&none.stdout), "", "nothing before 2000");
    let bad = s.run(&["audit", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text_of(&bad.stderr));
    inst.kill();
}
