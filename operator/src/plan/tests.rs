//! The planner on hand-built clusters: one scenario per test, then random histories.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use evpn_crds::nodestate::{AppliedNetworkSet, DesignatedForwarderRole, NetworkPhase, NetworkState, SegmentState};
use evpn_crds::{Evpn, EvpnNetworkSet, EvpnNodeState, Vtep};
use evpn_webhook::index::NetworkFacts;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;

fn at(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

fn evpn(name: &str, created: i64, spec: Value) -> Arc<Evpn> {
    let mut e: Evpn = serde_json::from_value(json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
        "metadata": {"name": name, "generation": 1, "finalizers": [FINALIZER]}, "spec": spec}))
    .unwrap();
    e.metadata.creation_timestamp = Some(at(created));
    Arc::new(e)
}

fn l2(network: &str, vni: Option<u32>) -> Value {
    let mut spec =
        json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": "fabric", "macVRF": {}});
    if let Some(v) = vni {
        spec["macVRF"]["vni"] = json!(v);
    }
    spec
}

fn vtep(ranges: Value, mode: &str) -> Arc<Vtep> {
    Arc::new(
        serde_json::from_value(json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": "fabric", "generation": 1, "uid": "vtep-uid"},
            "spec": {"cidrs": ["198.18.0.0/29"], "mode": mode, "vniRanges": ranges, "nodeSelector": {"matchLabels": {"evpn": "on"}},
                     "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}))
        .unwrap(),
    )
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("evpn".to_owned(), "on".to_owned())].into(),
        subnets: BTreeMap::new(),
    }
}

fn networks(names: &[&str]) -> HashMap<NetworkKey, NetworkFacts> {
    names
        .iter()
        .map(|n| {
            let facts = NetworkFacts {
                topology: "Layer2".into(),
                role: Some("Primary".into()),
                transport: None,
                subnets: Vec::new(),
                mtu: None,
            };
            ((NetworkKind::ClusterUserDefinedNetwork, None, (*n).to_owned()), facts)
        })
        .collect()
}

struct Cluster {
    evpns: Vec<Arc<Evpn>>,
    vteps: Vec<Arc<Vtep>>,
    nodes: Vec<NodeInfo>,
    networks: HashMap<NetworkKey, NetworkFacts>,
    network_sets: BTreeMap<String, Arc<EvpnNetworkSet>>,
    node_states: BTreeMap<String, EvpnNodeState>,
}

impl Cluster {
    fn new(evpns: Vec<Arc<Evpn>>) -> Self {
        Self {
            evpns,
            vteps: vec![vtep(json!([{"start": 100, "end": 199}]), "Managed")],
            nodes: vec![node("n1"), node("n2")],
            networks: networks(&["blue", "red", "green"]),
            network_sets: BTreeMap::new(),
            node_states: BTreeMap::new(),
        }
    }

    fn plan(&self, planner: &mut Planner) -> Plan {
        let node_states = self.node_states.iter().map(|(n, s)| (n.clone(), ObservedNodeState::of(s))).collect();
        planner.plan(&Snapshot {
            evpns: &self.evpns,
            vteps: &self.vteps,
            nodes: &self.nodes,
            networks: &self.networks,
            network_ids: &HashMap::new(),
            network_sets: &self.network_sets,
            node_states: &node_states,
            frr_configurations: &[],
            frr_node_states: &BTreeMap::new(),
            frr_sessions: &BTreeMap::new(),
            frr_namespace: "frr-k8s-system",
            now: at(1000),
        })
    }

    /// Every agent acts on what it is given now: all its sets at their current revision.
    fn agents_apply(&mut self) {
        for state in self.node_states.values_mut() {
            let network_sets = state
                .spec
                .vteps
                .iter()
                .filter_map(|v| self.network_sets.get(&v.name))
                .map(|set| AppliedNetworkSet {
                    name: set.metadata.name.clone().unwrap(),
                    uid: set.metadata.uid.clone().unwrap(),
                    revision: set.spec.revision,
                })
                .collect();
            state.status = Some(evpn_crds::EvpnNodeStateStatus {
                observed_generation: state.metadata.generation,
                network_sets,
                ..Default::default()
            });
        }
    }

    /// One node's agent lists `evpn` as failed.
    fn fail(&mut self, node: &str, evpn: &str) {
        let failed = NetworkState {
            evpn: evpn.into(),
            applied_generation: None,
            phase: NetworkPhase::Failed,
            reason: Some("FrrReloadFailed".into()),
            message: Some("vtysh exited 1".into()),
            vnis: vec![],
        };
        let status = self.node_states.get_mut(node).unwrap().status.get_or_insert_with(Default::default);
        status.unapplied_networks.push(failed);
    }

    fn set(&self) -> &EvpnNetworkSetSpec {
        &self.network_sets["fabric"].spec
    }

    /// Writes what the plan wants, the way the controller would, then lets the agents act.
    fn apply(&mut self, plan: &Plan, agents_ready: bool) {
        for e in &mut self.evpns {
            if let Some(status) = plan.evpn_statuses.get(e.metadata.name.as_deref().unwrap()) {
                Arc::make_mut(e).status = Some(status.clone());
            }
        }
        for (vtep, desired) in &plan.network_sets {
            let mut set = EvpnNetworkSet::new(vtep, desired.spec.clone());
            set.metadata.uid = Some(format!("set-{}", desired.vtep_uid));
            set.metadata.owner_references =
                Some(vec![OwnerReference { uid: desired.vtep_uid.clone(), ..Default::default() }]);
            self.network_sets.insert(vtep.clone(), Arc::new(set));
        }
        for (node, desired) in &plan.node_specs {
            let state =
                self.node_states.entry(node.clone()).or_insert_with(|| EvpnNodeState::new(node, Default::default()));
            if state.spec != desired.spec || state.metadata.generation.is_none() {
                state.spec = desired.spec.clone();
                state.metadata.generation = Some(state.metadata.generation.unwrap_or_default() + 1);
            }
        }
        if agents_ready {
            self.agents_apply();
        }
    }
}

fn condition<'a>(status: &'a EvpnStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn an_evpn_gets_a_vni_then_reaches_its_nodes_then_becomes_ready() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::new([2, 0, 0, 0, 0, 1]);
    let first = c.plan(&mut p);
    let status = &first.evpn_statuses["blue"];
    let mac = status.mac_vrf.as_ref().unwrap();
    assert_eq!(mac.vni, 100);
    assert_eq!(mac.route_targets.import, ["65001:100"]);
    assert_eq!(mac.route_distinguisher_index, Some(RD_INDEXES.0));
    assert_eq!(first.node_specs["n1"].spec.vteps[0].ip.as_deref(), Some("198.18.0.1"));
    assert_eq!(first.node_specs["n2"].spec.vteps[0].ip.as_deref(), Some("198.18.0.2"));
    let net = &first.network_sets["fabric"].spec.networks[0];
    assert_eq!((net.evpn.as_str(), net.mac_vrf.as_ref().unwrap().vni), ("blue", 100));
    assert_eq!(condition(&first.evpn_statuses["blue"], "Ready").reason, "NodesPending");
    c.apply(&first, false);

    let second = c.plan(&mut p);
    c.apply(&second, true);

    let third = c.plan(&mut p);
    let status = &third.evpn_statuses["blue"];
    assert_eq!(condition(status, "Ready").status, "True");
    assert_eq!(status.ready_nodes.as_deref(), Some("2/2"));
    assert_eq!(condition(status, "Degraded").status, "False");
}

#[test]
fn the_older_explicit_claim_wins_and_the_loser_is_told() {
    let mut c = Cluster::new(vec![evpn("young", 5, l2("blue", Some(150))), evpn("old", 1, l2("red", Some(150)))]);
    let mut p = Planner::default();
    let plan = c.plan(&mut p);
    assert_eq!(plan.evpn_statuses["old"].mac_vrf.as_ref().unwrap().vni, 150);
    let lost = condition(&plan.evpn_statuses["young"], "Accepted");
    assert_eq!((lost.status.as_str(), lost.reason.as_str()), ("False", "Conflict"));
    assert!(lost.message.contains("\"old\""), "{}", lost.message);
    c.apply(&plan, false);
    // A restarted operator sees the same: the holder recorded in status keeps the VNI.
    let again = c.plan(&mut Planner::default());
    assert_eq!(condition(&again.evpn_statuses["young"], "Accepted").reason, "Conflict");
    assert_eq!(condition(&again.evpn_statuses["old"], "Accepted").status, "True");
}

#[test]
fn a_recorded_holder_beats_an_older_newcomer() {
    let mut c = Cluster::new(vec![evpn("holder", 9, l2("blue", None))]);
    let plan = c.plan(&mut Planner::default());
    c.apply(&plan, false);
    // An EVPN that claims to be older asks for the held VNI explicitly.
    c.evpns.push(evpn("newcomer", 0, l2("red", Some(100))));
    let plan = c.plan(&mut Planner::default());
    assert_eq!(plan.evpn_statuses["holder"].mac_vrf.as_ref().unwrap().vni, 100);
    assert_eq!(condition(&plan.evpn_statuses["newcomer"], "Accepted").reason, "Conflict");
}

#[test]
fn an_exhausted_pool_is_reported() {
    let mut c = Cluster::new(vec![evpn("a", 0, l2("blue", None)), evpn("b", 1, l2("red", None))]);
    c.vteps = vec![vtep(json!([{"start": 7, "end": 7}]), "Managed")];
    let plan = c.plan(&mut Planner::default());
    let b = condition(&plan.evpn_statuses["b"], "Accepted");
    assert_eq!(b.reason, "VniPoolExhausted");
}

#[test]
fn a_missing_network_keeps_the_allocation_but_no_node_gets_it() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("gone", None))]);
    let plan = c.plan(&mut Planner::default());
    c.apply(&plan, false);
    let plan = c.plan(&mut Planner::default());
    assert_eq!(plan.evpn_statuses["blue"].mac_vrf.as_ref().unwrap().vni, 100);
    assert_eq!(condition(&plan.evpn_statuses["blue"], "Ready").reason, "NetworkNotFound");
    assert!(plan.network_sets["fabric"].spec.networks.is_empty());
}

#[test]
fn failing_nodes_are_counted_and_listed() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::default();
    for _ in 0..2 {
        let plan = c.plan(&mut p);
        c.apply(&plan, true);
    }
    c.fail("n2", "blue");
    let status = &c.plan(&mut p).evpn_statuses["blue"];
    assert_eq!(status.nodes, Some(NodeCounts { desired: 2, ready: 1, failed: 1 }));
    assert_eq!(status.failed_nodes[0].reason, "FrrReloadFailed");
    assert_eq!(condition(status, "Degraded").status, "True");
}

#[test]
fn deletion_waits_for_every_node_to_let_go() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::default();
    for _ in 0..2 {
        let plan = c.plan(&mut p);
        c.apply(&plan, true);
    }
    Arc::make_mut(&mut c.evpns[0]).metadata.deletion_timestamp = Some(at(50));
    let plan = c.plan(&mut p);
    assert!(plan.network_sets["fabric"].spec.networks.is_empty(), "the EVPN leaves the VTEP's set");
    assert!(plan.remove_finalizer.is_empty(), "the set still lists it");
    c.apply(&plan, false);
    let plan = c.plan(&mut p);
    assert!(plan.remove_finalizer.is_empty(), "the agents have not acted on the set without it");
    c.agents_apply();
    c.fail("n1", "blue");
    c.node_states.get_mut("n1").unwrap().status.as_mut().unwrap().unapplied_networks[0].phase = NetworkPhase::Removing;
    assert!(c.plan(&mut p).remove_finalizer.is_empty(), "n1 is still removing it");
    c.agents_apply();
    let plan = c.plan(&mut p);
    assert_eq!(plan.remove_finalizer, ["blue"]);
    assert_eq!(p.vnis_in_use(), 1, "the VNI stays reserved until the object is gone");
    c.evpns.clear();
    c.plan(&mut p);
    assert_eq!(p.vnis_in_use(), 0);
}

#[test]
fn deletion_is_held_by_no_node_that_is_gone_or_serves_another_vtep() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    // A second VTEP with a node of its own.
    let mut other = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP",
        "metadata": {"name": "other", "generation": 1, "uid": "other-uid"},
        "spec": {"cidrs": ["198.18.1.0/29"], "mode": "Managed", "vniRanges": [{"start": 300, "end": 399}],
                 "nodeSelector": {"matchLabels": {"evpn": "other"}},
                 "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}});
    c.vteps.push(Arc::new(serde_json::from_value(other.take()).unwrap()));
    let mut n9 = node("n9");
    n9.labels.insert("evpn".into(), "other".into());
    c.nodes.push(n9);
    let mut on_other = l2("green", None);
    on_other["vtep"] = json!("other");
    c.evpns.push(evpn("green", 1, on_other.clone()));
    let mut p = Planner::default();
    for _ in 0..2 {
        let plan = c.plan(&mut p);
        c.apply(&plan, true);
    }
    // n9's agent stops acting: the other VTEP's set moves on without it.
    on_other["network"]["name"] = json!("red");
    c.evpns.push(evpn("red", 2, on_other));
    let plan = c.plan(&mut p);
    c.apply(&plan, false);
    // n2 is deleted; with no garbage collector yet, its node state stays, its agent gone.
    c.nodes.retain(|n| n.name != "n2");
    let lagging: Vec<(String, EvpnNodeState)> =
        ["n2", "n9"].iter().map(|n| ((*n).to_owned(), c.node_states[*n].clone())).collect();

    Arc::make_mut(&mut c.evpns[0]).metadata.deletion_timestamp = Some(at(50));
    let plan = c.plan(&mut p);
    c.apply(&plan, true);
    c.node_states.extend(lagging);
    let n2 = &c.node_states["n2"].status.as_ref().unwrap().network_sets[0];
    assert!(n2.revision < c.set().revision, "n2 never saw the set without blue");
    let plan = c.plan(&mut p);
    assert_eq!(plan.remove_finalizer, ["blue"], "neither a deleted node nor another VTEP's node holds blue");
}

#[test]
fn auto_esis_are_type_3_from_the_system_mac() {
    let mut spec = l2("blue", None);
    spec["multiHoming"] = json!({"ethernetSegments": [{"name": "s1", "interface": "eth1", "nodeSelector": {"matchLabels": {"evpn": "on"}}}]});
    let c = Cluster::new(vec![evpn("blue", 0, spec)]);
    let plan = c.plan(&mut Planner::new([0x02, 0xaa, 0, 0, 0, 0x01]));
    assert_eq!(plan.evpn_statuses["blue"].ethernet_segments[0].esi, "03:02:aa:00:00:00:01:00:00:01");
}

/// A small deterministic generator, so a failing history can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_histories_never_duplicate_and_rebuild_identically() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut c = Cluster::new(vec![]);
        c.vteps = vec![vtep(json!([{"start": 100, "end": 130}]), "Managed")];
        let mut p = Planner::default();
        for step in 0..60 {
            match rng.below(4) {
                0 | 1 => {
                    let vni = (rng.below(3) == 0).then(|| 100 + rng.below(31) as u32);
                    c.evpns.push(evpn(&format!("e{step}"), rng.below(100) as i64, l2("blue", vni)));
                }
                2 if !c.evpns.is_empty() => {
                    let i = rng.below(c.evpns.len() as u64) as usize;
                    c.evpns.remove(i);
                }
                _ => {}
            }
            let plan = c.plan(&mut p);
            c.apply(&plan, rng.below(2) == 0);
            // No VNI is recorded by two accepted EVPNs.
            let mut seen = BTreeMap::new();
            for e in &c.evpns {
                if let Some(vni) = e.status.as_ref().and_then(|s| s.mac_vrf.as_ref()).map(|m| m.vni)
                    && let Some(other) = seen.insert(vni, e.metadata.name.clone())
                {
                    panic!("seed {seed} step {step}: VNI {vni} recorded by {other:?} and {:?}", e.metadata.name);
                }
            }
            // A new leader rebuilding from the objects decides exactly what this one does.
            let rebuilt = c.plan(&mut Planner::default());
            let again = c.plan(&mut p);
            for (name, status) in &again.evpn_statuses {
                assert_eq!(status.mac_vrf, rebuilt.evpn_statuses[name].mac_vrf, "seed {seed} step {step}: {name}");
            }
        }
    }
}

#[test]
fn a_set_revision_moves_only_with_its_content_and_others_stay_ready() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::default();
    for _ in 0..3 {
        let plan = c.plan(&mut p);
        c.apply(&plan, true);
    }
    assert_eq!(c.set().revision, 1, "rounds without a change keep the revision");
    assert_eq!(condition(&c.evpns[0].status.clone().unwrap(), "Ready").status, "True");

    c.evpns.push(evpn("red", 1, l2("red", None)));
    let plan = c.plan(&mut p);
    c.apply(&plan, false);
    let plan = c.plan(&mut p);
    c.apply(&plan, false);
    let revisions: Vec<(&str, i64)> = c.set().networks.iter().map(|n| (n.evpn.as_str(), n.revision)).collect();
    assert_eq!(revisions, [("blue", 1), ("red", 2)]);
    assert_eq!(c.set().revision, 2);
    // The nodes have not acted on revision 2: red waits, blue (in revision 1) stays ready.
    let plan = c.plan(&mut p);
    assert_eq!(condition(&plan.evpn_statuses["blue"], "Ready").status, "True");
    assert_eq!(condition(&plan.evpn_statuses["red"], "Ready").reason, "NodesPending");
    c.apply(&plan, true);
    assert_eq!(condition(&c.plan(&mut p).evpn_statuses["red"], "Ready").status, "True");
}

#[test]
fn a_set_created_again_is_not_taken_for_the_old_one() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::default();
    for _ in 0..2 {
        let plan = c.plan(&mut p);
        c.apply(&plan, true);
    }
    // The VTEP is deleted and created again: the old set is gone with it, agents lag behind.
    Arc::make_mut(&mut c.vteps[0]).metadata.uid = Some("vtep-uid-2".into());
    c.network_sets.clear();
    let plan = c.plan(&mut p);
    assert_eq!(plan.network_sets["fabric"].spec.revision, 1);
    c.apply(&plan, false);
    let status = &c.plan(&mut p).evpn_statuses["blue"];
    assert_eq!(status.nodes.as_ref().map(|n| n.ready), Some(0), "revision 1 of the old set does not count");
}

#[test]
fn segments_go_to_the_selected_nodes_only() {
    let mut spec = l2("blue", None);
    spec["multiHoming"] = json!({"ethernetSegments": [{"name": "s1", "interface": "eth1", "nodeSelector": {"matchLabels": {"rack": "a"}}}]});
    let mut c = Cluster::new(vec![evpn("blue", 0, spec)]);
    c.nodes[0].labels.insert("rack".into(), "a".into());
    let mut p = Planner::default();
    let plan = c.plan(&mut p);
    c.apply(&plan, false);
    let plan = c.plan(&mut p);
    let n1 = &plan.node_specs["n1"].spec.ethernet_segments;
    assert_eq!((n1.len(), n1[0].evpn.as_str(), n1[0].interface.as_str()), (1, "blue", "eth1"));
    assert!(plan.node_specs["n2"].spec.ethernet_segments.is_empty());
}

#[test]
fn vrfs_are_named_the_way_ovn_kubernetes_names_them() {
    let cudn =
        |name: &str| NetworkRef { kind: NetworkKind::ClusterUserDefinedNetwork, name: name.into(), namespace: None };
    let udn =
        NetworkRef { kind: NetworkKind::UserDefinedNetwork, name: "blue".into(), namespace: Some("tenant".into()) };
    let ids: HashMap<String, u32> =
        [("cluster_udn_a-long-network-name".to_owned(), 7), ("tenant_blue".to_owned(), 9)].into();
    assert_eq!(vrf_name(&cudn("red"), &ids).as_deref(), Some("red"), "a short CUDN name is the VRF's");
    assert_eq!(vrf_name(&cudn("a-long-network-name"), &ids).as_deref(), Some("mp7-udn-vrf"));
    assert_eq!(vrf_name(&udn, &ids).as_deref(), Some("mp9-udn-vrf"), "a UDN always goes by its ID");
    assert_eq!(vrf_name(&cudn("default"), &ids), None, "`default` is the cluster network's");
    assert_eq!(vrf_name(&cudn("another-long-name"), &ids), None, "no ID yet, no name");

    let mut c = Cluster::new(vec![evpn("blue", 0, l2("a-long-network-name", None))]);
    c.networks = networks(&["a-long-network-name"]);
    let plan = c.plan(&mut Planner::default());
    let ready = condition(&plan.evpn_statuses["blue"], "Ready");
    assert_eq!(ready.reason, "VrfNameUnknown");
    assert!(ready.message.contains("cluster_udn_a-long-network-name"), "{}", ready.message);
    assert!(plan.network_sets["fabric"].spec.networks.is_empty(), "no node is told a network without its VRF");
}

#[test]
fn a_network_that_turns_to_ovn_kubernetes_own_evpn_leaves_the_nodes() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None))]);
    let mut p = Planner::default();
    let plan = c.plan(&mut p);
    c.apply(&plan, true);
    assert_eq!(c.plan(&mut p).network_sets["fabric"].spec.networks.len(), 1);
    for facts in c.networks.values_mut() {
        facts.transport = Some("EVPN".into());
    }
    let plan = c.plan(&mut p);
    let ready = condition(&plan.evpn_statuses["blue"], "Ready");
    assert_eq!(ready.reason, "NetworkUsesOvnEvpn");
    assert!(ready.message.contains("transport: EVPN"), "{}", ready.message);
    assert!(plan.network_sets["fabric"].spec.networks.is_empty());
}

#[test]
fn route_distinguishers_stay_clear_of_frr_automatic_ones() {
    let mut c = Cluster::new(vec![evpn("blue", 0, l2("blue", None)), evpn("red", 1, l2("red", None))]);
    let plan = c.plan(&mut Planner::default());
    let rd = |plan: &Plan, e: &str| plan.evpn_statuses[e].mac_vrf.as_ref().unwrap().route_distinguisher_index;
    assert_eq!((rd(&plan, "blue"), rd(&plan, "red")), (Some(32768), Some(32769)));
    c.apply(&plan, false);
    // An index recorded in FRR's automatic range (by an older release) is replaced on the next
    // plan, also by a restarted operator; an index in range is kept.
    let blue = c.evpns.iter_mut().find(|e| e.metadata.name.as_deref() == Some("blue")).unwrap();
    Arc::make_mut(blue).status.as_mut().unwrap().mac_vrf.as_mut().unwrap().route_distinguisher_index = Some(3);
    let again = c.plan(&mut Planner::default());
    assert_eq!((rd(&again, "blue"), rd(&again, "red")), (Some(32768), Some(32769)));
}

#[test]
fn segment_status_says_where_it_is_up_and_who_forwards() {
    let mut spec = l2("blue", None);
    spec["multiHoming"] = json!({"ethernetSegments": [{"name": "s1", "interface": "bond1", "nodeSelector": {}}]});
    let mut c = Cluster::new(vec![evpn("blue", 0, spec)]);
    let mut p = Planner::default();
    let plan = c.plan(&mut p);
    c.apply(&plan, true);
    let esi = plan.evpn_statuses["blue"].ethernet_segments[0].esi.clone();
    let report = |role, state: &str| SegmentState {
        evpn: "blue".into(),
        name: "s1".into(),
        esi: esi.clone(),
        role,
        state: Some(state.into()),
        peers: vec![],
    };
    let reports = [
        ("n1", report(Some(DesignatedForwarderRole::DF), "Up")),
        ("n2", report(Some(DesignatedForwarderRole::NonDF), "Up")),
    ];
    for (node, seg) in &reports {
        c.node_states.get_mut(*node).unwrap().status.as_mut().unwrap().ethernet_segments = vec![seg.clone()];
    }
    let seg = &c.plan(&mut p).evpn_statuses["blue"].ethernet_segments[0];
    assert_eq!(
        (seg.up_nodes.as_slice(), seg.designated_forwarders.as_slice()),
        (&["n1".to_owned(), "n2".to_owned()][..], &["n1".to_owned()][..])
    );

    // Node 1 loses its uplinks: its segment goes down and node 2 takes over.
    let (n1, n2) =
        (report(Some(DesignatedForwarderRole::NonDF), "Down"), report(Some(DesignatedForwarderRole::DF), "Up"));
    c.node_states.get_mut("n1").unwrap().status.as_mut().unwrap().ethernet_segments = vec![n1];
    c.node_states.get_mut("n2").unwrap().status.as_mut().unwrap().ethernet_segments = vec![n2];
    let seg = &c.plan(&mut p).evpn_statuses["blue"].ethernet_segments[0];
    assert_eq!(
        (seg.up_nodes.as_slice(), seg.designated_forwarders.as_slice()),
        (&["n2".to_owned()][..], &["n2".to_owned()][..])
    );
}

/// What a restore without status gives back: the objects' specs only (nothing else survives),
/// created again in `order`.
fn restored(recorded: &BTreeMap<String, Arc<Evpn>>, order: &[&str], vtep: &Vtep) -> Cluster {
    let evpns = order
        .iter()
        .enumerate()
        .map(|(i, n)| evpn(n, i as i64, serde_json::to_value(&recorded[*n].spec).unwrap()))
        .collect();
    let mut c = Cluster::new(evpns);
    let mut v = vtep.clone();
    v.status = None;
    c.vteps = vec![Arc::new(v)];
    c
}

#[test]
fn allocations_are_recorded_in_specs_and_come_back_after_a_restore_without_status() {
    let mut with_segment = l2("blue", None);
    with_segment["multiHoming"] = json!({"ethernetSegments": [{"name": "s1", "interface": "bond1", "nodeSelector": {"matchLabels": {"evpn": "on"}}}]});
    let c = Cluster::new(vec![evpn("blue", 0, with_segment), evpn("red", 1, l2("red", None))]);
    let mac = [2, 0, 0, 0, 0, 1];
    let mut planner = Planner::new(mac);
    let first = c.plan(&mut planner);
    let recorded: BTreeMap<String, Arc<Evpn>> = c
        .evpns
        .iter()
        .map(|e| {
            let n = e.metadata.name.clone().unwrap();
            let mut e = (**e).clone();
            e.spec = first.evpn_specs[&n].clone();
            (n, Arc::new(e))
        })
        .collect();
    let blue = recorded["blue"].spec.mac_vrf.as_ref().unwrap();
    assert_eq!((blue.vni, blue.route_distinguisher_index), (Some(100), Some(RD_INDEXES.0)));
    let esis = &recorded["blue"].spec.multi_homing.as_ref().unwrap().derived_esis;
    assert_eq!(esis["s1"], "03:02:00:00:00:00:01:00:00:01");
    assert!(recorded["blue"].spec.records_allocations_of(&c.evpns[0].spec), "what the webhook lets the operator write");
    let addresses = &first.vtep_addresses["fabric"];
    assert_eq!(
        addresses.iter().map(|a| (a.node.as_str(), a.ip.as_str())).collect::<Vec<_>>(),
        [("n1", "198.18.0.1"), ("n2", "198.18.0.2")]
    );
    let mut vtep = (*c.vteps[0]).clone();
    vtep.spec.node_addresses = addresses.clone();

    // Restored in the other order, without statuses or node states, into a cluster whose
    // system MAC differs, and with the nodes listed the other way round: every allocation
    // comes back from the specs, and nothing is left to record.
    let mut back = restored(&recorded, &["red", "blue"], &vtep);
    back.nodes.reverse();
    let mut fresh = Planner::new([2, 9, 9, 9, 9, 9]);
    let again = back.plan(&mut fresh);
    for (n, status) in &first.evpn_statuses {
        assert_eq!(again.evpn_statuses[n].mac_vrf, status.mac_vrf, "{n}'s MAC-VRF");
        assert_eq!(again.evpn_statuses[n].ethernet_segments, status.ethernet_segments, "{n}'s segments");
    }
    for node in ["n1", "n2"] {
        assert_eq!(again.node_specs[node].spec.vteps, first.node_specs[node].spec.vteps, "{node}'s VTEP IP");
    }
    assert!(again.evpn_specs.is_empty() && again.vtep_addresses.is_empty(), "{:?}", again.evpn_specs);

    // Without the record in the specs, the same restore hands the VNIs out the other way round.
    let unrecorded: BTreeMap<String, Arc<Evpn>> =
        c.evpns.iter().map(|e| (e.metadata.name.clone().unwrap(), e.clone())).collect();
    let lost = restored(&unrecorded, &["red", "blue"], &c.vteps[0]).plan(&mut Planner::new(mac));
    assert_ne!(lost.evpn_statuses["blue"].mac_vrf, first.evpn_statuses["blue"].mac_vrf);
}

#[test]
fn a_recorded_route_distinguisher_index_held_by_another_evpn_is_a_conflict() {
    let with_rd = |network: &str, rd: u32| {
        let mut spec = l2(network, None);
        spec["macVRF"]["routeDistinguisherIndex"] = json!(rd);
        spec
    };
    let c = Cluster::new(vec![evpn("blue", 0, with_rd("blue", 40000)), evpn("red", 1, with_rd("red", 40000))]);
    let plan = c.plan(&mut Planner::new([2, 0, 0, 0, 0, 1]));
    assert_eq!(plan.evpn_statuses["blue"].mac_vrf.as_ref().unwrap().route_distinguisher_index, Some(40000));
    let accepted = condition(&plan.evpn_statuses["red"], "Accepted");
    assert_eq!(accepted.reason, "Conflict");
    assert!(
        accepted.message.contains("routeDistinguisherIndex 40000 is held by EVPN \"blue\""),
        "{}",
        accepted.message
    );
}
