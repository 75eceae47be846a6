//! The batch service's settings (`[batches]` and the retention policy) and one upload's options.

use std::collections::BTreeMap;

/// Upload limits (from configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_columns: u64,
    pub max_field_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchConfig::default().limits
    }
}

/// Concurrency bounds, shared by all jobs of this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concurrency {
    /// Rows being looked up at once, all tenants together.
    pub global: usize,
    /// Rows being looked up at once for one tenant.
    pub per_tenant: usize,
    /// Jobs running at once.
    pub jobs: usize,
    /// Jobs of one tenant running at once.
    pub jobs_per_tenant: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        BatchConfig::default().concurrency
    }
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub limits: BatchLimits,
    pub concurrency: Concurrency,
    /// Days a batch lives (`batch_results_days`); kept within 1..=30.
    pub results_days: u32,
    /// Input rows per part object (the checkpoint granularity), at most.
    pub part_rows: u32,
    /// Bytes per part object, at most (one row larger than this is a part of its own): what bounds
    /// the memory of writing a part and of a purge rewriting one.
    pub part_bytes: u64,
    /// What each tenant (by its hash) may spend on paid providers in a calendar month.
    pub monthly_budgets: BTreeMap<crate::blob::TenantKey, f64>,
    /// What a tenant's stored batches may take in the blob area, in bytes, unless
    /// `storage_quotas` names it.
    pub tenant_quota_bytes: u64,
    /// Per-tenant storage quotas (by tenant hash) that replace `tenant_quota_bytes`.
    pub storage_quotas: BTreeMap<crate::blob::TenantKey, u64>,
}

/// A per-tenant setting as the config names tenants, keyed as the blob area keys them.
fn by_tenant<V: Copy>(by_name: &BTreeMap<String, V>) -> BTreeMap<crate::blob::TenantKey, V> {
    by_name
        .iter()
        .map(|(name, v)| (crate::blob::TenantKey::of(name), *v))
        .collect()
}

impl BatchConfig {
    /// The service's settings from `[batches]`, with how many days results live.
    pub fn from_settings(b: &crate::config::BatchesConfig, results_days: u32) -> Self {
        Self {
            limits: BatchLimits {
                max_bytes: b.max_bytes,
                max_rows: b.max_rows,
                max_columns: b.max_columns,
                max_field_bytes: b.max_field_bytes,
            },
            concurrency: Concurrency {
                global: b.concurrency_global,
                per_tenant: b.concurrency_per_tenant,
                jobs: b.max_jobs,
                jobs_per_tenant: b.max_jobs_per_tenant,
            },
            results_days,
            part_rows: b.part_rows,
            part_bytes: b.part_bytes,
            monthly_budgets: BTreeMap::new(),
            tenant_quota_bytes: b.tenant_quota_bytes,
            storage_quotas: BTreeMap::new(),
        }
    }
}

impl BatchConfig {
    /// Monthly budgets by tenant name (`[tenants.monthly_budget]`).
    pub fn with_monthly_budgets(mut self, by_name: &BTreeMap<String, f64>) -> Self {
        self.monthly_budgets = by_tenant(by_name);
        self
    }

    /// Storage quotas by tenant name (`[tenants.storage_quota_bytes]`).
    pub fn with_storage_quotas(mut self, by_name: &BTreeMap<String, u64>) -> Self {
        self.storage_quotas = by_tenant(by_name);
        self
    }

    /// What `tenant`'s stored batches may take, in bytes.
    pub fn quota_of(&self, tenant: &crate::blob::TenantKey) -> u64 {
        self.storage_quotas
            .get(tenant)
            .copied()
            .unwrap_or(self.tenant_quota_bytes)
    }
}

/// The embedded defaults of `[batches]` and the retention policy: one place holds the numbers.
impl Default for BatchConfig {
    fn default() -> Self {
        Self::from_settings(
            &crate::config::BatchesConfig::default(),
            crate::config::Retention::default().batch_results_days,
        )
    }
}

/// Options of one upload.
#[derive(Clone, Debug, Default)]
pub struct BatchOptions {
    /// Header -> field (`email`, `phone`, `profile_url`, `first_name`, `last_name`, `name`, `company`,
    /// `domain`, or `ignore`).
    pub columns: BTreeMap<String, String>,
    /// ISO 3166 region for phone numbers written without a country code.
    pub region: Option<String>,
    /// URL told when the batch is done or failed (by the `Notifier` seam).
    pub webhook: Option<String>,
    /// The most the batch's paid hits may cost, in the operator's currency unit.
    pub max_cost: Option<f64>,
}
