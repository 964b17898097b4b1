//! The operator's FRRConfigurations (its golden files) with a user's underlay, merged and rendered
//! for one node, against golden files in `golden/`; merge conflicts; node selection; and FRR
//! 8.4.4's own parser on every text when vtysh is installed.
//!
//! `EVPN_UPDATE_GOLDEN=1 cargo test -p evpn-tests --lib frrk8s` rewrites the golden files; review
//! the diff.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::*;

fn config(name: &str, node_selector: Value, bgp: Value) -> FrrConfiguration {
    serde_json::from_value(json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
        "metadata": {"name": name, "namespace": "frr-k8s-system"},
        "spec": {"nodeSelector": node_selector, "bgp": bgp}}))
    .expect("an FRRConfiguration")
}

/// A router in one configuration that applies to every node.
fn routers(name: &str, routers: Value) -> FrrConfiguration {
    config(name, json!({}), json!({"routers": routers}))
}

/// The user's underlay of worker-1: its VTEP address and one eBGP session to the top of rack.
fn underlay() -> FrrConfiguration {
    config(
        "underlay-worker-1",
        json!({"matchLabels": {"kubernetes.io/hostname": "worker-1"}}),
        json!({"routers": [{"asn": 65001, "prefixes": ["198.18.0.1/32"],
                            "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}]}),
    )
}

/// What the operator writes for a case (its golden file).
fn operator_objects(case: &str) -> Vec<FrrConfiguration> {
    let path = crate::repo_root().join(format!("operator/src/frrk8s/golden/{case}.yaml"));
    crate::read_yaml(&path)
        .expect("the operator's golden file")
        .into_iter()
        .map(|doc| serde_json::from_value(doc).expect("an FRRConfiguration"))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// worker-1 as a node of the VTEP named `fabric`.
fn worker_1(fabric: &str) -> BTreeMap<String, String> {
    labels(&[("kubernetes.io/hostname", "worker-1"), ("fabric", fabric)])
}

fn options() -> RenderOptions {
    RenderOptions {
        hostname: "worker-1".into(),
        passwords: BTreeMap::from([("tor".to_owned(), "s3cret".to_owned())]),
        ..Default::default()
    }
}

fn lab_options() -> RenderOptions {
    RenderOptions { vrf_netns_dir: Some("/run/netns/".into()), allowas_in_origin: true, ..options() }
}

/// The operator's objects of `case` plus `extra`, as worker-1 of `fabric` sees them.
fn node_configs(case: &str, fabric: &str, extra: Vec<FrrConfiguration>) -> Vec<FrrConfiguration> {
    let mut all = operator_objects(case);
    all.extend(extra);
    let node = worker_1(fabric);
    all.into_iter().filter(|c| selects(c, &node)).collect()
}

fn render_all(configs: &[FrrConfiguration], options: &RenderOptions) -> Result<String, Error> {
    render(&configs.iter().collect::<Vec<_>>(), options)
}

fn merge_all(configs: &[FrrConfiguration]) -> Result<NodeConfig, Error> {
    merge(&configs.iter().collect::<Vec<_>>(), &options().passwords)
}

/// Renders a case for worker-1 with the underlay, checks it against its golden file and returns it.
fn golden(case: &str, fabric: &str) -> String {
    let text = render_all(&node_configs(case, fabric, vec![underlay()]), &options()).expect("a configuration");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/frrk8s/golden/{case}.conf"));
    if std::env::var_os("EVPN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("writing the golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(text, expected, "{case}: rerun with EVPN_UPDATE_GOLDEN=1 and review the diff");
    text
}

const HEADER: &str = "log stdout informational
log timestamp precision 3
hostname worker-1
ip nht resolve-via-default
ipv6 nht resolve-via-default
";

/// The default-VRF router: the underlay's session in unicast, the operator's in EVPN.
const DEFAULT_ROUTER: &str = "
router bgp 65001
  no bgp ebgp-requires-policy
  no bgp network import-check
  no bgp default ipv4-unicast
  bgp graceful-restart preserve-fw-state
  neighbor 198.18.255.1 remote-as 65000
  neighbor 198.19.255.1 remote-as 65000
  neighbor 198.19.255.1 password s3cret
  neighbor eth1 interface remote-as external
  address-family ipv4 unicast
    neighbor 198.18.255.1 activate
  exit-address-family
  address-family ipv4 unicast
    network 198.18.0.1/32
  exit-address-family
  address-family l2vpn evpn
    neighbor 198.19.255.1 activate
    neighbor eth1 activate
    advertise-all-vni
";

#[test]
fn layer2() {
    let text = golden("layer2", "fabric");
    // Route targets sorted: frr-k8s merges every router with itself, which sorts them.
    let evpn_end = "    vni 10100
      route-target import 65000:1
      route-target import 65001:10100
    exit-vni
  exit-address-family
";
    assert_eq!(text, format!("{HEADER}{DEFAULT_ROUTER}{evpn_end}"));
}

#[test]
fn layer3_announces_only_the_nodes_own_subnet() {
    let text = golden("layer3", "fabric");
    let vrf = "
vrf red
  vni 20100
exit-vrf
";
    let red = "
router bgp 65001 vrf red
  no bgp ebgp-requires-policy
  no bgp network import-check
  no bgp default ipv4-unicast
  bgp graceful-restart preserve-fw-state
  address-family ipv4 unicast
    network 10.20.1.0/24
  exit-address-family
  address-family l2vpn evpn
    advertise ipv4 unicast
    advertise ipv6 unicast
  exit-address-family
";
    assert_eq!(text, format!("{HEADER}{vrf}{DEFAULT_ROUTER}  exit-address-family\n{red}"));
    assert!(!text.contains("10.20.2.0/24"), "worker-2's subnet is not worker-1's to announce:\n{text}");
}

#[test]
fn layer2_with_irb() {
    let text = golden("layer2-irb", "fabric");
    assert!(
        text.starts_with(&format!("{HEADER}\nvrf irb\n  vni 20300\nexit-vrf\n{DEFAULT_ROUTER}  exit-address-family\n"))
    );
    assert!(text.contains("\nrouter bgp 65001 vrf irb\n"), "{text}");
    assert!(
        text.ends_with(
            "  address-family ipv4 unicast
    network 10.30.0.0/24
  exit-address-family
  address-family l2vpn evpn
    advertise ipv4 unicast
    advertise ipv6 unicast
  exit-address-family
"
        ),
        "{text}"
    );
    // The MAC-VRF has derived route targets: advertise-all-vni covers it, no `vni` block.
    assert!(!text.contains("vni 10300"), "{text}");
}

#[test]
fn two_vteps_and_two_objects_of_one() {
    let text = golden("multi-vtep", "east");
    // east's two objects repeat the same router and sessions: they merge into one.
    assert_eq!(text, format!("{HEADER}{DEFAULT_ROUTER}  exit-address-family\n"));
    let node = merge_all(&node_configs("multi-vtep", "east", vec![underlay()])).expect("a configuration");
    let [router] = &node.routers[..] else { panic!("one router: {node:?}") };
    let l2vnis: Vec<u32> = router.evpn.as_ref().expect("EVPN").l2vnis.keys().copied().collect();
    assert_eq!(l2vnis, (11000..=11011).collect::<Vec<_>>(), "east's twelve MAC-VRFs, not west's 10100");
}

#[test]
fn the_users_sessions_gain_evpn() {
    // The underlay the operator copied its sessions from (as in its own tests), with the
    // address family the apiserver fills in.
    let user = config(
        "underlay",
        json!({}),
        json!({"bfdProfiles": [{"name": "fast", "receiveInterval": 100}],
               "routers": [{"asn": 65001, "prefixes": ["198.18.0.1/32"], "neighbors": [
            {"address": "198.19.255.1", "asn": 65000, "passwordSecret": {"name": "tor", "namespace": "frr-k8s-system"},
             "bfdProfile": "fast", "addressFamilies": ["unicast"]},
            {"interface": "eth1", "dynamicASN": "external"}]}]}),
    );
    let configs = node_configs("layer2", "fabric", vec![user]);
    let node = merge_all(&configs).expect("a configuration");
    let tor = &node.routers[0].neighbors["198.19.255.1"];
    assert_eq!(tor.address_families, BTreeSet::from(["evpn".to_owned(), "unicast".to_owned()]));
    assert_eq!(tor.bfd_profile.as_deref(), Some("fast"), "the user's BFD profile stays");
    let text = render_all(&configs, &options()).expect("a configuration");
    let sessions = "  neighbor 198.19.255.1 remote-as 65000
  neighbor 198.19.255.1 password s3cret
  neighbor 198.19.255.1 bfd
  neighbor 198.19.255.1 bfd profile fast
  neighbor eth1 interface remote-as external
  address-family ipv4 unicast
    neighbor 198.19.255.1 activate
  exit-address-family
  address-family ipv4 unicast
    neighbor eth1 activate
  exit-address-family
  address-family ipv6 unicast
    neighbor eth1 activate
  exit-address-family
  address-family ipv4 unicast
    network 198.18.0.1/32
  exit-address-family
  address-family l2vpn evpn
    neighbor 198.19.255.1 activate
    neighbor eth1 activate
    advertise-all-vni
";
    assert!(text.contains(sessions), "{text}");
    assert!(text.ends_with("\nbfd\n  profile fast\n    receive-interval 100\n"), "{text}");
}

#[test]
fn lab_options_bind_vrfs_to_netns_and_accept_the_own_asn() {
    let text =
        render_all(&node_configs("layer3", "fabric", vec![underlay()]), &lab_options()).expect("a configuration");
    assert!(text.contains("\nvrf red\n  vni 20100\n  netns /run/netns/red\nexit-vrf\n"), "{text}");
    // A VRF zebra bound that no configuration names yet keeps its binding.
    let bound = RenderOptions { bound_vrfs: BTreeSet::from(["blue".to_owned(), "red".to_owned()]), ..lab_options() };
    let with_bound = render_all(&node_configs("layer3", "fabric", vec![underlay()]), &bound).expect("a configuration");
    assert!(
        with_bound.contains("\nvrf blue\n  netns /run/netns/blue\nexit-vrf\n\nvrf red\n  vni 20100\n"),
        "{with_bound}"
    );
    let kernel = RenderOptions { vrf_netns_dir: None, ..bound };
    let on_kernel_vrfs =
        render_all(&node_configs("layer3", "fabric", vec![underlay()]), &kernel).expect("a configuration");
    assert!(!on_kernel_vrfs.contains("vrf blue"), "kernel VRFs need no stanza of their own: {on_kernel_vrfs}");
    let unicast = "  address-family ipv4 unicast
    neighbor 198.18.255.1 activate
    neighbor 198.18.255.1 allowas-in origin
  exit-address-family
";
    let evpn = "  address-family l2vpn evpn
    neighbor 198.19.255.1 activate
    neighbor 198.19.255.1 allowas-in origin
    neighbor eth1 activate
    neighbor eth1 allowas-in origin
    advertise-all-vni
";
    assert!(text.contains(unicast) && text.contains(evpn), "{text}");

    // Only eBGP sessions: an iBGP one has no loop to break.
    let ibgp = routers(
        "ibgp",
        json!([{"asn": 65001, "neighbors": [
            {"address": "198.18.255.2", "asn": 65001, "addressFamilies": ["unicast", "evpn"]},
            {"address": "198.18.255.3", "dynamicASN": "internal", "addressFamilies": ["evpn"]}]}]),
    );
    let text = render_all(&[ibgp], &lab_options()).expect("a configuration");
    assert!(text.contains("    neighbor 198.18.255.2 activate\n") && !text.contains("allowas-in"), "{text}");

    let real = render_all(&node_configs("layer3", "fabric", vec![underlay()]), &options()).expect("a configuration");
    assert!(!real.contains("netns") && !real.contains("allowas-in"), "{real}");
}

#[test]
fn session_settings_and_frrs_defaults() {
    let session = |extra: Value| {
        let mut neighbor = json!({"address": "fd00::1", "asn": 65000});
        neighbor.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        routers("sessions", json!([{"asn": 65001, "prefixes": ["fd00:1::/64"], "neighbors": [neighbor]}]))
    };
    let text = render_all(
        &[session(json!({"port": 1179, "holdTime": "1m30s", "keepaliveTime": "30s", "connectTime": "5s",
                         "sourceaddress": "fd00::2", "ebgpMultiHop": true, "localASN": 65100}))],
        &options(),
    )
    .expect("a configuration");
    let expected = "  neighbor fd00::1 remote-as 65000
  neighbor fd00::1 ebgp-multihop
  neighbor fd00::1 local-as 65100 no-prepend replace-as
  neighbor fd00::1 port 1179
  neighbor fd00::1 timers 30 90
  neighbor fd00::1 timers connect 5
  neighbor fd00::1 update-source fd00::2
  address-family ipv6 unicast
    neighbor fd00::1 activate
  exit-address-family
  address-family ipv6 unicast
    network fd00:1::/64
  exit-address-family
";
    assert!(text.ends_with(expected), "{text}");

    // FRR's defaults are dropped; single-hop eBGP over IPv6 skips the connected check.
    let text = render_all(
        &[session(json!({"port": 179, "holdTime": "180s", "keepaliveTime": "1m", "connectTime": "60s"}))],
        &options(),
    )
    .expect("a configuration");
    assert!(
        text.contains(
            "  neighbor fd00::1 remote-as 65000\n  neighbor fd00::1 disable-connected-check\n  address-family"
        )
    );
    assert!(!text.contains("fd00::1 port") && !text.contains("timers"), "{text}");
    // ... so a session that states them merges with one that does not.
    let plain = session(json!({}));
    let defaults = session(json!({"port": 179, "holdTime": "3m", "keepaliveTime": "60s"}));
    merge_all(&[plain.clone(), defaults]).expect("equal sessions");
    let shorter = session(json!({"holdTime": "9s", "keepaliveTime": "3s"}));
    let error = merge_all(&[plain, shorter]).expect_err("different timers");
    assert!(matches!(error, Error::NeighborMismatch { setting: "hold times", .. }), "{error}");
}

#[test]
fn invalid_objects_are_refused() {
    let neighbor = |n: Value| routers("bad", json!([{"asn": 65001, "neighbors": [n]}]));
    let cases = [
        (neighbor(json!({"asn": 65000})), "no address and no interface"),
        (neighbor(json!({"address": "198.18.255.1"})), "no ASN or dynamicASN"),
        (neighbor(json!({"address": "198.18.255.1", "dynamicASN": "sometimes"})), "invalid dynamicASN"),
        (neighbor(json!({"address": "not-an-address", "asn": 65000})), "invalid address"),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65000, "bfdProfile": "fast"})), "non existing BFD"),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65000, "passwordSecret": {"name": "nope"}})), "secret nope"),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65000, "holdTime": "90s"})), "both must be set"),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65000, "holdTime": "2s", "keepaliveTime": "1s"})), ">=3s"),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65000, "holdTime": "9s", "keepaliveTime": "10s"})), "lower"),
        (
            neighbor(json!({"address": "198.18.255.1", "asn": 65000, "holdTime": "9", "keepaliveTime": "3s"})),
            "holdTime",
        ),
        (neighbor(json!({"address": "198.18.255.1", "asn": 65001, "localASN": 65100})), "iBGP"),
        (routers("bad", json!([{"asn": 65001, "prefixes": ["10.0.0.0/33"]}])), "unknown ipfamily"),
    ];
    for (config, reason) in cases {
        match merge_all(&[config]) {
            Err(error @ Error::Invalid { .. }) => assert!(error.to_string().contains(reason), "{reason}: {error}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn durations_as_go_writes_them() {
    let cases = [
        ("0", Some(0)),
        ("90s", Some(90)),
        ("1m30s", Some(90)),
        ("1.5h", Some(5400)),
        ("2500ms", Some(2)),
        ("3", None),
    ];
    for (text, seconds) in cases {
        assert_eq!(duration_nanos(text).map(|ns| ns / NANOS), seconds, "{text}");
    }
    for text in ["", "-1s", "1d", "s", "1.s2"] {
        assert_eq!(duration_nanos(text), None, "{text}");
    }
}

#[test]
fn two_as_numbers_for_one_vrf() {
    let other = routers("other", json!([{"asn": 65002, "prefixes": ["198.18.0.9/32"]}]));
    let error = merge_all(&[underlay(), other]).expect_err("two AS numbers");
    assert!(matches!(&error, Error::AsnMismatch { vrf, first: 65001, second: 65002 } if vrf.is_empty()), "{error}");

    let red = routers("red", json!([{"asn": 65009, "vrf": "red", "prefixes": ["10.20.9.0/24"]}]));
    let error = merge_all(&node_configs("layer3", "fabric", vec![red])).expect_err("two AS numbers for red");
    assert!(matches!(&error, Error::AsnMismatch { vrf, first: 65001, second: 65009 } if vrf == "red"), "{error}");

    let with_id = |name: &str, id: &str| routers(name, json!([{"asn": 65001, "id": id}]));
    let error = merge_all(&[with_id("a", "198.18.0.1"), with_id("b", "198.18.0.2")]).expect_err("two router IDs");
    assert!(matches!(error, Error::RouterIdMismatch { .. }), "{error}");
    let node = merge_all(&[with_id("a", "198.18.0.1"), underlay()]).expect("one router ID");
    assert_eq!(node.routers[0].id.as_deref(), Some("198.18.0.1"));
}

/// A default-VRF router with the operator's EVPN session and these MAC-VRFs.
fn l2vnis(name: &str, vnis: Value) -> FrrConfiguration {
    routers(
        name,
        json!([{"asn": 65001, "evpn": {"advertiseVNIs": "All", "l2vnis": vnis}, "neighbors": [
            {"address": "198.19.255.1", "asn": 65000, "passwordSecret": {"name": "tor"}, "addressFamilies": ["evpn"]}]}]),
    )
}

#[test]
fn the_same_vni_twice() {
    // As an L2VNI in the default VRF and an L3VNI in a VRF.
    let blue = routers(
        "blue",
        json!([{"asn": 65001, "vrf": "blue", "evpn": {"l3vni": {"vni": 10100, "advertisePrefixes": ["unicast"]}}}]),
    );
    let error = merge_all(&node_configs("layer2", "fabric", vec![blue])).expect_err("VNI 10100 twice");
    assert!(matches!(error, Error::DuplicateVni { vni: 10100, .. }), "{error}");
    assert_eq!(error.to_string(), r#"duplicate VNI 10100: configured as l2vni in vrf "" and as l3vni in vrf "blue""#);

    // As two L3VNIs of one VRF.
    let red = routers(
        "red",
        json!([{"asn": 65001, "vrf": "red", "evpn": {"l3vni": {"vni": 20101, "advertisePrefixes": ["unicast"]}}}]),
    );
    let error = merge_all(&node_configs("layer3", "fabric", vec![red])).expect_err("two L3VNIs for red");
    assert!(matches!(&error, Error::L3VniMismatch { vrf, first: 20100, second: 20101 } if vrf == "red"), "{error}");

    // As one L2VNI in two objects: the route targets must be given in both or in neither...
    let implicit = l2vnis("implicit", json!([{"vni": 10100}]));
    let error = merge_all(&node_configs("layer2", "fabric", vec![implicit])).expect_err("implicit and explicit");
    assert!(matches!(error, Error::VniMismatch { vni: 10100, reason, .. } if reason.contains("import")), "{error}");
    // ... and the RDs equal; then the route targets are united.
    let rd = |name: &str, rd: &str| l2vnis(name, json!([{"vni": 10100, "rd": rd, "importRTs": ["65000:2"]}]));
    let error = merge_all(&[rd("a", "198.18.0.1:1"), rd("b", "198.18.0.1:2")]).expect_err("two RDs");
    assert!(matches!(error, Error::VniMismatch { reason: "different RD values", .. }), "{error}");
    let node = merge_all(&node_configs("layer2", "fabric", vec![rd("a", "198.18.0.1:1")])).expect("compatible");
    let vni = &node.routers[0].evpn.as_ref().expect("EVPN").l2vnis[&10100];
    let imports: Vec<&str> = vni.import_rts.iter().map(String::as_str).collect();
    assert_eq!((vni.rd.as_deref(), imports), (Some("198.18.0.1:1"), vec!["65000:1", "65000:2", "65001:10100"]));

    // Within one object too.
    let twice = l2vnis("twice", json!([{"vni": 10200}, {"vni": 10200, "exportRTs": ["65000:3"]}]));
    let error = merge_all(&[twice]).expect_err("implicit and explicit in one object");
    assert!(matches!(error, Error::VniMismatch { vni: 10200, reason, .. } if reason.contains("export")), "{error}");
}

#[test]
fn sessions_that_differ_do_not_merge() {
    let tor = |extra: Value| {
        let mut neighbor = json!({"address": "198.19.255.1", "asn": 65000, "passwordSecret": {"name": "tor"}});
        neighbor.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        routers("user", json!([{"asn": 65001, "neighbors": [neighbor]}]))
    };
    let cases = [
        (tor(json!({"asn": 65002})), "AS numbers"),
        (tor(json!({"passwordSecret": null})), "passwords"),
        (tor(json!({"ebgpMultiHop": true})), "ebgp-multihop"),
        (tor(json!({"dualStackAddressFamily": true})), "dualStackAddressFamily"),
    ];
    for (user, setting) in cases {
        let error = merge_all(&node_configs("layer2", "fabric", vec![user])).expect_err(setting);
        assert!(
            matches!(&error, Error::NeighborMismatch { neighbor, setting: s, .. } if neighbor == "198.19.255.1" && *s == setting),
            "{setting}: {error}"
        );
    }
    merge_all(&node_configs("layer2", "fabric", vec![tor(json!({}))])).expect("the same session");
}

#[test]
fn evpn_sections_that_do_not_fit() {
    let error = merge_all(&[routers("a", json!([{"asn": 65001, "evpn": {"advertiseVNIs": "All"}}]))])
        .expect_err("advertise-all-vni without an EVPN session");
    assert!(matches!(&error, Error::EvpnScope { vrf, .. } if vrf.is_empty()), "{error}");

    let l3 = routers(
        "a",
        json!([{"asn": 65001, "vrf": "red", "neighbors": [{"address": "10.0.0.1", "asn": 65000}],
                "evpn": {"l3vni": {"vni": 20100, "advertisePrefixes": ["unicast"]}}}]),
    );
    let error = merge_all(&[l3]).expect_err("an L3VNI on a router with a session");
    assert!(error.to_string().contains("l3vni can only be configured on routers with no neighbors"), "{error}");

    let disabled = |name: &str, value: Value| routers(name, json!([{"asn": 65001, "evpn": {"advertiseVNIs": value}}]));
    let error = merge_all(&node_configs("layer2", "fabric", vec![disabled("off", json!("Disabled"))]))
        .expect_err("All and Disabled");
    assert!(matches!(error, Error::AdvertiseVnisMismatch { .. }), "{error}");
    merge_all(&[disabled("off", json!("Disabled")), disabled("unset", Value::Null)]).expect("unset is Disabled");
}

#[test]
fn bfd_profiles_of_one_name_must_agree() {
    let profile = |name: &str, interval: u32| {
        config(name, json!({}), json!({"bfdProfiles": [{"name": "fast", "receiveInterval": interval}]}))
    };
    merge_all(&[profile("a", 100), profile("b", 100)]).expect("the same profile twice");
    let error = merge_all(&[profile("a", 100), profile("b", 200)]).expect_err("two profiles named fast");
    assert!(matches!(error, Error::BfdProfileMismatch { .. }), "{error}");
    let twice = config("a", json!({}), json!({"bfdProfiles": [{"name": "fast"}, {"name": "fast"}]}));
    assert!(matches!(merge_all(&[twice]), Err(Error::Invalid { .. })));
}

#[test]
fn node_selectors() {
    let node = labels(&[("kubernetes.io/hostname", "worker-1"), ("rack", "r1")]);
    let with = |selector: Value| config("c", selector, json!({}));
    assert!(selects(&with(Value::Null), &node), "no selector selects every node");
    assert!(selects(&with(json!({})), &node), "the empty selector selects every node");
    assert!(selects(&with(json!({"matchLabels": {"rack": "r1"}})), &node));
    assert!(!selects(&with(json!({"matchLabels": {"rack": "r1", "zone": "a"}})), &node));
    let expression = |key: &str, operator: &str, values: &[&str]| {
        with(json!({"matchExpressions": [{"key": key, "operator": operator, "values": values}]}))
    };
    assert!(selects(&expression("rack", "In", &["r1", "r2"]), &node));
    assert!(!selects(&expression("rack", "In", &["r2"]), &node));
    assert!(!selects(&expression("rack", "NotIn", &["r1"]), &node));
    assert!(selects(&expression("zone", "NotIn", &["a"]), &node), "NotIn selects nodes without the label");
    assert!(selects(&expression("rack", "Exists", &[]), &node));
    assert!(!selects(&expression("zone", "Exists", &[]), &node));
    assert!(selects(&expression("zone", "DoesNotExist", &[]), &node));
    assert!(!selects(&expression("rack", "DoesNotExist", &[]), &node));
    // Selectors Kubernetes refuses select nothing.
    assert!(!selects(&expression("zone", "NotIn", &[]), &node));
    assert!(!selects(&expression("rack", "Exists", &["r1"]), &node));
    assert!(!selects(&expression("rack", "Equals", &["r1"]), &node));

    // worker-1 of the VTEP gets the VTEP's objects and its own, not worker-2's.
    let mut all = operator_objects("layer3");
    all.push(underlay());
    let names = |node| -> Vec<String> {
        for_node(&all, &node).iter().map(|c| c.metadata.name.clone().unwrap_or_default()).collect()
    };
    assert_eq!(names(worker_1("fabric")), ["evpn-fabric-l2-0", "evpn-fabric-node-worker-1", "underlay-worker-1"]);
    assert_eq!(
        names(labels(&[("kubernetes.io/hostname", "worker-1")])),
        ["evpn-fabric-node-worker-1", "underlay-worker-1"]
    );
}

/// FRR 8.4.4's vtysh parses a text as frr-reload.py has it parsed (`vtysh -m`, no daemon
/// involved): every line must be a command of the context it is in.
#[test]
fn frr_parses_every_text() {
    let vtysh = Path::new("/usr/bin/vtysh");
    if !vtysh.exists() {
        eprintln!("skipped: {} is not installed (Debian's frr package)", vtysh.display());
        return;
    }
    let mut texts = Vec::new();
    for (case, fabric) in [("layer2", "fabric"), ("layer3", "fabric"), ("layer2-irb", "fabric"), ("multi-vtep", "east")]
    {
        let configs = node_configs(case, fabric, vec![underlay()]);
        for options in [options(), lab_options()] {
            texts.push(render_all(&configs, &options).expect("a configuration"));
        }
    }
    let user = config(
        "underlay",
        json!({}),
        json!({"bfdProfiles": [{"name": "fast", "receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 5}],
               "routers": [{"asn": 65001, "id": "198.18.0.1", "prefixes": ["198.18.0.1/32", "fd00::1/128"], "neighbors": [
            {"address": "fd00::ff", "asn": 65000, "bfdProfile": "fast", "port": 1179, "holdTime": "9s",
             "keepaliveTime": "3s", "connectTime": "5s", "sourceaddress": "fd00::1", "localASN": 65100},
            {"address": "198.18.255.1", "asn": 65000, "ebgpMultiHop": true, "dualStackAddressFamily": true,
             "addressFamilies": ["unicast", "evpn"]}]}]}),
    );
    texts.push(render_all(&node_configs("layer2-irb", "fabric", vec![user]), &lab_options()).expect("a configuration"));
    for text in texts {
        let mut child = Command::new(vtysh)
            .args(["-m", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running vtysh");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing to vtysh");
        let out = child.wait_with_output().expect("vtysh's output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "vtysh refused ({}): {stderr}\n{text}", out.status);
    }
}
