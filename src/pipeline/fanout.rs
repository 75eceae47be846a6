//! Stage 3, the concurrent fan-out: every selected source that can use an identifier is called at once,
//! each under its own timeout and all under one deadline; identifiers that sources report are followed
//! (hops) within the same deadline, when [`Follow`] admits them. Partial results are kept: a slow or
//! broken source never breaks the lookup. The output is answers and statuses only: merging them is the
//! next stage's.
//!
//! Paid providers do not join the concurrent fan-out. Once the free sources have settled, they run as a
//! waterfall: one at a time in their configured order, each on the best identifier it accepts, and only
//! while a wanted field ([`Want`]) is still missing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use smallvec::SmallVec;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::hold::MissTimes;
use super::spend::SpendCap;
use super::want::{self, Want};
use crate::domain::Identifier;
use crate::exclusion::ExclusionCheck;
use crate::profile::{Field, Observation};
use crate::sources::etiquette::Pace;
use crate::sources::{Registered, SharedAnswer, SourceError, SourceStatus};
use crate::telemetry::{Metrics, SourceMetrics};

/// A progress event: which source finished, how, how fast, how many values. Never the values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceEvent {
    pub name: Arc<str>,
    pub status: SourceStatus,
    pub latency_ms: u64,
    pub fields: usize,
}

/// The identifiers a lookup met, each stored once and shared with the source calls about it. A lookup
/// meets a handful, so they live on the stack until they outgrow it.
pub(crate) type Ids = SmallVec<[Arc<Identifier>; 8]>;

/// Which identifiers reported by sources the fan-out may follow.
pub(crate) trait Follow: Sync {
    /// `new` are the identifiers an answer holds that the lookup has not met yet. `false` stops the
    /// fan-out, and its answer is withheld.
    fn admit(&self, new: &mut dyn Iterator<Item = &Identifier>) -> bool;
}

/// A lookup follows nobody on the exclusion list, and stops when a source reports one: its answer is
/// about an excluded person.
pub(crate) struct Unlisted<'a>(pub &'a dyn ExclusionCheck);

impl Follow for Unlisted<'_> {
    fn admit(&self, new: &mut dyn Iterator<Item = &Identifier>) -> bool {
        !self.0.any_excluded(new)
    }
}

/// The opt-out's expansion follows everyone: its person is on the list already.
pub(crate) struct Everything;

impl Follow for Everything {
    fn admit(&self, _: &mut dyn Iterator<Item = &Identifier>) -> bool {
        true
    }
}

/// What a fan-out is given besides its identifiers.
pub(crate) struct Fanout<'a> {
    pub sources: &'a [Registered],
    /// Which of `sources` this lookup may call.
    pub selected: SmallVec<[bool; 16]>,
    pub source_metrics: &'a [SourceMetrics],
    pub metrics: &'a Metrics,
    pub deadline: Instant,
    pub max_hops: u32,
    pub wanted: &'a [Want],
    pub events: Option<mpsc::UnboundedSender<SourceEvent>>,
    /// Where each source's misses are timed, for the answers that must read like one.
    pub misses: &'a MissTimes,
    /// A batch row's pacing: its calls wait for budget (see [`crate::sources::etiquette::pace`]).
    pub pace: Option<&'a Pace>,
    /// A cap on what paid hits may cost: a provider whose hit would pass it is not asked.
    pub spend: Option<&'a SpendCap>,
}

/// What the fan-out gathered: each source's run, by its position among the sources.
pub(crate) struct Answers {
    pub runs: Vec<Run>,
    /// Every identifier the lookup met, the query's first, each admitted by [`Follow`] when met.
    pub met: Ids,
    /// How many of `met` came with the query.
    pub from_query: usize,
    /// What the paid providers' hits cost.
    pub cost: f64,
    /// Paid providers not asked because the spend cap would have been passed.
    pub capped: SmallVec<[usize; 4]>,
    /// [`Follow`] refused an identifier or a source objected (451): nothing is followed from then on,
    /// and the calls already made run to their end so that the answer takes as long as a miss.
    pub withheld: bool,
}

/// What one source did over the whole lookup (it may be called once per identifier it accepts).
pub(crate) struct Run {
    pub status: SourceStatus,
    pub first_start: Option<Instant>,
    pub last_end: Option<Instant>,
    /// Every answer this source gave, shared with the answer cache rather than copied out of it.
    pub answers: SmallVec<[Arc<[Observation]>; 2]>,
    in_flight: usize,
}

impl Run {
    fn new() -> Self {
        Self {
            status: SourceStatus::Skipped,
            first_start: None,
            last_end: None,
            answers: SmallVec::new(),
            in_flight: 0,
        }
    }

    /// Skipped is replaced by anything; otherwise the better of the two statuses wins.
    fn record(&mut self, new: SourceStatus) {
        self.status = if self.status == SourceStatus::Skipped {
            new
        } else {
            self.status.combine(new)
        };
    }
}

/// One source call's end.
/// The most values one source answer may bring into a lookup. Whatever an upstream sends, the
/// merge, the exclusion check of every identifier and the answer's size stay bounded; real answers
/// hold a few dozen (a company page at most a few hundred: see `extract::MAX_FOUND`).
pub const MAX_OBSERVATIONS: usize = 512;

struct CallResult {
    source: usize,
    hop: u32,
    /// The identifier asked about, by its place in [`Answers::met`].
    id: usize,
    started: Instant,
    result: SharedAnswer,
}

/// Runs the fan-out from `ids` until every call has answered or the deadline passes.
pub(crate) async fn run(plan: Fanout<'_>, ids: Ids, follow: &dyn Follow) -> Answers {
    let mut state = State::new(&plan, ids);
    let mut calls = FuturesUnordered::new();
    // One timer for the whole lookup, not one per answer awaited.
    let expiry = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(expiry);
    loop {
        for (i, idx, hop) in state.next_calls() {
            calls.push(call(
                i,
                &plan.sources[i],
                Arc::clone(&state.met[idx]),
                idx,
                hop,
                plan.deadline,
                plan.pace,
            ));
        }
        let done = tokio::select! {
            biased;
            done = calls.next() => done,
            () = &mut expiry => break,
        };
        match done {
            Some(done) => state.settle(done, follow),
            // Everything asked has answered: the waterfall may ask the next paid provider (not for
            // a withheld answer: its person was found, and a miss would have asked the waterfall
            // with nothing more known).
            None => match state.next_paid() {
                Some((i, idx)) => {
                    calls.push(call(
                        i,
                        &plan.sources[i],
                        Arc::clone(&state.met[idx]),
                        idx,
                        0,
                        plan.deadline,
                        plan.pace,
                    ));
                }
                None => break,
            },
        }
    }
    // Whatever is still running at the deadline timed out; it is dropped (and so cancelled) here.
    drop(calls);
    state.finish()
}

/// The fan-out's bookkeeping; identifiers are referred to by their place in `met`.
struct State<'p, 'a> {
    plan: &'p Fanout<'a>,
    runs: Vec<Run>,
    met: Ids,
    /// How many of `met` came with the query (they come first).
    from_query: usize,
    /// Identifiers whose sources were asked, in the order they became known: the query's first, the
    /// best for a paid call.
    known: SmallVec<[usize; 8]>,
    /// Identifiers to ask about, with their hop.
    frontier: SmallVec<[(usize, u32); 8]>,
    /// (source, identifier) pairs already asked, or reported by that source itself.
    tried: SmallVec<[(usize, usize); 16]>,
    /// Paid providers not asked yet, in waterfall order.
    waterfall: SmallVec<[usize; 4]>,
    /// Providers asked under a reservation of the spend cap not settled yet.
    reserved: SmallVec<[usize; 4]>,
    capped: SmallVec<[usize; 4]>,
    cost: f64,
    withheld: bool,
}

impl<'p, 'a> State<'p, 'a> {
    fn new(plan: &'p Fanout<'a>, ids: Ids) -> Self {
        let sources = plan.sources;
        Self {
            runs: sources.iter().map(|_| Run::new()).collect(),
            frontier: (0..ids.len()).map(|idx| (idx, 0)).collect(),
            from_query: ids.len(),
            met: ids,
            known: SmallVec::new(),
            tried: SmallVec::new(),
            waterfall: (0..sources.len())
                .filter(|&i| plan.selected[i] && sources[i].paid)
                .collect(),
            reserved: SmallVec::new(),
            capped: SmallVec::new(),
            cost: 0.0,
            withheld: false,
            plan,
        }
    }

    /// The free calls the frontier asks for: every selected source that accepts an identifier and
    /// was not asked about it yet.
    fn next_calls(&mut self) -> SmallVec<[(usize, usize, u32); 8]> {
        let mut out = SmallVec::new();
        for (idx, hop) in std::mem::take(&mut self.frontier) {
            if self.known.contains(&idx) {
                continue;
            }
            self.known.push(idx);
            for (i, s) in self.plan.sources.iter().enumerate() {
                if self.plan.selected[i]
                    && !s.paid
                    && s.source.accepts(&self.met[idx])
                    && !self.tried.contains(&(i, idx))
                {
                    self.start(i, idx);
                    out.push((i, idx, hop));
                }
            }
        }
        out
    }

    /// The next paid provider in the waterfall that accepts a known identifier, with the first such
    /// identifier, while a wanted field is missing. Providers that accept none stay `skipped`.
    fn next_paid(&mut self) -> Option<(usize, usize)> {
        if self.withheld || self.waterfall.is_empty() {
            return None;
        }
        let observed = self
            .runs
            .iter()
            .flat_map(|r| r.answers.iter().flat_map(|a| a.iter()));
        let query = self.met[..self.from_query].iter().map(Arc::as_ref);
        if want::missing(self.plan.wanted, query, observed).is_empty() {
            return None;
        }
        while !self.waterfall.is_empty() {
            let i = self.waterfall.remove(0);
            let accepts = |&&idx: &&usize| self.plan.sources[i].source.accepts(&self.met[idx]);
            if let Some(&idx) = self.known.iter().find(accepts) {
                let cost = self.plan.sources[i].cost_per_hit;
                if let Some(cap) = self.plan.spend.filter(|_| cost > 0.0) {
                    if !cap.try_reserve(cost) {
                        self.capped.push(i);
                        continue;
                    }
                    self.reserved.push(i);
                }
                self.start(i, idx);
                return Some((i, idx));
            }
        }
        None
    }

    fn start(&mut self, source: usize, idx: usize) {
        self.tried.push((source, idx));
        let run = &mut self.runs[source];
        run.in_flight += 1;
        run.first_start.get_or_insert_with(Instant::now);
    }

    /// Takes one call's answer in. Once the answer is withheld, every later answer reads as a miss
    /// and nothing is followed.
    fn settle(&mut self, done: CallResult, follow: &dyn Follow) {
        let source = &self.plan.sources[done.source];
        let now = Instant::now();
        let latency = now.duration_since(done.started);
        if let Some(at) = self.reserved.iter().position(|&r| r == done.source) {
            self.reserved.remove(at);
            if let Some(cap) = self.plan.spend {
                let hit = matches!(&done.result, Ok(a) if !a.is_empty());
                cap.settle(source.cost_per_hit, hit);
            }
        }
        let run = &mut self.runs[done.source];
        run.in_flight -= 1;
        run.last_end = Some(now);
        self.plan.source_metrics[done.source].call(status_of(&done.result), latency);
        let observations = match done.result {
            Ok(answer) if answer.len() > MAX_OBSERVATIONS => {
                tracing::warn!(
                    source = source.name(),
                    observations = answer.len(),
                    kept = MAX_OBSERVATIONS,
                    "Upstream answer holds more values than one answer may; the rest are dropped."
                );
                Arc::from(&answer[..MAX_OBSERVATIONS])
            }
            Ok(answer) => answer,
            Err(SourceError::Objected) => {
                tracing::info!(
                    source = source.name(),
                    "Upstream reports an objection (451); withholding the result."
                );
                self.withheld = true;
                self.read_as_miss(done.source, latency);
                return;
            }
            Err(err) => {
                if let Some(by) = err.limited_by() {
                    self.plan.source_metrics[done.source].limited(by);
                }
                tracing::warn!(source = source.name(), retryable = err.retryable(), limited_by = err.limited_by(), error = %err, "Upstream call failed.");
                run.record(err.status());
                self.emit(source, err.status(), latency, 0);
                return;
            }
        };
        if observations.is_empty() {
            self.plan.misses.record(done.source, latency);
            self.read_as_miss(done.source, latency);
            return;
        }
        if self.withheld && !source.source.domain_only() {
            self.read_as_miss(done.source, latency);
            return;
        }
        let status = SourceStatus::Hit;
        run.record(status);
        if source.paid && status == SourceStatus::Hit {
            self.cost += source.cost_per_hit;
            self.plan
                .metrics
                .provider_cost(source.name(), source.cost_per_hit);
        }
        // Every identifier a source produced is admitted before it is followed or any value leaves.
        // One met earlier in this lookup was admitted then; an opt-out since then is caught by the
        // check of the whole profile before release.
        let met = &self.met;
        if !follow.admit(
            &mut observations
                .iter()
                .filter_map(Observation::identifier)
                .filter(|id| !met.iter().any(|known| **known == **id)),
        ) {
            self.withheld = true;
            self.read_as_miss(done.source, latency);
            return;
        }
        for id in observations.iter().filter_map(Observation::identifier) {
            let idx = self.index_of(id);
            // A source is never asked again about what it reported itself.
            if !self.tried.contains(&(done.source, idx)) {
                self.tried.push((done.source, idx));
            }
            if done.hop < self.plan.max_hops {
                self.frontier.push((idx, done.hop + 1));
            }
        }
        let confirmation = confirmation(&observations, &self.met[done.id]);
        self.emit(source, status, latency, observations.len());
        let run = &mut self.runs[done.source];
        run.answers.push(observations);
        if let Some(c) = confirmation {
            // The query's own email, checked before the fan-out started and already known.
            run.answers.push(Arc::from([c]));
        }
    }

    /// Records a call of source `i` as a miss: its status, and a progress event with no fields.
    fn read_as_miss(&mut self, i: usize, latency: Duration) {
        self.runs[i].record(SourceStatus::Miss);
        self.emit(&self.plan.sources[i], SourceStatus::Miss, latency, 0);
    }

    /// Where `id` is in `met`, adding it if new.
    fn index_of(&mut self, id: &Identifier) -> usize {
        match self.met.iter().position(|known| **known == *id) {
            Some(i) => i,
            None => {
                self.met.push(Arc::new(id.clone()));
                self.met.len() - 1
            }
        }
    }

    fn emit(&self, s: &Registered, status: SourceStatus, latency: Duration, fields: usize) {
        if let Some(tx) = &self.plan.events {
            // A closed receiver means the client left; the fan-out is about to be dropped anyway.
            let _ = tx.send(SourceEvent {
                name: Arc::clone(&s.label),
                status,
                latency_ms: millis(latency),
                fields,
            });
        }
    }

    /// Calls still running have timed out.
    fn finish(mut self) -> Answers {
        if let Some(cap) = self.plan.spend {
            // Calls cut by the deadline cost nothing.
            for &i in &self.reserved {
                cap.settle(self.plan.sources[i].cost_per_hit, false);
            }
        }
        let end = self.plan.deadline.min(Instant::now());
        for run in self.runs.iter_mut().filter(|r| r.in_flight > 0) {
            run.record(SourceStatus::Timeout);
            run.last_end = Some(end);
        }
        Answers {
            runs: self.runs,
            met: self.met,
            from_query: self.from_query,
            cost: self.cost,
            capped: self.capped,
            withheld: self.withheld,
        }
    }
}

/// A source that found a person by their email address confirms the address: it is added as that
/// source's own observation (the email status counts it as evidence). What is about the domain alone
/// (DNS and RDAP facts, a company's site) confirms nothing.
fn confirmation(observations: &[Observation], id: &Identifier) -> Option<Observation> {
    let Identifier::Email(email) = id else {
        return None;
    };
    let about_a_person = observations.iter().any(|o| o.field.is_personal());
    let listed = observations
        .iter()
        .any(|o| o.field == Field::Email && o.identifier() == Some(id));
    (about_a_person && !listed).then(|| Observation::email(email.clone()))
}

async fn call(
    i: usize,
    s: &Registered,
    id: Arc<Identifier>,
    idx: usize,
    hop: u32,
    deadline: Instant,
    pace: Option<&Pace>,
) -> CallResult {
    let started = Instant::now();
    // The lookup's deadline is the fan-out loop's one timer; a source's own timeout needs a timer here
    // only when the source does not keep it itself.
    let result = if let Some(pace) = pace {
        // A guard times each paced call once it is made, not while it waits for budget.
        if s.self_timed() {
            s.source.lookup_paced(&id, pace).await
        } else {
            let until = deadline.min(started + s.timeout);
            tokio::time::timeout_at(until, s.source.lookup_paced(&id, pace))
                .await
                .unwrap_or(Err(SourceError::Timeout))
        }
    } else if s.self_timed() {
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

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use futures::future::BoxFuture;

    use super::*;
    use crate::domain::{ProfileUrl, Query, QueryInput};
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
                    .map(Observation::profile)
                    .map_err(|_| SourceError::Malformed("test URL".into()))
            };
            async move {
                match id {
                    Identifier::Email(e) => Ok(vec![
                        profile("https://github.com/ada")?,
                        Observation::email(e.clone()),
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

    /// Answers any email with `n` addresses of its own, as a hostile or broken upstream might.
    struct Flood(usize);

    impl Source for Flood {
        fn name(&self) -> &str {
            "flood"
        }

        fn accepts(&self, id: &Identifier) -> bool {
            matches!(id, Identifier::Email(_))
        }

        fn lookup<'a>(
            &'a self,
            _: &'a Identifier,
        ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
            let n = self.0;
            async move {
                (0..n)
                    .map(|i| {
                        crate::domain::Email::parse(&format!("p{i}@flood.example"))
                            .map(Observation::email)
                            .map_err(|_| SourceError::Malformed("test address".into()))
                    })
                    .collect()
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

    #[tokio::test]
    async fn an_answer_of_two_thousand_values_brings_at_most_the_cap_into_the_lookup() {
        let flood = Registered::free(Arc::new(Flood(2_000)), 1_000, 0.6);
        let exclusion = Arc::new(Counting::default());
        let pipeline = pipeline_over(SourceSet::unguarded(vec![flood]), exclusion.clone());

        let lookup = pipeline
            .lookup(
                &email_query("asked@flood.example"),
                LookupOptions::default(),
            )
            .await;

        let profile = lookup.profile.expect("the flood is a hit");
        let emails: Vec<String> = profile.emails.iter().map(|e| e.value.to_string()).collect();
        // The query's own address, confirmed, and the first values of the answer, in its order.
        assert!(emails.len() <= MAX_OBSERVATIONS + 1, "{}", emails.len());
        assert!(emails.len() >= MAX_OBSERVATIONS, "{}", emails.len());
        assert!(emails.contains(&"p0@flood.example".to_string()));
        assert!(emails.contains(&format!("p{}@flood.example", MAX_OBSERVATIONS - 1)));
        assert!(!emails.contains(&format!("p{MAX_OBSERVATIONS}@flood.example")));
        let asked = exclusion
            .asked
            .lock()
            .map(|a| a.len())
            .unwrap_or(usize::MAX);
        assert!(
            asked < 3 * MAX_OBSERVATIONS,
            "the exclusion checks are bounded by the cap, not by the answer: {asked}"
        );
    }
}
