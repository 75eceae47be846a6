//! Stages 4 and 5: the fan-out's answers merged into one profile, and every identifier in that profile
//! checked against the exclusion list before it may be released. The facts about a domain are taken
//! apart from the person here, and every identifier they hold (a contact address a site publishes)
//! is checked too.

use super::fanout::Answers;
use super::precheck::Cleared;
use crate::domain::{Email, Identifier, PhoneE164, ProfileUrl};
use crate::exclusion::ExclusionCheck;
use crate::profile::{self, Facts, Profile, Reported, Sourced, Value};
use crate::sources::Registered;

/// What the check before release decided.
pub(crate) enum Verdict {
    /// The profile may be released; `None` when nothing was found.
    Released(Option<Box<Profile>>),
    /// The answer touches an excluded person (or a source objected): it must read like a miss.
    Withheld,
}

/// Merges every answer the sources gave, with each source's weight, and judges the emails found.
/// `None` when nothing was found. A withheld fan-out is merged too: its domain facts are released
/// as a miss's would be, the rest never is.
pub(crate) fn merge(sources: &[Registered], answers: &Answers) -> Option<Box<Profile>> {
    // One report per answer; the merge counts a source once per value however many answers hold it.
    let reported: Vec<Reported<'_>> = sources
        .iter()
        .zip(&answers.runs)
        .flat_map(|(s, run)| {
            run.answers.iter().map(|a| Reported {
                source: s.name(),
                weight: s.weight,
                observations: a,
            })
        })
        .collect();
    let mut merged = profile::merge(&reported)?;
    profile::annotate_emails(&mut merged);
    Some(merged)
}

/// Checks every identifier in the merged profile once more, so that an opt-out that landed during the
/// lookup withholds it. One the fan-out met (and so checked) is skipped while the list has not
/// changed since the pre-check began: it cannot have been added. Identifiers the merge composed (a
/// name at a company) are new here and always checked.
///
/// The profile is released only when it holds something about a person
/// ([`Profile::about_a_person`]); the facts come back apart (see [`checked_facts`]).
pub(crate) fn release(
    merged: Option<Box<Profile>>,
    exclusion: &dyn ExclusionCheck,
    cleared: &Cleared,
    answers: &Answers,
    sources: &[Registered],
) -> (Verdict, Facts) {
    let Some(mut profile) = merged else {
        let verdict = if answers.withheld {
            Verdict::Withheld
        } else {
            Verdict::Released(None)
        };
        return (verdict, Facts::new());
    };
    let facts = std::mem::take(&mut profile.facts);
    let verdict = if answers.withheld {
        Verdict::Withheld
    } else {
        check(profile, exclusion, cleared, answers)
    };
    let found = matches!(verdict, Verdict::Released(Some(_)));
    (verdict, checked_facts(facts, exclusion, sources, found))
}

fn check(
    profile: Box<Profile>,
    exclusion: &dyn ExclusionCheck,
    cleared: &Cleared,
    answers: &Answers,
) -> Verdict {
    let unchanged = cleared.unchanged(exclusion);
    let met = &answers.met;
    let mut excluded = false;
    profile.for_each_identifier(|id| {
        excluded = excluded
            || (!(unchanged && met.iter().any(|known| **known == *id))
                && exclusion.any_excluded(&mut std::iter::once(id)));
    });
    if excluded {
        Verdict::Withheld
    } else if profile.about_a_person() {
        Verdict::Released(Some(profile))
    } else {
        Verdict::Released(None)
    }
}

/// The facts an answer may carry: every value that is an identifier (a site's `contact_email`,
/// `contact_phone`, a social profile) is checked against the list and dropped when listed. When no
/// person was found (or the person is withheld), only what domain-only sources
/// ([`crate::sources::Source::domain_only`]) reported remains: exactly what an excluded person's
/// answer, which asks those sources alone, can show.
pub(crate) fn checked_facts(
    facts: Facts,
    exclusion: &dyn ExclusionCheck,
    sources: &[Registered],
    found: bool,
) -> Facts {
    let domain_only = |v: &Sourced| {
        v.sources.iter().all(|name| {
            sources
                .iter()
                .any(|s| s.name() == &**name && s.source.domain_only())
        })
    };
    facts
        .into_iter()
        .filter_map(|(name, ranked)| {
            let kept = ranked.retain(|v| {
                (found || domain_only(v))
                    && fact_identifier(&v.value)
                        .is_none_or(|id| !exclusion.any_excluded(&mut std::iter::once(&id)))
            })?;
            Some((name, kept))
        })
        .collect()
}

/// The identifier a fact's value is, if it reads as one: facts are kept as text, so the contacts a
/// site publishes are parsed here, before release.
fn fact_identifier(value: &Value) -> Option<Identifier> {
    if let Some(id) = value.identifier() {
        return Some(id.clone());
    }
    let text = value.text();
    let text = text.trim();
    if let Ok(e) = Email::parse(text.strip_prefix("mailto:").unwrap_or(text)) {
        return Some(Identifier::Email(e));
    }
    if let Ok(p) = ProfileUrl::parse(text) {
        return Some(Identifier::Profile(p));
    }
    PhoneE164::parse(text.strip_prefix("tel:").unwrap_or(text), None)
        .ok()
        .map(Identifier::Phone)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use futures::future::BoxFuture;

    use super::*;
    use crate::profile::{Observation, Ranked};
    use crate::sources::{Source, SourceError};

    /// A source that is asked nothing here: only its name and whether it is about domains count.
    struct Named(&'static str, bool);

    impl Source for Named {
        fn name(&self) -> &str {
            self.0
        }

        fn accepts(&self, _: &Identifier) -> bool {
            false
        }

        fn domain_only(&self) -> bool {
            self.1
        }

        fn lookup<'a>(
            &'a self,
            _: &'a Identifier,
        ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
            async { Ok(Vec::new()) }.boxed()
        }
    }

    struct Listed(Vec<Identifier>);

    impl ExclusionCheck for Listed {
        fn is_excluded(&self, id: &Identifier) -> bool {
            self.0.contains(id)
        }

        fn version(&self) -> Option<u64> {
            Some(0)
        }
    }

    fn fact(value: &str, source: &str) -> Sourced {
        Sourced {
            value: Value::from(value),
            confidence: 0.5,
            sources: Arc::from([Arc::from(source)]),
            detail: None,
            status: None,
            evidence: None,
        }
    }

    fn facts(entries: &[(&'static str, &str, &str)]) -> Facts {
        entries
            .iter()
            .map(|&(name, value, source)| {
                (
                    name,
                    Ranked {
                        best: fact(value, source),
                        alternatives: Vec::new(),
                    },
                )
            })
            .collect()
    }

    fn sources() -> Vec<Registered> {
        vec![
            Registered::free(Arc::new(Named("website", true)), 1_000, 0.5),
            Registered::free(Arc::new(Named("social", false)), 1_000, 0.5),
        ]
    }

    fn names(f: &Facts) -> Vec<&'static str> {
        f.keys().copied().collect()
    }

    #[test]
    fn a_listed_contact_a_site_publishes_is_dropped_and_the_rest_kept() {
        let listed = Listed(vec![
            Identifier::Email(Email::parse("ada@acme.example").expect("email")),
            Identifier::Phone(PhoneE164::parse("+442079460958", None).expect("phone")),
        ]);
        let given = facts(&[
            ("contact_email", "mailto:ada@acme.example", "website"),
            ("contact_phone", "tel:+44 20 7946 0958", "website"),
            ("site_name", "Acme", "website"),
            ("support_email", "help@acme.example", "website"),
        ]);

        let kept = checked_facts(given, &listed, &sources(), true);

        assert_eq!(names(&kept), ["site_name", "support_email"]);
    }

    #[test]
    fn without_a_person_only_what_domain_only_sources_said_remains() {
        let given = facts(&[
            ("site_name", "Acme", "website"),
            ("company_profile", "Acme on a network", "social"),
        ]);

        let missed = checked_facts(given.clone(), &Listed(Vec::new()), &sources(), false);
        let found = checked_facts(given, &Listed(Vec::new()), &sources(), true);

        assert_eq!(names(&missed), ["site_name"]);
        assert_eq!(names(&found), ["company_profile", "site_name"]);
    }

    /// The check before release may skip only what the fan-out met itself: an identifier the merge
    /// brought in (here a second email) is checked even while the list is unchanged.
    #[test]
    fn an_identifier_the_lookup_never_met_is_checked_even_on_an_unchanged_list() {
        let met = Identifier::Email(Email::parse("ada@acme.example").expect("email"));
        let unseen = Identifier::Email(Email::parse("ada.private@mail.example").expect("email"));
        let list = Listed(vec![unseen.clone()]);
        let ids: super::super::fanout::Ids = [Arc::new(met.clone())].into_iter().collect();
        let super::super::precheck::Precheck::Cleared(cleared) =
            super::super::precheck::precheck(&list, ids.clone())
        else {
            panic!("the query's own email is not listed");
        };
        assert!(cleared.unchanged(&list), "the list did not move");
        let answers = Answers {
            runs: Vec::new(),
            met: ids,
            from_query: 1,
            cost: 0.0,
            capped: Default::default(),
            withheld: false,
        };
        let profile = |emails: &[&Identifier]| {
            Box::new(Profile {
                emails: emails
                    .iter()
                    .map(|id| Sourced {
                        value: Value::Id((*id).clone()),
                        ..fact("", "social")
                    })
                    .collect(),
                ..Profile::default()
            })
        };

        let only_met = check(profile(&[&met]), &list, &cleared, &answers);
        let with_unseen = check(profile(&[&met, &unseen]), &list, &cleared, &answers);

        assert!(matches!(only_met, Verdict::Released(Some(_))));
        assert!(matches!(with_unseen, Verdict::Withheld));
    }

    #[test]
    fn a_fact_reads_as_the_identifier_it_spells() {
        let email = Email::parse("ada@acme.example").expect("email");
        assert_eq!(
            fact_identifier(&Value::from(" mailto:ada@acme.example ")),
            Some(Identifier::Email(email))
        );
        assert!(matches!(
            fact_identifier(&Value::from("tel:+44 20 7946 0958")),
            Some(Identifier::Phone(_))
        ));
        assert!(matches!(
            fact_identifier(&Value::from("https://github.com/ada")),
            Some(Identifier::Profile(_))
        ));
    }
}
