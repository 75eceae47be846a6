//! `enrichd audit`: the audit log (no personal data) as NDJSON on stdout, from the store itself, so
//! that it works beside a running server and on any machine with the store's settings.

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Common, Failure, load};
use crate::app;
use crate::audit::{AuditLog, parse_time};
use crate::telemetry::Metrics;

pub async fn run(since: Option<&str>, until: Option<&str>, common: &Common) -> Result<(), Failure> {
    let now = SystemTime::now();
    let time = |flag: &str, v: Option<&str>| {
        v.map(|t| parse_time(t, now).map_err(|e| Failure::usage(format!("--{flag}: {e}"))))
            .transpose()
    };
    let (since, until) = (time("since", since)?, time("until", until)?);
    let (loaded, data_dir) = load(common)?;
    let store = app::open_store(&loaded, &data_dir, Arc::new(Metrics::new()))
        .await
        .map_err(Failure::runtime)?;
    let records = AuditLog::new(store.objects().clone())
        .read(since, until)
        .await
        .map_err(|e| Failure::runtime(format!("the audit log could not be read: {e}")))?;
    let mut out = std::io::stdout().lock();
    for record in records {
        let line = serde_json::to_string(&record).map_err(Failure::runtime)?;
        writeln!(out, "{line}").map_err(Failure::runtime)?;
    }
    Ok(())
}
