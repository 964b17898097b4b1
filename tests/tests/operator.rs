//! The controllers against a real kube-apiserver, with simulated agents: test code that writes
//! each node's EVPNNodeState status the way an agent would.
//!
//! EVPNs are cluster-scoped and an operator plans all of them, so these tests take turns (one
//! lock) and each runs its own operator replicas; each builds its own world (nodes, VTEP with a
//! VNI range of its own, networks) under unique names.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::{Evpn, EvpnNetworkSet, EvpnNodeState};
use evpn_operator::controller::Config;
use evpn_operator::leader::Election;
use evpn_operator::metrics::Metrics;
use evpn_tests::simulated::Agents;
use evpn_tests::{apply, control_plane, eventually, unique_name};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One operator replica, aborted (as if killed) when dropped.
struct Replica {
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn replica(client: &Client, lease: &str, identity: &str) -> Replica {
    // EVPN_TEST_LOG=debug shows what the replicas do.
    if let Ok(filter) = std::env::var("EVPN_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let metrics = Arc::new(Metrics::default());
    let election = Election {
        namespace: "evpn-system".into(),
        name: lease.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(500),
    };
    let config =
        Config { debounce: Duration::from_millis(50), max_delay: Duration::from_millis(500), ..Config::default() };
    let task = tokio::spawn(evpn_operator::run_controllers(client.clone(), election, config, metrics.clone()));
    Replica { task, metrics }
}

/// Simulated agents for `nodes` (see `evpn_tests::simulated`); those in `failing` report every
/// network failed.
fn agents(client: &Client, nodes: BTreeSet<String>, failing: BTreeSet<String>) -> JoinHandle<()> {
    let agents = Agents { nodes, failing, ..Agents::default() };
    tokio::spawn(agents.run(client.clone()))
}

struct World {
    id: String,
    vtep: String,
    network: String,
    nodes: Vec<String>,
    range: (u32, u32),
}

/// Nodes labelled for this world, a Managed VTEP selecting them with a VNI range of its own, and
/// a Layer2 primary network.
async fn world(client: &Client, nodes: usize, range_size: u32) -> World {
    let id = unique_name("op");
    // Spread worlds over the 24-bit VNI space by process and counter so reruns do not collide.
    let base = 1_000_000
        + (std::process::id() % 1000) * 10_000
        + (id.rsplit('-').next().unwrap().parse::<u32>().unwrap() % 10) * 1000;
    let range = (base, base + range_size - 1);
    let mut names = Vec::new();
    for i in 0..nodes {
        let name = format!("{id}-n{i}");
        add_node(client, &id, &name).await;
        names.push(name);
    }
    let vtep = format!("{id}-vtep");
    apply(
        client,
        &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep}, "spec": {
        "cidrs": ["198.18.0.0/22"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-test/world": id}},
        "vniRanges": [{"start": range.0, "end": range.1}],
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}),
    )
    .await
    .unwrap();
    // Longer than a VRF name may be, so the VRF is named by network ID.
    let network = format!("{id}-long-network");
    apply(client, &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": network},
        "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}}))
    .await
    .unwrap();
    evpn_tests::annotate_network_id(client, &network, base).await.unwrap();
    World { id, vtep, network, nodes: names, range }
}

async fn add_node(client: &Client, world_id: &str, name: &str) {
    apply(client, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"evpn-test/world": world_id}}}))
        .await
        .unwrap();
}

fn evpn_json(name: &str, w: &World, vni: Option<u32>) -> Value {
    let mut spec =
        json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": w.network}, "vtep": w.vtep, "macVRF": {}});
    if let Some(v) = vni {
        spec["macVRF"]["vni"] = json!(v);
    }
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name}, "spec": spec})
}

async fn create(client: &Client, obj: Value) -> Evpn {
    let api: Api<Evpn> = Api::all(client.clone());
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap()
}

fn condition<'a>(e: &'a Evpn, type_: &str) -> Option<&'a evpn_crds::Condition> {
    e.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn is(e: &Evpn, type_: &str, status: &str) -> bool {
    condition(e, type_).is_some_and(|c| c.status == status && c.observed_generation == e.metadata.generation)
}

/// Waits until `check` holds for every named EVPN; returns them.
async fn wait_evpns(client: &Client, names: &[String], check: impl Fn(&Evpn) -> bool) -> Vec<Evpn> {
    let api: Api<Evpn> = Api::all(client.clone());
    let wanted: BTreeSet<&String> = names.iter().collect();
    let found = std::sync::Mutex::new(Vec::new());
    let result = eventually(|| async {
        let Ok(list) = api.list(&Default::default()).await else { return false };
        let mine: Vec<Evpn> = list.items.into_iter().filter(|e| wanted.contains(&e.name_any())).collect();
        let done = mine.len() == wanted.len() && mine.iter().all(&check);
        *found.lock().unwrap() = mine;
        done
    })
    .await;
    let found = found.into_inner().unwrap();
    if let Err(e) = result {
        let stuck: Vec<_> =
            found.iter().filter(|e| !check(e)).take(3).map(|e| (e.name_any(), e.status.clone())).collect();
        panic!(
            "{e}: {} of {} EVPNs never got there, e.g. {stuck:#?}",
            names.len() - found.iter().filter(|e| check(e)).count(),
            names.len()
        );
    }
    found
}

async fn admin() -> Client {
    control_plane().await.unwrap().admin().await.unwrap()
}

#[tokio::test]
async fn an_evpn_becomes_ready_with_allocated_values() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 100).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    let name = unique_name("blue");
    create(&client, evpn_json(&name, &w, None)).await;
    let evpn = wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "True")).await.remove(0);

    let status = evpn.status.unwrap();
    let mac = status.mac_vrf.unwrap();
    assert!((w.range.0..=w.range.1).contains(&mac.vni), "VNI {} outside {:?}", mac.vni, w.range);
    assert_eq!(mac.route_targets.import, [format!("65001:{}", mac.vni)]);
    assert!(mac.route_distinguisher_index.is_some());
    assert_eq!(status.ready_nodes.as_deref(), Some("2/2"));
    assert_eq!(status.vrf_name, Some(format!("mp{}-udn-vrf", w.range.0)));
    assert!(evpn.metadata.finalizers.unwrap_or_default().contains(&evpn_operator::plan::FINALIZER.to_owned()));

    let set = Api::<EvpnNetworkSet>::all(client.clone()).get(&w.vtep).await.unwrap();
    let owner = &set.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("VTEP", w.vtep.as_str()));
    let net = set.spec.networks.iter().find(|n| n.evpn == name).unwrap();
    assert_eq!(net.mac_vrf.as_ref().unwrap().vni, mac.vni);
    let states: Api<EvpnNodeState> = Api::all(client.clone());
    let mut ips = BTreeSet::new();
    for node in &w.nodes {
        let state = states.get(node).await.unwrap();
        let owner = &state.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", node.as_str()));
        let ip = state.spec.vteps.iter().find(|v| v.name == w.vtep).unwrap().ip.clone().unwrap();
        assert!(ip.starts_with("198.18."), "{ip}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 2, "each node gets its own VTEP IP");
}

#[tokio::test]
async fn nodes_joining_and_leaving_converge() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 100).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let mut all_nodes: BTreeSet<String> = w.nodes.iter().cloned().collect();
    let joiner = format!("{}-joiner", w.id);
    all_nodes.insert(joiner.clone());
    let _agents = agents(&client, all_nodes, BTreeSet::new());
    let name = unique_name("blue");
    create(&client, evpn_json(&name, &w, None)).await;
    wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "True")).await;

    add_node(&client, &w.id, &joiner).await;
    let ready =
        |e: &Evpn| is(e, "Ready", "True") && e.status.as_ref().and_then(|s| s.ready_nodes.as_deref()) == Some("3/3");
    wait_evpns(&client, std::slice::from_ref(&name), ready).await;

    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete(&w.nodes[0], &DeleteParams::default()).await.unwrap();
    let ready =
        |e: &Evpn| is(e, "Ready", "True") && e.status.as_ref().and_then(|s| s.ready_nodes.as_deref()) == Some("2/2");
    wait_evpns(&client, std::slice::from_ref(&name), ready).await;
}

#[tokio::test]
async fn a_failing_node_degrades_the_evpn_and_is_named() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 100).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), [w.nodes[1].clone()].into());
    let name = unique_name("blue");
    create(&client, evpn_json(&name, &w, None)).await;
    let evpn = wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Degraded", "True")).await.remove(0);
    let status = evpn.status.as_ref().unwrap();
    assert_eq!(status.nodes.map(|n| (n.desired, n.ready, n.failed)), Some((2, 1, 1)));
    assert_eq!(status.failed_nodes[0].node, w.nodes[1]);
    assert_eq!(status.failed_nodes[0].reason, "VxlanCreateFailed");
    assert_eq!(condition(&evpn, "Ready").unwrap().status, "False");
}

#[tokio::test]
async fn two_hundred_concurrent_evpns_get_distinct_vnis() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 1, 1000).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let names: Vec<String> = (0..200).map(|i| format!("{}-e{i}", w.id)).collect();
    futures::stream::iter(names.iter().map(|n| create(&client, evpn_json(n, &w, None))))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let evpns = wait_evpns(&client, &names, |e| {
        is(e, "Accepted", "True") && e.status.as_ref().is_some_and(|s| s.mac_vrf.is_some())
    })
    .await;
    let vnis: BTreeSet<u32> = evpns.iter().map(|e| e.status.as_ref().unwrap().mac_vrf.as_ref().unwrap().vni).collect();
    assert_eq!(vnis.len(), 200, "duplicate VNIs among 200 EVPNs");
    assert!(vnis.iter().all(|v| (w.range.0..=w.range.1).contains(v)));
}

#[tokio::test]
async fn the_same_explicit_vni_twice_ends_in_exactly_one_conflict() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 1, 100).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    // Both pass admission (no webhook here), as two creates racing past a real webhook would.
    let names = [format!("{}-a", w.id), format!("{}-b", w.id)];
    let vni = w.range.0 + 7;
    futures::join!(
        create(&client, evpn_json(&names[0], &w, Some(vni))),
        create(&client, evpn_json(&names[1], &w, Some(vni)))
    );
    let settled = |e: &Evpn| is(e, "Ready", "True") || condition(e, "Accepted").is_some_and(|c| c.reason == "Conflict");
    let evpns = wait_evpns(&client, &names, settled).await;
    let losers: Vec<&Evpn> = evpns.iter().filter(|e| is(e, "Accepted", "False")).collect();
    let winners: Vec<&Evpn> = evpns.iter().filter(|e| is(e, "Ready", "True")).collect();
    assert_eq!((losers.len(), winners.len()), (1, 1), "{evpns:#?}");
    let message = &condition(losers[0], "Accepted").unwrap().message;
    assert!(message.contains(&winners[0].name_any()), "the loser should name the winner: {message}");
    assert_eq!(winners[0].status.as_ref().unwrap().mac_vrf.as_ref().unwrap().vni, vni);
}

#[tokio::test]
async fn an_operator_killed_mid_burst_leaves_no_duplicate_and_no_leak() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 1000).await;
    let lease = unique_name("lease");
    let first = replica(&client, &lease, "first");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    let names: Vec<String> = (0..120).map(|i| format!("{}-e{i}", w.id)).collect();
    let creating = futures::stream::iter(names.iter().map(|n| create(&client, evpn_json(n, &w, None))))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let killing = async {
        // Kill it once it has started writing allocations, while creates are still arriving.
        eventually(|| async { first.metrics.writes_ok("EVPN/status") >= 10 }).await.unwrap();
        drop(first);
    };
    futures::join!(creating, killing);
    let _second = replica(&client, &lease, "second");
    let evpns = wait_evpns(&client, &names, |e| is(e, "Ready", "True")).await;

    let recorded: BTreeSet<u32> =
        evpns.iter().map(|e| e.status.as_ref().unwrap().mac_vrf.as_ref().unwrap().vni).collect();
    assert_eq!(recorded.len(), names.len(), "duplicate VNIs after the restart");
    // No leak: what the nodes are told is exactly what the EVPNs record.
    let set = Api::<EvpnNetworkSet>::all(client.clone()).get(&w.vtep).await.unwrap();
    let told: BTreeSet<u32> = set.spec.networks.iter().filter_map(|n| n.mac_vrf.as_ref().map(|m| m.vni)).collect();
    assert_eq!(told, recorded, "the nodes were told other VNIs than the EVPNs record");
}

#[tokio::test]
async fn a_standby_replica_takes_over_when_the_leader_dies() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 1, 100).await;
    let lease = unique_name("lease");
    let a = replica(&client, &lease, "a");
    let b = replica(&client, &lease, "b");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    eventually(|| async { a.metrics.leader.get() + b.metrics.leader.get() == 1 }).await.unwrap();
    let first = unique_name("first");
    create(&client, evpn_json(&first, &w, None)).await;
    wait_evpns(&client, std::slice::from_ref(&first), |e| is(e, "Ready", "True")).await;

    let (leader, standby) = if a.metrics.leader.get() == 1 { (a, b) } else { (b, a) };
    assert_eq!(standby.metrics.writes_ok("EVPN/status"), 0, "the standby must not write");
    drop(leader);
    let second = unique_name("second");
    create(&client, evpn_json(&second, &w, None)).await;
    wait_evpns(&client, std::slice::from_ref(&second), |e| is(e, "Ready", "True")).await;
    assert_eq!(standby.metrics.leader.get(), 1);
}

#[tokio::test]
async fn deletion_waits_for_the_nodes_then_releases_the_vni() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 100).await;
    let _operator = replica(&client, &unique_name("lease"), "a");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    let name = unique_name("doomed");
    let vni = w.range.0 + 3;
    create(&client, evpn_json(&name, &w, Some(vni))).await;
    wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "True")).await;

    let api: Api<Evpn> = Api::all(client.clone());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let states: Api<EvpnNodeState> = Api::all(client.clone());
    eventually(|| async { api.get_opt(&name).await.is_ok_and(|e| e.is_none()) })
        .await
        .expect("the finalizer was never removed");
    let set = Api::<EvpnNetworkSet>::all(client.clone()).get(&w.vtep).await.unwrap();
    assert!(set.spec.networks.iter().all(|n| n.evpn != name), "the VTEP's set still carries {name}");
    for node in &w.nodes {
        let status = states.get(node).await.unwrap().status.unwrap();
        let applied = status.network_sets.iter().find(|a| a.name == w.vtep).map(|a| (a.uid.as_str(), a.revision));
        assert_eq!(
            applied,
            Some((set.metadata.uid.as_deref().unwrap(), set.spec.revision)),
            "{node} had not acted on the set without {name} when it was released"
        );
        assert!(status.unapplied_networks.iter().all(|n| n.evpn != name), "{node} still reports {name}");
    }
    // The VNI is free again.
    let reuse = unique_name("reuse");
    create(&client, evpn_json(&reuse, &w, Some(vni))).await;
    wait_evpns(&client, std::slice::from_ref(&reuse), |e| is(e, "Ready", "True")).await;
}

/// frr-k8s mode: a VTEP that leaves BGP to frr-k8s gets typed FRRConfigurations layered on the
/// user's underlay; a node whose frr-k8s reports a failed reload is a failed node of the EVPN
/// until frr-k8s reports success, and a node whose underlay sessions frr-k8s reports down is not
/// ready; the EVPN's VNI leaves the configurations with the EVPN.
#[tokio::test]
async fn frr_k8s_mode_layers_typed_configurations_and_reads_frr_k8s_reports() {
    use evpn_crds::frrk8s::{BgpSessionState, FrrConfiguration, FrrNodeState};
    let _turn = TURN.lock().await;
    let client = admin().await;
    let w = world(&client, 2, 100).await;
    let namespace = "frr-k8s-system";
    apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await.unwrap();
    apply(&client, &json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
        "metadata": {"name": format!("{}-underlay", w.id), "namespace": namespace, "labels": {"evpn-test/underlay": w.id}},
        "spec": {"bgp": {"routers": [{"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}]}}}))
    .await
    .unwrap();
    // The world's VTEP handed over to frr-k8s.
    apply(
        &client,
        &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": w.vtep}, "spec": {
        "cidrs": ["198.18.0.0/22"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-test/world": w.id}},
        "vniRanges": [{"start": w.range.0, "end": w.range.1}],
        "frrConfigurationSelector": {"matchLabels": {"evpn-test/underlay": w.id}}}}),
    )
    .await
    .unwrap();
    let reports: Api<FrrNodeState> = Api::all(client.clone());
    let report = |node: String, result: &'static str| {
        let reports = reports.clone();
        async move {
            let _ = reports.create(&PostParams::default(), &FrrNodeState::new(&node, Default::default())).await;
            let body = json!({"status": {"lastConversionResult": "success", "lastReloadResult": result}});
            reports
                .patch_status(&node, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&body))
                .await
                .unwrap();
        }
    };
    report(w.nodes[0].clone(), "success").await;
    report(w.nodes[1].clone(), "error: vtysh -f failed: line 12: unknown command").await;

    let _operator = replica(&client, &unique_name("lease"), "a");
    let _agents = agents(&client, w.nodes.iter().cloned().collect(), BTreeSet::new());
    let name = unique_name("blue");
    create(&client, evpn_json(&name, &w, None)).await;
    let evpn = wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Degraded", "True")).await.remove(0);
    let status = evpn.status.clone().unwrap();
    assert_eq!(status.nodes.map(|n| (n.desired, n.ready, n.failed)), Some((2, 1, 1)));
    assert_eq!(
        (status.failed_nodes[0].node.as_str(), status.failed_nodes[0].reason.as_str()),
        (w.nodes[1].as_str(), "FrrK8sFailed")
    );
    assert!(status.failed_nodes[0].message.contains("unknown command"), "{}", status.failed_nodes[0].message);

    let vni = status.mac_vrf.unwrap().vni;
    let configs: Api<FrrConfiguration> = Api::namespaced(client.clone(), namespace);
    let sessions = configs.get(&format!("evpn-{}-l2-0", w.vtep)).await.unwrap();
    let router = &sessions.spec.bgp.routers[0];
    assert_eq!(router.asn, 65001, "the underlay's AS number, or frr-k8s cannot merge the routers");
    assert_eq!(router.neighbors[0].address_families, ["evpn"]);
    let evpn_part = router.evpn.clone().unwrap();
    assert_eq!(evpn_part.advertise_vnis.as_deref(), Some("All"));
    assert!(evpn_part.l2vnis.iter().any(|v| v.vni == vni), "VNI {vni} missing from {:?}", evpn_part.l2vnis);
    assert_eq!(sessions.metadata.owner_references.unwrap()[0].name, w.vtep);

    report(w.nodes[1].clone(), "success").await;
    wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "True")).await;

    // frr-k8s says node 0's only underlay session is down: the node no longer counts as ready.
    let sessions: Api<BgpSessionState> = Api::namespaced(client.clone(), namespace);
    let session = format!("{}-tor", w.nodes[0]);
    let _ = sessions.create(&PostParams::default(), &BgpSessionState::new(&session, Default::default())).await;
    let set_session = |state: &'static str| {
        let (sessions, session, node) = (sessions.clone(), session.clone(), w.nodes[0].clone());
        async move {
            let body = json!({"status": {"node": node, "peer": "198.18.255.1", "bgpStatus": state}});
            sessions
                .patch_status(&session, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&body))
                .await
                .unwrap();
        }
    };
    set_session("Active").await;
    let evpn = wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "False")).await.remove(0);
    assert_eq!(evpn.status.unwrap().nodes.map(|n| (n.ready, n.failed)), Some((1, 0)));
    set_session("Established").await;
    wait_evpns(&client, std::slice::from_ref(&name), |e| is(e, "Ready", "True")).await;

    Api::<Evpn>::all(client.clone()).delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(|| async {
        let l2vnis =
            configs.get(&format!("evpn-{}-l2-0", w.vtep)).await.ok().and_then(|c| c.spec.bgp.routers[0].evpn.clone());
        l2vnis.is_some_and(|e| e.l2vnis.iter().all(|v| v.vni != vni))
    })
    .await
    .expect("the deleted EVPN's VNI stayed in the FRRConfiguration");
}
