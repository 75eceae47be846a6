//! The concurrent fan-out: every enabled source that can use an identifier is called at once, each under
//! its own timeout and all under one deadline; identifiers that sources report are followed (hops) within
//! the same deadline. Partial results are kept: a slow or broken source never breaks the lookup.
//!
//! Paid providers do not join the concurrent fan-out. Once the free sources have settled, they run as a
//! waterfall: one at a time in their configured order, each on the best identifier it accepts, and only
//! while a wanted field ([`Want`]) is still missing.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use smallvec::SmallVec;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::want::{self, Want};
use super::{Inner, Lookup, SourceEvent, SourceReport};
use crate::domain::{Identifier, Query};
use crate::exclusion::ExclusionCheck;
use crate::profile::{self, Field, Observation, Reported};
use crate::sources::{Registered, SharedAnswer, SourceError, SourceStatus};

/// What one source did over the whole lookup (it may be called once per identifier it accepts).
struct Progress {
    status: SourceStatus,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
    /// Every answer this source gave, shared with the answer cache rather than copied out of it.
    answers: SmallVec<[Arc<[Observation]>; 2]>,
    in_flight: usize,
}

/// The identifiers a lookup met, each stored once; the bookkeeping refers to them by index. A lookup
/// meets a handful, so this and the other per-lookup lists live on the stack until they outgrow it.
type Ids = SmallVec<[Arc<Identifier>; 8]>;

struct CallResult {
    source: usize,
    hop: u32,
    /// Index of the identifier asked about in the lookup's identifier store.
    id: usize,
    started: Instant,
    result: SharedAnswer,
}

pub(super) async fn run(
    inner: &Inner,
    query: &Query,
    timeout: Duration,
    only: Option<&[String]>,
    events: Option<mpsc::UnboundedSender<SourceEvent>>,
    wanted: &[Want],
) -> Lookup {
    let start = Instant::now();
    let deadline = start + timeout;
    let sources = &inner.sources.sources;
    let selected: SmallVec<[bool; 16]> = sources
        .iter()
        .map(|s| only.is_none_or(|names| names.iter().any(|n| n == s.name())))
        .collect();
    let mut progress: Vec<Progress> = sources
        .iter()
        .map(|_| Progress {
            status: SourceStatus::Skipped,
            first_start: None,
            last_end: None,
            answers: SmallVec::new(),
            in_flight: 0,
        })
        .collect();

    // Read before the first check: see `finish`.
    let list_version = inner.exclusion.version();
    let initial = query.identifiers();
    if inner.exclusion.any_excluded(&mut initial.iter()) {
        // Nobody is asked. The answer mirrors a miss from every source that would have been asked.
        for (i, s) in sources.iter().enumerate() {
            if selected[i] && initial.iter().any(|id| s.source.accepts(id)) {
                progress[i].status = SourceStatus::Miss;
            }
        }
        let checked = Checked {
            ids: &[],
            list_version,
        };
        return finish(inner, sources, progress, start, true, 0.0, checked);
    }

    // Every identifier met, stored once; the bookkeeping below refers to them by index. A lookup meets
    // a handful, so linear searches beat hashing them.
    let mut ids = Ids::new();
    // Identifiers followed, in the order they became known: the query's first, the best for a paid call.
    let mut known: SmallVec<[usize; 8]> = SmallVec::new();
    let mut waterfall: VecDeque<usize> = (0..sources.len())
        .filter(|&i| selected[i] && sources[i].paid)
        .collect();
    let mut cost = 0.0;
    // (source, identifier) pairs already asked, or reported by that source itself.
    let mut tried: SmallVec<[(usize, usize); 16]> = SmallVec::new();
    let mut calls = FuturesUnordered::new();
    let mut frontier: SmallVec<[(usize, u32); 8]> = initial
        .into_iter()
        .map(|id| (index_of(&mut ids, Cow::Owned(id)), 0))
        .collect();
    let mut withheld = false;
    // One timer for the whole lookup, not one per answer awaited.
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);

    loop {
        for (idx, hop) in frontier.drain(..) {
            if known.contains(&idx) {
                continue;
            }
            known.push(idx);
            for (i, s) in sources.iter().enumerate() {
                if selected[i]
                    && !s.paid
                    && s.source.accepts(&ids[idx])
                    && !tried.contains(&(i, idx))
                {
                    tried.push((i, idx));
                    progress[i].in_flight += 1;
                    progress[i].first_start.get_or_insert_with(Instant::now);
                    calls.push(call(i, s, Arc::clone(&ids[idx]), idx, hop, deadline));
                }
            }
        }
        let next = tokio::select! {
            biased;
            next = calls.next() => Ok(next),
            () = &mut expiry => Err(()),
        };
        let done = match next {
            Ok(Some(done)) => done,
            // Everything asked has answered: the waterfall may ask the next paid provider.
            Ok(None) => {
                let observed = progress
                    .iter()
                    .flat_map(|p| p.answers.iter().flat_map(|a| a.iter()));
                if waterfall.is_empty() || want::missing(wanted, query, observed).is_empty() {
                    break;
                }
                let Some((i, idx)) = next_paid(&mut waterfall, sources, &ids, &known) else {
                    break;
                };
                tried.push((i, idx));
                progress[i].in_flight += 1;
                progress[i].first_start.get_or_insert_with(Instant::now);
                calls.push(call(
                    i,
                    &sources[i],
                    Arc::clone(&ids[idx]),
                    idx,
                    0,
                    deadline,
                ));
                continue;
            }
            Err(_) => break,
        };
        let p = &mut progress[done.source];
        let source = &sources[done.source];
        let now = Instant::now();
        p.in_flight -= 1;
        p.last_end = Some(now);
        let latency = now.duration_since(done.started);
        inner.source_metrics[done.source].call(status_of(&done.result), latency);
        let observations = match done.result {
            Ok(answer) => answer,
            Err(SourceError::Objected) => {
                tracing::info!(
                    source = source.name(),
                    "Upstream reports an objection (451); withholding the result."
                );
                withheld = true;
                break;
            }
            Err(err) => {
                tracing::warn!(source = source.name(), retryable = err.retryable(), error = %err, "Upstream call failed.");
                p.status = p.status_or(err.status());
                emit(&events, source, err.status(), latency, 0);
                continue;
            }
        };
        let status = if observations.is_empty() {
            SourceStatus::Miss
        } else {
            SourceStatus::Hit
        };
        p.status = p.status_or(status);
        if source.paid && status == SourceStatus::Hit {
            cost += source.cost_per_hit;
            inner
                .metrics
                .provider_cost(source.name(), source.cost_per_hit);
        }
        // Check every identifier a source produced before it is followed or any value leaves. One met
        // earlier in this lookup was checked then and is never asked about again; an opt-out since then
        // is caught by the check of the whole profile before release.
        if inner.exclusion.any_excluded(
            &mut observations
                .iter()
                .filter_map(Observation::identifier)
                .filter(|id| !ids.iter().any(|known| **known == **id)),
        ) {
            withheld = true;
            break;
        }
        for id in observations.iter().filter_map(Observation::identifier) {
            let idx = index_of(&mut ids, Cow::Borrowed(id));
            // A source is never asked again about what it reported itself.
            if !tried.contains(&(done.source, idx)) {
                tried.push((done.source, idx));
            }
            if done.hop < inner.limits.max_hops {
                frontier.push((idx, done.hop + 1));
            }
        }
        let confirmation = confirmation(&observations, &ids[done.id]);
        emit(&events, source, status, latency, observations.len());
        p.answers.push(observations);
        if let Some(c) = confirmation {
            // The query's own email, checked before the fan-out started and already known.
            p.answers.push(Arc::from([c]));
        }
    }

    // Whatever is still running at the deadline timed out; it is dropped (and so cancelled) here. When the
    // answer is withheld the calls were cut short on purpose and read as misses.
    let cut = if withheld {
        SourceStatus::Miss
    } else {
        SourceStatus::Timeout
    };
    for p in progress.iter_mut().filter(|p| p.in_flight > 0) {
        p.status = p.status_or(cut);
        p.last_end = Some(deadline.min(Instant::now()));
    }
    drop(calls);
    let checked = Checked {
        ids: &ids,
        list_version,
    };
    finish(inner, sources, progress, start, withheld, cost, checked)
}

/// The identifiers a lookup checked against the exclusion list as it met them, and the list's version
/// read before the first check.
struct Checked<'a> {
    ids: &'a [Arc<Identifier>],
    list_version: Option<u64>,
}

impl Checked<'_> {
    /// The identifiers the check before release may skip: those checked when met, provided nothing was
    /// added to the list since the lookup began. None otherwise.
    fn still_absent(&self, exclusion: &dyn ExclusionCheck) -> &[Arc<Identifier>] {
        if self.list_version.is_some() && exclusion.version() == self.list_version {
            self.ids
        } else {
            &[]
        }
    }
}

/// A source that found a person by their email address confirms the address: it is added as that
/// source's own observation (the email status counts it as evidence). Facts about the domain alone (DNS,
/// RDAP) confirm nothing.
fn confirmation(observations: &[Observation], id: &Identifier) -> Option<Observation> {
    let Identifier::Email(email) = id else {
        return None;
    };
    let about_a_person = observations
        .iter()
        .any(|o| !matches!(o.field, Field::Fact(_)));
    let listed = observations
        .iter()
        .any(|o| o.field == Field::Email && o.value == email.as_str());
    (about_a_person && !listed).then(|| Observation::email(email))
}

/// The next paid provider in the waterfall that accepts a known identifier, with the first such
/// identifier. Providers that accept none stay `skipped`.
fn next_paid(
    waterfall: &mut VecDeque<usize>,
    sources: &[Registered],
    ids: &[Arc<Identifier>],
    known: &[usize],
) -> Option<(usize, usize)> {
    while let Some(i) = waterfall.pop_front() {
        if let Some(&idx) = known
            .iter()
            .find(|&&idx| sources[i].source.accepts(&ids[idx]))
        {
            return Some((i, idx));
        }
    }
    None
}

/// Where `id` is in the lookup's identifier store, adding it if new (copied only when borrowed).
fn index_of(ids: &mut Ids, id: Cow<'_, Identifier>) -> usize {
    match ids.iter().position(|known| **known == *id) {
        Some(i) => i,
        None => {
            ids.push(Arc::new(id.into_owned()));
            ids.len() - 1
        }
    }
}

impl Progress {
    /// Skipped is replaced by anything; otherwise the better of the two statuses wins.
    fn status_or(&self, new: SourceStatus) -> SourceStatus {
        if self.status == SourceStatus::Skipped {
            new
        } else {
            self.status.combine(new)
        }
    }
}

async fn call(
    i: usize,
    s: &Registered,
    id: Arc<Identifier>,
    idx: usize,
    hop: u32,
    deadline: Instant,
) -> CallResult {
    let started = Instant::now();
    // The lookup's deadline is the fan-out loop's one timer; a source's own timeout needs a timer here
    // only when the source does not keep it itself.
    let result = if s.self_timed() {
        s.source.lookup_shared(&id).await
    } else {
        let until = deadline.min(started + s.timeout);
        match tokio::time::timeout_at(until, s.source.lookup_shared(&id)).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout),
        }
    };
    CallResult {
        source: i,
        hop,
        id: idx,
        started,
        result,
    }
}

fn status_of(r: &SharedAnswer) -> SourceStatus {
    match r {
        Ok(o) if o.is_empty() => SourceStatus::Miss,
        Ok(_) => SourceStatus::Hit,
        Err(e) => e.status(),
    }
}

fn emit(
    events: &Option<mpsc::UnboundedSender<SourceEvent>>,
    s: &Registered,
    status: SourceStatus,
    latency: Duration,
    fields: usize,
) {
    if let Some(tx) = events {
        // A closed receiver means the client left; the fan-out is about to be dropped anyway.
        let _ = tx.send(SourceEvent {
            name: Arc::clone(&s.label),
            status,
            latency_ms: millis(latency),
            fields,
        });
    }
}

fn finish(
    inner: &Inner,
    sources: &[Registered],
    progress: Vec<Progress>,
    start: Instant,
    mut withheld: bool,
    cost: f64,
    checked: Checked<'_>,
) -> Lookup {
    // One report per answer; the merge counts a source once per value however many answers hold it.
    let reported: Vec<Reported<'_>> = sources
        .iter()
        .zip(&progress)
        .flat_map(|(s, p)| {
            p.answers.iter().map(|a| Reported {
                source: s.name(),
                weight: s.weight,
                observations: a,
            })
        })
        .collect();
    let mut profile = if withheld {
        None
    } else {
        profile::merge(&reported)
    };
    if let Some(p) = profile.as_mut() {
        profile::annotate_emails(p);
    }
    // Every identifier in the profile is checked once more before it is released, so that an opt-out
    // that landed during the lookup withholds it. One the lookup already checked is skipped while the
    // list has not changed since: it cannot have been added. Identifiers the merge composed (a name at
    // a company) are new here and always checked.
    if profile.as_ref().is_some_and(|p| {
        let ids = p.identifiers_borrowed();
        let exclusion = &*inner.exclusion;
        let absent = checked.still_absent(exclusion);
        exclusion.any_excluded(
            &mut ids
                .iter()
                .map(|id| &**id)
                .filter(|id| !absent.iter().any(|known| **known == **id)),
        )
    }) {
        withheld = true;
        profile = None;
    }
    let sources = sources
        .iter()
        .zip(&progress)
        .map(|(s, p)| SourceReport {
            name: Arc::clone(&s.label),
            // A withheld answer must read like a miss: no source may claim a hit.
            status: if withheld && p.status == SourceStatus::Hit {
                SourceStatus::Miss
            } else {
                p.status
            },
            latency_ms: match (p.first_start, p.last_end) {
                (Some(a), Some(b)) => millis(b.saturating_duration_since(a)),
                _ => 0,
            },
        })
        .collect();
    Lookup {
        found: profile.is_some(),
        profile,
        sources,
        took_ms: millis(start.elapsed()),
        // What was spent is in the metrics; a withheld answer must not hint at a paid hit.
        cost: if withheld { 0.0 } else { cost },
        withheld,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use futures::future::BoxFuture;

    use super::*;
    use crate::domain::{ProfileUrl, QueryInput};
    use crate::exclusion::ExclusionCheck;
    use crate::pipeline::{Limits, LookupOptions, Pipeline};
    use crate::sources::{Registered, Source, SourceSet};
    use crate::telemetry::Metrics;

    /// Answers an email with the person's GitHub account and the email itself, and a profile with the
    /// same account and an X account: every identifier is reported twice across the lookup.
    struct Echo(&'static str);

    impl Source for Echo {
        fn name(&self) -> &str {
            self.0
        }

        fn accepts(&self, id: &Identifier) -> bool {
            matches!(id, Identifier::Email(_) | Identifier::Profile(_))
        }

        fn lookup<'a>(
            &'a self,
            id: &'a Identifier,
        ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
            let profile = |url: &str| {
                ProfileUrl::parse(url)
                    .map(|p| Observation::profile(&p))
                    .map_err(|_| SourceError::Malformed("test URL".into()))
            };
            async move {
                match id {
                    Identifier::Email(e) => Ok(vec![
                        profile("https://github.com/ada")?,
                        Observation::email(e),
                    ]),
                    _ => Ok(vec![
                        profile("https://github.com/ada")?,
                        profile("https://x.com/ada")?,
                    ]),
                }
            }
            .boxed()
        }
    }

    /// Excludes nothing and remembers what it was asked. `versioned`: it tells that it never changes
    /// (as the real list does while nobody opts out); otherwise it cannot tell.
    #[derive(Default)]
    struct Counting {
        asked: Mutex<Vec<String>>,
        versioned: bool,
    }

    impl ExclusionCheck for Counting {
        fn is_excluded(&self, id: &Identifier) -> bool {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(id.canonical());
            }
            false
        }

        fn version(&self) -> Option<u64> {
            self.versioned.then_some(0)
        }
    }

    /// Counts checks like [`Counting`]; the first check of `who` is where that person opts out, so
    /// every later check of it says excluded.
    struct OptingOut {
        asked: Mutex<Vec<String>>,
        who: &'static str,
    }

    impl ExclusionCheck for OptingOut {
        fn is_excluded(&self, id: &Identifier) -> bool {
            let canonical = id.canonical();
            let Ok(mut asked) = self.asked.lock() else {
                return true;
            };
            let seen = asked.contains(&canonical);
            asked.push(canonical);
            seen && asked.last().is_some_and(|c| c.contains(self.who))
        }

        /// One more once `who` has opted out, as the real list's version moves with each addition.
        fn version(&self) -> Option<u64> {
            let asked = self.asked.lock().ok()?;
            Some(u64::from(asked.iter().any(|c| c.contains(self.who))))
        }
    }

    /// Answers after ten seconds, whatever it is asked.
    struct Sleepy;

    impl Source for Sleepy {
        fn name(&self) -> &str {
            "sleepy"
        }

        fn accepts(&self, id: &Identifier) -> bool {
            matches!(id, Identifier::Email(_))
        }

        fn lookup<'a>(
            &'a self,
            _: &'a Identifier,
        ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(Vec::new())
            }
            .boxed()
        }
    }

    /// Two sources that report the same profiles: an email leads to `github.com/ada`, which leads to
    /// `x.com/ada`.
    fn two_echoes() -> SourceSet {
        SourceSet::unguarded(vec![
            Registered::free(Arc::new(Echo("one")), 1_000, 0.6),
            Registered::free(Arc::new(Echo("two")), 1_000, 0.6),
        ])
    }

    /// A pipeline over `sources` with a 5 s deadline and two hops.
    fn pipeline_over(sources: SourceSet, exclusion: Arc<dyn ExclusionCheck>) -> Pipeline {
        let limits = Limits {
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(5),
            max_hops: 2,
            default_want: Vec::new(),
        };
        Pipeline::new(sources, exclusion, limits, Arc::new(Metrics::new()))
    }

    fn email_query(email: &str) -> Query {
        let input = QueryInput {
            email: Some(email.into()),
            ..QueryInput::default()
        };
        Query::parse(&input, None).expect("test email is valid")
    }

    /// One lookup of an email: the sleepy source's status and the time taken.
    async fn sleepy_lookup(sources: SourceSet) -> (SourceStatus, Duration) {
        let pipeline = pipeline_over(sources, Arc::new(crate::exclusion::NoExclusions));
        let started = Instant::now();
        let lookup = pipeline
            .lookup(&email_query("slow@example.com"), LookupOptions::default())
            .await;
        (lookup.sources[0].status, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_keeps_no_timeout_is_cut_by_the_fan_out_at_its_own() {
        let sleepy = Registered::free(Arc::new(Sleepy), 100, 0.6);
        assert!(!sleepy.self_timed());

        let (status, took) = sleepy_lookup(SourceSet::unguarded(vec![sleepy])).await;

        assert_eq!(status, SourceStatus::Timeout);
        assert_eq!(
            took,
            Duration::from_millis(100),
            "cut at the source's timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_keeps_the_timeout_it_was_given_and_a_looser_one_leaves_it_to_the_fan_out() {
        use crate::sources::etiquette::GuardConfig;

        for (guard_ms, self_timed) in [(100, true), (60_000, false)] {
            let mut set = SourceSet::default();
            set.push(
                Registered::free(Arc::new(Sleepy), 100, 0.6),
                GuardConfig::new(0, 4, Duration::from_millis(guard_ms)),
            );
            assert_eq!(
                set.sources[0].self_timed(),
                self_timed,
                "guard {guard_ms} ms"
            );

            let (status, took) = sleepy_lookup(set).await;

            assert_eq!(status, SourceStatus::Timeout, "guard {guard_ms} ms");
            assert_eq!(took, Duration::from_millis(100), "guard {guard_ms} ms");
        }
    }

    /// What a lookup of `ada@example.com` over [`two_echoes`] asked `check`, sorted, after checking
    /// that it found the profile.
    async fn checks_of_one_lookup(check: Arc<Counting>) -> Vec<String> {
        let pipeline = pipeline_over(two_echoes(), check.clone());
        let lookup = pipeline
            .lookup(&email_query("ada@example.com"), LookupOptions::default())
            .await;
        assert!(lookup.found);
        let mut asked = check.asked.lock().expect("not poisoned").clone();
        asked.sort();
        asked
    }

    /// Each of the lookup's three identifiers, `times` times, spelled as `asked` spells them.
    fn each_of_the_three(asked: &[String], times: usize) -> Vec<String> {
        let mut expected = Vec::new();
        for id in ["ada@example.com", "github.com/ada", "x.com/ada"] {
            let canonical = asked
                .iter()
                .find(|a| a.contains(id))
                .unwrap_or_else(|| panic!("{id} was never checked: {asked:?}"));
            expected.extend(std::iter::repeat_n(canonical.clone(), times));
        }
        expected.sort();
        expected
    }

    #[tokio::test]
    async fn each_identifier_is_checked_when_first_met_and_again_before_release() {
        // A list that cannot tell whether it changed: every check is made again before release.
        let asked = checks_of_one_lookup(Arc::new(Counting::default())).await;
        assert_eq!(
            asked,
            each_of_the_three(&asked, 2),
            "twice each: when first met, and in the released profile"
        );
    }

    #[tokio::test]
    async fn a_list_unchanged_since_the_lookup_began_is_not_asked_twice_about_anyone() {
        let check = Arc::new(Counting {
            versioned: true,
            ..Counting::default()
        });
        let asked = checks_of_one_lookup(check).await;
        assert_eq!(
            asked,
            each_of_the_three(&asked, 1),
            "once each, when first met: nothing was added since"
        );
    }

    #[tokio::test]
    async fn an_opt_out_landing_while_sources_answer_withholds_the_profile() {
        let check = Arc::new(OptingOut {
            asked: Mutex::default(),
            who: "x.com/ada",
        });
        let pipeline = pipeline_over(two_echoes(), check.clone());

        let lookup = pipeline
            .lookup(&email_query("ada@example.com"), LookupOptions::default())
            .await;

        assert!(!lookup.found, "released a profile its person opted out of");
        assert!(lookup.profile.is_none());
        let asked = check.asked.lock().expect("not poisoned").clone();
        let x = asked.iter().filter(|a| a.contains("x.com/ada")).count();
        assert_eq!(
            x, 2,
            "checked when met, and again before release: {asked:?}"
        );
    }
}
