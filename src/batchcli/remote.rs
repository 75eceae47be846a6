//! `--server` mode: upload the file streamed as `text/csv`, poll the batch, download the result.

use std::time::Duration;

use serde::Deserialize;

use super::{BatchArgs, BatchCmdError, OutputFormat, Progress, write_atomically};

#[derive(Deserialize)]
struct Summary {
    id: String,
    status: String,
    #[serde(default)]
    rows_total: u64,
    #[serde(default)]
    rows_done: u64,
    #[serde(default)]
    rows_found: u64,
    #[serde(default)]
    rows_error: u64,
    #[serde(default)]
    rows_error_reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    eta_seconds: Option<u64>,
    #[serde(default)]
    rows_waiting_for_budget: u64,
}

/// The problem+json `detail`, or the status line, and what to do about a refused key.
async fn refusal(what: &str, resp: reqwest::Response) -> BatchCmdError {
    let status = resp.status();
    let detail = resp
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    BatchCmdError::Runtime(format!(
        "{what} ({}): {detail}{}",
        status.as_u16(),
        status_hint(status.as_u16())
    ))
}

/// What to do when a server refuses a command's key (401) or its role (403); empty otherwise.
pub fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            ": the server does not know this API key; check --key (or ENRICHD_API_KEY), or ask the \
             server's operator for a key (`enrichd keys new --tenant NAME` on the server)"
        }
        403 => {
            ": this key's role may not do that; an admin key is made with `enrichd keys new --admin`"
        }
        _ => "",
    }
}

fn unreachable(server: &str, e: reqwest::Error) -> BatchCmdError {
    BatchCmdError::Runtime(format!("cannot reach {server}: {e}"))
}

pub(super) async fn run(
    args: &BatchArgs,
    server: &str,
    key: &str,
    mut progress: Progress,
) -> Result<(), BatchCmdError> {
    let base = server.trim_end_matches('/');
    url::Url::parse(base)
        .map_err(|_| BatchCmdError::Usage(format!("--server {base} is not a URL")))?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("enrichd-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(BatchCmdError::runtime)?;
    let file = tokio::fs::File::open(&args.input).await.map_err(|e| {
        BatchCmdError::runtime(format!("cannot open {}: {e}", args.input.display()))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = &args.columns {
        query.push(("columns", c));
    }
    if let Some(r) = &args.region {
        query.push(("region", r));
    }
    let mut req = http
        .post(format!("{base}/v1/batches"))
        .bearer_auth(key)
        .query(&query)
        .header(reqwest::header::CONTENT_TYPE, "text/csv");
    if let Some(len) = len {
        req = req.header(reqwest::header::CONTENT_LENGTH, len);
    }
    let resp = req
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ))
        .send()
        .await
        .map_err(|e| unreachable(base, e))?;
    if resp.status().as_u16() != 202 {
        return Err(refusal("the server refused the upload", resp).await);
    }
    let created: Summary = resp.json().await.map_err(BatchCmdError::runtime)?;
    let id = created.id;
    progress.message(&format!("uploaded batch {id}"));
    let done = loop {
        let resp = http
            .get(format!("{base}/v1/batches/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| unreachable(base, e))?;
        if !resp.status().is_success() {
            return Err(refusal("the server cannot show the batch", resp).await);
        }
        let s: Summary = resp.json().await.map_err(BatchCmdError::runtime)?;
        progress.update(
            s.rows_done,
            s.rows_total,
            s.eta_seconds,
            s.rows_waiting_for_budget,
        );
        match s.status.as_str() {
            "done" => break s,
            "failed" => {
                progress.finish();
                return Err(super::failed(
                    s.error.as_deref().unwrap_or("the server gave no reason"),
                    false,
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    progress.finish();
    let format = match args.format {
        OutputFormat::Csv => "csv",
        OutputFormat::Ndjson => "ndjson",
    };
    let resp = http
        .get(format!("{base}/v1/batches/{id}/result.csv"))
        .query(&[("format", format)])
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| unreachable(base, e))?;
    if !resp.status().is_success() {
        return Err(refusal("the server refused the download", resp).await);
    }
    write_atomically(&args.output, resp.bytes_stream()).await?;
    if args.delete {
        let resp = http
            .delete(format!("{base}/v1/batches/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| unreachable(base, e))?;
        if resp.status().as_u16() != 204 {
            return Err(refusal(
                "the result was written but the server refused to delete the batch",
                resp,
            )
            .await);
        }
    }
    progress.message(&format!(
        "{}{}",
        super::done_message(
            done.rows_done,
            done.rows_found,
            done.rows_error,
            done.rows_error_reason.as_deref(),
            &args.output
        ),
        if args.delete {
            "; deleted the batch on the server".to_string()
        } else {
            format!("; the server keeps it until {}", done.expires_at)
        }
    ));
    Ok(())
}
