//! The CEL rules in the generated schemas and the Rust rules in `validation` must agree.
//!
//! Each case is judged three ways: what we expect, what CEL says (evaluated locally on the real
//! generated schema, as a v1.25+ apiserver would), and what the Rust functions say (what the
//! webhook enforces on every apiserver). Cases that only Rust can judge (number ranges inside
//! strings) say so with `cel: Accepts`.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use evpn_crds::{Evpn, Vtep};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Accepts,
    Rejects,
}
use Verdict::*;

fn cel_verdict<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> (Verdict, String) {
    let crd = K::crd();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
    match Validator::new().validate(&schema, object, old) {
        Ok(()) => (Accepts, String::new()),
        Err(e) => (Rejects, e.to_string()),
    }
}

fn verdict(errors: Vec<evpn_crds::validation::FieldError>) -> (Verdict, String) {
    if errors.is_empty() { (Accepts, String::new()) } else { (Rejects, evpn_crds::validation::join(&errors)) }
}

fn evpn(spec: Value) -> Value {
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": "blue"}, "spec": spec})
}

fn vtep(spec: Value) -> Value {
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": "fabric"}, "spec": spec})
}

fn l2(vni: Option<u32>) -> Value {
    let mut spec =
        json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "macVRF": {}});
    if let Some(vni) = vni {
        spec["macVRF"]["vni"] = json!(vni);
    }
    spec
}

fn check_evpn(name: &str, spec: Value, old: Option<Value>, rust: Verdict, cel: Verdict) {
    let object = evpn(spec);
    let old = old.map(evpn);
    let (got_cel, cel_msg) = cel_verdict::<Evpn>(&object, old.as_ref());
    let new: Evpn = serde_json::from_value(object).expect("case deserializes");
    let errors = match &old {
        Some(old) => new.spec.validate_update(&serde_json::from_value::<Evpn>(old.clone()).unwrap().spec),
        None => new.spec.validate(),
    };
    let (got_rust, rust_msg) = verdict(errors);
    assert_eq!(got_rust, rust, "{name}: Rust rules say {got_rust:?} ({rust_msg})");
    assert_eq!(got_cel, cel, "{name}: CEL says {got_cel:?} ({cel_msg})");
}

fn check_vtep(name: &str, spec: Value, rust: Verdict, cel: Verdict) {
    let object = vtep(spec);
    let (got_cel, cel_msg) = cel_verdict::<Vtep>(&object, None);
    let new: Vtep = serde_json::from_value(object).expect("case deserializes");
    let (got_rust, rust_msg) = verdict(new.spec.validate());
    assert_eq!(got_rust, rust, "{name}: Rust rules say {got_rust:?} ({rust_msg})");
    assert_eq!(got_cel, cel, "{name}: CEL says {got_cel:?} ({cel_msg})");
}

#[test]
fn evpn_create_rules() {
    check_evpn("layer2 with auto VNI", l2(None), None, Accepts, Accepts);
    check_evpn("layer2 with VNI", l2(Some(10100)), None, Accepts, Accepts);
    check_evpn(
        "neither VRF",
        json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric"}),
        None,
        Rejects,
        Rejects,
    );
    let mut same = l2(Some(100));
    same["ipVRF"] = json!({"vni": 100});
    check_evpn("MAC-VNI equals IP-VNI", same, None, Rejects, Rejects);
    let mut irb = l2(Some(100));
    irb["ipVRF"] =
        json!({"vni": 101, "routeTargets": {"import": ["65000:101", "192.0.2.1:7"], "export": ["4200000000:9"]}});
    check_evpn("layer2 with IRB", irb, None, Accepts, Accepts);
    let mut udn = l2(None);
    udn["network"] = json!({"kind": "UserDefinedNetwork", "name": "blue"});
    check_evpn("UDN without namespace", udn.clone(), None, Rejects, Rejects);
    udn["network"]["namespace"] = json!("tenant-a");
    check_evpn("UDN with namespace", udn, None, Accepts, Accepts);
    let mut cudn_ns = l2(None);
    cudn_ns["network"]["namespace"] = json!("tenant-a");
    check_evpn("CUDN with namespace", cudn_ns, None, Rejects, Rejects);
    let mut rt = l2(None);
    rt["macVRF"]["routeTargets"] = json!({"import": ["4200000000:65536"]});
    check_evpn("4-byte ASN route target with a 4-byte number", rt, None, Rejects, Accepts);
}

#[test]
fn evpn_segment_rules() {
    let with_segments = |segments: Value| {
        let mut spec = l2(None);
        spec["multiHoming"] = json!({"ethernetSegments": segments});
        spec
    };
    let seg = |name: &str, esi: &str| json!({"name": name, "interface": "eth1", "nodeSelector": {}, "esi": esi});
    check_evpn("auto ESI", with_segments(json!([seg("a", "auto")])), None, Accepts, Accepts);
    check_evpn("type-0 ESI", with_segments(json!([seg("a", "00:11:22:33:44:55:66:77:88:99")])), None, Accepts, Accepts);
    check_evpn(
        "type-3 ESI given explicitly",
        with_segments(json!([seg("a", "03:11:22:33:44:55:66:77:88:99")])),
        None,
        Rejects,
        Rejects,
    );
    let mut derived = with_segments(json!([seg("a", "auto")]));
    derived["multiHoming"]["derivedESIs"] = json!({"a": "03:02:aa:00:00:00:01:00:00:01"});
    check_evpn(
        "derived ESI recorded",
        derived.clone(),
        Some(with_segments(json!([seg("a", "auto")]))),
        Accepts,
        Accepts,
    );
    derived["multiHoming"]["derivedESIs"] = json!({"a": "00:11:22:33:44:55:66:77:88:99"});
    check_evpn("derived ESI of type 0", derived, None, Rejects, Accepts);
    check_evpn(
        "type-1 ESI given explicitly",
        with_segments(json!([seg("a", "01:11:22:33:44:55:66:77:88:99")])),
        None,
        Rejects,
        Rejects,
    );
    check_evpn(
        "one ESI on two segments",
        with_segments(json!([seg("a", "00:11:22:33:44:55:66:77:88:99"), seg("b", "00:11:22:33:44:55:66:77:88:99")])),
        None,
        Rejects,
        Accepts,
    );
}

#[test]
fn evpn_update_rules() {
    check_evpn("VNI unchanged", l2(Some(100)), Some(l2(Some(100))), Accepts, Accepts);
    check_evpn("VNI set after allocation", l2(Some(100)), Some(l2(None)), Accepts, Accepts);
    check_evpn("VNI changed", l2(Some(101)), Some(l2(Some(100))), Rejects, Rejects);
    check_evpn("VNI removed", l2(None), Some(l2(Some(100))), Rejects, Rejects);
    let mut moved = l2(Some(100));
    moved["network"]["name"] = json!("red");
    check_evpn("network changed", moved, Some(l2(Some(100))), Rejects, Rejects);
    let mut retargeted = l2(Some(100));
    retargeted["vtep"] = json!("other");
    check_evpn("vtep changed", retargeted, Some(l2(Some(100))), Rejects, Rejects);
    let mut rts = l2(Some(100));
    rts["macVRF"]["routeTargets"] = json!({"import": ["65000:5"]});
    check_evpn("route targets changed", rts, Some(l2(Some(100))), Accepts, Accepts);
    let with_rd = |rd: Option<u32>| {
        let mut spec = l2(Some(100));
        if let Some(rd) = rd {
            spec["macVRF"]["routeDistinguisherIndex"] = json!(rd);
        }
        spec
    };
    check_evpn("RD index recorded", with_rd(Some(32768)), Some(with_rd(None)), Accepts, Accepts);
    check_evpn("RD index changed", with_rd(Some(32769)), Some(with_rd(Some(32768))), Rejects, Rejects);
    check_evpn("RD index removed", with_rd(None), Some(with_rd(Some(32768))), Rejects, Rejects);
}

/// Strings that reach FRR's configuration or a device name: the webhook's functions refuse
/// what the schema patterns refuse (the patterns themselves are checked in `patterns_agree`).
#[test]
fn hostile_names_are_refused() {
    let attack = "x\nrouter bgp 65099\n neighbor 1.2.3.4 remote-as 1";
    let mut bfd = direct_vtep();
    bfd["bgp"]["bfdProfiles"] = json!([{"name": attack}]);
    bfd["bgp"]["neighbors"][0]["bfdProfile"] = json!(attack);
    let parsed: Vtep = serde_json::from_value(vtep(bfd)).unwrap();
    let message = evpn_crds::validation::join(&parsed.spec.validate());
    assert!(message.contains("spec.bgp.bfdProfiles[0].name"), "{message}");
    assert!(
        !message.contains('\n') && !message.contains("remote-as 1"),
        "the value is quoted, escaped and cut: {message}"
    );
    let mut unnumbered = direct_vtep();
    unnumbered["bgp"]["neighbors"] = json!([{"interface": "eth0\n!", "asn": 65000}]);
    let parsed: Vtep = serde_json::from_value(vtep(unnumbered)).unwrap();
    assert!(evpn_crds::validation::join(&parsed.spec.validate()).contains("spec.bgp.neighbors[0].interface"));
    let mut segment = l2(None);
    segment["multiHoming"] =
        json!({"ethernetSegments": [{"name": "s", "interface": "..", "nodeSelector": {}, "esi": "auto"}]});
    let parsed: Evpn = serde_json::from_value(evpn(segment)).unwrap();
    assert!(evpn_crds::validation::join(&parsed.spec.validate()).contains("interface"));
    let mut network = l2(None);
    network["network"]["name"] = json!("blue\nvrf red");
    let parsed: Evpn = serde_json::from_value(evpn(network)).unwrap();
    assert!(evpn_crds::validation::join(&parsed.spec.validate()).contains("spec.network.name"));
}

fn direct_vtep() -> Value {
    json!({
        "cidrs": ["198.18.0.0/24"],
        "vniRanges": [{"start": 10000, "end": 10999}],
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.1.1", "asn": 65000}]}
    })
}

#[test]
fn vtep_rules() {
    check_vtep("direct BGP", direct_vtep(), Accepts, Accepts);
    let mut frrk8s = direct_vtep();
    frrk8s.as_object_mut().unwrap().remove("bgp");
    frrk8s["frrConfigurationSelector"] = json!({"matchLabels": {"evpn": "underlay"}});
    check_vtep("frr-k8s", frrk8s.clone(), Accepts, Accepts);
    frrk8s["bgp"] = direct_vtep()["bgp"].clone();
    check_vtep("both BGP modes", frrk8s.clone(), Rejects, Rejects);
    frrk8s.as_object_mut().unwrap().remove("bgp");
    frrk8s.as_object_mut().unwrap().remove("frrConfigurationSelector");
    check_vtep("no BGP mode", frrk8s, Rejects, Rejects);
    let mut range = direct_vtep();
    range["vniRanges"] = json!([{"start": 20, "end": 10}]);
    check_vtep("inverted VNI range", range, Rejects, Rejects);
    let mut overlap = direct_vtep();
    overlap["vniRanges"] = json!([{"start": 10, "end": 20}, {"start": 15, "end": 30}]);
    check_vtep("overlapping VNI ranges", overlap, Rejects, Accepts);
    let mut neighbor = direct_vtep();
    neighbor["bgp"]["neighbors"] = json!([{"address": "198.18.1.1", "interface": "eth0", "asn": 65000}]);
    check_vtep("neighbor by address and interface", neighbor.clone(), Rejects, Rejects);
    neighbor["bgp"]["neighbors"] = json!([{"interface": "eth0", "asn": 65000, "dynamicASN": "external"}]);
    check_vtep("neighbor with asn and dynamicASN", neighbor.clone(), Rejects, Rejects);
    neighbor["bgp"]["neighbors"] = json!([{"interface": "eth0", "dynamicASN": "external", "bfdProfile": "fast"}]);
    check_vtep("unknown BFD profile", neighbor.clone(), Rejects, Rejects);
    neighbor["bgp"]["bfdProfiles"] = json!([{"name": "fast"}]);
    check_vtep("unnumbered neighbor with BFD", neighbor, Accepts, Accepts);
    let mut host_bits = direct_vtep();
    host_bits["cidrs"] = json!(["198.18.0.1/24"]);
    check_vtep("CIDR with host bits", host_bits, Rejects, Accepts);
}

/// Each schema pattern and the function that the webhook and the agent use say the same of the
/// same strings: the pattern is run by CEL's `matches` (RE2, as the apiserver runs patterns).
#[test]
fn patterns_agree() {
    use evpn_crds::common::{FRR_NAME_PATTERN, INTERFACE_NAME_PATTERN, NAMESPACE_PATTERN, OBJECT_NAME_PATTERN};
    use evpn_crds::validation::{check_frr_name, check_interface_name, check_object_name};
    let samples = [
        "eth0",
        "bond0.100",
        "enp1s0f0",
        "_x",
        "a-b_c.d",
        ".",
        "..",
        "-x",
        ".x",
        "a/b",
        "a b",
        "a:b",
        "a\nb",
        "a\rb",
        "a\u{0}b",
        "a!",
        "#a",
        "a\u{2028}b",
        "é",
        "",
        "abcdefghijklmno",
        "abcdefghijklmnop",
        "blue",
        "Blue",
        "a.b.c",
        "a..b",
        "a-",
        "x\nrouter bgp 65099",
    ];
    let long = "a".repeat(64);
    type Check<'a> = &'a dyn Fn(&str) -> bool;
    let checks: [(&str, Check); 4] = [
        (INTERFACE_NAME_PATTERN, &|s| check_interface_name(s).is_ok()),
        (FRR_NAME_PATTERN, &|s| check_frr_name(s).is_ok()),
        (OBJECT_NAME_PATTERN, &|s| check_object_name(s).is_ok()),
        (NAMESPACE_PATTERN, &|s| check_object_name(s).is_ok() && !s.contains('.')),
    ];
    for (pattern, function) in checks {
        let schema = json!({"type": "object", "properties": {"s": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": format!("self.s.matches('{}')", pattern.replace('\\', "\\\\"))}]});
        for sample in samples.iter().copied().chain([long.as_str()]) {
            let by_pattern = Validator::new().validate(&schema, &json!({"s": sample}), None).is_ok();
            assert_eq!(by_pattern, function(sample), "{pattern} and its function disagree on {sample:?}");
        }
    }
}
