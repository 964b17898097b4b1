//! The operator under faults between it and the apiserver: responses lost after the apiserver
//! committed a write, an apiserver restart and an etcd restart in the middle of a burst, and
//! 30 s of 2 s latency.
//!
//! The operator's requests go through [`FaultProxy`]; the test's own requests and the simulated
//! agents' go straight to the apiserver, so only the operator sees the faults (except restarts,
//! which everyone sees). Every scenario ends the same way ([`Scenario::recovers`]): EVPNs created
//! after the fault reach the nodes and become Ready, every allocation made before it is
//! unchanged, and the operator goes back to idle: a window of [`IDLE_WINDOW`] with at most
//! [`IDLE_ROUNDS`] planning rounds, read from its `rounds` counter.
//!
//! Restarts need a control plane of our own (one shared by other test binaries must not
//! restart under them), so this binary always starts a private one; the scenarios take turns
//! on it.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::{Evpn, EvpnNetworkSet, EvpnNodeState};
use evpn_operator::controller::Config;
use evpn_operator::metrics::Metrics;
use evpn_tests::faults::{Component, Fault, FaultProxy};
use evpn_tests::simulated::Agents;
use evpn_tests::{ControlPlane, DEADLINE, another_control_plane, apply, eventually, unique_name};
use futures::StreamExt;
use http::Method;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static CONTROL_PLANE: OnceCell<ControlPlane> = OnceCell::const_new();

/// How long the operator must stay (nearly) quiet to count as idle.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// Planning rounds allowed in an idle window (a late node count may still be written).
const IDLE_ROUNDS: u64 = 2;

const GROUP: &str = "/apis/evpn.k8s.ovn.org/v1alpha1";

async fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_try_init(|| another_control_plane("faults")).await.unwrap()
}

/// One world (nodes, a VTEP with a VNI range of its own, a network), an operator talking through
/// the proxy, simulated agents, and the EVPNs that were Ready before the fault.
struct Scenario {
    admin: Client,
    proxy: FaultProxy,
    metrics: Arc<Metrics>,
    operator: JoinHandle<()>,
    agents: JoinHandle<()>,
    id: String,
    vtep: String,
    network: String,
    nodes: Vec<String>,
    /// A node that exists only once [`Scenario::add_node`] adds it; its agent already runs.
    joiner: String,
    range: (u32, u32),
    /// What the EVPNs and nodes had been given before the fault.
    allocated: Allocations,
    created: u32,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.operator.abort();
        self.agents.abort();
    }
}

/// Everything allocated, by EVPN and by node: what must survive a fault unchanged.
#[derive(Debug, Default, PartialEq)]
struct Allocations {
    evpns: BTreeMap<String, Value>,
    vtep_ips: BTreeMap<String, Option<String>>,
}

impl Scenario {
    /// Sets the world up and waits until `before` EVPNs are Ready.
    async fn new(before: usize) -> Self {
        let cp = control_plane().await;
        let admin = cp.admin().await.unwrap();
        let id = unique_name("faults");
        let n: u32 = id.rsplit('-').next().unwrap().parse().unwrap();
        // A control plane of this binary's own: worlds only need to differ from each other.
        let base = 2_000_000 + n * 100;
        let range = (base, base + 99);
        let nodes: Vec<String> = (0..2).map(|i| format!("{id}-n{i}")).collect();
        for node in &nodes {
            add_node(&admin, &id, node).await;
        }
        let vtep = format!("{id}-vtep");
        apply(
            &admin,
            &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep},
            "spec": {"cidrs": ["198.18.0.0/22"], "mode": "Managed",
            "nodeSelector": {"matchLabels": {"evpn-test/world": id}},
            "vniRanges": [{"start": range.0, "end": range.1}],
            "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}),
        )
        .await
        .unwrap();
        let network = format!("{id}-net");
        apply(
            &admin,
            &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork",
            "metadata": {"name": network}, "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2",
            "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}}),
        )
        .await
        .unwrap();
        evpn_tests::annotate_network_id(&admin, &network, base).await.unwrap();

        let proxy = FaultProxy::start(cp).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        if let Ok(filter) = std::env::var("EVPN_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let config =
            Config { debounce: Duration::from_millis(50), max_delay: Duration::from_millis(500), ..Config::default() };
        // The control loop alone, without leader election: a lapsed lease would restart it with
        // a fresh writer and hide what a fault left behind in the old one.
        let operator_client = proxy.operator(cp).await.unwrap();
        let operator = tokio::spawn(evpn_operator::controller::run(operator_client, config, metrics.clone()));
        let joiner = format!("{id}-joiner");
        let simulated: BTreeSet<String> = nodes.iter().chain([&joiner]).cloned().collect();
        let agents = tokio::spawn(Agents { nodes: simulated, ..Agents::default() }.run(admin.clone()));

        let mut s = Self {
            admin,
            proxy,
            metrics,
            operator,
            agents,
            id,
            vtep,
            network,
            nodes,
            joiner,
            range,
            allocated: Allocations::default(),
            created: 0,
        };
        let names = s.names(before);
        s.create(&names).await;
        s.wait_ready(&names).await;
        s.allocated = s.allocations().await;
        assert_eq!(s.allocated.evpns.len(), before);
        s
    }

    /// `n` names for EVPNs not created yet.
    fn names(&mut self, n: usize) -> Vec<String> {
        let first = self.created;
        self.created += n as u32;
        (first..self.created).map(|i| format!("{}-e{i}", self.id)).collect()
    }

    fn evpn_path(name: &str) -> String {
        format!("{GROUP}/evpns/{name}/status")
    }

    /// Creates EVPNs (auto-allocated MAC-VRFs) concurrently, retrying whatever a fault broke.
    async fn create(&self, names: &[String]) {
        let api: Api<Evpn> = Api::all(self.admin.clone());
        futures::stream::iter(names.iter().map(|name| {
            let obj: Evpn = serde_json::from_value(json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
                "metadata": {"name": name}, "spec": {"network": {"kind": "ClusterUserDefinedNetwork",
                "name": self.network}, "vtep": self.vtep, "macVRF": {}}}))
            .unwrap();
            let api = api.clone();
            async move {
                eventually(|| async {
                    match api.create(&PostParams::default(), &obj).await {
                        Ok(_) => true,
                        // A create whose answer a restart swallowed may have landed.
                        Err(e) => evpn_tests::api_status(&e) == Some(409),
                    }
                })
                .await
                .unwrap();
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    }

    /// Waits until every named EVPN is Ready (for its current generation) on all nodes.
    async fn wait_ready(&self, names: &[String]) {
        let api: Api<Evpn> = Api::all(self.admin.clone());
        let wanted: BTreeSet<&String> = names.iter().collect();
        let last = std::sync::Mutex::new(Vec::new());
        let result = eventually(|| async {
            let Ok(list) = api.list(&Default::default()).await else { return false };
            let pending: Vec<Evpn> =
                list.items.into_iter().filter(|e| wanted.contains(&e.name_any()) && !ready(e)).collect();
            let done = pending.is_empty();
            *last.lock().unwrap() = pending;
            done
        })
        .await;
        if let Err(e) = result {
            let pending = last.into_inner().unwrap();
            let stuck: Vec<_> = pending.iter().take(2).map(|e| (e.name_any(), e.status.clone())).collect();
            panic!(
                "{e}: {} of {} EVPNs never became Ready (operator ran {} rounds), e.g. {stuck:#?}",
                pending.len(),
                names.len(),
                self.metrics.rounds.get()
            );
        }
    }

    /// What every EVPN of this world and every node holds now.
    async fn allocations(&self) -> Allocations {
        let evpns = Api::<Evpn>::all(self.admin.clone()).list(&Default::default()).await.unwrap();
        let prefix = format!("{}-e", self.id);
        let evpns = evpns
            .items
            .into_iter()
            .filter(|e| e.name_any().starts_with(&prefix))
            .map(|e| {
                let s = e.status.clone().unwrap_or_default();
                (e.name_any(), json!([s.mac_vrf, s.ip_vrf, s.vrf_name, s.ethernet_segments]))
            })
            .collect();
        let states: Api<EvpnNodeState> = Api::all(self.admin.clone());
        let mut vtep_ips = BTreeMap::new();
        for node in &self.nodes {
            let state = states.get(node).await.unwrap();
            let ip = state.spec.vteps.iter().find(|v| v.name == self.vtep).and_then(|v| v.ip.clone());
            vtep_ips.insert(node.clone(), ip);
        }
        Allocations { evpns, vtep_ips }
    }

    /// Adds the node whose agent already runs.
    async fn add_node(&self) {
        add_node(&self.admin, &self.id, &self.joiner).await;
    }

    /// The operator's successful writes of one kind so far.
    fn written(&self, kind: &'static str) -> u64 {
        self.metrics.writes_ok(kind)
    }

    /// How every scenario ends: new EVPNs reach the nodes and become Ready, nothing allocated
    /// before the fault changed, and the operator goes back to idle.
    async fn recovers(mut self, created_during: &[String]) {
        let after = self.names(2);
        self.create(&after).await;
        let new: Vec<String> = created_during.iter().chain(&after).cloned().collect();
        self.wait_ready(&new).await;

        let set = Api::<EvpnNetworkSet>::all(self.admin.clone()).get(&self.vtep).await.unwrap();
        let told: BTreeSet<&str> = set.spec.networks.iter().map(|n| n.evpn.as_str()).collect();
        let missing: Vec<&String> = new.iter().filter(|n| !told.contains(n.as_str())).collect();
        assert!(missing.is_empty(), "the nodes were never told of {missing:?}");

        let now = self.allocations().await;
        for (name, before) in &self.allocated.evpns {
            assert_eq!(now.evpns.get(name), Some(before), "{name}'s allocation changed across the fault");
        }
        assert_eq!(now.vtep_ips, self.allocated.vtep_ips, "a node's VTEP IP changed across the fault");
        let vnis: BTreeSet<u64> = now.evpns.values().filter_map(|v| v[0]["vni"].as_u64()).collect();
        assert_eq!(vnis.len(), now.evpns.len(), "duplicate or missing VNIs: {:#?}", now.evpns);
        assert!(vnis.iter().all(|v| (u64::from(self.range.0)..=u64::from(self.range.1)).contains(v)));

        self.idles().await;
    }

    /// Waits for a window of [`IDLE_WINDOW`] with at most [`IDLE_ROUNDS`] planning rounds.
    async fn idles(&self) {
        let deadline = tokio::time::Instant::now() + DEADLINE / 3;
        let mut counts = Vec::new();
        loop {
            let before = self.metrics.rounds.get();
            tokio::time::sleep(IDLE_WINDOW).await;
            let rounds = self.metrics.rounds.get() - before;
            if rounds <= IDLE_ROUNDS {
                return;
            }
            counts.push(rounds);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator never went idle: rounds in successive {IDLE_WINDOW:?} windows: {counts:?}"
            );
        }
    }
}

async fn add_node(client: &Client, world: &str, name: &str) {
    apply(
        client,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"evpn-test/world": world}}}),
    )
    .await
    .unwrap();
}

fn ready(e: &Evpn) -> bool {
    let Some(status) = &e.status else { return false };
    status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        && status.conditions.iter().all(|c| c.observed_generation == e.metadata.generation)
}

#[tokio::test]
async fn a_lost_response_to_an_evpn_status_write() {
    let _turn = TURN.lock().await;
    let mut s = Scenario::new(2).await;
    let during = s.names(1);
    // The new EVPN's first status write records its allocation: it lands, its answer is lost.
    let fired = s.proxy.arm(Fault::LoseResponse, Method::PATCH, &Scenario::evpn_path(&during[0]));
    s.create(&during).await;
    fired.wait().await.unwrap();
    s.recovers(&during).await;
}

#[tokio::test]
async fn a_lost_response_to_a_node_state_write() {
    let _turn = TURN.lock().await;
    let s = Scenario::new(2).await;
    // A joining node's state is created by the operator: it lands, its answer is lost.
    let fired = s.proxy.arm(Fault::LoseResponse, Method::PATCH, &format!("{GROUP}/evpnnodestates/{}", s.joiner));
    s.add_node().await;
    fired.wait().await.unwrap();
    s.recovers(&[]).await;
}

#[tokio::test]
async fn a_reset_before_a_network_set_write() {
    let _turn = TURN.lock().await;
    let mut s = Scenario::new(2).await;
    let during = s.names(1);
    // The set never hears of the new EVPN on the first try.
    let fired = s.proxy.arm(Fault::Reset, Method::PATCH, &format!("{GROUP}/evpnnetworksets/{}", s.vtep));
    s.create(&during).await;
    fired.wait().await.unwrap();
    s.recovers(&during).await;
}

/// Restarts `component` once the operator has recorded a few allocations of a burst of creates
/// still arriving.
async fn restart_mid_burst(component: Component) {
    let _turn = TURN.lock().await;
    let mut s = Scenario::new(2).await;
    let burst = s.names(20);
    let statuses = s.written("EVPN/status");
    let restarting = async {
        eventually(|| async { s.written("EVPN/status") >= statuses + 3 }).await.unwrap();
        control_plane().await.restart(component).await.unwrap();
    };
    futures::join!(s.create(&burst), restarting);
    s.recovers(&burst).await;
}

#[tokio::test]
async fn an_apiserver_restart_mid_burst() {
    restart_mid_burst(Component::Apiserver).await;
}

#[tokio::test]
async fn an_etcd_restart_mid_burst() {
    restart_mid_burst(Component::Etcd).await;
}

#[tokio::test]
async fn thirty_seconds_of_two_second_latency() {
    let _turn = TURN.lock().await;
    let mut s = Scenario::new(2).await;
    let slow_until = tokio::time::Instant::now() + Duration::from_secs(30);
    s.proxy.set_latency(Duration::from_secs(2));
    let during = s.names(2);
    s.create(&during).await;
    // Work goes on, slowly, while every request of the operator waits 2 s.
    s.wait_ready(&during).await;
    tokio::time::sleep_until(slow_until).await;
    s.proxy.set_latency(Duration::ZERO);
    s.recovers(&during).await;
}
