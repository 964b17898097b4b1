//! The frr-k8s kinds the operator writes and reads (`frrk8s.metallb.io/v1beta1`), typed.
//!
//! Only the fields the operator uses are declared; their names and meaning are those of
//! frr-k8s' API. The operator never writes `raw` configuration: everything it needs has a typed
//! field (`evpn.l2vnis`, `evpn.l3vni`, `evpn.advertiseVNIs`, `addressFamilies: [evpn]`).
//! These types are not part of this project's API and are not in [`crate::crds`].

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::LabelSelector;

/// The group of the frr-k8s kinds.
pub const GROUP: &str = "frrk8s.metallb.io";

/// An frr-k8s FRRConfiguration: BGP configuration that frr-k8s merges with every other one
/// selecting the same node.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "frrk8s.metallb.io",
    version = "v1beta1",
    kind = "FRRConfiguration",
    root = "FrrConfiguration",
    plural = "frrconfigurations",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct FrrConfigurationSpec {
    /// The BGP part.
    #[serde(default)]
    pub bgp: FrrBgp,
    /// The nodes this configuration applies to; empty selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// BGP routers and BFD profiles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrBgp {
    /// One router per VRF.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<FrrRouter>,
    /// BFD profiles neighbors refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bfd_profiles: Vec<FrrBfdProfile>,
}

/// A BGP router, in the default VRF when `vrf` is empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrRouter {
    /// Local AS number.
    pub asn: u32,
    /// Router ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The VRF; empty for the default one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vrf: String,
    /// Sessions of this router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<FrrNeighbor>,
    /// Prefixes announced (`network` statements).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// The EVPN part of this router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evpn: Option<FrrEvpn>,
}

/// A BGP neighbor. The session fields are those frr-k8s requires to be equal when two
/// configurations name the same neighbor; the operator copies them from the underlay's
/// configuration so that the two merge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrNeighbor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "dynamicASN")]
    pub dynamic_asn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sourceaddress")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<FrrSecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multi_hop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_stack_address_family: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "localASN")]
    pub local_asn: Option<u32>,
    /// `unicast` and/or `evpn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_families: Vec<String>,
}

impl FrrNeighbor {
    /// What identifies the neighbor to frr-k8s within a router.
    pub fn key(&self) -> Option<&str> {
        self.address.as_deref().or(self.interface.as_deref())
    }
}

/// A Secret holding a BGP password.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FrrSecretReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The EVPN part of a router.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrEvpn {
    /// `All` for `advertise-all-vni`; only on a router with EVPN neighbors.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "advertiseVNIs")]
    pub advertise_vnis: Option<String>,
    /// Per-VNI settings of MAC-VRFs; at most ten per router in one configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l2vnis: Vec<FrrVni>,
    /// The IP-VRF's VNI; only on a router without neighbors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3vni: Option<FrrL3Vni>,
}

/// A MAC-VRF VNI. Route targets left empty are derived by FRR (`ASN:VNI`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrVni {
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "importRTs")]
    pub import_rts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "exportRTs")]
    pub export_rts: Vec<String>,
}

/// An IP-VRF VNI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrL3Vni {
    #[serde(flatten)]
    pub vni: FrrVni,
    /// `[unicast]`: the router's unicast prefixes become type-5 routes.
    pub advertise_prefixes: Vec<String>,
}

/// A BFD profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrBfdProfile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
}

/// What frr-k8s reports for one node (status only; the object is named after the node).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "frrk8s.metallb.io",
    version = "v1beta1",
    kind = "FRRNodeState",
    root = "FrrNodeState",
    plural = "frrnodestates",
    status = "FrrNodeStateStatus"
)]
pub struct FrrNodeStateSpec {}

/// The result of frr-k8s' last reload on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrrNodeStateStatus {
    /// `success`, or the error of the last reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_result: Option<String>,
    /// `success`, or why the FRRConfigurations could not be turned into FRR configuration (a
    /// merge conflict, for instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_conversion_result: Option<String>,
    /// Other fields frr-k8s reports (the running configuration, ...), kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl FrrNodeStateStatus {
    /// The problem frr-k8s reports for its node, if any.
    pub fn problem(&self) -> Option<String> {
        let failed =
            |r: &Option<String>| r.as_deref().filter(|r| !r.eq_ignore_ascii_case("success")).map(str::to_owned);
        failed(&self.last_conversion_result)
            .map(|e| format!("frr-k8s could not merge the FRRConfigurations: {e}"))
            .or_else(|| failed(&self.last_reload_result).map(|e| format!("frr-k8s' last FRR reload failed: {e}")))
    }
}

/// One BGP session of one node, as frr-k8s reports it (status only).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "frrk8s.metallb.io",
    version = "v1beta1",
    kind = "BGPSessionState",
    root = "BgpSessionState",
    plural = "bgpsessionstates",
    status = "BgpSessionStateStatus",
    namespaced
)]
pub struct BgpSessionStateSpec {}

/// The session's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionStateStatus {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub peer: String,
    /// The VRF; empty for the default one.
    #[serde(default)]
    pub vrf: String,
    /// FRR's session state (`Established` when up).
    #[serde(default)]
    pub bgp_status: String,
    #[serde(default)]
    pub bfd_status: String,
}
