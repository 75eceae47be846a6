//! Opting out: record the person, find what else identifies them, make every part of the service forget
//! them, and only then acknowledge.
//!
//! The steps of [`OptOut::run`], each finished before the next begins:
//! 1. **record**: the given identifiers are hashed onto the exclusion list and fsynced. From here on no
//!    lookup by them reaches an upstream, even if a later step fails.
//! 2. **expand**: one live fan-out of the given identifiers ([`Pipeline::expand`]: the same stages as
//!    a lookup, without the exclusion checks, since the person is on the list already, and without
//!    hops). At most [`MAX_EXPANSION`] emails, phones and profile URLs that a source bound to the
//!    given identifiers through a verified link are hashed onto the list too (origin `expansion`), so
//!    a later lookup by any of them is refused before fan-out. Nothing else widens an opt-out: not a
//!    value someone merely typed into a profile, not what a host the requester chose answers
//!    (WebFinger, a web site), not a guessed address. So one opt-out cannot be turned against other
//!    people, however many aliases an answer lists. The answers are dropped here: never returned,
//!    stored or logged. A slow or failing source only makes the expansion smaller.
//! 3. **forget**: every [`OptOutHook`] (source cache, stored batch results) drops what it holds about
//!    any of the identifiers.
//! 4. **acknowledge** with a receipt id that says nothing about the person, and nothing about whether
//!    they were on the list already or what the expansion found.
//!
//! The HTTP handlers (`POST /optout`, `POST /v1/optout`) and `enrichd optout` all call [`OptOut::run`].

mod access;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::audit::{AuditLog, Event};
use crate::domain::{Identifier, Query};
use crate::exclusion::{ExclusionList, Hashed, HookError, OptOutHook, Origin};
use crate::pipeline::Pipeline;

pub use access::{AccessError, SubjectAccess, subject_access};

/// How many identifiers beyond the given ones one opt-out may add.
pub const MAX_EXPANSION: usize = 10;

/// Why an opt-out was not fully carried out.
#[derive(Debug, thiserror::Error)]
pub enum OptOutError {
    /// Nothing was acknowledged: the list could not record the given identifiers.
    #[error("the opt-out could not be recorded")]
    NotRecorded(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Nothing was acknowledged: the store that keeps the list cannot be reached now. Lookups go on
    /// with the list in memory; the opt-out should be submitted again shortly.
    #[error("the opt-out could not be recorded because the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The given identifiers are recorded and enforced, but a later step failed. Running the same
    /// opt-out again is safe and finishes the job.
    #[error("opt-out {receipt_id} is recorded, but {what} did not finish")]
    Incomplete { receipt_id: String, what: String },
}

impl OptOutError {
    fn not_recorded(e: crate::exclusion::ExclusionError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(Box::new(e))
        } else {
            Self::NotRecorded(Box::new(e))
        }
    }
}

/// What an acknowledged opt-out tells its caller. Deliberately thin: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// 32 hex characters, random, not stored anywhere; it appears in one log line for support.
    pub receipt_id: String,
}

/// The opt-out procedure over the service's parts. Cheap to build from shared handles.
#[derive(Clone)]
pub struct OptOut {
    list: Arc<ExclusionList>,
    pipeline: Pipeline,
    hooks: Arc<Vec<Arc<dyn OptOutHook>>>,
    expand_timeout: Duration,
    audit: AuditLog,
}

impl OptOut {
    pub fn new(
        list: Arc<ExclusionList>,
        pipeline: Pipeline,
        hooks: Arc<Vec<Arc<dyn OptOutHook>>>,
        expand_timeout: Duration,
        audit: AuditLog,
    ) -> Self {
        Self {
            list,
            pipeline,
            hooks,
            expand_timeout,
            audit,
        }
    }

    /// Records, expands, forgets, in that order (see the module docs). `origin` is the channel the
    /// opt-out came in by.
    pub async fn run(&self, query: &Query, origin: Origin) -> Result<Acknowledged, OptOutError> {
        let given: Vec<Identifier> = query
            .identifiers()
            .into_iter()
            .filter(Identifier::is_personal)
            .collect();
        let prefixes: Vec<String> = given.iter().map(|id| self.list.hash_prefix(id)).collect();
        let mut kinds: Vec<String> = given
            .iter()
            .map(|id| id.kind().as_str().to_string())
            .collect();
        kinds.sort();
        kinds.dedup();
        let receipt = self
            .add(given.clone(), origin)
            .await
            .map_err(OptOutError::not_recorded)?;
        let receipt_id = receipt.id;
        let mut added = receipt.added;

        let found = self.expand(query).await;
        let expanded = found.len();
        let mut all = given;
        let mut unfinished = Vec::new();
        if !found.is_empty() {
            match self.add(found.clone(), Origin::Expansion).await {
                Ok(more) => {
                    added += more.added;
                    all.extend(found);
                }
                Err(err) => {
                    tracing::error!(receipt = %receipt_id, error = %err, "Could not record the identifiers an opt-out's lookup found.");
                    unfinished.push("blocking the other identifiers the sources know".to_string());
                }
            }
        }

        // The hooks run even if the expansion could not be recorded: what was given must go.
        let failed = self.forget(&all).await;
        tracing::info!(
            receipt = %receipt_id,
            origin = origin.as_str(),
            hashes = ?prefixes,
            expanded,
            hooks = self.hooks.len(),
            hooks_failed = failed.len(),
            "Opt-out recorded."
        );
        if !failed.is_empty() {
            unfinished.push(format!("removing it from {}", failed.join(", ")));
        }
        self.audit
            .record(Event::OptOutReceived {
                receipt: receipt_id.clone(),
                origin: origin.as_str().to_string(),
                kinds,
                added,
            })
            .await;
        if unfinished.is_empty() {
            Ok(Acknowledged { receipt_id })
        } else {
            Err(OptOutError::Incomplete {
                receipt_id,
                what: unfinished.join(" and "),
            })
        }
    }

    /// Records `ids` durably.
    async fn add(
        &self,
        ids: Vec<Identifier>,
        origin: Origin,
    ) -> Result<crate::exclusion::Receipt, crate::exclusion::ExclusionError> {
        self.list.add(&ids, origin).await
    }

    /// The personal identifiers sources bound to the query's own through a verified link, at most
    /// [`MAX_EXPANSION`]. Free sources only: an opt-out never spends the operator's paid credits.
    async fn expand(&self, query: &Query) -> Vec<Identifier> {
        let mut linked = self.pipeline.expand(query, self.expand_timeout).await;
        linked.truncate(MAX_EXPANSION);
        linked
    }

    /// Runs every hook on `ids`; returns the names of those that failed.
    async fn forget(&self, ids: &[Identifier]) -> Vec<&'static str> {
        self.run_hooks(|hook| hook.opted_out(ids)).await
    }

    /// Runs `call` on every hook at once; logs each failure and returns the failed hooks' names.
    async fn run_hooks<'a>(
        &'a self,
        call: impl Fn(&'a dyn OptOutHook) -> BoxFuture<'a, Result<(), HookError>>,
    ) -> Vec<&'static str> {
        let runs = self.hooks.iter().map(|hook| {
            let name = hook.name();
            call(hook.as_ref()).map(move |result| (name, result))
        });
        let mut failed = Vec::new();
        for (name, result) in futures::future::join_all(runs).await {
            if let Err(err) = result {
                tracing::error!(hook = name, error = %err, "An opt-out hook failed; the opt-out is recorded and a resubmission will retry it.");
                failed.push(name);
            }
        }
        failed
    }

    /// An admin bulk import: records the entries durably, then runs every hook, without expansion
    /// (thousands of live lookups would hammer the sources; each entry is taken as given).
    pub async fn import(&self, import: Import) -> Result<Imported, OptOutError> {
        let origin = Origin::AdminImport;
        let list = Arc::clone(&self.list);
        let hashes = match &import {
            Import::Identifiers(ids) => ids.iter().filter_map(|id| list.hash(id)).collect(),
            Import::Hashes(hashes) => hashes.clone(),
        };
        let receipt = list
            .add_hashes(&hashes, origin)
            .await
            .map_err(OptOutError::not_recorded)?;
        let failed = match &import {
            Import::Identifiers(ids) => self.forget(ids).await,
            Import::Hashes(hashes) => self.run_hooks(|hook| hook.opted_out_hashes(hashes)).await,
        };
        tracing::info!(
            receipt = %receipt.id,
            origin = origin.as_str(),
            added = receipt.added,
            already_present = receipt.already_present,
            hooks_failed = failed.len(),
            "Exclusion import recorded."
        );
        self.audit
            .record(Event::ExclusionsImported {
                receipt: receipt.id.clone(),
                added: receipt.added,
                already_present: receipt.already_present,
            })
            .await;
        if !failed.is_empty() {
            return Err(OptOutError::Incomplete {
                receipt_id: receipt.id,
                what: format!("removing the entries from {}", failed.join(", ")),
            });
        }
        Ok(Imported {
            receipt_id: receipt.id,
            added: receipt.added,
            already_present: receipt.already_present,
        })
    }
}

/// The entries of an admin bulk import.
#[derive(Debug, Clone)]
pub enum Import {
    /// Identifiers, parsed and normalised; the hooks get them.
    Identifiers(Vec<Identifier>),
    /// Pre-computed keyed hashes; the hooks get them through [`OptOutHook::opted_out_hashes`].
    Hashes(Vec<Hashed>),
}

/// What an admin import did. Unlike a public opt-out, an admin may learn what was already listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub receipt_id: String,
    /// Distinct entries that were not on the list before.
    pub added: usize,
    /// Distinct entries already on the list (their retention restarts).
    pub already_present: usize,
}
