//! The first hour of a new user, with the real binary: the README's path from the first start to an
//! opt-out, and each trap a newcomer met on the way, with the message they see now.

use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{Setup, text_of};
use crate::helpers::Reply;

/// The key `enrichd serve` printed: the last of the lines up to the first that is a key.
fn printed_key(lines: &[String]) -> String {
    let key = lines.last().expect("serve printed a key");
    assert!(key.starts_with("ek_"), "{lines:?}");
    key.clone()
}

/// The last line a command wrote on stderr.
fn last_line(bytes: &[u8]) -> String {
    text_of(bytes)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// POSTs `body` as JSON, with `key` as a bearer token when given; the JSON answer.
async fn post_json(http: &reqwest::Client, url: &str, key: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// Polls a batch through the API until it is no longer queued or running.
async fn finished_batch(http: &reqwest::Client, url: &str, key: &str) -> Value {
    loop {
        let b: Value = http
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("batch status")
            .json()
            .await
            .expect("json");
        if b["status"] != "queued" && b["status"] != "running" {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CSV file holding `text` and an output path beside it, in a directory of their own.
struct Csv {
    _dir: tempfile::TempDir,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
}

impl Csv {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.csv");
        std::fs::write(&input, text).expect("csv");
        let output = dir.path().join("out.csv");
        Self {
            _dir: dir,
            input,
            output,
        }
    }

    /// `batch IN.csv -o OUT.csv`, then `extra`.
    fn batch<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "batch",
            self.input.to_str().expect("path"),
            "-o",
            self.output.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        args
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_first_hour_works_as_written() {
    let s = Setup::new_user("").await;
    s.up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        None,
    );

    // "Run it": the first start creates a key, prints it once, and warns about the development
    // exclusion key.
    let inst = s.start().await.expect("enrichd serve starts");
    let key =
        printed_key(&inst.stdout_until(crate::binary::START_TIMEOUT, |l| l.starts_with("ek_")));
    assert!(
        inst.stderr()
            .contains("generated a development exclusion key"),
        "{}",
        inst.stderr()
    );

    // "One lookup", as JSON and as a streamed query string.
    let one = post_json(
        &s.http,
        &format!("{}/v1/lookup", inst.url),
        Some(&key),
        json!({"email": "ada@analytical.example", "want": ["phone"], "timeout_ms": 4000}),
    )
    .await;
    assert_eq!(one["found"], true, "{one}");
    assert_eq!(one["profile"]["name"]["value"], "Ada Lovelace");
    let streamed = s
        .http
        .get(format!(
            "{}/v1/lookup?email=ada@analytical.example",
            inst.url
        ))
        .header("x-api-key", &key)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    let last: Value =
        serde_json::from_str(streamed.lines().last().expect("a final event")).expect("json");
    assert_eq!(last["found"], true, "{streamed}");

    // "A CSV batch", with the command line against the running server...
    let leads = Csv::new("email,company\nada@analytical.example,AE\nnobody@example.org,X\n");
    let out = s.run(&leads.batch(&["--server", &inst.url, "--key", &key]));
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    let text = std::fs::read_to_string(&leads.output).expect("result");
    assert!(
        text.contains("ada@analytical.example,AE,found,Ada Lovelace"),
        "{text}"
    );
    assert!(
        text_of(&out.stderr).contains("2 rows enriched, 1 found; wrote"),
        "{}",
        text_of(&out.stderr)
    );
    // ... and with curl's requests: upload, follow, download, erase.
    let created: Value = s
        .http
        .post(format!("{}/v1/batches", inst.url))
        .header("x-api-key", &key)
        .header("content-type", "text/csv")
        .body(std::fs::read(&leads.input).expect("csv"))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let batch = format!(
        "{}/v1/batches/{}",
        inst.url,
        created["id"].as_str().expect("id")
    );
    let done = finished_batch(&s.http, &batch, &key).await;
    assert_eq!(
        (&done["status"], &done["rows_found"], &done["rows_error"]),
        (&json!("done"), &json!(1), &json!(0)),
        "{done}"
    );
    let csv = s
        .http
        .get(format!("{batch}/result.csv"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let erased = s
        .http
        .delete(&batch)
        .header("x-api-key", &key)
        .send()
        .await
        .expect("delete");
    assert_eq!(erased.status().as_u16(), 204);

    // "Opting out needs no key; it is effective before the answer".
    let receipt = post_json(
        &s.http,
        &format!("{}/v1/optout", inst.url),
        None,
        json!({"email": "ada@analytical.example"}),
    )
    .await;
    assert_eq!(receipt["status"], "recorded", "{receipt}");
    let hits = s.up.total_hits();
    let after = post_json(
        &s.http,
        &format!("{}/v1/lookup", inst.url),
        Some(&key),
        json!({"email": "ada@analytical.example"}),
    )
    .await;
    assert_eq!(
        (&after["found"], &after["profile"]),
        (&json!(false), &Value::Null)
    );
    assert_eq!(s.up.total_hits(), hits, "no upstream was asked");

    // "or: enrichd keys new --tenant sales": a key alone on the last line.
    let out = s.run(&["keys", "new", "--tenant", "sales"]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    assert!(last_line(&out.stdout).starts_with("ek_"));
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_listen_spends_no_key_and_the_next_start_prints_a_tenant_key() {
    let s = Setup::new_user("").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").to_string();

    let out = s.run(&["serve", "--listen", &busy]);

    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text_of(&out.stdout));
    assert_eq!(
        last_line(&out.stderr),
        format!(
            "enrichd: cannot listen on {busy}: Address already in use (os error 98); another \
             process is using that port: stop it, or choose another port with --listen (e.g. \
             --listen 127.0.0.1:8081)"
        )
    );
    drop(taken);

    let inst = s.start().await.expect("starts");
    let lines = inst.stdout_until(crate::binary::START_TIMEOUT, |l| l.starts_with("ek_"));
    let key = printed_key(&lines);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("No API key existed, so enrichd created tenant key k_")
            && lines[0].ends_with(
                "It is shown once; make more with `enrichd keys new --tenant NAME` (add --admin \
                 for the admin routes):"
            ),
        "{}",
        lines[0]
    );
    let status = |path: &'static str| {
        let request = s.http.get(format!("{}{path}", inst.url)).bearer_auth(&key);
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(
        status("/v1/lookup?email=someone@example.org").await,
        200,
        "the README's tenant key"
    );
    assert_eq!(
        status("/v1/admin/exclusions/stats").await,
        403,
        "a tenant key, not an admin key"
    );
    assert!(inst.kill_and_read_stdout().is_empty());

    let again = s.start().await.expect("restarts");
    assert_eq!(
        again.kill_and_read_stdout(),
        Vec::<String>::new(),
        "a key exists: nothing is created or printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_key_warning_is_repeated_at_every_start() {
    let s = Setup::new_user("").await;
    for start in ["first", "second"] {
        let inst = s.start().await.expect("starts");

        let stderr = inst.stderr();

        assert!(
            stderr.contains("development exclusion key")
                && stderr.contains("ENRICHD_EXCLUSION_KEY"),
            "{start} start: {stderr}"
        );
        inst.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key_the_line_or_variable_and_a_valid_value() {
    let s = Setup::new_user("").await;
    let path = s.config_path().to_path_buf();
    let good = std::fs::read_to_string(&path).expect("config");
    let bad = format!("{good}\n[lookup]\ndefault_timeout_ms = \"5s\"\n");
    std::fs::write(&path, &bad).expect("write");

    let out = s.run(&["lookup", "--email", "ada@example.com"]);

    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        last_line(&out.stderr),
        format!(
            "enrichd: invalid configuration: lookup.default_timeout_ms ({}:{}) must be a whole \
             number of milliseconds, e.g. 5000, not string \"5s\"",
            path.display(),
            bad.lines().count()
        )
    );

    std::fs::write(&path, &good).expect("write");
    let out = s.run_with(
        &["lookup", "--email", "ada@example.com"],
        &[("ENRICHD_LOOKUP__DEFAULT_TIMOUT_MS", "5000")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        last_line(&out.stderr).starts_with(
            "enrichd: invalid configuration: ENRICHD_LOOKUP__DEFAULT_TIMOUT_MS sets \
             lookup.default_timout_ms, which is not a setting; expected one of `default_timeout_ms`"
        ),
        "{}",
        text_of(&out.stderr)
    );
    assert_eq!(s.up.total_hits(), 0, "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_accepted_where_addresses_are() {
    let s = Setup::new("").await;
    let inst = s
        .start_command(s.command(&["serve", "--listen", "localhost:0"]))
        .await
        .expect("--listen localhost:0 starts");
    assert!(
        inst.url.starts_with("http://127.0.0.1:") || inst.url.starts_with("http://[::1]:"),
        "{}",
        inst.url
    );
    inst.kill();

    let path = s.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        text.replace("[server]\n", "[server]\nlisten = \"localhost:0\"\n"),
    )
    .expect("write");
    let inst = s
        .start_command(s.command(&["serve"]))
        .await
        .expect("listen = \"localhost:0\" starts");
    let health = s
        .http
        .get(format!("{}/healthz", inst.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_exclusion_key_is_a_configuration_error_that_says_how_to_make_one() {
    let s = Setup::new("").await;

    let out = s.run_with(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("ENRICHD_EXCLUSION_KEY", "abc")],
    );

    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        last_line(&out.stderr),
        "enrichd: exclusion key: ENRICHD_EXCLUSION_KEY must be exactly 64 hex characters (32 \
         bytes) and the value given is not; make one with `enrichd secret` (or `openssl rand -hex \
         32`) and keep a copy somewhere safe"
    );
    assert!(out.stdout.is_empty(), "no key was created");

    let made = std::process::Command::new(crate::binary::bin())
        .arg("secret")
        .env_clear()
        .output()
        .expect("run");
    let secret = last_line(&made.stdout);
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()), "{secret}");
    let fresh = Setup::new_user("").await;
    let mut serve = fresh.command(&["serve", "--listen", "127.0.0.1:0"]);
    serve.env("ENRICHD_EXCLUSION_KEY", &secret);
    let inst = fresh
        .start_command(serve)
        .await
        .expect("the made secret is a valid exclusion key");
    assert!(!inst.stderr().contains("development exclusion key"));
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_is_named_as_such_and_never_read_as_a_phone_number() {
    let s = Setup::new("").await;

    let out = s.run(&["lookup", "--phone", "n/a"]);

    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        last_line(&out.stderr),
        "enrichd: phone is 'n/a', which stands for no value: give a real phone, or another \
         identifier (email, phone, profile_url, or name with company or domain)"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(s.up.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_no_enabled_source_can_take_says_so_on_the_status_line() {
    let s = Setup::new("").await;

    let out = s.run(&[
        "lookup",
        "--profile-url",
        "https://www.linkedin.com/in/ada-lovelace",
    ]);

    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("the answer as JSON");
    assert_eq!(answer["found"], false, "{answer}");
    let hint = answer["hints"][0].as_str().expect("a hint");
    assert!(
        hint.starts_with("no enabled source can look up a profile URL, so none was asked"),
        "{hint}"
    );
    assert_eq!(last_line(&out.stderr), format!("enrichd: {hint}"));
    assert_eq!(s.up.total_hits(), 0, "nobody was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_help_describes_every_option() {
    let s = Setup::new_user("").await;

    let out = s.run(&["lookup", "--help"]);

    assert_eq!(out.status.code(), Some(0));
    let help = text_of(&out.stdout);
    let options: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .filter(|l| l.trim_start().starts_with('-'))
        .collect();
    assert!(options.len() >= 8, "{help}");
    for line in options {
        let described = line
            .trim_start()
            .split_once("  ")
            .is_some_and(|(_, text)| !text.trim().is_empty());
        assert!(described, "no description: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commands_read_one_key_variable_and_explain_a_refused_key() {
    let s = Setup::new("").await;
    let inst = s.start().await.expect("starts");

    let out = s.run(&["sources", "--server", &inst.url, "--key", "wrong"]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        last_line(&out.stderr),
        format!(
            "enrichd: {}/v1/sources answered HTTP 401: the server does not know this API key; \
             check --key (or ENRICHD_API_KEY), or ask the server's operator for a key (`enrichd \
             keys new --tenant NAME` on the server)",
            inst.url
        )
    );
    for var in ["ENRICHD_API_KEY", "ENRICHD_KEY"] {
        let out = s.run_with(&["sources", "--server", &inst.url], &[(var, &s.tenant_key)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{var}: {}",
            text_of(&out.stderr)
        );
        assert!(text_of(&out.stdout).starts_with("SOURCE"), "{var}");
    }
    let csv = Csv::new("email\nnobody@example.org\n");
    let out = s.run_with(
        &csv.batch(&["--server", &inst.url]),
        &[("ENRICHD_KEY", &s.tenant_key)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    assert!(
        text_of(&out.stderr).contains("enrichd: 1 row enriched, 0 found; wrote"),
        "{}",
        text_of(&out.stderr)
    );
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_batch_beside_a_running_server_says_to_use_the_server() {
    let s = Setup::new("").await;
    let inst = s.start().await.expect("starts");
    let csv = Csv::new("email\nnobody@example.org\n");

    let out = s.run(&csv.batch(&[]));

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        last_line(&out.stderr),
        format!(
            "enrichd: a running enrichd server holds the data directory {}, and a local batch \
             beside it could miss the opt-outs it records, so send the batch to that server \
             instead: enrichd batch {} -o {} --server {} --key KEY",
            s.data.path().display(),
            csv.input.display(),
            csv.output.display(),
            inst.url,
        )
    );
    assert!(!csv.output.exists());
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_batch_whose_every_row_failed_exits_non_zero_with_the_reason() {
    let s = Setup::new("").await;
    let down = Reply::status(500, r#"{"error":"internal"}"#);
    s.up.gravatar.otherwise(down.clone());
    s.up.github.otherwise(down);
    let csv = Csv::new("email\na@example.org\nb@example.org\n");

    let out = s.run(&csv.batch(&[]));

    assert_eq!(out.status.code(), Some(1));
    let last = last_line(&out.stderr);
    assert!(
        last.starts_with(
            "enrichd: the batch failed: no row could be enriched; the commonest reason: every \
             source asked failed ("
        ) && last.contains("gravatar error")
            && last.ends_with(
                "; `enrichd sources` shows each source's state, and the log above says why calls \
                 failed; no output was written"
            ),
        "{last}"
    );
    assert!(!text_of(&out.stderr).contains("rows enriched"));
    assert!(!csv.output.exists());
}
