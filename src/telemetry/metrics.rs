use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sources::SourceStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: Label,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Label,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    source: Label,
    /// `us` (our own limiter or pause) or `upstream` (its own 429).
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceName {
    source: Label,
}

/// A label value shared between the metrics that carry it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// Label values seen before (route templates, source names: a few dozen at most), shared instead of
/// allocated on every request.
#[derive(Default)]
struct Interned(RwLock<Vec<Label>>);

impl Interned {
    fn get(&self, value: &str) -> Label {
        let found = |list: &Vec<Label>| list.iter().find(|v| &*v.0 == value).cloned();
        if let Some(v) = found(&self.0.read().unwrap_or_else(PoisonError::into_inner)) {
            return v;
        }
        let mut list = self.0.write().unwrap_or_else(PoisonError::into_inner);
        found(&list).unwrap_or_else(|| {
            let v = Label(Arc::from(value));
            list.push(v.clone());
            v
        })
    }
}

/// The method as a label: the standard ones by name, anything else as `OTHER` (a client chooses it).
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabels {
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The service's Prometheus metrics. Labels are low-cardinality: route templates, source names, statuses.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    source_calls: Family<SourceLabels, Counter>,
    source_duration: HistogramFamily<SourceName>,
    source_limited: Family<LimitedLabels, Counter>,
    lookups: Family<OutcomeLabels, Counter>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    overloaded: Counter<u64, AtomicU64>,
    connections_refused: Family<ReasonLabels, Counter>,
    provider_cost: Family<SourceName, Counter<f64, AtomicU64>>,
    store_requests: Family<StoreOpLabels, Counter>,
    replicas: Gauge<i64, std::sync::atomic::AtomicI64>,
    labels: Interned,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("enrichd");
        let m = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            source_calls: Family::default(),
            source_duration: Family::new_with_constructor(latency_histogram),
            source_limited: Family::default(),
            lookups: Family::default(),
            in_flight: Gauge::default(),
            overloaded: Counter::default(),
            connections_refused: Family::default(),
            provider_cost: Family::default(),
            store_requests: Family::default(),
            replicas: Gauge::default(),
            labels: Interned::default(),
        };
        registry.register(
            "store_requests",
            "Requests to the store (S3 or the local directory), by operation",
            m.store_requests.clone(),
        );
        registry.register(
            "replicas",
            "Live replicas sharing the store, this one included; each takes this share of a source's budget",
            m.replicas.clone(),
        );
        registry.register(
            "provider_cost",
            "What paid providers' hits cost, by provider, in the operator's currency unit",
            m.provider_cost.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            m.http_duration.clone(),
        );
        registry.register(
            "source_requests",
            "Upstream source calls by source and status",
            m.source_calls.clone(),
        );
        registry.register(
            "source_rate_limited",
            "Source calls refused for rate, by source and by whom: us (our own budget) or upstream (its 429)",
            m.source_limited.clone(),
        );
        registry.register(
            "source_duration_seconds",
            "Upstream source call latency by source",
            m.source_duration.clone(),
        );
        registry.register(
            "lookups",
            "Finished lookups by outcome (found, miss)",
            m.lookups.clone(),
        );
        registry.register(
            "http_in_flight_requests",
            "HTTP requests being served",
            m.in_flight.clone(),
        );
        registry.register(
            "overload_rejections",
            "Requests refused with 503 because too many were in flight",
            m.overloaded.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503 or 429 and closed at accept, by reason (full, per_client)",
            m.connections_refused.clone(),
        );
        Self { registry, ..m }
    }

    /// One request answered; `route` is the route template, never the raw path.
    pub fn http_request(&self, route: &str, method: &http::Method, status: u16, took: Duration) {
        let route = self.labels.get(route);
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.clone(),
                method: method_label(method),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// The handles that record `source`'s calls. Every status's series exists from here on, at zero
    /// until counted.
    pub fn source(&self, source: &str) -> SourceMetrics {
        let source = self.labels.get(source);
        let calls = SourceStatus::ALL.map(|status| {
            self.source_calls
                .get_or_create(&SourceLabels {
                    source: source.clone(),
                    status: status.as_str(),
                })
                .clone()
        });
        let duration = self
            .source_duration
            .get_or_create(&SourceName {
                source: source.clone(),
            })
            .clone();
        let limited = ["us", "upstream"].map(|by| {
            self.source_limited
                .get_or_create(&LimitedLabels {
                    source: source.clone(),
                    by,
                })
                .clone()
        });
        SourceMetrics {
            calls,
            duration,
            limited,
        }
    }

    pub fn provider_cost(&self, source: &str, amount: f64) {
        let source = self.labels.get(source);
        self.provider_cost
            .get_or_create(&SourceName { source })
            .inc_by(amount);
    }

    pub fn lookup_finished(&self, outcome: &'static str) {
        self.lookups.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One request to the store; `op` is `get`, `put`, `put_create`, `list`, ...
    pub fn store_request(&self, op: &'static str) {
        self.store_requests
            .get_or_create(&StoreOpLabels { op })
            .inc();
    }

    pub fn replicas(&self, live: u32) {
        self.replicas.set(i64::from(live));
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// A connection refused at accept; `reason` is `full` or `per_client`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One source's call counters (by status) and latency histogram, resolved once by [`Metrics::source`]:
/// recording a call hashes no labels and takes no lock on the families.
#[derive(Clone)]
pub struct SourceMetrics {
    calls: [Counter; SourceStatus::ALL.len()],
    duration: Histogram,
    /// Refusals for rate: `[us, upstream]`.
    limited: [Counter; 2],
}

impl SourceMetrics {
    /// A call refused for rate; `by` is `us` or `upstream` ([`crate::sources::SourceError::limited_by`]).
    pub fn limited(&self, by: &str) {
        self.limited[usize::from(by != "us")].inc();
    }

    pub fn call(&self, status: SourceStatus, took: Duration) {
        self.calls[status.index()].inc();
        self.duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_handles_count_into_the_families_by_status() {
        let m = Metrics::new();
        let gravatar = m.source("gravatar");
        gravatar.call(SourceStatus::Hit, Duration::from_millis(3));
        gravatar.call(SourceStatus::Hit, Duration::from_millis(4));
        gravatar.call(SourceStatus::Timeout, Duration::from_millis(900));
        // A second handle for the same source shares the series.
        m.source("gravatar")
            .call(SourceStatus::Miss, Duration::from_millis(2));

        for (i, status) in SourceStatus::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), i, "{status:?} indexes its own counter");
        }
        let text = m.render();
        for line in [
            r#"enrichd_source_requests_total{source="gravatar",status="hit"} 2"#,
            r#"enrichd_source_requests_total{source="gravatar",status="timeout"} 1"#,
            r#"enrichd_source_requests_total{source="gravatar",status="miss"} 1"#,
            r#"enrichd_source_requests_total{source="gravatar",status="error"} 0"#,
            r#"enrichd_source_duration_seconds_count{source="gravatar"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn a_made_up_method_is_counted_as_other_never_by_its_text() {
        let m = Metrics::new();
        let odd = http::Method::from_bytes(b"ADA-LOVELACE").expect("a valid extension method");
        m.http_request("/v1/lookup", &odd, 405, Duration::from_millis(1));
        m.http_request(
            "/v1/lookup",
            &http::Method::POST,
            200,
            Duration::from_millis(1),
        );

        let text = m.render();
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        assert!(text.contains(r#"method="POST""#), "{text}");
        assert!(!text.contains("ADA-LOVELACE"), "{text}");
    }
}
