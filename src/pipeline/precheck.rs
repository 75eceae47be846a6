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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{DomainName, Email, Identifier};

    /// A list holding `listed`, whose version the test moves.
    struct List {
        listed: Vec<Identifier>,
        version: Mutex<Option<u64>>,
    }

    impl List {
        fn new(listed: Vec<Identifier>, version: Option<u64>) -> Self {
            Self {
                listed,
                version: Mutex::new(version),
            }
        }

        fn add(&self) {
            let mut v = self.version.lock().expect("lock");
            *v = v.map(|n| n + 1);
        }
    }

    impl ExclusionCheck for List {
        fn is_excluded(&self, id: &Identifier) -> bool {
            self.listed.contains(id)
        }

        fn version(&self) -> Option<u64> {
            *self.version.lock().expect("lock")
        }
    }

    fn email(s: &str) -> Arc<Identifier> {
        Arc::new(Identifier::Email(Email::parse(s).expect("valid email")))
    }

    fn domain(s: &str) -> Arc<Identifier> {
        Arc::new(Identifier::Domain(
            DomainName::parse(s).expect("valid domain"),
        ))
    }

    fn ids(list: &[Arc<Identifier>]) -> Ids {
        list.iter().cloned().collect()
    }

    #[test]
    fn a_query_naming_a_listed_person_is_excluded_with_its_identifiers() {
        let listed = email("listed@example.com");
        let list = List::new(vec![(*listed).clone()], Some(1));
        let query = ids(&[email("other@example.com"), listed]);

        match precheck(&list, query.clone()) {
            Precheck::Excluded(kept) => assert_eq!(kept, query),
            Precheck::Cleared(_) => panic!("a listed identifier was cleared"),
        }
    }

    #[test]
    fn a_query_of_unlisted_people_is_cleared_with_all_its_identifiers() {
        let list = List::new(vec![(*email("listed@example.com")).clone()], Some(1));
        let query = ids(&[email("free@example.com"), domain("acme.example")]);

        match precheck(&list, query.clone()) {
            Precheck::Cleared(cleared) => assert_eq!(cleared.ids(), query),
            Precheck::Excluded(_) => panic!("an unlisted query was excluded"),
        }
    }

    #[test]
    fn a_listed_company_domain_alone_never_excludes() {
        let company = domain("acme.example");
        let list = List::new(vec![(*company).clone()], Some(1));

        assert!(matches!(
            precheck(&list, ids(&[company])),
            Precheck::Cleared(_)
        ));
    }

    #[test]
    fn unchanged_holds_only_while_the_list_keeps_the_version_read_before_the_check() {
        let list = List::new(Vec::new(), Some(7));
        let Precheck::Cleared(cleared) = precheck(&list, ids(&[email("a@example.com")])) else {
            panic!("cleared");
        };
        assert!(cleared.unchanged(&list), "nothing was added");

        list.add();

        assert!(!cleared.unchanged(&list), "an entry was added since");
    }

    #[test]
    fn a_list_that_cannot_tell_its_version_is_never_unchanged() {
        let list = List::new(Vec::new(), None);
        let Precheck::Cleared(cleared) = precheck(&list, ids(&[email("a@example.com")])) else {
            panic!("cleared");
        };

        assert!(!cleared.unchanged(&list));
    }
}
