//! Stage 2: the query's own identifiers against the exclusion list, before any upstream is asked.

use std::sync::Arc;

use super::fanout::Ids;
use crate::exclusion::ExclusionCheck;

/// What the pre-check decided.
pub(crate) enum Precheck {
    /// Nobody is excluded: the lookup goes on.
    Cleared(Cleared),
    /// The query names an excluded person: nobody is asked, and the answer is a miss. The identifiers
    /// tell which sources a miss would have asked.
    Excluded(Ids),
}

/// Identifiers found absent from the list, and the list's version read before they were checked.
pub(crate) struct Cleared {
    ids: Ids,
    list_version: Option<u64>,
}

impl Cleared {
    /// The identifiers to start the fan-out from.
    pub(crate) fn ids(&self) -> Ids {
        self.ids.clone()
    }

    /// Whether nothing was added to the list since the check began: the version is the one read
    /// before it (it changes with every addition), so what was found absent is still absent.
    pub(crate) fn unchanged(&self, exclusion: &dyn ExclusionCheck) -> bool {
        self.list_version.is_some() && exclusion.version() == self.list_version
    }
}

/// Checks the query's identifiers (only a person's count: a company domain alone never is excluded).
pub(crate) fn precheck(exclusion: &dyn ExclusionCheck, ids: Ids) -> Precheck {
    // Read before the check: an addition after it moves the version, and the check before release
    // then hashes everything again.
    let list_version = exclusion.version();
    if exclusion.any_excluded(&mut ids.iter().map(Arc::as_ref)) {
        Precheck::Excluded(ids)
    } else {
        Precheck::Cleared(Cleared { ids, list_version })
    }
}
