//! A node's FRR shared between the agent and the node's admin, in the lab fabric with the real
//! control plane, operator and agents (see `tests/lab.rs`).
//!
//! The admin's configuration (a prefix list, a route map, a BFD peer, another BGP instance, and a
//! neighbor with its policy in the very instance the agent runs the underlay in) must survive byte
//! for byte in `show running-config` whatever the agent does; and a BGP password the VTEP names
//! must reach FRR through no process's argv, and appear in no status, Event or agent log line.
//! Needs root and network namespaces; without them the test says so and passes as skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot build its input should panic")]

use evpn_crds::{Evpn, EvpnNodeState};
use evpn_tests::admin_frr::{ADMIN_COMMANDS, ArgvWatch, FOREIGN, configure};
use evpn_tests::apply;
use evpn_tests::lab::{BgpDriver, Fabric, Lab, NODES, apply_vtep, mac_vni, ping, session_established, until};
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use serde_json::json;

/// The node whose FRR the admin configured.
const ADMIN_NODE: &str = "evl-n1";

const PASSWORD: &str = "lab-md5-Zq81v";

async fn foreign_intact(lab: &Lab, when: &str) {
    let running = lab.vtysh(ADMIN_NODE, "show running-config").await;
    for block in FOREIGN {
        assert!(running.contains(block), "{when}: the admin's {block:?} is gone from {ADMIN_NODE}:\n{running}");
    }
    eprintln!("ok   {when}: the admin's configuration is intact");
}

/// `value` without null fields: v1.20's server-side apply would keep them as nulls.
fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect()
        }
        serde_json::Value::Array(items) => items.into_iter().map(without_nulls).collect(),
        other => other,
    }
}

#[tokio::test]
async fn frr_shared_with_the_admin() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let lab = Lab::up("frr", NODES.len()).await;
    configure(ADMIN_NODE, ADMIN_COMMANDS);
    lab.ok(&["vtysh", ADMIN_NODE, "write memory"]).await;
    foreign_intact(&lab, "before the agent").await;

    let f = Fabric::up_in(lab, "frr", BgpDriver::Agent).await;
    foreign_intact(&f.lab, "the agent started, its underlay session up").await;

    // The sessions to the TOR get a password, from a Secret the VTEP names: an incremental
    // change on both nodes, watched for the password in any process's argv.
    let watcher = ArgvWatch::start(&[PASSWORD]);
    // The operator's namespace: the only one whose password Secrets it lets agents read.
    let namespace = "evpn-system";
    apply(&f.client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await.unwrap();
    apply(
        &f.client,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sharing-tor", "namespace": namespace},
            "stringData": {"password": PASSWORD}}),
    )
    .await
    .unwrap();
    configure("evl-tor", &format!("router bgp 65000\nneighbor nodes password {PASSWORD}\nexit\n"));
    let vteps: Api<evpn_crds::Vtep> = Api::all(f.client.clone());
    let mut spec = without_nulls(serde_json::to_value(vteps.get(&f.vtep).await.unwrap().spec).unwrap());
    spec["bgp"]["neighbors"][0]["passwordSecret"] = json!({"namespace": namespace, "name": "sharing-tor"});
    apply_vtep(&f.client, &f.vtep, &spec).await;
    for (lab_node, _) in NODES {
        until(&format!("{lab_node}: the password in FRR"), || async {
            f.lab.vtysh(lab_node, "show running-config").await.contains(&format!(" password {PASSWORD}\n"))
        })
        .await;
    }
    for (_, node) in NODES {
        session_established(&f.client, node).await;
    }
    foreign_intact(&f.lab, "the underlay got a password").await;

    // A network added and removed.
    let blue = f.name("shblue");
    f.network(&blue, "Layer2", json!(["10.40.0.0/24"])).await;
    let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
    let bridge = format!("evb{}", mac_vni(&evpn));
    f.lab.ok(&["pod", "evl-n1", "evl-shblue1", &bridge, "10.40.0.11/24"]).await;
    f.lab.ok(&["pod", "evl-n2", "evl-shblue2", &bridge, "10.40.0.12/24"]).await;
    until("a pod on node 1 pings one on node 2 across the fabric", || ping("evl-shblue1", "10.40.0.12")).await;
    foreign_intact(&f.lab, "a network added").await;
    f.delete_evpn(&blue).await;
    let vni_line = format!("  vni {}\n", mac_vni(&evpn));
    until("the network's VNI gone from node 1's FRR", || async {
        !f.lab.vtysh(ADMIN_NODE, "show running-config").await.contains(&vni_line)
    })
    .await;
    foreign_intact(&f.lab, "the network removed").await;

    // FRR restarts from the admin's saved file; the agent puts its own lines back.
    f.lab.ok(&["restart-frr", ADMIN_NODE]).await;
    until("node 1's agent re-applied its underlay after the FRR restart", || async {
        f.lab.vtysh(ADMIN_NODE, "show running-config").await.contains(&format!(" password {PASSWORD}\n"))
    })
    .await;
    session_established(&f.client, NODES[0].1).await;
    foreign_intact(&f.lab, "FRR restarted").await;

    // Nothing the cluster or the agents write holds the password.
    let (in_argv, rounds) = watcher.finish();
    assert!(in_argv.is_empty(), "the password in a process's argv: {in_argv:?}");
    eprintln!("ok   the password in no argv ({rounds} reads of every process's argv)");
    let states: Api<EvpnNodeState> = Api::all(f.client.clone());
    let evpns: Api<Evpn> = Api::all(f.client.clone());
    let events: Api<Event> = Api::all(f.client.clone());
    let mut written = Vec::new();
    for s in states.list(&Default::default()).await.unwrap() {
        written.push(serde_json::to_string(&s.status).unwrap());
    }
    for e in evpns.list(&Default::default()).await.unwrap() {
        written.push(serde_json::to_string(&e.status).unwrap());
    }
    for e in events.list(&Default::default()).await.unwrap() {
        written.push(serde_json::to_string(&e).unwrap());
    }
    for (_, node) in NODES {
        let log = std::env::temp_dir().join(format!("evpn-lab-agent-{node}.log"));
        written.push(std::fs::read_to_string(log).unwrap_or_default());
    }
    assert!(!written.iter().any(|w| w.contains(PASSWORD)), "the password in a status, an Event or an agent log");

    // The agent goes away: FRR keeps running as it is, the admin's configuration with it.
    let mut f = f;
    if let Some(agent) = f.agents[0].take() {
        agent.kill().await;
    }
    foreign_intact(&f.lab, "the agent removed").await;
    f.remove_leftovers().await;
}
