//! The operator's decisions, as one pure function of what the cluster holds.
//!
//! Every round, [`Planner::plan`] takes a snapshot of the objects (EVPNs, VTEPs, Nodes, networks,
//! and what each node's agent reported) and returns everything the operator wants written: EVPN
//! statuses (allocations first), one spec per node, VTEP statuses, finalizer changes. The
//! controller only diffs that against what it observed and writes the difference.
//!
//! Allocation is race-free because one leader plans everything in one place, in a fixed order,
//! and restart-safe because every allocation is persisted in an object before anything depends
//! on it: VNIs, route-distinguisher indexes and ESIs live in the EVPN's status, which the
//! controller writes before any node spec that uses them; VTEP IPs live in the node's own
//! EVPNNodeState spec. A new leader rebuilds its pools from those objects before its first
//! decision (see docs/architecture.md).
//!
//! Statuses and node states do not survive everything: a restore without status (what common
//! backup tools do by default) or a re-created cluster loses them. So every allocation is also
//! recorded in the spec field the user left empty, the way a Service's clusterIP is: the EVPN's
//! `vni`, `routeDistinguisherIndex` and `multiHoming.derivedESIs`, the VTEP's `nodeAddresses`. A re-apply of the user's YAML, which leaves those fields out, keeps them (a
//! field no apply ever set is not removed), and the pools are rebuilt from specs first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use evpn_crds::common::RD_INDEX_RANGE;
use evpn_crds::common::{Condition, NetworkKind, NetworkRef, RouteTargets, selector_matches};
use evpn_crds::evpn::AUTO_ESI;
use evpn_crds::evpn::{NodeCounts, NodeFailure, ResolvedSegment, ResolvedVrf, condition};
use evpn_crds::frrk8s::{BgpSessionStateStatus, FrrConfiguration, FrrNodeStateStatus};
use evpn_crds::networkset::SetNetwork;
use evpn_crds::nodestate::{DesignatedForwarderRole, NetworkPhase, NodeSegment, NodeVrf, NodeVtep, SegmentState};
use evpn_crds::validation::{EsiSpec, colon_hex, esi_bytes, parse_cidr, parse_esi};
use evpn_crds::vtep::{NodeAddress, VtepMode};
use evpn_crds::{Evpn, EvpnNetworkSet, EvpnNetworkSetSpec, EvpnNodeStateSpec, EvpnSpec, EvpnStatus, Vtep, VtepStatus};
use evpn_webhook::index::{NetworkFacts, NetworkKey, VrfSide};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::allocator::{Pool, host_address, host_index};
use crate::frrk8s;

/// Finalizer that holds an EVPN until every node has removed it.
pub const FINALIZER: &str = "evpn.k8s.ovn.org/node-cleanup";

/// Route-distinguisher indexes handed out (see [`RD_INDEX_RANGE`]).
const RD_INDEXES: (u32, u32) = (*RD_INDEX_RANGE.start(), *RD_INDEX_RANGE.end());
/// Discriminators of type-3 ESIs (3 bytes).
const ESI_DISCRIMINATORS: (u32, u32) = (1, 0x00ff_ffff);
/// Addresses per CIDR the IP pool can address; larger prefixes are used up to this many.
const HOSTS_PER_CIDR: u32 = 1 << 24;
/// Failing nodes listed in an EVPN's status.
const MAX_FAILED_NODES: usize = 10;

/// What the planner needs of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The node's own subnets of each network, by OVN network name (`k8s.ovn.org/node-subnets`).
    pub subnets: BTreeMap<String, Vec<String>>,
}

impl NodeInfo {
    /// Reads OVN-Kubernetes' `k8s.ovn.org/node-subnets` annotation, whose values are a CIDR or a
    /// list of them depending on the OVN-Kubernetes version. Unreadable means none.
    pub fn parse_subnets(annotation: Option<&String>) -> BTreeMap<String, Vec<String>> {
        let Some(map) =
            annotation.and_then(|a| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a).ok())
        else {
            return BTreeMap::new();
        };
        map.into_iter()
            .map(|(network, v)| {
                let cidrs = match v {
                    serde_json::Value::String(c) => vec![c],
                    serde_json::Value::Array(a) => {
                        a.into_iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()
                    }
                    _ => Vec::new(),
                };
                (network, cidrs)
            })
            .collect()
    }
}

/// What an agent reported for one network it lists as not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedNetwork {
    pub phase: NetworkPhase,
    pub applied_generation: Option<i64>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// What the planner keeps of an observed EVPNNodeState.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedNodeState {
    pub spec: EvpnNodeStateSpec,
    /// Whether the agent ever reported: a node whose agent never ran holds nothing to release.
    pub reporting: bool,
    /// The agent has acted on the current spec.
    pub caught_up: bool,
    /// Network set name to the (set UID, revision) the agent acted on.
    pub applied_sets: HashMap<String, (String, i64)>,
    /// The networks the agent lists as not applied.
    pub unapplied: HashMap<Arc<str>, ReportedNetwork>,
    /// The Ethernet segments as the agent reports them.
    pub segments: Vec<SegmentState>,
}

impl ObservedNodeState {
    /// Reduces a node state to what the planner needs.
    pub fn of(state: &evpn_crds::EvpnNodeState) -> Self {
        let status = state.status.as_ref();
        let unapplied = status
            .iter()
            .flat_map(|s| &s.unapplied_networks)
            .map(|n| {
                let report = ReportedNetwork {
                    phase: n.phase,
                    applied_generation: n.applied_generation,
                    reason: n.reason.clone(),
                    message: n.message.clone(),
                };
                (Arc::from(n.evpn.as_str()), report)
            })
            .collect();
        Self {
            spec: state.spec.clone(),
            reporting: status.is_some(),
            caught_up: status.is_some_and(|s| s.observed_generation == state.metadata.generation),
            applied_sets: status
                .iter()
                .flat_map(|s| &s.network_sets)
                .map(|a| (a.name.clone(), (a.uid.clone(), a.revision)))
                .collect(),
            unapplied,
            segments: status.map(|s| s.ethernet_segments.clone()).unwrap_or_default(),
        }
    }

    fn vtep_ip(&self, vtep: &str) -> Option<&str> {
        self.spec.vteps.iter().find(|v| v.name == vtep)?.ip.as_deref()
    }

    /// Whether the agent has acted on `set` at its current revision.
    fn has_applied(&self, set: &EvpnNetworkSet, revision: i64) -> bool {
        let (Some(uid), Some((applied_uid, applied))) =
            (set.metadata.uid.as_ref(), self.applied_sets.get(name(&set.metadata)))
        else {
            return false;
        };
        uid == applied_uid && *applied >= revision
    }
}

/// Everything the planner looks at in one round.
pub struct Snapshot<'a> {
    pub evpns: &'a [Arc<Evpn>],
    pub vteps: &'a [Arc<Vtep>],
    pub nodes: &'a [NodeInfo],
    pub networks: &'a HashMap<NetworkKey, NetworkFacts>,
    /// OVN-Kubernetes' network IDs, by OVN network name (from its NetworkAttachmentDefinitions).
    pub network_ids: &'a HashMap<String, u32>,
    pub network_sets: &'a BTreeMap<String, Arc<EvpnNetworkSet>>,
    pub node_states: &'a BTreeMap<String, ObservedNodeState>,
    /// frr-k8s mode: the FRRConfigurations of frr-k8s' namespace (the users' and ours).
    pub frr_configurations: &'a [Arc<FrrConfiguration>],
    /// frr-k8s mode: what frr-k8s reports per node.
    pub frr_node_states: &'a BTreeMap<String, FrrNodeStateStatus>,
    /// frr-k8s mode: the BGP sessions frr-k8s reports, by node.
    pub frr_sessions: &'a BTreeMap<String, Vec<BgpSessionStateStatus>>,
    /// frr-k8s mode: the namespace frr-k8s reads FRRConfigurations from.
    pub frr_namespace: &'a str,
    pub now: Time,
}

/// A VTEP's network set as it should be, and the VTEP that owns it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSetPlan {
    pub vtep_uid: String,
    pub spec: EvpnNetworkSetSpec,
}

/// A node's state as it should be, and the Node that owns it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub uid: String,
    pub spec: EvpnNodeStateSpec,
}

/// What the operator wants the cluster to hold.
#[derive(Debug, Default)]
pub struct Plan {
    pub evpn_statuses: BTreeMap<String, EvpnStatus>,
    pub network_sets: BTreeMap<String, NetworkSetPlan>,
    pub node_specs: BTreeMap<String, NodeSpec>,
    pub vtep_statuses: BTreeMap<String, VtepStatus>,
    /// frr-k8s mode: every FRRConfiguration the operator wants, by name; others it wrote go.
    pub frr_configurations: BTreeMap<String, FrrConfiguration>,
    /// EVPN specs with the allocations they left out recorded, where they differ from the
    /// observed spec.
    pub evpn_specs: BTreeMap<String, EvpnSpec>,
    /// Managed VTEPs' `nodeAddresses` as they should be, where they differ from the observed spec.
    pub vtep_addresses: BTreeMap<String, Vec<NodeAddress>>,
    pub add_finalizer: Vec<String>,
    pub remove_finalizer: Vec<String>,
}

type VrfOwner = (String, VrfSide);

/// The allocation pools, kept between rounds by the leader and rebuilt from the objects by a new one.
#[derive(Debug, Default)]
pub struct Planner {
    vnis: Pool<VrfOwner>,
    rd_indexes: Pool<VrfOwner>,
    esis: Pool<(String, String)>,
    ips: HashMap<String, Pool<String>>,
    owned_vni: HashMap<VrfOwner, u32>,
    owned_rd: HashMap<VrfOwner, u32>,
    /// Cluster-wide system MAC of type-3 ESIs.
    pub system_mac: [u8; 6],
}

/// Why an EVPN is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rejection {
    InvalidSpec(String),
    VtepNotFound,
    Conflict(String),
    Exhausted(String),
}

impl Planner {
    /// A planner with empty pools and the given ESI system MAC.
    pub fn new(system_mac: [u8; 6]) -> Self {
        Self { system_mac, ..Default::default() }
    }

    /// VNIs held, for metrics.
    pub fn vnis_in_use(&self) -> usize {
        self.vnis.len()
    }

    /// VTEP IPs held, for metrics.
    pub fn ips_in_use(&self) -> usize {
        self.ips.values().map(Pool::len).sum()
    }

    /// Every VNI with its holder.
    pub fn vni_holders(&self) -> impl Iterator<Item = (u32, &VrfOwner)> {
        self.vnis.iter()
    }

    /// Decides everything for one round.
    pub fn plan(&mut self, snap: &Snapshot<'_>) -> Plan {
        let mut evpns: Vec<&Evpn> = snap.evpns.iter().map(AsRef::as_ref).collect();
        // Oldest first: on a tie for a VNI nobody holds yet, the EVPN created first wins.
        evpns.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_ref(), &a.metadata.name)
                .cmp(&(b.metadata.creation_timestamp.as_ref(), &b.metadata.name))
        });
        let vteps: BTreeMap<&str, &Vtep> = snap.vteps.iter().map(|v| (name(&v.metadata), v.as_ref())).collect();

        let rejections = self.allocate(&evpns, &vteps);
        self.allocate_ips(&vteps, snap);

        let mut plan = Plan::default();
        let carried = carried_networks(&evpns, &vteps, &rejections, snap);
        plan.network_sets = self.network_sets(&carried, &vteps, snap);
        let underlays = frr_k8s_underlays(&vteps, snap);
        for (vtep_name, underlay) in &underlays {
            if let (Ok(underlay), Some(vtep), Some(set)) =
                (underlay, vteps.get(vtep_name), plan.network_sets.get(*vtep_name))
            {
                let nodes: Vec<frrk8s::NodeSubnets<'_>> = selected_nodes(vtep, snap.nodes)
                    .map(|n| frrk8s::NodeSubnets { name: &n.name, subnets: &n.subnets })
                    .collect();
                plan.frr_configurations.extend(frrk8s::configurations(
                    snap.frr_namespace,
                    vtep,
                    underlay,
                    &set.spec,
                    &nodes,
                ));
            }
        }
        for evpn in &evpns {
            let n = name(&evpn.metadata);
            let entry = plan
                .network_sets
                .get(evpn.spec.vtep.as_str())
                .and_then(|s| s.spec.networks.iter().find(|net| net.evpn == n));
            let underlay = underlays.get(evpn.spec.vtep.as_str()).and_then(|u| u.as_ref().err());
            let status = self.evpn_status(evpn, &vteps, rejections.get(n), entry, underlay, snap);
            plan.evpn_statuses.insert(n.to_owned(), status);
            let has_finalizer = evpn.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
            if evpn.metadata.deletion_timestamp.is_none() && !has_finalizer {
                plan.add_finalizer.push(n.to_owned());
            }
            if evpn.metadata.deletion_timestamp.is_some() && has_finalizer && released_everywhere(evpn, snap) {
                plan.remove_finalizer.push(n.to_owned());
            }
        }
        for evpn in &evpns {
            let n = name(&evpn.metadata);
            if rejections.contains_key(n) || evpn.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let recorded = self.recorded_spec(evpn);
            if recorded != evpn.spec {
                plan.evpn_specs.insert(n.to_owned(), recorded);
            }
        }
        for (vtep_name, vtep) in &vteps {
            let addresses = self.node_addresses(vtep_name, vtep);
            if vtep.spec.mode == VtepMode::Managed && addresses != vtep.spec.node_addresses {
                plan.vtep_addresses.insert((*vtep_name).to_owned(), addresses);
            }
        }
        plan.node_specs = self.node_specs(&carried, &vteps, snap);
        for (vtep_name, vtep) in &vteps {
            let underlay = underlays.get(vtep_name).and_then(|u| u.as_ref().err());
            plan.vtep_statuses.insert((*vtep_name).to_owned(), self.vtep_status(vtep_name, vtep, underlay, snap));
        }
        plan
    }

    fn allocate(&mut self, evpns: &[&Evpn], vteps: &BTreeMap<&str, &Vtep>) -> HashMap<String, Rejection> {
        let alive: BTreeSet<&str> = evpns.iter().map(|e| name(&e.metadata)).collect();
        let wanted = |owner: &VrfOwner, evpns: &[&Evpn]| {
            alive.contains(owner.0.as_str())
                && evpns.iter().any(|e| name(&e.metadata) == owner.0 && vrf(e, owner.1).is_some())
        };
        self.vnis.retain(|o| wanted(o, evpns));
        self.rd_indexes.retain(|o| wanted(o, evpns));
        self.owned_vni.retain(|o, _| wanted(o, evpns));
        self.owned_rd.retain(|o, _| wanted(o, evpns));
        self.esis.retain(|(e, seg)| {
            evpns.iter().any(|x| {
                name(&x.metadata) == e
                    && x.spec
                        .multi_homing
                        .iter()
                        .flat_map(|m| &m.ethernet_segments)
                        .any(|s| &s.name == seg && s.esi == AUTO_ESI)
            })
        });

        let mut rejections = HashMap::new();
        // 1. What the objects already record: a restarted leader learns its pools from these,
        // specs first (they survive a restore), then statuses (written before specs recorded).
        for evpn in evpns {
            let n = name(&evpn.metadata);
            for side in [VrfSide::Mac, VrfSide::Ip] {
                let owner = (n.to_owned(), side);
                let Some(want) = vrf(evpn, side).and_then(|v| v.route_distinguisher_index) else { continue };
                if let Err((holder, _)) = claim_for(&mut self.rd_indexes, &mut self.owned_rd, owner, want) {
                    rejections.entry(n.to_owned()).or_insert_with(|| {
                        Rejection::Conflict(format!(
                            "spec.{}.routeDistinguisherIndex {want} is held by EVPN {holder:?}; leave it empty to have one allocated",
                            side.field()
                        ))
                    });
                }
            }
            for (seg, esi) in evpn.spec.multi_homing.iter().flat_map(|m| &m.derived_esis) {
                if let Some(d) = self.discriminator_of(esi) {
                    let _ = self.esis.claim(d, &(n.to_owned(), seg.clone()));
                }
            }
        }
        for evpn in evpns {
            let n = name(&evpn.metadata);
            for side in [VrfSide::Mac, VrfSide::Ip] {
                let (Some(_), Some(resolved)) = (vrf(evpn, side), resolved(evpn, side)) else { continue };
                let owner = (n.to_owned(), side);
                if !self.owned_vni.contains_key(&owner) && self.vnis.claim(resolved.vni, &owner).is_ok() {
                    self.owned_vni.insert(owner.clone(), resolved.vni);
                }
                // An index recorded before the range moved is replaced by a new one.
                if let Some(rd) = resolved.route_distinguisher_index
                    && (RD_INDEXES.0..=RD_INDEXES.1).contains(&rd)
                    && !self.owned_rd.contains_key(&owner)
                    && self.rd_indexes.claim(rd, &owner).is_ok()
                {
                    self.owned_rd.insert(owner, rd);
                }
            }
            for seg in evpn.status.iter().flat_map(|s| &s.ethernet_segments) {
                let owner = (n.to_owned(), seg.name.clone());
                if let Some(d) = self.discriminator_of(&seg.esi)
                    && !self.esis.iter().any(|(_, o)| o == &owner)
                {
                    let _ = self.esis.claim(d, &owner);
                }
            }
        }

        // 2. Explicit VNIs: a VNI somebody holds stays theirs; the loser is told who holds it.
        for evpn in evpns {
            let n = name(&evpn.metadata);
            if rejections.contains_key(n) {
                continue;
            }
            let errors = evpn.spec.validate();
            if !errors.is_empty() {
                rejections.insert(n.to_owned(), Rejection::InvalidSpec(evpn_crds::validation::join(&errors)));
                continue;
            }
            for side in [VrfSide::Mac, VrfSide::Ip] {
                let Some(want) = vrf(evpn, side).and_then(|v| v.vni) else { continue };
                let owner = (n.to_owned(), side);
                if let Err((holder, holder_side)) = claim_for(&mut self.vnis, &mut self.owned_vni, owner, want) {
                    rejections.entry(n.to_owned()).or_insert_with(|| {
                        Rejection::Conflict(format!(
                            "spec.{}.vni {want} is held by EVPN {holder:?} ({}); choose another VNI or leave it empty",
                            side.field(),
                            holder_side.field()
                        ))
                    });
                }
            }
        }
        // 3. Everything left out: VNIs from the VTEP's ranges, RD indexes, ESI discriminators.
        for evpn in evpns {
            let n = name(&evpn.metadata);
            if rejections.contains_key(n) {
                continue;
            }
            let Some(vtep) = vteps.get(evpn.spec.vtep.as_str()) else {
                rejections.insert(n.to_owned(), Rejection::VtepNotFound);
                continue;
            };
            let ranges: Vec<(u32, u32)> = vtep.spec.vni_ranges.iter().map(|r| (r.start, r.end)).collect();
            for side in [VrfSide::Mac, VrfSide::Ip] {
                if vrf(evpn, side).is_none() {
                    continue;
                }
                let owner = (n.to_owned(), side);
                if !self.owned_vni.contains_key(&owner) {
                    match self.vnis.allocate(&ranges, &owner) {
                        Some(v) => {
                            self.owned_vni.insert(owner.clone(), v);
                        }
                        None => {
                            let why = if ranges.is_empty() {
                                format!(
                                    "VTEP {:?} has no vniRanges: set spec.{}.vni or add ranges",
                                    evpn.spec.vtep,
                                    side.field()
                                )
                            } else {
                                format!("every VNI in VTEP {:?}'s vniRanges is in use", evpn.spec.vtep)
                            };
                            rejections.insert(n.to_owned(), Rejection::Exhausted(why));
                            break;
                        }
                    }
                }
                if !self.owned_rd.contains_key(&owner)
                    && let Some(rd) = self.rd_indexes.allocate(&[RD_INDEXES], &owner)
                {
                    self.owned_rd.insert(owner, rd);
                }
            }
            for seg in evpn.spec.multi_homing.iter().flat_map(|m| &m.ethernet_segments) {
                let owner = (n.to_owned(), seg.name.clone());
                let recorded = evpn.spec.multi_homing.as_ref().is_some_and(|m| m.derived_esis.contains_key(&seg.name));
                if seg.esi == AUTO_ESI && !recorded && !self.esis.iter().any(|(_, o)| o == &owner) {
                    let _ = self.esis.allocate(&[ESI_DISCRIMINATORS], &owner);
                }
            }
        }
        rejections
    }

    fn discriminator_of(&self, esi: &str) -> Option<u32> {
        discriminator_of(esi, self.system_mac)
    }

    /// `evpn`'s spec with what it left out recorded: the VNIs, route-distinguisher indexes and
    /// type-3 ESIs allocated to it.
    fn recorded_spec(&self, evpn: &Evpn) -> EvpnSpec {
        let n = name(&evpn.metadata);
        let mut spec = evpn.spec.clone();
        for (side, vrf) in [(VrfSide::Mac, &mut spec.mac_vrf), (VrfSide::Ip, &mut spec.ip_vrf)] {
            let Some(vrf) = vrf.as_mut() else { continue };
            let owner = (n.to_owned(), side);
            vrf.vni = vrf.vni.or_else(|| self.owned_vni.get(&owner).copied());
            vrf.route_distinguisher_index =
                vrf.route_distinguisher_index.or_else(|| self.owned_rd.get(&owner).copied());
        }
        if let Some(mh) = spec.multi_homing.as_mut() {
            for seg in mh.ethernet_segments.iter().filter(|s| s.esi == AUTO_ESI) {
                if mh.derived_esis.contains_key(&seg.name) {
                    continue;
                }
                if let Some((d, _)) = self.esis.iter().find(|(_, o)| o.0 == n && o.1 == seg.name) {
                    mh.derived_esis.insert(seg.name.clone(), self.type3_esi(d));
                }
            }
        }
        spec
    }

    /// A Managed VTEP's node addresses as allocated, by node name.
    fn node_addresses(&self, vtep_name: &str, vtep: &Vtep) -> Vec<NodeAddress> {
        let Some(pool) = self.ips.get(vtep_name) else { return Vec::new() };
        let mut addresses: Vec<NodeAddress> = pool
            .iter()
            .filter_map(|(_, node)| {
                Some(NodeAddress { node: node.clone(), ip: self.vtep_ip(vtep_name, node, &vtep.spec)? })
            })
            .collect();
        addresses.sort();
        addresses
    }

    fn type3_esi(&self, discriminator: u32) -> String {
        let d = discriminator.to_be_bytes();
        let bytes = [
            0x03,
            self.system_mac[0],
            self.system_mac[1],
            self.system_mac[2],
            self.system_mac[3],
            self.system_mac[4],
            self.system_mac[5],
            d[1],
            d[2],
            d[3],
        ];
        colon_hex(&bytes)
    }

    fn allocate_ips(&mut self, vteps: &BTreeMap<&str, &Vtep>, snap: &Snapshot<'_>) {
        self.ips.retain(|v, _| vteps.get(v.as_str()).is_some_and(|v| v.spec.mode == VtepMode::Managed));
        for (vtep_name, vtep) in vteps {
            if vtep.spec.mode != VtepMode::Managed {
                continue;
            }
            let cidrs: Vec<_> = vtep.spec.cidrs.iter().filter_map(|c| parse_cidr(c).ok()).collect();
            let selected: BTreeSet<&str> = selected_nodes(vtep, snap.nodes).map(|n| n.name.as_str()).collect();
            let pool = self.ips.entry((*vtep_name).to_owned()).or_default();
            pool.retain(|node| selected.contains(node.as_str()));
            // Addresses recorded in the VTEP's spec, then (written before specs recorded them) in
            // node states, are the record: keep them.
            let recorded = vtep.spec.node_addresses.iter().map(|a| (&a.node, Some(a.ip.as_str())));
            let in_states = snap.node_states.iter().map(|(node, state)| (node, state.vtep_ip(vtep_name)));
            for (node, ip) in recorded.chain(in_states) {
                if let Some(ip) = ip
                    && selected.contains(node.as_str())
                    && pool.iter().all(|(_, o)| o != node)
                    && let Ok(ip) = ip.parse::<IpAddr>()
                    && let Some(key) =
                        cidrs.iter().enumerate().find_map(|(i, c)| Some(i as u32 * HOSTS_PER_CIDR + host_index(c, ip)?))
                {
                    let _ = pool.claim(key, node);
                }
            }
            let ranges: Vec<(u32, u32)> = cidrs
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let count = host_count(c);
                    (count > 0).then(|| (i as u32 * HOSTS_PER_CIDR, i as u32 * HOSTS_PER_CIDR + count - 1))
                })
                .collect();
            for node in &selected {
                if pool.iter().all(|(_, o)| o != node) {
                    let _ = pool.allocate(&ranges, &(*node).to_owned());
                }
            }
        }
    }

    fn vtep_ip(&self, vtep: &str, node: &str, spec: &evpn_crds::VtepSpec) -> Option<String> {
        let (key, _) = self.ips.get(vtep)?.iter().find(|(_, o)| o.as_str() == node)?;
        let cidr = parse_cidr(spec.cidrs.get((key / HOSTS_PER_CIDR) as usize)?).ok()?;
        host_address(&cidr, key % HOSTS_PER_CIDR).map(|ip| ip.to_string())
    }

    fn resolved_vrf(&self, evpn: &Evpn, side: VrfSide, asn: Option<u32>) -> Option<ResolvedVrf> {
        let owner = (name(&evpn.metadata).to_owned(), side);
        let vni = *self.owned_vni.get(&owner)?;
        let explicit = vrf(evpn, side)?.route_targets.clone().unwrap_or_default();
        let auto = || asn.map(|a| vec![format!("{}:{vni}", auto_rt_asn(a))]).unwrap_or_default();
        let route_targets = RouteTargets {
            import: if explicit.import.is_empty() { auto() } else { explicit.import },
            export: if explicit.export.is_empty() { auto() } else { explicit.export },
        };
        Some(ResolvedVrf { vni, route_targets, route_distinguisher_index: self.owned_rd.get(&owner).copied() })
    }

    fn evpn_status(
        &self,
        evpn: &Evpn,
        vteps: &BTreeMap<&str, &Vtep>,
        rejection: Option<&Rejection>,
        entry: Option<&SetNetwork>,
        underlay_problem: Option<&String>,
        snap: &Snapshot<'_>,
    ) -> EvpnStatus {
        let n = name(&evpn.metadata);
        let generation = evpn.metadata.generation.unwrap_or_default();
        let vtep = vteps.get(evpn.spec.vtep.as_str());
        let asn = vtep.and_then(|v| v.spec.bgp.as_ref()).map(|b| b.asn);
        let accepted = rejection.is_none();
        let mut status = EvpnStatus {
            observed_generation: Some(generation),
            mac_vrf: accepted.then(|| self.resolved_vrf(evpn, VrfSide::Mac, asn)).flatten(),
            ip_vrf: accepted.then(|| self.resolved_vrf(evpn, VrfSide::Ip, asn)).flatten(),
            vrf_name: vrf_name(&evpn.spec.network, snap.network_ids),
            ethernet_segments: if accepted { self.segments(evpn) } else { Vec::new() },
            ..Default::default()
        };
        let network = network_problem(&evpn.spec.network, evpn, snap);
        let desired: Vec<&NodeInfo> = vtep.map(|v| selected_nodes(v, snap.nodes).collect()).unwrap_or_default();
        let (mut ready, mut failed) = (0u32, Vec::new());
        // The set the nodes can see, and the revision this EVPN's current entry needs.
        let set = snap.network_sets.get(evpn.spec.vtep.as_str());
        let needed = entry.filter(|e| e.generation == generation).map(|e| e.revision);
        // In frr-k8s mode FRR is frr-k8s' to configure: a node also needs frr-k8s to report it.
        let frr_k8s = vtep.is_some_and(|v| v.spec.bgp.is_none());
        for seg in &mut status.ethernet_segments {
            for node in &desired {
                let Some(state) = snap.node_states.get(&node.name) else { continue };
                let reported = state.segments.iter().find(|s| s.evpn == n && s.name == seg.name && s.esi == seg.esi);
                let Some(reported) = reported else { continue };
                if reported.state.as_deref() == Some("Up") {
                    seg.up_nodes.push(node.name.clone());
                }
                if reported.role == Some(DesignatedForwarderRole::DF) {
                    seg.designated_forwarders.push(node.name.clone());
                }
            }
        }
        for node in &desired {
            let Some(state) = snap.node_states.get(&node.name) else { continue };
            let frr = if frr_k8s { frr_k8s_node(&node.name, snap) } else { FrrK8sNode::Ready };
            if let FrrK8sNode::Failed(message) = frr {
                failed.push(NodeFailure { node: node.name.clone(), reason: "FrrK8sFailed".into(), message });
                continue;
            }
            match state.unapplied.get(n) {
                Some(r) if r.phase == NetworkPhase::Failed => failed.push(NodeFailure {
                    node: node.name.clone(),
                    reason: r.reason.clone().unwrap_or_else(|| "Failed".into()),
                    message: r.message.clone().unwrap_or_default(),
                }),
                Some(_) => {}
                None => {
                    if let (Some(set), Some(revision), FrrK8sNode::Ready) = (set, needed, &frr)
                        && state.has_applied(set, revision)
                    {
                        ready += 1;
                    }
                }
            }
        }
        let desired_count = desired.len() as u32;
        status.nodes = Some(NodeCounts { desired: desired_count, ready, failed: failed.len() as u32 });
        status.ready_nodes = Some(format!("{ready}/{desired_count}"));
        let failed_count = failed.len();
        failed.truncate(MAX_FAILED_NODES);

        let old = evpn.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let cond = |type_: &str, ok: bool, reason: &str, message: String| {
            make_condition(old, type_, ok, reason, message, generation, &snap.now)
        };
        let accepted_cond = match rejection {
            None => cond(condition::ACCEPTED, true, "Allocated", "VNIs, route targets and ESIs are allocated".into()),
            Some(Rejection::InvalidSpec(m)) => cond(condition::ACCEPTED, false, "InvalidSpec", m.clone()),
            Some(Rejection::VtepNotFound) => {
                cond(condition::ACCEPTED, false, "VtepNotFound", format!("VTEP {:?} does not exist", evpn.spec.vtep))
            }
            Some(Rejection::Conflict(m)) => cond(condition::ACCEPTED, false, "Conflict", m.clone()),
            Some(Rejection::Exhausted(m)) => cond(condition::ACCEPTED, false, "VniPoolExhausted", m.clone()),
        };
        let ready_cond = if evpn.metadata.deletion_timestamp.is_some() {
            cond(condition::READY, false, "Deleting", "being removed from the nodes".into())
        } else if !accepted {
            cond(condition::READY, false, "NotAccepted", "see the Accepted condition".into())
        } else if let Some((reason, message)) = network {
            cond(condition::READY, false, reason, message)
        } else if let Some(problem) = underlay_problem {
            cond(condition::READY, false, "UnderlayNotFound", format!("VTEP {:?}: {problem}", evpn.spec.vtep))
        } else if desired_count == 0 {
            cond(condition::READY, false, "NoNodes", format!("VTEP {:?} selects no node", evpn.spec.vtep))
        } else if ready == desired_count {
            cond(
                condition::READY,
                true,
                "AllNodesReady",
                format!("all {desired_count} nodes applied generation {generation}"),
            )
        } else {
            cond(
                condition::READY,
                false,
                "NodesPending",
                format!("{ready} of {desired_count} nodes applied generation {generation}"),
            )
        };
        let degraded_cond = if failed_count > 0 {
            let names: Vec<&str> = failed.iter().map(|f| f.node.as_str()).collect();
            cond(condition::DEGRADED, true, "NodesFailed", format!("{failed_count} node(s) failed, first: {names:?}"))
        } else {
            cond(condition::DEGRADED, false, "NoFailures", "no node reported a failure".into())
        };
        status.failed_nodes = failed;
        status.conditions = vec![accepted_cond, ready_cond, degraded_cond];
        status
    }

    fn segments(&self, evpn: &Evpn) -> Vec<ResolvedSegment> {
        let n = name(&evpn.metadata);
        evpn.spec
            .multi_homing
            .iter()
            .flat_map(|m| &m.ethernet_segments)
            .filter_map(|seg| {
                let esi = match parse_esi(&seg.esi).ok()? {
                    EsiSpec::Explicit(_) => seg.esi.to_lowercase(),
                    EsiSpec::Auto => {
                        // A recorded ESI stands even when built on another cluster's system MAC
                        // (a restore into a new cluster): the fabric knows the segment by it.
                        let recorded = evpn.spec.multi_homing.as_ref().and_then(|m| m.derived_esis.get(&seg.name));
                        match recorded.filter(|esi| matches!(parse_esi(esi), Ok(EsiSpec::Explicit([3, ..])))) {
                            Some(esi) => esi.to_lowercase(),
                            None => {
                                let (d, _) = self.esis.iter().find(|(_, o)| o.0 == n && o.1 == seg.name)?;
                                self.type3_esi(d)
                            }
                        }
                    }
                };
                Some(ResolvedSegment { name: seg.name.clone(), esi, ..Default::default() })
            })
            .collect()
    }

    /// Each VTEP's network set: the entries that did not change keep the revision they were
    /// written in; any change makes the next revision.
    fn network_sets(
        &self,
        carried: &BTreeMap<&str, Vec<&Evpn>>,
        vteps: &BTreeMap<&str, &Vtep>,
        snap: &Snapshot<'_>,
    ) -> BTreeMap<String, NetworkSetPlan> {
        let mut sets = BTreeMap::new();
        for (vtep_name, vtep) in vteps {
            let Some(vtep_uid) = vtep.metadata.uid.clone() else { continue };
            let asn = vtep.spec.bgp.as_ref().map(|b| b.asn);
            // Revisions continue on the object the agents see, whichever VTEP owned it before: an
            // agent's report names the object by UID, so only a new object starts again at 1.
            let observed = snap.network_sets.get(*vtep_name).map(|s| &s.spec);
            let next = observed.map_or(1, |o| o.revision + 1);
            let mut networks: Vec<SetNetwork> =
                carried.get(vtep_name).into_iter().flatten().map(|evpn| self.set_network(evpn, asn, snap)).collect();
            networks.sort_by(|a, b| a.evpn.cmp(&b.evpn));
            for net in &mut networks {
                net.revision = observed
                    .and_then(|o| o.networks.iter().find(|old| old.evpn == net.evpn && old.same_content(net)))
                    .map_or(next, |old| old.revision);
            }
            // An entry whose generation alone moved keeps its revision, but the set still changes.
            let unchanged = observed.is_some_and(|o| o.networks == networks);
            let revision = if unchanged { next - 1 } else { next };
            sets.insert(
                (*vtep_name).to_owned(),
                NetworkSetPlan { vtep_uid, spec: EvpnNetworkSetSpec { revision, networks } },
            );
        }
        sets
    }

    fn set_network(&self, evpn: &Evpn, asn: Option<u32>, snap: &Snapshot<'_>) -> SetNetwork {
        let node_vrf = |side| {
            let r = self.resolved_vrf(evpn, side, asn)?;
            Some(NodeVrf {
                vni: r.vni,
                route_targets: r.route_targets,
                route_distinguisher_index: r.route_distinguisher_index?,
            })
        };
        SetNetwork {
            evpn: name(&evpn.metadata).to_owned(),
            generation: evpn.metadata.generation.unwrap_or_default(),
            revision: 0,
            network: evpn.spec.network.clone(),
            vrf: vrf_name(&evpn.spec.network, snap.network_ids).unwrap_or_default(),
            mac_vrf: evpn.spec.mac_vrf.as_ref().and_then(|_| node_vrf(VrfSide::Mac)),
            ip_vrf: evpn.spec.ip_vrf.as_ref().and_then(|_| node_vrf(VrfSide::Ip)),
            subnets: network_subnets(&evpn.spec.network, snap.networks),
        }
    }

    /// What is particular to each node: its VTEPs with its addresses, and its Ethernet segments.
    fn node_specs(
        &self,
        carried: &BTreeMap<&str, Vec<&Evpn>>,
        vteps: &BTreeMap<&str, &Vtep>,
        snap: &Snapshot<'_>,
    ) -> BTreeMap<String, NodeSpec> {
        // Resolved once per EVPN, not once per (EVPN, node).
        let segments: HashMap<&str, Vec<ResolvedSegment>> =
            carried.values().flatten().map(|e| (name(&e.metadata), self.segments(e))).collect();
        let mut specs = BTreeMap::new();
        for node in snap.nodes {
            let node_vteps: Vec<(&str, &Vtep)> = vteps
                .iter()
                .filter(|(_, v)| selected_nodes(v, std::slice::from_ref(node)).next().is_some())
                .map(|(n, v)| (*n, *v))
                .collect();
            if node_vteps.is_empty() && !snap.node_states.contains_key(&node.name) {
                continue;
            }
            let vtep_specs = node_vteps
                .iter()
                .map(|(vn, v)| NodeVtep {
                    name: (*vn).to_owned(),
                    mode: v.spec.mode,
                    ip: self.vtep_ip(vn, &node.name, &v.spec),
                    cidrs: v.spec.cidrs.clone(),
                    udp_port: v.spec.udp_port,
                    mtu: v.spec.mtu,
                    bgp: v.spec.bgp.clone(),
                })
                .collect();
            let ethernet_segments = node_vteps
                .iter()
                .flat_map(|(vn, _)| carried.get(vn).into_iter().flatten())
                .flat_map(|evpn| {
                    node_segments(evpn, node, segments.get(name(&evpn.metadata)).map_or(&[][..], Vec::as_slice))
                })
                .collect();
            specs.insert(
                node.name.clone(),
                NodeSpec { uid: node.uid.clone(), spec: EvpnNodeStateSpec { vteps: vtep_specs, ethernet_segments } },
            );
        }
        specs
    }

    fn vtep_status(
        &self,
        vtep_name: &str,
        vtep: &Vtep,
        underlay_problem: Option<&String>,
        snap: &Snapshot<'_>,
    ) -> VtepStatus {
        let nodes = selected_nodes(vtep, snap.nodes).count() as u32;
        let allocated = self.ips.get(vtep_name).map(Pool::len).unwrap_or_default() as u32;
        let generation = vtep.metadata.generation.unwrap_or_default();
        let old = vtep.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let ready = match vtep.spec.mode {
            _ if underlay_problem.is_some() => make_condition(
                old,
                condition::READY,
                false,
                "UnderlayNotFound",
                underlay_problem.cloned().unwrap_or_default(),
                generation,
                &snap.now,
            ),
            VtepMode::Managed if allocated < nodes => make_condition(
                old,
                condition::READY,
                false,
                "AddressesExhausted",
                format!("{allocated} of {nodes} nodes have a VTEP IP: the cidrs are too small"),
                generation,
                &snap.now,
            ),
            VtepMode::Managed => make_condition(
                old,
                condition::READY,
                true,
                "AddressesAllocated",
                format!("{nodes} nodes have a VTEP IP"),
                generation,
                &snap.now,
            ),
            VtepMode::Unmanaged => make_condition(
                old,
                condition::READY,
                true,
                "Unmanaged",
                "agents discover the nodes' VTEP IPs".into(),
                generation,
                &snap.now,
            ),
        };
        VtepStatus { observed_generation: Some(generation), nodes, allocated_ips: allocated, conditions: vec![ready] }
    }
}

fn host_count(cidr: &evpn_crds::validation::Cidr) -> u32 {
    let bits = if cidr.addr.is_ipv4() { 32 } else { 128 } - u32::from(cidr.prefix);
    let size: u64 = if bits >= 25 { u64::from(HOSTS_PER_CIDR) + 2 } else { 1 << bits };
    let usable = if cidr.addr.is_ipv4() && size > 2 {
        size - 2
    } else if cidr.addr.is_ipv4() {
        size
    } else {
        size - 1
    };
    usable.min(u64::from(HOSTS_PER_CIDR)) as u32
}

fn node_segments(evpn: &Evpn, node: &NodeInfo, resolved: &[ResolvedSegment]) -> Vec<NodeSegment> {
    evpn.spec
        .multi_homing
        .iter()
        .flat_map(|m| &m.ethernet_segments)
        .filter(|seg| selector_matches(&seg.node_selector, &node.labels))
        .filter_map(|seg| {
            let esi = resolved.iter().find(|r| r.name == seg.name)?.esi.clone();
            Some(NodeSegment {
                evpn: name(&evpn.metadata).to_owned(),
                name: seg.name.clone(),
                interface: seg.interface.clone(),
                esi,
                mode: seg.mode,
                df_preference: seg.df_preference,
            })
        })
        .collect()
}

/// What frr-k8s says of one node of a VTEP in frr-k8s mode.
enum FrrK8sNode {
    Ready,
    /// No report yet, or the node's underlay sessions are down.
    Pending,
    /// The last conversion or reload failed: frr-k8s' message.
    Failed(String),
}

fn frr_k8s_node(node: &str, snap: &Snapshot<'_>) -> FrrK8sNode {
    let Some(report) = snap.frr_node_states.get(node) else { return FrrK8sNode::Pending };
    if let Some(problem) = report.problem() {
        return FrrK8sNode::Failed(problem);
    }
    // frr-k8s reports the node's underlay sessions and none is up: nothing reaches the fabric
    // from there. (Older frr-k8s reports no sessions; the reload result then stands alone.)
    let underlay_down = snap.frr_sessions.get(node).is_some_and(|sessions| {
        let underlay: Vec<&BgpSessionStateStatus> = sessions.iter().filter(|s| s.vrf.is_empty()).collect();
        !underlay.is_empty() && !underlay.iter().any(|s| s.bgp_status.eq_ignore_ascii_case("established"))
    });
    if underlay_down { FrrK8sNode::Pending } else { FrrK8sNode::Ready }
}

/// The underlay of each VTEP in frr-k8s mode, or why it cannot be built on.
fn frr_k8s_underlays<'a>(
    vteps: &BTreeMap<&'a str, &Vtep>,
    snap: &Snapshot<'_>,
) -> BTreeMap<&'a str, Result<frrk8s::Underlay, String>> {
    let configurations: Vec<&FrrConfiguration> = snap.frr_configurations.iter().map(AsRef::as_ref).collect();
    vteps
        .iter()
        .filter(|(_, v)| v.spec.bgp.is_none() && v.spec.frr_configuration_selector.is_some())
        .map(|(name, v)| (*name, frrk8s::underlay(v, &configurations)))
        .collect()
}

/// The EVPNs each VTEP's nodes carry: accepted, on a network that fits, not being deleted.
fn carried_networks<'a>(
    evpns: &[&'a Evpn],
    vteps: &BTreeMap<&str, &Vtep>,
    rejections: &HashMap<String, Rejection>,
    snap: &Snapshot<'_>,
) -> BTreeMap<&'a str, Vec<&'a Evpn>> {
    let mut carried: BTreeMap<&str, Vec<&Evpn>> = BTreeMap::new();
    for evpn in evpns {
        if evpn.metadata.deletion_timestamp.is_none()
            && !rejections.contains_key(name(&evpn.metadata))
            && network_problem(&evpn.spec.network, evpn, snap).is_none()
            && vteps.contains_key(evpn.spec.vtep.as_str())
        {
            carried.entry(evpn.spec.vtep.as_str()).or_default().push(evpn);
        }
    }
    carried
}

/// The EVPN is gone from every node: no network set lists it any more, no agent lists it as
/// still being removed, and every agent that acts on its VTEP's set has caught up with the set's
/// current revision, which no longer has it. Only nodes that could hold it count: agents that
/// never reported hold nothing, a node that is gone has no agent left to wait for (its state
/// waits for the garbage collector), and a node of another VTEP never had it (the VTEP is
/// immutable), so one stuck node cannot hold up the deletions of every tenant.
fn released_everywhere(evpn: &Evpn, snap: &Snapshot<'_>) -> bool {
    let (name, vtep) = (name(&evpn.metadata), evpn.spec.vtep.as_str());
    let listed = snap.network_sets.values().any(|s| s.spec.networks.iter().any(|n| n.evpn == name));
    let existing: HashSet<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
    !listed
        && snap.node_states.iter().filter(|(node, _)| existing.contains(node.as_str())).all(|(_, state)| {
            !state.unapplied.contains_key(name)
                && (!state.reporting
                    || !state.spec.vteps.iter().any(|v| v.name == vtep)
                    || !state.applied_sets.contains_key(vtep)
                    || state.caught_up
                        && snap.network_sets.get(vtep).is_some_and(|s| state.has_applied(s, s.spec.revision)))
        })
}

/// The 2-byte AS number of an auto-derived route target (RFC 8365: the low 16 bits of a 4-byte ASN).
fn auto_rt_asn(asn: u32) -> u32 {
    if asn > 65535 { asn & 0xffff } else { asn }
}

/// The name OVN-Kubernetes gives a network (`k8s.ovn.org/network-name` on its attachments).
pub fn ovn_network_name(network: &NetworkRef) -> String {
    match &network.namespace {
        Some(ns) if network.kind == NetworkKind::UserDefinedNetwork => format!("{ns}_{}", network.name),
        _ => format!("cluster_udn_{}", network.name),
    }
}

/// Name of the network's VRF on the nodes, by OVN-Kubernetes' rule (`GetNetworkVRFName` in
/// go-controller/pkg/util/multi_network.go): a CUDN's own name when it fits a Linux interface
/// name (15 characters) and is not `default`; otherwise `mp<network ID>-udn-vrf`, the ID being
/// the one OVN-Kubernetes annotates on the network's attachments. `None` until that ID is known.
pub fn vrf_name(network: &NetworkRef, network_ids: &HashMap<String, u32>) -> Option<String> {
    if network.kind == NetworkKind::ClusterUserDefinedNetwork && network.name.len() <= 15 && network.name != "default" {
        return Some(network.name.clone());
    }
    network_ids.get(&ovn_network_name(network)).map(|id| format!("mp{id}-udn-vrf"))
}

fn network_subnets(net: &NetworkRef, networks: &HashMap<NetworkKey, NetworkFacts>) -> Vec<String> {
    networks.get(&network_key(net)).map(|f| f.subnets.clone()).unwrap_or_default()
}

fn network_key(net: &NetworkRef) -> NetworkKey {
    (net.kind, if net.kind == NetworkKind::UserDefinedNetwork { net.namespace.clone() } else { None }, net.name.clone())
}

fn network_problem(net: &NetworkRef, evpn: &Evpn, snap: &Snapshot<'_>) -> Option<(&'static str, String)> {
    let Some(facts) = snap.networks.get(&network_key(net)) else {
        return Some(("NetworkNotFound", format!("{net} does not exist")));
    };
    let fits = match facts.topology.as_str() {
        "Layer2" => evpn.spec.mac_vrf.is_some(),
        "Layer3" => evpn.spec.ip_vrf.is_some() && evpn.spec.mac_vrf.is_none(),
        _ => false,
    };
    // The webhook refuses this at admission; a CUDN switched to the EVPN transport later is
    // caught here, and the network leaves the nodes rather than being managed twice.
    if facts.transport.as_deref() == Some("EVPN") {
        return Some((
            "NetworkUsesOvnEvpn",
            format!(
                "{net} uses OVN-Kubernetes' own EVPN transport (spec.network.transport: EVPN); one network cannot be managed twice"
            ),
        ));
    }
    if facts.role.as_deref() != Some("Primary") || !fits {
        return Some(("NetworkMismatch", format!("{net} is not a primary Layer2/Layer3 network this EVPN's VRFs fit")));
    }
    if vrf_name(net, snap.network_ids).is_none() {
        return Some((
            "VrfNameUnknown",
            format!(
                "OVN-Kubernetes has not given {net} a network ID yet (annotation k8s.ovn.org/network-id on its \
                 NetworkAttachmentDefinitions, network name {}); its VRF will be mp<ID>-udn-vrf",
                ovn_network_name(net)
            ),
        ));
    }
    None
}

fn selected_nodes<'a>(vtep: &'a Vtep, nodes: &'a [NodeInfo]) -> impl Iterator<Item = &'a NodeInfo> + 'a {
    let everything = Default::default();
    let selector = vtep.spec.node_selector.clone().unwrap_or(everything);
    nodes.iter().filter(move |n| selector_matches(&selector, &n.labels))
}

fn name(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Claims `want` for `owner` in `pool`, giving up what `owned` says it held before; `Err(holder)`
/// when another owner holds it.
fn claim_for(
    pool: &mut Pool<VrfOwner>,
    owned: &mut HashMap<VrfOwner, u32>,
    owner: VrfOwner,
    want: u32,
) -> Result<(), VrfOwner> {
    if owned.get(&owner).is_some_and(|held| *held != want) {
        pool.retain(|o| o != &owner);
        owned.remove(&owner);
    }
    pool.claim(want, &owner)?;
    owned.insert(owner, want);
    Ok(())
}

/// The discriminator of a type-3 ESI built on `system_mac`.
fn discriminator_of(esi: &str, system_mac: [u8; 6]) -> Option<u32> {
    let bytes = esi_bytes(esi)?;
    (bytes[0] == 0x03 && bytes[1..7] == system_mac).then(|| u32::from_be_bytes([0, bytes[7], bytes[8], bytes[9]]))
}

fn vrf(evpn: &Evpn, side: VrfSide) -> Option<&evpn_crds::evpn::Vrf> {
    match side {
        VrfSide::Mac => evpn.spec.mac_vrf.as_ref(),
        VrfSide::Ip => evpn.spec.ip_vrf.as_ref(),
    }
}

fn resolved(evpn: &Evpn, side: VrfSide) -> Option<&ResolvedVrf> {
    let status = evpn.status.as_ref()?;
    match side {
        VrfSide::Mac => status.mac_vrf.as_ref(),
        VrfSide::Ip => status.ip_vrf.as_ref(),
    }
}

/// A condition that keeps its lastTransitionTime unless its status flips.
fn make_condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: last,
        observed_generation: Some(generation),
    }
}

#[cfg(test)]
mod tests;
