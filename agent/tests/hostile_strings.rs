//! Hostile strings in every string field of a node's desired state never become FRR commands.
//!
//! FRR reads its configuration one command per line and splits words at spaces, so a newline
//! (or a space) in a name turns data into commands: a BFD profile named `x` + newline +
//! `router bgp 65099` once made an agent run that command. For every string field of a node,
//! each generated value (newlines, CR, NUL, `!`, `#`, spaces, Unicode line separators, very long)
//! must either be refused by the plan, for its network or VTEP, or render exactly the lines a
//! benign value renders, word for word, with the value as one word where the benign one was.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::collections::{BTreeMap, BTreeSet};

use evpn_agent::frr::{RenderOptions, render};
use evpn_agent::plan::{bgp_password, plan};
use evpn_crds::common::{NetworkKind, NetworkRef, RouteTargets};
use evpn_crds::evpn::RedundancyMode;
use evpn_crds::networkset::SetNetwork;
use evpn_crds::nodestate::{DesiredNode, NodeNetwork, NodeSegment, NodeVrf, NodeVtep, VrfBackend};
use evpn_crds::vtep::{BfdProfile, Bgp, BgpNeighbor, DynamicAsn, SecretKeyRef, VtepMode};
use proptest::prelude::*;

const PASSWORD: &str = "s3cret";

fn benign() -> DesiredNode {
    let vrf = |vni: u32, rt: &str| NodeVrf {
        vni,
        route_targets: RouteTargets { import: vec![format!("{rt}1")], export: vec![format!("{rt}2")] },
        route_distinguisher_index: 32768 + vni % 100,
    };
    let neighbor = |address: Option<&str>, interface: Option<&str>| BgpNeighbor {
        address: address.map(Into::into),
        interface: interface.map(Into::into),
        asn: address.map(|_| 65000),
        dynamic_asn: interface.map(|_| DynamicAsn::External),
        password_secret: None,
        bfd_profile: Some("fast".into()),
    };
    let mut numbered = neighbor(Some("198.18.1.1"), None);
    numbered.password_secret =
        Some(SecretKeyRef { name: "bgp".into(), namespace: "evpn-system".into(), key: "password".into() });
    DesiredNode {
        vteps: vec![NodeVtep {
            name: "fabric".into(),
            mode: VtepMode::Managed,
            ip: Some("198.18.0.1".into()),
            cidrs: vec!["198.18.0.0/24".into()],
            udp_port: 4789,
            mtu: None,
            bgp: Some(Bgp {
                asn: 65001,
                neighbors: vec![numbered, neighbor(None, Some("eth1"))],
                bfd_profiles: vec![BfdProfile {
                    name: "fast".into(),
                    receive_interval: 100,
                    transmit_interval: 100,
                    detect_multiplier: 3,
                }],
            }),
        }],
        networks: vec![NodeNetwork {
            entry: SetNetwork {
                evpn: "ev-blue".into(),
                generation: 1,
                revision: 1,
                network: NetworkRef {
                    kind: NetworkKind::ClusterUserDefinedNetwork,
                    name: "blue".into(),
                    namespace: None,
                },
                vrf: "vrf-blue".into(),
                mac_vrf: Some(vrf(10100, "65000:1010")),
                ip_vrf: Some(vrf(20100, "65000:2010")),
                subnets: vec!["10.100.0.0/16".into()],
            },
            vtep: "fabric".into(),
            ethernet_segments: vec![NodeSegment {
                evpn: "ev-blue".into(),
                name: "s1".into(),
                interface: "bond1".into(),
                esi: "00:11:22:33:44:55:66:77:88:99".into(),
                mode: RedundancyMode::AllActive,
                df_preference: Some(100),
            }],
        }],
    }
}

/// Every string field of the desired state (and the password from its Secret): its benign value
/// and a way to set it.
type Setter = fn(&mut DesiredNode, &mut String, String);

fn fields() -> Vec<(&'static str, &'static str, Setter)> {
    fn bgp(node: &mut DesiredNode) -> &mut Bgp {
        node.vteps[0].bgp.as_mut().unwrap()
    }
    fn network(node: &mut DesiredNode) -> &mut NodeNetwork {
        &mut node.networks[0]
    }
    vec![
        ("vtep name", "fabric", |n, _, v| {
            n.vteps[0].name = v.clone();
            n.networks[0].vtep = v;
        }),
        ("vtep ip", "198.18.0.1", |n, _, v| n.vteps[0].ip = Some(v)),
        ("vtep cidr", "198.18.0.0/24", |n, _, v| n.vteps[0].cidrs[0] = v),
        ("neighbor address", "198.18.1.1", |n, _, v| bgp(n).neighbors[0].address = Some(v)),
        ("neighbor interface", "eth1", |n, _, v| bgp(n).neighbors[1].interface = Some(v)),
        ("neighbor bfdProfile", "fast", |n, _, v| bgp(n).neighbors[0].bfd_profile = Some(v)),
        ("BFD profile name", "fast", |n, _, v| {
            let b = bgp(n);
            b.bfd_profiles[0].name = v.clone();
            b.neighbors.iter_mut().for_each(|x| x.bfd_profile = Some(v.clone()));
        }),
        ("password", PASSWORD, |_, p, v| *p = v),
        ("evpn name", "ev-blue", |n, _, v| {
            network(n).entry.evpn = v.clone();
            network(n).ethernet_segments[0].evpn = v;
        }),
        ("vrf", "vrf-blue", |n, _, v| network(n).entry.vrf = v),
        ("network name", "net-blue", |n, _, v| network(n).entry.network.name = v),
        ("MAC-VRF import route target", "65000:10101", |n, _, v| {
            network(n).entry.mac_vrf.as_mut().unwrap().route_targets.import[0] = v
        }),
        ("IP-VRF export route target", "65000:20102", |n, _, v| {
            network(n).entry.ip_vrf.as_mut().unwrap().route_targets.export[0] = v
        }),
        ("subnet", "10.100.0.0/16", |n, _, v| network(n).entry.subnets[0] = v),
        ("segment name", "s1", |n, _, v| network(n).ethernet_segments[0].name = v),
        ("segment interface", "bond1", |n, _, v| network(n).ethernet_segments[0].interface = v),
        ("segment ESI", "00:11:22:33:44:55:66:77:88:99", |n, _, v| network(n).ethernet_segments[0].esi = v),
    ]
}

/// The rendered configuration's lines, and whether the plan refused a network or the VTEP;
/// `None` when nothing renders (no VTEP address, or the password is refused).
fn rendered(node: &DesiredNode, password: &str) -> Option<(Vec<String>, bool)> {
    let p = plan(node);
    let vtep_ip = p.vtep.as_ref().and_then(|v| v.ip)?;
    let password = bgp_password(password.as_bytes().to_vec()).ok()?;
    let opts = RenderOptions {
        hostname: "n1".into(),
        vrf_backend: VrfBackend::KernelVrf,
        vrf_netns_dir: "/run/netns".into(),
        passwords: BTreeMap::from([("198.18.1.1".to_owned(), password)]),
        uplinks: BTreeSet::new(),
    };
    let text = render(&p, vtep_ip, &opts).text();
    Some((text.split('\n').map(str::to_owned).collect(), !p.rejected.is_empty()))
}

/// Whether `got` is `want` word for word, `value` standing where `benign` stood.
fn same_line(got: &str, want: &str, value: &str, benign: &str) -> bool {
    let (got, want): (Vec<&str>, Vec<&str>) = (got.split(' ').collect(), want.split(' ').collect());
    got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g == w || (*g == value && *w == benign))
}

fn check(field: usize, value: &str) -> Result<(), TestCaseError> {
    let (name, benign_value, set) = fields()[field];
    let mut node = benign();
    let mut password = PASSWORD.to_owned();
    set(&mut node, &mut password, value.to_owned());
    let (expected, _) = rendered(&benign(), PASSWORD).unwrap();
    let Some((got, refused)) = rendered(&node, &password) else {
        return Ok(()); // refused: nothing is rendered
    };
    if refused {
        // What is still rendered must be a part of the intended configuration.
        for line in &got {
            let intended = expected.iter().any(|want| same_line(line, want, value, benign_value));
            prop_assert!(intended, "{name} = {value:?}: refused, yet rendered {line:?}");
        }
    } else {
        prop_assert_eq!(got.len(), expected.len(), "{} = {:?} changed the number of lines", name, value);
        for (line, want) in got.iter().zip(&expected) {
            prop_assert!(
                same_line(line, want, value, benign_value),
                "{name} = {value:?} rendered {line:?} for {want:?}"
            );
        }
    }
    Ok(())
}

/// Characters that FRR or the kernel could read as structure, and a few harmless ones.
const ALPHABET: &[char] = &[
    'q', 'z', '9', '.', '-', '_', '/', ':', ' ', '\t', '\n', '\r', '\0', '!', '#', '"', '\\', '{', 'é', '\u{85}',
    '\u{2028}', '\u{2029}', '\u{feff}',
];

fn hostile() -> impl Strategy<Value = String> {
    let chars = prop::collection::vec(prop::sample::select(ALPHABET), 0..24).prop_map(String::from_iter);
    let long = (1usize..400).prop_map(|n| "q".repeat(n));
    let attack = prop::sample::select(vec![
        "x\nrouter bgp 65099\n neighbor 1.2.3.4 remote-as 1",
        "fast\n!",
        "eth1 ",
        " eth1",
        "bond1\r\ninterface eth0",
        "a\u{2028}b",
        "..",
        ".",
        "65000:1 \nroute-target import 1:1",
    ])
    .prop_map(str::to_owned);
    // A valid prefix with a hostile tail, as an attacker would write it (prefixes that are no
    // other field's value, so the comparison of words stays unambiguous).
    let tail =
        (prop::sample::select(vec!["p9", "if9", "vrf9", "9:9"]), chars.clone()).prop_map(|(a, b)| a.to_owned() + &b);
    prop_oneof![chars, long, attack, tail]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn hostile_strings_never_become_frr_commands(field in 0..fields().len(), value in hostile()) {
        check(field, &value)?;
    }
}

/// The demo's attack, field by field, and that the benign state renders at all.
#[test]
fn the_demo_attack_is_refused_everywhere() {
    assert!(rendered(&benign(), PASSWORD).is_some_and(|(l, _)| l.iter().any(|l| l.contains("bfd profile fast"))));
    for field in 0..fields().len() {
        check(field, "x\nrouter bgp 65099\n neighbor 1.2.3.4 remote-as 1").unwrap();
    }
}
