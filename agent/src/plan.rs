//! What this node must look like, derived from its `EVPNNodeState` spec alone.
//!
//! The plan is pure data: device names, VNIs, route targets and distinguishers, resolved once
//! here so the data plane and the FRR renderer agree on every name. A network whose spec this
//! agent cannot realise (its VTEP is missing, it names a second VTEP) becomes a [`PlanError`]
//! for that network only; the others are planned as usual.
//!
//! Every string that reaches FRR's configuration or a device name is checked here with the
//! webhook's own functions ([`evpn_crds::validation`]), so an object written past the webhook
//! (or before the rules existed) fails its network or VTEP with a reason, and never becomes an
//! FRR command: FRR reads one command per line and splits words at spaces.

use std::net::{IpAddr, Ipv4Addr};

use evpn_crds::common::RouteTargets;
use evpn_crds::evpn::RedundancyMode;
use evpn_crds::nodestate::{DesiredNode, NodeNetwork, NodeSegment, NodeVrf, NodeVtep};
use evpn_crds::validation::{
    check_frr_name, check_interface_name, check_password, colon_hex, esi_bytes, parse_cidr, parse_route_target, quote,
};
use evpn_crds::vtep::{Bgp, VtepMode};

/// Prefix of the interface alias that marks a device as created by this agent. The data plane
/// removes only devices carrying it, so it never touches what OVN-Kubernetes or an admin made.
pub const OWNER_ALIAS_PREFIX: &str = "evpn-agent:";

/// Everything the node must realise.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePlan {
    /// The VTEP every planned network uses; `None` when the spec lists no VTEP.
    pub vtep: Option<VtepPlan>,
    /// Networks that can be realised, in spec order.
    pub networks: Vec<NetworkPlan>,
    /// Networks that cannot, with the reason; they are reported `Failed` and touch nothing.
    pub rejected: Vec<(String, PlanError)>,
}

impl NodePlan {
    /// The Ethernet segments of every planned network.
    pub fn ethernet_segments(&self) -> impl Iterator<Item = &EthernetSegmentPlan> {
        self.networks.iter().flat_map(|n| &n.ethernet_segments)
    }
}

/// The node's tunnel endpoint and underlay BGP.
#[derive(Clone, Debug, PartialEq)]
pub struct VtepPlan {
    pub name: String,
    pub mode: VtepMode,
    /// The address to put on the VTEP device (Managed) or to look for (Unmanaged: `None` until
    /// discovered by the data plane inside `cidrs`).
    pub ip: Option<IpAddr>,
    pub cidrs: Vec<String>,
    pub udp_port: u16,
    pub mtu: Option<u32>,
    pub bgp: Option<Bgp>,
}

/// One EVPN network on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    /// Name of the EVPN object; also the owner mark on its devices.
    pub evpn: String,
    pub generation: i64,
    /// The network's VRF as OVN-Kubernetes names it (a kernel VRF device, or a netns-VRF).
    pub vrf: String,
    pub mac_vrf: Option<SegmentPlan>,
    pub ip_vrf: Option<SegmentPlan>,
    /// With symmetric IRB: the anycast gateway the MAC-VRF's bridge carries as the SVI.
    pub svi: Option<SviPlan>,
    /// The Ethernet segments of this node: ports of the MAC-VRF's bridge, announced by FRR.
    pub ethernet_segments: Vec<EthernetSegmentPlan>,
}

/// One Ethernet segment on this node: an interface the agent does not own, made a port of the
/// network's MAC-VRF bridge and given its ESI in FRR's zebra.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthernetSegmentPlan {
    /// Name of the segment in the EVPN.
    pub name: String,
    pub interface: String,
    /// The ESI as FRR prints it: ten lowercase hex bytes.
    pub esi: String,
    pub esi_config: EsiConfig,
    pub df_preference: Option<u32>,
}

/// How FRR 8.4.4 is told an ESI: zebra takes a type-0 ESI whole, but builds a type-3 one itself
/// from a system MAC and a local discriminator, and takes no other type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EsiConfig {
    /// A type-0 (operator-chosen) ESI, `00:..`.
    Type0,
    /// A type-3 ESI `03:<system MAC>:<3-byte discriminator>`.
    Type3 { system_mac: [u8; 6], discriminator: u32 },
}

impl EthernetSegmentPlan {
    /// The `evpn mh` lines of the segment's `interface` stanza, in the order FRR writes them.
    pub fn frr_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.df_preference.map(|p| format!("evpn mh es-df-pref {p}")).into_iter().collect();
        match &self.esi_config {
            EsiConfig::Type0 => lines.push(format!("evpn mh es-id {}", self.esi)),
            EsiConfig::Type3 { system_mac, discriminator } => {
                lines.push(format!("evpn mh es-id {discriminator}"));
                lines.push(format!("evpn mh es-sys-mac {}", colon_hex(system_mac)));
            }
        }
        lines
    }
}

/// The routed interface of a Layer2 network: the same gateway address and MAC on every node,
/// so a workload keeps its gateway when it moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SviPlan {
    /// Gateway addresses with their prefix length, e.g. `10.100.0.1/16`.
    pub addresses: Vec<String>,
    /// The anycast gateway MAC, derived from the IP-VNI so every node agrees on it.
    pub mac: [u8; 6],
}

/// A bridge + VXLAN pair carrying one VNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPlan {
    pub vni: u32,
    pub bridge: String,
    pub vxlan: String,
    pub route_targets: RouteTargets,
    pub rd_index: u32,
}

impl NetworkPlan {
    /// Whether the MAC-VRF's bridge lives in the VRF (symmetric IRB: the bridge is the SVI that
    /// routes between the Layer2 segment and the IP-VRF).
    pub fn bridge_in_vrf(&self) -> bool {
        self.mac_vrf.is_some() && self.ip_vrf.is_some()
    }

    /// The owner mark put on every device of this network.
    pub fn owner_alias(&self) -> String {
        format!("{OWNER_ALIAS_PREFIX}{}", self.evpn)
    }
}

/// Why a network cannot be realised on this node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the network uses VTEP {0:?}, which this node's spec does not list")]
    VtepNotFound(String),
    #[error(
        "the network uses VTEP {used:?} but this node already carries VTEP {first:?}; one VTEP per node is supported"
    )]
    SecondVtep { used: String, first: String },
    #[error("VTEP {vtep:?} has no usable address: {reason}")]
    VtepAddress { vtep: String, reason: String },
    #[error("VNI {vni} is used twice on this node (EVPN {other:?} has it too)")]
    DuplicateVni { vni: u32, other: String },
    #[error("subnet {subnet:?} of the network is not a valid CIDR")]
    InvalidSubnet { subnet: String },
    #[error("Ethernet segment {segment:?} has ESI {esi:?}, which FRR cannot be given: {detail}")]
    InvalidEsi { segment: String, esi: String, detail: String },
    #[error("Ethernet segment {segment:?}: {detail}")]
    InvalidSegmentInterface { segment: String, detail: String },
    #[error("{field}: {detail}")]
    InvalidValue { field: String, detail: String },
    #[error("Ethernet segment {segment:?} needs a MAC-VRF: its interface becomes a port of the MAC-VRF's bridge")]
    SegmentWithoutMacVrf { segment: String },
    #[error(
        "Ethernet segment {segment:?} is single-active, which FRR 8.4.4 does not support: it runs every segment all-active"
    )]
    SingleActiveUnsupported { segment: String },
    #[error(
        "Ethernet segment {segment:?} needs FRR driven by the agent: frr-k8s' FRRConfiguration has no Ethernet segments"
    )]
    SegmentWithFrrK8s { segment: String },
    #[error("interface {interface:?} of Ethernet segment {segment:?} is already in segment {other:?}")]
    SegmentInterfaceInUse { interface: String, segment: String, other: String },
}

impl PlanError {
    /// Machine-readable reason for the node state's status.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::VtepNotFound(_) => "VtepNotFound",
            PlanError::SecondVtep { .. } => "UnsupportedSecondVtep",
            PlanError::VtepAddress { .. } => "VtepAddressInvalid",
            PlanError::DuplicateVni { .. } => "DuplicateVni",
            PlanError::InvalidSubnet { .. } => "InvalidSubnet",
            PlanError::InvalidEsi { .. } => "EsiInvalid",
            PlanError::InvalidSegmentInterface { .. } => "SegmentInterfaceInvalid",
            PlanError::InvalidValue { .. } => "InvalidValue",
            PlanError::SegmentWithoutMacVrf { .. } => "SegmentWithoutMacVrf",
            PlanError::SingleActiveUnsupported { .. } => "SingleActiveUnsupported",
            PlanError::SegmentInterfaceInUse { .. } => "SegmentInterfaceInUse",
            PlanError::SegmentWithFrrK8s { .. } => "SegmentWithFrrK8s",
        }
    }
}

/// Name of the bridge that carries `vni`.
pub fn bridge_name(vni: u32) -> String {
    format!("evb{vni}")
}

/// Name of the VXLAN device that carries `vni`.
pub fn vxlan_name(vni: u32) -> String {
    format!("evx{vni}")
}

/// The route distinguisher of a VRF on this node: `<VTEP IP>:<index>` (an IPv4 VTEP) or, for an
/// IPv6 VTEP, FRR's automatic RD (`None`), since an RD cannot hold an IPv6 address.
pub fn route_distinguisher(vtep_ip: Option<IpAddr>, index: u32) -> Option<String> {
    match vtep_ip? {
        IpAddr::V4(ip) => Some(format!("{ip}:{index}")),
        IpAddr::V6(_) => None,
    }
}

/// The BGP router ID: the IPv4 VTEP address, which is unique per node and stable.
pub fn router_id(vtep_ip: Option<IpAddr>) -> Option<Ipv4Addr> {
    match vtep_ip? {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// Builds the plan of a node from its spec.
pub fn plan(spec: &DesiredNode) -> NodePlan {
    let mut rejected = Vec::new();
    let vtep = spec.vteps.first().map(vtep_plan);
    let vtep = match vtep {
        Some(Err(e)) => {
            // Without a usable VTEP no network can be built; each says why.
            for n in &spec.networks {
                rejected.push((n.entry.evpn.clone(), e.clone()));
            }
            return NodePlan { vtep: None, networks: Vec::new(), rejected };
        }
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let mut networks: Vec<NetworkPlan> = Vec::new();
    for n in &spec.networks {
        match network_plan(n, vtep.as_ref(), spec, &networks) {
            Ok(p) => networks.push(p),
            Err(e) => rejected.push((n.entry.evpn.clone(), e)),
        }
    }
    NodePlan { vtep, networks, rejected }
}

fn vtep_plan(v: &NodeVtep) -> Result<VtepPlan, PlanError> {
    let ip = match (&v.mode, &v.ip) {
        (VtepMode::Managed, Some(ip)) => Some(ip.parse().map_err(|e| PlanError::VtepAddress {
            vtep: v.name.clone(),
            reason: format!("{ip:?} is not an IP address: {e}"),
        })?),
        (VtepMode::Managed, None) => {
            return Err(PlanError::VtepAddress {
                vtep: v.name.clone(),
                reason: "Managed mode but no address allocated to this node yet".into(),
            });
        }
        (VtepMode::Unmanaged, _) => None,
    };
    let invalid = |field: String, detail: String| PlanError::InvalidValue { field, detail };
    for (i, cidr) in v.cidrs.iter().enumerate() {
        parse_cidr(cidr).map_err(|e| invalid(format!("VTEP {:?} cidrs[{i}]", v.name), e))?;
    }
    if let Some(bgp) = &v.bgp {
        for (i, profile) in bgp.bfd_profiles.iter().enumerate() {
            check_frr_name(&profile.name).map_err(|e| invalid(format!("bgp.bfdProfiles[{i}].name"), e))?;
        }
        for (i, n) in bgp.neighbors.iter().enumerate() {
            let field = |name: &str| format!("bgp.neighbors[{i}].{name}");
            if let Some(address) = &n.address {
                address
                    .parse::<IpAddr>()
                    .map_err(|_| invalid(field("address"), format!("{} is not an IP address", quote(address))))?;
            }
            if let Some(interface) = &n.interface {
                check_interface_name(interface).map_err(|e| invalid(field("interface"), e))?;
            }
            if let Some(profile) = &n.bfd_profile
                && !bgp.bfd_profiles.iter().any(|p| &p.name == profile)
            {
                return Err(invalid(field("bfdProfile"), format!("no BFD profile named {}", quote(profile))));
            }
        }
    }
    Ok(VtepPlan {
        name: v.name.clone(),
        mode: v.mode,
        ip,
        cidrs: v.cidrs.clone(),
        udp_port: v.udp_port,
        mtu: v.mtu,
        bgp: v.bgp.clone(),
    })
}

fn network_plan(
    n: &NodeNetwork,
    vtep: Option<&VtepPlan>,
    spec: &DesiredNode,
    planned: &[NetworkPlan],
) -> Result<NetworkPlan, PlanError> {
    match vtep {
        Some(v) if v.name == n.vtep => {}
        Some(v) if spec.vteps.iter().any(|sv| sv.name == n.vtep) => {
            return Err(PlanError::SecondVtep { used: n.vtep.clone(), first: v.name.clone() });
        }
        _ => return Err(PlanError::VtepNotFound(n.vtep.clone())),
    }
    let ethernet_segments = n.ethernet_segments.iter().map(segment_plan).collect::<Result<Vec<_>, _>>()?;
    if let Some(first) = ethernet_segments.first() {
        if n.entry.mac_vrf.is_none() {
            return Err(PlanError::SegmentWithoutMacVrf { segment: first.name.clone() });
        }
        // Without `bgp` frr-k8s drives FRR, and nothing would give zebra the segment's ESI.
        if vtep.is_some_and(|v| v.bgp.is_none()) {
            return Err(PlanError::SegmentWithFrrK8s { segment: first.name.clone() });
        }
    }
    // An interface is a port of one bridge and carries one ESI: a second claim fails its network.
    for (i, seg) in ethernet_segments.iter().enumerate() {
        let earlier = ethernet_segments[..i].iter().map(|s| (&n.entry.evpn, s));
        let other_networks = planned.iter().flat_map(|p| p.ethernet_segments.iter().map(move |s| (&p.evpn, s)));
        if let Some((evpn, other)) = earlier.chain(other_networks).find(|(_, s)| s.interface == seg.interface) {
            return Err(PlanError::SegmentInterfaceInUse {
                interface: seg.interface.clone(),
                segment: seg.name.clone(),
                other: format!("{evpn}/{}", other.name),
            });
        }
    }
    check_interface_name(&n.entry.vrf)
        .map_err(|e| PlanError::InvalidValue { field: "the network's VRF name".into(), detail: e })?;
    for (side, vrf) in [("macVRF", &n.entry.mac_vrf), ("ipVRF", &n.entry.ip_vrf)] {
        let targets = vrf.iter().flat_map(|v| v.route_targets.import.iter().chain(&v.route_targets.export));
        for rt in targets {
            parse_route_target(rt)
                .map_err(|e| PlanError::InvalidValue { field: format!("{side} route targets"), detail: e })?;
        }
    }
    let segment = |vrf: &NodeVrf| SegmentPlan {
        vni: vrf.vni,
        bridge: bridge_name(vrf.vni),
        vxlan: vxlan_name(vrf.vni),
        route_targets: vrf.route_targets.clone(),
        rd_index: vrf.route_distinguisher_index,
    };
    let n = &n.entry;
    let svi = match (&n.mac_vrf, &n.ip_vrf) {
        (Some(_), Some(ip_vrf)) => Some(SviPlan {
            addresses: n.subnets.iter().map(|s| gateway_address(s)).collect::<Result<_, _>>()?,
            mac: anycast_gateway_mac(ip_vrf.vni),
        }),
        _ => None,
    };
    let plan = NetworkPlan {
        evpn: n.evpn.clone(),
        generation: n.generation,
        vrf: n.vrf.clone(),
        mac_vrf: n.mac_vrf.as_ref().map(segment),
        ip_vrf: n.ip_vrf.as_ref().map(segment),
        svi,
        ethernet_segments,
    };
    // The operator never hands out a VNI twice, but a hand-written spec could; the second user
    // fails instead of both fighting over one device.
    for vni in plan.vnis() {
        if let Some(other) = planned.iter().find(|p| p.vnis().any(|v| v == vni)) {
            return Err(PlanError::DuplicateVni { vni, other: other.evpn.clone() });
        }
    }
    Ok(plan)
}

fn segment_plan(s: &NodeSegment) -> Result<EthernetSegmentPlan, PlanError> {
    if s.mode == RedundancyMode::SingleActive {
        return Err(PlanError::SingleActiveUnsupported { segment: s.name.clone() });
    }
    check_interface_name(&s.interface)
        .map_err(|detail| PlanError::InvalidSegmentInterface { segment: s.name.clone(), detail })?;
    let invalid =
        |detail: &str| PlanError::InvalidEsi { segment: s.name.clone(), esi: s.esi.clone(), detail: detail.into() };
    let bytes = esi_bytes(&s.esi).ok_or_else(|| invalid("not ten colon-separated hex bytes"))?;
    let [kind, value @ ..] = bytes;
    let esi_config = match kind {
        0 if value.iter().all(|b| *b == 0) => return Err(invalid("the all-zero ESI means no segment")),
        0 => EsiConfig::Type0,
        3 => {
            let mut system_mac = [0; 6];
            system_mac.copy_from_slice(&value[..6]);
            let discriminator = u32::from_be_bytes([0, value[6], value[7], value[8]]);
            // FRR takes a type-3 ESI only as a non-zero system MAC and discriminator.
            if system_mac == [0; 6] || discriminator == 0 {
                return Err(invalid("a type-3 ESI needs a non-zero system MAC and discriminator"));
            }
            EsiConfig::Type3 { system_mac, discriminator }
        }
        other => return Err(invalid(&format!("type {other}: FRR 8.4.4 takes type-0 and type-3 ESIs only"))),
    };
    Ok(EthernetSegmentPlan {
        name: s.name.clone(),
        interface: s.interface.clone(),
        esi: colon_hex(&bytes),
        esi_config,
        df_preference: s.df_preference,
    })
}

/// A BGP password as read from its Secret, checked before it can reach FRR's configuration:
/// the error says what is wrong without any part of the password.
pub fn bgp_password(value: Vec<u8>) -> Result<String, String> {
    check_password(&value)?;
    String::from_utf8(value).map_err(|_| "the password is not UTF-8".into())
}

/// The gateway of a subnet: its first host address, with the subnet's prefix length.
fn gateway_address(subnet: &str) -> Result<String, PlanError> {
    let invalid = || PlanError::InvalidSubnet { subnet: subnet.to_owned() };
    let (addr, len) = subnet.split_once('/').ok_or_else(invalid)?;
    let len: u8 = len.parse().map_err(|_| invalid())?;
    let gateway = match addr.parse::<IpAddr>().map_err(|_| invalid())? {
        IpAddr::V4(a) if len < 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from((u32::from(a) & mask) + 1))
        }
        IpAddr::V6(a) if len < 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).wrapping_add(1).into())
        }
        _ => return Err(invalid()),
    };
    Ok(format!("{gateway}/{len}"))
}

/// A locally administered unicast MAC that encodes the IP-VNI: identical on every node.
pub fn anycast_gateway_mac(ip_vni: u32) -> [u8; 6] {
    let [_, a, b, c] = ip_vni.to_be_bytes();
    [0x02, 0x65, 0x76, a, b, c]
}

impl NetworkPlan {
    /// The VNIs of this network (MAC-VNI first).
    pub fn vnis(&self) -> impl Iterator<Item = u32> + '_ {
        self.mac_vrf.iter().chain(self.ip_vrf.iter()).map(|s| s.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evpn_crds::common::{NetworkKind, NetworkRef};
    use evpn_crds::networkset::SetNetwork;

    fn vtep(name: &str, ip: Option<&str>) -> NodeVtep {
        NodeVtep {
            name: name.into(),
            mode: VtepMode::Managed,
            ip: ip.map(Into::into),
            cidrs: vec!["198.18.0.0/24".into()],
            udp_port: 4789,
            mtu: None,
            bgp: Some(Bgp { asn: 65001, neighbors: Vec::new(), bfd_profiles: Vec::new() }),
        }
    }

    fn vrf(vni: u32) -> NodeVrf {
        NodeVrf { vni, route_targets: RouteTargets::default(), route_distinguisher_index: 1 }
    }

    fn network(evpn: &str, vtep: &str, mac: Option<u32>, ip: Option<u32>) -> NodeNetwork {
        NodeNetwork {
            entry: SetNetwork {
                evpn: evpn.into(),
                generation: 1,
                revision: 1,
                network: NetworkRef {
                    kind: NetworkKind::ClusterUserDefinedNetwork,
                    name: evpn.into(),
                    namespace: None,
                },
                vrf: evpn.into(),
                mac_vrf: mac.map(vrf),
                ip_vrf: ip.map(vrf),
                subnets: vec!["10.100.0.0/16".into(), "fd00:100::/64".into()],
            },
            vtep: vtep.into(),
            ethernet_segments: Vec::new(),
        }
    }

    #[test]
    fn names_devices_by_vni() {
        let spec = DesiredNode {
            vteps: vec![vtep("fabric", Some("198.18.0.1"))],
            networks: vec![network("blue", "fabric", Some(10000), Some(20000))],
        };
        let p = plan(&spec);
        assert!(p.rejected.is_empty());
        let net = &p.networks[0];
        assert_eq!(net.mac_vrf.as_ref().map(|s| (s.bridge.as_str(), s.vxlan.as_str())), Some(("evb10000", "evx10000")));
        assert!(net.bridge_in_vrf());
        let svi = net.svi.as_ref().expect("IRB has an SVI");
        assert_eq!(svi.addresses, ["10.100.0.1/16", "fd00:100::1/64"]);
        assert_eq!(svi.mac, [0x02, 0x65, 0x76, 0x00, 0x4e, 0x20]);
        assert_eq!(net.owner_alias(), "evpn-agent:blue");
        assert!(bridge_name(16_777_215).len() <= 15, "interface names fit IFNAMSIZ");
    }

    #[test]
    fn one_bad_network_does_not_reject_the_others() {
        let spec = DesiredNode {
            vteps: vec![vtep("fabric", Some("198.18.0.1"))],
            networks: vec![
                network("blue", "fabric", Some(10000), None),
                network("red", "elsewhere", Some(10001), None),
                network("dup", "fabric", Some(10000), None),
            ],
        };
        let p = plan(&spec);
        assert_eq!(p.networks.iter().map(|n| n.evpn.as_str()).collect::<Vec<_>>(), ["blue"]);
        assert_eq!(p.rejected[0], ("red".into(), PlanError::VtepNotFound("elsewhere".into())));
        assert_eq!(p.rejected[1].1.reason(), "DuplicateVni");
    }

    #[test]
    fn managed_vtep_without_address_fails_every_network() {
        let spec =
            DesiredNode { vteps: vec![vtep("fabric", None)], networks: vec![network("blue", "fabric", Some(1), None)] };
        let p = plan(&spec);
        assert!(p.networks.is_empty());
        assert_eq!(p.rejected[0].1.reason(), "VtepAddressInvalid");
    }

    fn ethernet_segment(evpn: &str, name: &str, interface: &str, esi: &str) -> NodeSegment {
        NodeSegment {
            evpn: evpn.into(),
            name: name.into(),
            interface: interface.into(),
            esi: esi.into(),
            mode: RedundancyMode::AllActive,
            df_preference: None,
        }
    }

    fn with_segments(mut n: NodeNetwork, segments: Vec<NodeSegment>) -> NodeNetwork {
        n.ethernet_segments = segments;
        n
    }

    fn segment_lines(spec: &DesiredNode) -> Vec<Vec<String>> {
        let p = plan(spec);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        p.ethernet_segments().map(EthernetSegmentPlan::frr_lines).collect()
    }

    #[test]
    fn type_0_esis_are_given_whole_and_type_3_as_system_mac_and_discriminator() {
        let mut preferred = ethernet_segment("blue", "s2", "bond2", "03:02:AA:00:00:00:01:01:00:05");
        preferred.df_preference = Some(50000);
        let spec = DesiredNode {
            vteps: vec![vtep("fabric", Some("198.18.0.1"))],
            networks: vec![with_segments(
                network("blue", "fabric", Some(10000), None),
                vec![ethernet_segment("blue", "s1", "bond1", "00:11:22:33:44:55:66:77:88:99"), preferred],
            )],
        };
        assert_eq!(
            segment_lines(&spec),
            [
                vec!["evpn mh es-id 00:11:22:33:44:55:66:77:88:99".to_owned()],
                vec![
                    "evpn mh es-df-pref 50000".to_owned(),
                    "evpn mh es-id 65541".to_owned(),
                    "evpn mh es-sys-mac 02:aa:00:00:00:01".to_owned(),
                ],
            ]
        );
        let p = plan(&spec);
        assert_eq!(p.networks[0].ethernet_segments[1].esi, "03:02:aa:00:00:00:01:01:00:05", "as FRR prints it");
    }

    #[test]
    fn segments_need_the_agent_to_drive_frr() {
        let mut frr_k8s = vtep("fabric", Some("198.18.0.1"));
        frr_k8s.bgp = None;
        let spec = DesiredNode {
            vteps: vec![frr_k8s],
            networks: vec![with_segments(
                network("blue", "fabric", Some(10000), None),
                vec![ethernet_segment("blue", "s1", "bond1", "00:11:22:33:44:55:66:77:88:99")],
            )],
        };
        assert_eq!(plan(&spec).rejected[0].1.reason(), "SegmentWithFrrK8s");
    }

    #[test]
    fn a_bad_segment_rejects_its_network_alone() {
        let bad = |esi: &str, interface: &str| {
            let spec = DesiredNode {
                vteps: vec![vtep("fabric", Some("198.18.0.1"))],
                networks: vec![
                    with_segments(
                        network("blue", "fabric", Some(10000), None),
                        vec![ethernet_segment("blue", "s1", interface, esi)],
                    ),
                    network("green", "fabric", Some(10001), None),
                ],
            };
            let p = plan(&spec);
            assert_eq!(p.networks.iter().map(|n| n.evpn.as_str()).collect::<Vec<_>>(), ["green"]);
            p.rejected[0].1.reason()
        };
        assert_eq!(bad("00:11:22", "bond1"), "EsiInvalid");
        assert_eq!(bad("00:11:22:33:44:55:66:77:88:zz", "bond1"), "EsiInvalid");
        assert_eq!(bad("00:00:00:00:00:00:00:00:00:00", "bond1"), "EsiInvalid");
        assert_eq!(bad("03:02:aa:00:00:00:01:00:00:00", "bond1"), "EsiInvalid", "discriminator 0");
        assert_eq!(bad("01:02:aa:00:00:00:01:00:00:01", "bond1"), "EsiInvalid", "type 1");
        assert_eq!(bad("00:11:22:33:44:55:66:77:88:99", "bond/1"), "SegmentInterfaceInvalid");
        assert_eq!(bad("00:11:22:33:44:55:66:77:88:99", "a-very-long-name0"), "SegmentInterfaceInvalid");
        assert_eq!(bad("00:11:22:33:44:55:66:77:88:99", ""), "SegmentInterfaceInvalid");
    }

    #[test]
    fn segments_need_an_all_active_mac_vrf_and_an_interface_of_their_own() {
        let mut single = ethernet_segment("blue", "s1", "bond1", "00:11:22:33:44:55:66:77:88:99");
        single.mode = RedundancyMode::SingleActive;
        let spec = DesiredNode {
            vteps: vec![vtep("fabric", Some("198.18.0.1"))],
            networks: vec![
                with_segments(network("blue", "fabric", Some(10000), None), vec![single]),
                with_segments(
                    network("red", "fabric", None, Some(20000)),
                    vec![ethernet_segment("red", "s1", "bond2", "00:11:22:33:44:55:66:77:88:98")],
                ),
                with_segments(
                    network("green", "fabric", Some(10001), None),
                    vec![ethernet_segment("green", "s1", "bond3", "00:11:22:33:44:55:66:77:88:97")],
                ),
                with_segments(
                    network("yellow", "fabric", Some(10002), None),
                    vec![ethernet_segment("yellow", "s1", "bond3", "00:11:22:33:44:55:66:77:88:96")],
                ),
            ],
        };
        let p = plan(&spec);
        let reasons: Vec<(&str, &str)> = p.rejected.iter().map(|(e, r)| (e.as_str(), r.reason())).collect();
        assert_eq!(
            reasons,
            [("blue", "SingleActiveUnsupported"), ("red", "SegmentWithoutMacVrf"), ("yellow", "SegmentInterfaceInUse")]
        );
        assert!(p.rejected[2].1.to_string().contains("green/s1"), "{}", p.rejected[2].1);
    }

    #[test]
    fn a_hostile_bfd_profile_refuses_the_vtep_with_its_value_escaped_and_cut() {
        let attack = format!("x\nrouter bgp 65099\n neighbor 1.2.3.4 remote-as 1{}", "q".repeat(200));
        let mut fabric = vtep("fabric", Some("198.18.0.1"));
        let bgp = fabric.bgp.as_mut().unwrap();
        bgp.bfd_profiles = vec![evpn_crds::vtep::BfdProfile {
            name: attack.clone(),
            receive_interval: 300,
            transmit_interval: 300,
            detect_multiplier: 3,
        }];
        let spec = DesiredNode { vteps: vec![fabric], networks: vec![network("blue", "fabric", Some(10000), None)] };
        let p = plan(&spec);
        assert!(p.vtep.is_none() && p.networks.is_empty());
        let (evpn, error) = &p.rejected[0];
        assert_eq!((evpn.as_str(), error.reason()), ("blue", "InvalidValue"));
        let message = error.to_string();
        assert!(message.starts_with("bgp.bfdProfiles[0].name: \"x\\nrouter bgp 65099"), "{message}");
        assert!(!message.contains('\n') && message.len() < 200, "{message}");
    }

    #[test]
    fn a_hostile_vrf_name_or_route_target_refuses_its_network_alone() {
        let mut bad_vrf = network("blue", "fabric", Some(10000), None);
        bad_vrf.entry.vrf = "blue\nvrf red".into();
        let mut bad_rt = network("red", "fabric", Some(10001), None);
        bad_rt.entry.mac_vrf.as_mut().unwrap().route_targets.import = vec!["65000:1\nrouter bgp 1".into()];
        let spec = DesiredNode {
            vteps: vec![vtep("fabric", Some("198.18.0.1"))],
            networks: vec![bad_vrf, bad_rt, network("green", "fabric", Some(10002), None)],
        };
        let p = plan(&spec);
        assert_eq!(p.networks.iter().map(|n| n.evpn.as_str()).collect::<Vec<_>>(), ["green"]);
        let reasons: Vec<(&str, &str)> = p.rejected.iter().map(|(e, r)| (e.as_str(), r.reason())).collect();
        assert_eq!(reasons, [("blue", "InvalidValue"), ("red", "InvalidValue")]);
    }

    #[test]
    fn a_password_that_would_split_its_line_is_refused_without_being_echoed() {
        assert_eq!(bgp_password(b"s3cret!".to_vec()).as_deref(), Ok("s3cret!"));
        let e = bgp_password(b"pw\nrouter bgp 65099".to_vec()).unwrap_err();
        assert!(!e.contains("pw") && !e.contains("router"), "{e}");
    }

    #[test]
    fn route_distinguishers_use_the_ipv4_vtep() {
        assert_eq!(route_distinguisher(Some("198.18.0.1".parse().unwrap()), 7).as_deref(), Some("198.18.0.1:7"));
        assert_eq!(route_distinguisher(Some("fd00::1".parse().unwrap()), 7), None);
    }
}
