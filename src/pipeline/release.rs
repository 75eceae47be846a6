//! Stages 4 and 5: the fan-out's answers merged into one profile, and every identifier in that profile
//! checked against the exclusion list before it may be released.

use super::fanout::Answers;
use super::precheck::Cleared;
use crate::exclusion::ExclusionCheck;
use crate::profile::{self, Profile, Reported};
use crate::sources::Registered;

/// What the check before release decided.
pub(crate) enum Verdict {
    /// The profile may be released; `None` when nothing was found.
    Released(Option<Box<Profile>>),
    /// The answer touches an excluded person (or a source objected): it must read like a miss.
    Withheld,
}

/// Merges every answer the sources gave, with each source's weight, and judges the emails found.
/// `None` when nothing was found or the fan-out withheld its answers.
pub(crate) fn merge(sources: &[Registered], answers: &Answers) -> Option<Box<Profile>> {
    if answers.withheld {
        return None;
    }
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
pub(crate) fn release(
    merged: Option<Box<Profile>>,
    exclusion: &dyn ExclusionCheck,
    cleared: &Cleared,
    answers: &Answers,
) -> Verdict {
    if answers.withheld {
        return Verdict::Withheld;
    }
    let Some(profile) = merged else {
        return Verdict::Released(None);
    };
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
    } else {
        Verdict::Released(Some(profile))
    }
}
