use std::collections::BTreeMap;

use super::{Company, Field, Observation, Profile, Ranked, Reported, Sourced};
use crate::domain::fold_text;

/// Merges what every source reported into one profile, or `None` when nobody reported anything.
///
/// Values are grouped by a comparison key (folded text, or the canonical identifier). A value reported by
/// sources with weights `w1..wn` scores `1 - Π(1 - wi)`, so independent agreement raises it and one source
/// repeating itself does not. For single-valued fields the score is then scaled by the value's share of
/// all weight on that field, so conflicts lower everyone's confidence; the rest become ranked alternatives.
pub fn merge(reports: &[Reported<'_>]) -> Option<Profile> {
    let mut groups: BTreeMap<(Field, String), Group> = BTreeMap::new();
    let mut order = 0usize;
    for report in reports {
        let weight = report.weight.clamp(0.01, 0.99);
        for obs in report.observations.iter().filter(|o| !o.value.is_empty()) {
            let key = (obs.field, comparison_key(obs));
            let group = groups.entry(key).or_insert_with(|| {
                order += 1;
                Group {
                    display: obs.value.clone(),
                    id: obs.identifier().cloned(),
                    detail: None,
                    sources: BTreeMap::new(),
                    first_seen: order,
                }
            });
            group.sources.entry(report.source).or_insert(weight);
            if group.detail.is_none() {
                group.detail.clone_from(&obs.detail);
            }
        }
    }
    if groups.is_empty() {
        return None;
    }

    let mut by_field: BTreeMap<Field, Vec<Sourced>> = BTreeMap::new();
    let mut field_weight: BTreeMap<Field, f64> = BTreeMap::new();
    for ((field, _), g) in &groups {
        *field_weight.entry(*field).or_default() += g.sources.values().sum::<f64>();
    }
    let mut ranked: Vec<(&(Field, String), &Group)> = groups.iter().collect();
    ranked.sort_by_key(|(_, g)| g.first_seen);
    for ((field, _), g) in ranked {
        let agreement = 1.0 - g.sources.values().map(|w| 1.0 - w).product::<f64>();
        let share = if field.is_multi() {
            1.0
        } else {
            g.sources.values().sum::<f64>() / field_weight[field]
        };
        by_field.entry(*field).or_default().push(Sourced {
            value: g.display.clone(),
            confidence: round3(agreement * share),
            sources: g.sources.keys().map(|s| (*s).to_string()).collect(),
            detail: g.detail.clone(),
            status: None,
            evidence: None,
            id: g.id.clone(),
        });
    }
    for values in by_field.values_mut() {
        // Stable: equal confidence keeps first-seen order.
        values.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(b.sources.len().cmp(&a.sources.len()))
        });
    }

    let mut take_ranked = |f: Field| by_field.remove(&f).and_then(into_ranked);
    let mut p = Profile {
        name: take_ranked(Field::FullName),
        first_name: take_ranked(Field::FirstName),
        last_name: take_ranked(Field::LastName),
        job_title: take_ranked(Field::JobTitle),
        location: take_ranked(Field::Location),
        photo: take_ranked(Field::Photo),
        bio: take_ranked(Field::Bio),
        ..Profile::default()
    };
    let company = Company {
        name: take_ranked(Field::CompanyName),
        domain: take_ranked(Field::CompanyDomain),
    };
    if company.name.is_some() || company.domain.is_some() {
        p.company = Some(company);
    }
    for (field, values) in by_field {
        match field {
            Field::Email => p.emails = values,
            Field::Phone => p.phones = values,
            Field::Profile => p.profiles = values,
            Field::Website => p.websites = values,
            Field::Fact(name) => {
                if let Some(r) = into_ranked(values) {
                    p.facts.insert(name, r);
                }
            }
            _ => {}
        }
    }
    if p.name.is_none()
        && let (Some(first), Some(last)) = (&p.first_name, &p.last_name)
    {
        let mut best = first.best.clone();
        best.value = format!("{} {}", first.best.value, last.best.value);
        best.confidence = round3(first.best.confidence.min(last.best.confidence));
        best.sources.extend(last.best.sources.iter().cloned());
        best.sources.sort();
        best.sources.dedup();
        p.name = Some(Ranked {
            best,
            alternatives: Vec::new(),
        });
    }
    Some(p)
}

struct Group<'a> {
    display: String,
    id: Option<crate::domain::Identifier>,
    detail: Option<String>,
    sources: BTreeMap<&'a str, f64>,
    first_seen: usize,
}

fn comparison_key(obs: &Observation) -> String {
    match obs.identifier() {
        Some(id) => id.canonical(),
        None => match obs.field {
            Field::Photo | Field::Website => obs.value.trim_end_matches('/').to_lowercase(),
            _ => fold_text(&obs.value),
        },
    }
}

fn into_ranked(mut values: Vec<Sourced>) -> Option<Ranked> {
    if values.is_empty() {
        return None;
    }
    let best = values.remove(0);
    Some(Ranked {
        best,
        alternatives: values,
    })
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
        assert_eq!(c2.sources, ["a", "b"]);
        assert_eq!(c2.value, "Ada Lovelace", "first spelling seen is displayed");
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
        let p = merge(&[
            Reported {
                source: "a",
                weight: 0.5,
                observations: &a,
            },
            Reported {
                source: "b",
                weight: 0.5,
                observations: &b,
            },
        ])
        .expect("profile");
        assert_eq!(p.emails.len(), 2);
        assert_eq!(p.emails[0].value, "ada@example.com");
        assert_eq!(p.emails[0].confidence, 0.75);
        assert_eq!(p.emails[1].confidence, 0.5);
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
