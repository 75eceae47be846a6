use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::domain::{
    DomainName, Email, IdentifierKind, OrgName, PersonName, PhoneE164, ProfileUrl,
};
use crate::exclusion::log::LOG_FILE_NAME;

const T0: u64 = 1_750_000_000;

fn key() -> ExclusionKey {
    ExclusionKey::from_bytes([42; 32])
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn open(dir: &Path) -> (ExclusionList, OpenReport) {
    reopen(dir, DEFAULT_RETENTION_DAYS, at(T0))
}

/// Opens the list, waiting out a lock held by nobody in this test (see
/// [`crate::testkit::open_waiting_out_spawns`]).
fn reopen(dir: &Path, retention_days: u32, now: SystemTime) -> (ExclusionList, OpenReport) {
    crate::testkit::open_waiting_out_spawns(
        || ExclusionList::open(dir, key(), retention_days, now),
        ExclusionError::is_locked,
    )
    .expect("open list")
}

/// A list in `dir` with `raw` opted out at `T0`, then closed.
async fn added_at_t0(dir: &Path, raw: &str) {
    let (list, _) = open(dir);
    let list = list.with_clock(|| at(T0));
    list.add(&[email(raw)], Origin::Api).await.expect("added");
}

fn email(raw: &str) -> Identifier {
    Identifier::Email(Email::parse(raw).expect("valid email"))
}

fn phone(raw: &str) -> Identifier {
    Identifier::Phone(PhoneE164::parse(raw, None).expect("valid phone"))
}

fn profile(raw: &str) -> Identifier {
    Identifier::Profile(ProfileUrl::parse(raw).expect("valid profile URL"))
}

fn name_at(name: &str, company: &str) -> Identifier {
    Identifier::NameAtCompany(
        PersonName::parse(name).expect("valid name"),
        OrgName::parse(company).expect("valid company"),
    )
}

fn domain(raw: &str) -> Identifier {
    Identifier::Domain(DomainName::parse(raw).expect("valid domain"))
}

#[tokio::test]
async fn added_identifiers_are_excluded_in_any_spelling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let receipt = list
        .add(
            &[
                email("Ada.Lovelace+news@googlemail.com"),
                phone("+33 6 12 34 56 78"),
                profile("https://fr.linkedin.com/in/Ada-L/"),
            ],
            Origin::Api,
        )
        .await
        .expect("add");
    assert_eq!((receipt.added, receipt.already_present), (3, 0));
    assert_eq!(receipt.id.len(), 32);
    for id in [
        email("adalovelace@gmail.com"),
        email("ADA.LOVE.LACE@gmail.com"),
        phone("0033612345678"),
        profile("linkedin.com/in/ada-l"),
    ] {
        assert!(list.is_excluded(&id), "{:?} should be excluded", id.kind());
    }
    assert!(!list.is_excluded(&email("ada.lovelace@example.com")));
    assert!(!list.is_excluded(&phone("+33 6 12 34 56 79")));
}

#[tokio::test]
async fn domains_are_skipped_and_duplicates_counted_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let ids = [
        email("ada@example.com"),
        email("ADA@example.com"),
        domain("example.com"),
    ];
    let first = list.add(&ids, Origin::Cli).await.expect("add");
    assert_eq!((first.added, first.already_present), (1, 0));
    assert!(!list.is_excluded(&domain("example.com")));
    assert!(!list.any_excluded(&mut [domain("example.com")].iter()));
    let again = list.add(&ids, Origin::Cli).await.expect("add again");
    assert_eq!((again.added, again.already_present), (0, 1));
    assert_ne!(first.id, again.id, "receipt ids are random");
    assert_eq!(list.stats().await.entries, 1);
    assert_eq!(list.hash(&domain("example.com")), None);
    assert_eq!(list.hash_prefix(&domain("example.com")), "-");
}

#[test]
fn hashes_are_per_kind_and_keyed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let other_dir = tempfile::tempdir().expect("temp dir");
    let (other, _) = ExclusionList::open(
        other_dir.path(),
        ExclusionKey::from_bytes([7; 32]),
        1,
        at(T0),
    )
    .expect("open with another key");
    let id = email("ada@example.com");
    let h = list.hash(&id).expect("personal");
    assert_ne!(Some(h), other.hash(&id), "another key gives another hash");
    assert_eq!(list.hash_prefix(&id), h.prefix());
    assert_eq!(list.hash_prefix(&id).len(), 8);
    let by_company = list
        .hash(&name_at("Ada Lovelace", "Acme"))
        .expect("personal");
    let by_domain = list
        .hash(&Identifier::NameAtDomain(
            PersonName::parse("Ada Lovelace").expect("valid"),
            DomainName::parse("acme.io").expect("valid domain"),
        ))
        .expect("personal");
    assert_ne!(by_company.digest(), by_domain.digest());
    // Same text under two kinds: an email's text and a profile URL whose canonical text is identical.
    let text_email = list.subkeys.hash(IdentifierKind::Email, "x.com/ada");
    let text_profile = list.subkeys.hash(IdentifierKind::ProfileUrl, "x.com/ada");
    assert_ne!(text_email, text_profile);
}

#[tokio::test]
async fn entries_survive_reopen_with_their_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (list, report) = open(dir.path());
        assert!(report.created);
        list.add(
            &[email("ada@example.com"), phone("+14155552671")],
            Origin::PublicForm,
        )
        .await
        .expect("add");
        list.add(&[name_at("Zoë O'Brien", "Acme Inc")], Origin::Expansion)
            .await
            .expect("add");
    }
    let (list, report) = open(dir.path());
    assert_eq!(
        (report.created, report.records, report.entries),
        (false, 3, 3)
    );
    assert!(list.is_excluded(&email("ada@example.com")));
    assert!(
        !list.is_excluded(&name_at("zoe obrien", "ACME")),
        "punctuation folds to a space"
    );
    assert!(list.is_excluded(&name_at("ZOE O BRIEN", "acme, inc.")));
    let stats = list.stats().await;
    assert_eq!(stats.entries, 3);
    assert_eq!(stats.by_kind.get("email"), Some(&1));
    assert_eq!(stats.by_kind.get("phone"), Some(&1));
    assert_eq!(stats.by_kind.get("name_company"), Some(&1));
    assert_eq!(stats.by_origin.get("public_form"), Some(&2));
    assert_eq!(stats.by_origin.get("expansion"), Some(&1));
    assert_eq!(stats.log_bytes, 32 + 3 * 56);
}

#[tokio::test]
async fn a_torn_last_opt_out_leaves_earlier_ones_enforced() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (list, _) = open(dir.path());
        list.add(&[email("a@example.com")], Origin::Api)
            .await
            .expect("add");
        list.add(&[email("b@example.com")], Origin::Api)
            .await
            .expect("add");
    }
    let path = dir.path().join(LOG_FILE_NAME);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("tear");
    let (list, report) = open(dir.path());
    assert_eq!((report.torn_records, report.entries), (1, 1));
    assert!(list.is_excluded(&email("a@example.com")));
    assert!(!list.is_excluded(&email("b@example.com")));
}

#[tokio::test]
async fn a_corrupted_middle_record_is_refused_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (list, _) = open(dir.path());
        for who in ["a", "b", "c"] {
            list.add(&[email(&format!("{who}@example.com"))], Origin::Api)
                .await
                .expect("add");
        }
    }
    let path = dir.path().join(LOG_FILE_NAME);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[32 + 56 + 3] ^= 0x40;
    std::fs::write(&path, &bytes).expect("corrupt");
    let err = ExclusionList::open(dir.path(), key(), 1095, at(T0)).expect_err("corrupt");
    let msg = err.to_string();
    assert!(msg.contains("byte offset 88"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[tokio::test]
async fn starting_with_another_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (list, _) = open(dir.path());
        list.add(&[email("ada@example.com")], Origin::Api)
            .await
            .expect("add");
    }
    let other = ExclusionKey::from_bytes([1; 32]);
    let other_id = other.key_id_hex();
    let err = ExclusionList::open(dir.path(), other, 1095, at(T0)).expect_err("wrong key");
    let msg = err.to_string();
    assert!(
        msg.contains(&key().key_id_hex()) && msg.contains(&other_id),
        "{msg}"
    );
    assert!(msg.contains("ENRICHD_EXCLUSION_KEY"), "{msg}");
}

#[tokio::test]
async fn compaction_drops_only_entries_past_retention_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(T0));
    let (list, _) = ExclusionList::open(dir.path(), key(), 30, at(T0)).expect("open");
    let list = list.with_clock({
        let clock = Arc::clone(&clock);
        move || at(clock.load(Ordering::SeqCst))
    });
    list.add(
        &[email("old@example.com"), email("renewed@example.com")],
        Origin::Api,
    )
    .await
    .expect("add old");
    clock.store(T0 + 20 * 86_400, Ordering::SeqCst);
    list.add(
        &[email("new@example.com"), email("renewed@example.com")],
        Origin::Cli,
    )
    .await
    .expect("add new");

    let removed = list.compact(at(T0 + 31 * 86_400)).await.expect("compact");

    assert_eq!(removed, 2, "the two records written at T0");
    assert!(!list.is_excluded(&email("old@example.com")));
    assert!(list.is_excluded(&email("new@example.com")));
    assert!(list.is_excluded(&email("renewed@example.com")));
    assert_eq!(list.stats().await.entries, 2);
    assert_eq!(list.stats().await.log_bytes, 32 + 2 * 56);
    list.add(&[email("later@example.com")], Origin::Api)
        .await
        .expect("add after compaction");
    drop(list);
    let (list, report) = reopen(dir.path(), 30, at(T0 + 31 * 86_400));
    assert_eq!((report.records, report.entries, report.expired), (3, 3, 0));
    assert!(list.is_excluded(&email("later@example.com")));
    assert!(!list.is_excluded(&email("old@example.com")));
}

#[tokio::test]
async fn expired_entries_are_not_loaded_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    added_at_t0(dir.path(), "ada@example.com").await;
    let (list, report) = reopen(dir.path(), 10, at(T0 + 11 * 86_400));
    assert_eq!((report.records, report.expired, report.entries), (1, 1, 0));
    assert!(!list.is_excluded(&email("ada@example.com")));
}

#[tokio::test]
async fn imported_hashes_exclude_the_matching_identifiers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let full = list.hash(&email("ada@example.com")).expect("personal");
    let short = list.hash(&phone("+14155552671")).expect("personal");
    let text = format!(
        "# exported\n{}\nphone:{}\n",
        full.to_line(),
        &short.to_hex()[..32]
    );
    let parsed = parse_hash_lines_for_test(&text);
    let receipt = list
        .add_hashes(&parsed, Origin::AdminImport)
        .await
        .expect("import");
    assert_eq!(receipt.added, 2);
    assert!(list.is_excluded(&email("ADA@example.com")));
    assert!(list.is_excluded(&phone("+1 415 555 2671")));
    drop(list);
    let (list, _) = open(dir.path());
    assert!(
        list.is_excluded(&phone("+1 415 555 2671")),
        "truncated hashes survive reopen"
    );
    assert_eq!(list.stats().await.by_origin.get("admin_import"), Some(&2));
}

fn parse_hash_lines_for_test(text: &str) -> Vec<Hashed> {
    crate::exclusion::parse_hash_lines(text).expect("valid import text")
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn the_data_dir_never_holds_raw_identifiers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let raws = [
        "ada.lovelace@example.com",
        "adalovelace@gmail.com",
        "+14155552671",
        "linkedin.com/in/ada-lovelace",
        "ada lovelace|acme",
    ];
    list.add(
        &[
            email(raws[0]),
            email("Ada.Lovelace+x@gmail.com"),
            phone(raws[2]),
            profile("https://www.linkedin.com/in/ada-lovelace/"),
            name_at("Ada Lovelace", "Acme"),
        ],
        Origin::PublicForm,
    )
    .await
    .expect("add");
    list.compact(at(T0)).await.expect("compact");
    let files = all_files(dir.path());
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).expect("read file");
        let lower = String::from_utf8_lossy(&bytes).to_lowercase();
        for raw in raws
            .iter()
            .chain(&["ada.lovelace", "lovelace", "4155552671", "ada-lovelace"])
        {
            assert!(!lower.contains(raw), "{} holds {raw}", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_from_eight_tasks_lose_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let list = Arc::new(list);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let list = Arc::clone(&list);
            tokio::spawn(async move {
                for i in 0..25 {
                    let id = email(&format!("user{t}-{i}@example.com"));
                    list.add(&[id], Origin::Api).await.expect("concurrent add");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task finished");
    }
    assert_eq!(list.stats().await.entries, 200);
    drop(list);
    let (list, report) = open(dir.path());
    assert_eq!(
        (report.records, report.entries, report.torn_records),
        (200, 200, 0)
    );
    for t in 0..8 {
        for i in 0..25 {
            assert!(list.is_excluded(&email(&format!("user{t}-{i}@example.com"))));
        }
    }
}

#[test]
fn the_list_is_shareable_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<ExclusionList>();
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let check: Arc<dyn ExclusionCheck> = Arc::new(list);
    assert!(!check.is_excluded(&email("ada@example.com")));
}

#[tokio::test]
async fn a_snapshot_checks_what_the_writer_recorded_without_its_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let list = list.with_clock(|| at(T0));
    list.add(&[email("Ada.Lovelace@gmail.com")], Origin::Cli)
        .await
        .expect("add");

    let (snapshot, report) =
        ExclusionSnapshot::load(dir.path(), &key(), DEFAULT_RETENTION_DAYS, at(T0))
            .expect("snapshot while the writer is open");

    assert_eq!(report.entries, 1);
    assert!(snapshot.is_excluded(&email("adalovelace+x@googlemail.com")));
    assert!(!snapshot.is_excluded(&email("someone@example.com")));
    let (expired, report) =
        ExclusionSnapshot::load(dir.path(), &key(), 1, at(T0 + 2 * 86_400)).expect("snapshot");
    assert_eq!((report.entries, report.expired), (0, 1));
    assert!(!expired.is_excluded(&email("adalovelace@gmail.com")));
}

#[test]
fn a_second_list_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_list, _) = open(dir.path());

    let err =
        ExclusionList::open(dir.path(), key(), DEFAULT_RETENTION_DAYS, at(T0)).expect_err("locked");

    assert!(err.is_locked(), "{err}");
}

#[tokio::test]
async fn the_version_moves_when_an_entry_is_added_and_only_then() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let start = list.version().expect("the list tells its version");

    list.add(&[domain("example.com")], Origin::Api)
        .await
        .expect("add a bare domain");
    assert_eq!(list.version(), Some(start), "a bare domain adds no entry");

    list.add(&[email("ada@example.com")], Origin::Api)
        .await
        .expect("add");
    let after_add = list.version().expect("version");
    assert_ne!(after_add, start, "a new entry moves the version");

    list.add(&[email("ADA@example.com")], Origin::Api)
        .await
        .expect("add again");
    assert_eq!(
        list.version(),
        Some(after_add),
        "an entry already present is not new"
    );

    list.compact(at(T0 + 10 * 365 * 86_400))
        .await
        .expect("compact");
    assert!(!list.is_excluded(&email("ada@example.com")), "expired");
    assert_eq!(
        list.version(),
        Some(after_add),
        "removals never make anyone excluded, so they leave the version alone"
    );
}

mod shared_store {
    use proptest::prelude::*;

    use super::*;
    use crate::store::{Store, StoreUrl};
    use crate::telemetry::Metrics;

    async fn bucket_store() -> Store {
        let moto = crate::testkit::moto();
        let url = StoreUrl::parse(&format!("s3://{}/x", moto.bucket().await)).expect("url");
        Store::open(&url, &moto.secrets(), Arc::new(Metrics::new())).expect("store")
    }

    /// Opts out `<prefix>0@example.com` .. `<prefix>{n-1}@example.com`, one opt-out (one segment)
    /// each.
    async fn add_each(list: &ExclusionList, prefix: &str, n: usize) {
        for i in 0..n {
            list.add(&[email(&format!("{prefix}{i}@example.com"))], Origin::Api)
                .await
                .expect("added");
        }
    }

    /// How many of `objects` have a name starting with `prefix`.
    fn named(objects: &[crate::store::ObjectMeta], prefix: &str) -> usize {
        objects
            .iter()
            .filter(|m| m.location.filename().is_some_and(|n| n.starts_with(prefix)))
            .count()
    }

    async fn replica(store: &Store) -> ExclusionList {
        ExclusionList::open_store(store, key(), DEFAULT_RETENTION_DAYS, SystemTime::now())
            .await
            .expect("open stored list")
            .0
    }

    /// What one writer does: add its emails one opt-out at a time, sometimes compacting.
    #[derive(Clone, Debug)]
    struct Plan {
        emails: Vec<u16>,
        compact_after: Option<usize>,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (
            proptest::collection::vec(0u16..400, 1..12),
            proptest::option::of(0usize..12),
        )
            .prop_map(|(emails, compact_after)| Plan {
                emails,
                compact_after,
            })
    }

    async fn write(list: Arc<ExclusionList>, plan: Plan) {
        for (i, n) in plan.emails.iter().enumerate() {
            list.add(&[email(&format!("w{n}@example.com"))], Origin::Api)
                .await
                .expect("recorded");
            if plan.compact_after == Some(i) {
                list.compact(SystemTime::now()).await.expect("compacted");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// Two replicas take opt-outs at the same time (each also compacting at a random moment):
        /// afterwards both, and a replica started fresh, hold every one of them.
        #[test]
        fn concurrent_writers_on_one_bucket_lose_no_opt_out(a in plan(), b in plan()) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = bucket_store().await;
                let (one, two) = (Arc::new(replica(&store).await), Arc::new(replica(&store).await));
                let writers = [
                    tokio::spawn(write(one.clone(), a.clone())),
                    tokio::spawn(write(two.clone(), b.clone())),
                ];
                for w in writers {
                    w.await.expect("writer");
                }
                one.catch_up().await.expect("catch up");
                two.catch_up().await.expect("catch up");
                let fresh = replica(&store).await;
                for n in a.emails.iter().chain(&b.emails) {
                    let id = email(&format!("w{n}@example.com"));
                    for (who, list) in [("one", &*one), ("two", &*two), ("fresh", &fresh)] {
                        assert!(list.is_excluded(&id), "w{n} missing at {who}");
                    }
                }
            });
        }
    }

    /// A replica on an empty bucket reports the list as new; one opened after an opt-out loads it,
    /// and both know they must follow the shared listing.
    #[tokio::test]
    async fn a_replica_reports_a_new_list_only_on_an_empty_bucket() {
        let store = bucket_store().await;
        let (first, report) =
            ExclusionList::open_store(&store, key(), DEFAULT_RETENTION_DAYS, SystemTime::now())
                .await
                .expect("open");
        assert!(report.created, "{report:?}");
        assert!(first.is_shared());
        assert_eq!(first.stats().await.log_bytes, 0);
        first
            .add(&[email("ada@example.com")], Origin::Api)
            .await
            .expect("added");
        assert_eq!(
            first.stats().await.log_bytes,
            32 + 56,
            "its own segment counts before any listing"
        );
        let (second, report) =
            ExclusionList::open_store(&store, key(), DEFAULT_RETENTION_DAYS, SystemTime::now())
                .await
                .expect("open");
        assert!(!report.created, "{report:?}");
        assert_eq!((report.records, report.entries), (1, 1));
        assert!(second.is_excluded(&email("ada@example.com")));
        let records: Vec<_> = second
            .records()
            .await
            .expect("records")
            .collect::<Result<_, _>>()
            .expect("readable");
        assert_eq!(records.len(), 1);
    }

    /// A follower leaves up to `COMPACT_AT` segments alone and compacts once there are more.
    #[tokio::test]
    async fn a_follower_compacts_only_past_the_segment_threshold() {
        use crate::store::ObjectPath;
        use crate::store::watch::Listing;
        let store = bucket_store().await;
        let writer = replica(&store).await;
        let follower = replica(&store).await;
        let state = ObjectPath::from("state");
        let follow_once = |listed: Vec<crate::store::ObjectMeta>| {
            follower.follow(Listing::at(listed, std::time::Instant::now()).once())
        };
        let hashes: Vec<Hashed> = (0..=COMPACT_AT)
            .map(|i| {
                writer
                    .hash(&email(&format!("s{i}@example.com")))
                    .expect("personal")
            })
            .collect();
        for h in &hashes[..COMPACT_AT] {
            writer
                .add_hashes(std::slice::from_ref(h), Origin::Api)
                .await
                .expect("added");
        }
        let listed = store.objects().list(&state).await.expect("listing");
        assert_eq!(named(&listed, "segment-"), COMPACT_AT);
        follow_once(listed).await;
        let listed = store.objects().list(&state).await.expect("listing");
        assert_eq!(named(&listed, "segment-"), COMPACT_AT, "at the threshold");
        assert_eq!(named(&listed, "snapshot-"), 0);

        writer
            .add_hashes(&hashes[COMPACT_AT..], Origin::Api)
            .await
            .expect("added");
        let listed = store.objects().list(&state).await.expect("listing");
        follow_once(listed).await;
        let listed = store.objects().list(&state).await.expect("listing");
        assert_eq!(named(&listed, "segment-"), 0, "past the threshold");
        assert_eq!(named(&listed, "snapshot-"), 1);
        assert!(follower.is_excluded(&email(&format!("s{COMPACT_AT}@example.com"))));
        assert_eq!(follower.stats().await.entries, COMPACT_AT as u64 + 1);
    }

    /// What a replica's reads of `state/exclusion/` cost: the stored list read directly, counting the
    /// objects each catch-up reads.
    mod reads {
        use super::*;
        use crate::exclusion::remote::{CREATE_ATTEMPTS, Read, Remote};
        use crate::store::{ObjectMeta, ObjectPath};

        async fn catch_up(remote: &Remote, visited: &mut Vec<Record>) -> Read {
            remote
                .catch_up(&mut |r| visited.push(r))
                .await
                .expect("catch up")
        }

        async fn listed(store: &Store) -> Vec<ObjectMeta> {
            store
                .objects()
                .list(&ObjectPath::from("state/exclusion"))
                .await
                .expect("listing")
        }

        fn name(meta: &ObjectMeta) -> &str {
            meta.location.filename().unwrap_or_default()
        }

        /// A snapshot is read whole only when it holds records this replica never applied: the first
        /// one it sees, or one that includes a segment it never read; the next generation of what it
        /// already holds costs no read of records at all.
        #[tokio::test]
        async fn a_snapshot_is_read_only_when_it_holds_records_never_applied() {
            let store = bucket_store().await;
            let writer = replica(&store).await;
            let remote = Remote::new(store.objects().clone(), key().key_id());
            let mut visited = Vec::new();
            let add = |n: usize| {
                let writer = &writer;
                async move {
                    writer
                        .add(&[email(&format!("r{n}@example.com"))], Origin::Api)
                        .await
                        .expect("added");
                }
            };

            add(0).await;
            writer.compact(SystemTime::now()).await.expect("compact");
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!((read.records, read.objects), (1, 1), "the first snapshot");
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!((read.records, read.objects), (0, 0), "nothing new");

            add(1).await;
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!((read.records, read.objects), (1, 1), "one new segment");
            writer.compact(SystemTime::now()).await.expect("compact");
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!(
                (read.records, read.objects),
                (0, 0),
                "the next snapshot includes only the segment already applied"
            );

            add(2).await;
            writer.compact(SystemTime::now()).await.expect("compact");
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!(
                (read.records, read.objects),
                (3, 1),
                "the next snapshot includes a segment never read"
            );
            assert_eq!(visited.len(), 5);
            let listed = listed(&store).await;
            let total: u64 = listed.iter().map(|m| m.size).sum();
            assert_eq!(listed.len(), 1, "one snapshot left");
            assert_eq!(remote.bytes().await, total);
        }

        /// A replica that applied every segment a snapshot includes, but never saw the generation
        /// before it, still reads it: the skipped generation may hold records it never applied.
        #[tokio::test]
        async fn a_skipped_generation_is_read_even_when_its_covers_were_applied() {
            let store = bucket_store().await;
            let writer = replica(&store).await;
            let remote = Remote::new(store.objects().clone(), key().key_id());
            let mut visited = Vec::new();
            writer
                .add(&[email("early@example.com")], Origin::Api)
                .await
                .expect("added");
            writer.compact(SystemTime::now()).await.expect("compact");
            writer
                .add(&[email("late@example.com")], Origin::Api)
                .await
                .expect("added");
            // A listing that shows the new segment but not the snapshot (a paged listing may).
            let all = listed(&store).await;
            let segment: Vec<&ObjectMeta> = all
                .iter()
                .filter(|m| name(m).starts_with("segment-"))
                .collect();
            assert_eq!(segment.len(), 1);
            let read = remote
                .follow(segment.iter().map(|m| (name(m), *m)), &mut |r| {
                    visited.push(r)
                })
                .await
                .expect("follow");
            assert_eq!((read.records, read.objects), (1, 1));
            writer.compact(SystemTime::now()).await.expect("compact");

            let read = catch_up(&remote, &mut visited).await;
            assert_eq!(
                (read.records, read.objects),
                (2, 1),
                "generation 2 read whole"
            );
            let early = writer.hash(&email("early@example.com")).expect("personal");
            assert!(visited.iter().any(|r| r.hashed == early));
        }

        /// A segment name that is taken is replaced by a fresh one, a few times; a store that refuses
        /// every create fails the opt-out after `CREATE_ATTEMPTS` tries instead of being asked forever.
        #[tokio::test]
        async fn a_store_that_refuses_every_create_fails_the_write_after_a_few_names() {
            let moto = crate::testkit::moto();
            let url = crate::store::StoreUrl::parse(&format!("s3://{}/x", moto.bucket().await))
                .expect("url");
            let metrics = Arc::new(Metrics::new());
            let store = Store::open(&url, &moto.secrets(), metrics.clone()).expect("store");
            let remote = Remote::new(store.objects().clone(), key().key_id())
                .with_names(|| "segment-00000000000000000001-0000000000000000".into());
            let record = Record {
                key_version: 1,
                hashed: Hashed::full(IdentifierKind::Email, [1; 32]).expect("personal"),
                origin: Origin::Api,
                timestamp: T0,
            };
            let creates = || {
                metrics
                    .render()
                    .lines()
                    .find(|l| l.contains("put_create") && !l.starts_with('#'))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0)
            };
            let limit = Duration::from_secs(20);
            tokio::time::timeout(limit, remote.append(&[record]))
                .await
                .expect("not stuck")
                .expect("the first segment");
            assert_eq!(creates(), 1);
            let refused = tokio::time::timeout(limit, remote.append(&[record]))
                .await
                .expect("gives up rather than retrying forever");
            assert!(
                matches!(
                    refused,
                    Err(RemoteError::Store(
                        crate::store::StoreError::AlreadyExists { .. }
                    ))
                ),
                "{refused:?}"
            );
            assert_eq!(creates(), 1 + CREATE_ATTEMPTS);
        }

        /// Covers longer than the first ranged read are read with a second one (tests read 64 bytes
        /// first, so two segment names are already longer).
        #[tokio::test]
        async fn covers_longer_than_the_first_read_are_read_whole() {
            let store = bucket_store().await;
            let writer = replica(&store).await;
            add_each(&writer, "long", 4).await;
            writer.compact(SystemTime::now()).await.expect("compact");
            let remote = Remote::new(store.objects().clone(), key().key_id());
            let mut visited = Vec::new();
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!((read.records, read.objects), (4, 1));
            // Its covers name the four segments: the next generation, including none of them,
            // needs no read.
            writer.compact(SystemTime::now()).await.expect("compact");
            let read = catch_up(&remote, &mut visited).await;
            assert_eq!((read.records, read.objects), (0, 0));
        }
    }

    /// Writing an entry again restarts its retention on a shared store too: compaction keeps an entry
    /// by its newest record, and reports how many entries it dropped.
    #[tokio::test]
    async fn compaction_keeps_an_entry_by_its_newest_record() {
        let store = bucket_store().await;
        let now = Arc::new(AtomicU64::new(T0));
        let clock = now.clone();
        let list = replica(&store)
            .await
            .with_clock(move || at(clock.load(Ordering::SeqCst)));
        list.add(
            &[email("ada@example.com"), email("bob@example.com")],
            Origin::Api,
        )
        .await
        .expect("added");
        now.store(T0 + 1000 * 86_400, Ordering::SeqCst);
        let again = list
            .add(&[email("ada@example.com")], Origin::Api)
            .await
            .expect("added again");
        assert_eq!(again.already_present, 1);

        let removed = list.compact(at(T0 + 1100 * 86_400)).await.expect("compact");
        assert_eq!(removed, 1, "bob's only record is past retention");
        assert!(list.is_excluded(&email("ada@example.com")));
        assert!(!list.is_excluded(&email("bob@example.com")));
        let fresh = ExclusionList::open_store(
            &store,
            key(),
            DEFAULT_RETENTION_DAYS,
            at(T0 + 1100 * 86_400),
        )
        .await
        .expect("open")
        .0;
        assert!(fresh.is_excluded(&email("ada@example.com")));
        assert_eq!(fresh.stats().await.entries, 1);
    }

    #[tokio::test]
    async fn a_stored_list_written_with_another_key_is_refused() {
        let store = bucket_store().await;
        replica(&store)
            .await
            .add(&[email("ada@example.com")], Origin::Api)
            .await
            .expect("added");
        let err = ExclusionList::open_store(
            &store,
            ExclusionKey::from_bytes([1; 32]),
            DEFAULT_RETENTION_DAYS,
            SystemTime::now(),
        )
        .await
        .expect_err("another key");
        assert!(err.to_string().contains("ENRICHD_EXCLUSION_KEY"), "{err}");
    }

    #[tokio::test]
    async fn a_follower_that_missed_compacted_segments_reads_the_snapshot() {
        let store = bucket_store().await;
        let writer = replica(&store).await;
        let reader = replica(&store).await;
        add_each(&writer, "c", 5).await;
        // The writer compacts twice before the reader looks: the segments are gone, and the newest
        // snapshot's covers do not name them all.
        writer.compact(SystemTime::now()).await.expect("compact");
        writer
            .add(&[email("late@example.com")], Origin::Api)
            .await
            .expect("added");
        writer.compact(SystemTime::now()).await.expect("compact");
        assert_eq!(reader.catch_up().await.expect("catch up"), 6);
        assert!(reader.is_excluded(&email("c0@example.com")));
        assert!(reader.is_excluded(&email("late@example.com")));
        assert_eq!(writer.stats().await.entries, 6);
    }

    /// Following applies what another replica added as the shared listing shows it, and leaves a
    /// handful of segments alone (compacting is for when there are many).
    #[tokio::test]
    async fn a_follower_applies_another_replicas_opt_outs_from_a_listing() {
        use crate::store::ObjectPath;
        use crate::store::watch::Listing;
        let store = bucket_store().await;
        let writer = replica(&store).await;
        let reader = replica(&store).await;
        add_each(&writer, "f", 2).await;
        let state = ObjectPath::from("state");
        let listed = store.objects().list(&state).await.expect("listing");
        assert_eq!(named(&listed, "segment-"), 2);
        assert!(!reader.is_excluded(&email("f0@example.com")));

        reader
            .follow(Listing::at(listed, std::time::Instant::now()).once())
            .await;

        assert!(reader.is_excluded(&email("f0@example.com")));
        assert!(reader.is_excluded(&email("f1@example.com")));
        let after = store.objects().list(&state).await.expect("listing");
        assert_eq!(
            named(&after, "segment-"),
            2,
            "two segments are not compacted"
        );
    }
}

#[test]
fn the_list_reports_the_key_it_writes_with_and_its_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let versioned = key().with_version(7);
    let id = versioned.key_id_hex();
    let (list, _) = ExclusionList::open(dir.path(), versioned, 30, at(T0)).expect("open list");
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_ne!(id, ExclusionKey::from_bytes([43; 32]).key_id_hex());
    assert_eq!(list.key_id(), id);
    assert_eq!(list.key_version(), 7);
    assert_eq!(list.retention_days(), 30);
    assert_eq!(key().version(), crate::exclusion::key::DEFAULT_KEY_VERSION);
}

#[test]
fn only_a_held_log_is_locked_and_only_an_unreachable_store_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_list, _) = open(dir.path());
    let locked =
        ExclusionList::open(dir.path(), key(), DEFAULT_RETENTION_DAYS, at(T0)).expect_err("locked");
    assert!(!locked.is_unavailable(), "{locked}");
    let stopped = ExclusionError::Join("gone".into());
    assert!(!stopped.is_locked() && !stopped.is_unavailable());
}

/// Retention counts whole days back from `now`, inclusive: a record exactly `retention_days` old is
/// still enforced, by the server's list and by the read-only snapshot alike; a second older is not.
#[tokio::test]
async fn an_entry_exactly_at_the_end_of_retention_is_still_enforced() {
    let dir = tempfile::tempdir().expect("temp dir");
    added_at_t0(dir.path(), "edge@example.com").await;
    let end = T0 + u64::from(DEFAULT_RETENTION_DAYS) * 86_400;
    let (list, report) = reopen(dir.path(), DEFAULT_RETENTION_DAYS, at(end));
    assert_eq!((report.entries, report.expired), (1, 0));
    assert!(list.is_excluded(&email("edge@example.com")));
    drop(list);
    let (snapshot, report) =
        ExclusionSnapshot::load(dir.path(), &key(), DEFAULT_RETENTION_DAYS, at(end)).expect("load");
    assert_eq!((report.entries, report.expired), (1, 0));
    assert!(snapshot.is_excluded(&email("edge@example.com")));
    let (snapshot, report) =
        ExclusionSnapshot::load(dir.path(), &key(), DEFAULT_RETENTION_DAYS, at(end + 1))
            .expect("load");
    assert_eq!((report.entries, report.expired), (0, 1));
    assert!(!snapshot.is_excluded(&email("edge@example.com")));
}

/// The audit export reads every durable record, oldest first, and a read-only snapshot reports a
/// version that never moves.
#[tokio::test]
async fn the_export_reads_every_record_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    let clock = Arc::new(AtomicU64::new(T0));
    let ticking = clock.clone();
    let list = list.with_clock(move || at(ticking.load(Ordering::SeqCst)));
    list.add(&[email("one@example.com")], Origin::Api)
        .await
        .expect("added");
    clock.store(T0 + 5, Ordering::SeqCst);
    list.add(&[phone("+33612345678")], Origin::PublicForm)
        .await
        .expect("added");
    let records = list.records().await.expect("records");
    let read: Vec<(u64, IdentifierKind)> = tokio::task::spawn_blocking(move || {
        records
            .map(|r| r.map(|r| (r.timestamp, r.kind())))
            .collect::<Result<_, _>>()
    })
    .await
    .expect("reader")
    .expect("readable");
    assert_eq!(
        read,
        vec![(T0, IdentifierKind::Email), (T0 + 5, IdentifierKind::Phone)]
    );
    assert!(!list.is_shared(), "a local log is this process's alone");

    let (snapshot, _) =
        ExclusionSnapshot::load(dir.path(), &key(), DEFAULT_RETENTION_DAYS, at(T0)).expect("load");
    let version = snapshot.version();
    assert!(version.is_some(), "a snapshot is versioned");
    assert_eq!(snapshot.version(), version);
}

/// The list's debug form names counts and settings, never an identifier or a hash.
#[tokio::test]
async fn the_debug_form_counts_entries_and_names_no_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) = open(dir.path());
    list.add(&[email("quiet@example.com")], Origin::Api)
        .await
        .expect("added");
    let shown = format!("{list:?}");
    assert!(shown.contains("entries: 1"), "{shown}");
    assert!(shown.contains("retention_days: 1095"), "{shown}");
    let prefix = list.hash_prefix(&email("quiet@example.com"));
    assert!(
        !shown.contains("quiet") && !shown.contains(&prefix),
        "{shown}"
    );
}

#[test]
fn a_store_that_cannot_be_reached_is_unavailable() {
    let unreachable =
        ExclusionError::Remote(RemoteError::Store(crate::store::StoreError::Failed {
            path: "state/exclusion".into(),
            source: object_store::Error::Generic {
                store: "test",
                source: "connection refused".into(),
            },
        }));
    assert!(unreachable.is_unavailable());
    assert!(!unreachable.is_locked());
    let missing = ExclusionError::Remote(RemoteError::Store(crate::store::StoreError::NotFound {
        path: "state/exclusion".into(),
    }));
    assert!(!missing.is_unavailable());
}
