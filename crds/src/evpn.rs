//! `EVPN`: BGP-EVPN for one OVN-Kubernetes primary network.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, INTERFACE_NAME_PATTERN, LabelSelector, NetworkRef, OBJECT_NAME_PATTERN, RouteTargets};

/// Extends one OVN-Kubernetes primary network into the data-centre fabric with BGP-EVPN: a
/// Layer2 network as a MAC-VRF (L2VNI), a Layer3 network as an IP-VRF (L3VNI), or a Layer2
/// network with both (symmetric IRB).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "evpn.k8s.ovn.org",
    version = "v1alpha1",
    kind = "EVPN",
    root = "Evpn",
    plural = "evpns",
    singular = "evpn",
    shortname = "evpn",
    status = "EvpnStatus",
    doc = "BGP-EVPN for one OVN-Kubernetes primary network: a MAC-VRF (Layer2), an IP-VRF (Layer3), or both (symmetric IRB).",
    printcolumn(name = "Network", type_ = "string", json_path = ".spec.network.name"),
    printcolumn(name = "MAC-VNI", type_ = "integer", json_path = ".status.macVRF.vni"),
    printcolumn(name = "IP-VNI", type_ = "integer", json_path = ".status.ipVRF.vni"),
    printcolumn(name = "Nodes", type_ = "string", description = "ready/desired", json_path = ".status.readyNodes"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.macVRF) || has(self.ipVRF)")
        .message("set macVRF (Layer2 network), ipVRF (Layer3 network), or both (Layer2 with IRB)")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.macVRF) || !has(self.ipVRF) || !has(self.macVRF.vni) || !has(self.ipVRF.vni) || self.macVRF.vni != self.ipVRF.vni")
        .message("macVRF.vni and ipVRF.vni must differ: MAC-VRFs and IP-VRFs share one VNI space")
        .reason(Reason::FieldValueDuplicate)
)]
pub struct EvpnSpec {
    /// The primary network to extend. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("network is immutable: delete and recreate the EVPN to move it"))]
    pub network: NetworkRef,

    /// Name of the VTEP whose nodes, addresses, VNI pool and BGP sessions this EVPN uses. Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("vtep is immutable: delete and recreate the EVPN to move it"))]
    pub vtep: String,

    /// The Layer2 side: a MAC-VRF with an L2VNI (EVPN route types 2 and 3). Required for a
    /// Layer2 network.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "macVRF")]
    pub mac_vrf: Option<Vrf>,

    /// The Layer3 side: an IP-VRF with an L3VNI (EVPN route type 5, symmetric IRB). Required for
    /// a Layer3 network; optional for a Layer2 network, where it adds routing.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ipVRF")]
    pub ip_vrf: Option<Vrf>,

    /// EVPN multi-homing: external devices attached to several nodes as one Ethernet segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_homing: Option<MultiHoming>,
}

/// One VRF of the network (MAC-VRF or IP-VRF).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.vni) || (has(self.vni) && self.vni == oldSelf.vni)")
        .message("vni is immutable once set: FRR cannot change a VRF's VNI in place")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(oldSelf.routeDistinguisherIndex) || (has(self.routeDistinguisherIndex) && self.routeDistinguisherIndex == oldSelf.routeDistinguisherIndex)")
        .message("routeDistinguisherIndex is immutable once set: the fabric knows the VRF's routes by it")
        .reason(Reason::FieldValueForbidden)
)]
pub struct Vrf {
    /// The VXLAN network identifier. Left out, the operator allocates one from the VTEP's
    /// vniRanges and records it here (as a Service's clusterIP is recorded in its spec), so a
    /// restore without status or a re-apply that leaves it out keeps it. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777215))]
    pub vni: Option<u32>,
    /// Every node's route distinguisher for this VRF is `<its VTEP IP>:<this index>`, 32768-65535.
    /// Left out, the operator allocates one and records it here, like vni. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 32768, max = 65535))]
    pub route_distinguisher_index: Option<u32>,
    /// Route targets. Left out, both directions use `ASN:VNI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_targets: Option<RouteTargets>,
}

/// EVPN multi-homing settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiHoming {
    /// The Ethernet segments of this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub ethernet_segments: Vec<EthernetSegment>,
    /// The type-3 ESI the operator derived for each segment whose esi is `auto`, by segment
    /// name, recorded here (as a Service's clusterIP is recorded in its spec) so the segment
    /// keeps it through a restore without status, even into a cluster whose system MAC differs.
    /// A map beside the list rather than a field of each segment: a client-side `kubectl apply`
    /// sends the segments list whole whenever it differs, and would drop a field in it that the
    /// user's YAML does not have; a map is merged key by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty", rename = "derivedESIs")]
    #[schemars(length(max = 64))]
    pub derived_esis: std::collections::BTreeMap<String, String>,
}

/// A link bundle from one external device to several nodes, presented to the fabric as one
/// Ethernet segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EthernetSegment {
    /// Name of the segment, unique within the EVPN.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The node-side interface attached to the segment (the same name on every node): a Linux
    /// interface name, 1-15 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`.
    #[schemars(length(min = 1, max = 15), regex(pattern = INTERFACE_NAME_PATTERN))]
    pub interface: String,
    /// Nodes attached to the segment.
    pub node_selector: LabelSelector,
    /// The Ethernet segment identifier: `auto` (type-3, derived by the operator from a
    /// cluster-wide system MAC and a discriminator, and recorded in derivedESIs) or ten
    /// colon-separated hex bytes of a type-0 ESI (`00:...`).
    #[serde(default = "default_esi")]
    #[schemars(regex(pattern = ESI_PATTERN))]
    #[x_kube(validation = Rule::new("self == 'auto' || self.startsWith('00:')")
        .message("an explicit ESI must be type 0 (first byte 00); use auto for a derived type-3 ESI"))]
    pub esi: String,
    /// Redundancy mode of the segment.
    #[serde(default)]
    pub mode: RedundancyMode,
    /// Designated-forwarder preference; the highest wins the election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub df_preference: Option<u32>,
}

/// Shape of an ESI value.
pub const ESI_PATTERN: &str = r"^(auto|[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){9})$";

/// The `esi` that asks the operator for a derived type-3 ESI.
pub const AUTO_ESI: &str = "auto";

fn default_esi() -> String {
    AUTO_ESI.into()
}

/// How the nodes of a segment share its traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RedundancyMode {
    /// Every attached node forwards.
    #[default]
    AllActive,
    /// Only the designated forwarder forwards. Not supported yet (FRR 8.4.4 runs every segment
    /// all-active): the webhook refuses it.
    SingleActive,
}

/// What the operator resolved and what the nodes report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvpnStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The MAC-VRF as resolved (allocated VNI, effective route targets).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "macVRF")]
    pub mac_vrf: Option<ResolvedVrf>,
    /// The IP-VRF as resolved.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ipVRF")]
    pub ip_vrf: Option<ResolvedVrf>,
    /// Name of the network's VRF on the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf_name: Option<String>,
    // Status lists are always sent (see EvpnNodeStateSpec): the operator applies them.
    /// The Ethernet segments with their resolved ESIs.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub ethernet_segments: Vec<ResolvedSegment>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// `ready/desired` nodes, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,
    /// Up to ten failing nodes with the reason each reported; `nodes.failed` has the full count.
    #[serde(default)]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub failed_nodes: Vec<NodeFailure>,
    /// `Accepted`: the spec is valid and its VNIs are allocated (False with reason `Conflict`
    /// names the EVPN that holds a VNI first). `Ready`: every desired node applied the current
    /// generation. `Degraded`: some node failed.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A VRF as it is programmed on the nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVrf {
    /// The VNI in use.
    pub vni: u32,
    /// The effective route targets.
    pub route_targets: RouteTargets,
    /// Every node's route distinguisher for this VRF is `<its VTEP IP>:<this index>`. Indexes are
    /// 32768-65535: FRR's automatic route distinguishers take the numbers below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_distinguisher_index: Option<u32>,
}

/// An Ethernet segment with its resolved identifier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSegment {
    /// Name of the segment in the spec.
    pub name: String,
    /// The ESI in use, ten colon-separated hex bytes.
    pub esi: String,
    // Always sent, even empty: an apply that leaves a list out would not clear it.
    /// Nodes whose agent reports the segment up in FRR, by name.
    #[serde(default)]
    pub up_nodes: Vec<String>,
    /// Nodes that report themselves the segment's designated forwarder: one when the nodes agree
    /// (none while the election has not run).
    #[serde(default)]
    pub designated_forwarders: Vec<String>,
}

/// How many nodes should carry the network, and how they are doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeCounts {
    /// Nodes selected by the VTEP.
    pub desired: u32,
    /// Nodes that applied the current generation.
    pub ready: u32,
    /// Nodes that reported a failure.
    pub failed: u32,
}

/// A node that failed to realise the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeFailure {
    /// Name of the node.
    pub node: String,
    /// Machine-readable reason, UpperCamelCase.
    pub reason: String,
    /// What went wrong, as the node's agent reported it.
    pub message: String,
}

/// Condition types of an EVPN.
pub mod condition {
    /// The spec is valid and its VNIs, route targets and ESIs are allocated.
    pub const ACCEPTED: &str = "Accepted";
    /// Every desired node applied the current generation.
    pub const READY: &str = "Ready";
    /// At least one node failed to apply it.
    pub const DEGRADED: &str = "Degraded";
}
