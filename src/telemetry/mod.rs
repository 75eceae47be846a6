//! Logs and metrics, set up once for `main` and for tests.
//!
//! Log fields are tenant ids, batch ids, source names, statuses and short keyed-hash prefixes. Never a
//! raw email, phone, name or URL, in a message or a label.

mod metrics;

pub use metrics::{Metrics, SourceMetrics};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber: the `filter` directive if given, else `ENRICHD_LOG` (or `RUST_LOG`),
/// default `info`; text or JSON lines on `writer` (colours only when `ansi`). Returns false if a subscriber
/// was already installed.
pub fn init<W>(filter: Option<&str>, json: bool, ansi: bool, writer: W) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter
        .map(str::to_string)
        .or_else(|| {
            std::env::var("ENRICHD_LOG")
                .or_else(|_| std::env::var("RUST_LOG"))
                .ok()
        })
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    if json {
        builder.json().try_init().is_ok()
    } else {
        builder.try_init().is_ok()
    }
}
