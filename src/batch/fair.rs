//! Which queued job runs next: fair across tenants. Pure, no I/O.
//!
//! Jobs wait in one queue per tenant. A free slot goes to the tenant served least recently among
//! those with a job waiting and fewer than `per_tenant` jobs running (a tenant never served, or not
//! since its queue last emptied, comes first; ties go to the tenant that queued first). So a tenant
//! with fifty batches queued takes every other slot at most while another tenant waits, and never
//! more than `per_tenant` at once: it cannot starve a tenant with one batch.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Queued jobs `J` of tenants `T`.
pub(crate) struct FairQueue<T, J> {
    tenants: HashMap<T, Tenant<J>>,
    /// Advances at every queueing and every start: orders arrivals and services.
    tick: u64,
}

struct Tenant<J> {
    queued: VecDeque<J>,
    running: usize,
    /// When the tenant last had a job started (0: not since it was first seen).
    served: u64,
    /// When its queue last went from empty to not empty.
    since: u64,
}

impl<T: Eq + Hash + Clone, J> Default for FairQueue<T, J> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            tick: 0,
        }
    }
}

impl<T: Eq + Hash + Clone, J> FairQueue<T, J> {
    /// Queues `job` behind the tenant's other jobs.
    pub(crate) fn push(&mut self, tenant: T, job: J) {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.tenants.entry(tenant).or_insert_with(|| Tenant {
            queued: VecDeque::new(),
            running: 0,
            served: 0,
            since: tick,
        });
        if entry.queued.is_empty() {
            entry.since = tick;
        }
        entry.queued.push_back(job);
    }

    /// The next job to start, counted as running for its tenant until [`FairQueue::finished`];
    /// `None` when every waiting tenant already runs `per_tenant` jobs (or nothing waits).
    pub(crate) fn next(&mut self, per_tenant: usize) -> Option<(T, J)> {
        let (tenant, _) = self
            .tenants
            .iter()
            .filter(|(_, t)| !t.queued.is_empty() && t.running < per_tenant.max(1))
            .min_by_key(|(_, t)| (t.served, t.since))?;
        let tenant = tenant.clone();
        self.tick += 1;
        let tick = self.tick;
        let entry = self.tenants.get_mut(&tenant)?;
        let job = entry.queued.pop_front()?;
        entry.running += 1;
        entry.served = tick;
        Some((tenant, job))
    }

    /// A job of `tenant` that [`FairQueue::next`] handed out has ended.
    pub(crate) fn finished(&mut self, tenant: &T) {
        if let Some(entry) = self.tenants.get_mut(tenant) {
            entry.running = entry.running.saturating_sub(1);
            if entry.running == 0 && entry.queued.is_empty() {
                // Nothing to remember a tenant by: the map holds only tenants with work.
                self.tenants.remove(tenant);
            }
        }
    }

    /// Jobs waiting, all tenants together.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.tenants.values().map(|t| t.queued.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts jobs until `slots` run or none may start; returns what started.
    fn start(q: &mut FairQueue<&'static str, u32>, slots: usize, per_tenant: usize) -> Vec<u32> {
        std::iter::from_fn(|| q.next(per_tenant))
            .take(slots)
            .map(|(_, job)| job)
            .collect()
    }

    #[test]
    fn a_tenant_with_one_job_is_served_before_another_tenants_backlog_drains() {
        let mut q = FairQueue::default();
        for job in 1..=50 {
            q.push("a", job);
        }
        assert_eq!(start(&mut q, 1, 2), [1]);
        q.push("b", 100);
        // A's first job ends: b has not been served, a just was.
        q.finished(&"a");
        assert_eq!(start(&mut q, 1, 2), [100]);
        q.finished(&"b");
        assert_eq!(start(&mut q, 1, 2), [2]);
        assert_eq!(q.waiting(), 48);
    }

    #[test]
    fn tenants_take_turns_and_none_runs_more_than_its_cap() {
        let mut q = FairQueue::default();
        for job in 1..=4 {
            q.push("a", job);
        }
        for job in 11..=14 {
            q.push("b", job);
        }
        q.push("c", 21);
        // Four slots, at most two per tenant: a, b and c each get one before anyone a second.
        assert_eq!(start(&mut q, 4, 2), [1, 11, 21, 2]);
        // a runs two now and may not start a third even with slots free.
        assert_eq!(start(&mut q, 4, 2), [12]);
        assert_eq!(
            q.next(2),
            None,
            "a and b are at their cap, c has nothing left"
        );
        q.finished(&"a");
        assert_eq!(start(&mut q, 4, 2), [3]);
    }

    #[test]
    fn a_tenant_whose_work_is_all_done_is_forgotten() {
        let mut q = FairQueue::default();
        q.push("a", 1);
        assert_eq!(q.next(1), Some(("a", 1)));
        q.finished(&"a");
        assert!(q.tenants.is_empty());
        assert_eq!(q.next(1), None);
    }
}
