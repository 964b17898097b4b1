//! `EVPNNodeState`: one per node, named after it and owned by its Node object.
//!
//! The operator is the only writer of the spec and the node's agent the only writer of the
//! status, so the two never contend for a field: the spec is the whole desired state of the
//! node (the agent needs no other object to do its job) and the status is what the agent saw
//! itself do.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, NetworkRef, RouteTargets};
use crate::evpn::RedundancyMode;
use crate::vtep::{Bgp, VtepMode};

/// The EVPN state one node must realise (spec, written by the operator) and what the node's
/// agent reports of it (status).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "evpn.k8s.ovn.org",
    version = "v1alpha1",
    kind = "EVPNNodeState",
    root = "EvpnNodeState",
    plural = "evpnnodestates",
    singular = "evpnnodestate",
    status = "EvpnNodeStateStatus",
    doc = "The EVPN state one node must realise (spec, written by the operator) and what the node's agent reports of it (status).",
    printcolumn(name = "VTEP-IP", type_ = "string", json_path = ".status.vteps[0].ip"),
    printcolumn(name = "Networks", type_ = "integer", json_path = ".status.appliedNetworks"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedNetworks"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EvpnNodeStateSpec {
    // Lists written with server-side apply are always sent, even empty: an apply that drops a
    // list entirely leaves `null` behind on older apiservers, which the schema then refuses.
    // They are atomic: one writer owns them whole, and the apiserver then tracks one field
    // instead of every field of a thousand entries (which made each write several times slower).
    /// The VTEPs this node is part of.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub vteps: Vec<NodeVtep>,
    /// The EVPN networks this node must carry.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub networks: Vec<NodeNetwork>,
}

/// A VTEP as this node realises it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeVtep {
    /// Name of the VTEP object.
    pub name: String,
    /// Managed or Unmanaged.
    pub mode: VtepMode,
    /// The VTEP IP the operator allocated to this node (Managed mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Prefixes the VTEP IP is taken from; in Unmanaged mode the agent discovers the node's
    /// address inside them.
    pub cidrs: Vec<String>,
    /// UDP port of the VXLAN devices.
    pub udp_port: u16,
    /// Underlay MTU, when the VTEP sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// BGP driven by the agent; absent when frr-k8s drives FRR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,
}

/// One EVPN network as this node realises it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// Name of the EVPN object.
    pub evpn: String,
    /// The EVPN's generation this entry reflects.
    pub generation: i64,
    /// The OVN-Kubernetes network.
    pub network: NetworkRef,
    /// Name of the VTEP (in `vteps`) the network's tunnels use.
    pub vtep: String,
    /// Name of the network's VRF on the node, as OVN-Kubernetes names it.
    pub vrf: String,
    /// The MAC-VRF to program.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "macVRF")]
    pub mac_vrf: Option<NodeVrf>,
    /// The IP-VRF to program.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ipVRF")]
    pub ip_vrf: Option<NodeVrf>,
    /// The network's subnets, as the OVN-Kubernetes network declares them. With symmetric IRB
    /// the first address of each is the anycast gateway on the SVI, as OVN-Kubernetes uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// The Ethernet segments this node is attached to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ethernet_segments: Vec<NodeSegment>,
}

/// A VRF with everything resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeVrf {
    /// The VNI.
    pub vni: u32,
    /// Effective route targets.
    pub route_targets: RouteTargets,
    /// The VRF's route distinguisher on this node is `<this node's VTEP IP>:<index>`: unique
    /// per VRF on the node, and distinct across nodes through the VTEP IP.
    pub route_distinguisher_index: u32,
}

/// An Ethernet segment on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSegment {
    /// Name of the segment in the EVPN.
    pub name: String,
    /// The node's interface in the segment.
    pub interface: String,
    /// The resolved ESI.
    pub esi: String,
    /// Redundancy mode.
    pub mode: RedundancyMode,
    /// Designated-forwarder preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub df_preference: Option<u32>,
}

/// What the node's agent observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvpnNodeStateStatus {
    // Lists are always sent, even empty, so a merge patch of the whole status clears them.
    /// The generation of this object's spec the agent last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The agent and the backends it chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
    /// The VTEPs as realised.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub vteps: Vec<VtepState>,
    /// BGP sessions towards the fabric.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["neighbor".into()]))]
    pub bgp_sessions: Vec<BgpSessionState>,
    /// One entry per network in the spec, and per network still being removed.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub networks: Vec<NetworkState>,
    /// Networks in `Applied` phase, for display.
    #[serde(default)]
    pub applied_networks: u32,
    /// Networks in `Failed` phase, for display.
    #[serde(default)]
    pub failed_networks: u32,
    /// `Ready`: every network of the spec is applied.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The agent instance and its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Version of the agent binary.
    pub version: String,
    /// How VRFs are realised on this node.
    pub vrf_backend: VrfBackend,
    /// Who drives FRR.
    pub frr_driver: FrrDriver,
}

/// How an agent realises VRFs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VrfBackend {
    /// Kernel VRF devices (production).
    KernelVrf,
    /// One network namespace per VRF (kernels built without the VRF device).
    NetnsVrf,
}

/// Who drives FRR on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FrrDriver {
    /// The agent renders and hot-reloads frr.conf itself.
    Direct,
    /// frr-k8s renders FRR from FRRConfiguration objects.
    FrrK8s,
}

/// A VTEP as realised on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VtepState {
    /// Name of the VTEP.
    pub name: String,
    /// The VTEP IP in use (allocated, or discovered in Unmanaged mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// A BGP session as FRR reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionState {
    /// Address or interface of the peer.
    pub neighbor: String,
    /// FRR's session state (Idle, Connect, Active, OpenSent, OpenConfirm, Established).
    pub state: String,
    /// State of the BFD session on it, when BFD runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
}

/// One network as realised on the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkState {
    /// Name of the EVPN.
    pub evpn: String,
    /// The EVPN generation last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// Where the network stands on this node.
    pub phase: NetworkPhase,
    /// Machine-readable reason of the phase, UpperCamelCase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// State of each VNI in FRR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vnis: Vec<VniState>,
}

/// Lifecycle of a network on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NetworkPhase {
    /// Being applied.
    Pending,
    /// The generation in `appliedGeneration` is programmed.
    Applied,
    /// Applying failed; `reason` and `message` say why.
    Failed,
    /// Removed from the spec and still being cleaned up.
    Removing,
}

/// A VNI as FRR's zebra reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VniState {
    /// The VNI.
    pub vni: u32,
    /// `L2` or `L3`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether FRR has the VNI up (its VXLAN device and, for L3, its VRF).
    pub up: bool,
}
