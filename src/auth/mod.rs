//! Tenant API keys, stored only as blake3 hashes, and per-tenant rate limits.

mod keys;
mod limit;

pub use keys::{KeyError, KeyStore, NewKey, Principal, Role};
pub use limit::TenantLimiter;
