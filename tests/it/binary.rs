//! Harness for tests of the real `enrichd` binary: a data directory, a config pointing only at loopback
//! fakes, a fixed exclusion key in the environment (and nothing else from the test's environment), and
//! a server process whose address is read from its JSON startup log line. [`Setup::new_user`] is the
//! same without the exclusion key and without an API key: the state a first-time user starts from.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enrichd::testkit::Served;

use serde_json::Value;

use crate::helpers::{Upstreams, assert_loopback, loopback_only};

/// The exclusion key every process of a test shares (test-only, 32 bytes as hex).
pub const KEY: &str = "6b1f0a4c9d2e8f7a3b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70";

pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_enrichd")
}

/// A data directory and configuration shared by every process of one test.
pub struct Setup {
    pub up: Upstreams,
    pub data: tempfile::TempDir,
    config: PathBuf,
    /// A tenant key made with `enrichd keys new`.
    pub tenant_key: String,
    pub http: reqwest::Client,
    /// Everything every process of this setup wrote on stderr.
    pub stderr: Arc<Mutex<String>>,
    /// Whether `ENRICHD_EXCLUSION_KEY` is set for every process.
    exclusion_key: bool,
}

impl Setup {
    /// Upstream fakes, a config file (only loopback sources, JSON logs, `extra` appended) and a key.
    pub async fn new(extra: &str) -> Self {
        Self::with_source_timeout(extra, 1500).await
    }

    /// [`Setup::new`] with the fakes' sources timing out after `timeout_ms`.
    pub async fn with_source_timeout(extra: &str, timeout_ms: u64) -> Self {
        let mut setup = Self::new_user_with(extra, timeout_ms).await;
        setup.exclusion_key = true;
        let out = setup.run(&["keys", "new", "--tenant", "test"]);
        assert!(out.status.success(), "keys new: {}", text_of(&out.stderr));
        setup.tenant_key = text_of(&out.stdout)
            .lines()
            .last()
            .expect("the key is the last line")
            .to_string();
        setup
    }

    /// Upstream fakes and a config file as [`Setup::new`], but no API key yet and no
    /// `ENRICHD_EXCLUSION_KEY`: what someone following the README has before the first start.
    pub async fn new_user(extra: &str) -> Self {
        Self::new_user_with(extra, 1500).await
    }

    async fn new_user_with(extra: &str, timeout_ms: u64) -> Self {
        let up = Upstreams::start().await;
        let data = tempfile::tempdir().expect("data dir");
        let text = loopback_only(&format!(
            "{}\n[server]\nlog_format = \"json\"\n{extra}",
            up.config_with_timeout(timeout_ms)
        ));
        let loaded = enrichd::config::Config::from_toml(&text, &[]).expect("valid config");
        assert_loopback(&loaded);
        let config = data.path().join("enrichd.toml");
        std::fs::write(&config, text).expect("write config");
        Self {
            up,
            data,
            config,
            tenant_key: String::new(),
            http: reqwest::Client::new(),
            stderr: Arc::new(Mutex::new(String::new())),
            exclusion_key: false,
        }
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.path().join("exclusion").join("exclusion.log")
    }

    /// `enrichd <args> --config C --data-dir D` with only the exclusion key (unless a new user's)
    /// and a log level set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.data.path())
            .env_clear()
            .env("ENRICHD_LOG", "info");
        if self.exclusion_key {
            cmd.env("ENRICHD_EXCLUSION_KEY", KEY);
        }
        cmd
    }

    /// [`Setup::command`] run under `wrapper` (its program, then its arguments; the binary and its
    /// arguments follow), with the same environment.
    pub fn command_under(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let inner = self.command(args);
        let (program, before) = wrapper.split_first().expect("a wrapper program");
        let mut cmd = Command::new(program);
        cmd.args(before)
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Runs a command to completion; its stderr is kept with the setup's.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    /// [`Setup::run`] with these variables set too.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run enrichd");
        self.keep(&text_of(&out.stderr));
        out
    }

    fn keep(&self, text: &str) {
        self.stderr.lock().expect("stderr lock").push_str(text);
    }

    /// Starts `enrichd serve --listen 127.0.0.1:0` and waits for its address; `Err` with the exit
    /// status and stderr when the process ends instead.
    pub async fn start(&self) -> Result<Instance, (Option<i32>, String)> {
        self.start_with(&[]).await
    }

    /// [`Setup::start`] with more environment variables.
    pub async fn start_with(
        &self,
        env: &[(&str, &str)],
    ) -> Result<Instance, (Option<i32>, String)> {
        let mut cmd = self.command(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.envs(env.iter().copied());
        self.start_command(cmd).await
    }

    /// Starts `cmd` (an `enrichd serve`) and waits for its address, keeping what it writes on stdout.
    pub async fn start_command(&self, cmd: Command) -> Result<Instance, (Option<i32>, String)> {
        let all = self.stderr.clone();
        tokio::task::spawn_blocking(move || Served::spawn(cmd, Some(all), START_TIMEOUT))
            .await
            .expect("join")
    }

    /// POST /v1/optout to `inst`; the status, or the connection error's text.
    pub async fn optout(&self, inst: &Instance, email: &str) -> Result<u16, String> {
        post_optout(&self.http, &inst.url, email).await
    }

    /// POST /v1/lookup with the tenant key.
    pub async fn lookup(&self, inst: &Instance, body: Value) -> Value {
        self.http
            .post(format!("{}/v1/lookup", inst.url))
            .bearer_auth(&self.tenant_key)
            .json(&body)
            .send()
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json")
    }
}

/// A running `enrichd serve`.
pub type Instance = Served;

/// The server's Prometheus text.
pub async fn metrics(http: &reqwest::Client, inst: &Instance) -> String {
    http.get(format!("{}/metrics", inst.metrics_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// POST /v1/optout to the server at `url`; the status, or the connection error's text.
pub async fn post_optout(http: &reqwest::Client, url: &str, email: &str) -> Result<u16, String> {
    http.post(format!("{url}/v1/optout"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// What `enrichd keys new` printed: the key (alone on the last line) and its id (`k_...`).
pub fn created_key(out: &Output) -> (String, String) {
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    let stdout = text_of(&out.stdout);
    let key = stdout.lines().last().expect("key line").to_string();
    let id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("k_"))
        .expect("key id")
        .to_string();
    (key, id)
}

pub fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
