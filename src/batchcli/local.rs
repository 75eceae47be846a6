//! Local mode: the same [`crate::batch::BatchService`] and pipeline as the service, over a private
//! working directory beside the output that is removed when the command ends, whatever the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{BatchArgs, BatchCmdError, Progress, write_atomically};
use crate::app::{self, AppError};
use crate::batch::{BatchOptions, BatchStatus, BatchStore};
use crate::blob::{BatchId, SystemClock};
use crate::config::Loaded;
use crate::seal::Keyring;
use crate::store::Store;
use crate::store::replicas::ReplicaShare;
use crate::telemetry::Metrics;

/// The tenant name local runs store under (inside the private working directory only).
const LOCAL_TENANT: &str = "local";

/// A configuration problem is the caller's to fix; anything else is a runtime failure.
fn app_error(e: AppError) -> BatchCmdError {
    if e.is_configuration() {
        BatchCmdError::Usage(e.to_string())
    } else {
        BatchCmdError::runtime(e)
    }
}

/// Removes the working directory (a copy of the input and the result parts) on every exit path.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "Could not remove the batch working directory.");
        }
    }
}

pub(super) async fn run(
    args: &BatchArgs,
    loaded: &Loaded,
    data_dir: &Path,
    mut progress: Progress,
) -> Result<(), BatchCmdError> {
    let metrics = Arc::new(Metrics::new());
    let store = app::open_store(loaded, data_dir, metrics.clone())
        .await
        .map_err(app_error)?;
    let exclusion = Arc::new(
        app::open_exclusion(loaded, data_dir, &store)
            .await
            .map_err(|e| match e {
                AppError::Exclusion(x) if x.is_locked() => BatchCmdError::Runtime(format!(
                    "a running enrichd server holds the data directory {}, and a local batch \
                     beside it could miss the opt-outs it records, so send the batch to that \
                     server instead: enrichd batch {} -o {} --server http://{} --key KEY",
                    data_dir.display(),
                    args.input.display(),
                    args.output.display(),
                    crate::cli::running_server_addr(data_dir, &loaded.config.server.listen),
                )),
                other => app_error(other),
            })?,
    );
    let pipeline = app::pipeline(loaded, exclusion.clone(), metrics, ReplicaShare::single())
        .map_err(app_error)?;
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = WorkDir(parent.join(format!(".enrichd-batch-{:016x}", rand::random::<u64>())));
    std::fs::create_dir(&work.0)
        .map_err(|e| BatchCmdError::runtime(format!("cannot create {}: {e}", work.0.display())))?;
    // A scratch store in the working directory, sealed with a key that exists only in this process.
    let scratch = Store::local(&work.0).map_err(BatchCmdError::runtime)?;
    let keyring = Keyring::ephemeral().map_err(BatchCmdError::runtime)?;
    let batches = BatchStore::new(
        &scratch,
        Arc::new(keyring),
        Arc::new(SystemClock),
        Arc::from("local"),
        Duration::from_secs(60),
    );
    let (service, _) = app::batch_service(loaded, batches, pipeline, exclusion);
    let workers = service.spawn_workers(None);
    let _stop = AbortOnDrop(workers);

    let file = tokio::fs::File::open(&args.input).await.map_err(|e| {
        BatchCmdError::runtime(format!("cannot open {}: {e}", args.input.display()))
    })?;
    let options = BatchOptions {
        columns: args
            .columns
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default(),
        region: args.region.clone(),
        webhook: None,
        max_cost: None,
    };
    let meta = service
        .create(
            LOCAL_TENANT,
            tokio_util::io::ReaderStream::new(file),
            options,
        )
        .await
        .map_err(|e| BatchCmdError::runtime(format!("{}: {e}", args.input.display())))?;
    let id = BatchId::parse(&meta.id)
        .ok_or_else(|| BatchCmdError::runtime("the batch store returned a malformed id"))?;
    progress.update(0, meta.rows_total, None, 0);
    let meta = loop {
        let meta = service
            .get(LOCAL_TENANT, id)
            .await
            .map_err(BatchCmdError::runtime)?;
        let (eta, waiting) = service
            .progress(LOCAL_TENANT, id)
            .map_or((None, 0), |(eta, waiting)| {
                (eta.map(|s| s.ceil() as u64), waiting)
            });
        progress.update(meta.rows_done, meta.rows_total, eta, waiting);
        match meta.status {
            BatchStatus::Done => break meta,
            BatchStatus::Failed => {
                progress.finish();
                return Err(super::failed(
                    meta.summary().error.as_deref().unwrap_or("unknown cause"),
                    true,
                ));
            }
            BatchStatus::Queued | BatchStatus::Running => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    progress.finish();
    let stream = service
        .result(LOCAL_TENANT, id, args.format.batch_format())
        .await
        .map_err(BatchCmdError::runtime)?;
    write_atomically(&args.output, stream).await?;
    let summary = meta.summary();
    progress.message(&super::done_message(
        summary.rows_done,
        summary.rows_found,
        summary.rows_error,
        summary.rows_error_reason.as_deref(),
        &args.output,
    ));
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
