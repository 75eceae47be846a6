use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};

const KEY_PREFIX: &str = "ek_";

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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    tenant: String,
    role: Role,
    /// Hex blake3 of the key. Keys carry 256 random bits, so a fast hash is enough.
    hash: String,
    created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
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
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tenant name must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    TenantName,
}

/// The API keys, kept as hashes in `<data_dir>/keys.json` (written atomically).
pub struct KeyStore {
    path: PathBuf,
    records: RwLock<Vec<Stored>>,
}

/// A key's record as stored, its parsed hash, and the principal it stands for.
struct Stored {
    hash: blake3::Hash,
    record: Record,
    principal: Principal,
}

impl Stored {
    fn new(hash: blake3::Hash, record: Record) -> Self {
        let principal = Principal {
            tenant: Arc::from(record.tenant.as_str()),
            role: record.role,
            key_id: Arc::from(record.id.as_str()),
        };
        Self {
            hash,
            record,
            principal,
        }
    }
}

impl KeyStore {
    pub fn open(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join("keys.json");
        let file: File = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeyError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(source) => return Err(KeyError::Read { path, source }),
        };
        let mut records = Vec::with_capacity(file.keys.len());
        for r in file.keys {
            let hash = blake3::Hash::from_hex(&r.hash).map_err(|_| KeyError::Parse {
                path: path.clone(),
                source: serde::de::Error::custom(format!("key {} has an invalid hash", r.id)),
            })?;
            records.push(Stored::new(hash, r));
        }
        Ok(Self {
            path,
            records: RwLock::new(records),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.records.read().map(|r| r.is_empty()).unwrap_or(true)
    }

    /// Creates a key, persists its hash, returns the plaintext once.
    pub fn create(&self, tenant: &str, role: Role) -> Result<NewKey, KeyError> {
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
            id: key_id.clone(),
            tenant: tenant.to_string(),
            role,
            hash: hash.to_hex().to_string(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Record> = records.iter().map(|s| s.record.clone()).collect();
        next.push(record.clone());
        self.persist(&File { keys: next })?;
        records.push(Stored::new(hash, record));
        Ok(NewKey {
            key,
            key_id,
            tenant: tenant.to_string(),
            role,
        })
    }

    /// The principal behind `presented`, comparing against every stored hash in constant time.
    pub fn verify(&self, presented: &str) -> Option<Principal> {
        let hash = blake3::hash(presented.trim().as_bytes());
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for stored in records.iter() {
            // blake3::Hash equality is constant-time; scan all records so timing does not depend on position.
            if stored.hash == hash {
                found = Some(stored.principal.clone());
            }
        }
        found
    }

    fn persist(&self, file: &File) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(file).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_verifies_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = KeyStore::open(dir.path()).expect("open");
        let new = store.create("acme", Role::Tenant).expect("create");
        let p = store.verify(&new.key).expect("valid key");
        assert_eq!((&*p.tenant, p.role), ("acme", Role::Tenant));
        let on_disk = fs::read_to_string(dir.path().join("keys.json")).expect("file");
        assert!(
            !on_disk.contains(&new.key),
            "plaintext key must not be stored"
        );
        let reopened = KeyStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.verify(&new.key).map(|p| p.tenant),
            Some("acme".into())
        );
    }

    #[test]
    fn wrong_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = KeyStore::open(dir.path()).expect("open");
        let new = store.create("acme", Role::Admin).expect("create");
        for bad in [
            "",
            "ek_",
            &new.key[..new.key.len() - 1],
            "ek_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(store.verify(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tenant_names_are_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = KeyStore::open(dir.path()).expect("open");
        assert!(matches!(
            store.create("a b", Role::Tenant),
            Err(KeyError::TenantName)
        ));
        assert!(matches!(
            store.create("", Role::Tenant),
            Err(KeyError::TenantName)
        ));
    }
}
