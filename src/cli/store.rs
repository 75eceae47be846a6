//! `enrichd store lifecycle|rewrap` and `enrichd healthcheck`: operating the store and the container.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::{Common, Failure, load};
use crate::app;
use crate::blob::{BlobStore, SystemClock};
use crate::store::{StoreUrl, lifecycle};
use crate::telemetry::Metrics;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Print the S3 lifecycle rule that backs up the expiry sweep (JSON for
    /// `aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration file://...`).
    Lifecycle {
        #[command(flatten)]
        common: Common,
    },
    /// After a storage-key rotation (new key in ENRICHD_STORAGE_KEY, old one in
    /// ENRICHD_STORAGE_KEY_PREVIOUS), re-wrap every batch key with the new master key.
    Rewrap {
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(command: StoreCommand) -> Result<(), Failure> {
    match command {
        StoreCommand::Lifecycle { common } => {
            let (loaded, data_dir) = load(&common)?;
            let days = loaded.config.retention.batch_results_days;
            let prefix = match loaded.config.store.url_or(&data_dir) {
                StoreUrl::S3 { prefix, .. } => prefix,
                StoreUrl::File(_) => {
                    eprintln!(
                        "enrichd: store.url is a local directory; the rule below is for an s3:// store \
                         at the bucket's root"
                    );
                    String::new()
                }
            };
            let text = serde_json::to_string_pretty(&lifecycle::rules(&prefix, days))
                .map_err(Failure::runtime)?;
            println!("{text}");
            Ok(())
        }
        StoreCommand::Rewrap { common } => {
            let (loaded, data_dir) = load(&common)?;
            let store = app::open_store(&loaded, &data_dir, Arc::new(Metrics::new()))
                .await
                .map_err(Failure::runtime)?;
            let keyring = app::storage_keyring(&loaded, &data_dir, store.is_shared())
                .map_err(Failure::runtime)?;
            let current = keyring.current_id().to_string();
            let blobs = BlobStore::new(&store, Arc::new(keyring), Arc::new(SystemClock));
            let report = blobs.rewrap().await.map_err(Failure::runtime)?;
            println!(
                "Checked {} batch keys; re-wrapped {} with master key {current}.",
                report.checked, report.rewrapped
            );
            Ok(())
        }
    }
}

/// `enrichd healthcheck`: GET `/healthz` of the server on this machine; exit 0 when it answers 200.
/// For a container's HEALTHCHECK, where no curl is installed.
pub async fn healthcheck(url: Option<String>, listen: Option<SocketAddr>) -> Result<(), Failure> {
    let url = url.unwrap_or_else(|| {
        let port = listen.map_or(8080, |a| a.port());
        format!("http://127.0.0.1:{port}/healthz")
    });
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| Failure::runtime(format!("{url} did not answer: {e}")))?;
    if !resp.status().is_success() {
        return Err(Failure::runtime(format!(
            "{url} answered HTTP {}",
            resp.status().as_u16()
        )));
    }
    Ok(())
}
