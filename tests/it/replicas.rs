//! Several real `enrichd serve` processes on one S3-compatible store (moto on loopback): keys,
//! opt-outs and batches work across them, a killed replica's batch is finished by another with every
//! row exactly once, nothing of a batch is on a replica's disk, the bucket holds nothing readable,
//! and a bucket outage keeps lookups going while opt-outs answer 503.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use enrichd::testkit::Served;

use crate::binary::{KEY, bin, created_key, text_of};
use crate::helpers::{Reply, STORAGE_KEY, Upstreams, assert_loopback, files_under, loopback_only};

/// The promise: what one replica records, every other enforces within this.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Replicas on one bucket, a shared config and the upstream fakes.
struct Cluster {
    up: Upstreams,
    bucket: String,
    endpoint: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// A running replica (SIGKILLed when dropped) and its own data directory.
struct Replica {
    served: Served,
    url: String,
    data: tempfile::TempDir,
}

impl Replica {
    fn kill(self) {
        self.served.kill();
    }
}

const CONFIG: &str = "[tenants]\nrate_per_minute = 100000\nburst = 10000\n\
                      [exclusion]\noptout_per_minute = 100000\noptout_burst = 10000\n";

impl Cluster {
    /// A fresh bucket, upstream fakes and a config (loopback sources, JSON logs, `extra` appended).
    async fn new(extra: &str) -> Self {
        let moto = enrichd::testkit::moto();
        Self::on(&moto.endpoint, extra).await
    }

    /// [`Cluster::new`] with replicas reaching the store through `endpoint` (a proxy in front of moto).
    async fn on(endpoint: &str, extra: &str) -> Self {
        let up = Upstreams::start().await;
        let bucket = enrichd::testkit::moto().bucket().await;
        let dir = tempfile::tempdir().expect("config dir");
        let text = loopback_only(&format!(
            "{}\n[server]\nlog_format = \"json\"\n{CONFIG}{extra}",
            up.config()
        ));
        assert_loopback(&enrichd::config::Config::from_toml(&text, &[]).expect("valid config"));
        std::fs::write(dir.path().join("enrichd.toml"), text).expect("config");
        Self {
            up,
            bucket,
            endpoint: endpoint.to_string(),
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// `enrichd <args>` on the shared store with its own (empty) data dir and only these variables.
    fn command(&self, data: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.dir.path().join("enrichd.toml"))
            .arg("--data-dir")
            .arg(data)
            .env_clear()
            .env("ENRICHD_EXCLUSION_KEY", KEY)
            .env("ENRICHD_STORAGE_KEY", STORAGE_KEY)
            .env(
                "ENRICHD_STORE__URL",
                format!("s3://{}/replicas", self.bucket),
            )
            .env("ENRICHD_STORE__LEASE_MS", "3000")
            // The fakes take any rate (batches wait for the budget: GitHub's default would make the
            // batch test wait minutes); each replica's share of the budget is tested on its own.
            .env("ENRICHD_SOURCES__GRAVATAR__RATE_PER_MINUTE", "600000")
            .env("ENRICHD_SOURCES__GITHUB__RATE_PER_MINUTE", "600000")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("ENRICHD_LOG", "info");
        cmd
    }

    /// A CLI command on the shared store, from a scratch data dir.
    fn cli(&self, args: &[&str]) -> Output {
        let data = tempfile::tempdir().expect("data dir");
        let out = self
            .command(data.path(), args)
            .output()
            .expect("run enrichd");
        let left = files_under(data.path());
        assert!(left.is_empty(), "the CLI left files on disk: {left:?}");
        out
    }

    /// `enrichd keys new --tenant T`; the key printed on the last line.
    fn new_key(&self, tenant: &str) -> (String, String) {
        created_key(&self.cli(&["keys", "new", "--tenant", tenant]))
    }

    /// Three replicas, and a key every one of them accepts.
    async fn three(&self) -> ([Replica; 3], String) {
        let replicas = [self.start().await, self.start().await, self.start().await];
        let (key, _) = self.new_key("acme");
        for r in &replicas {
            until(Duration::from_secs(10), "key everywhere", || async {
                self.status(r, &key, "/v1/sources").await == 200
            })
            .await;
        }
        (replicas, key)
    }

    async fn start(&self) -> Replica {
        let data = tempfile::tempdir().expect("data dir");
        let cmd = self.command(data.path(), &["serve", "--listen", "127.0.0.1:0"]);
        let served =
            tokio::task::spawn_blocking(move || Served::spawn(cmd, None, Duration::from_secs(30)))
                .await
                .expect("join")
                .unwrap_or_else(|(code, stderr)| panic!("replica exited ({code:?}): {stderr}"));
        Replica {
            url: served.url.clone(),
            served,
            data,
        }
    }

    /// Uploads `csv` at `r`; the batch id.
    async fn upload(&self, r: &Replica, key: &str, csv: String) -> String {
        let created: Value = self
            .http
            .post(format!("{}/v1/batches", r.url))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("json");
        created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_string()
    }

    async fn lookup(&self, r: &Replica, key: &str, email: &str) -> Value {
        self.http
            .post(format!("{}/v1/lookup", r.url))
            .bearer_auth(key)
            .json(&json!({ "email": email }))
            .send()
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json")
    }

    async fn optout(&self, r: &Replica, email: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/optout", r.url))
            .json(&json!({ "email": email }))
            .send()
            .await
            .expect("opt-out")
    }

    async fn status(&self, r: &Replica, key: &str, path: &str) -> u16 {
        self.http
            .get(format!("{}{path}", r.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }

    async fn get_json(&self, r: &Replica, key: &str, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", r.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.json().await.expect("json")
    }

    /// The bucket's objects under the replicas' prefix, as a test reads them from outside.
    fn store(&self) -> enrichd::store::Store {
        let url = enrichd::store::StoreUrl::parse(&format!("s3://{}/replicas", self.bucket))
            .expect("url");
        enrichd::store::Store::open(
            &url,
            &enrichd::testkit::moto().secrets(),
            Arc::new(enrichd::telemetry::Metrics::new()),
        )
        .expect("store")
    }

    async fn objects(&self, prefix: &str) -> Vec<(enrichd::store::ObjectPath, Vec<u8>)> {
        let store = self.store();
        let mut out = Vec::new();
        for m in store
            .objects()
            .list(&enrichd::store::ObjectPath::from(prefix))
            .await
            .expect("list")
        {
            let bytes = store.objects().get(&m.location).await.expect("get").bytes;
            out.push((m.location, bytes.to_vec()));
        }
        out
    }
}

/// Polls `done` until it holds; returns how long that took. Fails after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if done().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_once_works_everywhere_and_its_revocation_reaches_every_replica_within_2s() {
    let c = Cluster::new("").await;
    let replicas = [c.start().await, c.start().await, c.start().await];

    let (key, id) = c.new_key("acme");
    for r in &replicas {
        let took = until(Duration::from_secs(10), "key accepted", || async {
            c.status(r, &key, "/v1/sources").await == 200
        })
        .await;
        assert!(took < PROPAGATION, "key accepted after {took:?}");
    }
    let listed = c.cli(&["keys", "list", "--json"]);
    let text = text_of(&listed.stdout);
    assert!(text.contains(&id) && text.contains("\"acme\""), "{text}");
    assert!(!text.contains(&key), "keys list never shows a key");

    let out = c.cli(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    let revoked = Instant::now();
    for r in &replicas {
        until(Duration::from_secs(10), "key refused", || async {
            c.status(r, &key, "/v1/sources").await == 401
        })
        .await;
    }
    let took = revoked.elapsed();
    assert!(
        took < PROPAGATION,
        "revocation reached every replica after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_at_one_replica_blocks_lookups_at_the_others_within_2s_and_concurrent_ones_are_all_kept()
 {
    let c = Cluster::new("").await;
    let emails: Vec<String> = (0..41).map(|i| format!("prop{i}@example.com")).collect();
    for e in &emails {
        c.up.gravatar_profile(e, "Prop Person", "Acme", None);
    }
    let ([a, b, third], key) = c.three().await;
    assert_eq!(c.lookup(&b, &key, &emails[0]).await["found"], true);

    assert_eq!(c.optout(&a, &emails[0]).await.status().as_u16(), 200);
    let took = until(Duration::from_secs(10), "excluded at B", || async {
        c.lookup(&b, &key, &emails[0]).await["found"] == false
    })
    .await;
    assert!(took < PROPAGATION, "enforced at B after {took:?}");

    // Twenty opt-outs at A and twenty at B, all at once: none is lost, on any replica.
    let sent: Vec<_> = emails[1..]
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (http, url) = (
                c.http.clone(),
                if i % 2 == 0 {
                    a.url.clone()
                } else {
                    b.url.clone()
                },
            );
            let e = e.clone();
            tokio::spawn(async move {
                http.post(format!("{url}/v1/optout"))
                    .json(&json!({ "email": e }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for s in sent {
        assert_eq!(s.await.expect("join").expect("sent"), 200);
    }
    let acknowledged = Instant::now();
    for r in [&a, &b, &third] {
        for e in &emails {
            until(
                Duration::from_secs(10),
                "every opt-out everywhere",
                || async { c.lookup(r, &key, e).await["found"] == false },
            )
            .await;
        }
    }
    let took = acknowledged.elapsed();
    assert!(
        took < PROPAGATION + Duration::from_secs(2),
        "120 checks done after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_uploaded_at_one_replica_is_followed_downloaded_and_deleted_at_another_and_leaves_nothing_readable()
 {
    let c = Cluster::new("").await;
    c.up.gravatar_profile(
        "ada.replica@analytical.example",
        "Ada Replicant",
        "Analytical Engines",
        None,
    );
    let ([a, b, third], key) = c.three().await;
    let csv = "email,note\nada.replica@analytical.example,first\nbob.replica@example.org,second\n";
    let id = c.upload(&a, &key, csv.to_string()).await;

    let listed = c.get_json(&b, &key, "/v1/batches").await;
    assert_eq!(listed["batches"][0]["id"], id.as_str(), "{listed}");
    until(Duration::from_secs(30), "batch done at B", || async {
        c.get_json(&b, &key, &format!("/v1/batches/{id}")).await["status"] == "done"
    })
    .await;
    let result = c
        .http
        .get(format!("{}/v1/batches/{id}/result.csv", b.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    assert!(
        result.contains("Ada Replicant") && result.contains("bob.replica@example.org"),
        "{result}"
    );

    // Nothing of the batch on any replica's disk; nothing readable in the bucket.
    for r in [&a, &b, &third] {
        let left = files_under(r.data.path());
        assert!(left.is_empty(), "a replica's disk holds {left:?}");
    }
    let needles = [
        "ada.replica",
        "bob.replica",
        "ada replicant",
        "analytical",
        "first,",
        "second",
    ];
    for (name, bytes) in c.objects("").await {
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for n in needles {
            assert!(!text.contains(n), "{name} holds '{n}' in the clear");
        }
    }

    // A copy of the batch's objects (a backup) reads now, and no longer once the batch is deleted.
    let tenant = enrichd::blob::TenantKey::of("acme");
    let batch = enrichd::blob::BatchKey::new(
        tenant.clone(),
        enrichd::blob::BatchId::parse(&id).expect("id"),
    );
    let backup = c
        .objects(&format!("batches/{}/{id}", tenant.as_str()))
        .await;
    // The input is deleted when the job ends: the metadata and the part are what a backup holds.
    assert!(backup.len() >= 2, "meta and a part: {}", backup.len());
    assert!(
        !backup
            .iter()
            .any(|(name, _)| name.filename() == Some("input")),
        "an ended batch keeps no input"
    );
    let reader = || {
        let keyring = enrichd::seal::Keyring::new(
            enrichd::seal::MasterKey::from_bytes(
                enrichd::secret::parse_hex32(STORAGE_KEY).expect("hex"),
            ),
            Vec::new(),
        );
        enrichd::blob::BlobStore::new(
            &c.store(),
            Arc::new(keyring),
            Arc::new(enrichd::blob::SystemClock),
        )
    };
    let (meta, _) = reader()
        .get(&batch, enrichd::blob::Area::Data, enrichd::blob::META)
        .await
        .expect("the backup reads while the batch lives");
    assert!(String::from_utf8_lossy(&meta).contains(&id));
    let deleted = c
        .http
        .delete(format!("{}/v1/batches/{id}", third.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(c.status(&a, &key, &format!("/v1/batches/{id}")).await, 404);
    let store = c.store();
    for (path, bytes) in &backup {
        store
            .objects()
            .put(path, bytes::Bytes::from(bytes.clone()))
            .await
            .expect("restore the backup");
    }
    assert!(
        matches!(
            reader()
                .get(&batch, enrichd::blob::Area::Data, enrichd::blob::META)
                .await,
            Err(enrichd::blob::BlobError::NotFound(_))
        ),
        "the restored copy cannot be decrypted: its key is gone"
    );
    let took = until(Duration::from_secs(10), "B forgets the key", || async {
        c.status(&b, &key, &format!("/v1/batches/{id}")).await == 404
    })
    .await;
    assert!(
        took < PROPAGATION,
        "B still read the restored copy after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_replica_running_a_batch_leaves_another_to_finish_it_with_every_row_once() {
    let c = Cluster::new("[batches]\npart_rows = 5\nconcurrency_per_tenant = 2\n").await;
    c.up.gravatar.otherwise(
        Reply::status(404, r#"{"error":"Profile not found"}"#).after(Duration::from_millis(40)),
    );
    let (a, b) = (c.start().await, c.start().await);
    let (key, _) = c.new_key("acme");
    for (r, what) in [(&a, "key at A"), (&b, "key at B")] {
        until(Duration::from_secs(10), what, || async {
            c.status(r, &key, "/v1/sources").await == 200
        })
        .await;
    }
    let emails: Vec<String> = (1..=60).map(|i| format!("row{i}@example.org")).collect();
    let id = c
        .upload(&a, &key, format!("email\n{}\n", emails.join("\n")))
        .await;
    until(Duration::from_secs(30), "progress at A", || async {
        c.get_json(&a, &key, &format!("/v1/batches/{id}")).await["rows_done"].as_u64() >= Some(10)
    })
    .await;
    assert!(
        a.served.stderr().contains("Batch stored"),
        "A took the upload"
    );

    a.kill();
    let took = until(Duration::from_secs(60), "B finishes", || async {
        c.get_json(&b, &key, &format!("/v1/batches/{id}")).await["status"] == "done"
    })
    .await;
    eprintln!("takeover and finish after the kill: {took:?}");

    let done = c.get_json(&b, &key, &format!("/v1/batches/{id}")).await;
    assert_eq!(done["rows_done"], 60, "{done}");
    let nd = c
        .http
        .get(format!(
            "{}/v1/batches/{id}/result.csv?format=ndjson",
            b.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    let rows = crate::helpers::ndjson_rows(&nd);
    assert_eq!(
        rows,
        (1..=60).collect::<Vec<u64>>(),
        "every row exactly once, in order"
    );
    let hits: Vec<usize> = emails
        .iter()
        .map(|e| c.up.gravatar.hits(&Upstreams::gravatar_path(e)))
        .collect();
    assert!(hits.iter().all(|h| *h >= 1), "{hits:?}");
    assert!(
        hits.iter().filter(|h| **h > 1).count() <= 5,
        "only the part in flight at the kill is asked again: {hits:?}"
    );
}

/// A TCP forwarder to moto that can be cut (every connection dropped, new ones refused) and restored.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, list) = (up.clone(), conns.clone());
        let target = target.trim_start_matches("http://").to_string();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().expect("lock").push(task.abort_handle());
            }
        });
        Self { url, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_bucket_outage_lookups_go_on_from_memory_and_opt_outs_answer_503() {
    let proxy = Proxy::start(enrichd::testkit::moto().endpoint.clone()).await;
    let c = Cluster::on(&proxy.url, "").await;
    for e in [
        "known@example.com",
        "listed@example.com",
        "during@example.com",
    ] {
        c.up.gravatar_profile(e, "Outage Person", "Acme", None);
    }
    let (a, b) = (c.start().await, c.start().await);
    let (key, _) = c.new_key("acme");
    until(Duration::from_secs(10), "key at B", || async {
        c.status(&b, &key, "/v1/sources").await == 200
    })
    .await;
    assert_eq!(
        c.optout(&a, "listed@example.com").await.status().as_u16(),
        200
    );
    until(Duration::from_secs(10), "excluded at B", || async {
        c.lookup(&b, &key, "listed@example.com").await["found"] == false
    })
    .await;

    proxy.cut();
    assert_eq!(
        c.lookup(&b, &key, "listed@example.com").await["found"],
        false
    );
    assert_eq!(c.lookup(&b, &key, "known@example.com").await["found"], true);
    let refused = c.optout(&a, "during@example.com").await;
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        c.lookup(&a, &key, "during@example.com").await["found"],
        true,
        "nothing was acknowledged, so nothing is claimed"
    );

    proxy.restore();
    let accepted = until(
        Duration::from_secs(30),
        "opt-out accepted again",
        || async { c.optout(&a, "during@example.com").await.status().as_u16() == 200 },
    )
    .await;
    eprintln!("store back after {accepted:?}");
    let took = until(Duration::from_secs(10), "excluded at B", || async {
        c.lookup(&b, &key, "during@example.com").await["found"] == false
    })
    .await;
    assert!(took < PROPAGATION, "enforced at B after {took:?}");
}
