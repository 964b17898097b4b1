//! frr-k8s mode: the EVPN part of FRR's configuration as typed `FRRConfiguration` objects.
//!
//! A VTEP with `frrConfigurationSelector` leaves BGP to frr-k8s. The user's own configurations
//! (those the selector picks) hold the underlay: the router in the default VRF, its AS number and
//! its sessions. The operator adds, in the same namespace, configurations that frr-k8s merges
//! with them, following frr-k8s' merge rules so the result is valid:
//!
//! - the default-VRF router again, with the underlay's AS number and its neighbors repeated with
//!   the fields frr-k8s requires to be equal for a merge (AS, port, source address, password,
//!   multihop, timers) and `addressFamilies: [evpn]` (families are merged as a union),
//!   `advertiseVNIs: All`, and the MAC-VRFs as `l2vnis`, at most ten per object, as frr-k8s'
//!   schema allows; named `evpn-<vtep>-l2-<n>`;
//! - one router per IP-VRF (`vrf`, `l3vni` with `advertisePrefixes: [unicast]`, the subnets as
//!   `prefixes`): for Layer2 networks with IRB in `evpn-<vtep>-irb`, for Layer3 networks, whose
//!   subnet differs per node, in one `evpn-<vtep>-node-<node>` per node.
//!
//! Route targets are written exactly as resolved: explicit ones as given, none when the EVPN left
//! them to FRR's `ASN:VNI` default, so a VNI is never both implicit and explicit (which frr-k8s
//! refuses). Route distinguishers are left to FRR (`<router ID>:<n>`), unique per node without a
//! per-node object. Never `raw`.

use std::collections::{BTreeMap, BTreeSet};

use evpn_crds::common::selector_matches;
use evpn_crds::frrk8s::{
    FrrBgp, FrrConfiguration, FrrConfigurationSpec, FrrEvpn, FrrL3Vni, FrrNeighbor, FrrRouter, FrrVni,
};
use evpn_crds::networkset::SetNetwork;
use evpn_crds::nodestate::NodeVrf;
use evpn_crds::{EvpnNetworkSetSpec, Vtep};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// Label on every FRRConfiguration the operator writes: the VTEP it belongs to.
pub const VTEP_LABEL: &str = "evpn.k8s.ovn.org/vtep";
/// Label every object the operator writes carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "evpn-operator");
/// The most `l2vnis` frr-k8s accepts in one router of one configuration.
pub const L2VNIS_PER_OBJECT: usize = 10;
/// Node label frr-k8s' per-node configurations select on.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What the selected underlay configurations say about the default VRF.
#[derive(Clone, Debug, PartialEq)]
pub struct Underlay {
    pub asn: u32,
    pub neighbors: Vec<FrrNeighbor>,
}

/// Reads the underlay from the user's configurations that `vtep` selects; says why when there is
/// none to build on.
pub fn underlay(vtep: &Vtep, configurations: &[&FrrConfiguration]) -> Result<Underlay, String> {
    let Some(selector) = &vtep.spec.frr_configuration_selector else {
        return Err("the VTEP has no frrConfigurationSelector".into());
    };
    let selected: Vec<&FrrConfiguration> = configurations
        .iter()
        .copied()
        .filter(|c| !is_ours(&c.metadata))
        .filter(|c| selector_matches(selector, c.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .collect();
    let routers: Vec<(&str, &FrrRouter)> = selected
        .iter()
        .flat_map(|c| c.spec.bgp.routers.iter().map(move |r| (c.metadata.name.as_deref().unwrap_or_default(), r)))
        .filter(|(_, r)| r.vrf.is_empty())
        .collect();
    let asns: BTreeSet<u32> = routers.iter().map(|(_, r)| r.asn).collect();
    let asn = match asns.len() {
        1 => asns.into_iter().next().unwrap_or_default(),
        0 => {
            return Err(format!(
                "no FRRConfiguration matched by the VTEP's frrConfigurationSelector has a router in the default VRF \
                 ({} selected)",
                selected.len()
            ));
        }
        _ => return Err(format!("the selected FRRConfigurations disagree on the default VRF's AS number: {asns:?}")),
    };
    let mut neighbors: BTreeMap<String, FrrNeighbor> = BTreeMap::new();
    for (config, router) in &routers {
        for n in &router.neighbors {
            let Some(key) = n.key() else {
                return Err(format!("FRRConfiguration {config} has a neighbor with neither address nor interface"));
            };
            neighbors.entry(key.to_owned()).or_insert_with(|| evpn_session(n));
        }
    }
    if neighbors.is_empty() {
        return Err("the selected FRRConfigurations' default-VRF router has no neighbor to carry EVPN".into());
    }
    Ok(Underlay { asn, neighbors: neighbors.into_values().collect() })
}

/// The underlay session with EVPN enabled: the fields frr-k8s compares when merging two
/// neighbors are kept, the rest (filters, BFD profile) is left to the user's configuration.
fn evpn_session(n: &FrrNeighbor) -> FrrNeighbor {
    FrrNeighbor {
        address_families: vec!["evpn".into()],
        bfd_profile: None,
        dual_stack_address_family: None,
        ..n.clone()
    }
}

/// Whether the operator wrote this object.
pub fn is_ours(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_some_and(|l| l.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1))
        && meta.labels.as_ref().is_some_and(|l| l.contains_key(VTEP_LABEL))
}

/// A node of the VTEP with the per-node subnets OVN-Kubernetes gave it, by OVN network name.
pub struct NodeSubnets<'a> {
    pub name: &'a str,
    pub subnets: &'a BTreeMap<String, Vec<String>>,
}

/// Every FRRConfiguration the operator wants for `vtep`, by name.
pub fn configurations(
    namespace: &str,
    vtep: &Vtep,
    underlay: &Underlay,
    set: &EvpnNetworkSetSpec,
    nodes: &[NodeSubnets<'_>],
) -> BTreeMap<String, FrrConfiguration> {
    let vtep_name = vtep.metadata.name.as_deref().unwrap_or_default();
    let object = |name: String, node_selector: Option<LabelSelector>, routers: Vec<FrrRouter>| {
        let labels = BTreeMap::from([
            (VTEP_LABEL.to_owned(), vtep_name.to_owned()),
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        ]);
        let owner = OwnerReference {
            api_version: "evpn.k8s.ovn.org/v1alpha1".into(),
            kind: "VTEP".into(),
            name: vtep_name.to_owned(),
            uid: vtep.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let config = FrrConfiguration {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: FrrConfigurationSpec { bgp: FrrBgp { routers, bfd_profiles: Vec::new() }, node_selector },
        };
        (name, config)
    };
    let vtep_nodes = vtep.spec.node_selector.clone();
    let mut out = BTreeMap::new();

    let l2vnis: Vec<FrrVni> = set.networks.iter().filter_map(|n| n.mac_vrf.as_ref()).map(vni).collect();
    // At least one object, so the sessions carry EVPN (and IP-VRFs' type-5 routes) without MAC-VRFs.
    let chunks: Vec<&[FrrVni]> = if l2vnis.is_empty() { vec![&[]] } else { l2vnis.chunks(L2VNIS_PER_OBJECT).collect() };
    for (i, chunk) in chunks.into_iter().enumerate() {
        let router = FrrRouter {
            asn: underlay.asn,
            neighbors: underlay.neighbors.clone(),
            evpn: Some(FrrEvpn { advertise_vnis: Some("All".into()), l2vnis: chunk.to_vec(), l3vni: None }),
            ..Default::default()
        };
        out.extend([object(format!("evpn-{vtep_name}-l2-{i}"), vtep_nodes.clone(), vec![router])]);
    }

    let vrf_router = |n: &SetNetwork, ip_vrf: &NodeVrf, prefixes: Vec<String>| FrrRouter {
        asn: underlay.asn,
        vrf: n.vrf.clone(),
        prefixes,
        evpn: Some(FrrEvpn {
            l3vni: Some(FrrL3Vni { vni: vni(ip_vrf), advertise_prefixes: vec!["unicast".into()] }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let irb: Vec<FrrRouter> = set
        .networks
        .iter()
        .filter(|n| n.mac_vrf.is_some())
        .filter_map(|n| Some(vrf_router(n, n.ip_vrf.as_ref()?, n.subnets.clone())))
        .collect();
    if !irb.is_empty() {
        out.extend([object(format!("evpn-{vtep_name}-irb"), vtep_nodes.clone(), irb)]);
    }

    let layer3: Vec<(&SetNetwork, &NodeVrf)> =
        set.networks.iter().filter(|n| n.mac_vrf.is_none()).filter_map(|n| Some((n, n.ip_vrf.as_ref()?))).collect();
    if !layer3.is_empty() {
        for node in nodes {
            let routers: Vec<FrrRouter> = layer3
                .iter()
                .filter_map(|(n, ip_vrf)| {
                    // A node OVN-Kubernetes has not given a subnet of this network yet has nothing
                    // to announce in it.
                    let prefixes = node.subnets.get(&crate::plan::ovn_network_name(&n.network))?;
                    Some(vrf_router(n, ip_vrf, prefixes.clone()))
                })
                .collect();
            if routers.is_empty() {
                continue;
            }
            let selector = LabelSelector {
                match_labels: Some(BTreeMap::from([(HOSTNAME_LABEL.to_owned(), node.name.to_owned())])),
                match_expressions: None,
            };
            out.extend([object(format!("evpn-{vtep_name}-node-{}", node.name), Some(selector), routers)]);
        }
    }
    out
}

fn vni(vrf: &NodeVrf) -> FrrVni {
    FrrVni {
        vni: vrf.vni,
        rd: None,
        import_rts: vrf.route_targets.import.clone(),
        export_rts: vrf.route_targets.export.clone(),
    }
}

#[cfg(test)]
mod tests;
