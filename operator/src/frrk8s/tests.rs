//! The FRRConfigurations of typical networks, against golden files in `golden/`.
//!
//! `EVPN_UPDATE_GOLDEN=1 cargo test -p evpn-operator --lib frrk8s` rewrites them; review the diff.

use std::path::PathBuf;

use evpn_crds::frrk8s::FrrConfiguration;
use serde_json::{Value, json};

use super::*;

fn vtep(name: &str) -> Vtep {
    serde_json::from_value(json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP",
        "metadata": {"name": name, "uid": format!("uid-{name}")},
        "spec": {"cidrs": ["198.19.0.0/24"], "mode": "Unmanaged", "nodeSelector": {"matchLabels": {"fabric": name}},
                 "frrConfigurationSelector": {"matchLabels": {"evpn.k8s.ovn.org/underlay": name}}}}))
    .expect("a VTEP")
}

fn user_config(name: &str, labels: Value, routers: Value) -> FrrConfiguration {
    serde_json::from_value(json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
        "metadata": {"name": name, "namespace": "frr-k8s-system", "labels": labels},
        "spec": {"bgp": {"routers": routers}}}))
    .expect("an FRRConfiguration")
}

fn underlay_of(vtep_name: &str) -> FrrConfiguration {
    user_config(
        &format!("underlay-{vtep_name}"),
        json!({"evpn.k8s.ovn.org/underlay": vtep_name}),
        json!([{"asn": 65001, "neighbors": [
            {"address": "198.19.255.1", "asn": 65000, "passwordSecret": {"name": "tor", "namespace": "frr-k8s-system"},
             "bfdProfile": "fast", "toAdvertise": {"allowed": {"mode": "all"}}},
            {"interface": "eth1", "dynamicASN": "external"}]}]),
    )
}

fn network(evpn: &str, mac: Option<u32>, ip: Option<u32>, subnets: &[&str]) -> SetNetwork {
    let vrf = |vni: u32| json!({"vni": vni, "routeTargets": {}, "routeDistinguisherIndex": 1});
    let mut entry = json!({"evpn": evpn, "generation": 1, "revision": 1, "vrf": evpn, "subnets": subnets,
        "network": {"kind": "ClusterUserDefinedNetwork", "name": evpn}});
    if let Some(v) = mac {
        entry["macVRF"] = vrf(v);
    }
    if let Some(v) = ip {
        entry["ipVRF"] = vrf(v);
    }
    serde_json::from_value(entry).expect("a set entry")
}

fn render(vtep_name: &str, networks: Vec<SetNetwork>) -> BTreeMap<String, FrrConfiguration> {
    let vtep = vtep(vtep_name);
    let underlay_config = underlay_of(vtep_name);
    let underlay = underlay(&vtep, &[&underlay_config]).expect("an underlay");
    let n1 = BTreeMap::from([("cluster_udn_red".to_owned(), vec!["10.20.1.0/24".to_owned()])]);
    let n2 = BTreeMap::from([("cluster_udn_red".to_owned(), vec!["10.20.2.0/24".to_owned()])]);
    let nodes = [NodeSubnets { name: "worker-1", subnets: &n1 }, NodeSubnets { name: "worker-2", subnets: &n2 }];
    configurations("frr-k8s-system", &vtep, &underlay, &EvpnNetworkSetSpec { revision: 1, networks }, &nodes)
}

fn check(case: &str, configs: &BTreeMap<String, FrrConfiguration>) {
    let rendered: String =
        configs.values().map(|c| serde_saphyr::to_string(c).expect("YAML")).collect::<Vec<_>>().join("---\n");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/frrk8s/golden/{case}.yaml"));
    if std::env::var_os("EVPN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).expect("writing the golden file");
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(rendered, golden, "{case}: rerun with EVPN_UPDATE_GOLDEN=1 and review the diff");
}

#[test]
fn layer2() {
    let mut blue = network("blue", Some(10100), None, &["10.10.0.0/24"]);
    blue.mac_vrf.as_mut().expect("a MAC-VRF").route_targets.import = vec!["65001:10100".into(), "65000:1".into()];
    check("layer2", &render("fabric", vec![blue]));
}

#[test]
fn layer3_announces_each_nodes_own_subnet() {
    let configs = render("fabric", vec![network("red", None, Some(20100), &["10.20.0.0/16"])]);
    assert!(configs.contains_key("evpn-fabric-node-worker-1") && configs.contains_key("evpn-fabric-node-worker-2"));
    check("layer3", &configs);
}

#[test]
fn layer2_with_irb() {
    check("layer2-irb", &render("fabric", vec![network("irb", Some(10300), Some(20300), &["10.30.0.0/24"])]));
}

#[test]
fn two_vteps_and_more_l2vnis_than_one_object_takes() {
    let many: Vec<SetNetwork> =
        (0..12).map(|i| network(&format!("net{i:02}"), Some(11000 + i), None, &["10.40.0.0/24"])).collect();
    let mut configs = render("east", many);
    assert_eq!(configs["evpn-east-l2-0"].spec.bgp.routers[0].evpn.as_ref().map(|e| e.l2vnis.len()), Some(10));
    assert_eq!(configs["evpn-east-l2-1"].spec.bgp.routers[0].evpn.as_ref().map(|e| e.l2vnis.len()), Some(2));
    configs.extend(render("west", vec![network("blue", Some(10100), None, &[])]));
    check("multi-vtep", &configs);
}

#[test]
fn the_underlay_must_be_there_and_agree() {
    let vtep = vtep("fabric");
    let unlabelled =
        user_config("other", json!({}), json!([{"asn": 65001, "neighbors": [{"address": "1.1.1.1", "asn": 1}]}]));
    let error = underlay(&vtep, &[&unlabelled]).expect_err("nothing selected");
    assert!(error.contains("no FRRConfiguration matched"), "{error}");

    let a = underlay_of("fabric");
    let mut b = underlay_of("fabric");
    b.spec.bgp.routers[0].asn = 65009;
    let error = underlay(&vtep, &[&a, &b]).expect_err("two AS numbers");
    assert!(error.contains("65001") && error.contains("65009"), "{error}");

    // The operator's own objects carry the selector's labels too, but are never the underlay.
    let ours = render("fabric", vec![]).remove("evpn-fabric-l2-0").expect("the session object");
    let mut labelled = ours.clone();
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("evpn.k8s.ovn.org/underlay".into(), "fabric".into());
    assert!(underlay(&vtep, &[&labelled]).is_err());
}

#[test]
fn sessions_are_copied_so_frr_k8s_can_merge_them() {
    let configs = render("fabric", vec![]);
    let router = &configs["evpn-fabric-l2-0"].spec.bgp.routers[0];
    let tor = &router.neighbors[0];
    assert_eq!(tor.address.as_deref(), Some("198.19.255.1"));
    assert_eq!(tor.asn, Some(65000), "frr-k8s refuses two AS numbers for one neighbor");
    assert!(tor.password_secret.is_some(), "frr-k8s refuses a neighbor with and without a password");
    assert_eq!(tor.bfd_profile, None, "a BFD profile stays the user's to set");
    assert_eq!(tor.address_families, ["evpn"]);
    assert_eq!(router.neighbors[1].interface.as_deref(), Some("eth1"));
}
