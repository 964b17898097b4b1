use evpn_crds::EvpnNodeStateSpec;
use serde_json::json;

use super::*;

fn state(node: &str, vteps: serde_json::Value) -> EvpnNodeState {
    let spec: EvpnNodeStateSpec = serde_json::from_value(json!({ "vteps": vteps })).unwrap();
    EvpnNodeState::new(node, spec)
}

fn vtep(name: &str, secrets: &[(&str, &str)]) -> serde_json::Value {
    let neighbors: Vec<_> = secrets
        .iter()
        .enumerate()
        .map(|(i, (namespace, secret))| {
            json!({"address": format!("192.0.2.{}", i + 1), "asn": 65000, "passwordSecret": {"namespace": namespace, "name": secret}})
        })
        .collect();
    json!({"name": name, "mode": "Managed", "cidrs": ["198.18.0.0/24"], "udpPort": 4789, "bgp": {"asn": 65001, "neighbors": neighbors}})
}

#[test]
fn each_vtep_grants_its_own_secrets_to_its_own_nodes() {
    let states = [
        state("n1", json!([vtep("red", &[("evpn-system", "tor-a"), ("fabric", "spine")])])),
        state(
            "n2",
            json!([
                vtep("red", &[("evpn-system", "tor-a"), ("fabric", "spine")]),
                vtep("blue", &[("evpn-system", "tor-b")])
            ]),
        ),
        state("n3", json!([vtep("green", &[])])),
    ];
    let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let found = wanted(&states, "evpn-system");
    assert_eq!(
        found.grants,
        BTreeMap::from([
            ("blue".to_owned(), Grant { secrets: set(&["tor-b"]), nodes: set(&["n2"]) }),
            ("red".to_owned(), Grant { secrets: set(&["tor-a"]), nodes: set(&["n1", "n2"]) }),
        ])
    );
    // Outside the operator's namespace: nobody's, and reported.
    assert_eq!(found.outside, BTreeMap::from([("fabric/spine".to_owned(), set(&["red"]))]));
    let grant = &found.grants["red"];
    let rule = &role("evpn-system", "red", grant).rules.unwrap()[0];
    assert_eq!(rule.resource_names.as_deref(), Some(&["tor-a".to_owned()][..]));
    assert_eq!(rule.verbs, ["list", "watch"]);
    let subjects: Vec<String> =
        binding("evpn-system", "red", grant).subjects.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(subjects, ["system:node:n1", "system:node:n2", "evpn-agent"]);
}
