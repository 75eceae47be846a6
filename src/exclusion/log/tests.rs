use super::format::{HEADER_LEN, RECORD_LEN};
use super::*;
use crate::domain::IdentifierKind;
use crate::exclusion::entry::{Hashed, Origin};

const KEY_ID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn record(n: u8, timestamp: u64) -> Record {
    Record {
        key_version: 1,
        hashed: Hashed::full(IdentifierKind::Email, [n; 32]).expect("personal"),
        origin: Origin::Api,
        timestamp,
    }
}

fn try_open(dir: &Path) -> Result<(ExclusionLog, Opened, Vec<Record>), LogError> {
    let mut seen = Vec::new();
    let (log, opened) = ExclusionLog::open(dir, KEY_ID, |r| seen.push(r))?;
    Ok((log, opened, seen))
}

/// Opens the log, waiting out a lock held by nobody in this test (see
/// [`crate::testkit::open_waiting_out_spawns`]).
fn open(dir: &Path) -> Result<(ExclusionLog, Opened, Vec<Record>), LogError> {
    crate::testkit::open_waiting_out_spawns(
        || try_open(dir),
        |e| matches!(e, LogError::Locked { .. }),
    )
}

/// A log holding records 1..=n, then closed.
fn log_with(n: u8) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _, _) = open(dir.path()).expect("create");
    let records: Vec<Record> = (1..=n).map(|i| record(i, 1000)).collect();
    log.append(&records).expect("append");
    let path = log.path().to_path_buf();
    (dir, path)
}

#[test]
fn appended_records_are_read_back_in_order() {
    let (dir, _) = log_with(3);
    let (log, opened, seen) = open(dir.path()).expect("reopen");
    assert_eq!(
        seen,
        vec![record(1, 1000), record(2, 1000), record(3, 1000)]
    );
    assert_eq!(
        (opened.created, opened.records, opened.torn_bytes),
        (false, 3, 0)
    );
    assert_eq!(log.len_bytes(), (HEADER_LEN + 3 * RECORD_LEN) as u64);
}

#[test]
fn a_new_log_is_created_with_only_a_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, opened, seen) = open(dir.path()).expect("create");
    assert!(opened.created);
    assert!(seen.is_empty());
    assert_eq!(
        fs::metadata(log.path()).expect("file").len(),
        HEADER_LEN as u64
    );
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![LOCK_FILE_NAME, LOG_FILE_NAME],
        "no temporary file is left behind"
    );
}

#[test]
fn a_torn_last_record_is_truncated_at_every_byte_offset() {
    let (dir, path) = log_with(4);
    let whole = fs::read(&path).expect("read");
    let last = HEADER_LEN + 3 * RECORD_LEN;
    for cut in last + 1..whole.len() {
        fs::write(&path, &whole[..cut]).expect("tear");
        let (log, opened, seen) = open(dir.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(seen.len(), 3, "cut at {cut}");
        assert_eq!(opened.torn_records, 1, "cut at {cut}");
        assert_eq!(opened.torn_bytes, (cut - last) as u64);
        assert_eq!(fs::metadata(&path).expect("file").len(), last as u64);
        drop(log);
    }
}

#[test]
fn a_damaged_last_record_is_truncated_at_every_byte() {
    let (dir, path) = log_with(4);
    let whole = fs::read(&path).expect("read");
    let last = HEADER_LEN + 3 * RECORD_LEN;
    for byte in last..whole.len() {
        let mut damaged = whole.clone();
        damaged[byte] ^= 0x01;
        fs::write(&path, &damaged).expect("damage");
        let (recovered, opened, seen) =
            open(dir.path()).unwrap_or_else(|e| panic!("byte {byte}: {e}"));
        drop(recovered);
        assert_eq!((seen.len(), opened.torn_records), (3, 1), "byte {byte}");
        // Appends after recovery land right after the good records.
        let (mut log, _, _) = open(dir.path()).expect("reopen");
        log.append(&[record(9, 1)]).expect("append after recovery");
        drop(log);
        let (_, _, seen) = open(dir.path()).expect("reopen again");
        assert_eq!(seen.last(), Some(&record(9, 1)));
    }
}

#[test]
fn a_zero_filled_tail_from_a_crash_is_truncated() {
    let (dir, path) = log_with(2);
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0u8; RECORD_LEN * 3 + 7]);
    fs::write(&path, &bytes).expect("extend");
    let (_, opened, seen) = open(dir.path()).expect("recover");
    assert_eq!((seen.len(), opened.torn_records), (2, 4));
}

#[test]
fn a_corrupted_middle_record_is_refused_with_its_offset() {
    let (dir, path) = log_with(4);
    let mut bytes = fs::read(&path).expect("read");
    let second = HEADER_LEN + RECORD_LEN;
    bytes[second + 20] ^= 0xff;
    fs::write(&path, &bytes).expect("corrupt");
    let err = open(dir.path()).expect_err("corruption must be refused");
    let msg = err.to_string();
    assert!(matches!(err, LogError::Corrupt { offset, .. } if offset == second as u64));
    assert!(msg.contains(&format!("byte offset {second}")), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(
        fs::read(&path).expect("read"),
        bytes,
        "a refused file is left as it was"
    );
}

#[test]
fn another_key_id_is_refused() {
    let (dir, _) = log_with(1);
    let err = ExclusionLog::open(dir.path(), [9; 8], |_| {}).expect_err("wrong key");
    assert!(matches!(err, LogError::KeyMismatch { .. }));
    assert!(err.to_string().contains(&hex::encode(KEY_ID)));
}

#[test]
fn a_file_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(LOG_FILE_NAME);
    for content in [&b"short"[..], &[b'x'; 100][..]] {
        fs::write(&path, content).expect("write");
        let err = open(dir.path()).expect_err("not a log");
        assert!(matches!(err, LogError::BadHeader { .. }), "{err}");
    }
}

#[test]
fn compaction_keeps_accepted_records_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _, _) = open(dir.path()).expect("create");
    log.append(&[
        record(1, 100),
        record(2, 500),
        record(3, 50),
        record(4, 900),
    ])
    .expect("append");
    let mut kept = Vec::new();
    let stats = log
        .compact(|r| r.timestamp >= 100, |r| kept.push(r))
        .expect("compact");
    assert_eq!((stats.kept, stats.removed), (3, 1));
    assert_eq!(kept, vec![record(1, 100), record(2, 500), record(4, 900)]);
    log.append(&[record(5, 1000)])
        .expect("append after compaction");
    drop(log);
    let (_, _, seen) = open(dir.path()).expect("reopen");
    assert_eq!(
        seen,
        vec![
            record(1, 100),
            record(2, 500),
            record(4, 900),
            record(5, 1000)
        ]
    );
    assert!(!dir.path().join(COMPACT_TMP).exists());
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut first, _, _) = open(dir.path()).expect("create");

    let err = try_open(dir.path()).expect_err("second writer");

    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another running enrichd process"));
    first
        .append(&[record(1, 1)])
        .expect("the first writer is unaffected");
    drop(first);
    let (_, _, seen) = open(dir.path()).expect("free again once the first is dropped");
    assert_eq!(seen, vec![record(1, 1)]);
}

#[test]
fn the_writer_lock_survives_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _, _) = open(dir.path()).expect("create");
    log.append(&[record(1, 1), record(2, 5)]).expect("append");
    log.compact(|r| r.timestamp > 2, |_| {}).expect("compact");

    assert!(matches!(try_open(dir.path()), Err(LogError::Locked { .. })));
}

#[test]
fn a_read_only_reader_needs_no_lock_and_repairs_nothing() {
    let (dir, path) = log_with(2);
    let (_writer, _, _) = open(dir.path()).expect("writer holds the lock");
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0xAB; 20]);
    fs::write(&path, &bytes).expect("tear");

    let mut seen = Vec::new();
    let opened = ExclusionLog::read_only(dir.path(), KEY_ID, |r| seen.push(r))
        .expect("read")
        .expect("the log exists");

    assert_eq!(seen, vec![record(1, 1000), record(2, 1000)]);
    assert_eq!(
        (opened.records, opened.torn_records, opened.torn_bytes),
        (2, 1, 20)
    );
    assert_eq!(fs::read(&path).expect("read"), bytes, "left as it was");
    let empty = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        ExclusionLog::read_only(empty.path(), KEY_ID, |_| {}).expect("absent"),
        None
    );
    assert!(
        !empty.path().join(LOG_FILE_NAME).exists(),
        "nothing created"
    );
}

#[test]
fn a_read_only_reader_refuses_corruption_and_another_key() {
    let (dir, path) = log_with(3);
    assert!(matches!(
        ExclusionLog::read_only(dir.path(), [9; 8], |_| {}),
        Err(LogError::KeyMismatch { .. })
    ));
    let mut bytes = fs::read(&path).expect("read");
    bytes[HEADER_LEN + 10] ^= 0xff;
    fs::write(&path, &bytes).expect("corrupt");
    assert!(matches!(
        ExclusionLog::read_only(dir.path(), KEY_ID, |_| {}),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn records_reads_back_what_was_written_up_to_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _, _) = open(dir.path()).expect("create");
    log.append(&[record(1, 10), record(2, 20)]).expect("append");

    let reader = log.records().expect("reader");
    log.append(&[record(3, 30)]).expect("append after");
    let read: Vec<Record> = reader.collect::<Result<_, _>>().expect("records");

    assert_eq!(read, vec![record(1, 10), record(2, 20)]);
}

/// Only a missing log reads as an empty list; a log that exists but cannot be opened is an error,
/// never silently "nobody opted out".
#[test]
fn a_read_only_reader_refuses_a_log_it_cannot_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(LOG_FILE_NAME);
    assert!(
        ExclusionLog::read_only(dir.path(), KEY_ID, |_| {})
            .expect("absent")
            .is_none()
    );
    // A link to itself: opening it fails with ELOOP, which no permission bit can undo (tests run as
    // root too).
    std::os::unix::fs::symlink(&path, &path).expect("symlink");
    let err = ExclusionLog::read_only(dir.path(), KEY_ID, |_| {}).expect_err("unopenable");
    assert!(err.to_string().contains("exclusion.log"), "{err}");
}
