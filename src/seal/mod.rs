//! Encryption at rest for what the store holds about people: batch inputs, results, indexes and
//! their metadata. Pure: bytes in, bytes out, no I/O.
//!
//! - A **master key** (32 bytes, `ENRICHD_STORAGE_KEY`) never touches data: it only wraps data keys.
//!   A [`Keyring`] holds the current master key (used to wrap) and older ones (accepted to unwrap), so
//!   a key is rotated without downtime and `enrichd store rewrap` moves every wrapped key to the new one.
//! - Each batch has its own random **data key**, stored only wrapped ([`WrappedKey`]), with its own
//!   object. Destroying that object destroys every way to read the batch (crypto-shredding): copies of
//!   its objects in backups or old object versions stay ciphertext.
//! - Each object is sealed under its own key, derived from the data key and the object's name
//!   ([`DataKey::object_key`]), with XChaCha20-Poly1305 in the STREAM construction (RustCrypto
//!   `chacha20poly1305`): 64 KiB chunks, each authenticated, the last one marked, so a download is
//!   decrypted as it streams and a truncated or reordered object is refused. See [`stream`] for the
//!   byte layout.

mod keys;
pub mod stream;

pub use keys::{DataKey, Keyring, MasterKey, WrappedKey};
pub use stream::{Opener, Sealer, open, seal};

/// Why sealed bytes could not be used. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The bytes do not start like a sealed object (a foreign or truncated object).
    #[error("not a sealed object: {0}")]
    Format(&'static str),
    /// Authentication failed: another key, or bytes changed, cut or reordered.
    #[error(
        "the sealed data does not authenticate with this key (changed, truncated, or another key)"
    )]
    Auth,
    /// The wrapped key names a master key this process was not given.
    #[error(
        "the data key is wrapped by master key {0}, which is neither ENRICHD_STORAGE_KEY nor one of \
         ENRICHD_STORAGE_KEY_PREVIOUS"
    )]
    UnknownMasterKey(String),
}
