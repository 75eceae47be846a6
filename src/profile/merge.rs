use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{Company, Field, Observation, Profile, Ranked, Reported, Sourced, Value};
use crate::domain::{PersonName, fold_text};

/// Merges what every source reported into one profile, or `None` when nobody reported anything.
///
/// Values are grouped by a comparison key (folded text, or the canonical identifier). A value reported by
/// sources with weights `w1..wn` scores `1 - Π(1 - wi)`, so independent agreement raises it and one source
/// repeating itself does not. For single-valued fields the score is then scaled by the value's share of
/// all weight on that field, so conflicts lower everyone's confidence; the rest become ranked alternatives.
///
/// A lookup yields a few dozen values, so groups live in a vector in first-seen order and borrow from
/// the observations until the profile is built. Each source's name is allocated once per merge, as the
/// one-name list that every value only that source reported shares.
pub fn merge(reports: &[Reported<'_>]) -> Option<Box<Profile>> {
    let observed = reports.iter().map(|r| r.observations.len()).sum();
    let mut groups: SmallVec<[Group<'_>; 16]> = SmallVec::with_capacity(observed);
    let mut names: Vec<Arc<[Arc<str>]>> = Vec::with_capacity(reports.len());
    for report in reports {
        let weight = report.weight.clamp(0.01, 0.99);
        let name = match names.iter().position(|n| *n[0] == *report.source) {
            Some(i) => i,
            None => {
                names.push(Arc::from([Arc::from(report.source)]));
                names.len() - 1
            }
        };
        for obs in report.observations.iter().filter(|o| !o.value.is_empty()) {
            let key = Key::of(obs);
            let group = match groups
                .iter_mut()
                .position(|g| g.field == obs.field && g.key.same(&key))
            {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group {
                        field: obs.field,
                        key,
                        value: &obs.value,
                        detail: None,
                        sources: Sources::None,
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.sources.add(name, weight);
            if group.detail.is_none() {
                group.detail = obs.detail.as_deref();
            }
        }
    }
    if groups.is_empty() {
        return None;
    }

    // Each field's total weight, of which each single value's confidence takes its share.
    let mut field_totals: Vec<(Field, f64)> = Vec::with_capacity(16);
    for g in &groups {
        match field_totals.iter_mut().find(|(f, _)| *f == g.field) {
            Some((_, total)) => *total += g.weight(),
            None => field_totals.push((g.field, g.weight())),
        }
    }
    // The groups in the order the profile lists them: each field's values together, best first.
    // Sorted as small tuples, so no value is built before its place is known; stable, so equal
    // confidence keeps first-seen order.
    let mut order: Vec<Ordered> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let agreement = 1.0 - g.sources.iter().map(|(_, w)| 1.0 - w).product::<f64>();
            let share = if g.field.is_multi() {
                1.0
            } else {
                let total = field_totals
                    .iter()
                    .find(|(f, _)| *f == g.field)
                    .map_or(1.0, |(_, total)| *total);
                g.weight() / total
            };
            Ordered {
                field: g.field,
                confidence: round3(agreement * share),
                sources: g.sources.len(),
                group: i,
            }
        })
        .collect();
    order.sort_by(|a, b| {
        a.field
            .cmp(&b.field)
            .then(b.confidence.total_cmp(&a.confidence))
            .then(b.sources.cmp(&a.sources))
    });
    let value = |o: &Ordered| {
        let g = &groups[o.group];
        let name = |n: usize| Arc::clone(&names[n][0]);
        let sources: Arc<[Arc<str>]> = match &g.sources {
            Sources::One(n, _) => Arc::clone(&names[*n]),
            // Two sources agreeing is the usual case: one allocation, straight into place.
            Sources::Many(list) if list.len() == 2 => {
                let (a, b) = (name(list[0].0), name(list[1].0));
                Arc::from(if a <= b { [a, b] } else { [b, a] })
            }
            _ => sorted_names(g.sources.iter().map(|(n, _)| name(n))),
        };
        Sourced {
            value: g.value.clone(),
            confidence: o.confidence,
            sources,
            detail: g.detail.map(str::to_string),
            status: None,
            evidence: None,
        }
    };

    let mut p = Box::<Profile>::default();
    let mut company = Company::default();
    let mut order = order.iter().peekable();
    while let Some(first) = order.next() {
        let field = first.field;
        let best = value(first);
        let mut rest = Vec::new();
        while let Some(next) = order.next_if(|o| o.field == field) {
            rest.push(value(next));
        }
        if field.is_multi() {
            rest.insert(0, best);
            match field {
                Field::Email => p.emails = rest,
                Field::Phone => p.phones = rest,
                Field::Profile => p.profiles = rest,
                _ => p.websites = rest,
            }
            continue;
        }
        let ranked = Ranked {
            best,
            alternatives: rest,
        };
        match field {
            Field::FullName => p.name = Some(ranked),
            Field::FirstName => p.first_name = Some(ranked),
            Field::LastName => p.last_name = Some(ranked),
            Field::JobTitle => p.job_title = Some(ranked),
            Field::CompanyName => company.name = Some(ranked),
            Field::CompanyDomain => company.domain = Some(ranked),
            Field::Location => p.location = Some(ranked),
            Field::Photo => p.photo = Some(ranked),
            Field::Bio => p.bio = Some(ranked),
            Field::Fact(name) => {
                p.facts.insert(name, ranked);
            }
            Field::Email | Field::Phone | Field::Profile | Field::Website => {}
        }
    }
    if company.name.is_some() || company.domain.is_some() {
        p.company = Some(company);
    }
    if p.name.is_none()
        && let (Some(first), Some(last)) = (&p.first_name, &p.last_name)
    {
        let mut best = first.best.clone();
        let (first_text, last_text) = (first.best.value.text(), last.best.value.text());
        best.value = match PersonName::from_parts(&first_text, &last_text) {
            Ok(name) => Value::Name(name),
            Err(_) => Value::Text(format!("{first_text} {last_text}")),
        };
        best.confidence = round3(first.best.confidence.min(last.best.confidence));
        best.sources = sorted_names(
            first
                .best
                .sources
                .iter()
                .chain(&*last.best.sources)
                .cloned(),
        );
        p.name = Some(Ranked {
            best,
            alternatives: Vec::new(),
        });
    }
    Some(p)
}

/// A group's place in the profile: its field, its confidence, how many sources reported it.
struct Ordered {
    field: Field,
    confidence: f64,
    sources: usize,
    group: usize,
}

/// The values that compare equal, borrowed from the first observation of them.
struct Group<'a> {
    field: Field,
    key: Key<'a>,
    value: &'a Value,
    detail: Option<&'a str>,
    sources: Sources,
}

impl Group<'_> {
    fn weight(&self) -> f64 {
        self.sources.iter().map(|(_, w)| w).sum()
    }
}

/// Who reported a value: an index into the merge's source names with that source's weight, each source
/// once. Most values come from one source, which needs no allocation.
enum Sources {
    None,
    One(usize, f64),
    Many(Vec<Reporter>),
}

/// A source's index among the merge's names, and its weight.
type Reporter = (usize, f64);

impl Sources {
    fn add(&mut self, name: usize, weight: f64) {
        match self {
            Self::None => *self = Self::One(name, weight),
            Self::One(n, _) if *n == name => {}
            Self::One(n, w) => *self = Self::Many(vec![(*n, *w), (name, weight)]),
            Self::Many(list) => {
                if !list.iter().any(|(n, _)| *n == name) {
                    list.push((name, weight));
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(..) => 1,
            Self::Many(list) => list.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Reporter> + '_ {
        let (one, many): (Option<Reporter>, &[Reporter]) = match self {
            Self::None => (None, &[]),
            Self::One(n, w) => (Some((*n, *w)), &[]),
            Self::Many(list) => (None, list),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// What two values are compared by: the canonical identifier, a URL without its trailing slash and
/// case, or folded text ([`fold_text`]). Text is compared as it is folded, without building the folded
/// copy.
enum Key<'a> {
    Id(Cow<'a, str>),
    Url(Cow<'a, str>),
    Text(Cow<'a, str>),
}

impl<'a> Key<'a> {
    fn of(obs: &'a Observation) -> Self {
        match obs.identifier() {
            Some(id) => Self::Id(id.canonical_str()),
            None => match (obs.field, obs.value.text()) {
                (Field::Photo | Field::Website, Cow::Borrowed(url)) => {
                    Self::Url(Cow::Borrowed(url.trim_end_matches('/')))
                }
                (Field::Photo | Field::Website, Cow::Owned(url)) => {
                    Self::Url(Cow::Owned(url.trim_end_matches('/').to_string()))
                }
                (_, text) => Self::Text(text),
            },
        }
    }

    fn same(&self, other: &Key<'_>) -> bool {
        match (self, other) {
            (Self::Id(a), Key::Id(b)) => a == b,
            (Self::Url(a), Key::Url(b)) => {
                if a.is_ascii() && b.is_ascii() {
                    a.eq_ignore_ascii_case(b)
                } else {
                    a.to_lowercase() == b.to_lowercase()
                }
            }
            (Self::Text(a), Key::Text(b)) => same_folded(a, b),
            _ => false,
        }
    }
}

/// `fold_text(a) == fold_text(b)`; for ASCII, word by word in place.
fn same_folded(a: &str, b: &str) -> bool {
    if !(a.is_ascii() && b.is_ascii()) {
        return fold_text(a) == fold_text(b);
    }
    fn words(s: &str) -> impl Iterator<Item = &str> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
    }
    let (mut wa, mut wb) = (words(a), words(b));
    loop {
        match (wa.next(), wb.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// Source names as a value lists them: sorted, each once.
fn sorted_names(names: impl Iterator<Item = Arc<str>>) -> Arc<[Arc<str>]> {
    let mut list: Vec<Arc<str>> = names.collect();
    list.sort();
    list.dedup();
    Arc::from(list)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(field: Field, v: &str) -> Observation {
        Observation::new(field, v)
    }

    /// What sources `a` and `b`, trusted alike (0.5), reported.
    fn merge_equal(a: &[Observation], b: &[Observation]) -> Option<Box<Profile>> {
        merge(&[
            Reported {
                source: "a",
                weight: 0.5,
                observations: a,
            },
            Reported {
                source: "b",
                weight: 0.5,
                observations: b,
            },
        ])
    }

    #[test]
    fn folded_comparison_agrees_with_fold_text() {
        let texts = [
            "Ada Lovelace",
            "ada  lovelace",
            " ADA-LOVELACE ",
            "Ada Lovelac",
            "Ada Lovelace Jr",
            "Zoë O'Brien",
            "zoe o brien",
            "",
            "--",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(
                    same_folded(a, b),
                    fold_text(a) == fold_text(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn nothing_reported_is_no_profile() {
        assert_eq!(
            merge(&[Reported {
                source: "a",
                weight: 0.5,
                observations: &[]
            }]),
            None
        );
    }

    #[test]
    fn agreement_raises_confidence() {
        let a = [obs(Field::FullName, "Ada Lovelace")];
        let b = [obs(Field::FullName, "ada  lovelace")];
        let one = merge(&[Reported {
            source: "a",
            weight: 0.6,
            observations: &a,
        }])
        .expect("profile");
        let two = merge(&[
            Reported {
                source: "a",
                weight: 0.6,
                observations: &a,
            },
            Reported {
                source: "b",
                weight: 0.6,
                observations: &b,
            },
        ])
        .expect("profile");
        let (c1, c2) = (one.name.expect("name").best, two.name.expect("name").best);
        assert_eq!(c1.confidence, 0.6);
        assert_eq!(c2.confidence, 0.84);
        assert_eq!(*c2.sources, [Arc::from("a"), Arc::from("b")]);
        assert_eq!(c2.value, "Ada Lovelace", "first spelling seen is displayed");
    }

    #[test]
    fn source_lists_are_sorted_whatever_order_the_answers_came_in() {
        let name = [obs(Field::FullName, "Ada Lovelace")];
        let title = [obs(Field::JobTitle, "Engineer")];
        let report = |source, observations| Reported {
            source,
            weight: 0.6,
            observations,
        };
        let p = merge(&[
            report("zeta", &name),
            report("mid", &title),
            report("alpha", &name),
        ])
        .expect("profile");
        assert_eq!(
            *p.name.expect("name").best.sources,
            [Arc::from("alpha"), Arc::from("zeta")]
        );
        assert_eq!(
            *p.job_title.expect("title").best.sources,
            [Arc::from("mid")]
        );

        let p =
            merge(&[report("c", &name), report("a", &name), report("b", &name)]).expect("profile");
        let sources = p.name.expect("name").best.sources;
        assert_eq!(*sources, [Arc::from("a"), Arc::from("b"), Arc::from("c")]);
    }

    #[test]
    fn one_source_repeating_itself_is_not_agreement() {
        let a = [
            obs(Field::JobTitle, "Engineer"),
            obs(Field::JobTitle, "engineer"),
        ];
        let p = merge(&[Reported {
            source: "a",
            weight: 0.5,
            observations: &a,
        }])
        .expect("profile");
        assert_eq!(p.job_title.expect("title").best.confidence, 0.5);
    }

    #[test]
    fn conflicts_become_ranked_alternatives() {
        let a = [obs(Field::CompanyName, "Acme")];
        let b = [obs(Field::CompanyName, "Globex")];
        let c = [obs(Field::CompanyName, "ACME")];
        let p = merge(&[
            Reported {
                source: "a",
                weight: 0.6,
                observations: &a,
            },
            Reported {
                source: "b",
                weight: 0.6,
                observations: &b,
            },
            Reported {
                source: "c",
                weight: 0.6,
                observations: &c,
            },
        ])
        .expect("profile");
        let company = p.company.expect("company").name.expect("name");
        assert_eq!(company.best.value, "Acme");
        assert_eq!(company.alternatives.len(), 1);
        assert_eq!(company.alternatives[0].value, "Globex");
        assert!(company.best.confidence > company.alternatives[0].confidence);
        assert!(
            company.best.confidence < 0.84,
            "a conflict lowers confidence below plain agreement"
        );
    }

    #[test]
    fn multi_valued_fields_keep_every_value() {
        let a = [
            obs(Field::Email, "ada@example.com"),
            obs(Field::Email, "ada@work.example"),
        ];
        let b = [obs(Field::Email, "ADA@example.com")];
        let p = merge_equal(&a, &b).expect("profile");
        assert_eq!(p.emails.len(), 2);
        assert_eq!(p.emails[0].value, "ada@example.com");
        assert_eq!(p.emails[0].confidence, 0.75);
        assert_eq!(p.emails[1].confidence, 0.5);
    }

    #[test]
    fn every_field_lands_in_its_place_and_ties_keep_first_seen_order() {
        let a = [
            obs(Field::Website, "https://b.example"),
            obs(Field::FullName, "Ada Lovelace"),
            obs(Field::Fact("registrar"), "Registrar A"),
            obs(Field::FirstName, "Ada"),
            obs(Field::LastName, "Lovelace"),
            obs(Field::JobTitle, "Engineer"),
            obs(Field::CompanyName, "Acme"),
            obs(Field::CompanyDomain, "acme.example"),
            obs(Field::Location, "London"),
            obs(Field::Phone, "+442071234567"),
            obs(Field::Profile, "https://github.com/ada"),
            obs(Field::Photo, "https://img.example/a.png"),
            obs(Field::Bio, "Writes programs"),
            obs(Field::Website, "https://a.example"),
            obs(Field::Fact("mail_provider"), "Mailco"),
        ];
        let b = [
            obs(Field::Location, "Paris"),
            obs(Field::Fact("registrar"), "Registrar B"),
        ];
        let p = merge_equal(&a, &b).expect("profile");
        let best = |r: &Option<Ranked>| r.as_ref().map(|r| r.best.value.to_string());
        assert_eq!(best(&p.name).as_deref(), Some("Ada Lovelace"));
        assert_eq!(best(&p.first_name).as_deref(), Some("Ada"));
        assert_eq!(best(&p.last_name).as_deref(), Some("Lovelace"));
        assert_eq!(best(&p.job_title).as_deref(), Some("Engineer"));
        assert_eq!(best(&p.photo).as_deref(), Some("https://img.example/a.png"));
        assert_eq!(best(&p.bio).as_deref(), Some("Writes programs"));
        let company = p.company.as_ref().expect("company");
        assert_eq!(best(&company.name).as_deref(), Some("Acme"));
        assert_eq!(best(&company.domain).as_deref(), Some("acme.example"));
        assert_eq!(p.phones.len(), 1);
        assert_eq!(p.profiles[0].value, "https://github.com/ada");
        // Equal weight: the first value seen wins, the other is its alternative.
        let location = p.location.as_ref().expect("location");
        assert_eq!(location.best.value, "London");
        assert_eq!(location.alternatives[0].value, "Paris");
        let registrar = &p.facts["registrar"];
        assert_eq!(registrar.best.value, "Registrar A");
        assert_eq!(registrar.alternatives[0].value, "Registrar B");
        assert_eq!(p.facts["mail_provider"].best.value, "Mailco");
        let sites: Vec<String> = p.websites.iter().map(|w| w.value.to_string()).collect();
        assert_eq!(sites, ["https://b.example", "https://a.example"]);
    }

    #[test]
    fn confidence_stays_in_unit_interval() {
        let a = [obs(Field::Bio, "x")];
        let p = merge(&[Reported {
            source: "a",
            weight: 7.0,
            observations: &a,
        }])
        .expect("profile");
        let c = p.bio.expect("bio").best.confidence;
        assert!((0.0..=1.0).contains(&c));
    }

    #[test]
    fn name_is_built_from_first_and_last() {
        let a = [
            obs(Field::FirstName, "Ada"),
            obs(Field::LastName, "Lovelace"),
        ];
        let p = merge(&[Reported {
            source: "a",
            weight: 0.5,
            observations: &a,
        }])
        .expect("profile");
        assert_eq!(p.name.expect("name").best.value, "Ada Lovelace");
    }

    #[test]
    fn identifiers_cover_contacts_and_name_at_company() {
        let a = [
            obs(Field::Email, "ada@example.com"),
            obs(Field::Phone, "+33612345678"),
            obs(Field::Profile, "https://github.com/ada"),
            obs(Field::FullName, "Ada Lovelace"),
            obs(Field::CompanyName, "Acme"),
        ];
        let p = merge(&[Reported {
            source: "a",
            weight: 0.5,
            observations: &a,
        }])
        .expect("profile");
        let ids: Vec<String> = p.identifiers().iter().map(|i| i.canonical()).collect();
        assert_eq!(
            ids,
            [
                "ada@example.com",
                "+33612345678",
                "github.com/ada",
                "ada lovelace|acme"
            ]
        );
    }
}
