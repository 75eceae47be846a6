//! `enrichd batch IN.csv -o OUT.csv`: enrich a CSV file locally through the same pipeline and batch
//! code as the service, or (`--server URL --key KEY`) upload it to a running service, follow its
//! progress and download the result.
//!
//! Both modes write the result atomically: into a temporary file beside `OUT`, synced, then renamed,
//! so `OUT` is either absent, the previous file, or the complete result. On a terminal, progress is a
//! bar with rate and ETA on stderr; otherwise a plain line every few seconds.

mod local;
mod progress;
mod remote;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

pub use progress::Progress;
pub use remote::status_hint;

/// The `batch` command's arguments (`--config` and `--data-dir` come from the common flags).
#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// The CSV file to enrich.
    pub input: PathBuf,
    /// Where to write the result (replaced atomically).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Upload to this running enrichd instead of enriching locally (`http://127.0.0.1:8080`).
    #[arg(long, env = "ENRICHD_SERVER")]
    pub server: Option<String>,
    /// The tenant API key for `--server` (`ENRICHD_KEY` is read too, as an older name).
    #[arg(long, env = "ENRICHD_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Result format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: OutputFormat,
    /// Column mapping as JSON, e.g. '{"Work mail":"email"}'.
    #[arg(long)]
    pub columns: Option<String>,
    /// ISO 3166 region for phone numbers written without a country code.
    #[arg(long)]
    pub region: Option<String>,
    /// With `--server`: delete the batch on the server once the result is downloaded.
    #[arg(long)]
    pub delete: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Ndjson,
}

impl OutputFormat {
    fn batch_format(self) -> crate::batch::Format {
        match self {
            Self::Csv => crate::batch::Format::Csv,
            Self::Ndjson => crate::batch::Format::Ndjson,
        }
    }
}

/// Why the command failed: a sentence for stderr, and whether it was the caller's usage.
#[derive(Debug, thiserror::Error)]
pub enum BatchCmdError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

impl BatchCmdError {
    fn runtime(e: impl std::fmt::Display) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Runs the command. `loaded` and `data_dir` serve the local mode (pipeline, exclusion list).
pub async fn run(
    args: &BatchArgs,
    loaded: &crate::config::Loaded,
    data_dir: &Path,
    progress: Progress,
) -> Result<(), BatchCmdError> {
    if !args.input.is_file() {
        return Err(BatchCmdError::Usage(format!(
            "input file {} does not exist or is not a file",
            args.input.display()
        )));
    }
    if let Some(columns) = &args.columns {
        serde_json::from_str::<std::collections::BTreeMap<String, String>>(columns).map_err(
            |_| {
                BatchCmdError::Usage(
                    "--columns must be a JSON object mapping a header to a field, e.g. {\"Work mail\":\"email\"}".into(),
                )
            },
        )?;
    }
    let work = async {
        match (&args.server, &args.key) {
            (Some(server), Some(key)) => remote::run(args, server, key, progress).await,
            (Some(_), None) => Err(BatchCmdError::Usage(
                "--server needs --key (or ENRICHD_API_KEY)".into(),
            )),
            (None, _) => local::run(args, loaded, data_dir, progress).await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(BatchCmdError::Runtime("interrupted; no output was written".into())),
    }
}

/// `1 row`, `2 rows`.
pub(crate) fn rows(n: u64) -> String {
    format!("{n} {}", if n == 1 { "row" } else { "rows" })
}

/// The closing line of a batch that ended `done`: how many rows, how many found, and, when some
/// could not be enriched, how many and the commonest reason.
pub(crate) fn done_message(
    done: u64,
    found: u64,
    failed: u64,
    reason: Option<&str>,
    output: &Path,
) -> String {
    let head = if failed == 0 {
        format!("{} enriched, {found} found", rows(done))
    } else {
        format!(
            "{} processed, {found} found, {} not enriched (commonest reason: {})",
            rows(done),
            rows(failed),
            reason.unwrap_or("unknown")
        )
    };
    format!("{head}; wrote {}", output.display())
}

/// The error of a batch that ended `failed`, with what to try next when the reason suggests it.
pub(crate) fn failed(error: &str, local: bool) -> BatchCmdError {
    let hint = if error.contains("no default region") {
        "; give the country of national phone numbers with --region (e.g. --region FR)"
    } else if error.contains("every source asked failed") && local {
        "; `enrichd sources` shows each source's state, and the log above says why calls failed"
    } else if error.contains("every source asked failed") {
        "; the server's operator can see why in its log and with `enrichd sources`"
    } else {
        ""
    };
    BatchCmdError::Runtime(format!(
        "the batch failed: {error}{hint}; no output was written"
    ))
}

/// Writes `chunks` to a temporary file beside `output`, syncs it, and renames it over `output`.
/// On any failure the temporary file is removed and `output` is untouched.
pub async fn write_atomically<S, E>(output: &Path, chunks: S) -> Result<u64, BatchCmdError>
where
    S: Stream<Item = Result<bytes::Bytes, E>>,
    E: std::fmt::Display,
{
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BatchCmdError::Usage(format!("{} is not a file path", output.display())))?;
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| BatchCmdError::runtime(format!("cannot create {}: {e}", tmp.display())))?;
        let mut written = 0u64;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| BatchCmdError::runtime(format!("reading the result failed: {e}")))?;
            written += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| {
                BatchCmdError::runtime(format!("cannot write {}: {e}", tmp.display()))
            })?;
        }
        file.flush()
            .await
            .and(file.sync_all().await)
            .map_err(|e| BatchCmdError::runtime(format!("cannot write {}: {e}", tmp.display())))?;
        drop(file);
        tokio::fs::rename(&tmp, output).await.map_err(|e| {
            BatchCmdError::runtime(format!("cannot rename into {}: {e}", output.display()))
        })?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
