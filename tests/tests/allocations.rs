//! Allocations survive what a backup tool and GitOps do to the objects, against a real
//! kube-apiserver with the real controllers.
//!
//! A restore without status (the default of common backup tools) gives back each object's
//! metadata and spec only; a re-apply from git sends the user's YAML, which holds none of what
//! the operator allocated. The operator records every allocation in the spec fields the user
//! left empty (as a Service's clusterIP), so after either the fabric sees the same VNIs, route
//! distinguishers, ESIs and VTEP IPs as before.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::{Evpn, EvpnNodeState, Vtep};
use evpn_operator::controller::Config;
use evpn_operator::metrics::Metrics;
use evpn_tests::{apply, control_plane, eventually, unique_name};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The operator is one cluster-wide planner: the tests of this binary take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator's controllers, stopped (as if the pod were killed) when dropped.
struct Operator(JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The controllers alone: leader election is not what these tests are about.
fn operator(client: &Client) -> Operator {
    let config =
        Config { debounce: Duration::from_millis(50), max_delay: Duration::from_millis(500), ..Config::default() };
    let metrics = Arc::new(Metrics::default());
    Operator(tokio::spawn(evpn_operator::controller::run(client.clone(), config, metrics)))
}

/// What the user keeps in git: two nodes (joined to the VTEP by [`join`]), a Managed VTEP, two
/// Layer2 networks, and two EVPNs (created by the test) that leave every allocation to the
/// operator, one with an Ethernet segment.
struct Git {
    world: String,
    nodes: Vec<String>,
    vtep: Value,
    evpns: Vec<Value>,
}

/// How the user's objects reach the cluster: server-side apply, or `kubectl apply` (client-side,
/// which records the YAML in the last-applied annotation and later sends only what changed).
#[derive(Clone, Copy, PartialEq)]
enum Applier {
    ServerSide,
    Kubectl,
}

async fn apply_as(client: &Client, applier: Applier, obj: &Value) {
    match applier {
        Applier::ServerSide => drop(apply(client, obj).await.unwrap()),
        Applier::Kubectl => {
            let kubeconfig = control_plane().await.unwrap().admin_kubeconfig();
            let file = std::env::temp_dir().join(format!("{}.json", unique_name("object")));
            std::fs::write(&file, obj.to_string()).unwrap();
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["apply", "-f"])
                .arg(&file)
                .output()
                .unwrap();
            std::fs::remove_file(&file).unwrap();
            assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

async fn cluster(client: &Client, applier: Applier) -> Git {
    let id = unique_name("al");
    let base = 2_000_000 + (std::process::id() % 1000) * 1000;
    let mut nodes = Vec::new();
    for i in 0..2 {
        let name = format!("{id}-n{i}");
        apply(client, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).await.unwrap();
        nodes.push(name);
    }
    let vtep_name = format!("{id}-vtep");
    let vtep = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep_name}, "spec": {
        "cidrs": ["198.18.0.0/24"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-test/world": id}},
        "vniRanges": [{"start": base, "end": base + 99}],
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}});
    apply_as(client, applier, &vtep).await;
    let mut evpns = Vec::new();
    for (i, color) in ["blue", "red"].into_iter().enumerate() {
        let network = format!("{id}-{color}");
        apply(client, &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": network},
            "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}}))
            .await
            .unwrap();
        evpn_tests::annotate_network_id(client, &network, base + i as u32).await.unwrap();
        let mut spec =
            json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": vtep_name, "macVRF": {}});
        if color == "blue" {
            spec["multiHoming"] = json!({"ethernetSegments": [{"name": "s1", "interface": "bond1",
                "nodeSelector": {"matchLabels": {"evpn-test/world": id}}}]});
        }
        let evpn = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": network}, "spec": spec});
        evpns.push(evpn);
    }
    Git { world: id, nodes, vtep, evpns }
}

/// Labels a node so that the VTEP selects it.
async fn join(client: &Client, git: &Git, node: &str) {
    let labelled = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"evpn-test/world": git.world}}});
    apply(client, &labelled).await.unwrap();
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Everything the fabric sees of the allocations: per EVPN its VNI, RD index and ESIs, per
/// node its VTEP IP. `None` until every one of them is there.
async fn allocations(client: &Client, git: &Git) -> Option<BTreeMap<String, String>> {
    let evpns: Api<Evpn> = Api::all(client.clone());
    let states: Api<EvpnNodeState> = Api::all(client.clone());
    let mut seen = BTreeMap::new();
    for obj in &git.evpns {
        let evpn = evpns.get(&name_of(obj)).await.ok()?;
        let status = evpn.status?;
        let mac = status.mac_vrf?;
        let esis: Vec<String> = status.ethernet_segments.iter().map(|s| format!("{}={}", s.name, s.esi)).collect();
        let wanted_segments = evpn.spec.multi_homing.map_or(0, |m| m.ethernet_segments.len());
        if mac.route_distinguisher_index.is_none() || esis.len() != wanted_segments {
            return None;
        }
        seen.insert(evpn.metadata.name?, format!("vni {} rd {:?} {esis:?}", mac.vni, mac.route_distinguisher_index));
    }
    for node in &git.nodes {
        let state = states.get(node).await.ok()?;
        seen.insert(node.clone(), state.spec.vteps.first()?.ip.clone()?);
    }
    Some(seen)
}

/// Waits until every allocation is there and the operator has recorded them in the specs.
async fn settled(client: &Client, git: &Git) -> BTreeMap<String, String> {
    let found = std::sync::Mutex::new(None);
    eventually(|| async {
        let recorded = recorded(client, git).await;
        let now = allocations(client, git).await;
        let done = now.is_some() && recorded;
        *found.lock().unwrap() = now;
        done
    })
    .await
    .expect("the allocations never settled");
    found.into_inner().unwrap().unwrap()
}

/// Whether each spec records the allocations: the VNIs, RD indexes, ESIs and node addresses.
async fn recorded(client: &Client, git: &Git) -> bool {
    let evpns: Api<Evpn> = Api::all(client.clone());
    for obj in &git.evpns {
        let Ok(evpn) = evpns.get(&name_of(obj)).await else { return false };
        let mac = evpn.spec.mac_vrf.unwrap_or_default();
        let mh = evpn.spec.multi_homing.unwrap_or_default();
        let derived = mh.ethernet_segments.iter().all(|s| mh.derived_esis.contains_key(&s.name));
        if mac.vni.is_none() || mac.route_distinguisher_index.is_none() || !derived {
            return false;
        }
    }
    let vteps: Api<Vtep> = Api::all(client.clone());
    vteps.get(&name_of(&git.vtep)).await.is_ok_and(|v| v.spec.node_addresses.len() == git.nodes.len())
}

/// What a restore without status does: every object (and what the operator derived from them)
/// deleted, then created again from its metadata name and spec alone, here in the other order.
async fn restore_without_status(client: &Client, git: &Git) {
    let evpns: Api<Evpn> = Api::all(client.clone());
    let vteps: Api<Vtep> = Api::all(client.clone());
    let states: Api<EvpnNodeState> = Api::all(client.clone());
    let mut backup: Vec<Evpn> = Vec::new();
    for obj in &git.evpns {
        backup.push(evpns.get(&name_of(obj)).await.unwrap());
    }
    let vtep_backup = vteps.get(&name_of(&git.vtep)).await.unwrap();
    for evpn in &backup {
        // With the operator gone nothing would release the finalizer.
        let clear = json!({"metadata": {"finalizers": null}});
        evpns.patch(&evpn.name_any(), &PatchParams::default(), &Patch::Merge(&clear)).await.unwrap();
        evpns.delete(&evpn.name_any(), &DeleteParams::default()).await.unwrap();
    }
    vteps.delete(&vtep_backup.name_any(), &DeleteParams::default()).await.unwrap();
    for node in &git.nodes {
        states.delete(node, &DeleteParams::default()).await.unwrap();
    }
    eventually(|| async {
        let gone = |e: &Evpn| git.evpns.iter().all(|o| name_of(o) != e.name_any());
        let left = evpns.list(&ListParams::default()).await.is_ok_and(|l| l.items.iter().all(gone));
        left && vteps.get_opt(&vtep_backup.name_any()).await.is_ok_and(|v| v.is_none())
    })
    .await
    .unwrap();
    let mut vtep = Vtep::new(&vtep_backup.name_any(), vtep_backup.spec.clone());
    vtep.status = None;
    vteps.create(&PostParams::default(), &vtep).await.unwrap();
    for evpn in backup.iter().rev() {
        evpns.create(&PostParams::default(), &Evpn::new(&evpn.name_any(), evpn.spec.clone())).await.unwrap();
    }
}

async fn admin() -> Client {
    control_plane().await.unwrap().admin().await.unwrap()
}

#[tokio::test]
async fn allocations_come_back_after_a_restore_without_status_and_an_operator_restart() {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let git = cluster(&client, Applier::ServerSide).await;
    let first = operator(&client);
    // Allocated one at a time, in the order opposite to the names': allocating afresh, which
    // takes nodes and same-second EVPNs by name, would hand everything out the other way round.
    let (evpns, states): (Api<Evpn>, Api<EvpnNodeState>) = (Api::all(client.clone()), Api::all(client.clone()));
    join(&client, &git, &git.nodes[1]).await;
    eventually(|| async { states.get(&git.nodes[1]).await.is_ok_and(|s| s.spec.vteps.iter().any(|v| v.ip.is_some())) })
        .await
        .unwrap();
    join(&client, &git, &git.nodes[0]).await;
    let (blue, red) = (&git.evpns[0], &git.evpns[1]);
    apply(&client, red).await.unwrap();
    eventually(|| async {
        evpns.get(&name_of(red)).await.is_ok_and(|e| e.status.is_some_and(|s| s.mac_vrf.is_some()))
    })
    .await
    .unwrap();
    apply(&client, blue).await.unwrap();
    let before = settled(&client, &git).await;
    drop(first);
    let ip = |node: &String| before[node].parse::<std::net::IpAddr>().unwrap();
    assert!(ip(&git.nodes[1]) < ip(&git.nodes[0]), "{before:?}");
    assert!(before[&name_of(red)] < before[&name_of(blue)], "{before:?}");

    restore_without_status(&client, &git).await;
    assert_eq!(allocations(&client, &git).await, None, "the restore left no status and no node state");
    let _second = operator(&client);
    let after = settled(&client, &git).await;
    assert_eq!(after, before, "the same allocations, from the specs");
}

#[tokio::test]
async fn a_server_side_re_apply_of_the_users_yaml_keeps_every_allocation() {
    re_apply_keeps_every_allocation(Applier::ServerSide).await;
}

#[tokio::test]
async fn a_kubectl_re_apply_of_the_users_yaml_keeps_every_allocation() {
    re_apply_keeps_every_allocation(Applier::Kubectl).await;
}

async fn re_apply_keeps_every_allocation(applier: Applier) {
    let _turn = TURN.lock().await;
    let client = admin().await;
    let git = cluster(&client, applier).await;
    for node in &git.nodes {
        join(&client, &git, node).await;
    }
    for evpn in &git.evpns {
        apply_as(&client, applier, evpn).await;
    }
    let _operator = operator(&client);
    let before = settled(&client, &git).await;
    let evpns: Api<Evpn> = Api::all(client.clone());
    let generations = |list: Vec<Evpn>| list.iter().map(|e| (e.name_any(), e.metadata.generation)).collect::<Vec<_>>();
    let mut specs_before = Vec::new();
    for obj in &git.evpns {
        specs_before.push(evpns.get(&name_of(obj)).await.unwrap());
    }

    // The YAML names none of the allocated fields: server-side apply leaves the fields another
    // manager (the operator) set, and kubectl's client-side apply sends nothing that did not
    // change since the last apply.
    for obj in git.evpns.iter().chain([&git.vtep]) {
        apply_as(&client, applier, obj).await;
    }
    let mut specs_after = Vec::new();
    for obj in &git.evpns {
        specs_after.push(evpns.get(&name_of(obj)).await.unwrap());
    }
    assert_eq!(generations(specs_after.clone()), generations(specs_before.clone()), "no spec changed");
    assert_eq!(
        specs_after.iter().map(|e| &e.spec).collect::<Vec<_>>(),
        specs_before.iter().map(|e| &e.spec).collect::<Vec<_>>()
    );
    assert!(recorded(&client, &git).await);
    assert_eq!(settled(&client, &git).await, before);
}
