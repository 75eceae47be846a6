//! No test reads the machine's environment: a CI machine with `ENRICHD_SOURCES__*` or
//! `ENRICHD_EXCLUSION_KEY` set must not turn a real source on or change a test's key. The outer test
//! runs the inner one in a child test process whose environment carries such variables (setting
//! them in this process would race every other test), and shows that neither the in-process server
//! nor a spawned binary heeds them.

use crate::binary::{Setup, created_key, text_of};
use crate::helpers::{Fake, Server, Upstreams, status_of};

/// An exclusion key no test uses: the one the child's environment offers.
const FOREIGN_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const INNER: &str = "hermetic::inner_servers_ignore_enrichd_variables_of_the_parent";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_by_the_tests_ignore_the_machines_enrichd_variables() {
    let canary = Fake::start().await;
    let exe = std::env::current_exe().expect("the test binary");

    let out = tokio::process::Command::new(exe)
        .args([INNER, "--exact", "--ignored", "--test-threads", "1"])
        .env("ENRICHD_SOURCES__OPENPGP__ENABLED", "true")
        .env("ENRICHD_SOURCES__OPENPGP__BASE_URL", &canary.url)
        .env("ENRICHD_EXCLUSION_KEY", FOREIGN_KEY)
        .env("ENRICHD_STORE__URL", "file:///nonexistent/enrichd-test")
        .output()
        .await
        .expect("run the inner test");

    let stdout = text_of(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inner test: {stdout}\n{}",
        text_of(&out.stderr)
    );
    assert_eq!(
        canary.total_hits(),
        0,
        "a source the environment enabled was called"
    );
}

/// Run only by the test above, with the variables it sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by servers_started_by_the_tests_ignore_the_machines_enrichd_variables"]
async fn inner_servers_ignore_enrichd_variables_of_the_parent() {
    assert_eq!(
        std::env::var("ENRICHD_EXCLUSION_KEY").as_deref(),
        Ok(FOREIGN_KEY),
        "run from the outer test"
    );
    let email = "hermetic@example.com";

    // In process: the harness's server.
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;
    let (status, body) = server.lookup(serde_json::json!({ "email": email })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&body, "openpgp"), "absent", "{body}");
    assert_ne!(
        server.exclusion_key_hex().trim(),
        FOREIGN_KEY,
        "the in-process server took its exclusion key from the environment"
    );
    server.stop().await;

    // A spawned binary, from a first-run setup (no key given: it makes its own).
    let s = Setup::new_user("").await;
    let (key, _) = created_key(&s.run(&["keys", "new", "--tenant", "t"]));
    let inst = s.start().await.expect("serve starts");
    let body: serde_json::Value = s
        .http
        .post(format!("{}/v1/lookup", inst.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    assert_eq!(status_of(&body, "openpgp"), "absent", "{body}");
    let generated = std::fs::read_to_string(s.data.path().join("exclusion.key"))
        .expect("the binary generated its own exclusion key");
    assert_ne!(generated.trim(), FOREIGN_KEY);
    drop(inst);
}
