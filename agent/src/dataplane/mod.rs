//! The node's data plane over netlink: bridges, VXLAN devices, SVI and VTEP addresses, and the
//! Ethernet segments' interfaces as bridge ports.
//!
//! Design decisions:
//!
//! - **A diff, not a script.** [`Dataplane::apply`] dumps the links and addresses of every
//!   namespace it manages once, compares them with the [`NodePlan`] in memory and sends only
//!   the requests that change something. A second apply of the same plan sends none (the
//!   report's `changes` counts them), and the cost of an apply grows with what changed, plus
//!   two dumps per namespace, rather than with one request per device.
//! - **Targeted applies between full ones.** [`ApplyScope::Changes`] compares the plan with
//!   the last one this data plane applied and reads, by name, only the devices of networks that
//!   are new, changed, gone or failed last time, in the namespaces where they live or lived; the
//!   rest is taken to be as the last apply left it. Drift behind the agent's back (a device
//!   deleted by hand, a namespace recreated) is repaired only by [`ApplyScope::Full`], which the
//!   periodic resync must use. Whenever the last apply cannot vouch for the node (none yet, the
//!   VTEP changed or failed, a removal failed) or too many networks changed, Changes runs Full.
//! - **Ownership by alias.** Every device created here carries the interface alias
//!   `evpn-agent:<evpn>` ([`OWNER_ALIAS_PREFIX`]). Only such devices are ever deleted: a device
//!   of ours that no planned network wants where it is (its network left the plan, its VNI
//!   changed, it must move to another namespace) is removed, and anything without the mark is
//!   left alone. The alias cannot be given at creation (the kernel ignores `IFLA_IFALIAS` in a
//!   new link), so an interrupted apply can leave an unmarked device with one of our names; it
//!   is adopted only if it already is exactly what the plan asks for. The one change made to a
//!   device that is not ours: an Ethernet segment's interface (the admin's bond) is made a port
//!   of its network's MAC-VRF bridge, and taken out of it when the segment goes.
//! - **Two VRF backends.** With kernel VRF devices the VRF's bridges are enslaved to the device
//!   named after the VRF. Kernels without them use one network namespace per VRF (the
//!   namespace file `<dir>/<vrf>`, made by OVN-Kubernetes or a lab, never by us): the bridge
//!   lives in that namespace, and the VXLAN device is requested from the node namespace with
//!   the VRF namespace as its home (`IFLA_NET_NS_FD`), because a VXLAN device opens its UDP
//!   socket in the namespace the request came from and the tunnel must stay in the underlay.
//!   A bridge cannot change namespace at all, so a device that has to move is deleted and
//!   created again where it belongs. Every namespace in that directory is taken for one of
//!   this node's VRFs and cleaned of devices of networks that left the plan, so the directory
//!   must hold this node's VRFs only (as FRR's netns backend requires anyway), never the
//!   namespaces of other lab nodes.
//! - **Failure isolation.** Each network is realised on its own; its error is reported under
//!   its name and the others carry on. Networks are worked on concurrently so that request
//!   round trips overlap (the kernel still serialises them under its rtnl lock).

mod error;
mod netns;
mod network;
mod requests;
mod snapshot;
mod vtep;

pub use error::DataplaneError;
pub use vtep::VTEP_DEVICE;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

use evpn_crds::nodestate::VrfBackend;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::link::{InfoKind, LinkAttribute};
use netlink_packet_route::route::RouteAttribute;
use nix::errno::Errno;
use rtnetlink::{LinkUnspec, LinkVrf, RouteMessageBuilder};

use crate::plan::{EthernetSegmentPlan, NetworkPlan, NodePlan, OWNER_ALIAS_PREFIX, SegmentPlan, SviPlan, VtepPlan};
use error::errno;
use netns::{Netns, NsId};
use network::Ctx;
use requests::delete_link;
use snapshot::{Link, Snapshot};
use vtep::ensure_vtep;

/// Where the netns-VRF backend finds VRF namespaces unless told otherwise.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";
/// Networks worked on at once: enough to keep the netlink socket busy, few enough to keep the
/// kernel's socket buffer from overflowing with acknowledgements.
const CONCURRENCY: usize = 32;
/// The probe VRF's routing table; the device is deleted right away and never carries routes.
const PROBE_VRF_TABLE: u32 = 0x7fff_fffe;
/// The longest interface alias the kernel takes (IFALIASZ - 1).
const MAX_ALIAS_LEN: usize = 255;
/// Scope index of the node namespace; VRF namespaces follow it.
const NODE: usize = 0;
/// Networks a targeted apply looks at, at most: it reads their devices one request each, so a
/// larger change runs in full instead (two dumps per namespace), which also repairs drift.
const MAX_TARGETED: usize = 64;

/// How much of the node an apply looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyScope {
    /// Every managed namespace dumped, every planned network compared, and every device of ours
    /// that no planned network wants removed: repairs any drift. For the periodic resync.
    Full,
    /// Only the networks that are new, changed, gone or failed since the last apply, read by
    /// device name; the others are reported as the last apply left them. Runs as `Full` when
    /// there is no usable last apply, the VTEP plan changed, or more than 64 networks changed.
    Changes,
}

/// Which VRF backend to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Kernel VRF devices if the kernel can create one, else network namespaces in
    /// [`DEFAULT_NETNS_DIR`].
    Auto,
    /// Kernel VRF devices, named after the VRF.
    Kernel,
    /// VRF `X` is the network namespace file `<dir>/X`.
    Netns { dir: PathBuf },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Backend {
    Kernel,
    Netns { dir: PathBuf },
}

/// The node's data plane; keeps its netlink connections between applies.
pub struct Dataplane {
    node: Netns,
    backend: Backend,
    /// Connections to VRF namespaces by file path, reopened when the file names another one.
    vrf_netns: HashMap<PathBuf, Netns>,
    /// Whether the kernel can make the dummy VTEP device; `None` until first tried.
    dummy_supported: Option<bool>,
    /// What the last apply left; `None` when it cannot vouch for the node.
    applied: Option<Applied>,
}

/// What the last apply left on the node, for a targeted apply to compare against.
struct Applied {
    vtep_plan: VtepPlan,
    vtep: VtepStatus,
    /// Per network, the plan its devices were made from and whether that succeeded. A network
    /// that could not be placed keeps the entry it had: nothing of it was touched.
    networks: HashMap<String, (NetworkPlan, bool)>,
}

/// The networks a targeted apply looks at.
struct Target {
    /// By EVPN name: planned ones to realise, departed ones to remove.
    evpns: HashSet<String>,
    /// Their plans as last applied, for the names and namespaces of their existing devices.
    before: Vec<NetworkPlan>,
    vtep: VtepStatus,
}

impl Applied {
    /// The networks `plan` changes, or `None` when only a full apply will do.
    fn target(&self, plan: &NodePlan) -> Option<Target> {
        if plan.vtep.as_ref() != Some(&self.vtep_plan) {
            return None;
        }
        let mut evpns = HashSet::new();
        let mut before = Vec::new();
        for n in &plan.networks {
            match self.networks.get(&n.evpn) {
                Some((old, true)) if old == n => {}
                old => {
                    evpns.insert(n.evpn.clone());
                    before.extend(old.map(|(p, _)| p.clone()));
                }
            }
        }
        let stays: HashSet<&str> = plan
            .networks
            .iter()
            .map(|n| n.evpn.as_str())
            .chain(plan.rejected.iter().map(|(e, _)| e.as_str()))
            .collect();
        for (evpn, (old, _)) in &self.networks {
            // A rejected network keeps its devices, so only a network gone from both is removed.
            if !stays.contains(evpn.as_str()) {
                evpns.insert(evpn.clone());
                before.push(old.clone());
            }
        }
        (evpns.len() <= MAX_TARGETED).then(|| Target { evpns, before, vtep: self.vtep.clone() })
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct DataplaneReport {
    /// The VTEP in use; `None` when the plan has no VTEP.
    pub vtep: Option<Result<VtepStatus, DataplaneError>>,
    /// Every planned network by EVPN name.
    pub networks: BTreeMap<String, Result<(), DataplaneError>>,
    /// Failures to remove devices no planned network wants.
    pub removals: Vec<DataplaneError>,
    /// Netlink requests that changed something.
    pub changes: usize,
}

/// The VTEP address in use and the device that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VtepStatus {
    pub ip: IpAddr,
    pub device: String,
}

impl Dataplane {
    /// Connects to the node namespace (`None`: the agent's own) and settles the VRF backend.
    pub async fn new(node_netns: Option<PathBuf>, choice: BackendChoice) -> Result<Self, DataplaneError> {
        let node = Netns::open(node_netns.as_deref()).await?;
        let backend = match choice {
            BackendChoice::Kernel => Backend::Kernel,
            BackendChoice::Netns { dir } => Backend::Netns { dir },
            BackendChoice::Auto if probe_vrf(&node).await? => Backend::Kernel,
            BackendChoice::Auto => Backend::Netns { dir: DEFAULT_NETNS_DIR.into() },
        };
        tracing::info!(backend = ?backend, node = %node.label, "data plane ready");
        Ok(Dataplane { node, backend, vrf_netns: HashMap::new(), dummy_supported: None, applied: None })
    }

    /// The VRF backend in use.
    pub fn backend(&self) -> VrfBackend {
        match self.backend {
            Backend::Kernel => VrfBackend::KernelVrf,
            Backend::Netns { .. } => VrfBackend::NetnsVrf,
        }
    }

    /// The interfaces the node's routes to `addresses` leave through, as the kernel resolves them
    /// now; an address without a route has none.
    pub async fn route_interfaces(&self, addresses: &[IpAddr]) -> Result<BTreeMap<IpAddr, String>, DataplaneError> {
        let mut interfaces = BTreeMap::new();
        for &address in addresses {
            let lookup = match address {
                IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32).build(),
                IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128).build(),
            };
            let fail =
                |source| DataplaneError::RouteLookup { address, ns: self.node.label.clone(), source: Box::new(source) };
            let route = match self.node.handle.route().get(lookup).execute().try_next().await {
                Ok(route) => route,
                Err(e) if [Errno::ENETUNREACH, Errno::EHOSTUNREACH].iter().any(|n| errno(&e) == Some(*n as i32)) => {
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            let oif = route.iter().flat_map(|r| &r.attributes).find_map(|a| match a {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            });
            let Some(index) = oif else { continue };
            let link = self.node.handle.link().get().match_index(index).execute().try_next().await.map_err(fail)?;
            let name = link.iter().flat_map(|l| &l.attributes).find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name {
                interfaces.insert(address, name);
            }
        }
        Ok(interfaces)
    }

    /// Makes the node's devices match `plan`, changing only what differs: a full apply.
    pub async fn apply(&mut self, plan: &NodePlan) -> DataplaneReport {
        self.apply_scoped(plan, ApplyScope::Full).await
    }

    /// Makes the node's devices match `plan`, looking at everything or only at what changed
    /// since the last apply (see [`ApplyScope`]).
    pub async fn apply_scoped(&mut self, plan: &NodePlan, scope: ApplyScope) -> DataplaneReport {
        let target = match scope {
            ApplyScope::Full => None,
            ApplyScope::Changes => self.applied.as_ref().and_then(|a| a.target(plan)),
        };
        // `None`: a full apply.
        tracing::debug!(targeted = ?target.as_ref().map(|t| t.evpns.len()), "applying the plan");
        let (report, unplaced) = self.apply_to(plan, target.as_ref()).await;
        self.remember(plan, &report, &unplaced);
        report
    }

    /// Records what `report` left on the node, or forgets it when it cannot vouch for the node.
    fn remember(&mut self, plan: &NodePlan, report: &DataplaneReport, unplaced: &HashSet<String>) {
        let old = self.applied.take().map(|a| a.networks).unwrap_or_default();
        let (Some(vtep_plan), Some(Ok(vtep))) = (&plan.vtep, &report.vtep) else { return };
        // A device that could not be removed would be forgotten with its network's entry.
        if !report.removals.is_empty() {
            return;
        }
        let mut networks = HashMap::new();
        for (evpn, _) in &plan.rejected {
            if let Some(entry) = old.get(evpn) {
                networks.insert(evpn.clone(), entry.clone());
            }
        }
        for n in &plan.networks {
            if unplaced.contains(&n.evpn) {
                if let Some((before, _)) = old.get(&n.evpn) {
                    networks.insert(n.evpn.clone(), (before.clone(), false));
                }
                continue;
            }
            let ok = report.networks.get(&n.evpn).is_some_and(Result::is_ok);
            networks.insert(n.evpn.clone(), (n.clone(), ok));
        }
        self.applied = Some(Applied { vtep_plan: vtep_plan.clone(), vtep: vtep.clone(), networks });
    }

    /// One apply, of everything (`target: None`) or of the targeted networks only. Returns the
    /// report and the networks that could not be placed (nothing of them was touched).
    async fn apply_to(&mut self, plan: &NodePlan, target: Option<&Target>) -> (DataplaneReport, HashSet<String>) {
        let changes = AtomicUsize::new(0);
        let mut unplaced = HashSet::new();
        let mut report = DataplaneReport { vtep: None, networks: BTreeMap::new(), removals: Vec::new(), changes: 0 };

        let vrf_ids = match &self.backend {
            Backend::Kernel => HashMap::new(),
            Backend::Netns { dir } => {
                refresh_vrf_netns(&self.node, dir, &mut self.vrf_netns, plan, &mut report.removals).await
            }
        };
        let Dataplane { node, backend, vrf_netns, dummy_supported, applied } = self;
        let reads = target.map(|t| names_to_read(t, plan, backend, node.id, vrf_netns));

        // One scope per distinct namespace; two files naming one namespace share a scope.
        let mut namespaces: Vec<&Netns> = vec![node];
        for ns in vrf_netns.values() {
            if namespaces.iter().all(|n| n.id != ns.id) {
                namespaces.push(ns);
            }
        }
        let mut pending = Vec::with_capacity(namespaces.len());
        for ns in &namespaces {
            pending.push(async {
                match &reads {
                    None => Snapshot::take(ns).await,
                    Some(reads) => {
                        let (names, addrs) = reads.get(&ns.id).map_or((Vec::new(), false), |(n, a)| {
                            (n.iter().map(String::as_str).collect::<Vec<_>>(), *a)
                        });
                        Snapshot::read(ns, &names, addrs).await
                    }
                }
            });
        }
        let dumps = futures::future::join_all(pending).await;
        let mut scopes = Vec::new();
        let mut unreadable: HashMap<NsId, DataplaneError> = HashMap::new();
        for (ns, dump) in namespaces.into_iter().zip(dumps) {
            match dump {
                Ok(snap) => scopes.push(Scope { ns, snap }),
                Err(e) if ns.id == node.id => {
                    // Without the node's state nothing can be compared: every network fails.
                    report.vtep = plan.vtep.as_ref().map(|_| Err(e.clone()));
                    for n in &plan.networks {
                        report.networks.insert(n.evpn.clone(), Err(e.clone()));
                    }
                    return (report, unplaced);
                }
                Err(e) => {
                    // Nothing of ours can be removed from it this time; its networks fail below.
                    report.removals.push(e.clone());
                    unreadable.insert(ns.id, e);
                }
            }
        }
        let vrf_scopes: HashMap<&str, Result<usize, DataplaneError>> = vrf_ids
            .iter()
            .map(|(vrf, id)| {
                let scope =
                    id.as_ref().map_err(Clone::clone).and_then(|id| match scopes.iter().position(|s| s.ns.id == *id) {
                        Some(i) => Ok(i),
                        None => Err(unreadable.get(id).cloned().unwrap_or_else(|| vrf_not_found(vrf, "not opened"))),
                    });
                (vrf.as_str(), scope)
            })
            .collect();

        let vtep = match (&plan.vtep, target) {
            // Unchanged since the last apply, which made it work.
            (Some(_), Some(t)) => Some(Ok(t.vtep.clone())),
            (Some(v), None) => {
                let r = ensure_vtep(&mut scopes[NODE], v, dummy_supported, &changes).await;
                if let Err(e) = &r {
                    tracing::warn!(vtep = %v.name, error = %e, "VTEP not usable");
                }
                Some(r)
            }
            (None, _) => None,
        };
        let local = match &vtep {
            Some(Ok(s)) => Ok(s.ip),
            Some(Err(e)) => Err(DataplaneError::VtepUnavailable(e.to_string())),
            None => Err(DataplaneError::VtepUnavailable("the plan has no VTEP".into())),
        };

        let mut work = Vec::new();
        let mut protected: HashSet<&str> = plan.rejected.iter().map(|(evpn, _)| evpn.as_str()).collect();
        for n in &plan.networks {
            if target.is_some_and(|t| !t.evpns.contains(&n.evpn)) {
                // Left as the last apply made it, which succeeded (failures are targeted).
                report.networks.insert(n.evpn.clone(), Ok(()));
                continue;
            }
            let placed = local.clone().and_then(|_| place(n, backend, &scopes[NODE].snap, &vrf_scopes));
            match placed {
                Ok(w) => work.push((n, w)),
                Err(e) => {
                    // A network that cannot be realised keeps what it has: never tear down what
                    // cannot be rebuilt.
                    protected.insert(n.evpn.as_str());
                    unplaced.insert(n.evpn.clone());
                    report.networks.insert(n.evpn.clone(), Err(e));
                }
            }
        }

        let owners = target.map(|t| &t.evpns);
        remove_unwanted(&mut scopes, &work, &protected, owners, &changes, &mut report.removals).await;

        if let (Ok(local), Some(vtep)) = (local, &plan.vtep) {
            let ctx = &Ctx { scopes: &scopes, local, vtep, changes: &changes };
            // Futures built in a loop, not by a closure over borrowed items: rustc cannot prove
            // such a closure's future `Send`, and apply() must run on a tokio task.
            let mut pending = Vec::with_capacity(work.len());
            for (n, w) in &work {
                let before = applied.as_ref().and_then(|a| a.networks.get(&n.evpn)).map(|(p, _)| p);
                let released = released_ports(before, n);
                pending.push(async move { (n.evpn.clone(), ctx.network(n, w, &released).await) });
            }
            let results: Vec<_> = futures::stream::iter(pending).buffer_unordered(CONCURRENCY).collect().await;
            for (evpn, r) in results {
                if let Err(e) = &r {
                    tracing::warn!(evpn = %evpn, error = %e, "network not realised");
                }
                report.networks.insert(evpn, r);
            }
        }
        report.vtep = vtep;
        report.changes = changes.into_inner();
        (report, unplaced)
    }
}

/// The interfaces of the segments `before` had and `now` has not: still ports of the bridge,
/// to be released (never deleted: they are not ours).
fn released_ports(before: Option<&NetworkPlan>, now: &NetworkPlan) -> Vec<String> {
    let kept = |interface: &str| now.ethernet_segments.iter().any(|s| s.interface == interface);
    let segments = before.into_iter().flat_map(|b| &b.ethernet_segments);
    segments.filter(|s| !kept(&s.interface)).map(|s| s.interface.clone()).collect()
}

/// The devices a targeted apply reads, by name, per namespace, and whether it reads their
/// addresses too (where an SVI is compared). A network's devices are looked for in the node
/// namespace and in the VRF namespaces it lives in now and lived in before; with kernel VRFs,
/// its VRF device is read as well, to enslave bridges to it.
fn names_to_read(
    target: &Target,
    plan: &NodePlan,
    backend: &Backend,
    node: NsId,
    vrf_netns: &HashMap<PathBuf, Netns>,
) -> HashMap<NsId, (Vec<String>, bool)> {
    let mut reads: HashMap<NsId, (Vec<String>, bool)> = HashMap::new();
    let now = plan.networks.iter().filter(|n| target.evpns.contains(&n.evpn));
    for n in now.chain(&target.before) {
        let mut names: Vec<String> = [&n.mac_vrf, &n.ip_vrf]
            .into_iter()
            .flatten()
            .flat_map(|seg| [seg.bridge.clone(), seg.vxlan.clone()])
            .chain(n.ethernet_segments.iter().map(|s| s.interface.clone()))
            .collect();
        let svi = n.svi.is_some();
        let mut at = vec![node];
        match backend {
            Backend::Kernel if n.ip_vrf.is_some() => names.push(n.vrf.clone()),
            Backend::Kernel => {}
            Backend::Netns { dir } => {
                at.extend(n.ip_vrf.as_ref().and_then(|_| vrf_netns.get(&dir.join(&n.vrf))).map(|ns| ns.id));
            }
        }
        for id in at {
            let entry = reads.entry(id).or_default();
            entry.0.extend(names.iter().cloned());
            entry.1 |= svi;
        }
    }
    for (names, _) in reads.values_mut() {
        names.sort_unstable();
        names.dedup();
    }
    reads
}

/// Whether the kernel can create a VRF device: creates a throwaway one and deletes it.
async fn probe_vrf(ns: &Netns) -> Result<bool, DataplaneError> {
    const PROBE: &str = "evpn-vrfprobe";
    let fail = |source: rtnetlink::Error| DataplaneError::ProbeVrf { ns: ns.label.clone(), source: Box::new(source) };
    match ns.handle.link().add(LinkVrf::new(PROBE, PROBE_VRF_TABLE).build()).execute().await {
        Ok(()) => {}
        // Left behind by an interrupted probe: the kind exists.
        Err(e) if errno(&e) == Some(Errno::EEXIST as i32) => {}
        Err(e) if errno(&e) == Some(Errno::EOPNOTSUPP as i32) => return Ok(false),
        Err(e) => return Err(fail(e)),
    }
    ns.handle.link().del_with_message(LinkUnspec::new_with_name(PROBE).build()).execute().await.map_err(fail)?;
    Ok(true)
}

/// Opens connections to the VRF namespaces in `dir`: those the plan needs and every other one
/// there (it may hold devices of networks that left the plan). Returns, per planned VRF, the
/// namespace or why it is unusable.
async fn refresh_vrf_netns(
    node: &Netns,
    dir: &Path,
    cache: &mut HashMap<PathBuf, Netns>,
    plan: &NodePlan,
    removals: &mut Vec<DataplaneError>,
) -> HashMap<String, Result<NsId, DataplaneError>> {
    let mut planned = HashMap::new();
    // Every namespace file to open, with the planned VRF it is (None: only to clean up).
    let mut paths: HashMap<PathBuf, Option<String>> = HashMap::new();
    for n in plan.networks.iter().filter(|n| n.ip_vrf.is_some()) {
        let vrf = &n.vrf;
        // The name becomes a path: it must stay a single file inside the directory.
        if vrf.is_empty() || vrf == "." || vrf == ".." || vrf.contains('/') {
            planned.insert(vrf.clone(), Err(vrf_not_found(vrf, "not a valid namespace file name")));
            continue;
        }
        let path = dir.join(vrf);
        if !path.exists() {
            let detail = format!("no network namespace file {}", path.display());
            planned.insert(vrf.clone(), Err(vrf_not_found(vrf, &detail)));
            continue;
        }
        paths.insert(path, Some(vrf.clone()));
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                paths.entry(entry.path()).or_insert(None);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => removals.push(DataplaneError::open_namespace(format!("directory {}", dir.display()), e)),
    }

    let mut keep = HashSet::new();
    for (path, vrf) in paths {
        let opened = open_cached(node, cache, &path).await;
        match (opened, vrf) {
            (Ok(id), Some(vrf)) => {
                keep.insert(path);
                planned.insert(vrf, Ok(id));
            }
            (Ok(_), None) => {
                keep.insert(path);
            }
            (Err(e), Some(vrf)) => {
                planned.insert(vrf, Err(e));
            }
            // Not every file in a netns directory is a usable namespace (a half-made one, a
            // stray file); one we cannot open holds nothing we could have made.
            (Err(e), None) => tracing::debug!(error = %e, "skipping namespace file"),
        }
    }
    cache.retain(|p, _| keep.contains(p));
    planned
}

/// The connection to the namespace at `path`, reusing the cached one while the file still names
/// the same namespace. The node's own namespace is refused: it is not a VRF.
async fn open_cached(node: &Netns, cache: &mut HashMap<PathBuf, Netns>, path: &Path) -> Result<NsId, DataplaneError> {
    let label = format!("netns {}", path.display());
    let id = NsId::of(path).map_err(|e| DataplaneError::open_namespace(label.clone(), e))?;
    if id == node.id {
        return Err(vrf_not_found(&path.to_string_lossy(), "the file names the node's own namespace"));
    }
    if cache.get(path).is_some_and(|ns| ns.id == id) {
        return Ok(id);
    }
    let ns = Netns::open(Some(path)).await?;
    let id = ns.id;
    cache.insert(path.to_owned(), ns);
    Ok(id)
}

fn vrf_not_found(vrf: &str, detail: &str) -> DataplaneError {
    DataplaneError::VrfNotFound { vrf: vrf.to_owned(), detail: detail.to_owned() }
}

/// A namespace and its state at the start of this apply.
struct Scope<'a> {
    ns: &'a Netns,
    snap: Snapshot,
}

/// Where one segment of a network goes.
struct SegmentWork<'p> {
    seg: &'p SegmentPlan,
    scope: usize,
    /// Index of the kernel VRF device to enslave the bridge to; 0 for none.
    master: u32,
    /// The SVI the bridge carries (IRB MAC-VRF only).
    svi: Option<&'p SviPlan>,
    /// The MAC-VRF's Ethernet segments, whose interfaces are ports of its bridge; `None` for
    /// the IP-VRF.
    ethernet_segments: Option<&'p [EthernetSegmentPlan]>,
}

/// Resolves where each segment of `n` lives, or why it cannot.
fn place<'p>(
    n: &'p NetworkPlan,
    backend: &Backend,
    node: &Snapshot,
    vrf_scopes: &HashMap<&str, Result<usize, DataplaneError>>,
) -> Result<Vec<SegmentWork<'p>>, DataplaneError> {
    let vrf = match (&n.ip_vrf, backend) {
        (None, _) => None,
        (Some(_), Backend::Kernel) => match node.link(&n.vrf) {
            Some(l) if l.kind == Some(InfoKind::Vrf) => Some((NODE, l.index)),
            _ => return Err(vrf_not_found(&n.vrf, "no VRF device of that name in the node namespace")),
        },
        (Some(_), Backend::Netns { .. }) => match vrf_scopes.get(n.vrf.as_str()) {
            Some(Ok(scope)) => Some((*scope, 0)),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(vrf_not_found(&n.vrf, "not resolved")),
        },
    };
    let mut work = Vec::new();
    if let Some(seg) = &n.mac_vrf {
        let (scope, master, svi) = match vrf {
            Some((scope, master)) if n.bridge_in_vrf() => (scope, master, n.svi.as_ref()),
            _ => (NODE, 0, None),
        };
        work.push(SegmentWork { seg, scope, master, svi, ethernet_segments: Some(&n.ethernet_segments) });
    }
    if let (Some(seg), Some((scope, master))) = (&n.ip_vrf, vrf) {
        work.push(SegmentWork { seg, scope, master, svi: None, ethernet_segments: None });
    }
    Ok(work)
}

fn owner_of(l: &Link) -> Option<&str> {
    l.alias.as_deref()?.strip_prefix(OWNER_ALIAS_PREFIX)
}

/// Deletes our devices that no planned network wants where they are; with `owners`, only those
/// of these networks (a targeted apply).
async fn remove_unwanted(
    scopes: &mut [Scope<'_>],
    work: &[(&NetworkPlan, Vec<SegmentWork<'_>>)],
    protected: &HashSet<&str>,
    owners: Option<&HashSet<String>>,
    changes: &AtomicUsize,
    removals: &mut Vec<DataplaneError>,
) {
    let mut wanted: HashSet<(usize, &str, &str)> = HashSet::new();
    for (n, segments) in work {
        for w in segments {
            wanted.insert((w.scope, &w.seg.bridge, &n.evpn));
            wanted.insert((w.scope, &w.seg.vxlan, &n.evpn));
        }
    }
    let mut doomed = Vec::new();
    for (i, scope) in scopes.iter().enumerate() {
        for l in scope.snap.links() {
            let Some(owner) = owner_of(l) else { continue };
            if protected.contains(owner)
                || owners.is_some_and(|o| !o.contains(owner))
                || wanted.contains(&(i, l.name.as_str(), owner))
            {
                continue;
            }
            doomed.push((i, l.index, l.name.clone()));
        }
    }
    let mut pending = Vec::with_capacity(doomed.len());
    for (i, index, name) in doomed {
        let ns = scopes[i].ns;
        pending.push(async move { (i, delete_link(changes, ns, index, &name).await.map(|()| name)) });
    }
    let results: Vec<_> = futures::stream::iter(pending).buffer_unordered(CONCURRENCY).collect().await;
    for (i, r) in results {
        match r {
            Ok(name) => scopes[i].snap.forget(&name),
            Err(e) => removals.push(e),
        }
    }
}

fn host_prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// `"10.0.0.1/24"` to `(10.0.0.1, 24)`, the prefix length checked against the family.
fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= host_prefix_len(ip)).then_some((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_link_local_is_recognised() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(!is_link_local("fd00::1".parse().unwrap()));
    }
}
