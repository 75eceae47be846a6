//! A tenant's monthly spend on paid providers, kept in the store so that every replica and every
//! restart sees the same figure: one small object per tenant and calendar month (UTC),
//! `spend/<tenant-hash>/<YYYY-MM>`, holding `{"spent": <amount>}`. It is created with a conditional
//! create and added to with conditional updates (`If-Match`), retried when another writer got there
//! first, so that no addition is lost. Batches read it when their job starts (the month's budget
//! left bounds the job's spend cap, beside the batch's own `max_cost`) and add each part's cost when
//! the part is checkpointed.

use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blob::TenantKey;
use crate::store::{ObjectPath, Objects, StoreError};

/// Conditional updates tried before an addition gives up (another writer won every time).
const ATTEMPTS: usize = 16;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Spent {
    spent: f64,
}

/// `YYYY-MM` of `t`, in UTC.
pub(crate) fn month_of(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .take(7)
        .collect()
}

fn path(tenant: &TenantKey, month: &str) -> ObjectPath {
    ObjectPath::from(format!("spend/{}/{month}", tenant.as_str()))
}

/// What the tenant's paid hits cost in `month` so far (0 before the first).
pub(crate) async fn spent(
    objects: &Objects,
    tenant: &TenantKey,
    month: &str,
) -> Result<f64, StoreError> {
    match objects.get(&path(tenant, month)).await {
        Ok(v) => Ok(serde_json::from_slice::<Spent>(&v.bytes)
            .unwrap_or_default()
            .spent),
        Err(StoreError::NotFound { .. }) => Ok(0.0),
        Err(e) => Err(e),
    }
}

/// Adds `amount` to the tenant's spend in `month`; the new total.
pub(crate) async fn add(
    objects: &Objects,
    tenant: &TenantKey,
    month: &str,
    amount: f64,
) -> Result<f64, StoreError> {
    let at = path(tenant, month);
    let encode = |spent: f64| Bytes::from(serde_json::json!({ "spent": spent }).to_string());
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let written = match objects.get(&at).await {
            Ok(v) => {
                let total = serde_json::from_slice::<Spent>(&v.bytes)
                    .unwrap_or_default()
                    .spent
                    + amount;
                match v.etag.as_deref() {
                    Some(etag) => objects
                        .update(&at, encode(total), etag)
                        .await
                        .map(|_| total),
                    None => objects.put(&at, encode(total)).await.map(|_| total),
                }
            }
            Err(StoreError::NotFound { .. }) => {
                objects.create(&at, encode(amount)).await.map(|_| amount)
            }
            Err(e) => return Err(e),
        };
        match written {
            Ok(total) => return Ok(total),
            Err(e @ (StoreError::Conflict { .. } | StoreError::AlreadyExists { .. })) => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(StoreError::Conflict {
        path: at.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_month_is_the_utc_calendar_month() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_599);
        assert_eq!(month_of(t), "2025-12", "2025-12-31T23:59:59Z");
        assert_eq!(month_of(t + std::time::Duration::from_secs(1)), "2026-01");
    }
}
