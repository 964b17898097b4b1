//! `EVPNNodeState`: one per node, named after it and owned by its Node object.
//!
//! The operator is the only writer of the spec and the node's agent the only writer of the
//! status, so the two never contend for a field. The spec holds what is particular to the node
//! (its VTEPs with the addresses allocated to it, its Ethernet segments); the networks, the
//! same on every node of a VTEP, are in that VTEP's [`EvpnNetworkSet`](crate::EvpnNetworkSet).
//! [`DesiredNode::assemble`] puts the two together into everything the node must realise. The
//! status is what the agent saw itself do, per network set revision.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, RouteTargets};
use crate::evpn::RedundancyMode;
use crate::networkset::{EvpnNetworkSetSpec, SetNetwork};
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
    /// The VTEPs this node is part of. The node carries every network of each VTEP's network
    /// set (the `EVPNNetworkSet` of the same name).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub vteps: Vec<NodeVtep>,
    /// The Ethernet segments this node is attached to, across all its networks.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub ethernet_segments: Vec<NodeSegment>,
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

/// Everything one node must realise: its node state's spec joined with the network sets of its
/// VTEPs. Not an API object; what the agent plans from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredNode {
    /// The VTEPs this node is part of.
    pub vteps: Vec<NodeVtep>,
    /// The networks, each with this node's segments attached.
    pub networks: Vec<NodeNetwork>,
}

impl DesiredNode {
    /// Joins a node's spec with the network sets it names; `set` looks one up by VTEP name. A
    /// VTEP whose set does not exist yet contributes no network.
    pub fn assemble<'a>(spec: &EvpnNodeStateSpec, set: impl Fn(&str) -> Option<&'a EvpnNetworkSetSpec>) -> Self {
        let mut networks: Vec<NodeNetwork> = spec
            .vteps
            .iter()
            .flat_map(|v| set(&v.name).into_iter().flat_map(|s| &s.networks).map(|n| (v.name.as_str(), n)))
            .map(|(vtep, n)| NodeNetwork {
                entry: n.clone(),
                vtep: vtep.to_owned(),
                ethernet_segments: spec.ethernet_segments.iter().filter(|s| s.evpn == n.evpn).cloned().collect(),
            })
            .collect();
        networks.sort_by(|a, b| a.entry.evpn.cmp(&b.entry.evpn));
        Self { vteps: spec.vteps.clone(), networks }
    }
}

/// One EVPN network as this node realises it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// The network as its VTEP's set lists it.
    #[serde(flatten)]
    pub entry: SetNetwork,
    /// Name of the VTEP (in `vteps`) the network's tunnels use.
    pub vtep: String,
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
    /// Name of the EVPN the segment belongs to.
    pub evpn: String,
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
    /// The Ethernet segments of this node's applied networks, as FRR's zebra reports them.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub ethernet_segments: Vec<SegmentState>,
    /// The revision of each network set the agent last acted on: every network of that revision
    /// not listed in `unappliedNetworks` is applied.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub network_sets: Vec<AppliedNetworkSet>,
    /// The networks that are not applied: pending, failed, or left the sets and still being
    /// removed. Applied networks are not listed, so a healthy node's status stays small however
    /// many networks it carries.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub unapplied_networks: Vec<NetworkState>,
    /// Networks applied, for display.
    #[serde(default)]
    pub applied_networks: u32,
    /// Networks in `Failed` phase, for display.
    #[serde(default)]
    pub failed_networks: u32,
    /// `Ready`: every network of the node's sets is applied.
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

/// A network set revision an agent acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedNetworkSet {
    /// Name of the set (its VTEP's name).
    pub name: String,
    /// UID of the set object, so a set deleted and created again is not mistaken for the old one.
    pub uid: String,
    /// The set's `spec.revision`.
    pub revision: i64,
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

/// An Ethernet segment on the node as FRR's zebra reports it (`show evpn es detail`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentState {
    /// Name of the EVPN.
    pub evpn: String,
    /// Name of the segment in the EVPN.
    pub name: String,
    /// The ESI.
    pub esi: String,
    /// Whether this node forwards the segment's broadcast, unknown-unicast and multicast traffic;
    /// absent until zebra runs the election (the segment is local and zebra knows the VTEP
    /// address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DesignatedForwarderRole>,
    /// `Up` or `Down` (the interface's operational state, held down while every uplink is down);
    /// absent while FRR does not report the segment as local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The other VTEPs FRR knows on the segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// A node's part in the designated-forwarder election of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DesignatedForwarderRole {
    /// The designated forwarder.
    DF,
    /// Not the designated forwarder.
    NonDF,
}

/// A network not (or no longer fully) applied on the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkState {
    /// Name of the EVPN.
    pub evpn: String,
    /// The EVPN generation last applied successfully, what is still programmed.
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

/// Why a network is listed as not applied on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NetworkPhase {
    /// Being applied.
    Pending,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evpn::RedundancyMode;
    use serde_json::json;

    fn vtep(name: &str) -> NodeVtep {
        serde_json::from_value(
            json!({"name": name, "mode": "Managed", "ip": "198.18.0.1", "cidrs": ["198.18.0.0/24"], "udpPort": 4789}),
        )
        .expect("a VTEP")
    }

    fn set(networks: &[&str]) -> EvpnNetworkSetSpec {
        let networks = networks
            .iter()
            .map(|n| {
                serde_json::from_value(json!({"evpn": n, "generation": 1, "revision": 1, "vrf": n,
                    "network": {"kind": "ClusterUserDefinedNetwork", "name": n}}))
                .expect("a set entry")
            })
            .collect();
        EvpnNetworkSetSpec { revision: 1, networks }
    }

    #[test]
    fn a_node_gets_its_vteps_networks_with_its_own_segments() {
        let segment = NodeSegment {
            evpn: "red".into(),
            name: "s1".into(),
            interface: "bond0".into(),
            esi: "00:11:22:33:44:55:66:77:88:99".into(),
            mode: RedundancyMode::AllActive,
            df_preference: None,
        };
        let spec = EvpnNodeStateSpec { vteps: vec![vtep("a"), vtep("b")], ethernet_segments: vec![segment] };
        let (a, other) = (set(&["red", "blue"]), set(&["green"]));
        let desired = DesiredNode::assemble(&spec, |name| match name {
            "a" => Some(&a),
            "other" => Some(&other),
            _ => None,
        });
        let names: Vec<(&str, &str, usize)> = desired
            .networks
            .iter()
            .map(|n| (n.entry.evpn.as_str(), n.vtep.as_str(), n.ethernet_segments.len()))
            .collect();
        // VTEP b has no set yet and contributes nothing; the set of a VTEP the node is not in is
        // not looked at.
        assert_eq!(names, [("blue", "a", 0), ("red", "a", 1)]);
    }
}
