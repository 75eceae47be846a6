//! The exclusion secret: where it comes from, the per-kind subkeys and its public fingerprint.
//!
//! The secret is 32 bytes, given as 64 hex characters in `ENRICHD_EXCLUSION_KEY` or in a key file. On a
//! first run with neither, a development key is generated and stored as `<data_dir>/exclusion.key`
//! (mode 0600); [`KeySource::Generated`] tells the caller to log a loud warning. Each identifier kind
//! gets its own subkey (`blake3::derive_key("enrichd exclusion v1 <kind>", secret)`), so the same text
//! under two kinds hashes differently. [`ExclusionKey::key_id`] is a short, non-secret fingerprint stored
//! in the log header: opening a log with another key is refused instead of silently un-excluding everyone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretBox};

use crate::config::SECRET_HINT;
use crate::domain::IdentifierKind;

/// The environment variable holding the secret as 64 hex characters.
pub const KEY_ENV: &str = "ENRICHD_EXCLUSION_KEY";
/// The file name of the generated development key inside the data directory.
pub const KEY_FILE_NAME: &str = "exclusion.key";
/// The key version written with each log record when none is set.
pub const DEFAULT_KEY_VERSION: u16 = 1;

/// Why the exclusion key could not be loaded. Messages name the variable or file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{KEY_ENV} must be exactly 64 hex characters (32 bytes) and the value given is not; \
         {SECRET_HINT}"
    )]
    BadEnv,
    #[error(
        "the exclusion key file {path} must hold exactly 64 hex characters (32 bytes); {SECRET_HINT}"
    )]
    BadFile { path: PathBuf },
    #[error("cannot read the exclusion key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "with an s3:// store every replica needs the same exclusion key: set {KEY_ENV} (64 hex \
         characters, e.g. from `openssl rand -hex 32`) or exclusion.key_file; none is generated"
    )]
    MissingShared,
    #[error("cannot write the generated exclusion key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Where the key came from; [`KeySource::Generated`] asks the caller for a loud warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    /// First-run development default: generated now and stored at this path.
    Generated(PathBuf),
}

/// The exclusion secret with its version. `Debug` is redacted; the bytes are zeroed on drop.
pub struct ExclusionKey {
    secret: SecretBox<[u8; 32]>,
    version: u16,
}

impl std::fmt::Debug for ExclusionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusionKey")
            .field("key_id", &self.key_id_hex())
            .field("version", &self.version)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ExclusionKey {
    /// A key from raw bytes, version [`DEFAULT_KEY_VERSION`].
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            secret: SecretBox::new(Box::new(bytes)),
            version: DEFAULT_KEY_VERSION,
        }
    }

    /// Parses 64 hex characters (surrounding whitespace ignored). `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::secret::parse_hex32(text).map(Self::from_bytes)
    }

    /// Sets the version stored with every record written under this key.
    pub fn with_version(mut self, version: u16) -> Self {
        self.version = version;
        self
    }

    /// The key from `ENRICHD_EXCLUSION_KEY`'s value (`env_value`, as the config loader read it), else
    /// `key_file`, else `<data_dir>/exclusion.key`, else a development key generated and stored there.
    pub fn resolve(
        env_value: Option<&str>,
        key_file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(Self, KeySource), KeyError> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            let key = Self::from_hex(value).ok_or(KeyError::BadEnv)?;
            return Ok((key, KeySource::Env));
        }
        if let Some(path) = key_file {
            return Ok((Self::read_file(path)?, KeySource::File(path.to_path_buf())));
        }
        let default_path = data_dir.join(KEY_FILE_NAME);
        if default_path.exists() {
            return Ok((
                Self::read_file(&default_path)?,
                KeySource::File(default_path),
            ));
        }
        let key = Self::generate_into(&default_path)?;
        Ok((key, KeySource::Generated(default_path)))
    }

    /// The key for a shared store: from `ENRICHD_EXCLUSION_KEY`'s value or `key_file`, never from the data
    /// directory and never generated (a replica's disk holds nothing another replica needs).
    pub fn resolve_shared(
        env_value: Option<&str>,
        key_file: Option<&Path>,
    ) -> Result<(Self, KeySource), KeyError> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            let key = Self::from_hex(value).ok_or(KeyError::BadEnv)?;
            return Ok((key, KeySource::Env));
        }
        let path = key_file.ok_or(KeyError::MissingShared)?;
        Ok((Self::read_file(path)?, KeySource::File(path.to_path_buf())))
    }

    /// The key from `ENRICHD_EXCLUSION_KEY`'s value, `key_file` or `<data_dir>/exclusion.key`, never
    /// generating one: for processes that only check the list, where no key means nothing was ever
    /// excluded with it.
    pub fn resolve_existing(
        env_value: Option<&str>,
        key_file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Option<(Self, KeySource)>, KeyError> {
        let default_path = data_dir.join(KEY_FILE_NAME);
        let has_key = env_value.is_some_and(|v| !v.trim().is_empty())
            || key_file.is_some()
            || default_path.exists();
        if !has_key {
            return Ok(None);
        }
        Self::resolve(env_value, key_file, data_dir).map(Some)
    }

    fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hex(&text).ok_or_else(|| KeyError::BadFile {
            path: path.to_path_buf(),
        })
    }

    /// Generates a key and writes it as hex, mode 0600, created new (an existing file is never
    /// overwritten), fsynced with its directory.
    fn generate_into(path: &Path) -> Result<Self, KeyError> {
        crate::secret::generate_into(path)
            .map(Self::from_bytes)
            .map_err(|source| KeyError::Write {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The version stored with each log record.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// A short non-secret fingerprint of the secret, stored in the log header.
    pub fn key_id(&self) -> [u8; 8] {
        let derived =
            blake3::derive_key("enrichd exclusion v1 key id", self.secret.expose_secret());
        let mut id = [0u8; 8];
        id.copy_from_slice(&derived[..8]);
        id
    }

    /// [`ExclusionKey::key_id`] as 16 hex characters.
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.key_id())
    }

    /// The per-kind subkeys, derived once.
    pub(crate) fn subkeys(&self) -> Subkeys {
        let derive = |kind: IdentifierKind| {
            let context = format!("enrichd exclusion v1 {}", kind.as_str());
            SecretBox::new(Box::new(blake3::derive_key(
                &context,
                self.secret.expose_secret(),
            )))
        };
        Subkeys {
            email: derive(IdentifierKind::Email),
            phone: derive(IdentifierKind::Phone),
            profile_url: derive(IdentifierKind::ProfileUrl),
            name_company: derive(IdentifierKind::NameCompany),
            name_domain: derive(IdentifierKind::NameDomain),
        }
    }
}

/// One derived key per personal identifier kind. `Domain` has none: it is never hashed.
pub(crate) struct Subkeys {
    email: SecretBox<[u8; 32]>,
    phone: SecretBox<[u8; 32]>,
    profile_url: SecretBox<[u8; 32]>,
    name_company: SecretBox<[u8; 32]>,
    name_domain: SecretBox<[u8; 32]>,
}

impl Subkeys {
    /// The keyed blake3 hash of `text` under `kind`'s subkey; `None` for a non-personal kind.
    pub(crate) fn hash(&self, kind: IdentifierKind, text: &str) -> Option<[u8; 32]> {
        let key = match kind {
            IdentifierKind::Email => &self.email,
            IdentifierKind::Phone => &self.phone,
            IdentifierKind::ProfileUrl => &self.profile_url,
            IdentifierKind::NameCompany => &self.name_company,
            IdentifierKind::NameDomain => &self.name_domain,
            IdentifierKind::Domain => return None,
        };
        Some(*blake3::keyed_hash(key.expose_secret(), text.as_bytes()).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn env_value_must_be_64_hex_chars_and_is_never_echoed() {
        let dir = tempfile::tempdir().expect("temp dir");
        for bad in ["abc", "zz".repeat(32).as_str(), &format!("{HEX}00")] {
            let err = ExclusionKey::resolve(Some(bad), None, dir.path()).expect_err("bad key");
            let msg = err.to_string();
            assert!(msg.contains(KEY_ENV), "{msg}");
            assert!(!msg.contains(bad), "the value leaked: {msg}");
        }
    }

    #[test]
    fn env_key_wins_over_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, source) =
            ExclusionKey::resolve(Some(HEX), None, dir.path()).expect("valid env key");
        assert_eq!(source, KeySource::Env);
        assert_eq!(
            key.key_id(),
            ExclusionKey::from_hex(HEX).expect("hex").key_id()
        );
        assert!(!dir.path().join(KEY_FILE_NAME).exists());
    }

    #[test]
    fn first_run_generates_a_private_key_file_and_reuses_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, source) = ExclusionKey::resolve(None, None, dir.path()).expect("generated");
        let path = dir.path().join(KEY_FILE_NAME);
        assert_eq!(source, KeySource::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("key file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, source) = ExclusionKey::resolve(None, None, dir.path()).expect("reread");
        assert_eq!(source, KeySource::File(path));
        assert_eq!(first.key_id(), second.key_id());
    }

    #[test]
    fn checking_processes_never_generate_a_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let none = ExclusionKey::resolve_existing(None, None, dir.path()).expect("no key");
        assert!(none.is_none());
        assert!(!dir.path().join(KEY_FILE_NAME).exists());
        let (_, source) = ExclusionKey::resolve_existing(Some(HEX), None, dir.path())
            .expect("env key")
            .expect("present");
        assert_eq!(source, KeySource::Env);
        ExclusionKey::resolve(None, None, dir.path()).expect("generated");
        let found = ExclusionKey::resolve_existing(None, None, dir.path()).expect("file key");
        assert!(matches!(found, Some((_, KeySource::File(_)))));
    }

    #[test]
    fn a_shared_store_takes_the_key_from_env_or_file_and_never_generates_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = ExclusionKey::resolve_shared(None, None).expect_err("no key");
        assert!(err.to_string().contains(KEY_ENV), "{err}");
        let path = dir.path().join("k");
        fs::write(&path, HEX).expect("write");
        let (_, source) = ExclusionKey::resolve_shared(None, Some(&path)).expect("file");
        assert_eq!(source, KeySource::File(path.clone()));
        let (_, source) = ExclusionKey::resolve_shared(Some(" "), Some(&path)).expect("file");
        assert_eq!(
            source,
            KeySource::File(path.clone()),
            "a blank variable is unset"
        );
        let (key, source) = ExclusionKey::resolve_shared(Some(HEX), None).expect("env");
        assert_eq!(source, KeySource::Env);
        assert_eq!(
            Some(key.key_id()),
            ExclusionKey::from_hex(HEX).map(|k| k.key_id())
        );
        assert!(
            fs::read_dir(dir.path()).expect("dir").count() == 1,
            "nothing generated"
        );
    }

    #[test]
    fn bad_key_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("k");
        fs::write(&path, "not hex").expect("write");
        let err = ExclusionKey::resolve(None, Some(&path), dir.path()).expect_err("bad file");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn debug_is_redacted() {
        let key = ExclusionKey::from_hex(HEX).expect("hex");
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(HEX) && !shown.contains("0001020304"),
            "{shown}"
        );
        assert!(shown.contains(&key.key_id_hex()));
    }

    #[test]
    fn hashing_is_per_kind_and_keyed() {
        let key = ExclusionKey::from_hex(HEX).expect("hex").subkeys();
        let other = ExclusionKey::from_bytes([7; 32]).subkeys();
        let text = "ada lovelace|acme";
        let a = key.hash(IdentifierKind::NameCompany, text);
        let b = key.hash(IdentifierKind::NameDomain, text);
        let c = other.hash(IdentifierKind::NameCompany, text);
        assert!(a.is_some());
        assert_ne!(a, b, "kinds must not share hashes");
        assert_ne!(a, c, "another key must give another hash");
        assert_eq!(
            a,
            key.hash(IdentifierKind::NameCompany, text),
            "deterministic"
        );
        assert_eq!(key.hash(IdentifierKind::Domain, "example.com"), None);
    }

    #[test]
    fn key_id_differs_between_keys() {
        let a = ExclusionKey::from_bytes([1; 32]);
        let b = ExclusionKey::from_bytes([2; 32]);
        assert_ne!(a.key_id(), b.key_id());
    }
}
