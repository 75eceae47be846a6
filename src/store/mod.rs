//! Where enrichd keeps what must outlive a request: one [`Store`], either a local directory
//! (`file://`, the default, for one process) or S3-compatible object storage (`s3://bucket/prefix`,
//! shared by every replica). Replicas coordinate only through it; a replica's own disk holds
//! nothing another replica, or a restart, needs.
//!
//! # Layout
//! The same object names on both backends, under `<dir>/blobs/` or `s3://bucket/prefix/`:
//!
//! ```text
//! batches/<tenant-hash>/<batch-id>/meta         sealed: status, counters, checkpoint, part generations
//! batches/<tenant-hash>/<batch-id>/input        sealed, streamed: the upload as received
//! batches/<tenant-hash>/<batch-id>/part-NNNNNN-gG   sealed: result rows written under lease generation G
//! indexes/<tenant-hash>/<batch-id>/NNNNNN-gG    sealed: row hashes of that part, for opt-out purges
//! batch-keys/<tenant-hash>/<batch-id>           the batch's data key, wrapped by the master key
//! state/keys/<key-id>                           API keys (hashes only)
//! state/exclusion/segment-* and snapshot-*      the exclusion list on S3 (the file store keeps
//!                                               <dir>/exclusion/exclusion.log, fsynced)
//! state/jobs/<tenant-hash>.<batch-id>           a batch waiting or running
//! state/purges/<millis>-<random>                an opt-out's purge of stored batches not yet done:
//!                                               the row keys (keyed-hash prefixes) to purge
//! state/replicas/<replica-id>                   heartbeats: how many replicas share the budgets
//! leases/<name>                                 who runs a job, a purge, or the sweeper, now
//! spend/<tenant-hash>/<YYYY-MM>                 a tenant's paid spend that month, {"spent": n}:
//!                                               created, then added to under If-Match
//! audit/<millis>-<random>                       the append-only audit log: one immutable event per
//!                                               object (created, never rewritten), no personal data
//! ```
//!
//! With a local store, `store.blob_dir` moves the first three (the blob area) to a directory of
//! their own: `<blob_dir>/blobs/batch-keys/...`.
//!
//! `state/` is small and listed by every replica twice a second ([`watch`]); everything personal is
//! under `batches/` and `indexes/`, sealed ([`crate::seal`]) with keys under `batch-keys/`.

pub mod lease;
pub mod lifecycle;
mod objects;
pub mod replicas;
mod url;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, RetryConfig};
use secrecy::{ExposeSecret, SecretString};

pub use object_store::ObjectMeta;
pub use object_store::path::Path as ObjectPath;
pub use objects::{ObjectWriter, Objects, StoreError, Versioned};
pub use url::StoreUrl;

use crate::telemetry::Metrics;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the store directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot configure the S3 client for {url}: {source}")]
    S3 {
        url: String,
        source: object_store::Error,
    },
    #[error(
        "the object store at {url} does not honour conditional writes ({what}); enrichd replicas \
         coordinate through If-None-Match and If-Match and cannot run on this store"
    )]
    NoConditionalWrites { url: String, what: &'static str },
    #[error("the object store at {url} cannot be used: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: StoreError,
    },
}

/// The shared store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    objects: Objects,
    /// The blob area (`batch-keys/`, `batches/`, `indexes/`): the same objects, or a directory of
    /// its own (`store.blob_dir`) on another filesystem, so that tenants filling it cannot fill the
    /// one the exclusion log and the purge journal are written to.
    blob_objects: Objects,
    url: Arc<StoreUrl>,
}

/// S3 requests give up after this long, so an outage answers 503 quickly instead of hanging.
const S3_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens `url`. A local directory is created if missing (objects under `<dir>/blobs`); an S3
    /// store takes its endpoint and credentials from the `AWS_*` variables in `aws`.
    pub fn open(
        url: &StoreUrl,
        aws: &[(String, SecretString)],
        metrics: Arc<Metrics>,
    ) -> Result<Self, OpenError> {
        let objects = match url {
            StoreUrl::File(dir) => local_objects(dir, metrics)?,
            StoreUrl::S3 { bucket, prefix } => {
                // Client options first: setting them replaces any client key (AWS_ALLOW_HTTP) set before.
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(S3_TIMEOUT)
                            .with_connect_timeout(Duration::from_secs(3)),
                    )
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: S3_TIMEOUT,
                        ..RetryConfig::default()
                    });
                for (name, value) in aws {
                    if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value.expose_secret());
                    }
                }
                let s3 = builder.build().map_err(|source| OpenError::S3 {
                    url: url.to_string(),
                    source,
                })?;
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                };
                Objects::new(inner, None, metrics)
            }
        };
        Ok(Self {
            blob_objects: objects.clone(),
            objects,
            url: Arc::new(url.clone()),
        })
    }

    /// Keeps the blob area in `dir` (objects under `<dir>/blobs`, with a lock file of their own)
    /// instead of with the rest of a local store. Batches stored before are not moved: move
    /// `blobs/batch-keys`, `blobs/batches` and `blobs/indexes` along while the service is stopped.
    pub fn with_blob_dir(mut self, dir: &Path, metrics: Arc<Metrics>) -> Result<Self, OpenError> {
        self.blob_objects = local_objects(dir, metrics)?;
        Ok(self)
    }

    /// A local store under `dir` with its own metrics: for scratch work (a local batch) and tests.
    pub fn local(dir: &Path) -> Result<Self, OpenError> {
        Self::open(
            &StoreUrl::File(dir.to_path_buf()),
            &[],
            Arc::new(Metrics::new()),
        )
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The objects of the blob area (see [`Store::with_blob_dir`]).
    pub fn blob_objects(&self) -> &Objects {
        &self.blob_objects
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// Whether other processes share it (S3): then keys and the exclusion list are refreshed from it,
    /// jobs are leased, and budgets are shared.
    pub fn is_shared(&self) -> bool {
        self.url.is_shared()
    }

    /// Checks that the store refuses a second create of one object and an update from a stale
    /// version, under a scratch name of this process; refuses to go on otherwise.
    pub async fn probe(&self) -> Result<(), OpenError> {
        let path = ObjectPath::from(format!("state/probe/{:032x}", rand::random::<u128>()));
        let unreachable = |source| OpenError::Unreachable {
            url: self.url.to_string(),
            source,
        };
        let refuse = |what| OpenError::NoConditionalWrites {
            url: self.url.to_string(),
            what,
        };
        let o = &self.objects;
        let first = o
            .create(&path, Bytes::from_static(b"1"))
            .await
            .map_err(unreachable)?;
        let outcome = async {
            match o.create(&path, Bytes::from_static(b"2")).await {
                Err(StoreError::AlreadyExists { .. }) => {}
                Ok(_) => return Err(refuse("a second create of one object succeeded")),
                Err(e) => return Err(unreachable(e)),
            }
            match o.update(&path, Bytes::from_static(b"3"), "\"stale\"").await {
                Err(StoreError::Conflict { .. }) => {}
                Ok(_) => return Err(refuse("an update from a stale version succeeded")),
                Err(e) => return Err(unreachable(e)),
            }
            let Some(etag) = first else {
                return Err(refuse("a write returned no ETag"));
            };
            o.update(&path, Bytes::from_static(b"4"), &etag)
                .await
                .map_err(|_| refuse("an update from the current version failed"))?;
            Ok(())
        }
        .await;
        let _ = o.delete(&path).await;
        outcome
    }
}

/// Objects in a local directory: under `<dir>/blobs`, with `<dir>/store.lock` standing in for
/// compare-and-swap.
fn local_objects(dir: &Path, metrics: Arc<Metrics>) -> Result<Objects, OpenError> {
    let root = dir.join("blobs");
    std::fs::create_dir_all(&root).map_err(|source| OpenError::Dir {
        path: root.clone(),
        source,
    })?;
    let fs = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| OpenError::Dir {
            path: root.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .with_automatic_cleanup(true);
    Ok(Objects::new(
        Arc::new(fs),
        Some(dir.join("store.lock")),
        metrics,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::moto;

    #[tokio::test]
    async fn moto_honours_conditional_writes_and_the_probe_passes() {
        let m = moto();
        let url = StoreUrl::parse(&format!("s3://{}/probe", m.bucket().await)).expect("url");
        let store = Store::open(&url, &m.secrets(), Arc::new(Metrics::new())).expect("s3 client");
        store.probe().await.expect("moto does conditional writes");
        let local = tempfile::tempdir().expect("tempdir");
        Store::local(local.path())
            .expect("local")
            .probe()
            .await
            .expect("the local directory does them too");
    }

    #[tokio::test]
    async fn an_unreachable_store_is_named_in_the_error() {
        let url = StoreUrl::parse("s3://nowhere/x").expect("url");
        let aws = vec![
            (
                "AWS_ENDPOINT_URL".to_string(),
                SecretString::from("http://127.0.0.1:9"),
            ),
            ("AWS_ALLOW_HTTP".to_string(), SecretString::from("true")),
            ("AWS_ACCESS_KEY_ID".to_string(), SecretString::from("k")),
            ("AWS_SECRET_ACCESS_KEY".to_string(), SecretString::from("s")),
        ];
        let store = Store::open(&url, &aws, Arc::new(Metrics::new())).expect("client");
        let err = store.probe().await.expect_err("nothing listens on port 9");
        assert!(err.to_string().contains("s3://nowhere/x"), "{err}");
    }
}
