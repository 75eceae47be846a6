//! Command-line interface: argument parsing and the commands' bodies. `main` only dispatches.

mod keys;
mod store;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, App, AppError};
use crate::auth::Role;
use crate::config::{Config, Loaded};
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
        #[arg(long, env = "ENRICHD_LISTEN")]
        listen: Option<SocketAddr>,
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
        #[arg(long, requires = "key")]
        server: Option<String>,
        /// An API key of that service.
        #[arg(long, env = "ENRICHD_KEY")]
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
        listen: Option<SocketAddr>,
    },
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
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long)]
    pub profile_url: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub company: Option<String>,
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
        } => sources(json, server.as_deref(), key.as_deref(), &common).await,
        Command::Optout { who, common } => optout(&who, &common).await,
        Command::Batch { args, common } => batch(&args, &common).await,
        Command::Keys { command } => keys::run(command).await,
        Command::Store { command } => store::run(command).await,
        Command::Healthcheck { url, listen } => store::healthcheck(url, listen).await,
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

async fn serve(listen: Option<SocketAddr>, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    telemetry::init(
        None,
        loaded.config.server.log_format == "json",
        stderr_is_terminal(),
        std::io::stderr,
    );
    let addr = listen.unwrap_or(loaded.config.server.listen);
    let app = App::build(&loaded, &data_dir)
        .await
        .map_err(Failure::runtime)?;
    if app.state.keys.is_empty() {
        let key = app
            .state
            .keys
            .create("default", Role::Admin)
            .await
            .map_err(Failure::runtime)?;
        println!(
            "No tenant was configured: created admin key {} for tenant 'default'. It is shown once:",
            key.key_id
        );
        println!("{}", key.key);
        let _ = std::io::stdout().flush();
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(Failure::runtime)?;
    let background = app.start_background().await.map_err(Failure::runtime)?;
    tracing::info!(addr = %local, sources = ?app.state.pipeline.source_names(), "enrichd is listening.");
    crate::http::serve(listener, app.router(), shutdown_signal())
        .await
        .map_err(Failure::runtime)?;
    background.stop().await;
    tracing::info!("enrichd stopped.");
    Ok(())
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
    let query = args.query(&loaded)?;
    let exclusion = app::read_exclusion(&loaded, &data_dir)
        .await
        .map_err(Failure::runtime)?;
    let pipeline = app::pipeline(
        &loaded,
        exclusion,
        Arc::new(Metrics::new()),
        ReplicaShare::single(),
    )
    .map_err(Failure::runtime)?;
    let result = pipeline.lookup(&query, LookupOptions::default()).await;
    let json = serde_json::to_string_pretty(&result).map_err(Failure::runtime)?;
    println!("{json}");
    Ok(())
}

async fn optout(args: &PersonArgs, common: &Common) -> Result<(), Failure> {
    let (loaded, data_dir) = load(common)?;
    telemetry::init(None, false, stderr_is_terminal(), std::io::stderr);
    let query = args.query(&loaded)?;
    let app = App::build(&loaded, &data_dir).await.map_err(|e| match e {
        AppError::Exclusion(x) if x.is_locked() => Failure::runtime(format!(
            "a running enrichd server holds the exclusion list in {}, so this command may not write \
             it; submit the opt-out to that server instead with POST /v1/optout (public) or POST \
             /v1/admin/exclusions (admin key)",
            data_dir.display()
        )),
        other => Failure::runtime(other),
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
            let url = format!("{}/v1/sources", url.trim_end_matches('/'));
            let resp = reqwest::Client::new()
                .get(&url)
                .bearer_auth(key.unwrap_or_default())
                .send()
                .await
                .map_err(|e| Failure::runtime(format!("cannot reach {url}: {e}")))?;
            if !resp.status().is_success() {
                return Err(Failure::runtime(format!(
                    "{url} answered HTTP {}",
                    resp.status().as_u16()
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
