//! End to end: BGP sessions with TCP MD5 passwords from Secrets, in the lab fabric. The agents
//! run with their nodes' own credentials, so they may read a password Secret only through the
//! Role the operator grants their VTEP's nodes; they read it from a watch, so a changed Secret
//! reaches FRR without anything else changing.
//!
//! Needs root and network namespaces; without them the test says so and passes as skipped.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use evpn_tests::apply;
use evpn_tests::lab::{Fabric, NODES, session_established, until};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const NAMESPACE: &str = "evpn-system";
const TOR_ADDRESS: &str = "198.18.255.1";

async fn put_password(f: &Fabric, secret: &str, password: &str) {
    let object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": NAMESPACE},
        "stringData": {"password": password}});
    apply(&f.client, &object).await.unwrap();
}

/// Sets the TOR's password towards every node (its listen range's peer group).
async fn tor_password(f: &Fabric, password: &str) {
    f.lab.vtysh("evl-tor", &format!("configure terminal\nrouter bgp 65000\nneighbor nodes password {password}")).await;
}

/// How many of the TOR's BGP sessions are Established.
async fn tor_established(f: &Fabric) -> usize {
    f.lab.vtysh("evl-tor", "show bgp l2vpn evpn summary json").await.matches("\"Established\"").count()
}

/// Whether every node's FRR runs its session to the TOR with `password`.
async fn nodes_configured_with(f: &Fabric, password: &str) -> bool {
    for (lab_node, _) in NODES {
        let running = f.lab.vtysh(lab_node, "show running-config bgpd").await;
        if !running.contains(&format!("neighbor {TOR_ADDRESS} password {password}")) {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn sessions_take_their_password_from_a_secret_and_follow_its_changes() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let f = Fabric::up("frr").await;
    let secret = f.name("tor-password");
    put_password(&f, &secret, "first-secret").await;

    // The VTEP names the Secret: the agents may read it only once the operator has granted it.
    let vteps: Api<DynamicObject> = Api::all_with(
        f.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("evpn.k8s.ovn.org", "v1alpha1", "VTEP")),
    );
    let neighbors = json!({"spec": {"bgp": {"asn": 65001, "neighbors": [{"address": TOR_ADDRESS, "asn": 65000,
        "passwordSecret": {"namespace": NAMESPACE, "name": secret}}]}}});
    vteps.patch(&f.vtep, &PatchParams::default(), &Patch::Merge(&neighbors)).await.unwrap();
    until("both nodes' FRR run the session with the Secret's password", || nodes_configured_with(&f, "first-secret"))
        .await;
    // MD5 is enforced: until the TOR has the password too, no session comes up.
    until("the TOR's sessions down while only the nodes have a password", || async { tor_established(&f).await == 0 })
        .await;
    tor_password(&f, "first-secret").await;
    until("the TOR's sessions with both nodes Established, with MD5", || async {
        tor_established(&f).await >= NODES.len()
    })
    .await;
    for (_, node) in NODES {
        session_established(&f.client, node).await;
    }

    // A changed password: only the Secret changes, and the agents' watch carries it to FRR. The
    // TOR keeps the old one, so the sessions go down; the Secret changed back brings them up.
    // (The TOR is not re-keyed: with FRR 8.4.4, a changed password on its listen range's peer
    // group, even with the range configured again, brought no session back within a minute.)
    put_password(&f, &secret, "second-secret").await;
    until("both nodes' FRR run the session with the changed password", || nodes_configured_with(&f, "second-secret"))
        .await;
    until("the TOR's sessions down while it has the old password", || async { tor_established(&f).await == 0 }).await;
    put_password(&f, &secret, "first-secret").await;
    until("both nodes' FRR run the session with the first password again", || {
        nodes_configured_with(&f, "first-secret")
    })
    .await;
    until("the TOR's sessions with both nodes Established again", || async {
        tor_established(&f).await >= NODES.len()
    })
    .await;
}
