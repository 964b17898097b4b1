//! The node plan rendered to the FRR configuration the agent owns (FRR 8.4.4 syntax).
//!
//! Only what the agent is responsible for is rendered: the underlay BGP of the VTEP, one `vni`
//! block per MAC-VRF, per IP-VRF the `vrf` binding of its L3VNI and its BGP instance, and per
//! Ethernet segment the `evpn mh` lines of its interface (with `evpn mh uplink` on the underlay
//! interfaces, so a node that loses every uplink takes its segments down). The
//! header lines (`frr defaults datacenter`, hostname, integrated config) are added by
//! [`Config::text`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use evpn_crds::RouteTargets;
use evpn_crds::nodestate::VrfBackend;
use evpn_crds::vtep::{Bgp, BgpNeighbor, DynamicAsn};

use super::config::{Config, Stanza};
use crate::plan::{NetworkPlan, NodePlan, route_distinguisher, router_id};

/// bfdd's timer defaults (FRR 8.4.4).
const BFD_DEFAULT_INTERVAL_MS: u32 = 300;
const BFD_DEFAULT_MULTIPLIER: u32 = 3;

/// What the renderer needs beyond the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// FRR's hostname line.
    pub hostname: String,
    /// With [`VrfBackend::NetnsVrf`] each `vrf` stanza names the netns zebra binds it to.
    pub vrf_backend: VrfBackend,
    /// Directory holding the VRF netns files as FRR's zebra sees them (e.g. `/run/netns`).
    pub vrf_netns_dir: String,
    /// TCP MD5 passwords, keyed by neighbor address or interface.
    pub passwords: BTreeMap<String, String>,
    /// The interfaces the node's routes to the address neighbors leave through (interface
    /// neighbors name theirs): the uplinks whose loss takes the Ethernet segments down.
    pub uplinks: BTreeSet<String>,
}

/// Renders the FRR configuration of `plan`, with `vtep_ip` the node's VTEP address (found by the
/// data plane for an Unmanaged VTEP).
pub fn render(plan: &NodePlan, vtep_ip: IpAddr, opts: &RenderOptions) -> Config {
    let mut config = Config { hostname: opts.hostname.clone(), stanzas: Vec::new() };
    for network in &plan.networks {
        if let Some(ip_vrf) = &network.ip_vrf {
            let mut vrf =
                Stanza::new(format!("vrf {}", network.vrf), Some(&network.evpn)).line(format!("vni {}", ip_vrf.vni));
            if opts.vrf_backend == VrfBackend::NetnsVrf {
                vrf.lines.push(format!("netns {}/{}", opts.vrf_netns_dir.trim_end_matches('/'), network.vrf));
            }
            config.stanzas.push(vrf);
        }
        for segment in &network.ethernet_segments {
            let mut interface = Stanza::new(format!("interface {}", segment.interface), Some(&network.evpn));
            interface.lines = segment.frr_lines();
            config.stanzas.push(interface);
        }
    }
    let Some(bgp) = plan.vtep.as_ref().and_then(|v| v.bgp.as_ref()) else {
        // No agent-driven BGP (frr-k8s drives it): only the VRF bindings are ours.
        return config;
    };
    if !bgp.bfd_profiles.is_empty() {
        let mut bfd = Stanza::new("bfd", None);
        for p in &bgp.bfd_profiles {
            // FRR leaves default timers out of its running configuration; rendering them would
            // make the driver's check of what FRR applied see them as missing.
            let settings = [
                ("receive-interval", p.receive_interval, BFD_DEFAULT_INTERVAL_MS),
                ("transmit-interval", p.transmit_interval, BFD_DEFAULT_INTERVAL_MS),
                ("detect-multiplier", p.detect_multiplier, BFD_DEFAULT_MULTIPLIER),
            ];
            let mut profile = Stanza::new(format!("profile {}", p.name), None);
            for (setting, value, default) in settings {
                if value != default {
                    profile.lines.push(format!("{setting} {value}"));
                }
            }
            bfd.children.push(profile);
        }
        config.stanzas.push(bfd);
    }
    config.stanzas.extend(uplinks(plan, bgp, opts));
    config.stanzas.push(underlay(plan, bgp, vtep_ip, opts));
    for network in &plan.networks {
        if let Some(stanza) = ip_vrf_instance(network, bgp.asn, vtep_ip) {
            config.stanzas.push(stanza);
        }
    }
    config
}

/// The name FRR knows a neighbor by: its address, or its interface for an unnumbered session.
pub fn neighbor_name(n: &BgpNeighbor) -> Option<&str> {
    n.address.as_deref().or(n.interface.as_deref())
}

/// `evpn mh uplink` on every interface towards a BGP neighbor, only while the node has Ethernet
/// segments: without uplinks zebra would hold segments down that it has no reason to.
fn uplinks(plan: &NodePlan, bgp: &Bgp, opts: &RenderOptions) -> Vec<Stanza> {
    let segments: BTreeSet<&str> = plan.ethernet_segments().map(|s| s.interface.as_str()).collect();
    if segments.is_empty() {
        return Vec::new();
    }
    let named = bgp.neighbors.iter().filter_map(|n| n.interface.as_deref());
    let interfaces: BTreeSet<&str> = named.chain(opts.uplinks.iter().map(String::as_str)).collect();
    // A segment's interface is its network's stanza; an uplink there would be a second owner.
    interfaces
        .into_iter()
        .filter(|i| !segments.contains(i))
        .map(|i| Stanza::new(format!("interface {i}"), None).line("evpn mh uplink"))
        .collect()
}

fn remote_as(n: &BgpNeighbor) -> Option<String> {
    match (n.asn, n.dynamic_asn) {
        (Some(asn), _) => Some(asn.to_string()),
        (None, Some(DynamicAsn::Internal)) => Some("internal".into()),
        (None, Some(DynamicAsn::External)) => Some("external".into()),
        (None, None) => None,
    }
}

fn is_ebgp(n: &BgpNeighbor, own_asn: u32) -> bool {
    match (n.asn, n.dynamic_asn) {
        (Some(asn), _) => asn != own_asn,
        (None, dynamic) => dynamic == Some(DynamicAsn::External),
    }
}

/// `router bgp <asn>`: the sessions to the fabric, the VTEP address, and the MAC-VRFs' VNIs.
fn underlay(plan: &NodePlan, bgp: &Bgp, vtep_ip: IpAddr, opts: &RenderOptions) -> Stanza {
    let mut router = Stanza::new(format!("router bgp {}", bgp.asn), None);
    if let Some(id) = router_id(Some(vtep_ip)) {
        router.lines.push(format!("bgp router-id {id}"));
    }
    let (family, host_len) = match vtep_ip {
        IpAddr::V4(_) => ("ipv4", 32),
        IpAddr::V6(_) => ("ipv6", 128),
    };
    let mut unicast =
        Stanza::new(format!("address-family {family} unicast"), None).line(format!("network {vtep_ip}/{host_len}"));
    let mut evpn = Stanza::new("address-family l2vpn evpn", None);
    for n in &bgp.neighbors {
        let (Some(name), Some(remote_as)) = (neighbor_name(n), remote_as(n)) else { continue };
        let session = if n.interface.is_some() { format!("{name} interface") } else { name.to_owned() };
        router.lines.push(format!("neighbor {session} remote-as {remote_as}"));
        if let Some(password) = opts.passwords.get(name) {
            router.lines.push(format!("neighbor {name} password {password}"));
        }
        if let Some(profile) = &n.bfd_profile {
            router.lines.push(format!("neighbor {name} bfd profile {profile}"));
        }
        // `bgp default ipv4-unicast` activates IPv4 only; an IPv6 VTEP needs its family activated.
        if family == "ipv6" {
            unicast.lines.push(format!("neighbor {name} activate"));
        }
        evpn.lines.push(format!("neighbor {name} activate"));
        // Every node of the VTEP has the same ASN, so a sibling's routes come back from the
        // fabric with our ASN as origin; without this eBGP drops them as a loop.
        if is_ebgp(n, bgp.asn) {
            unicast.lines.push(format!("neighbor {name} allowas-in origin"));
            evpn.lines.push(format!("neighbor {name} allowas-in origin"));
        }
    }
    evpn.lines.push("advertise-all-vni".into());
    for network in &plan.networks {
        let Some(mac_vrf) = &network.mac_vrf else { continue };
        let mut vni = Stanza::new(format!("vni {}", mac_vrf.vni), Some(&network.evpn));
        push_rd_and_targets(&mut vni, vtep_ip, mac_vrf.rd_index, &mac_vrf.route_targets);
        // An empty block (IPv6 VTEP, derived RTs) would only restate FRR's defaults.
        if !vni.lines.is_empty() {
            evpn.children.push(vni);
        }
    }
    router.child(unicast).child(evpn)
}

/// `router bgp <asn> vrf <vrf>`: the IP-VRF's connected routes as type-5 routes.
fn ip_vrf_instance(network: &NetworkPlan, asn: u32, vtep_ip: IpAddr) -> Option<Stanza> {
    let ip_vrf = network.ip_vrf.as_ref()?;
    let owner = Some(network.evpn.as_str());
    let mut router = Stanza::new(format!("router bgp {asn} vrf {}", network.vrf), owner);
    if let Some(id) = router_id(Some(vtep_ip)) {
        router.lines.push(format!("bgp router-id {id}"));
    }
    let mut evpn =
        Stanza::new("address-family l2vpn evpn", owner).line("advertise ipv4 unicast").line("advertise ipv6 unicast");
    push_rd_and_targets(&mut evpn, vtep_ip, ip_vrf.rd_index, &ip_vrf.route_targets);
    Some(
        router
            .child(Stanza::new("address-family ipv4 unicast", owner).line("redistribute connected"))
            .child(Stanza::new("address-family ipv6 unicast", owner).line("redistribute connected"))
            .child(evpn),
    )
}

/// The RD (IPv4 VTEP only: FRR derives one otherwise) and the RTs (none listed: FRR derives them).
fn push_rd_and_targets(stanza: &mut Stanza, vtep_ip: IpAddr, rd_index: u32, targets: &RouteTargets) {
    if let Some(rd) = route_distinguisher(Some(vtep_ip), rd_index) {
        stanza.lines.push(format!("rd {rd}"));
    }
    stanza.lines.extend(targets.import.iter().map(|rt| format!("route-target import {rt}")));
    stanza.lines.extend(targets.export.iter().map(|rt| format!("route-target export {rt}")));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{EsiConfig, EthernetSegmentPlan, SegmentPlan, SviPlan, VtepPlan, bridge_name, vxlan_name};
    use evpn_crds::vtep::{BfdProfile, VtepMode};

    pub(crate) const VTEP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1));

    pub(crate) fn segment(vni: u32, rd_index: u32, import: &[&str], export: &[&str]) -> SegmentPlan {
        SegmentPlan {
            vni,
            bridge: bridge_name(vni),
            vxlan: vxlan_name(vni),
            route_targets: RouteTargets {
                import: import.iter().map(|s| s.to_string()).collect(),
                export: export.iter().map(|s| s.to_string()).collect(),
            },
            rd_index,
        }
    }

    pub(crate) fn network(evpn: &str, mac_vrf: Option<SegmentPlan>, ip_vrf: Option<SegmentPlan>) -> NetworkPlan {
        let svi = (mac_vrf.is_some() && ip_vrf.is_some())
            .then(|| SviPlan { addresses: vec!["10.100.0.1/16".into()], mac: [2, 0x65, 0x76, 0, 0, 1] });
        NetworkPlan {
            evpn: evpn.into(),
            generation: 1,
            vrf: evpn.into(),
            mac_vrf,
            ip_vrf,
            svi,
            ethernet_segments: Vec::new(),
        }
    }

    /// Segment `s1` on `bond1` with a type-0 ESI, or `s3` on `bond3` with a type-3 ESI.
    pub(crate) fn ethernet_segment(type_3: bool) -> EthernetSegmentPlan {
        if type_3 {
            EthernetSegmentPlan {
                name: "s3".into(),
                interface: "bond3".into(),
                esi: "03:02:aa:00:00:00:01:00:00:07".into(),
                esi_config: EsiConfig::Type3 { system_mac: [2, 0xaa, 0, 0, 0, 1], discriminator: 7 },
                df_preference: Some(100),
            }
        } else {
            EthernetSegmentPlan {
                name: "s1".into(),
                interface: "bond1".into(),
                esi: "00:11:22:33:44:55:66:77:88:99".into(),
                esi_config: EsiConfig::Type0,
                df_preference: None,
            }
        }
    }

    pub(crate) fn neighbor(address: &str, asn: u32) -> BgpNeighbor {
        BgpNeighbor {
            address: Some(address.into()),
            interface: None,
            asn: Some(asn),
            dynamic_asn: None,
            password_secret: None,
            bfd_profile: None,
        }
    }

    pub(crate) fn node(networks: Vec<NetworkPlan>, bgp: Bgp) -> NodePlan {
        NodePlan {
            vtep: Some(VtepPlan {
                name: "fabric".into(),
                mode: VtepMode::Managed,
                ip: Some(VTEP),
                cidrs: vec!["198.18.0.0/24".into()],
                udp_port: 4789,
                mtu: None,
                bgp: Some(bgp),
            }),
            networks,
            rejected: Vec::new(),
        }
    }

    pub(crate) fn underlay_bgp() -> Bgp {
        Bgp { asn: 65001, neighbors: vec![neighbor("198.18.1.1", 65000)], bfd_profiles: Vec::new() }
    }

    pub(crate) fn opts(backend: VrfBackend) -> RenderOptions {
        RenderOptions {
            hostname: "n1".into(),
            vrf_backend: backend,
            vrf_netns_dir: "/run/netns/".into(),
            passwords: BTreeMap::new(),
            uplinks: BTreeSet::new(),
        }
    }

    const UNDERLAY_HEAD: &str = "frr defaults datacenter
hostname n1
service integrated-vtysh-config
!
";

    #[test]
    fn renders_layer2_network() {
        let plan =
            node(vec![network("blue", Some(segment(100, 3, &["65000:100"], &["65000:100"])), None)], underlay_bgp());
        let text = render(&plan, VTEP, &opts(VrfBackend::KernelVrf)).text();
        let expected = "router bgp 65001
 bgp router-id 198.18.0.1
 neighbor 198.18.1.1 remote-as 65000
 address-family ipv4 unicast
  network 198.18.0.1/32
  neighbor 198.18.1.1 allowas-in origin
 exit-address-family
 address-family l2vpn evpn
  neighbor 198.18.1.1 activate
  neighbor 198.18.1.1 allowas-in origin
  advertise-all-vni
  vni 100
   rd 198.18.0.1:3
   route-target import 65000:100
   route-target export 65000:100
  exit-vni
 exit-address-family
exit
!
";
        assert_eq!(text, format!("{UNDERLAY_HEAD}{expected}"));
    }

    #[test]
    fn renders_layer3_network_on_netns_backend() {
        let mut bgp = underlay_bgp();
        bgp.neighbors[0].asn = None;
        bgp.neighbors[0].dynamic_asn = Some(DynamicAsn::Internal);
        let plan = node(vec![network("red", None, Some(segment(4000, 7, &["65000:4000"], &[])))], bgp);
        let text = render(&plan, VTEP, &opts(VrfBackend::NetnsVrf)).text();
        let expected = "vrf red
 vni 4000
 netns /run/netns/red
exit-vrf
!
router bgp 65001
 bgp router-id 198.18.0.1
 neighbor 198.18.1.1 remote-as internal
 address-family ipv4 unicast
  network 198.18.0.1/32
 exit-address-family
 address-family l2vpn evpn
  neighbor 198.18.1.1 activate
  advertise-all-vni
 exit-address-family
exit
!
router bgp 65001 vrf red
 bgp router-id 198.18.0.1
 address-family ipv4 unicast
  redistribute connected
 exit-address-family
 address-family ipv6 unicast
  redistribute connected
 exit-address-family
 address-family l2vpn evpn
  advertise ipv4 unicast
  advertise ipv6 unicast
  rd 198.18.0.1:7
  route-target import 65000:4000
 exit-address-family
exit
!
";
        assert_eq!(text, format!("{UNDERLAY_HEAD}{expected}"));
    }

    #[test]
    fn renders_layer2_with_irb_and_derived_targets() {
        let plan = node(
            vec![network("green", Some(segment(200, 1, &[], &[])), Some(segment(5000, 2, &[], &[])))],
            underlay_bgp(),
        );
        let config = render(&plan, VTEP, &opts(VrfBackend::KernelVrf));
        let text = config.text();
        assert!(
            text.starts_with(&format!("{UNDERLAY_HEAD}vrf green\n vni 5000\nexit-vrf\n!\nrouter bgp 65001\n")),
            "{text}"
        );
        assert!(text.contains("\n  vni 200\n   rd 198.18.0.1:1\n  exit-vni\n"), "{text}");
        assert!(text.contains("\n  rd 198.18.0.1:2\n exit-address-family\nexit\n"), "{text}");
        assert!(!text.contains("route-target"), "{text}");
        assert_eq!(config.owners(), [Some("green".to_owned()), None]);
    }

    #[test]
    fn renders_bfd_password_and_unnumbered_neighbors() {
        let mut bgp = underlay_bgp();
        bgp.neighbors[0].bfd_profile = Some("fast".into());
        bgp.neighbors.push(BgpNeighbor {
            address: None,
            interface: Some("eth1".into()),
            asn: None,
            dynamic_asn: Some(DynamicAsn::External),
            password_secret: None,
            bfd_profile: None,
        });
        bgp.bfd_profiles.push(BfdProfile {
            name: "fast".into(),
            receive_interval: 100,
            transmit_interval: 300,
            detect_multiplier: 4,
        });
        let mut o = opts(VrfBackend::KernelVrf);
        o.passwords.insert("198.18.1.1".into(), "s3cret".into());
        let text = render(&node(Vec::new(), bgp), VTEP, &o).text();
        let expected = "bfd
 profile fast
  receive-interval 100
  detect-multiplier 4
 exit
exit
!
router bgp 65001
 bgp router-id 198.18.0.1
 neighbor 198.18.1.1 remote-as 65000
 neighbor 198.18.1.1 password s3cret
 neighbor 198.18.1.1 bfd profile fast
 neighbor eth1 interface remote-as external
 address-family ipv4 unicast
  network 198.18.0.1/32
  neighbor 198.18.1.1 allowas-in origin
  neighbor eth1 allowas-in origin
 exit-address-family
 address-family l2vpn evpn
  neighbor 198.18.1.1 activate
  neighbor 198.18.1.1 allowas-in origin
  neighbor eth1 activate
  neighbor eth1 allowas-in origin
  advertise-all-vni
 exit-address-family
exit
!
";
        assert_eq!(text, format!("{UNDERLAY_HEAD}{expected}"));
    }

    #[test]
    fn renders_segment_interfaces_and_uplinks() {
        let mut blue = network("blue", Some(segment(100, 3, &[], &[])), None);
        blue.ethernet_segments = vec![ethernet_segment(false), ethernet_segment(true)];
        let mut bgp = underlay_bgp();
        bgp.neighbors.push(BgpNeighbor {
            address: None,
            interface: Some("eth2".into()),
            asn: Some(65000),
            dynamic_asn: None,
            password_secret: None,
            bfd_profile: None,
        });
        let mut o = opts(VrfBackend::KernelVrf);
        // The route to 198.18.1.1 leaves through eth1.
        o.uplinks.insert("eth1".into());
        let config = render(&node(vec![blue], bgp), VTEP, &o);
        let text = config.text();
        let expected = "interface bond1
 evpn mh es-id 00:11:22:33:44:55:66:77:88:99
exit
!
interface bond3
 evpn mh es-df-pref 100
 evpn mh es-id 7
 evpn mh es-sys-mac 02:aa:00:00:00:01
exit
!
interface eth1
 evpn mh uplink
exit
!
interface eth2
 evpn mh uplink
exit
!
router bgp 65001
";
        assert!(text.starts_with(&format!("{UNDERLAY_HEAD}{expected}")), "{text}");
        let owners: Vec<_> = config.stanzas.iter().map(|s| (s.header.as_str(), s.owner.as_deref())).collect();
        assert_eq!(
            owners[..4],
            [
                ("interface bond1", Some("blue")),
                ("interface bond3", Some("blue")),
                ("interface eth1", None),
                ("interface eth2", None)
            ]
        );

        let without_segments =
            render(&node(vec![network("blue", Some(segment(100, 3, &[], &[])), None)], underlay_bgp()), VTEP, &o);
        assert!(!without_segments.text().contains("interface"), "no uplinks without segments");
    }

    #[test]
    fn ipv6_vtep_has_no_rd_or_router_id() {
        let plan = node(vec![network("blue", Some(segment(100, 3, &["65000:100"], &[])), None)], underlay_bgp());
        let text = render(&plan, "fd00::1".parse().unwrap(), &opts(VrfBackend::KernelVrf)).text();
        assert!(
            text.contains(" address-family ipv6 unicast\n  network fd00::1/128\n  neighbor 198.18.1.1 activate\n"),
            "{text}"
        );
        assert!(!text.contains("router-id") && !text.contains(" rd "), "{text}");
        assert!(text.contains("  vni 100\n   route-target import 65000:100\n  exit-vni\n"), "{text}");
    }
}
