//! The answer to a query that names an excluded person: what a miss of the same shape shows, built
//! without asking anyone about the person.
//!
//! - Sources that call nobody ([`crate::sources::Source::calls_nobody`], the address finder) run as
//!   in a miss: what they derive (guessed addresses) tells which sources a miss would have asked.
//! - Domain-only sources ([`crate::sources::Source::domain_only`]) are asked exactly as a miss asks
//!   them; what they send upstream names the domain alone. Their statuses, latencies, events and
//!   facts are real, and the same as a never-seen person's at that domain.
//! - Every other source a miss would have asked is given a *feigned* call
//!   ([`crate::sources::Source::feign_shared`]) about each identifier it would have been asked
//!   about: it passes the source's guard as a miss's call would — the answer cache, an upstream's
//!   pause, the breaker, the rate budget and the slots, and in a batch the wait for the batch
//!   budget — and then lasts the latency drawn by the timing rule ([`super::hold`]), sending
//!   nothing upstream. So it is refused (`rate_limited`, `skipped`) exactly when a miss's call
//!   would be, takes the budget a miss takes (what `GET /v1/sources` shows as `remaining`, the
//!   rows a batch waits for, its ETA), and is cached as a miss so that a repeat is answered as a
//!   cached miss's is. WebFinger's feigned call also passes the chosen host's own etiquette and
//!   address check. Its progress event is sent as it ends, and the answer is released no sooner
//!   than the last of them. Paid providers a miss would have asked in the waterfall do the same one
//!   after another, after the free sources. Nothing is spent.
//!
//! While the source's last real call failed (an outage before its breaker opens), a feigned call
//! fails the same way and takes as long. What it does not copy: the per-source call counters on
//! the operator's `/metrics`, which count the calls really made, and an upstream that fails only
//! for some people (a feigned call follows the source's last real call, whoever it was about).

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;

use super::answer::{Lookup, SourceReport};
use super::fanout::{self, Answers, Everything, Fanout, Ids, Run, SourceEvent, millis};
use super::hold::MissTimes;
use super::release;
use super::want;
use crate::domain::Identifier;
use crate::exclusion::ExclusionCheck;
use crate::sources::{Registered, SourceStatus};

/// One call a miss would have made about the person: which source, about which identifier, and how
/// long it would have taken once made. A source accepting several identifiers makes one call each.
struct Feigned {
    source: usize,
    id: Arc<Identifier>,
    latency: Duration,
}

/// A feigned call as it went: when it began (before any wait for budget, as a paced call's time
/// does), when it ended, and the status a miss's call would have had.
struct Feint {
    source: usize,
    began: Instant,
    ended: Instant,
    status: SourceStatus,
}

/// Answers an excluded person's query like a miss (see the module docs). `ids` are the query's.
pub(crate) async fn excluded(
    plan: Fanout<'_>,
    ids: Ids,
    exclusion: &dyn ExclusionCheck,
    started: Instant,
) -> Lookup {
    let sources = plan.sources;
    let only = |keep: fn(&Registered) -> bool| -> SmallVec<[bool; 16]> {
        sources
            .iter()
            .zip(&plan.selected)
            .map(|(s, &selected)| selected && keep(s))
            .collect()
    };
    // Guesses are followed as a miss follows them, to no one but the sources selected here.
    let local_plan = Fanout {
        selected: only(|s| s.source.calls_nobody()),
        events: plan.events.clone(),
        max_hops: 0,
        ..plan
    };
    let local = fanout::run(local_plan, ids, &Everything).await;
    let met = if plan.max_hops > 0 {
        local.met.clone()
    } else {
        local.met[..local.from_query].iter().cloned().collect()
    };
    let (free, paid, capped) = feigned(&plan, &met, started);
    let (pace, deadline, events) = (plan.pace, plan.deadline, plan.events.clone());
    // Each call a miss would have made goes through the source's guard as a miss's call would
    // (cache, pause, breaker, budget, slots; in a batch, the wait for budget), without calling
    // anyone; its event is sent as it ends.
    let feint = |f: &Feigned| {
        let events = events.clone();
        let (source, id, latency) = (f.source, Arc::clone(&f.id), f.latency);
        async move {
            let began = Instant::now();
            let call = async {
                match sources[source]
                    .source
                    .feign_shared(&id, latency, pace)
                    .await
                {
                    Ok(_) => SourceStatus::Miss,
                    Err(e) => e.status(),
                }
            };
            let status = tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or(SourceStatus::Timeout);
            let ended = Instant::now();
            if let Some(tx) = &events {
                // A closed receiver means the client left; the answer is about to be dropped anyway.
                let _ = tx.send(SourceEvent {
                    name: Arc::clone(&sources[source].label),
                    status,
                    latency_ms: millis(ended - began),
                    fields: 0,
                });
            }
            Feint {
                source,
                began,
                ended,
                status,
            }
        }
    };
    // The free sources at once, then the paid waterfall one provider after another.
    let misses = async {
        let mut feints = futures::future::join_all(free.iter().map(feint)).await;
        for f in &paid {
            feints.push(feint(f).await);
        }
        feints
    };
    let domain_plan = Fanout {
        selected: only(|s| s.source.domain_only()),
        max_hops: 0,
        ..plan
    };
    let (domain, feints) = tokio::join!(fanout::run(domain_plan, met, &Everything), misses);
    let facts = release::merge(sources, &domain)
        .map(|mut p| std::mem::take(&mut p.facts))
        .unwrap_or_default();
    let facts = release::checked_facts(facts, exclusion, sources, false);
    let reports = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // A source's latency spans its calls, from the first start to the last end.
            let span = feints
                .iter()
                .filter(|f| f.source == i)
                .map(|f| (f.began, f.ended, f.status))
                .reduce(|(a, b, s), (c, d, t)| (a.min(c), b.max(d), s.combine(t)));
            let (status, latency_ms) = match span {
                Some((first, last, status)) => (status, millis(last - first)),
                None => real(&local, &domain, i),
            };
            SourceReport {
                name: Arc::clone(&s.label),
                status,
                latency_ms,
            }
        })
        .collect();
    Lookup {
        found: false,
        profile: None,
        facts,
        sources: reports,
        took_ms: millis(started.elapsed()),
        cost: 0.0,
        hints: Vec::new(),
        withheld: true,
        capped: capped
            .iter()
            .map(|&i| Arc::clone(&sources[i].label))
            .collect(),
    }
}

/// Source `i`'s status and latency from whichever of the two real fan-outs called it.
fn real(local: &Answers, domain: &Answers, i: usize) -> (SourceStatus, u64) {
    let of = |run: &Run| {
        let latency = match (run.first_start, run.last_end) {
            (Some(a), Some(b)) => millis(b.saturating_duration_since(a)),
            _ => 0,
        };
        (run.status, latency)
    };
    match (&local.runs[i], &domain.runs[i]) {
        (run, _) if run.status != SourceStatus::Skipped => of(run),
        (_, run) => of(run),
    }
}

/// The calls a miss would have made about the person: each free source once per identifier it
/// accepts (made all at once), then the paid waterfall (which a miss asks while a wanted field is
/// missing) one provider after another, each only if the spend cap would have let a miss ask it
/// (the providers it would not have asked are returned apart). Each lasts what a miss of that
/// source lasts, within what is left of the deadline.
fn feigned(
    plan: &Fanout<'_>,
    ids: &Ids,
    started: Instant,
) -> (Vec<Feigned>, Vec<Feigned>, Vec<usize>) {
    let budget = plan.deadline.saturating_duration_since(started);
    let q = MissTimes::quantile();
    let asked = |i: usize| {
        let s = &plan.sources[i];
        plan.selected[i]
            && !s.source.domain_only()
            && !s.source.calls_nobody()
            && ids.iter().any(|id| s.source.accepts(id))
    };
    let mut free: Vec<Feigned> = Vec::new();
    for i in (0..plan.sources.len()).filter(|&i| asked(i) && !plan.sources[i].paid) {
        for id in ids.iter().filter(|id| plan.sources[i].source.accepts(id)) {
            let latency = plan.misses.at(i, q).min(budget);
            free.push(Feigned {
                source: i,
                id: Arc::clone(id),
                latency,
            });
        }
    }
    let mut paid = Vec::new();
    let mut capped = Vec::new();
    let query = ids.iter().map(Arc::as_ref);
    if !want::missing(plan.wanted, query, std::iter::empty()).is_empty() {
        let mut at = free.iter().map(|f| f.latency).max().unwrap_or_default();
        for i in (0..plan.sources.len()).filter(|&i| asked(i) && plan.sources[i].paid) {
            // The first known identifier the provider takes, as the waterfall picks it.
            let Some(id) = ids.iter().find(|id| plan.sources[i].source.accepts(id)) else {
                continue;
            };
            let cost = plan.sources[i].cost_per_hit;
            if let Some(cap) = plan.spend.filter(|_| cost > 0.0) {
                // A miss reserves, is not charged, and hands the reservation back.
                if !cap.try_reserve(cost) {
                    capped.push(i);
                    continue;
                }
                cap.settle(cost, false);
            }
            let latency = plan.misses.at(i, q).min(budget.saturating_sub(at));
            at += latency;
            paid.push(Feigned {
                source: i,
                id: Arc::clone(id),
                latency,
            });
        }
    }
    (free, paid, capped)
}
