//! Batch ids and tenant keys: the two halves of every object key.

use std::fmt;
use std::str::FromStr;

use object_store::path::Path;

/// A batch id: 128 random bits, shown as 32 lower-case hex digits. Parsed at the edge; a string in
/// any other form is simply not a batch id (the HTTP layer answers 404).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId([u8; 16]);

impl BatchId {
    /// A fresh id from the operating system's random source.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Parses exactly 32 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl FromStr for BatchId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::parse(s).ok_or(())
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

/// The storage name of a tenant: a keyed hash of its id, so keys never carry the tenant's name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TenantKey(String);

impl TenantKey {
    /// Hashes a tenant id (blake3 in key-derivation mode, 128 bits, hex).
    pub fn of(tenant: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("enrichd 2026 blob tenant key v1");
        h.update(tenant.as_bytes());
        let digest = h.finalize();
        Self(hex::encode(&digest.as_bytes()[..16]))
    }

    /// Reads a tenant key back from an object key segment.
    pub(crate) fn from_segment(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn prefix(&self) -> Path {
        Path::from(self.0.as_str())
    }
}

/// Where one batch lives: its tenant and its id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BatchKey {
    pub tenant: TenantKey,
    pub id: BatchId,
}

impl BatchKey {
    pub fn new(tenant: TenantKey, id: BatchId) -> Self {
        Self { tenant, id }
    }

    /// The folder of the batch: `<tenant-hash>/<batch-id>`.
    pub(crate) fn prefix(&self) -> Path {
        self.tenant.prefix().child(self.id.to_string())
    }

    /// One object of the batch.
    pub(crate) fn object(&self, name: &str) -> Path {
        self.prefix().child(name)
    }

    /// Reads `<tenant>/<batch>` back from a listed path (any depth below is ignored).
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        let mut parts = path.parts();
        let tenant = TenantKey::from_segment(parts.next()?.as_ref())?;
        let id = BatchId::parse(parts.next()?.as_ref())?;
        Some(Self { tenant, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_id_round_trips_through_text() {
        let id = BatchId::random();
        assert_eq!(BatchId::parse(&id.to_string()), Some(id));
    }

    #[test]
    fn malformed_batch_ids_are_not_ids() {
        for s in [
            "",
            "abc",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "../../../../etc/passwd0000000000",
        ] {
            assert_eq!(BatchId::parse(s), None, "{s}");
        }
    }

    #[test]
    fn tenant_key_hides_the_tenant_name() {
        let k = TenantKey::of("acme-sales");
        assert_eq!(k.as_str().len(), 32);
        assert!(!k.as_str().contains("acme"));
        assert_eq!(k, TenantKey::of("acme-sales"));
        assert_ne!(k, TenantKey::of("acme-sales2"));
    }

    #[test]
    fn batch_key_reads_back_from_an_object_path() {
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        assert_eq!(BatchKey::from_path(&key.object("part-000001")), Some(key));
    }
}
