//! Master keys, the keyring, per-batch data keys and their wrapped form.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};

use super::SealError;

const KEY_ID_CONTEXT: &str = "enrichd storage key id v1";
const OBJECT_KEY_CONTEXT: &str = "enrichd object key v1";
const WRAP_AAD: &[u8] = b"enrichd data key v1\0";

/// A master key: wraps and unwraps data keys. `Debug` shows its id only.
pub struct MasterKey {
    id: String,
    secret: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let derived = blake3::derive_key(KEY_ID_CONTEXT, &bytes);
        Self {
            id: hex::encode(&derived[..8]),
            secret: SecretBox::new(Box::new(bytes)),
        }
    }

    /// A short, non-secret fingerprint (16 hex characters) stored beside every key it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.secret.expose_secret().into())
    }
}

/// The master key that wraps, and the older ones that may still unwrap.
#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// A keyring whose key exists only in this process (a local batch's scratch store).
    pub fn ephemeral() -> std::io::Result<Self> {
        Ok(Self::new(
            MasterKey::from_bytes(crate::secret::random32()?),
            Vec::new(),
        ))
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Wraps a data key under the current master key, bound to `context` (the batch's name): a wrapped
    /// key copied beside another batch does not unwrap there.
    pub fn wrap(&self, key: &DataKey, context: &str) -> WrappedKey {
        let nonce: [u8; 24] = rand::random();
        let aad = [WRAP_AAD, context.as_bytes()].concat();
        // Encryption with a valid key and nonce only fails for inputs of gigabytes.
        let sealed = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.0.expose_secret(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        WrappedKey {
            master: self.current.id.clone(),
            nonce: hex::encode(nonce),
            key: hex::encode(sealed),
        }
    }

    /// Unwraps with whichever master key the wrapped key names.
    pub fn unwrap(&self, wrapped: &WrappedKey, context: &str) -> Result<DataKey, SealError> {
        let master = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == wrapped.master)
            .ok_or_else(|| SealError::UnknownMasterKey(wrapped.master.clone()))?;
        let mut nonce = [0u8; 24];
        hex::decode_to_slice(&wrapped.nonce, &mut nonce)
            .map_err(|_| SealError::Format("the wrapped key's nonce is not 24 bytes of hex"))?;
        let sealed = hex::decode(&wrapped.key)
            .map_err(|_| SealError::Format("the wrapped key is not hex"))?;
        let aad = [WRAP_AAD, context.as_bytes()].concat();
        let plain = master
            .cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Auth)?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Format("the wrapped key is not 32 bytes"))?;
        Ok(DataKey(SecretBox::new(Box::new(bytes))))
    }

    /// Whether `wrapped` is under an older master key (what `enrichd store rewrap` moves).
    pub fn is_stale(&self, wrapped: &WrappedKey) -> bool {
        wrapped.master != self.current.id
    }
}

/// A batch's data key. Never stored as it is; see [`Keyring::wrap`].
pub struct DataKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn random() -> std::io::Result<Self> {
        Ok(Self(SecretBox::new(Box::new(crate::secret::random32()?))))
    }

    /// The key of one object of the batch: distinct per object name, so no two objects share a key.
    pub fn object_key(&self, name: &str) -> [u8; 32] {
        let mut material = Vec::with_capacity(32 + name.len());
        material.extend_from_slice(self.0.expose_secret());
        material.extend_from_slice(name.as_bytes());
        let key = blake3::derive_key(OBJECT_KEY_CONTEXT, &material);
        secrecy::zeroize::Zeroize::zeroize(&mut material);
        key
    }
}

/// A data key sealed under a master key, as stored. Holds no secret in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The id of the master key that wraps it.
    pub master: String,
    pub nonce: String,
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(MasterKey::from_bytes([byte; 32]), Vec::new())
    }

    #[test]
    fn a_wrapped_key_unwraps_only_with_its_master_key_and_context() {
        let key = DataKey::random().expect("random");
        let ring = ring(1);
        let wrapped = ring.wrap(&key, "batch-a");
        let back = ring.unwrap(&wrapped, "batch-a").expect("unwraps");
        assert_eq!(back.object_key("part"), key.object_key("part"));
        assert_eq!(
            ring.unwrap(&wrapped, "batch-b").err(),
            Some(SealError::Auth)
        );
        assert!(matches!(
            self::ring(2).unwrap(&wrapped, "batch-a"),
            Err(SealError::UnknownMasterKey(_))
        ));
        let mut tampered = wrapped.clone();
        tampered.key.replace_range(
            0..2,
            if &tampered.key[0..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert_eq!(
            ring.unwrap(&tampered, "batch-a").err(),
            Some(SealError::Auth)
        );
    }

    #[test]
    fn after_a_rotation_old_keys_unwrap_and_new_wraps_use_the_new_key() {
        let key = DataKey::random().expect("random");
        let old = ring(1);
        let wrapped = old.wrap(&key, "b");
        let rotated = Keyring::new(
            MasterKey::from_bytes([2; 32]),
            vec![MasterKey::from_bytes([1; 32])],
        );
        assert!(rotated.is_stale(&wrapped));
        let back = rotated
            .unwrap(&wrapped, "b")
            .expect("old key still unwraps");
        let rewrapped = rotated.wrap(&back, "b");
        assert!(!rotated.is_stale(&rewrapped));
        assert_eq!(rewrapped.master, rotated.current_id());
        assert!(
            ring(2).unwrap(&rewrapped, "b").is_ok(),
            "the old key is no longer needed"
        );
    }

    #[test]
    fn object_keys_differ_by_name_and_by_data_key() {
        let a = DataKey::random().expect("random");
        let b = DataKey::random().expect("random");
        assert_ne!(a.object_key("part-1"), a.object_key("part-2"));
        assert_ne!(a.object_key("part-1"), b.object_key("part-1"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = MasterKey::from_bytes([0xab; 32]);
        let shown = format!("{m:?} {:?}", DataKey::random().expect("random"));
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(m.id()));
    }
}
