//! Prometheus metrics of the webhook.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one admission request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `EVPN`, `VTEP` or `EVPNNodeState`.
    pub kind: &'static str,
    /// `create`, `update`, `delete`, or `unknown` for bodies that could not be decoded.
    pub operation: &'static str,
    /// `allowed`, `denied` or `error` (HTTP 4xx).
    pub result: &'static str,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Labels of an attempt with an outcome: a certificate reload (`reloaded`, `failed`), an access
/// check (`admin_group`, `operator`, `cached`, `allowed`, `denied`, `failed`, `no_client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Labels of a client cut short by one of the server's limits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `handshake`, `idle`, `request` (answered 503) or `connections` (a client had to wait).
    pub limit: &'static str,
}

/// What the HTTPS server reports about its connections.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub limited: Family<LimitLabel, Counter>,
}

type HistogramFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

/// Every metric the webhook exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub tls_reloads: Family<ResultLabel, Counter>,
    pub access_checks: Family<ResultLabel, Counter>,
    pub connections: ConnectionMetrics,
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 0.8 s: validation sits at the low end, a stuck lock would show at the top.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            tls_reloads: Family::default(),
            access_checks: Family::default(),
            connections: ConnectionMetrics::default(),
        };
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.registry = registry;
        m
    }
}

impl Metrics {
    /// Registers every metric (`evpn_webhook_*`) in `registry` too, so that a binary serving
    /// other metrics can expose these beside them.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("evpn_webhook");
        registry.register(
            "admission_requests",
            "Admission requests by kind, operation and result",
            self.requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time from receiving a review to answering it, decoding included",
            self.latency.clone(),
        );
        registry.register("tls_reloads", "Attempts to load a changed TLS certificate", self.tls_reloads.clone());
        registry.register(
            "access_checks",
            "Checks of the manage verb on a VTEP, by how they were settled",
            self.access_checks.clone(),
        );
        registry.register("connections", "Open HTTPS connections", self.connections.open.clone());
        registry.register(
            "limit_hits",
            "Clients cut short or made to wait by one of the server's limits",
            self.connections.limited.clone(),
        );
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
