//! Command-line interface: argument parsing and the commands' bodies. `main` only dispatches.

mod audit;
mod keys;
mod store;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, App, AppError};
use crate::auth::Role;
use crate::config::{Config, ListenAddr, Loaded};
use crate::domain::{Query, QueryInput};
use crate::exclusion::Origin;
use crate::optout::OptOutError;
use crate::pipeline::LookupOptions;
use crate::store::replicas::ReplicaShare;
use crate::telemetry::{self, Metrics};
pub use keys::KeysCommand;
pub use store::StoreCommand;

#[derive(Parser, Debug)]
#[command(
    name = "enrichd",
    version,
    about = "Real-time OSINT contact enrichment that keeps no contact database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service.
    Serve {
        /// Address to listen on, with a port: 127.0.0.1:8080, [::1]:8080 or localhost:8080.
        #[arg(long, env = "ENRICHD_LISTEN")]
        listen: Option<ListenAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// Look one person up through the same pipeline, in-process; JSON on stdout.
    Lookup {
        #[command(flatten)]
        query: PersonArgs,
        #[command(flatten)]
        common: Common,
    },
    /// List the configured sources and providers: enabled, key present, breaker state. With `--server`,
    /// the live state of a running service.
    Sources {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A running service to ask (`http://127.0.0.1:8080`); needs `--key`.
        #[arg(long, env = "ENRICHD_SERVER")]
        server: Option<String>,
        /// An API key of that service (`ENRICHD_KEY` is read too, as an older name).
        #[arg(long, env = API_KEY_ENV, hide_env_values = true)]
        key: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Add an opt-out received by mail or phone. It takes effect at once, as through the public form,
    /// and the receipt is printed alone on the last line. Refused while a server holds the data
    /// directory: submit to the server instead (`POST /v1/optout`).
    Optout {
        #[command(flatten)]
        who: PersonArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Enrich a CSV file, locally through the same pipeline or on a running server (`--server`).
    Batch {
        #[command(flatten)]
        args: crate::batchcli::BatchArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the audit log (no personal data) as NDJSON, oldest first: opt-outs received, batches
    /// created, finished, downloaded, deleted and expired, keys created and revoked, configurations
    /// loaded.
    Audit {
        /// Events at or after this time: RFC 3339 (2026-12-01T00:00:00Z), a date (2026-12-01) or a
        /// duration before now (24h, 7days).
        #[arg(long)]
        since: Option<String>,
        /// Events before this time, in the same forms.
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Operate the store: the S3 lifecycle rule, re-wrapping after a storage-key rotation.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Exit 0 if the server on this machine answers `GET /healthz` (a container's health check).
    Healthcheck {
        /// The URL to ask; default `http://127.0.0.1:<port of --listen>/healthz`.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "ENRICHD_LISTEN")]
        listen: Option<ListenAddr>,
    },
    /// Print a new random 32-byte secret as 64 hex characters, the form ENRICHD_EXCLUSION_KEY,
    /// ENRICHD_WEBHOOK_KEY and ENRICHD_STORAGE_KEY take.
    Secret,
}

/// The file in the data directory holding the address a running `serve` listens on.
pub const SERVER_ADDR_FILE: &str = "server.addr";

/// The address of the server running on `data_dir`: what it wrote at start, else the configured one.
pub fn running_server_addr(data_dir: &std::path::Path, configured: &ListenAddr) -> String {
    std::fs::read_to_string(data_dir.join(SERVER_ADDR_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| configured.to_string())
}

/// The variable holding an API key for `--server` commands.
pub const API_KEY_ENV: &str = "ENRICHD_API_KEY";
/// An older name of [`API_KEY_ENV`], still read when it is unset.
pub const API_KEY_ENV_ALIAS: &str = "ENRICHD_KEY";

/// The key from `--key` or `ENRICHD_API_KEY` (clap reads both), else from `ENRICHD_KEY`.
fn api_key(given: Option<String>) -> Option<String> {
    given.or_else(|| {
        std::env::var(API_KEY_ENV_ALIAS)
            .ok()
            .filter(|k| !k.trim().is_empty())
    })
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// TOML configuration file (every key optional).
    #[arg(long, env = "ENRICHD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where keys, the exclusion log and batch results live.
    #[arg(long, env = "ENRICHD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A person, as `lookup` and `optout` take them: any identifier, a name only with a company or domain.
#[derive(Args, Debug, Clone)]
pub struct PersonArgs {
    /// Email address, e.g. ada@example.com.
    #[arg(long)]
    pub email: Option<String>,
    /// Phone number with its country code, e.g. +44 20 7946 0958 (national numbers need
    /// lookup.default_region in the config).
    #[arg(long)]
    pub phone: Option<String>,
    /// Profile URL: LinkedIn, GitHub, X, Keybase, Mastodon, ..., e.g. https://github.com/ada.
    #[arg(long)]
    pub profile_url: Option<String>,
    /// Full name, e.g. "Ada Lovelace"; identifies someone only with --company or --domain.
    #[arg(long)]
    pub name: Option<String>,
    /// The company the person works at, with --name.
    #[arg(long)]
    pub company: Option<String>,
    /// The company's web domain, e.g. example.com, with --name.
    #[arg(long)]
    pub domain: Option<String>,
}

impl PersonArgs {
    /// Parses the person into a query; a usage failure names every invalid field.
    fn query(&self, loaded: &Loaded) -> Result<Query, Failure> {
        let input = QueryInput {
            email: self.email.clone(),
            phone: self.phone.clone(),
            profile_url: self.profile_url.clone(),
            name: self.name.clone(),
            company: self.company.clone(),
            domain: self.domain.clone(),
            ..QueryInput::default()
        };
        Query::parse(&input, loaded.region).map_err(|errors| {
            Failure::usage(
                errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

/// A command's failure: one clear sentence on stderr, and the exit code (2 usage, 1 runtime).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn runtime(e: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: e.to_string(),
        }
    }

    fn usage(e: impl std::fmt::Display) -> Self {
        Self {
            code: 2,
            message: e.to_string(),
        }
    }
}

/// Logs the configuration's warnings (a misspelt variable); commands that set up no logging print them.
fn warn(loaded: &Loaded, logging: bool) {
    for warning in &loaded.warnings {
        if logging {
            tracing::warn!("{warning}");
        } else {
            eprintln!("enrichd: warning: {warning}");
        }
    }
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

fn load(common: &Common) -> Result<(Loaded, PathBuf), Failure> {
    let loaded = Config::load(common.config.as_deref(), &env_vars()).map_err(Failure::usage)?;
    let data_dir = common
        .data_dir
        .clone()
        .unwrap_or_else(|| loaded.config.server.data_dir.clone());
    Ok((loaded, data_dir))
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { listen, common } => serve(listen, &common).await,
        Command::Lookup { query, common } => lookup(&query, &common).await,
        Command::Sources {
            json,
            server,
            key,
            common,
        } => sources(json, server.as_deref(), api_key(key).as_deref(), &common).await,
        Command::Optout { who, common } => optout(&who, &common).await,
        Command::Batch { mut args, common } => {
            args.key = api_key(args.key);
            batch(&args, &common).await
        }
        Command::Keys { command } => keys::run(command).await,
        Command::Audit {
            since,
            until,
            common,
        } => audit::run(since.as_deref(), until.as_deref(), &common).await,
        Command::Store { command } => store::run(command).await,
        Command::Healthcheck { url, listen } => store::healthcheck(url, listen).await,
        Command::Secret => {
            let mut bytes = [0u8; 32];
            rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
                .map_err(|_| Failure::runtime("the operating system's random generator failed"))?;
            println!("{}", hex::encode(bytes));
            Ok(())
        }
    }
}

fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Tenant => "tenant",
    }
}

async fn serve(listen: Option<ListenAddr>, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    telemetry::init(
        None,
        loaded.config.server.log_format == "json",
        stderr_is_terminal(),
        std::io::stderr,
    );
    warn(&loaded, true);
    let o = &loaded.config.operator;
    if o.name.is_none() || (o.contact.is_none() && o.privacy_contact.is_none()) {
        tracing::warn!(
            "[operator] name and contact are not set: /privacy and the opt-out receipt cannot \
             tell the people looked up whom to write to; set [operator] name and privacy_contact \
             in the config"
        );
    }
    let addr = listen.unwrap_or_else(|| loaded.config.server.listen.clone());
    let app = App::build(&loaded, &data_dir).await.map_err(app_failure)?;
    let listener = tokio::net::TcpListener::bind(addr.as_str())
        .await
        .map_err(|e| bind_failure(&addr, &e))?;
    let local = listener.local_addr().map_err(Failure::runtime)?;
    let metrics_addr = &loaded.config.server.metrics_listen;
    let metrics = tokio::net::TcpListener::bind(metrics_addr.as_str())
        .await
        .map_err(|e| {
            Failure::runtime(format!(
                "cannot listen on {metrics_addr} for /metrics: {e}; choose another address with \
                 server.metrics_listen (or ENRICHD_SERVER__METRICS_LISTEN, e.g. 127.0.0.1:9465)"
            ))
        })?;
    let metrics_local = metrics.local_addr().map_err(Failure::runtime)?;
    // Only once the port is ours: a start that cannot listen must not use up the one showing of a key.
    first_key(&app).await?;
    let background = app.start_background().await.map_err(Failure::runtime)?;
    tokio::spawn(crate::http::serve(
        metrics,
        app.metrics_router(),
        std::future::pending(),
    ));
    tracing::info!(addr = %local, metrics = %metrics_local, sources = ?app.state.pipeline.source_names(), "enrichd is listening.");
    // Where this server listens, for commands run beside it on a local store that must send their
    // work to it (a local batch refused for the data directory's lock names this address). Best
    // effort: only a hint. A replica on a shared store keeps nothing on its disk, and has no lock.
    let addr_file = matches!(
        loaded.config.store.url_or(&data_dir),
        crate::store::StoreUrl::File(_)
    )
    .then(|| data_dir.join(SERVER_ADDR_FILE));
    if let Some(file) = &addr_file {
        let _ = std::fs::write(file, format!("{local}\n"));
    }
    let served = crate::http::serve(listener, app.router(), shutdown_signal()).await;
    if let Some(file) = &addr_file {
        let _ = std::fs::remove_file(file);
    }
    served.map_err(Failure::runtime)?;
    background.stop().await;
    tracing::info!("enrichd stopped.");
    Ok(())
}

/// With no API key at all, creates a tenant key and prints it on stdout, alone on the last line:
/// enough for the README's first lookups and batches, and no more. Admin keys, which also manage
/// the exclusion list and read the audit log, are made on purpose with `enrichd keys new --admin`.
async fn first_key(app: &App) -> Result<(), Failure> {
    if !app.state.keys.is_empty() {
        return Ok(());
    }
    let key = app
        .state
        .keys
        .create("default", Role::Tenant)
        .await
        .map_err(Failure::runtime)?;
    println!(
        "No API key existed, so enrichd created tenant key {} for tenant 'default'. It is shown \
         once; make more with `enrichd keys new --tenant NAME` (add --admin for the admin routes):",
        key.key_id
    );
    println!("{}", key.key);
    let _ = std::io::stdout().flush();
    Ok(())
}

fn bind_failure(addr: &ListenAddr, e: &std::io::Error) -> Failure {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process is using that port: stop it, or choose another port with --listen \
             (e.g. --listen 127.0.0.1:8081)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: choose a port above 1024 with --listen"
        }
        _ => "",
    };
    Failure::runtime(format!("cannot listen on {addr}: {e}{hint}"))
}

/// Building the service failed: a configuration problem (a malformed or missing secret, a log
/// written with another key, a bad provider) is the caller's to fix (exit 2); anything else is a
/// runtime failure.
fn app_failure(e: AppError) -> Failure {
    if e.is_configuration() {
        Failure::usage(e)
    } else {
        Failure::runtime(e)
    }
}

async fn batch(args: &crate::batchcli::BatchArgs, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    // Warnings only by default: info lines would tear through the progress bar.
    let quiet = std::env::var_os("ENRICHD_LOG").is_none() && std::env::var_os("RUST_LOG").is_none();
    telemetry::init(
        quiet.then_some("warn"),
        false,
        stderr_is_terminal(),
        std::io::stderr,
    );
    warn(&loaded, true);
    let progress = crate::batchcli::Progress::new(stderr_is_terminal());
    crate::batchcli::run(args, &loaded, &data_dir, progress)
        .await
        .map_err(|e| match e {
            crate::batchcli::BatchCmdError::Usage(m) => Failure::usage(m),
            crate::batchcli::BatchCmdError::Runtime(m) => Failure::runtime(m),
        })
}

async fn lookup(args: &PersonArgs, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    telemetry::init(None, false, stderr_is_terminal(), std::io::stderr);
    warn(&loaded, true);
    let query = args.query(&loaded)?;
    let exclusion = app::read_exclusion(&loaded, &data_dir)
        .await
        .map_err(app_failure)?;
    let pipeline = app::pipeline(
        &loaded,
        exclusion,
        Arc::new(Metrics::new()),
        ReplicaShare::single(),
    )
    .map_err(app_failure)?;
    let result = pipeline.lookup(&query, LookupOptions::default()).await;
    let json = serde_json::to_string_pretty(&result).map_err(Failure::runtime)?;
    println!("{json}");
    // The JSON carries the hints too; the status line is for the person at the terminal, who
    // would otherwise read every source `skipped` as "nobody knows this person".
    for hint in &result.hints {
        eprintln!("enrichd: {hint}");
    }
    Ok(())
}

async fn optout(args: &PersonArgs, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    telemetry::init(None, false, stderr_is_terminal(), std::io::stderr);
    warn(&loaded, true);
    let query = args.query(&loaded)?;
    let app = App::build(&loaded, &data_dir).await.map_err(|e| match e {
        AppError::Exclusion(x) if x.is_locked() => Failure::runtime(format!(
            "a running enrichd server holds the exclusion list in {}, so this command may not write \
             it; submit the opt-out to that server instead with POST http://{addr}/v1/optout \
             (public) or POST http://{addr}/v1/admin/exclusions (admin key)",
            data_dir.display(),
            addr = running_server_addr(&data_dir, &loaded.config.server.listen),
        )),
        other => app_failure(other),
    })?;
    match app.state.optout().run(&query, Origin::Cli).await {
        Ok(ack) => {
            println!("Opt-out recorded and in effect. Receipt:");
            println!("{}", ack.receipt_id);
            Ok(())
        }
        Err(OptOutError::Incomplete { receipt_id, what }) => Err(Failure::runtime(format!(
            "the opt-out is recorded (receipt {receipt_id}) and enforced, but {what} did not \
             finish; run the same command again to complete it"
        ))),
        Err(err @ (OptOutError::NotRecorded(_) | OptOutError::Unavailable(_))) => {
            Err(Failure::runtime(format!(
                "{err}: {}",
                std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
            )))
        }
    }
}

async fn sources(
    json: bool,
    server: Option<&str>,
    key: Option<&str>,
    common: &Common,
) -> Result<(), Failure> {
    let states: Vec<serde_json::Value> = match server {
        Some(url) => {
            let key = key.ok_or_else(|| {
                Failure::usage(format!("--server needs --key (or {API_KEY_ENV})"))
            })?;
            let url = format!("{}/v1/sources", url.trim_end_matches('/'));
            let resp = reqwest::Client::new()
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .map_err(|e| Failure::runtime(format!("cannot reach {url}: {e}")))?;
            if !resp.status().is_success() {
                let status = resp.status().as_u16();
                return Err(Failure::runtime(format!(
                    "{url} answered HTTP {status}{}",
                    crate::batchcli::status_hint(status)
                )));
            }
            let body: serde_json::Value = resp.json().await.map_err(Failure::runtime)?;
            body.get("sources")
                .and_then(|s| s.as_array())
                .cloned()
                .unwrap_or_default()
        }
        None => {
            let (loaded, _) = load(common)?;
            warn(&loaded, false);
            let pipeline = app::pipeline(
                &loaded,
                Arc::new(crate::exclusion::NoExclusions),
                Arc::new(Metrics::new()),
                ReplicaShare::single(),
            )
            .map_err(Failure::runtime)?;
            pipeline
                .source_states()
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .map_err(Failure::runtime)?
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&states)
            .map_err(std::io::Error::other)
            .and_then(|text| writeln!(out, "{text}"))
    } else {
        write_source_table(&mut out, &states)
    };
    written.map_err(Failure::runtime)
}

fn write_source_table(out: &mut impl Write, states: &[serde_json::Value]) -> std::io::Result<()> {
    let text = |v: &serde_json::Value, k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    writeln!(
        out,
        "{:<22} {:<5} {:<8} {:<8} {:<10} {:>8}  NOTE",
        "SOURCE", "KIND", "ENABLED", "KEY", "BREAKER", "RATE/MIN"
    )?;
    for s in states {
        let note = match s.get("disabled").and_then(|d| d.as_str()) {
            Some(why) => why.to_string(),
            None if s.get("paused").and_then(|p| p.as_bool()) == Some(true) => {
                "paused by upstream Retry-After".to_string()
            }
            None => text(s, "endpoint"),
        };
        writeln!(
            out,
            "{:<22} {:<5} {:<8} {:<8} {:<10} {:>8}  {note}",
            text(s, "name"),
            text(s, "kind"),
            if s.get("enabled").and_then(|e| e.as_bool()) == Some(true) {
                "yes"
            } else {
                "no"
            },
            text(s, "key"),
            text(s, "breaker"),
            text(s, "rate_per_minute"),
        )?;
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutdown signal received; draining requests.");
}
