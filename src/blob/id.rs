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

    /// Where the tenant's batch keys are listed: `batch-keys/<tenant-hash>`.
    pub(crate) fn keys_prefix(&self) -> Path {
        Path::from_iter(["batch-keys", self.0.as_str()])
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

    /// `<tenant-hash>/<batch-id>`: the batch's name in every area, and what its data key is bound to.
    pub fn name(&self) -> String {
        format!("{}/{}", self.tenant.as_str(), self.id)
    }

    /// The folder of the batch in `area`: `<area>/<tenant-hash>/<batch-id>`.
    pub(crate) fn prefix(&self, area: Area) -> Path {
        Path::from_iter([area.dir(), self.tenant.as_str(), &self.id.to_string()])
    }

    /// One object of the batch in `area`.
    pub(crate) fn object(&self, area: Area, name: &str) -> Path {
        self.prefix(area).child(name)
    }

    /// The object holding the batch's wrapped data key: `batch-keys/<tenant-hash>/<batch-id>`.
    pub(crate) fn key_object(&self) -> Path {
        Path::from_iter(["batch-keys", self.tenant.as_str(), &self.id.to_string()])
    }

    /// Reads `<area>/<tenant>/<batch>` back from a listed path (any depth below is ignored).
    pub(crate) fn from_path(path: &Path) -> Option<(Area, Self)> {
        let mut parts = path.parts();
        let area = Area::from_dir(parts.next()?.as_ref())?;
        let tenant = TenantKey::from_segment(parts.next()?.as_ref())?;
        let id = BatchId::parse(parts.next()?.as_ref())?;
        Some((area, Self { tenant, id }))
    }

    /// Reads a batch from `<tenant>.<batch>`, the form used in single-segment names (job markers).
    pub fn parse_dotted(s: &str) -> Option<Self> {
        let (tenant, id) = s.split_once('.')?;
        Some(Self {
            tenant: TenantKey::from_segment(tenant)?,
            id: BatchId::parse(id)?,
        })
    }

    /// `<tenant>.<batch>`: see [`BatchKey::parse_dotted`].
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.tenant.as_str(), self.id)
    }
}

/// The areas of the store a batch has objects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// `batches/`: metadata, input and result parts.
    Data,
    /// `indexes/`: the row hashes of each part, listed on their own by opt-out purges.
    Index,
    /// `batch-keys/`: the wrapped data key.
    Key,
}

impl Area {
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Self::Data => "batches",
            Self::Index => "indexes",
            Self::Key => "batch-keys",
        }
    }

    fn from_dir(s: &str) -> Option<Self> {
        [Self::Data, Self::Index, Self::Key]
            .into_iter()
            .find(|a| a.dir() == s)
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
    fn batch_key_reads_back_from_every_kind_of_name() {
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        for area in [Area::Data, Area::Index] {
            assert_eq!(
                BatchKey::from_path(&key.object(area, "part-000001-g1")),
                Some((area, key.clone()))
            );
        }
        assert_eq!(
            BatchKey::from_path(&key.key_object()),
            Some((Area::Key, key.clone()))
        );
        assert_eq!(BatchKey::parse_dotted(&key.dotted()), Some(key.clone()));
        assert_eq!(BatchKey::parse_dotted("x.y"), None);
        assert_eq!(BatchKey::from_path(&Path::from("state/jobs/x")), None);
    }

    #[test]
    fn only_a_tenant_hash_is_a_tenant_segment() {
        let k = TenantKey::of("t");
        assert_eq!(TenantKey::from_segment(k.as_str()), Some(k.clone()));
        for s in [
            "",
            "0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef0",
            "batch-keys",
        ] {
            assert_eq!(TenantKey::from_segment(s), None, "{s}");
        }
    }

    /// The name a batch's data key is bound to when wrapped: its tenant hash and id, so a wrapped key
    /// copied under another batch does not unwrap there.
    #[test]
    fn a_batch_is_named_by_its_tenant_hash_and_id() {
        let id = BatchId::random();
        let key = BatchKey::new(TenantKey::of("t"), id);
        assert_eq!(key.name(), format!("{}/{id}", TenantKey::of("t").as_str()));
        assert_ne!(
            key.name(),
            BatchKey::new(TenantKey::of("u"), id).name(),
            "the same id under another tenant is another batch"
        );
        assert_eq!(format!("{id:?}"), format!("BatchId({id})"));
    }
}
