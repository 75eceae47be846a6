//! enrichd: a self-hosted, real-time OSINT contact-enrichment proxy that keeps no contact database.
//!
//! See `ARCHITECTURE.md` for the map. In short: [`domain`] parses identifiers at the edge, [`sources`]
//! are upstream plugins, [`pipeline`] fans a query out and merges answers in memory ([`profile`]),
//! [`exclusion`] withholds opted-out people, [`http`] serves it all.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod batchcli;
pub mod blob;
pub mod cli;
pub mod config;
pub mod domain;
pub mod exclusion;
pub mod extract;
pub mod http;
pub mod optout;
pub mod pipeline;
pub mod profile;
pub mod seal;
pub mod secret;
pub mod sources;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testkit;
