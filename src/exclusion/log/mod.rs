//! The append-only exclusion log: the durable half of the exclusion list.
//!
//! One file, `<data_dir>/exclusion.log`: a header naming the key it was written with, then fixed-size
//! records, each with its own checksum (layout in [`format`]). Rules:
//! - the file is created atomically (temporary file, fsync, rename, fsync of the directory), so a header
//!   is never torn;
//! - [`ExclusionLog::append`] writes a batch and fsyncs before returning; a failed write is rolled back
//!   (truncated to the previous length) so the next append never lands after garbage;
//! - on open, bad or incomplete records at the very end (a write torn by a crash, never acknowledged)
//!   are truncated away and counted; a bad record followed by a valid one is corruption and is refused
//!   with the file and byte offset;
//! - [`ExclusionLog::compact`] rewrites the file without the records a predicate rejects, atomically;
//! - one writer at a time: [`ExclusionLog::open`] takes an advisory exclusive lock on `exclusion.lock`
//!   beside the log (`File::try_lock`) and holds it while the log is open, so a second server or an
//!   `enrichd optout` run against a live server's data directory is refused with [`LogError::Locked`]
//!   instead of writing behind the server's back. The lock is on its own file because compaction
//!   replaces the log file (a lock on the old file would not carry over to the new one);
//! - [`ExclusionLog::read_only`] reads without the lock and repairs nothing, for processes that only
//!   check the list.

pub(crate) mod format;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub use format::Record;
use format::{HEADER_LEN, HeaderProblem, RECORD_LEN, RecordProblem};

use crate::secret::sync_dir;

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "exclusion.log";
const CREATE_TMP: &str = "exclusion.log.new";
const COMPACT_TMP: &str = "exclusion.log.compact";
/// The writer lock's file name. A separate file, because compaction replaces the log file itself.
pub const LOCK_FILE_NAME: &str = "exclusion.lock";

/// Why the log cannot be opened or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot {action} the exclusion log {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is not an enrichd exclusion log: {reason}; refusing to start")]
    BadHeader { path: PathBuf, reason: String },
    #[error(
        "the exclusion log {path} was written with exclusion key id {log_key_id}, but the configured \
         key has id {key_id}; starting with another key would silently un-exclude everyone, so set \
         ENRICHD_EXCLUSION_KEY to the original key"
    )]
    KeyMismatch {
        path: PathBuf,
        log_key_id: String,
        key_id: String,
    },
    #[error(
        "the exclusion log {path} is corrupt at byte offset {offset}: {what}; valid records follow it, \
         so this is not a torn write; restore the file from a backup"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error(
        "the exclusion log {path} is in an unknown state after a failed write; restart enrichd so it \
         can check the file"
    )]
    Poisoned { path: PathBuf },
    #[error(
        "the exclusion log {path} is held by another running enrichd process, and only one process may \
         write it"
    )]
    Locked { path: PathBuf },
}

/// What opening found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    /// The file did not exist and was created.
    pub created: bool,
    /// Valid records read.
    pub records: u64,
    /// Bad or incomplete records at the end, truncated away (a torn, unacknowledged write).
    pub torn_records: u64,
    pub torn_bytes: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub kept: u64,
    pub removed: u64,
}

/// An open exclusion log. Not synchronised: the list serialises access with a mutex.
#[derive(Debug)]
pub struct ExclusionLog {
    dir: PathBuf,
    path: PathBuf,
    key_id: [u8; 8],
    file: File,
    len: u64,
    poisoned: bool,
    /// The directory's writer lock, released when the log is dropped.
    _lock: File,
}

impl ExclusionLog {
    /// Opens (or creates) `<dir>/exclusion.log` for `key_id`, passing every valid record to `visit` in
    /// file order. Takes the directory's writer lock first and holds it for the life of the value: a
    /// second writer, in this process or another, gets [`LogError::Locked`].
    pub fn open(
        dir: &Path,
        key_id: [u8; 8],
        visit: impl FnMut(Record),
    ) -> Result<(Self, Opened), LogError> {
        let path = dir.join(LOG_FILE_NAME);
        let io_err = |action, source| LogError::Io {
            action,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| io_err("create the directory of", e))?;
        let lock = take_lock(dir, &path)?;
        let mut opened = Opened::default();
        if !path.exists() {
            write_new(dir, &path, CREATE_TMP, &format::encode_header(key_id), &[])?;
            opened.created = true;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
        let file_len = file.metadata().map_err(|e| io_err("stat", e))?.len();
        let reader = file.try_clone().map_err(|e| io_err("read", e))?;
        let scanned = scan(reader, &path, file_len, key_id, visit)?;
        opened.records = scanned.records;
        opened.torn_records = scanned.torn_records;
        opened.torn_bytes = scanned.torn_bytes;
        if opened.torn_bytes > 0 {
            file.set_len(scanned.valid_end)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err("truncate the torn tail of", e))?;
        }
        let log = Self {
            dir: dir.to_path_buf(),
            path,
            key_id,
            file,
            len: scanned.valid_end,
            poisoned: false,
            _lock: lock,
        };
        Ok((log, opened))
    }

    /// Reads every valid record of `<dir>/exclusion.log` for a process that only checks (`enrichd
    /// lookup`): no lock, nothing created, nothing repaired. A torn tail (perhaps an append in progress
    /// in the server) is skipped and counted; corruption and another key are refused as in
    /// [`ExclusionLog::open`]. `None` when there is no log.
    pub fn read_only(
        dir: &Path,
        key_id: [u8; 8],
        visit: impl FnMut(Record),
    ) -> Result<Option<Opened>, LogError> {
        let path = dir.join(LOG_FILE_NAME);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LogError::Io {
                    action: "open",
                    path,
                    source,
                });
            }
        };
        let file_len = file
            .metadata()
            .map_err(|source| LogError::Io {
                action: "stat",
                path: path.clone(),
                source,
            })?
            .len();
        let scanned = scan(file, &path, file_len, key_id, visit)?;
        Ok(Some(Opened {
            created: false,
            records: scanned.records,
            torn_records: scanned.torn_records,
            torn_bytes: scanned.torn_bytes,
        }))
    }

    /// The records written so far, read from a fresh handle on the current file, in file order. Records
    /// appended after this call are not included; a compaction after it does not disturb the reader.
    pub fn records(&self) -> Result<Records, LogError> {
        let io_err = |action, source| LogError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let mut reader = BufReader::with_capacity(
            1 << 16,
            File::open(&self.path).map_err(|e| io_err("reopen", e))?,
        );
        check_header(&mut reader, &self.path, self.len, self.key_id)?;
        Ok(Records {
            reader,
            path: self.path.clone(),
            offset: HEADER_LEN as u64,
            end: self.len,
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Appends `records` and fsyncs the file before returning. On failure the file is truncated back
    /// to its previous length; if even that fails the log refuses further appends until reopened.
    pub fn append(&mut self, records: &[Record]) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned {
                path: self.path.clone(),
            });
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * RECORD_LEN);
        for record in records {
            buf.extend_from_slice(&format::encode_record(record));
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                let rolled_back = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                self.poisoned = rolled_back.is_err();
                Err(LogError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Rewrites the log keeping only the records `keep` accepts (each passed to `visit_kept`), via a
    /// temporary file, fsync, rename and directory fsync. On error before the rename the old file is
    /// untouched.
    pub fn compact(
        &mut self,
        keep: impl Fn(&Record) -> bool,
        mut visit_kept: impl FnMut(Record),
    ) -> Result<Compacted, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned {
                path: self.path.clone(),
            });
        }
        let io_err = |action, source| LogError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let mut reader = BufReader::with_capacity(
            1 << 20,
            File::open(&self.path).map_err(|e| io_err("reopen", e))?,
        );
        check_header(&mut reader, &self.path, self.len, self.key_id)?;
        let mut kept = Vec::new();
        let mut stats = Compacted::default();
        let mut buf = [0u8; RECORD_LEN];
        let mut offset = HEADER_LEN as u64;
        while offset + RECORD_LEN as u64 <= self.len {
            reader.read_exact(&mut buf).map_err(|e| io_err("read", e))?;
            let record = format::decode_record(&buf).map_err(|_| LogError::Corrupt {
                path: self.path.clone(),
                offset,
                what: "a record changed on disk after it was checked at start",
            })?;
            if keep(&record) {
                kept.push(buf);
                visit_kept(record);
                stats.kept += 1;
            } else {
                stats.removed += 1;
            }
            offset += RECORD_LEN as u64;
        }
        let header = format::encode_header(self.key_id);
        write_new(&self.dir, &self.path, COMPACT_TMP, &header, &kept)?;
        // The old handle points at the replaced file: reopen, or refuse appends until restart.
        match OpenOptions::new().read(true).append(true).open(&self.path) {
            Ok(file) => {
                self.file = file;
                self.len = (HEADER_LEN + kept.len() * RECORD_LEN) as u64;
                Ok(stats)
            }
            Err(source) => {
                self.poisoned = true;
                Err(io_err("reopen after compacting", source))
            }
        }
    }
}

/// Takes the exclusion directory's advisory writer lock (`exclusion.lock`), without waiting.
fn take_lock(dir: &Path, log_path: &Path) -> Result<File, LogError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| LogError::Io {
            action: "open the lock file beside",
            path: log_path.to_path_buf(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(LogError::Locked {
            path: log_path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(LogError::Io {
            action: "lock",
            path: log_path.to_path_buf(),
            source,
        }),
    }
}

/// What [`scan`] found.
struct Scanned {
    records: u64,
    torn_records: u64,
    torn_bytes: u64,
    /// The length of the valid prefix: header and every good record.
    valid_end: u64,
}

/// Checks the header and reads every record of a `file_len`-byte log, passing the valid ones to
/// `visit`. Bad or incomplete records at the very end are counted as torn; a bad record followed by a
/// good one, or a checksummed record with unknown codes, is corruption.
fn scan(
    file: File,
    path: &Path,
    file_len: u64,
    key_id: [u8; 8],
    mut visit: impl FnMut(Record),
) -> Result<Scanned, LogError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    check_header(&mut reader, path, file_len, key_id)?;
    let mut scanned = Scanned {
        records: 0,
        torn_records: 0,
        torn_bytes: 0,
        valid_end: 0,
    };
    let mut offset = HEADER_LEN as u64;
    let mut first_bad: Option<(u64, &'static str)> = None;
    let mut buf = [0u8; RECORD_LEN];
    while offset + RECORD_LEN as u64 <= file_len {
        reader.read_exact(&mut buf).map_err(|source| LogError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        match format::decode_record(&buf) {
            Ok(record) => {
                if let Some((bad, what)) = first_bad {
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        offset: bad,
                        what,
                    });
                }
                visit(record);
                scanned.records += 1;
            }
            Err(RecordProblem::UnknownCode) => {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    what: "a record with a valid checksum has an unknown kind or origin code \
                           (written by a newer enrichd?)",
                });
            }
            Err(RecordProblem::Checksum) => {
                first_bad.get_or_insert((offset, "record checksum mismatch"));
                scanned.torn_records += 1;
            }
        }
        offset += RECORD_LEN as u64;
    }
    if offset < file_len {
        scanned.torn_records += 1;
    }
    scanned.valid_end = first_bad.map_or(offset, |(bad, _)| bad);
    scanned.torn_bytes = file_len - scanned.valid_end;
    Ok(scanned)
}

/// A reader over the records of a log, from [`ExclusionLog::records`].
pub struct Records {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    end: u64,
}

impl Iterator for Records {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset + RECORD_LEN as u64 > self.end {
            return None;
        }
        let mut buf = [0u8; RECORD_LEN];
        let at = self.offset;
        self.offset += RECORD_LEN as u64;
        if let Err(source) = self.reader.read_exact(&mut buf) {
            self.offset = self.end;
            return Some(Err(LogError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }));
        }
        Some(format::decode_record(&buf).map_err(|_| {
            self.offset = self.end;
            LogError::Corrupt {
                path: self.path.clone(),
                offset: at,
                what: "a record changed on disk after it was checked at start",
            }
        }))
    }
}

/// Reads and checks the header against the expected key id.
fn check_header(
    reader: &mut impl Read,
    path: &Path,
    file_len: u64,
    key_id: [u8; 8],
) -> Result<(), LogError> {
    let bad = |reason: String| LogError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    if file_len < HEADER_LEN as u64 {
        return Err(bad(format!(
            "it is {file_len} bytes, shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let mut header = [0u8; HEADER_LEN];
    reader
        .read_exact(&mut header)
        .map_err(|source| LogError::Io {
            action: "read the header of",
            path: path.to_path_buf(),
            source,
        })?;
    let log_key_id = format::decode_header(&header).map_err(|p| {
        bad(match p {
            HeaderProblem::Magic => "the magic bytes are wrong".to_string(),
            HeaderProblem::Checksum => "the header checksum does not match".to_string(),
            HeaderProblem::Version(v) => format!("format version {v} is not supported"),
            HeaderProblem::RecordSize(s) => format!("record size {s} is not supported"),
        })
    })?;
    if log_key_id != key_id {
        return Err(LogError::KeyMismatch {
            path: path.to_path_buf(),
            log_key_id: hex::encode(log_key_id),
            key_id: hex::encode(key_id),
        });
    }
    Ok(())
}

/// Atomically replaces (or creates) `path` with `header` followed by `records`: write a temporary file
/// in `dir`, fsync it, rename it over `path`, fsync `dir`.
fn write_new(
    dir: &Path,
    path: &Path,
    tmp_name: &str,
    header: &[u8],
    records: &[[u8; RECORD_LEN]],
) -> Result<(), LogError> {
    let tmp = dir.join(tmp_name);
    let io_err = |action, source| LogError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let written = (|| {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(header)?;
        for record in records {
            out.write_all(record)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write a new copy of", source));
    }
    fs::rename(&tmp, path).map_err(|e| io_err("rename the new copy over", e))?;
    sync_dir(dir).map_err(|e| io_err("fsync the directory of", e))
}
