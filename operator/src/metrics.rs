//! Prometheus metrics of the controllers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `EVPN/status`, `EVPNNodeState`, `VTEP/status`, `EVPN/finalizer`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric of the controllers.
pub struct Metrics {
    registry: Registry,
    pub rounds: Counter,
    pub round_seconds: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub vnis_in_use: Gauge,
    pub ips_in_use: Gauge,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("evpn_operator");
        let m = Self {
            registry: Registry::default(),
            rounds: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            writes: Family::default(),
            vnis_in_use: Gauge::default(),
            ips_in_use: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register("reconcile_rounds", "Planning rounds run", m.rounds.clone());
        registry.register("reconcile_round_seconds", "Time to plan and write one round", m.round_seconds.clone());
        registry.register("api_writes", "API writes by object kind and result", m.writes.clone());
        registry.register("vnis_in_use", "VNIs allocated to EVPNs", m.vnis_in_use.clone());
        registry.register("vtep_ips_in_use", "VTEP IPs allocated to nodes", m.ips_in_use.clone());
        registry.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Total successful writes of one kind, for tests and benchmarks.
    pub fn writes_ok(&self, kind: &'static str) -> u64 {
        self.writes.get_or_create(&WriteLabels { kind, result: "ok" }).get()
    }
}
