//! `EVPNNetworkSet`: one per VTEP, named after it and owned by it: every network the nodes of
//! that VTEP carry, with everything resolved.
//!
//! Every node of a VTEP carries the same networks, so they are written once here instead of
//! into each node's `EVPNNodeState`: a burst of 1,000 EVPNs on 500 nodes is then a few writes of
//! one list, not 500 copies of it (see docs/architecture.md, "Fan-out"). A node's state holds
//! only what differs per node and, through its VTEPs, names the sets it carries.
//!
//! Revisions make progress countable without listing every network in every node's status: the
//! set's `revision` goes up by one on each change, each entry records the revision it last
//! changed in, and an agent reports the revision it has acted on. An entry is realised on a node
//! once the node reports a revision at or past the entry's and does not list it as unapplied.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::NetworkRef;
use crate::nodestate::NodeVrf;

/// The networks every node of one VTEP carries (written by the operator only).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "evpn.k8s.ovn.org",
    version = "v1alpha1",
    kind = "EVPNNetworkSet",
    root = "EvpnNetworkSet",
    plural = "evpnnetworksets",
    singular = "evpnnetworkset",
    doc = "The networks every node of one VTEP carries, resolved; one per VTEP, named after it, written by the operator only.",
    printcolumn(name = "Revision", type_ = "integer", json_path = ".spec.revision"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EvpnNetworkSetSpec {
    /// Goes up by one whenever the list changes.
    pub revision: i64,
    /// The networks, sorted by EVPN name. Atomic: one writer owns it whole, so the apiserver
    /// tracks one field instead of every field of a thousand entries.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub networks: Vec<SetNetwork>,
}

/// One EVPN network as every node of the VTEP realises it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetNetwork {
    /// Name of the EVPN object.
    pub evpn: String,
    /// The EVPN's generation this entry reflects.
    pub generation: i64,
    /// The set revision in which this entry last changed.
    pub revision: i64,
    /// The OVN-Kubernetes network.
    pub network: NetworkRef,
    /// Name of the network's VRF on the nodes, as OVN-Kubernetes names it.
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
}

impl SetNetwork {
    /// Whether two entries ask the nodes for the same thing, whatever revision each was written
    /// in and whatever EVPN generation each reflects: a spec change that changes nothing for the
    /// nodes (the operator recording an allocation the status already held) needs no new
    /// revision, so no node has to apply the network again.
    pub fn same_content(&self, other: &SetNetwork) -> bool {
        SetNetwork { revision: other.revision, generation: other.generation, ..self.clone() } == *other
    }
}
