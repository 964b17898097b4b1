//! Prometheus metrics of the controllers (`evpn_operator_*`), served on the metrics port beside
//! the webhook's (`evpn_webhook_*`, see [`Metrics::include_webhook`]).

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

/// Labels of the EVPN condition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// `Accepted`, `Ready` or `Degraded`.
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The condition's reason, e.g. `Conflict`, `NodesPending`.
    pub reason: String,
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
    pub evpn_conditions: Family<ConditionLabels, Gauge>,
    /// Whether the control loop is in a round, and since when: what `/healthz` judges.
    pub progress: crate::health::Progress,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("evpn_operator");
        let m = Self {
            registry: Registry::default(),
            rounds: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            writes: Family::default(),
            vnis_in_use: Gauge::default(),
            ips_in_use: Gauge::default(),
            leader: Gauge::default(),
            evpn_conditions: Family::default(),
            progress: crate::health::Progress::default(),
        };
        registry.register("reconcile_rounds", "Planning rounds run", m.rounds.clone());
        registry.register("reconcile_round_seconds", "Time to plan and write one round", m.round_seconds.clone());
        registry.register("api_writes", "API writes by object kind and result", m.writes.clone());
        registry.register("vnis_in_use", "VNIs allocated to EVPNs", m.vnis_in_use.clone());
        registry.register("vtep_ips_in_use", "VTEP IPs allocated to nodes", m.ips_in_use.clone());
        registry.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        registry.register(
            "evpn_conditions",
            "EVPNs by condition type, status and reason, as the last round planned them (leader only)",
            m.evpn_conditions.clone(),
        );
        Self { registry: root, ..m }
    }
}

impl Metrics {
    /// Serves the webhook's metrics from this registry too.
    pub fn include_webhook(&mut self, webhook: &evpn_webhook::metrics::Metrics) {
        webhook.register(&mut self.registry);
    }

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

    /// Counts the EVPNs' conditions of one round's statuses.
    pub fn record_conditions<'a>(&self, statuses: impl IntoIterator<Item = &'a evpn_crds::EvpnStatus>) {
        let mut counts = std::collections::HashMap::<ConditionLabels, i64>::new();
        for c in statuses.into_iter().flat_map(|s| &s.conditions) {
            let labels =
                ConditionLabels { r#type: c.type_.clone(), status: c.status.clone(), reason: c.reason.clone() };
            *counts.entry(labels).or_default() += 1;
        }
        // A combination no EVPN has any more must disappear, not stay at its last count.
        self.evpn_conditions.clear();
        for (labels, n) in counts {
            self.evpn_conditions.get_or_create(&labels).set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evpn_crds::EvpnStatus;
    use evpn_crds::common::Condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn status(conditions: &[(&str, &str, &str)]) -> EvpnStatus {
        EvpnStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: (*r).into(),
                    message: String::new(),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .collect(),
            ..EvpnStatus::default()
        }
    }

    #[test]
    fn conditions_are_counted_and_vanished_ones_dropped() {
        let mut m = Metrics::default();
        let webhook = evpn_webhook::metrics::Metrics::default();
        m.include_webhook(&webhook);
        let denied = evpn_webhook::metrics::RequestLabels { kind: "EVPN", operation: "create", result: "denied" };
        webhook.requests.get_or_create(&denied).inc();
        let conflict = status(&[("Accepted", "False", "Conflict"), ("Ready", "False", "NotAccepted")]);
        let ready = status(&[("Accepted", "True", "Allocated"), ("Ready", "True", "AllNodesReady")]);
        m.record_conditions([&conflict, &ready, &ready]);
        let text = m.encode();
        assert!(
            text.contains(r#"evpn_operator_evpn_conditions{type="Ready",status="True",reason="AllNodesReady"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"evpn_operator_evpn_conditions{type="Accepted",status="False",reason="Conflict"} 1"#));
        assert!(
            text.contains(r#"evpn_webhook_admission_requests_total{kind="EVPN",operation="create",result="denied"} 1"#),
            "the webhook's metrics are included"
        );
        m.record_conditions([&ready]);
        assert!(!m.encode().contains("Conflict"), "no EVPN is in conflict any more");
    }
}
