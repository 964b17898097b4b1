//! What the webhook knows about the cluster, as plain data.
//!
//! Watches feed this index ([`crate::watch`]) and the rules read it, so a request costs no API
//! call and the rules are unit-tested on hand-built indexes. Every update is a small synchronous
//! function of one object; VNI ownership is kept as a map so uniqueness is one lookup, not a scan
//! of every EVPN.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use evpn_crds::common::{NetworkKind, NetworkRef};
use evpn_crds::{Evpn, Vtep, VtepSpec};
use kube::ResourceExt;

/// Which VRF of an EVPN a VNI belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VrfSide {
    /// The MAC-VRF (L2VNI).
    Mac,
    /// The IP-VRF (L3VNI).
    Ip,
}

impl VrfSide {
    /// The spec field the VNI is in.
    pub fn field(self) -> &'static str {
        match self {
            Self::Mac => "macVRF",
            Self::Ip => "ipVRF",
        }
    }
}

/// OVN-Kubernetes gateway mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayMode {
    /// Traffic leaves through the host's kernel: what EVPN needs.
    Local,
    /// Traffic leaves through OVN's gateway router, bypassing the kernel.
    Shared,
}

impl GatewayMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "shared" => Some(Self::Shared),
            _ => None,
        }
    }
}

/// What the webhook needs of a Node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// The node's labels, for VTEP node selectors.
    pub labels: BTreeMap<String, String>,
    /// The gateway mode from `k8s.ovn.org/l3-gateway-config`, when the annotation is there.
    pub gateway_mode: Option<GatewayMode>,
}

/// Node annotation OVN-Kubernetes writes with the node's gateway configuration.
pub const L3_GATEWAY_ANNOTATION: &str = "k8s.ovn.org/l3-gateway-config";

/// Reads the gateway mode from the `k8s.ovn.org/l3-gateway-config` annotation value. OVN-Kubernetes
/// writes `{"default":{"mode":"local",...}}`; a bare `{"mode":"local"}` is accepted too.
pub fn gateway_mode_from_annotation(value: &str) -> Option<GatewayMode> {
    let json: serde_json::Value = serde_json::from_str(value).ok()?;
    let mode = json.get("default").and_then(|d| d.get("mode")).or_else(|| json.get("mode"))?;
    GatewayMode::parse(mode.as_str()?)
}

/// What the webhook reads from OVN-Kubernetes' ovnkube.conf (the ovnkube-config ConfigMap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvnkubeConfig {
    /// `[gateway] mode`.
    pub gateway_mode: Option<GatewayMode>,
    /// `[default] mtu`: the MTU of every network whose spec sets none.
    pub mtu: Option<u32>,
}

impl OvnkubeConfig {
    /// Reads an ovnkube.conf (INI) text; what is missing or malformed stays unknown.
    pub fn parse(conf: &str) -> Self {
        Self {
            gateway_mode: ovnkube_conf_value(conf, "gateway", "mode").and_then(GatewayMode::parse),
            mtu: ovnkube_conf_value(conf, "default", "mtu").and_then(|m| m.parse().ok()),
        }
    }
}

/// The value of `key` in `[section]`, unquoted: OVN-Kubernetes' templates write `mtu="1400"`.
fn ovnkube_conf_value<'a>(conf: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let header = format!("[{section}]");
    let mut in_section = false;
    for line in conf.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line.eq_ignore_ascii_case(&header);
        } else if in_section
            && let Some((k, value)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(value.trim().trim_matches('"'));
        }
    }
    None
}

/// What the webhook needs of a CUDN or UDN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkFacts {
    /// `Layer2`, `Layer3` or `Localnet`.
    pub topology: String,
    /// `Primary` or `Secondary`; absent when the spec has no role (Localnet, or malformed).
    pub role: Option<String>,
    /// `EVPN` when OVN-Kubernetes' own EVPN transport already manages the network.
    pub transport: Option<String>,
    /// The network's subnets (Layer3: the cluster-wide CIDRs, not the per-node host subnets).
    pub subnets: Vec<String>,
    /// The `mtu` the spec sets; without one, OVN-Kubernetes' configured default applies.
    pub mtu: Option<u32>,
}

impl NetworkFacts {
    /// Extracts the facts from a CUDN's `spec.network` or a UDN's `spec`.
    pub fn from_network_spec(network: &serde_json::Value) -> Option<Self> {
        let topology = network.get("topology")?.as_str()?.to_owned();
        let section = match topology.as_str() {
            "Layer2" => "layer2",
            "Layer3" => "layer3",
            _ => "localnet",
        };
        let role = network.get(section).and_then(|s| s.get("role")).and_then(|r| r.as_str()).map(str::to_owned);
        let transport = network.get("transport").and_then(|t| t.as_str()).map(str::to_owned);
        let mtu =
            network.get(section).and_then(|s| s.get("mtu")).and_then(|m| m.as_u64()).and_then(|m| m.try_into().ok());
        // Layer2 lists plain CIDRs, Layer3 objects with a `cidr`.
        let subnets = network
            .get(section)
            .and_then(|s| s.get("subnets"))
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().or_else(|| s.get("cidr").and_then(|c| c.as_str())).map(str::to_owned))
            .collect();
        Some(Self { topology, role, transport, subnets, mtu })
    }
}

/// Key of a network: kind, namespace (UDN only) and name.
pub type NetworkKey = (NetworkKind, Option<String>, String);

/// The key of the network an EVPN names.
pub fn network_key(network: &NetworkRef) -> NetworkKey {
    (network.kind, network.namespace.clone(), network.name.clone())
}

/// What the webhook needs of an EVPN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvpnFacts {
    /// The VNIs it holds, per side: from its spec, and those the operator allocated into its status.
    pub vnis: Vec<(VrfSide, u32)>,
    /// The VTEP it uses.
    pub vtep: String,
    /// The network it extends.
    pub network: NetworkKey,
}

impl EvpnFacts {
    fn of(evpn: &Evpn) -> Self {
        let mut vnis = Vec::new();
        let status = evpn.status.as_ref();
        let sides = [
            (VrfSide::Mac, evpn.spec.mac_vrf.as_ref(), status.and_then(|s| s.mac_vrf.as_ref())),
            (VrfSide::Ip, evpn.spec.ip_vrf.as_ref(), status.and_then(|s| s.ip_vrf.as_ref())),
        ];
        for (side, spec, resolved) in sides {
            for vni in [spec.and_then(|v| v.vni), resolved.map(|r| r.vni)].into_iter().flatten() {
                if !vnis.contains(&(side, vni)) {
                    vnis.push((side, vni));
                }
            }
        }
        Self { vnis, vtep: evpn.spec.vtep.clone(), network: network_key(&evpn.spec.network) }
    }
}

/// The webhook's view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Index {
    evpns: HashMap<String, EvpnFacts>,
    vni_owners: HashMap<u32, BTreeSet<(String, VrfSide)>>,
    vteps: HashMap<String, VtepSpec>,
    networks: HashMap<NetworkKey, NetworkFacts>,
    nodes: BTreeMap<String, NodeFacts>,
    /// What the ovnkube-config ConfigMap says; all unknown when it is not there.
    pub ovnkube_config: OvnkubeConfig,
    /// False while the network kinds' API is not installed in the cluster.
    pub networks_api_present: bool,
}

impl Index {
    /// Records an EVPN (new or changed).
    pub fn apply_evpn(&mut self, evpn: &Evpn) {
        let name = evpn.name_any();
        self.delete_evpn(&name);
        let entry = EvpnFacts::of(evpn);
        for (side, vni) in &entry.vnis {
            self.vni_owners.entry(*vni).or_default().insert((name.clone(), *side));
        }
        self.evpns.insert(name, entry);
    }

    /// Forgets an EVPN.
    pub fn delete_evpn(&mut self, name: &str) {
        if let Some(old) = self.evpns.remove(name) {
            for (_, vni) in old.vnis {
                if let Some(owners) = self.vni_owners.get_mut(&vni) {
                    owners.retain(|(n, _)| n != name);
                    if owners.is_empty() {
                        self.vni_owners.remove(&vni);
                    }
                }
            }
        }
    }

    /// Replaces every EVPN (after a watch restarts).
    pub fn reset_evpns<'a>(&mut self, evpns: impl IntoIterator<Item = &'a Evpn>) {
        self.evpns.clear();
        self.vni_owners.clear();
        evpns.into_iter().for_each(|e| self.apply_evpn(e));
    }

    /// The EVPNs (other than `except`) that hold `vni`, with the side they hold it on.
    pub fn vni_owners(&self, vni: u32, except: &str) -> Vec<(&str, VrfSide)> {
        self.vni_owners
            .get(&vni)
            .into_iter()
            .flatten()
            .filter(|(name, _)| name != except)
            .map(|(name, side)| (name.as_str(), *side))
            .collect()
    }

    /// What the index knows of an EVPN.
    pub fn evpn(&self, name: &str) -> Option<&EvpnFacts> {
        self.evpns.get(name)
    }

    /// Names of the EVPNs that use a VTEP, sorted.
    pub fn evpns_using_vtep(&self, vtep: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self.evpns.iter().filter(|(_, e)| e.vtep == vtep).map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// Records a VTEP.
    pub fn apply_vtep(&mut self, vtep: &Vtep) {
        self.vteps.insert(vtep.name_any(), vtep.spec.clone());
    }

    /// Forgets a VTEP.
    pub fn delete_vtep(&mut self, name: &str) {
        self.vteps.remove(name);
    }

    /// Replaces every VTEP.
    pub fn reset_vteps<'a>(&mut self, vteps: impl IntoIterator<Item = &'a Vtep>) {
        self.vteps = vteps.into_iter().map(|v| (v.name_any(), v.spec.clone())).collect();
    }

    /// A VTEP's spec.
    pub fn vtep(&self, name: &str) -> Option<&VtepSpec> {
        self.vteps.get(name)
    }

    /// Records a network (or forgets it, with `None` facts).
    pub fn set_network(&mut self, key: NetworkKey, facts: Option<NetworkFacts>) {
        match facts {
            Some(f) => self.networks.insert(key, f),
            None => self.networks.remove(&key),
        };
    }

    /// Replaces every network of one kind.
    pub fn reset_networks(
        &mut self,
        kind: NetworkKind,
        networks: impl IntoIterator<Item = (NetworkKey, NetworkFacts)>,
    ) {
        self.networks.retain(|k, _| k.0 != kind);
        self.networks.extend(networks);
    }

    /// A network's facts.
    pub fn network(&self, key: &NetworkKey) -> Option<&NetworkFacts> {
        self.networks.get(key)
    }

    /// Records a node.
    pub fn set_node(&mut self, name: String, facts: Option<NodeFacts>) {
        match facts {
            Some(f) => self.nodes.insert(name, f),
            None => self.nodes.remove(&name),
        };
    }

    /// Replaces every node.
    pub fn reset_nodes(&mut self, nodes: impl IntoIterator<Item = (String, NodeFacts)>) {
        self.nodes = nodes.into_iter().collect();
    }

    /// Every node, by name.
    pub fn nodes(&self) -> &BTreeMap<String, NodeFacts> {
        &self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_mode_from_the_node_annotation() {
        let ovn = r#"{"default":{"mode":"local","interface-id":"breth0_n1","mac-address":"0a:58:0a:f4:00:01"}}"#;
        assert_eq!(gateway_mode_from_annotation(ovn), Some(GatewayMode::Local));
        assert_eq!(gateway_mode_from_annotation(r#"{"default":{"mode":"shared"}}"#), Some(GatewayMode::Shared));
        assert_eq!(gateway_mode_from_annotation(r#"{"mode":"local"}"#), Some(GatewayMode::Local));
        assert_eq!(gateway_mode_from_annotation(r#"{"default":{"mode":"disabled"}}"#), None);
        assert_eq!(gateway_mode_from_annotation("not json"), None);
    }

    #[test]
    fn gateway_mode_and_mtu_from_the_configmap() {
        let conf = "[default]\nmtu=\"8900\"\nmode=shared\n\n[gateway]\nmode=local\nnodeport=true\n";
        assert_eq!(
            OvnkubeConfig::parse(conf),
            OvnkubeConfig { gateway_mode: Some(GatewayMode::Local), mtu: Some(8900) }
        );
        assert_eq!(OvnkubeConfig::parse("[Gateway]\n mode = shared \n").gateway_mode, Some(GatewayMode::Shared));
        assert_eq!(OvnkubeConfig::parse("[default]\nmode=local\nmtu=jumbo\n"), OvnkubeConfig::default());
    }

    #[test]
    fn network_mtu_from_either_topology() {
        let layer2 = serde_json::json!({"topology": "Layer2", "layer2": {"role": "Primary", "mtu": 9000}});
        assert_eq!(NetworkFacts::from_network_spec(&layer2).map(|f| f.mtu), Some(Some(9000)));
        let layer3 = serde_json::json!({"topology": "Layer3", "layer3": {"role": "Primary", "subnets": [{"cidr": "10.0.0.0/16"}]}});
        assert_eq!(NetworkFacts::from_network_spec(&layer3).map(|f| f.mtu), Some(None));
    }

    #[test]
    fn vni_owners_follow_updates_and_deletes() {
        let mut ix = Index::default();
        let mut blue: Evpn = serde_json::from_value(serde_json::json!({
            "apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": "blue"},
            "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "macVRF": {"vni": 100}},
            "status": {"ipVRF": {"vni": 200, "routeTargets": {}}}
        }))
        .unwrap();
        ix.apply_evpn(&blue);
        assert_eq!(ix.vni_owners(100, "red"), vec![("blue", VrfSide::Mac)]);
        assert_eq!(ix.vni_owners(200, "red"), vec![("blue", VrfSide::Ip)]);
        assert!(ix.vni_owners(100, "blue").is_empty());
        blue.spec.mac_vrf = None;
        ix.apply_evpn(&blue);
        assert!(ix.vni_owners(100, "red").is_empty());
        ix.delete_evpn("blue");
        assert!(ix.vni_owners(200, "red").is_empty());
        assert!(ix.evpns_using_vtep("fabric").is_empty());
    }
}
