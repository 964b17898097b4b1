//! One scenario per test: each rule allowed and denied, on hand-built indexes.

use evpn_crds::common::NetworkKind;
use serde_json::{Value, json};

use super::*;
use crate::index::{NetworkFacts, NodeFacts};

fn admin() -> UserInfo {
    UserInfo { username: Some("alice".into()), groups: Some(vec!["system:masters".into()]), ..Default::default() }
}

fn tenant() -> UserInfo {
    UserInfo { username: Some("bob".into()), groups: Some(vec!["system:authenticated".into()]), ..Default::default() }
}

fn user(name: &str) -> UserInfo {
    UserInfo { username: Some(name.into()), ..Default::default() }
}

fn evpn(name: &str, spec: Value) -> Evpn {
    serde_json::from_value(
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("valid EVPN")
}

fn l2(network: &str, vni: Option<u32>) -> Value {
    let mut spec =
        json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": "fabric", "macVRF": {}});
    if let Some(vni) = vni {
        spec["macVRF"]["vni"] = json!(vni);
    }
    spec
}

fn l3(network: &str, vni: u32) -> Value {
    json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": "fabric", "ipVRF": {"vni": vni}})
}

fn vtep(name: &str, spec: Value) -> Vtep {
    serde_json::from_value(
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("valid VTEP")
}

fn fabric_spec() -> Value {
    json!({
        "cidrs": ["198.18.0.0/24"],
        "nodeSelector": {"matchLabels": {"evpn": "yes"}},
        "vniRanges": [{"start": 10000, "end": 19999}],
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.1.1", "asn": 65000}]}
    })
}

fn network(topology: &str, role: Option<&str>, transport: Option<&str>) -> NetworkFacts {
    NetworkFacts {
        topology: topology.into(),
        role: role.map(Into::into),
        transport: transport.map(Into::into),
        subnets: Vec::new(),
        mtu: None,
    }
}

fn cudn(name: &str) -> (NetworkKind, Option<String>, String) {
    (NetworkKind::ClusterUserDefinedNetwork, None, name.into())
}

fn node(labels: &[(&str, &str)], mode: Option<GatewayMode>) -> NodeFacts {
    NodeFacts { labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), gateway_mode: mode }
}

/// A cluster with VTEP fabric, networks of every shape, one local-mode node and EVPN "red" on VNI 10100.
fn index() -> Index {
    let mut ix = Index::default();
    ix.networks_api_present = true;
    ix.apply_vtep(&vtep("fabric", fabric_spec()));
    ix.set_network(cudn("blue"), Some(network("Layer2", Some("Primary"), None)));
    ix.set_network(cudn("red"), Some(network("Layer3", Some("Primary"), None)));
    ix.set_network(cudn("side"), Some(network("Layer2", Some("Secondary"), None)));
    ix.set_network(cudn("phys"), Some(network("Localnet", None, None)));
    ix.set_network(cudn("upstream"), Some(network("Layer2", Some("Primary"), Some("EVPN"))));
    ix.set_node("n1".into(), Some(node(&[("evpn", "yes")], Some(GatewayMode::Local))));
    ix.apply_evpn(&evpn("red", l3("red", 10100)));
    ix
}

fn create<'a, K>(user: &'a UserInfo, obj: &'a K) -> Request<'a, K> {
    Request { operation: Operation::Create, sub_resource: None, user, object: Some(obj), old_object: None }
}

fn update<'a, K>(user: &'a UserInfo, new: &'a K, old: &'a K) -> Request<'a, K> {
    Request { operation: Operation::Update, sub_resource: None, user, object: Some(new), old_object: Some(old) }
}

fn delete<'a, K>(user: &'a UserInfo, old: &'a K) -> Request<'a, K> {
    Request { operation: Operation::Delete, sub_resource: None, user, object: None, old_object: Some(old) }
}

#[track_caller]
fn assert_denied(verdict: Verdict, needles: &[&str]) {
    match verdict {
        Verdict::Deny(msg) => {
            for n in needles {
                assert!(msg.contains(n), "denial should mention {n:?}: {msg}");
            }
        }
        Verdict::Allow(w) => panic!("allowed (warnings {w:?}), expected a denial mentioning {needles:?}"),
    }
}

#[track_caller]
fn assert_allowed(verdict: Verdict) {
    assert!(matches!(verdict, Verdict::Allow(_)), "{verdict:?}");
}

fn check(req: Request<'_, Evpn>, ix: &Index) -> Verdict {
    validate_evpn(&req, ix, &Policy::default())
}

#[test]
fn admin_creates_a_layer2_evpn() {
    let blue = evpn("blue", l2("blue", Some(10200)));
    assert_eq!(check(create(&admin(), &blue), &index()), Verdict::Allow(vec![]));
}

#[test]
fn writes_that_change_the_fabric_need_manage_on_the_vtep() {
    use crate::access::{Need, evpn_needs};
    let blue = evpn("blue", l2("blue", None));
    let need = |action| Some(Need { action, vtep: Some("fabric".into()) });
    assert_eq!(evpn_needs(&create(&tenant(), &blue)), need("creating an EVPN"));
    let mut changed = blue.clone();
    changed.spec.mac_vrf.as_mut().unwrap().vni = Some(10300);
    assert_eq!(evpn_needs(&update(&tenant(), &changed, &blue)), need("changing an EVPN"));
    assert_eq!(evpn_needs(&delete(&tenant(), &blue)), need("deleting an EVPN"));
    let mut with_finalizer = blue.clone();
    with_finalizer.metadata.finalizers = Some(vec!["evpn.k8s.ovn.org/release-vnis".into()]);
    assert_eq!(evpn_needs(&update(&user(DEFAULT_OPERATOR_USER), &with_finalizer, &blue)), None);
    assert_allowed(check(delete(&admin(), &blue), &index()));
}

#[test]
fn metadata_only_updates_are_left_to_rbac() {
    let blue = evpn("blue", l2("blue", None));
    let mut with_finalizer = blue.clone();
    with_finalizer.metadata.finalizers = Some(vec!["evpn.k8s.ovn.org/release-vnis".into()]);
    assert_allowed(check(update(&user(DEFAULT_OPERATOR_USER), &with_finalizer, &blue), &index()));
}

#[test]
fn duplicate_vni_names_the_holder() {
    let blue = evpn("blue", l2("blue", Some(10100)));
    assert_denied(
        check(create(&admin(), &blue), &index()),
        &["spec.macVRF.vni", "VNI 10100", "\"red\"", "spec.ipVRF", "leave vni empty"],
    );
}

#[test]
fn an_allocated_vni_counts_as_taken() {
    let mut ix = index();
    let mut green = evpn("green", l2("blue", None));
    green.status = Some(serde_json::from_value(json!({"macVRF": {"vni": 10500, "routeTargets": {}}})).unwrap());
    ix.apply_evpn(&green);
    let blue = evpn("blue", l2("blue", Some(10500)));
    assert_denied(check(create(&admin(), &blue), &ix), &["\"green\""]);
}

#[test]
fn same_vni_on_both_sides_is_denied() {
    let mut irb = l2("blue", Some(10200));
    irb["ipVRF"] = json!({"vni": 10200});
    assert_denied(check(create(&admin(), &evpn("blue", irb)), &index()), &["spec.ipVRF.vni", "share one VNI space"]);
}

#[test]
fn vni_outside_the_vtep_ranges() {
    let blue = evpn("blue", l2("blue", Some(500)));
    assert_denied(check(create(&admin(), &blue), &index()), &["VNI 500", "outside VTEP \"fabric\"", "10000-19999"]);
}

#[test]
fn vni_range_is_checked_without_cel() {
    let blue = evpn("blue", l2("blue", Some(16_777_216)));
    assert_denied(check(create(&admin(), &blue), &index()), &["out of range 1..=16777215"]);
}

#[test]
fn malformed_route_target() {
    let mut spec = l2("blue", None);
    spec["macVRF"]["routeTargets"] = json!({"export": ["70000:70000"]});
    assert_denied(
        check(create(&admin(), &evpn("blue", spec)), &index()),
        &["spec.macVRF.routeTargets.export[0]", "65535"],
    );
}

#[test]
fn vni_cannot_change_once_set() {
    let old = evpn("blue", l2("blue", Some(10200)));
    let mut ix = index();
    ix.apply_evpn(&old);
    let new = evpn("blue", l2("blue", Some(10201)));
    assert_denied(check(update(&admin(), &new, &old), &ix), &["spec.macVRF.vni", "immutable", "was 10200"]);
}

#[test]
fn vni_set_after_allocation_must_match_it() {
    let mut old = evpn("blue", l2("blue", None));
    old.status = Some(serde_json::from_value(json!({"macVRF": {"vni": 10400, "routeTargets": {}}})).unwrap());
    let mut ix = index();
    ix.apply_evpn(&old);
    assert_allowed(check(update(&admin(), &evpn("blue", l2("blue", Some(10400))), &old), &ix));
    assert_denied(check(update(&admin(), &evpn("blue", l2("blue", Some(10401))), &old), &ix), &["allocated VNI 10400"]);
}

#[test]
fn network_must_exist() {
    let blue = evpn("blue", l2("nowhere", None));
    assert_denied(check(create(&admin(), &blue), &index()), &["spec.network", "nowhere", "does not exist"]);
}

#[test]
fn missing_network_api_is_explained() {
    let mut ix = index();
    ix.networks_api_present = false;
    assert_denied(check(create(&admin(), &evpn("blue", l2("blue", None))), &ix), &["k8s.ovn.org", "not installed"]);
}

#[test]
fn network_must_be_primary() {
    assert_denied(
        check(create(&admin(), &evpn("side", l2("side", None))), &index()),
        &["role \"Secondary\"", "primary"],
    );
}

#[test]
fn layer3_network_forbids_mac_vrf() {
    let mut spec = l3("red", 10600);
    spec["macVRF"] = json!({});
    assert_denied(check(create(&admin(), &evpn("red2", spec)), &index()), &["spec.macVRF", "Layer3", "remove macVRF"]);
}

#[test]
fn layer2_network_needs_mac_vrf() {
    let spec = json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "ipVRF": {"vni": 10700}});
    assert_denied(check(create(&admin(), &evpn("blue", spec)), &index()), &["spec.macVRF", "Layer2", "needs a macVRF"]);
}

#[test]
fn localnet_is_not_supported() {
    assert_denied(check(create(&admin(), &evpn("phys", l2("phys", None))), &index()), &["Localnet"]);
}

#[test]
fn upstream_evpn_transport_is_refused() {
    assert_denied(check(create(&admin(), &evpn("up", l2("upstream", None))), &index()), &["transport: EVPN"]);
}

#[test]
fn vtep_must_exist() {
    let mut spec = l2("blue", None);
    spec["vtep"] = json!("nope");
    assert_denied(check(create(&admin(), &evpn("blue", spec)), &index()), &["spec.vtep", "\"nope\" does not exist"]);
}

#[test]
fn shared_gateway_node_is_refused() {
    let mut ix = index();
    ix.set_node("n2".into(), Some(node(&[("evpn", "yes")], Some(GatewayMode::Shared))));
    assert_denied(
        check(create(&admin(), &evpn("blue", l2("blue", None))), &ix),
        &["\"n2\"", "shared gateway mode", "local"],
    );
}

#[test]
fn shared_gateway_node_outside_the_vtep_does_not_matter() {
    let mut ix = index();
    ix.set_node("elsewhere".into(), Some(node(&[], Some(GatewayMode::Shared))));
    assert_allowed(check(create(&admin(), &evpn("blue", l2("blue", None))), &ix));
}

#[test]
fn shared_gateway_configmap_is_refused_when_nodes_do_not_say() {
    let mut ix = index();
    ix.set_node("n1".into(), Some(node(&[("evpn", "yes")], None)));
    ix.ovnkube_config.gateway_mode = Some(GatewayMode::Shared);
    assert_denied(check(create(&admin(), &evpn("blue", l2("blue", None))), &ix), &["ConfigMap ovnkube-config"]);
}

#[test]
fn unknown_gateway_mode_warns_or_denies_by_policy() {
    let mut ix = index();
    ix.set_node("n1".into(), Some(node(&[("evpn", "yes")], None)));
    let blue = evpn("blue", l2("blue", None));
    match check(create(&admin(), &blue), &ix) {
        Verdict::Allow(w) => assert!(w.len() == 1 && w[0].contains("could not tell"), "{w:?}"),
        other => panic!("{other:?}"),
    }
    let strict = Policy { unknown_gateway_mode: UnknownGatewayMode::Deny, ..Policy::default() };
    assert_denied(validate_evpn(&create(&admin(), &blue), &ix, &strict), &["could not tell"]);
}

#[test]
fn vtep_needs_a_valid_spec() {
    let ix = index();
    let good = vtep("new", fabric_spec());
    assert_allowed(validate_vtep(&create(&admin(), &good), &ix, &Policy::default()));
    let mut spec = fabric_spec();
    spec["cidrs"] = json!(["198.18.0.1/24"]);
    assert_denied(
        validate_vtep(&create(&admin(), &vtep("new", spec)), &ix, &Policy::default()),
        &["spec.cidrs[0]", "198.18.0.0/24"],
    );
}

#[test]
fn vtep_in_use_cannot_be_deleted() {
    let ix = index();
    let fabric = vtep("fabric", fabric_spec());
    assert_denied(validate_vtep(&delete(&admin(), &fabric), &ix, &Policy::default()), &["used by EVPN(s) [\"red\"]"]);
    assert_allowed(validate_vtep(&delete(&admin(), &vtep("idle", fabric_spec())), &ix, &Policy::default()));
}

#[test]
fn vtep_ranges_cannot_drop_a_used_vni() {
    let ix = index();
    let old = vtep("fabric", fabric_spec());
    let mut spec = fabric_spec();
    spec["vniRanges"] = json!([{"start": 11000, "end": 11999}]);
    let new = vtep("fabric", spec);
    assert_denied(validate_vtep(&update(&admin(), &new, &old), &ix, &Policy::default()), &["\"red\"", "VNI 10100"]);
}

fn node_state(name: &str) -> EvpnNodeState {
    EvpnNodeState::new(name, Default::default())
}

fn status_write<'a>(user: &'a UserInfo, obj: &'a EvpnNodeState) -> Request<'a, EvpnNodeState> {
    Request {
        operation: Operation::Update,
        sub_resource: Some("status"),
        user,
        object: Some(obj),
        old_object: Some(obj),
    }
}

#[test]
fn agent_writes_only_its_own_node_status() {
    let p = Policy::default();
    let (own, other) = (node_state("worker-1"), node_state("worker-2"));
    let agent = user("system:node:worker-1");
    assert_allowed(validate_node_state(&status_write(&agent, &own), &p));
    assert_denied(validate_node_state(&status_write(&agent, &other), &p), &["\"worker-1\"", "not \"worker-2\""]);
    let bound_token = UserInfo {
        username: Some("system:serviceaccount:evpn-system:evpn-agent".into()),
        extra: Some([("authentication.kubernetes.io/node-name".to_owned(), vec!["worker-2".to_owned()])].into()),
        ..Default::default()
    };
    assert_allowed(validate_node_state(&status_write(&bound_token, &other), &p));
    assert_denied(validate_node_state(&status_write(&user("someone"), &own), &p), &["not tied to a node"]);
}

#[test]
fn only_the_operator_writes_node_state_specs() {
    let p = Policy::default();
    let mut changed = node_state("worker-1");
    changed.spec.vteps = vec![
        serde_json::from_value(json!({"name": "fabric", "mode": "Managed", "cidrs": [], "udpPort": 4789})).unwrap(),
    ];
    let old = node_state("worker-1");
    assert_allowed(validate_node_state(&update(&user(DEFAULT_OPERATOR_USER), &changed, &old), &p));
    assert_denied(validate_node_state(&update(&admin(), &changed, &old), &p), &["written by the operator"]);
    assert_denied(
        validate_node_state(&create(&user("system:node:worker-1"), &changed), &p),
        &["written by the operator"],
    );
    // Metadata-only writes (the garbage collector, labels) are RBAC's business.
    assert_allowed(validate_node_state(&update(&admin(), &old, &old), &p));
}

#[test]
fn segments_need_a_mac_vrf_all_active_and_a_vtep_with_bgp() {
    let segment = json!({"ethernetSegments": [{"name": "host1", "interface": "bond1", "nodeSelector": {}}]});
    let mut spec = l2("blue", None);
    spec["multiHoming"] = segment.clone();
    assert_allowed(check(create(&admin(), &evpn("blue", spec.clone())), &index()));

    spec["multiHoming"]["ethernetSegments"][0]["mode"] = json!("SingleActive");
    assert_denied(
        check(create(&admin(), &evpn("blue", spec)), &index()),
        &["spec.multiHoming.ethernetSegments[0].mode", "AllActive"],
    );

    let mut layer3 = l3("red", 10200);
    layer3["multiHoming"] = segment.clone();
    assert_denied(check(create(&admin(), &evpn("red2", layer3)), &index()), &["spec.multiHoming", "macVRF"]);

    let mut ix = index();
    let mut frr_k8s = fabric_spec();
    frr_k8s.as_object_mut().unwrap().remove("bgp");
    frr_k8s["frrConfigurationSelector"] = json!({"matchLabels": {"underlay": "yes"}});
    ix.apply_vtep(&vtep("fabric", frr_k8s));
    let mut spec = l2("blue", None);
    spec["multiHoming"] = segment;
    assert_denied(check(create(&admin(), &evpn("blue", spec)), &ix), &["spec.multiHoming", "frr-k8s"]);
}

/// The standard index, with VTEP fabric's underlay at `vtep_mtu` over `cidr` and a primary Layer2
/// network "jumbo" of MTU `network_mtu` (its default when `None`).
fn mtu_index(vtep_mtu: u32, cidr: &str, network_mtu: Option<u32>) -> Index {
    let mut ix = index();
    let mut spec = fabric_spec();
    spec["mtu"] = json!(vtep_mtu);
    spec["cidrs"] = json!([cidr]);
    ix.apply_vtep(&vtep("fabric", spec));
    ix.set_network(cudn("jumbo"), Some(NetworkFacts { mtu: network_mtu, ..network("Layer2", Some("Primary"), None) }));
    ix
}

#[test]
fn network_mtu_must_fit_through_the_vtep_underlay() {
    let jumbo = evpn("jumbo", l2("jumbo", None));
    assert_allowed(check(create(&admin(), &jumbo), &mtu_index(9000, "198.18.0.0/24", Some(8950))));
    assert_eq!(
        check(create(&admin(), &jumbo), &mtu_index(9000, "198.18.0.0/24", Some(8951))),
        Verdict::Deny(
            "spec.network: ClusterUserDefinedNetwork jumbo has MTU 8951, but VTEP \"fabric\" carries at most 8950 \
             (spec.mtu 9000 minus 50 bytes of VXLAN over IPv4): recreate the network with mtu 8950 or less \
             (its mtu is immutable), or raise the VTEP's spec.mtu to 9001"
                .into()
        )
    );
    assert_allowed(check(create(&admin(), &jumbo), &mtu_index(9000, "fd00:18::/64", Some(8930))));
    assert_denied(
        check(create(&admin(), &jumbo), &mtu_index(9000, "fd00:18::/64", Some(8931))),
        &["at most 8930", "minus 70 bytes of VXLAN over IPv6", "spec.mtu to 9001"],
    );
    // Past the largest VTEP MTU, only the network can give.
    match check(create(&admin(), &jumbo), &mtu_index(9216, "198.18.0.0/24", Some(9200))) {
        Verdict::Deny(msg) => assert!(msg.ends_with("(its mtu is immutable)"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // A spec update is judged the same way.
    let mut new_targets = l2("jumbo", None);
    new_targets["macVRF"]["routeTargets"] = json!({"import": ["65000:1"]});
    let ix = mtu_index(9000, "198.18.0.0/24", Some(9000));
    assert_denied(check(update(&admin(), &evpn("jumbo", new_targets), &jumbo), &ix), &["MTU 9000", "at most 8950"]);
}

#[test]
fn a_network_without_mtu_gets_the_configured_default() {
    let jumbo = evpn("jumbo", l2("jumbo", None));
    let mut ix = mtu_index(1420, "198.18.0.0/24", None);
    assert_denied(
        check(create(&admin(), &jumbo), &ix),
        &["has MTU 1400 (it sets no mtu: OVN-Kubernetes' default)", "at most 1370", "spec.mtu to 1450"],
    );
    ix.ovnkube_config.mtu = Some(1370);
    assert_allowed(check(create(&admin(), &jumbo), &ix));
    ix.ovnkube_config.mtu = Some(8900);
    assert_denied(check(create(&admin(), &jumbo), &ix), &["MTU 8900 (it sets no mtu: ovnkube-config's [default] mtu)"]);
}

#[test]
fn a_vtep_without_mtu_checks_nothing() {
    let mut ix = mtu_index(9000, "198.18.0.0/24", Some(9000));
    ix.apply_vtep(&vtep("fabric", fabric_spec()));
    assert_allowed(check(create(&admin(), &evpn("jumbo", l2("jumbo", None))), &ix));
}

#[test]
fn a_vtep_cannot_shrink_below_an_evpn_using_it() {
    let mut ix = mtu_index(9050, "198.18.0.0/24", Some(9000));
    ix.apply_evpn(&evpn("jumbo", l2("jumbo", None)));
    let with_mtu = |mtu: u32, cidr: &str| {
        let mut spec = fabric_spec();
        spec["mtu"] = json!(mtu);
        spec["cidrs"] = json!([cidr]);
        vtep("fabric", spec)
    };
    let old = with_mtu(9050, "198.18.0.0/24");
    let verdict = |new: &Vtep, old: &Vtep| validate_vtep(&update(&admin(), new, old), &ix, &Policy::default());
    assert_eq!(
        verdict(&with_mtu(9049, "198.18.0.0/24"), &old),
        Verdict::Deny(
            "spec.mtu: EVPN(s) \"jumbo\" (network MTU 9000) would no longer fit: VTEP \"fabric\" would carry at most \
             8999 (spec.mtu 9049 minus 50 bytes of VXLAN over IPv4): keep spec.mtu at 9050 or more"
                .into()
        )
    );
    assert_allowed(verdict(&with_mtu(9100, "198.18.0.0/24"), &old));
    // Moving to an IPv6 underlay costs 20 more bytes.
    assert_denied(verdict(&with_mtu(9050, "fd00:18::/64"), &old), &["\"jumbo\"", "over IPv6", "9070 or more"]);
    // Setting an MTU where there was none; "red" on a network without mtu fits anyway.
    assert_denied(verdict(&with_mtu(9000, "198.18.0.0/24"), &vtep("fabric", fabric_spec())), &["\"jumbo\""]);
    // Removing the MTU leaves nothing to check.
    assert_allowed(verdict(&vtep("fabric", fabric_spec()), &old));
}

#[test]
fn a_vtep_change_lists_a_few_broken_evpns_and_spares_those_already_broken() {
    let mut ix = mtu_index(9100, "198.18.0.0/24", Some(9000));
    for name in ["a", "b", "c", "d", "e"] {
        ix.apply_evpn(&evpn(name, l2("jumbo", None)));
    }
    ix.set_network(cudn("huge"), Some(NetworkFacts { mtu: Some(9200), ..network("Layer2", Some("Primary"), None) }));
    ix.apply_evpn(&evpn("already-broken", l2("huge", None)));
    let with_mtu = |mtu: u32| {
        let mut spec = fabric_spec();
        spec["mtu"] = json!(mtu);
        vtep("fabric", spec)
    };
    let verdict = |new: &Vtep, old: &Vtep| validate_vtep(&update(&admin(), new, old), &ix, &Policy::default());
    match verdict(&with_mtu(9000), &with_mtu(9100)) {
        Verdict::Deny(msg) => {
            assert!(
                msg.contains(
                    "EVPN(s) \"a\" (network MTU 9000), \"b\" (network MTU 9000), \"c\" (network MTU 9000) and 2 more"
                ),
                "{msg}"
            );
            assert!(!msg.contains("already-broken"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A change that breaks nothing new passes, though "already-broken" still does not fit.
    let mut renamed_neighbor = fabric_spec();
    renamed_neighbor["mtu"] = json!(9100);
    renamed_neighbor["bgp"]["neighbors"][0]["address"] = json!("198.18.1.2");
    assert_allowed(verdict(&vtep("fabric", renamed_neighbor), &with_mtu(9100)));
}
