//! A name that would become an FRR command is refused at `kubectl` time.
//!
//! The attack tried on the demo, written with `kubectl patch`: a BFD profile named `x`, a
//! newline, `router bgp 65099`, a newline and ` neighbor 1.2.3.4 remote-as 1`. The CRD schema's
//! patterns refuse it on every apiserver that runs them; the webhook's rules refuse the same
//! object for CRDs installed without them (an older bundle); the agent's plan refuses what got
//! past both (agent/tests/hostile_strings.rs).

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use evpn_crds::Vtep;
use evpn_tests::{apply, control_plane, unique_name};
use evpn_webhook::index::Index;
use evpn_webhook::rules::{Operation, Policy, Request, Verdict, validate_vtep};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::api::Api;
use serde_json::json;

const ATTACK: &str = "x\nrouter bgp 65099\n neighbor 1.2.3.4 remote-as 1";

fn vtep(name: &str) -> serde_json::Value {
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": name}, "spec": {
        "cidrs": ["198.18.0.0/24"], "nodeSelector": {"matchLabels": {"evpn-test/world": name}},
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}})
}

/// The demo's patch: the profile, and the neighbor pointing at it.
fn attack_patch() -> serde_json::Value {
    json!({"spec": {"bgp": {"bfdProfiles": [{"name": ATTACK}],
        "neighbors": [{"address": "198.18.255.1", "asn": 65000, "bfdProfile": ATTACK}]}}})
}

#[tokio::test]
async fn kubectl_patch_with_a_newline_in_a_bfd_profile_name_is_refused() {
    let cp = control_plane().await.unwrap();
    let client = cp.admin().await.unwrap();
    let name = unique_name("demo");
    apply(&client, &vtep(&name)).await.unwrap();

    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(["patch", "vtep", &name, "--type", "merge", "-p", &attack_patch().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted: {}", String::from_utf8_lossy(&out.stdout));
    // v1.20 names the list field without the index.
    assert!(stderr.contains("spec.bgp.bfdProfiles") && stderr.contains("should match"), "{stderr}");
    assert!(stderr.contains("spec.bgp.neighbors") && stderr.contains("bfdProfile"), "{stderr}");
    let stored = Api::<Vtep>::all(client).get(&name).await.unwrap();
    assert!(stored.spec.bgp.unwrap().bfd_profiles.is_empty(), "nothing of the patch was stored");
}

#[test]
fn the_webhook_refuses_it_where_the_crds_have_no_patterns() {
    let old: Vtep = serde_json::from_value(vtep("demo")).unwrap();
    let mut patched = vtep("demo");
    for field in ["bfdProfiles", "neighbors"] {
        patched["spec"]["bgp"][field] = attack_patch()["spec"]["bgp"][field].clone();
    }
    let new: Vtep = serde_json::from_value(patched).unwrap();
    let admin =
        UserInfo { username: Some("alice".into()), groups: Some(vec!["system:masters".into()]), ..Default::default() };
    let req = Request {
        operation: Operation::Update,
        sub_resource: None,
        user: &admin,
        object: Some(&new),
        old_object: Some(&old),
    };
    let Verdict::Deny(message) = validate_vtep(&req, &Index::default(), &Policy::default()) else {
        panic!("the webhook admitted the attack");
    };
    assert!(message.contains("spec.bgp.bfdProfiles[0].name: \"x\\nrouter bgp 65099"), "{message}");
    assert!(message.contains("is not a usable name"), "{message}");
    assert!(!message.contains('\n'), "the value is escaped: {message}");
}
