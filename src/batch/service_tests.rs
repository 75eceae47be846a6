//! BatchService behaviour on a temporary directory with a fake, instant enricher.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::service::stored_rows;
use super::state::lock;
use super::*;
use crate::blob::{Area, BatchId, BatchKey, ManualClock, TenantKey};
use crate::domain::{Identifier, Query};
use crate::profile::{Field, Observation, Profile, Ranked, Sourced};
use crate::seal::{Keyring, MasterKey};
use crate::store::Store;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Answers from a map keyed by email. With `stalled` set, `stall@...` never answers and reports that it
/// was reached.
#[derive(Default)]
struct FakeEnricher {
    profiles: HashMap<String, Profile>,
    calls: AtomicUsize,
    stalled: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>,
}

impl Enricher for FakeEnricher {
    fn enrich(&self, q: Query, _ctx: RowContext) -> BoxFuture<'static, RowOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let email = q.email.map(|e| e.as_str().to_string()).unwrap_or_default();
        if email.starts_with("stall@")
            && let Some(tx) = self.stalled.lock().expect("lock").as_ref()
        {
            let _ = tx.send(());
            return Box::pin(futures::future::pending());
        }
        if email.starts_with("down@") {
            let out = RowOutcome::error("every source asked failed (fake error)");
            return Box::pin(async move { out });
        }
        if email.starts_with("panic@") {
            return Box::pin(async { panic!("the fake enricher fails on purpose") });
        }
        let out = match self.profiles.get(&email) {
            Some(p) => RowOutcome::found(p.clone()),
            None => RowOutcome::miss(),
        };
        Box::pin(async move { out })
    }
}

/// Row keys by a plain hash; the keys in `excluded` are on the list.
#[derive(Default)]
struct FakeHasher {
    excluded: Mutex<std::collections::HashSet<[u8; 16]>>,
}

impl RowHasher for FakeHasher {
    fn row_keys(&self, id: &Identifier) -> Option<[u8; 16]> {
        Some(key_of(id))
    }

    fn is_excluded(&self, key: &[u8; 16]) -> bool {
        self.excluded.lock().expect("lock").contains(key)
    }
}

fn email_key(email: &str) -> [u8; 16] {
    key_of(&Identifier::Email(
        crate::domain::Email::parse(email).expect("email"),
    ))
}

fn key_of(id: &Identifier) -> [u8; 16] {
    let h = blake3::hash(format!("{:?}|{}", id.kind(), id.canonical()).as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

fn sourced(field: Field, v: &str, detail: Option<&str>) -> Sourced {
    Sourced {
        value: Observation::new(field, v).value,
        confidence: 0.9,
        sources: Arc::from([Arc::from("fake")]),
        detail: detail.map(str::to_string),
        status: None,
        evidence: None,
    }
}

fn ada() -> Profile {
    Profile {
        name: Some(Ranked {
            best: sourced(Field::FullName, "Ada Lovelace", None),
            alternatives: vec![],
        }),
        emails: vec![sourced(Field::Email, "ada@analytical.org", Some("valid"))],
        phones: vec![sourced(Field::Phone, "+33612345678", None)],
        ..Profile::default()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    clock: Arc<ManualClock>,
    svc: BatchService,
    enricher: Arc<FakeEnricher>,
    hasher: Arc<FakeHasher>,
}

/// The batch store on a directory, as one process opens it (the same master key every time).
fn batch_store(root: &std::path::Path, clock: Arc<ManualClock>) -> BatchStore {
    let store = Store::local(root).expect("store dir");
    let keyring = Keyring::new(MasterKey::from_bytes([9; 32]), Vec::new());
    BatchStore::new(
        &store,
        Arc::new(keyring),
        clock,
        Arc::from("test"),
        Duration::from_secs(5),
    )
}

fn env_at(dir: tempfile::TempDir, clock: Arc<ManualClock>, enricher: FakeEnricher) -> Env {
    let root = dir.path().to_path_buf();
    let blobs = batch_store(&root, clock.clone());
    let enricher = Arc::new(enricher);
    let config = BatchConfig {
        part_rows: 2,
        ..BatchConfig::default()
    };
    let hasher = Arc::new(FakeHasher::default());
    let svc = BatchService::new(blobs, enricher.clone(), hasher.clone(), config);
    Env {
        _dir: dir,
        root,
        clock,
        svc,
        enricher,
        hasher,
    }
}

fn env() -> Env {
    let mut enricher = FakeEnricher::default();
    enricher.profiles.insert("ada@example.com".into(), ada());
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + 20_000 * DAY));
    env_at(tempfile::tempdir().expect("tempdir"), clock, enricher)
}

fn body(text: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let chunks: Vec<Result<Bytes, std::io::Error>> = text
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

impl Env {
    async fn upload(&self, tenant: &str, text: &[u8]) -> BatchId {
        let meta = self
            .svc
            .create(tenant, body(text), BatchOptions::default())
            .await
            .expect("upload accepted");
        BatchId::parse(&meta.id).expect("id")
    }

    async fn run(&self, tenant: &str, id: BatchId) {
        let key = BatchKey::new(TenantKey::of(tenant), id);
        super::job::run(&self.svc.shared, &key).await;
    }

    /// Uploads `text` for tenant `t1` and runs the batch to its end; its id and summary.
    async fn finished(&self, text: &[u8]) -> (BatchId, BatchSummary) {
        let id = self.upload("t1", text).await;
        self.run("t1", id).await;
        (id, self.svc.get("t1", id).await.expect("meta").summary())
    }

    async fn result_text(&self, tenant: &str, id: BatchId, format: Format) -> String {
        let mut stream = self.svc.result(tenant, id, format).await.expect("result");
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8(out).expect("utf8")
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        // What a batch leaves: its objects and its key (not the sweeper's lease).
        let mut out = Vec::new();
        for area in ["batches", "indexes", "batch-keys", "state/jobs"] {
            walk(&self.root.join("blobs").join(area), &mut out);
        }
        out
    }
}

const SAMPLE: &[u8] = b"Email;Soci\xC3\xA9t\xC3\xA9;Note\r\nada@example.com;Acme;=SUM(1)\r\nnobody@example.com;Acme;\r\n;Acme;no id\r\nnot-an-email;Acme;\r\n";

#[tokio::test]
async fn csv_result_keeps_input_then_enrichment_one_row_each() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    let meta = env.svc.get("t1", id).await.expect("meta");
    assert_eq!(
        (
            meta.status,
            meta.rows_total,
            meta.rows_done,
            meta.rows_found
        ),
        (BatchStatus::Done, 4, 4, 1)
    );
    let text = env.result_text("t1", id, Format::Csv).await;
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        format!("Email;Société;Note;{}", ENRICH_COLUMNS.join(";"))
    );
    assert_eq!(
        lines[1],
        "ada@example.com;Acme;'=SUM(1);found;Ada Lovelace;;;;ada@analytical.org (valid);'+33612345678;;;0.90;;"
    );
    assert_eq!(lines[2], "nobody@example.com;Acme;;not_found;;;;;;;;;;;");
    assert_eq!(lines[3], ";Acme;no id;skipped;;;;;;;;;;;");
    assert_eq!(
        lines[4],
        "not-an-email;Acme;;invalid:email;;;;;;;;;;email is not an email address: it has no '@';"
    );
    assert_eq!(lines.len(), 5);
}

#[tokio::test]
async fn a_lookup_that_panics_is_that_rows_error_and_the_batch_goes_on() {
    let env = env();
    let id = env
        .upload("t1", b"email\npanic@example.com\nada@example.com\n")
        .await;
    env.run("t1", id).await;
    let meta = env.svc.get("t1", id).await.expect("meta");
    assert_eq!(
        (meta.status, meta.rows_done, meta.rows_found),
        (BatchStatus::Done, 2, 1)
    );
    let text = env.result_text("t1", id, Format::Csv).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("panic@example.com,error,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("ada@example.com,found,"),
        "{}",
        lines[2]
    );
}

#[tokio::test]
async fn a_batch_whose_every_row_failed_ends_failed_and_says_why() {
    let env = env();

    let (_, summary) = env
        .finished(b"email\ndown@example.com\ndown@example.org\ndown@example.net\n")
        .await;

    assert_eq!((summary.status, summary.rows_done), ("failed", 3));
    assert_eq!(summary.rows_error, 3);
    assert_eq!(
        summary.error.as_deref(),
        Some(
            "no row could be enriched; the commonest reason: every source asked failed (fake error)"
        )
    );
}

#[tokio::test]
async fn failed_rows_are_counted_with_their_reason_and_the_others_still_count() {
    let env = env();

    let (id, summary) = env
        .finished(b"email\ndown@example.com\nada@example.com\n")
        .await;

    assert_eq!(
        (summary.status, summary.rows_found, summary.rows_error),
        ("done", 1, 1)
    );
    assert_eq!(
        summary.rows_error_reason.as_deref(),
        Some("every source asked failed (fake error)")
    );
    let text = env.result_text("t1", id, Format::Csv).await;
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with(",error,,,,,,,,,,every source asked failed (fake error),")),
        "{text}"
    );
}

#[tokio::test]
async fn a_placeholder_or_unusable_cell_does_not_cost_the_row_its_email() {
    let env = env();

    let (id, _) = env
        .finished(b"email,phone\nada@example.com,n/a\nada@example.com,12\n,unknown\n")
        .await;

    let text = env.result_text("t1", id, Format::Ndjson).await;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows[0]["status"], "found");
    assert!(rows[0]["note"].is_null(), "a placeholder is just empty");
    assert_eq!(rows[1]["status"], "found");
    assert_eq!(
        rows[1]["note"],
        "phone is a national number and no default region is configured: use +<country code>; \
         looked up without it"
    );
    assert_eq!(rows[2]["status"], "skipped");
    assert_eq!(env.enricher.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn ndjson_result_has_one_object_per_row_with_exact_values() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    let text = env.result_text("t1", id, Format::Ndjson).await;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["input"]["Note"], "=SUM(1)");
    assert_eq!(rows[0]["enrichment"]["phones"][0], "+33612345678");
    assert_eq!(rows[2]["status"], "skipped");
}

#[tokio::test]
async fn upload_without_identifier_column_is_refused_and_leaves_nothing() {
    let env = env();
    let err = env
        .svc
        .create("t1", body(b"Notes,Company\nx,y\n"), BatchOptions::default())
        .await
        .expect_err("no identifier");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("Notes, Company"), "{err}");
    assert!(env.files().is_empty(), "{:?}", env.files());
}

#[tokio::test]
async fn upload_above_byte_limit_is_too_large_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
    let blobs = batch_store(dir.path(), clock);
    let config = BatchConfig {
        limits: BatchLimits {
            max_bytes: 20,
            ..BatchLimits::default()
        },
        ..BatchConfig::default()
    };
    let svc = BatchService::new(
        blobs,
        Arc::new(FakeEnricher::default()),
        Arc::new(FakeHasher::default()),
        config,
    );
    let err = svc
        .create(
            "t1",
            body(b"email\na@example.com\nb@example.com\n"),
            BatchOptions::default(),
        )
        .await
        .expect_err("too large");
    assert!(
        matches!(err, BatchError::TooLarge(Limit::Bytes(20))),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(svc.list("t1").await.expect("list").is_empty());
}

/// Waits until the job reaches the stalling row; a job that ends before it fails the test at once
/// (rather than leaving it waiting for a row that will never come).
async fn until_stalled(
    stalled: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    job: &mut tokio::task::JoinHandle<()>,
) {
    tokio::select! {
        reached = stalled.recv() => reached.expect("job reached the stalling row"),
        ended = job => panic!("the job ended before it reached the stalling row: {ended:?}"),
    }
}

#[tokio::test]
async fn interrupted_job_resumes_at_the_next_part_without_losing_or_repeating_rows() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = FakeEnricher {
        stalled: Mutex::new(Some(tx)),
        ..FakeEnricher::default()
    };
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + 20_000 * DAY));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let env1 = env_at(dir, clock.clone(), first);
    let csv = b"email\nr1@example.com\nr2@example.com\nstall@example.com\nr4@example.com\nr5@example.com\n";
    let id = env1.upload("t1", csv).await;
    let key = BatchKey::new(TenantKey::of("t1"), id);
    let shared = env1.svc.shared.clone();
    let mut job = tokio::spawn(async move { super::job::run(&shared, &key).await });
    until_stalled(&mut rx, &mut job).await;
    job.abort();
    let _ = job.await;
    let before = env1.svc.get("t1", id).await.expect("meta");
    assert_eq!(
        (before.status, before.parts_done, before.rows_done),
        (BatchStatus::Running, 1, 2)
    );
    drop(env1.svc);

    // A new service on the same directory, as after a restart; this enricher answers every row.
    let blobs = batch_store(&path, clock);
    let second = Arc::new(FakeEnricher::default());
    let svc = BatchService::new(
        blobs,
        second.clone(),
        Arc::new(FakeHasher::default()),
        BatchConfig {
            part_rows: 2,
            ..BatchConfig::default()
        },
    );
    assert_eq!(svc.resume_all().await.expect("resume"), 1);
    super::job::run(&svc.shared, &BatchKey::new(TenantKey::of("t1"), id)).await;
    let rows = stored_rows(&svc, "t1", id).await;
    let numbers: Vec<u64> = rows.iter().map(|r| r.row).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert_eq!(
        second.calls.load(Ordering::SeqCst),
        3,
        "rows 1-2 were not enriched again"
    );
    let meta = svc.get("t1", id).await.expect("meta");
    assert_eq!((meta.status, meta.rows_done), (BatchStatus::Done, 5));
    drop(env1.enricher);
}

#[tokio::test]
async fn result_is_served_on_day_29_and_expired_then_swept_on_day_30() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    env.clock.advance(29 * DAY);
    assert!(env.svc.get("t1", id).await.is_ok());
    assert!(env.svc.result("t1", id, Format::Csv).await.is_ok());
    assert!(!env.files().is_empty());
    env.clock.advance(DAY);
    assert!(matches!(
        env.svc.get("t1", id).await,
        Err(BatchError::Expired)
    ));
    assert!(matches!(
        env.svc.result("t1", id, Format::Csv).await.err(),
        Some(BatchError::Expired)
    ));
    let report = env.svc.sweep().await.expect("sweep");
    assert_eq!(report.batches_removed, 1);
    assert!(env.files().is_empty(), "{:?}", env.files());
}

#[tokio::test]
async fn another_tenants_id_is_not_found_everywhere() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    assert!(matches!(
        env.svc.get("t2", id).await,
        Err(BatchError::NotFound)
    ));
    assert!(matches!(
        env.svc.result("t2", id, Format::Csv).await.err(),
        Some(BatchError::NotFound)
    ));
    assert!(matches!(
        env.svc.delete("t2", id).await,
        Err(BatchError::NotFound)
    ));
    assert!(env.svc.list("t2").await.expect("list").is_empty());
    assert_eq!(env.svc.list("t1").await.expect("list").len(), 1);
    assert!(
        env.svc.get("t1", id).await.is_ok(),
        "still there for its owner"
    );
}

#[tokio::test]
async fn delete_erases_every_object_now() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    assert!(!env.files().is_empty());
    env.svc.delete("t1", id).await.expect("deleted");
    assert!(env.files().is_empty(), "{:?}", env.files());
    assert!(matches!(
        env.svc.get("t1", id).await,
        Err(BatchError::NotFound)
    ));
}

/// A person whose key shares its first eight bytes (the in-memory index's prefix) with a stored
/// row's key makes that part a candidate; the purge reads it, removes nothing, and touches no batch.
#[tokio::test]
async fn a_key_sharing_only_a_prefix_with_stored_rows_touches_nothing() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    let mut near = email_key("ada@example.com");
    near[15] ^= 1;
    assert!(
        !lock(&env.svc.shared.index).candidates(&[near]).is_empty(),
        "the prefix makes the part a candidate"
    );
    let report = env.svc.purge(&[near]).await.expect("purge").expect("done");
    assert_eq!(report, PurgeReport::default());
    assert_eq!(stored_rows(&env.svc, "t1", id).await.len(), 4);
}

/// A purge cut short between its two writes leaves a part without the rows and an index still
/// listing them. Taken up again, it brings the index up to date and does not rewrite the part.
#[tokio::test]
async fn a_purge_taken_up_after_the_part_was_rewritten_leaves_the_part_alone() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    env.run("t1", id).await;
    let keys = [email_key("ada@example.com")];
    let blobs = env.svc.shared.blobs();
    let candidates = lock(&env.svc.shared.index).candidates(&keys);
    let [(key, part)] = candidates.as_slice() else {
        panic!("one part holds Ada: {candidates:?}")
    };
    let (key, part) = (key.clone(), *part);
    let before = super::stored::read_index(blobs, &key, part)
        .await
        .expect("index");
    let report = env.svc.purge(&keys).await.expect("purge").expect("done");
    assert_eq!(report.rows_removed, 1);
    // The cut: the index as it was before the purge, stored and (as a restarted replica loads it)
    // in memory.
    super::stored::write_index(blobs, &key, part, &before)
        .await
        .expect("old index back");
    lock(&env.svc.shared.index).insert_part(&key, part, &before);
    let (_, etag) = super::stored::PartRows::open(blobs, &key, part)
        .await
        .expect("part");
    let again = env.svc.purge(&keys).await.expect("purge").expect("done");
    assert_eq!(again, PurgeReport::default());
    let (_, etag_after) = super::stored::PartRows::open(blobs, &key, part)
        .await
        .expect("part");
    assert_eq!(etag_after, etag, "the part was not written again");
    assert!(
        super::stored::read_index(blobs, &key, part)
            .await
            .expect("index")
            .rows_holding(&keys)
            .is_empty(),
        "the index no longer lists Ada's row"
    );
}

#[tokio::test]
async fn purge_removes_exactly_the_persons_rows() {
    let env = env();
    let csv = b"email,phone\nada@example.com,\nbob@example.com,\nbob2@example.com,+33612345678\ncarol@example.com,\n";
    let id = env.upload("t1", csv).await;
    env.run("t1", id).await;
    // Ada's found phone is the same person as the phone in row 3's input.
    let phone = crate::domain::PhoneE164::parse("+33612345678", None).expect("phone");
    let keys = [key_of(&Identifier::Phone(phone))];
    let report = env.svc.purge(&keys).await.expect("purge").expect("done");
    assert_eq!(
        report,
        PurgeReport {
            batches_touched: 1,
            rows_removed: 2,
            input_rows_blanked: 0,
        }
    );
    let rows: Vec<u64> = stored_rows(&env.svc, "t1", id)
        .await
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(rows, [2, 4]);
    let again = env.svc.purge(&keys).await.expect("purge again");
    assert_eq!(again.map(|r| r.rows_removed), Some(0));
    assert_eq!(
        env.svc.purges_pending().await.expect("journal"),
        0,
        "entries are removed once done"
    );
    let text = env.result_text("t1", id, Format::Csv).await;
    assert!(!text.contains("ada@") && !text.contains("bob2@"), "{text}");
    assert_eq!(env.enricher.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_purge_finds_parts_its_memory_has_not_loaded_yet() {
    let env = env();
    let id = env
        .upload("t1", b"email\nada@example.com\nbob@example.com\n")
        .await;
    env.run("t1", id).await;
    // As at a start whose load of the stored indexes has not finished (or has forgotten a part
    // committed meanwhile): the memory knows no part.
    *crate::batch::state::lock(&env.svc.shared.index) = Default::default();

    let keys = [key_of(&Identifier::Email(
        crate::domain::Email::parse("ada@example.com").expect("email"),
    ))];
    let report = env.svc.purge(&keys).await.expect("purge").expect("done");

    assert_eq!(report.rows_removed, 1);
    let text = env.result_text("t1", id, Format::Csv).await;
    assert!(!text.contains("ada@") && text.contains("bob@"), "{text}");
}

/// A subject access request counts, per stored batch, the person's rows (in committed parts of an
/// ended batch, the last row included, or in the input of a waiting one, less the rows already
/// blanked) and tells when each batch expires, soonest first; a batch without the person, or
/// expired, is not named.
#[tokio::test]
async fn holding_counts_a_persons_rows_per_batch_soonest_expiry_first() {
    use crate::blob::Clock as _;
    let env = env();
    let keys = [email_key("ada@example.com")];
    let waiting = env
        .upload(
            "t2",
            b"email\nbob@example.com\nada@example.com\nada@example.com\ncarol@example.com\n",
        )
        .await;
    let waiting_expires = env.clock.now() + 30 * DAY;
    env.clock.advance(DAY);
    let ended = env
        .upload(
            "t1",
            b"email\nada@example.com\nbob@example.com\ncarol@example.com\nada@example.com\n",
        )
        .await;
    env.run("t1", ended).await;
    let ended_expires = env.clock.now() + 30 * DAY;
    let without = env.upload("t1", b"email\nbob@example.com\n").await;
    env.run("t1", without).await;

    let held = env.svc.holding(&keys).await.expect("holding");
    assert_eq!(
        held,
        [
            Held {
                rows: 2,
                expires_at: waiting_expires
            },
            Held {
                rows: 2,
                expires_at: ended_expires
            },
        ]
    );

    // One of the waiting batch's rows is blanked by a purge cut short before the results: it no
    // longer counts.
    let key = BatchKey::new(TenantKey::of("t2"), waiting);
    super::stored::modify_meta(env.svc.shared.blobs(), &key, |m| {
        m.input_purged = vec![2];
        Ok(())
    })
    .await
    .expect("mark row 2 blanked");
    let held = env.svc.holding(&keys).await.expect("holding");
    assert_eq!(held.iter().map(|h| h.rows).collect::<Vec<_>>(), [1, 2]);

    env.clock.advance(29 * DAY + Duration::from_secs(1));
    let held = env.svc.holding(&keys).await.expect("holding");
    assert_eq!(
        held,
        [Held {
            rows: 2,
            expires_at: ended_expires
        }],
        "the expired batch is not named"
    );
    // Rows of parts a job never committed are not the ended batch's.
    super::stored::modify_meta(
        env.svc.shared.blobs(),
        &BatchKey::new(TenantKey::of("t1"), ended),
        |m| {
            m.parts_done = 0;
            Ok(())
        },
    )
    .await
    .expect("uncommit the part");
    assert!(env.svc.holding(&keys).await.expect("holding").is_empty());
    assert!(
        env.svc
            .holding(&[email_key("nobody@example.com")])
            .await
            .expect("holding")
            .is_empty()
    );
}

#[tokio::test]
async fn column_override_and_bad_region_are_checked_at_upload() {
    let env = env();
    let options = BatchOptions {
        columns: BTreeMap::from([("Contact".to_string(), "email".to_string())]),
        ..BatchOptions::default()
    };
    let meta = env
        .svc
        .create("t1", body(b"Contact\nada@example.com\n"), options)
        .await
        .expect("override accepted");
    assert_eq!(meta.input.columns.by_index, [Some(Column::Email)]);
    let bad = BatchOptions {
        region: Some("Atlantis".into()),
        ..BatchOptions::default()
    };
    let err = env
        .svc
        .create("t1", body(b"email\na@b.com\n"), bad)
        .await
        .expect_err("bad region");
    assert!(matches!(err, BatchError::InvalidRegion { .. }), "{err}");
}

/// The stored input of a batch, decrypted, or `None` once it is gone.
async fn stored_input(env: &Env, tenant: &str, id: BatchId) -> Option<String> {
    let key = BatchKey::new(TenantKey::of(tenant), id);
    match env
        .svc
        .shared
        .blobs()
        .get(&key, crate::blob::Area::Data, "input")
        .await
    {
        Ok((bytes, _)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(crate::blob::BlobError::NotFound(_)) => None,
        Err(e) => panic!("input: {e}"),
    }
}

#[tokio::test]
async fn an_ended_batch_keeps_no_input() {
    let env = env();
    let id = env.upload("t1", SAMPLE).await;
    assert!(stored_input(&env, "t1", id).await.is_some());
    env.run("t1", id).await;
    assert_eq!(stored_input(&env, "t1", id).await, None);
    assert!(
        env.result_text("t1", id, Format::Csv)
            .await
            .contains("ada@example.com")
    );
}

#[tokio::test]
async fn purge_blanks_a_waiting_batchs_input_and_its_job_drops_the_rows() {
    let env = env();
    let csv =
        b"email,company\nada@example.com,Acme\nbob@example.com,Acme\ncarol@example.com,Acme\n";
    let id = env.upload("t1", csv).await;
    let keys = [email_key("bob@example.com")];
    env.hasher.excluded.lock().expect("lock").extend(keys);

    let report = env.svc.purge(&keys).await.expect("purge").expect("done");

    assert_eq!(report.input_rows_blanked, 1);
    let input = stored_input(&env, "t1", id).await.expect("still waiting");
    assert!(!input.contains("bob@"), "{input}");
    assert!(input.contains("ada@example.com") && input.contains("carol@example.com"));
    env.run("t1", id).await;
    let rows: Vec<u64> = stored_rows(&env.svc, "t1", id)
        .await
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(
        rows,
        [1, 3],
        "the blanked row is dropped, the others keep their numbers"
    );
    let meta = env.svc.get("t1", id).await.expect("meta");
    assert_eq!((meta.rows_done, meta.rows_purged), (3, 1));
    assert_eq!(env.svc.purges_pending().await.expect("journal"), 0);
}

#[tokio::test]
async fn a_download_serves_a_listed_persons_row_as_a_miss() {
    let env = env();
    let csv = b"email,company\nada@example.com,Acme\nnobody@example.com,Acme\n";
    let id = env.upload("t1", csv).await;
    env.run("t1", id).await;
    let before = env.result_text("t1", id, Format::Ndjson).await;
    assert!(before.contains("Ada Lovelace"), "{before}");
    // On the list, but the purge never ran (cut short): the read-time filter still holds.
    env.hasher
        .excluded
        .lock()
        .expect("lock")
        .insert(email_key("ada@example.com"));

    let after = env.result_text("t1", id, Format::Ndjson).await;

    let rows: Vec<serde_json::Value> = after
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2, "{after}");
    assert!(
        !after.contains("Ada Lovelace") && !after.contains("analytical.org"),
        "{after}"
    );
    let miss = rows
        .iter()
        .find(|r| r.to_string().contains("nobody@"))
        .expect("miss row");
    let ada = rows
        .iter()
        .find(|r| r.to_string().contains("ada@"))
        .expect("ada's row");
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(ada), keys(miss), "the same fields as a miss");
    assert_eq!(ada["status"], "not_found");
    assert_eq!(ada["status"], miss["status"]);
    assert_eq!(
        ada["input"]["company"], "Acme",
        "the tenant's own input is echoed"
    );
}

#[tokio::test]
async fn a_job_taken_up_after_a_crash_checks_its_committed_parts_and_drops_uncommitted_ones() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut first = FakeEnricher {
        stalled: Mutex::new(Some(tx)),
        ..FakeEnricher::default()
    };
    first.profiles.insert("ada@example.com".into(), ada());
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + 20_000 * DAY));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let env1 = env_at(dir, clock.clone(), first);
    let csv = b"email\nada@example.com\nr2@example.com\nstall@example.com\nr4@example.com\n";
    let id = env1.upload("t1", csv).await;
    let key = BatchKey::new(TenantKey::of("t1"), id);
    let shared = env1.svc.shared.clone();
    let mut job = tokio::spawn({
        let key = key.clone();
        async move { super::job::run(&shared, &key).await }
    });
    until_stalled(&mut rx, &mut job).await;
    job.abort();
    let _ = job.await;
    // A part the crashed job wrote but never committed.
    let stray = crate::batch::index::PartRef {
        part: 2,
        generation: 99,
    };
    let blobs = env1.svc.shared.blobs().clone();
    super::stored::write_part(&blobs, &key, stray, &[])
        .await
        .expect("stray part");
    drop(env1.svc);

    // Ada opted out while the process was down, and her purge never ran: the restarted job must
    // not keep her committed row.
    let hasher = Arc::new(FakeHasher::default());
    hasher
        .excluded
        .lock()
        .expect("lock")
        .insert(email_key("ada@example.com"));
    let svc = BatchService::new(
        batch_store(&path, clock),
        Arc::new(FakeEnricher::default()),
        hasher,
        BatchConfig {
            part_rows: 2,
            ..BatchConfig::default()
        },
    );
    assert_eq!(svc.resume_all().await.expect("resume"), 1);
    super::job::run(&svc.shared, &key).await;

    let numbers: Vec<u64> = stored_rows(&svc, "t1", id)
        .await
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(numbers, [2, 3, 4], "Ada's committed row is gone");
    let meta = svc.get("t1", id).await.expect("meta");
    assert_eq!(
        (meta.status, meta.rows_found, meta.rows_purged),
        (BatchStatus::Done, 0, 1)
    );
    let names = svc.shared.blobs().names(&key).await.expect("names");
    assert!(
        !names.iter().any(|(_, n)| n.contains("-g99")),
        "the uncommitted part is deleted: {names:?}"
    );
    for (area, object) in [
        (Area::Data, "meta"),
        (Area::Data, "part-"),
        (Area::Index, ""),
    ] {
        assert!(
            names
                .iter()
                .any(|(a, n)| *a == area && n.starts_with(object)),
            "the committed objects stay: {names:?}"
        );
    }
    drop(env1.enricher);
}
