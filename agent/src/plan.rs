//! What this node must look like, derived from its `EVPNNodeState` spec alone.
//!
//! The plan is pure data: device names, VNIs, route targets and distinguishers, resolved once
//! here so the data plane and the FRR renderer agree on every name. A network whose spec this
//! agent cannot realise (its VTEP is missing, it names a second VTEP) becomes a [`PlanError`]
//! for that network only; the others are planned as usual.

use std::net::{IpAddr, Ipv4Addr};

use evpn_crds::common::RouteTargets;
use evpn_crds::nodestate::{DesiredNode, NodeNetwork, NodeVrf, NodeVtep};
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
            bgp: None,
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

    #[test]
    fn route_distinguishers_use_the_ipv4_vtep() {
        assert_eq!(route_distinguisher(Some("198.18.0.1".parse().unwrap()), 7).as_deref(), Some("198.18.0.1:7"));
        assert_eq!(route_distinguisher(Some("fd00::1".parse().unwrap()), 7), None);
    }
}
