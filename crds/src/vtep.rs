//! `VTEP`: where the VXLAN tunnels of the selected nodes start and end, and how those nodes reach
//! the fabric's BGP.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, FRR_NAME_PATTERN, INTERFACE_NAME_PATTERN, LabelSelector, NAMESPACE_PATTERN, OBJECT_NAME_PATTERN,
};

/// A pool of VXLAN tunnel endpoints: the underlay addresses, the VNI pool and the BGP sessions
/// that the selected nodes use for every EVPN that names this VTEP.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "evpn.k8s.ovn.org",
    version = "v1alpha1",
    kind = "VTEP",
    root = "Vtep",
    plural = "vteps",
    singular = "vtep",
    status = "VtepStatus",
    doc = "A pool of VXLAN tunnel endpoints (VTEPs): underlay addresses, the VNI pool and the BGP sessions of the selected nodes.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "CIDRs", type_ = "string", json_path = ".spec.cidrs"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.bgp) != has(self.frrConfigurationSelector)")
    .message("set exactly one of bgp (FRR driven by the agent) and frrConfigurationSelector (frr-k8s)")
    .reason(Reason::FieldValueInvalid))]
pub struct VtepSpec {
    /// Underlay prefixes of the VTEP IPs. In Managed mode the operator allocates one address per
    /// node from them; in Unmanaged mode the agent looks for the node's address inside them.
    #[schemars(length(min = 1, max = 8), inner(regex(pattern = CIDR_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub cidrs: Vec<String>,

    /// Who puts the VTEP IP on the node: the operator and agent (Managed) or the node's own
    /// provisioning (Unmanaged).
    #[serde(default)]
    pub mode: VtepMode,

    /// Nodes that become VTEPs. Empty selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// VNIs the operator may allocate to EVPNs that leave theirs out. EVPNs with an explicit VNI
    /// must also fall inside these ranges when any are given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub vni_ranges: Vec<VniRange>,

    /// UDP destination port of the VXLAN tunnels.
    #[serde(default = "default_udp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub udp_port: u16,

    /// MTU of the underlay interfaces: what the fabric carries between VTEPs (the agent does not
    /// set it on them). Each VXLAN device gets this minus the encapsulation, 50 bytes over IPv4
    /// and 70 over IPv6. Admission denies an EVPN whose network MTU (the CUDN/UDN `mtu`, else
    /// ovnkube-config's `[default] mtu`, else 1400) is larger than that, and a change of this
    /// field that would leave an admitted EVPN's network too large. Left out, nothing is checked
    /// and the agent leaves the VXLAN devices' MTU alone (a new one gets the kernel's 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1280, max = 9216))]
    pub mtu: Option<u32>,

    /// The VTEP IP of each selected node (Managed mode). The operator allocates an address from
    /// cidrs to every node without one and records it here (as a Service's clusterIP is recorded
    /// in its spec), so a restore without status or a re-apply that leaves this out keeps every
    /// node's address; an entry given by hand pins that node's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub node_addresses: Vec<NodeAddress>,

    /// BGP driven directly by the agent's FRR. Exclusive with frrConfigurationSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,

    /// Selects the frr-k8s FRRConfigurations that already hold the underlay BGP sessions; the
    /// operator layers the EVPN part on top of them. Exclusive with bgp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frr_configuration_selector: Option<LabelSelector>,
}

fn default_udp_port() -> u16 {
    4789
}

/// Shape of an IPv4 or IPv6 prefix; [`crate::validation::parse_cidr`] checks it properly.
pub const CIDR_PATTERN: &str = r"^[0-9a-fA-F.:]+/[0-9]{1,3}$";

/// A node's VTEP IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    /// Name of the Node.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub node: String,
    /// Its VTEP IP, inside one of cidrs.
    #[schemars(length(min = 2, max = 45), regex(pattern = IP_ADDRESS_PATTERN))]
    pub ip: String,
}

/// How the VTEP IP gets onto a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VtepMode {
    /// The operator allocates one IP per node from `cidrs`; the agent puts it on a device.
    #[default]
    Managed,
    /// The node already has an IP inside `cidrs`; the agent discovers and uses it.
    Unmanaged,
}

/// An inclusive range of VNIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.start <= self.end").message("start must not be greater than end"))]
pub struct VniRange {
    /// First VNI of the range.
    #[schemars(range(min = 1, max = 16777215))]
    pub start: u32,
    /// Last VNI of the range (inclusive).
    #[schemars(range(min = 1, max = 16777215))]
    pub end: u32,
}

/// BGP towards the fabric, configured in the node's FRR by the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.neighbors.all(n, !has(n.bfdProfile) || (has(self.bfdProfiles) && self.bfdProfiles.exists(p, p.name == n.bfdProfile)))")
    .message("a neighbor's bfdProfile must name one of bfdProfiles")
    .reason(Reason::FieldValueInvalid))]
pub struct Bgp {
    /// The nodes' own AS number.
    #[schemars(range(min = 1))]
    pub asn: u32,
    /// The fabric peers every selected node opens a session to.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub neighbors: Vec<BgpNeighbor>,
    /// BFD profiles the neighbors can refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub bfd_profiles: Vec<BfdProfile>,
}

/// One BGP peer of the node, reached by address or by unnumbered interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.address) != has(self.interface)")
        .message("set exactly one of address and interface"),
    validation = Rule::new("has(self.asn) != has(self.dynamicASN)")
        .message("set exactly one of asn and dynamicASN")
)]
pub struct BgpNeighbor {
    /// IPv4 or IPv6 address of the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 45), regex(pattern = IP_ADDRESS_PATTERN))]
    pub address: Option<String>,
    /// Interface of an unnumbered (IPv6 link-local) session: a Linux interface name, 1-15
    /// letters, digits, `_`, `.` or `-`, not starting with `.` or `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = INTERFACE_NAME_PATTERN))]
    pub interface: Option<String>,
    /// The peer's AS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub asn: Option<u32>,
    /// Accept whatever AS the peer announces, internal (same AS) or external.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "dynamicASN")]
    pub dynamic_asn: Option<DynamicAsn>,
    /// TCP MD5 password of the session, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Name of a BFD profile of this VTEP to run on the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = FRR_NAME_PATTERN))]
    pub bfd_profile: Option<String>,
}

/// The kind of peer a neighbor without a fixed AS number is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// The peer is in the node's own AS (iBGP).
    Internal,
    /// The peer is in another AS (eBGP).
    External,
}

/// Shape of an IP address; [`crate::validation`] parses it properly.
pub const IP_ADDRESS_PATTERN: &str = r"^[0-9a-fA-F.:]+$";

/// A key in a Secret. The value must be 1-80 printable ASCII characters without spaces (the
/// kernel's TCP MD5 key limit, and one word of FRR's configuration); the agent refuses the
/// VTEP's sessions otherwise, without quoting the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), regex(pattern = NAMESPACE_PATTERN))]
    pub namespace: String,
    /// Key in the Secret's data.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// Shape of a key in a Secret's data, as the apiserver allows it.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

fn default_password_key() -> String {
    "password".into()
}

/// Bidirectional Forwarding Detection timers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfile {
    /// Name the neighbors refer to: 1-63 letters, digits, `_`, `.` or `-`, not starting with `.`
    /// or `-`.
    #[schemars(length(min = 1, max = 63), regex(pattern = FRR_NAME_PATTERN))]
    pub name: String,
    /// Minimum interval between received control packets, in milliseconds.
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: u32,
    /// Minimum interval between transmitted control packets, in milliseconds.
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: u32,
    /// Missed packets after which the session is declared down.
    #[serde(default = "default_bfd_multiplier")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: u32,
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_bfd_multiplier() -> u32 {
    3
}

/// What the operator observed of a VTEP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VtepStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of nodes the VTEP selects.
    #[serde(default)]
    pub nodes: u32,
    /// Number of VTEP IPs allocated (Managed mode).
    #[serde(default)]
    pub allocated_ips: u32,
    /// `Ready`: every selected node has a VTEP IP, or the VTEP is Unmanaged.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
