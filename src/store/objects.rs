//! [`Objects`]: the few object operations enrichd uses, the same on a local directory and on S3.
//!
//! Coordination rests on two conditional writes: [`Objects::create`] (`If-None-Match: *`, fails when
//! the object exists) and [`Objects::update`] (`If-Match: <etag>`, fails when someone wrote since it
//! was read). S3 and S3-compatible servers do both. On a local directory `object_store` creates
//! atomically (a hard link) but has no compare-and-swap, so updates and deletes there take an
//! exclusive `flock` on `<dir>/store.lock` (beside the objects) around "check the etag, then write": every process on
//! the directory (a server, `enrichd keys revoke`, `enrichd store rewrap`) goes through it.
//!
//! Every request is counted in `enrichd_store_requests_total{op}`.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};

use crate::telemetry::Metrics;

/// Why an object operation failed. Paths hold hashes and random ids only, never personal data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path} exists already")]
    AlreadyExists { path: String },
    #[error("{path} was changed by another writer since it was read")]
    Conflict { path: String },
    #[error("the object store failed on {path}: {source}")]
    Failed {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    /// The store could not be reached or refused the request: worth a 503 and a retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }

    fn from_os(path: &Path, e: object_store::Error) -> Self {
        let path = path.to_string();
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound { path },
            object_store::Error::AlreadyExists { .. } => Self::AlreadyExists { path },
            object_store::Error::Precondition { .. } => Self::Conflict { path },
            source => Self::Failed { path, source },
        }
    }
}

/// An object's bytes and the version they were read at.
#[derive(Clone, Debug)]
pub struct Versioned {
    pub bytes: Bytes,
    pub etag: Option<String>,
}

/// A handle on the store's objects. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    /// Local directories only: the lock file that stands in for compare-and-swap.
    lock: Option<Arc<PathBuf>>,
    metrics: Arc<Metrics>,
}

/// Upload chunk size for streamed writes; bounds the memory of one upload.
pub const WRITE_CHUNK: usize = 5 * 1024 * 1024;

impl Objects {
    pub(crate) fn new(
        inner: Arc<dyn ObjectStore>,
        lock: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            lock: lock.map(Arc::new),
            metrics,
        }
    }

    fn count(&self, op: &'static str) {
        self.metrics.store_request(op);
    }

    /// Writes an object whole, replacing any object there.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<Option<String>, StoreError> {
        self.count("put");
        self.inner
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map(|r| r.e_tag)
            .map_err(|e| StoreError::from_os(path, e))
    }

    /// Writes an object only if none exists at `path` ([`StoreError::AlreadyExists`] otherwise).
    pub async fn create(&self, path: &Path, bytes: Bytes) -> Result<Option<String>, StoreError> {
        self.count("put_create");
        let opts = PutOptions::from(PutMode::Create);
        self.inner
            .put_opts(path, PutPayload::from_bytes(bytes), opts)
            .await
            .map(|r| r.e_tag)
            .map_err(|e| StoreError::from_os(path, e))
    }

    /// Replaces an object only if it is still at `etag` ([`StoreError::Conflict`] otherwise, also when
    /// it was deleted meanwhile).
    pub async fn update(
        &self,
        path: &Path,
        bytes: Bytes,
        etag: &str,
    ) -> Result<Option<String>, StoreError> {
        self.count("put_update");
        let Some(lock) = &self.lock else {
            let opts = PutOptions::from(PutMode::Update(UpdateVersion {
                e_tag: Some(etag.to_string()),
                version: None,
            }));
            return self
                .inner
                .put_opts(path, PutPayload::from_bytes(bytes), opts)
                .await
                .map(|r| r.e_tag)
                .map_err(|e| StoreError::from_os(path, e));
        };
        let _held = hold(lock).await.map_err(|source| StoreError::Failed {
            path: path.to_string(),
            source,
        })?;
        let current = match self.inner.head(path).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(StoreError::from_os(path, e)),
        };
        if current.as_deref() != Some(etag) {
            return Err(StoreError::Conflict {
                path: path.to_string(),
            });
        }
        self.inner
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map(|r| r.e_tag)
            .map_err(|e| StoreError::from_os(path, e))
    }

    /// Reads an object whole, with its version.
    pub async fn get(&self, path: &Path) -> Result<Versioned, StoreError> {
        self.count("get");
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| StoreError::from_os(path, e))?;
        let etag = got.meta.e_tag.clone();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| StoreError::from_os(path, e))?;
        Ok(Versioned { bytes, etag })
    }

    /// Reads a byte range of an object.
    pub async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.count("get");
        self.inner
            .get_range(path, range)
            .await
            .map_err(|e| StoreError::from_os(path, e))
    }

    /// Streams an object.
    pub async fn get_stream(
        &self,
        path: &Path,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        Ok(self.get_stream_versioned(path).await?.0)
    }

    /// Streams an object, with the version being streamed: what a conditional rewrite of an object
    /// too large to hold twice starts from.
    pub async fn get_stream_versioned(
        &self,
        path: &Path,
    ) -> Result<
        (
            BoxStream<'static, Result<Bytes, StoreError>>,
            Option<String>,
        ),
        StoreError,
    > {
        self.count("get");
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| StoreError::from_os(path, e))?;
        let etag = got.meta.e_tag.clone();
        let path = path.clone();
        let stream = got
            .into_stream()
            .map_err(move |e| StoreError::from_os(&path, e))
            .boxed();
        Ok((stream, etag))
    }

    /// The total size in bytes of every object under `prefix`.
    pub async fn size_under(&self, prefix: &Path) -> Result<u64, StoreError> {
        Ok(self.list(prefix).await?.iter().map(|m| m.size).sum())
    }

    /// Deletes an object; `false` when there was none.
    pub async fn delete(&self, path: &Path) -> Result<bool, StoreError> {
        self.count("delete");
        let _held = match &self.lock {
            Some(lock) => Some(hold(lock).await.map_err(|source| StoreError::Failed {
                path: path.to_string(),
                source,
            })?),
            None => None,
        };
        match self.inner.delete(path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::from_os(path, e)),
        }
    }

    /// Every object under `prefix` (all pages), in key order.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StoreError> {
        self.count("list");
        let mut out: Vec<ObjectMeta> = self
            .inner
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::from_os(prefix, e))?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// The names of the top-level folders.
    pub async fn list_top(&self) -> Result<Vec<String>, StoreError> {
        self.count("list");
        let listed = self
            .inner
            .list_with_delimiter(None)
            .await
            .map_err(|e| StoreError::from_os(&Path::from(""), e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.parts().last().map(|s| s.as_ref().to_string()))
            .collect())
    }

    /// Starts a streamed write; the object appears only when the writer finishes.
    pub async fn writer(&self, path: &Path) -> Result<ObjectWriter, StoreError> {
        self.count("multipart");
        let upload = self
            .inner
            .put_multipart(path)
            .await
            .map_err(|e| StoreError::from_os(path, e))?;
        Ok(ObjectWriter {
            path: path.clone(),
            inner: WriteMultipart::new_with_chunk_size(upload, WRITE_CHUNK),
            objects: self.clone(),
            written: 0,
        })
    }
}

/// A streamed write in progress. Dropping it without [`ObjectWriter::finish`] leaves no visible object.
pub struct ObjectWriter {
    path: Path,
    inner: WriteMultipart,
    objects: Objects,
    written: u64,
}

impl ObjectWriter {
    /// Appends bytes, waiting when too many parts are in flight (bounded memory).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.inner
            .wait_for_capacity(2)
            .await
            .map_err(|e| StoreError::from_os(&self.path, e))?;
        self.inner.write(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Completes the object; only now does it become visible.
    pub async fn finish(self) -> Result<(), StoreError> {
        let parts = self.written.div_ceil(WRITE_CHUNK as u64).max(1);
        for _ in 0..parts {
            self.objects.count("multipart_part");
        }
        self.objects.count("multipart_complete");
        self.inner
            .finish()
            .await
            .map(drop)
            .map_err(|e| StoreError::from_os(&self.path, e))
    }

    /// Gives up; nothing becomes visible.
    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(path = %self.path, error = %e, "Aborting a streamed upload failed.");
        }
    }
}

/// Takes the local directory's update lock (blocking `flock`, on a blocking thread).
async fn hold(lock: &Arc<PathBuf>) -> Result<std::fs::File, object_store::Error> {
    let path = lock.clone();
    let generic = |e: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    };
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&*path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| generic(std::io::Error::other(e)))?
    .map_err(generic)
}
