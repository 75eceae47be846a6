//! The opt-out exclusion list: keyed blake3 hashes of normalised identifiers.
//!
//! The pipeline sees it only through [`ExclusionCheck`]: a pure, in-memory membership test.

use crate::domain::Identifier;

/// Whether an identifier is on the exclusion list. Pure and in memory: no I/O on the lookup path.
pub trait ExclusionCheck: Send + Sync {
    fn is_excluded(&self, id: &Identifier) -> bool;

    /// Whether any of `ids` is excluded.
    fn any_excluded(&self, ids: &[Identifier]) -> bool {
        ids.iter()
            .any(|id| id.is_personal() && self.is_excluded(id))
    }
}

/// An empty list, for tools and tests that need none.
pub struct NoExclusions;

impl ExclusionCheck for NoExclusions {
    fn is_excluded(&self, _: &Identifier) -> bool {
        false
    }
}
