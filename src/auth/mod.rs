//! Tenant API keys, stored only as blake3 hashes, per-tenant and per-client-address rate limits.

mod client_limit;
mod keys;
mod limit;

pub use client_limit::{ClientLimiter, ClientSlot, ClientSlots};
pub use keys::{KeyError, KeyInfo, KeyStore, NewKey, Principal, Role};
pub use limit::{RatePolicy, TenantLimiter};
