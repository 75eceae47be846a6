//! The audit log: what the service did, with no personal data, append-only in the store.
//!
//! Each event is one immutable object, `audit/<millis>-<random>` (milliseconds since the epoch, 13
//! digits, then 64 random bits as hex), created with [`Objects::create`]: replicas appending at the
//! same moment never overwrite each other, and the names sort by time. Nothing rewrites or deletes an
//! event. An event carries ids, counts, kinds and hashes only: a receipt id and the kinds of
//! identifiers of an opt-out (never the identifiers or their hashes), a batch id and its counts (never
//! a tenant, a row or a cell), a key id and role, the hash of a configuration.
//!
//! Recording is best effort: an event that cannot be written is logged as a warning and the
//! operation it describes goes on (an opt-out is never refused because its audit line failed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{ObjectPath, Objects, StoreError};

const DIR: &str = "audit";

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A public or command-line opt-out was recorded.
    OptOutReceived {
        receipt: String,
        /// The channel: `public_form`, `api` or `cli`.
        origin: String,
        /// The kinds of the identifiers given (`email`, `phone`, ...), sorted.
        kinds: Vec<String>,
        /// Entries that were not on the list before (given and found through verified links).
        added: usize,
    },
    /// An admin bulk import into the exclusion list.
    ExclusionsImported {
        receipt: String,
        added: usize,
        already_present: usize,
    },
    BatchCreated {
        batch: String,
        rows: u64,
    },
    BatchFinished {
        batch: String,
        status: String,
        rows: u64,
        found: u64,
        errors: u64,
    },
    BatchDownloaded {
        batch: String,
        format: String,
    },
    BatchDeleted {
        batch: String,
    },
    BatchExpired {
        batch: String,
    },
    KeyCreated {
        key_id: String,
        role: String,
    },
    KeyRevoked {
        key_id: String,
    },
    /// A process loaded its configuration: the first 16 bytes of its blake3 hash, as hex.
    ConfigLoaded {
        config_hash: String,
    },
}

/// An event with its time, as stored and exported (one NDJSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, milliseconds, UTC.
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// The audit log on the store. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    objects: Objects,
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// The time in an object's name.
fn time_of(name: &str) -> Option<u128> {
    name.split_once('-')?.0.parse().ok()
}

impl AuditLog {
    pub fn new(objects: Objects) -> Self {
        Self { objects }
    }

    /// Appends `event` at the current time; a failure is logged, not returned.
    pub async fn record(&self, event: Event) {
        if let Err(e) = self.append(SystemTime::now(), &event).await {
            tracing::warn!(error = %e, "An audit event could not be written.");
        }
    }

    /// Appends `event` as of `at`.
    pub async fn append(&self, at: SystemTime, event: &Event) -> Result<(), StoreError> {
        let record = Record {
            at: humantime::format_rfc3339_millis(at).to_string(),
            event: event.clone(),
        };
        // Plain strings and numbers: serialising cannot fail.
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let name = format!("{:013}-{:016x}", millis(at), rand::random::<u64>());
        self.objects
            .create(
                &ObjectPath::from(format!("{DIR}/{name}")),
                Bytes::from(body),
            )
            .await
            .map(drop)
    }

    /// The events from `since` (inclusive) to `until` (exclusive), oldest first. An object that is
    /// not an event is skipped with a warning.
    pub async fn read(
        &self,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    ) -> Result<Vec<Record>, StoreError> {
        let (from, to) = (since.map(millis), until.map(millis));
        let mut names: Vec<(u128, ObjectPath)> = self
            .objects
            .list(&ObjectPath::from(DIR))
            .await?
            .into_iter()
            .filter_map(|m| Some((time_of(m.location.filename()?)?, m.location)))
            .filter(|(t, _)| from.is_none_or(|f| *t >= f) && to.is_none_or(|u| *t < u))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for (_, path) in names {
            let got = match self.objects.get(&path).await {
                Ok(got) => got,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice(&got.bytes) {
                Ok(record) => out.push(record),
                Err(e) => {
                    tracing::warn!(error = %e, "An object under audit/ is not an audit event; skipped.")
                }
            }
        }
        Ok(out)
    }
}

/// The form of an RFC 3339 time the HTTP export takes (the document's `pattern`).
pub const RFC3339_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";

/// Parses an RFC 3339 time of [`RFC3339_PATTERN`]'s form that exists in the calendar
/// (`2026-12-01T00:00:00Z`, any offset; a time before 1970 counts as 1970): the HTTP export's
/// filters.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    static FORM: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(RFC3339_PATTERN).ok());
    let refused = || "expected an RFC 3339 time such as 2026-12-01T00:00:00Z".to_string();
    if !FORM.as_ref().is_some_and(|form| form.is_match(text)) {
        return Err(refused());
    }
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|_| refused())?
        .with_timezone(&chrono::Utc);
    let secs = u64::try_from(t.timestamp()).unwrap_or(0);
    Ok(UNIX_EPOCH
        + Duration::from_secs(secs)
        + Duration::from_nanos(u64::from(t.timestamp_subsec_nanos())))
}

/// Parses a time filter on the command line: RFC 3339 (see [`parse_rfc3339`]), a date alone, or a
/// duration before `now` (`24h`, `7days`).
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")) {
        return Ok(t);
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d: Duration| now.checked_sub(d))
        .ok_or_else(|| {
            "expected an RFC 3339 time (2026-12-01T00:00:00Z), a date (2026-12-01) or a duration \
             before now (24h, 7days)"
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn events_read_back_in_time_order_within_the_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        let log = AuditLog::new(store.objects().clone());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        for (s, batch) in [(20, "b2"), (10, "b1"), (30, "b3")] {
            let event = Event::BatchDeleted {
                batch: batch.into(),
            };
            log.append(at(s), &event).await.expect("append");
        }
        // Two appends in the same millisecond are two events.
        let same = Event::BatchExpired { batch: "b4".into() };
        log.append(at(40), &same).await.expect("append");
        log.append(at(40), &same).await.expect("append");

        let all = log.read(None, None).await.expect("read");
        let batches: Vec<String> = all
            .iter()
            .map(|r| serde_json::to_value(r).expect("json")["batch"].to_string())
            .collect();
        assert_eq!(batches, ["\"b1\"", "\"b2\"", "\"b3\"", "\"b4\"", "\"b4\""]);
        let window = log.read(Some(at(20)), Some(at(30))).await.expect("read");
        assert_eq!(window.len(), 1);
        assert_eq!(window[0].event, Event::BatchDeleted { batch: "b2".into() });
        assert_eq!(window[0].at, "2027-01-15T08:00:20.000Z");
    }

    #[test]
    fn time_filters_take_rfc3339_dates_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_time("1970-01-02", now),
            Ok(UNIX_EPOCH + Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_time("24h", now),
            Ok(now - Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_time("1970-01-01T02:00:00+01:00", now),
            Ok(UNIX_EPOCH + Duration::from_secs(3600))
        );
        assert_eq!(parse_time("1969-12-31T23:00:00Z", now), Ok(UNIX_EPOCH));
        assert!(parse_time("yesterday", now).is_err());
        assert!(
            parse_rfc3339("2026-02-30T00:00:00Z").is_err(),
            "not in the calendar"
        );
        assert!(parse_rfc3339("0").is_err() && parse_rfc3339("2026-12-01").is_err());
    }
}
