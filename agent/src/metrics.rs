//! Prometheus metrics of the agent (`evpn_agent_*`) and its readiness, served on
//! `--metrics-listen`.
//!
//! The gauges are set from each reconcile's [`Observed`], the same facts the node state's status
//! is built from, so a scrape and `kubectl get evpnnodestate -o yaml` never disagree; unlike the
//! status, the metrics also count the applied networks.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dataplane::ApplyScope;
use crate::report::{Observed, Outcome};

/// A reconcile step that can fail: `dataplane` (devices), `frr` (configuration), `frr_state`
/// (reading VRFs, sessions or VNIs back from FRR), `bgp_password` (a neighbor's Secret).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `changes` (a spec or set changed) or `full` (the periodic resync).
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Applied`, `Pending`, `Failed` or `Removing`.
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// FRR's BGP state: `Established`, `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VniLabels {
    /// `L2` or `L3`.
    pub r#type: String,
    /// `up` or `down`, as zebra reports it.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// `l3vni_reattached`: an IP-VRF's L3VNI re-attached because zebra had lost the router MAC
    /// of a remote VTEP its routes go through.
    pub repair: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms to about 65 s: a one-VNI change takes tens of ms, a full sync hundreds of ms.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Where the agent is on its way to ready.
const WATCHING: u8 = 0;
const LISTED: u8 = 1;
const READY: u8 = 2;

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ScopeLabels, Counter>,
    pub reconcile_seconds: HistogramFamily<ScopeLabels>,
    pub apply_seconds: HistogramFamily<StepLabels>,
    pub errors: Family<StepLabels, Counter>,
    pub networks: Family<PhaseLabels, Gauge>,
    pub bgp_sessions: Family<SessionLabels, Gauge>,
    pub vnis: Family<VniLabels, Gauge>,
    pub last_success: Gauge<f64, AtomicU64>,
    pub status_writes: Family<ResultLabels, Counter>,
    pub frr_repairs: Family<RepairLabels, Counter>,
    readiness: AtomicU8,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(seconds),
            apply_seconds: Family::new_with_constructor(seconds),
            errors: Family::default(),
            networks: Family::default(),
            bgp_sessions: Family::default(),
            vnis: Family::default(),
            last_success: Gauge::default(),
            status_writes: Family::default(),
            frr_repairs: Family::default(),
            readiness: AtomicU8::new(WATCHING),
        };
        let mut registry = Registry::with_prefix("evpn_agent");
        registry.register("reconciles", "Reconciles run, by what started them", m.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile: plan, data plane, FRR, reading FRR's state",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "apply_duration_seconds",
            "Time to apply the plan, by step: dataplane (netlink) or frr (reload or vtysh)",
            m.apply_seconds.clone(),
        );
        registry.register("reconcile_errors", "Reconcile steps that failed, by step", m.errors.clone());
        registry.register("networks", "Networks of this node by phase, as last reported", m.networks.clone());
        registry.register("bgp_sessions", "BGP sessions by state, as FRR last reported them", m.bgp_sessions.clone());
        registry.register("vnis", "VNIs by type and state, as zebra last reported them", m.vnis.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the end of the last reconcile in which no network failed",
            m.last_success.clone(),
        );
        registry.register("status_writes", "Writes of the node state's status, by result", m.status_writes.clone());
        registry.register("frr_repairs", "Repairs of FRR's state the agent made, by kind", m.frr_repairs.clone());
        for phase in ["Applied", "Pending", "Failed", "Removing"] {
            m.networks.get_or_create(&PhaseLabels { phase }).set(0);
        }
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

    /// Counts a failed step.
    pub fn error(&self, step: &'static str) {
        self.errors.get_or_create(&StepLabels { step }).inc();
    }

    /// Times one apply step.
    pub fn applied(&self, step: &'static str, took: Duration) {
        self.apply_seconds.get_or_create(&StepLabels { step }).observe(took.as_secs_f64());
    }

    /// Records one finished reconcile and what it observed.
    pub fn reconciled(&self, scope: ApplyScope, observed: &Observed, took: Duration) {
        let scope = ScopeLabels {
            scope: match scope {
                ApplyScope::Changes => "changes",
                ApplyScope::Full => "full",
            },
        };
        self.reconciles.get_or_create(&scope).inc();
        self.reconcile_seconds.get_or_create(&scope).observe(took.as_secs_f64());

        let mut phases = [("Applied", 0), ("Pending", 0), ("Failed", 0), ("Removing", 0)];
        for (_, outcome) in &observed.networks {
            let i = match outcome {
                Outcome::Applied { .. } => 0,
                Outcome::Pending { .. } => 1,
                Outcome::Failed { .. } => 2,
                Outcome::RemovalFailed { .. } => 3,
            };
            phases[i].1 += 1;
        }
        for (phase, n) in phases {
            self.networks.get_or_create(&PhaseLabels { phase }).set(n);
        }

        // States and VNI types that vanished must not keep their last count.
        self.bgp_sessions.clear();
        for session in &observed.sessions {
            self.bgp_sessions.get_or_create(&SessionLabels { state: session.state.clone() }).inc();
        }
        self.vnis.clear();
        for vni in observed.vnis.values() {
            let state = if vni.up { "up" } else { "down" };
            self.vnis.get_or_create(&VniLabels { r#type: vni.type_.clone(), state }).inc();
        }

        if phases[2].1 == 0 && phases[3].1 == 0 {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
    }

    /// Both watches have listed once: the agent knows what its node must carry.
    pub fn mark_listed(&self) {
        let _ = self.readiness.compare_exchange(WATCHING, LISTED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The first reconcile is done.
    pub fn mark_ready(&self) {
        self.readiness.store(READY, Ordering::Release);
    }

    /// What `/readyz` answers: ready once the watches have listed and a reconcile has run on
    /// what they listed, so a rolling update moves on only past an agent that has done its job
    /// once.
    pub fn readiness(&self) -> Result<(), String> {
        match self.readiness.load(Ordering::Acquire) {
            READY => Ok(()),
            LISTED => Err("the first reconcile has not finished".into()),
            _ => Err("the node state and network set watches have not listed yet".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test that cannot set up should panic")]

    use std::net::SocketAddr;
    use std::sync::Arc;

    use evpn_crds::nodestate::{BgpSessionState, VniState};
    use evpn_telemetry::serve;
    use evpn_tests::{http_get, sample};

    use super::*;

    fn observed() -> Observed {
        let session = |state: &str| BgpSessionState { neighbor: "192.0.2.1".into(), state: state.into(), bfd: None };
        let vni = |vni, type_: &str, up| (vni, VniState { vni, type_: type_.into(), up });
        Observed {
            networks: vec![
                ("blue".into(), Outcome::Applied { generation: 1 }),
                ("red".into(), Outcome::Failed { reason: "VrfNotFound".into(), message: "no VRF red".into() }),
                ("green".into(), Outcome::Pending { reason: "VrfNotReady".into(), message: "wait".into() }),
            ],
            sessions: vec![session("Established"), session("Established"), session("Active")],
            vnis: [vni(100, "L2", true), vni(200, "L3", false)].into(),
            ..Observed::default()
        }
    }

    /// The agent's endpoint on a free port, as `main` serves it.
    async fn serve(metrics: Arc<Metrics>) -> SocketAddr {
        let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (encode, ready) = (metrics.clone(), metrics);
        let endpoints = serve::Endpoints {
            metrics: Arc::new(move || encode.encode()),
            ready: Arc::new(move || ready.readiness()),
            live: serve::answering(),
        };
        tokio::spawn(serve::serve(listener, endpoints));
        addr
    }

    #[tokio::test]
    async fn the_endpoint_serves_health_readiness_and_what_a_reconcile_observed() {
        let metrics = Arc::new(Metrics::default());
        let addr = serve(metrics.clone()).await;

        let health = http_get(addr, "/healthz").await.unwrap();
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));
        let not_ready = http_get(addr, "/readyz").await.unwrap();
        assert_eq!(not_ready.status, 503);
        assert!(not_ready.body.contains("watches have not listed"), "{}", not_ready.body);
        metrics.mark_listed();
        assert!(http_get(addr, "/readyz").await.unwrap().body.contains("first reconcile"));

        metrics.applied("dataplane", Duration::from_millis(3));
        metrics.applied("frr", Duration::from_millis(40));
        metrics.error("frr_state");
        metrics.reconciled(ApplyScope::Full, &observed(), Duration::from_millis(50));
        metrics.mark_ready();
        assert_eq!(http_get(addr, "/readyz").await.unwrap().status, 200);

        let scraped = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(scraped.content_type.as_deref(), Some(serve::OPENMETRICS));
        let text = scraped.body;
        let value = |metric: &str| sample(&text, metric).unwrap_or_else(|| panic!("{metric} missing:\n{text}"));
        assert_eq!(value(r#"evpn_agent_reconciles_total{scope="full"}"#), 1.0);
        assert_eq!(value(r#"evpn_agent_reconcile_duration_seconds_count{scope="full"}"#), 1.0);
        assert_eq!(value(r#"evpn_agent_apply_duration_seconds_count{step="dataplane"}"#), 1.0);
        assert_eq!(value(r#"evpn_agent_apply_duration_seconds_sum{step="frr"}"#), 0.04);
        assert_eq!(value(r#"evpn_agent_reconcile_errors_total{step="frr_state"}"#), 1.0);
        for (phase, n) in [("Applied", 1.0), ("Pending", 1.0), ("Failed", 1.0), ("Removing", 0.0)] {
            assert_eq!(value(&format!("evpn_agent_networks{{phase=\"{phase}\"}}")), n);
        }
        assert_eq!(value(r#"evpn_agent_bgp_sessions{state="Established"}"#), 2.0);
        assert_eq!(value(r#"evpn_agent_bgp_sessions{state="Active"}"#), 1.0);
        assert_eq!(value(r#"evpn_agent_vnis{type="L2",state="up"}"#), 1.0);
        assert_eq!(value(r#"evpn_agent_vnis{type="L3",state="down"}"#), 1.0);
        assert_eq!(value("evpn_agent_last_success_timestamp_seconds"), 0.0, "a network failed");
    }

    #[test]
    fn a_reconcile_without_failures_is_a_success_and_gone_states_vanish() {
        let metrics = Metrics::default();
        metrics.reconciled(ApplyScope::Changes, &observed(), Duration::ZERO);
        let healthy =
            Observed { networks: vec![("blue".into(), Outcome::Applied { generation: 2 })], ..Observed::default() };
        metrics.reconciled(ApplyScope::Changes, &healthy, Duration::ZERO);
        let text = metrics.encode();
        assert!(sample(&text, "evpn_agent_last_success_timestamp_seconds").is_some_and(|t| t > 1.7e9), "{text}");
        assert_eq!(sample(&text, r#"evpn_agent_networks{phase="Failed"}"#), Some(0.0));
        assert!(!text.contains("Established") && !text.contains("evpn_agent_vnis{"), "{text}");
    }
}
