//! API keys, stored as blake3 hashes in the store: one object per key, `state/keys/<key-id>.json`, so
//! that creating or revoking one never races another. Every process follows the store's listing
//! ([`KeyStore::follow`]): a key made or revoked by `enrichd keys` (on this machine, or against the
//! same bucket anywhere) is seen by every running server within about a second. Checks are in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, Event};
use crate::store::watch::{self, Follower};
use crate::store::{ObjectPath, Objects, Store, StoreError};

const KEY_PREFIX: &str = "ek_";
const DIR: &str = "state/keys";

/// What a key may do. Admin keys may also do everything a tenant key may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Tenant,
    Admin,
}

/// The caller behind a valid key. Built once per stored key and shared: every request's check hands
/// out a copy of the same names, without allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: Arc<str>,
    pub role: Role,
    pub key_id: Arc<str>,
}

/// A key as stored, and as `enrichd keys list` shows it (the hash is never shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: KeyInfo,
    /// Hex blake3 of the key. Keys carry 256 random bits, so a fast hash is enough.
    hash: String,
}

/// The file that held every key before keys moved into the store; imported once.
#[derive(Debug, Default, Deserialize)]
struct LegacyFile {
    keys: Vec<Record>,
}

/// A freshly created key: the only moment the plaintext exists.
pub struct NewKey {
    pub key: String,
    pub key_id: String,
    pub tenant: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write API keys in the store: {0}")]
    Store(#[from] StoreError),
    #[error("the stored API key {id} is not valid: {reason}")]
    Parse { id: String, reason: String },
    #[error("cannot import the key file {path}: {reason}")]
    Legacy { path: String, reason: String },
    #[error("tenant name must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    TenantName,
    #[error("no API key has the id {0}; `enrichd keys list` shows the ids")]
    NotFound(String),
}

/// A key's record as stored, its parsed hash, the principal it stands for, and the object version.
struct Stored {
    hash: blake3::Hash,
    record: Record,
    principal: Principal,
    etag: Option<String>,
    /// When this process read or wrote it: a listing asked for before then may not show it yet.
    known_since: std::time::Instant,
}

impl Stored {
    fn new(record: Record, etag: Option<String>) -> Result<Self, KeyError> {
        let hash = blake3::Hash::from_hex(&record.hash).map_err(|_| KeyError::Parse {
            id: record.info.id.clone(),
            reason: "the hash is not 64 hex characters".into(),
        })?;
        let principal = Principal {
            tenant: Arc::from(record.info.tenant.as_str()),
            role: record.info.role,
            key_id: Arc::from(record.info.id.as_str()),
        };
        Ok(Self {
            hash,
            record,
            principal,
            etag,
            known_since: std::time::Instant::now(),
        })
    }
}

/// The API keys. Checks are in memory; changes go to the store first.
pub struct KeyStore {
    objects: Objects,
    records: RwLock<BTreeMap<String, Stored>>,
}

fn path(id: &str) -> ObjectPath {
    ObjectPath::from(format!("{DIR}/{id}.json"))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Tenant => "tenant",
        Role::Admin => "admin",
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl KeyStore {
    /// Loads every key in `store`. On a local store, keys of an older `keys.json` at `legacy` are
    /// imported first (once; the file is then renamed `keys.json.imported`).
    pub async fn open(store: &Store, legacy: Option<&Path>) -> Result<Self, KeyError> {
        let keys = Self {
            objects: store.objects().clone(),
            records: RwLock::default(),
        };
        if let Some(legacy) = legacy {
            keys.import(legacy).await?;
        }
        let listed = keys.objects.list(&ObjectPath::from(DIR)).await?;
        for m in listed {
            keys.load(&m.location).await?;
        }
        Ok(keys)
    }

    async fn import(&self, legacy: &Path) -> Result<(), KeyError> {
        let err = |reason: String| KeyError::Legacy {
            path: legacy.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(legacy) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e.to_string())),
        };
        let file: LegacyFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        for record in file.keys {
            let body = serde_json::to_vec(&record).map_err(|e| err(e.to_string()))?;
            match self
                .objects
                .create(&path(&record.info.id), Bytes::from(body))
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let imported = legacy.with_extension("json.imported");
        std::fs::rename(legacy, &imported).map_err(|e| err(e.to_string()))?;
        tracing::info!(path = %imported.display(), "API keys imported into the store.");
        Ok(())
    }

    async fn load(&self, location: &ObjectPath) -> Result<(), KeyError> {
        let got = match self.objects.get(location).await {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let record: Record = serde_json::from_slice(&got.bytes).map_err(|e| KeyError::Parse {
            id: location.to_string(),
            reason: e.to_string(),
        })?;
        let stored = Stored::new(record, got.etag)?;
        self.write().insert(stored.record.info.id.clone(), stored);
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Stored>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Stored>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no usable (unrevoked) key exists.
    pub fn is_empty(&self) -> bool {
        self.read()
            .values()
            .all(|s| s.record.info.revoked_at.is_some())
    }

    /// Creates a key, stores its hash, returns the plaintext once.
    pub async fn create(&self, tenant: &str, role: Role) -> Result<NewKey, KeyError> {
        let valid = !tenant.is_empty()
            && tenant.len() <= 64
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(KeyError::TenantName);
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
        let hash = blake3::hash(key.as_bytes());
        let key_id = format!("k_{}", &hash.to_hex()[..12]);
        let record = Record {
            info: KeyInfo {
                id: key_id.clone(),
                tenant: tenant.to_string(),
                role,
                created_at: now_rfc3339(),
                revoked_at: None,
            },
            hash: hash.to_hex().to_string(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| KeyError::Parse {
            id: key_id.clone(),
            reason: e.to_string(),
        })?;
        let etag = self
            .objects
            .create(&path(&key_id), Bytes::from(body))
            .await?;
        let stored = Stored::new(record, etag)?;
        self.write().insert(key_id.clone(), stored);
        AuditLog::new(self.objects.clone())
            .record(Event::KeyCreated {
                key_id: key_id.clone(),
                role: role_name(role).to_string(),
            })
            .await;
        Ok(NewKey {
            key,
            key_id,
            tenant: tenant.to_string(),
            role,
        })
    }

    /// Revokes a key: it stops working on every process following the store within about a second.
    /// Revoking a revoked key changes nothing.
    pub async fn revoke(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let location = path(id);
        loop {
            let got = match self.objects.get(&location).await {
                Ok(got) => got,
                Err(StoreError::NotFound { .. }) => return Err(KeyError::NotFound(id.to_string())),
                Err(e) => return Err(e.into()),
            };
            let mut record: Record =
                serde_json::from_slice(&got.bytes).map_err(|e| KeyError::Parse {
                    id: id.to_string(),
                    reason: e.to_string(),
                })?;
            if record.info.revoked_at.is_some() {
                return Ok(record.info);
            }
            record.info.revoked_at = Some(now_rfc3339());
            let body = serde_json::to_vec(&record).map_err(|e| KeyError::Parse {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
            let written = match &got.etag {
                Some(etag) => {
                    self.objects
                        .update(&location, Bytes::from(body), etag)
                        .await
                }
                None => self.objects.put(&location, Bytes::from(body)).await,
            };
            match written {
                Ok(etag) => {
                    let info = record.info.clone();
                    let stored = Stored::new(record, etag)?;
                    self.write().insert(id.to_string(), stored);
                    AuditLog::new(self.objects.clone())
                        .record(Event::KeyRevoked {
                            key_id: id.to_string(),
                        })
                        .await;
                    return Ok(info);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every key (ids, tenants, roles, dates; never a key or its hash), oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self
            .read()
            .values()
            .map(|s| s.record.info.clone())
            .collect();
        out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        out
    }

    /// The principal behind `presented`, comparing against every stored hash in constant time.
    pub fn verify(&self, presented: &str) -> Option<Principal> {
        let hash = blake3::hash(presented.trim().as_bytes());
        let records = self.read();
        let mut found = None;
        for stored in records.values() {
            // blake3::Hash equality is constant-time; scan all records so timing does not depend on position.
            if stored.hash == hash && stored.record.info.revoked_at.is_none() {
                found = Some(stored.principal.clone());
            }
        }
        found
    }

    /// Applies the keys made, revoked or removed elsewhere, from the shared listing, until it stops.
    pub async fn follow(&self, mut follower: Follower) {
        while let Some(listing) = watch::next(&mut follower).await {
            let mut listed = Vec::new();
            for (name, meta) in listing.under("keys") {
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                listed.push(id.to_string());
                let known = self.read().get(id).map(|s| s.etag.clone());
                if known.is_none_or(|etag| etag != meta.e_tag)
                    && let Err(e) = self.load(&meta.location).await
                {
                    tracing::warn!(key_id = id, error = %e, "Could not read a changed API key; retrying.");
                }
            }
            // A key made here after the listing was asked for is not in it, and stays.
            let started = listing.started();
            self.write()
                .retain(|id, s| listed.contains(id) || s.known_since > started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn created_key_verifies_and_only_its_hash_is_stored() {
        let (dir, store) = store().await;
        let keys = KeyStore::open(&store, None).await.expect("open");
        let new = keys.create("acme", Role::Tenant).await.expect("create");
        let p = keys.verify(&new.key).expect("valid key");
        assert_eq!((&*p.tenant, p.role), ("acme", Role::Tenant));
        let stored = crate::testkit::grep_files(dir.path(), &new.key[3..]);
        assert!(stored.is_empty(), "plaintext key stored in {stored:?}");
        let reopened = KeyStore::open(&store, None).await.expect("reopen");
        assert_eq!(
            reopened.verify(&new.key).map(|p| p.tenant),
            Some("acme".into())
        );
    }

    #[tokio::test]
    async fn wrong_and_revoked_keys_are_refused() {
        let (_dir, store) = store().await;
        let keys = KeyStore::open(&store, None).await.expect("open");
        let new = keys.create("acme", Role::Admin).await.expect("create");
        for bad in [
            "",
            "ek_",
            &new.key[..new.key.len() - 1],
            "ek_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(keys.verify(bad).is_none(), "{bad}");
        }
        let elsewhere = KeyStore::open(&store, None).await.expect("another process");
        let info = elsewhere.revoke(&new.key_id).await.expect("revoke");
        assert!(info.revoked_at.is_some());
        assert!(elsewhere.verify(&new.key).is_none());
        assert!(
            keys.verify(&new.key).is_some(),
            "until it follows the store"
        );
        assert!(matches!(
            elsewhere.revoke("k_nope").await,
            Err(KeyError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_follower_sees_keys_made_and_revoked_elsewhere() {
        let (_dir, store) = store().await;
        let server = Arc::new(KeyStore::open(&store, None).await.expect("open"));
        assert!(server.is_empty(), "no key yet");
        let own = server.create("own", Role::Admin).await.expect("own key");
        let doomed = server
            .create("doomed", Role::Tenant)
            .await
            .expect("doomed key");
        assert!(!server.is_empty());
        let (watch, task) = crate::store::watch::Watch::spawn(
            store.objects().clone(),
            std::time::Duration::from_millis(20),
        );
        let following = tokio::spawn({
            let server = server.clone();
            let follower = watch.follow();
            async move { server.follow(follower).await }
        });
        let cli = KeyStore::open(&store, None).await.expect("cli");
        let new = cli.create("late", Role::Tenant).await.expect("create");
        wait_until(|| server.verify(&new.key).is_some()).await;
        cli.revoke(&new.key_id).await.expect("revoke");
        wait_until(|| server.verify(&new.key).is_none()).await;
        // A key removed from the store elsewhere goes; the keys still listed stay, round after round.
        store
            .objects()
            .delete(&path(&doomed.key_id))
            .await
            .expect("delete");
        wait_until(|| server.verify(&doomed.key).is_none()).await;
        // Keys made here while listings come and go (some while one is in flight) never blink out,
        // nor does a listed key, round after round (a listing every 20 ms).
        let mut made_here = vec![own.key.clone()];
        for _ in 0..10 {
            let k = server
                .create("here", Role::Tenant)
                .await
                .expect("key made here");
            made_here.push(k.key);
            tokio::time::sleep(std::time::Duration::from_millis(7)).await;
        }
        for _ in 0..40 {
            for key in &made_here {
                assert!(server.verify(key).is_some(), "a key stays");
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for key in &made_here[1..] {
            let id = server.verify(key).expect("key").key_id;
            server.revoke(&id).await.expect("revoke");
        }
        assert_eq!(server.list().len(), 12, "own and the revoked ones");
        cli.revoke(&own.key_id).await.expect("revoke own");
        wait_until(|| server.is_empty()).await;
        following.abort();
        task.abort();
    }

    /// A listing asked for before a key was made here does not hold it, and must not remove it; a
    /// listing asked for after it was made, and still without it, means it was removed elsewhere.
    #[tokio::test]
    async fn a_key_made_while_a_listing_was_in_flight_stays_until_a_later_listing_lacks_it() {
        use crate::store::watch::Listing;
        let (_dir, store) = store().await;
        let keys = KeyStore::open(&store, None).await.expect("open");
        let state = crate::store::ObjectPath::from("state");
        let asked = std::time::Instant::now();
        let before = store.objects().list(&state).await.expect("listing");
        let made = keys.create("acme", Role::Tenant).await.expect("create");
        let after = std::time::Instant::now();

        let follow_one = |listing: Listing| keys.follow(listing.once());
        follow_one(Listing::at(before.clone(), asked)).await;
        assert!(
            keys.verify(&made.key).is_some(),
            "a listing older than the key dropped it"
        );
        follow_one(Listing::at(before, after)).await;
        assert!(
            keys.verify(&made.key).is_none(),
            "a listing newer than the key, without it, kept it"
        );
    }

    async fn wait_until(done: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "never happened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_key_file_of_an_older_version_is_imported_once() {
        let (dir, store) = store().await;
        let legacy = dir.path().join("keys.json");
        let hash = blake3::hash(b"ek_old");
        std::fs::write(
            &legacy,
            format!(
                r#"{{"keys":[{{"id":"k_old","tenant":"acme","role":"tenant","hash":"{}","created_at":"2026-01-01T00:00:00Z"}}]}}"#,
                hash.to_hex()
            ),
        )
        .expect("legacy file");
        let keys = KeyStore::open(&store, Some(&legacy)).await.expect("open");
        assert_eq!(
            keys.verify("ek_old").map(|p| p.key_id),
            Some("k_old".into())
        );
        assert!(!legacy.exists() && dir.path().join("keys.json.imported").exists());
        // Every later start finds no file to import, and that is no error.
        let again = KeyStore::open(&store, Some(&legacy)).await.expect("reopen");
        assert_eq!(again.list().len(), 1);
    }

    #[tokio::test]
    async fn a_key_file_that_cannot_be_read_stops_the_start_and_names_itself() {
        let (dir, store) = store().await;
        let unreadable = dir.path().join("keys.json");
        std::fs::create_dir(&unreadable).expect("a directory where the file should be");
        match KeyStore::open(&store, Some(&unreadable)).await {
            Err(KeyError::Legacy { path, .. }) => {
                assert_eq!(path, unreadable.display().to_string())
            }
            Err(other) => panic!("another error: {other}"),
            Ok(_) => panic!("an unreadable key file was taken for no file"),
        }
    }

    #[tokio::test]
    async fn a_key_says_when_it_was_made_and_revoked_and_the_audit_names_its_role() {
        let (_dir, store) = store().await;
        let keys = KeyStore::open(&store, None).await.expect("open");
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
        let admin = keys.create("ops", Role::Admin).await.expect("admin");
        keys.create("acme", Role::Tenant).await.expect("tenant");
        let info = keys.revoke(&admin.key_id).await.expect("revoke");
        let after = std::time::SystemTime::now() + std::time::Duration::from_secs(2);

        let within = |t: &str| {
            let at = crate::audit::parse_rfc3339(t).expect("an RFC 3339 time");
            assert!(before <= at && at <= after, "{t}");
        };
        within(&info.created_at);
        within(info.revoked_at.as_deref().expect("revoked_at"));
        let events = crate::audit::AuditLog::new(store.objects().clone())
            .read(None, None)
            .await
            .expect("audit");
        let text = serde_json::to_string(&events).expect("json");
        assert!(
            text.contains(r#""role":"admin""#) && text.contains(r#""role":"tenant""#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn tenant_names_are_validated() {
        let (_dir, store) = store().await;
        let keys = KeyStore::open(&store, None).await.expect("open");
        assert!(matches!(
            keys.create("a b", Role::Tenant).await,
            Err(KeyError::TenantName)
        ));
        assert!(matches!(
            keys.create("", Role::Tenant).await,
            Err(KeyError::TenantName)
        ));
    }
}
