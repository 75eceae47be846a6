//! The opt-out exclusion list: keyed blake3 hashes of normalised identifiers.
//!
//! The pipeline sees it only through [`ExclusionCheck`]: a pure, in-memory membership test.
//! [`ExclusionList`] is the real implementation. Code map:
//! - [`normalize`]: the exact text hashed for an identifier (pure);
//! - [`key`]: the secret, per-kind subkeys and the key fingerprint;
//! - `entry`: [`Hashed`], [`Origin`] and the admin hash-import text form ([`parse_hash_lines`]);
//! - [`set`]: the compact in-memory hash set;
//! - [`log`]: the append-only, checksummed, fsynced log file (a local store);
//! - `remote`: segments and snapshots on a shared S3 store, followed by every replica;
//! - `list`: [`ExclusionList`], tying them together behind one API.
//!
//! Invariant: no raw identifier is ever written to disk, the store or logs; only keyed hashes and
//! their prefixes.

mod entry;
mod hook;
pub mod key;
mod list;
pub mod log;
pub mod normalize;
mod remote;
pub mod set;

pub use entry::{
    HashLineError, HashLines, Hashed, Origin, parse_hash_lines, parse_hash_lines_lenient,
};
pub use hook::{HookError, OptOutHook};
pub use key::{ExclusionKey, KeyError, KeySource};
pub use list::{
    AllRecords, DEFAULT_RETENTION_DAYS, ExclusionError, ExclusionList, ExclusionSnapshot,
    OpenReport, Receipt, Stats,
};
pub use remote::RemoteError;

use crate::domain::Identifier;

/// Whether an identifier is on the exclusion list. Pure and in memory: no I/O on the lookup path.
pub trait ExclusionCheck: Send + Sync {
    fn is_excluded(&self, id: &Identifier) -> bool;

    /// Whether any of `ids` is excluded. Only identifiers of a person count: a company domain alone
    /// never is.
    fn any_excluded(&self, ids: &mut dyn Iterator<Item = &Identifier>) -> bool {
        for id in ids {
            if id.is_personal() && self.is_excluded(id) {
                return true;
            }
        }
        false
    }

    /// A number that changes whenever an entry is added, read before a check: while it stays the same,
    /// an identifier found absent is still absent (removals only ever shorten the list), and the
    /// lookup's check before release need not hash it again. `None` when the list cannot tell, and
    /// then every check is made again.
    fn version(&self) -> Option<u64> {
        None
    }
}

/// An empty list, for tools and tests that need none.
pub struct NoExclusions;

impl ExclusionCheck for NoExclusions {
    fn is_excluded(&self, _: &Identifier) -> bool {
        false
    }

    fn version(&self) -> Option<u64> {
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainName, Email};

    /// A check that excludes what it was given, by canonical form; its version is the trait's.
    struct Listed(Vec<String>);

    impl ExclusionCheck for Listed {
        fn is_excluded(&self, id: &Identifier) -> bool {
            self.0.contains(&id.canonical())
        }
    }

    fn email(s: &str) -> Identifier {
        Identifier::Email(Email::parse(s).expect("email"))
    }

    #[test]
    fn any_excluded_counts_a_persons_identifiers_and_never_a_company_domain() {
        let domain = Identifier::Domain(DomainName::parse("acme.example").expect("domain"));
        let ada = email("ada@acme.example");
        let check = Listed(vec![domain.canonical(), ada.canonical()]);
        assert!(check.is_excluded(&domain), "the domain is listed");
        assert!(
            !check.any_excluded(&mut std::iter::once(&domain)),
            "a company domain alone is never a person"
        );
        let bob = email("bob@acme.example");
        assert!(!check.any_excluded(&mut [&domain, &bob].into_iter()));
        assert!(check.any_excluded(&mut [&bob, &ada].into_iter()));
        assert!(!check.any_excluded(&mut std::iter::empty()));
    }

    #[test]
    fn a_check_that_keeps_no_version_says_so_and_the_empty_list_never_changes() {
        assert_eq!(Listed(Vec::new()).version(), None);
        assert_eq!(NoExclusions.version(), Some(0));
        assert!(!NoExclusions.is_excluded(&email("ada@acme.example")));
    }
}
