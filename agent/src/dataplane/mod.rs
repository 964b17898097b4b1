//! The node's data plane over netlink: bridges, VXLAN devices, SVI and VTEP addresses.
//!
//! Design decisions:
//!
//! - **A diff, not a script.** [`Dataplane::apply`] dumps the links and addresses of every
//!   namespace it manages once, compares them with the [`NodePlan`] in memory and sends only
//!   the requests that change something. A second apply of the same plan sends none (the
//!   report's `changes` counts them), and the cost of an apply grows with what changed, plus
//!   two dumps per namespace, rather than with one request per device.
//! - **Ownership by alias.** Every device created here carries the interface alias
//!   `evpn-agent:<evpn>` ([`OWNER_ALIAS_PREFIX`]). Only such devices are ever deleted: a device
//!   of ours that no planned network wants where it is (its network left the plan, its VNI
//!   changed, it must move to another namespace) is removed, and anything without the mark is
//!   left alone. The alias cannot be given at creation (the kernel ignores `IFLA_IFALIAS` in a
//!   new link), so an interrupted apply can leave an unmarked device with one of our names; it
//!   is adopted only if it already is exactly what the plan asks for.
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
mod snapshot;

pub use error::DataplaneError;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use evpn_crds::nodestate::VrfBackend;
use evpn_crds::vtep::VtepMode;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkMessage,
};
use nix::errno::Errno;
use rtnetlink::{LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVrf, LinkVxlan};

use crate::plan::{NetworkPlan, NodePlan, OWNER_ALIAS_PREFIX, SegmentPlan, SviPlan, VtepPlan};
use error::errno;
use netns::{Netns, NsId};
use snapshot::{Link, Snapshot, Vxlan};

/// Where the netns-VRF backend finds VRF namespaces unless told otherwise.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";
/// The device that carries a Managed VTEP address where the kernel has dummy devices.
pub const VTEP_DEVICE: &str = "evpn-vtep";
/// Carries the VTEP address where the kernel has no dummy devices.
const LOOPBACK: &str = "lo";
/// Networks worked on at once: enough to keep the netlink socket busy, few enough to keep the
/// kernel's socket buffer from overflowing with acknowledgements.
const CONCURRENCY: usize = 32;
/// The probe VRF's routing table; the device is deleted right away and never carries routes.
const PROBE_VRF_TABLE: u32 = 0x7fff_fffe;
/// The longest interface alias the kernel takes (IFALIASZ - 1).
const MAX_ALIAS_LEN: usize = 255;
/// Scope index of the node namespace; VRF namespaces follow it.
const NODE: usize = 0;

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
        Ok(Dataplane { node, backend, vrf_netns: HashMap::new(), dummy_supported: None })
    }

    /// The VRF backend in use.
    pub fn backend(&self) -> VrfBackend {
        match self.backend {
            Backend::Kernel => VrfBackend::KernelVrf,
            Backend::Netns { .. } => VrfBackend::NetnsVrf,
        }
    }

    /// Makes the node's devices match `plan`, changing only what differs.
    pub async fn apply(&mut self, plan: &NodePlan) -> DataplaneReport {
        let changes = AtomicUsize::new(0);
        let mut report = DataplaneReport { vtep: None, networks: BTreeMap::new(), removals: Vec::new(), changes: 0 };

        let vrf_ids = match &self.backend {
            Backend::Kernel => HashMap::new(),
            Backend::Netns { dir } => {
                refresh_vrf_netns(&self.node, dir, &mut self.vrf_netns, plan, &mut report.removals).await
            }
        };
        let Dataplane { node, backend, vrf_netns, dummy_supported } = self;

        // One scope per distinct namespace; two files naming one namespace share a scope.
        let mut namespaces: Vec<&Netns> = vec![node];
        for ns in vrf_netns.values() {
            if namespaces.iter().all(|n| n.id != ns.id) {
                namespaces.push(ns);
            }
        }
        let dumps = futures::future::join_all(namespaces.iter().map(|ns| Snapshot::take(ns))).await;
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
                    return report;
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

        let vtep = match &plan.vtep {
            Some(v) => {
                let r = ensure_vtep(&mut scopes[NODE], v, dummy_supported, &changes).await;
                if let Err(e) = &r {
                    tracing::warn!(vtep = %v.name, error = %e, "VTEP not usable");
                }
                Some(r)
            }
            None => None,
        };
        let local = match &vtep {
            Some(Ok(s)) => Ok(s.ip),
            Some(Err(e)) => Err(DataplaneError::VtepUnavailable(e.to_string())),
            None => Err(DataplaneError::VtepUnavailable("the plan has no VTEP".into())),
        };

        let mut work = Vec::new();
        let mut protected: HashSet<&str> = plan.rejected.iter().map(|(evpn, _)| evpn.as_str()).collect();
        for n in &plan.networks {
            let placed = local.clone().and_then(|_| place(n, backend, &scopes[NODE].snap, &vrf_scopes));
            match placed {
                Ok(w) => work.push((n, w)),
                Err(e) => {
                    // A network that cannot be realised keeps what it has: never tear down what
                    // cannot be rebuilt.
                    protected.insert(n.evpn.as_str());
                    report.networks.insert(n.evpn.clone(), Err(e));
                }
            }
        }

        remove_unwanted(&mut scopes, &work, &protected, &changes, &mut report.removals).await;

        if let (Ok(local), Some(vtep)) = (local, &plan.vtep) {
            let ctx = &Ctx { scopes: &scopes, local, vtep, changes: &changes };
            let results: Vec<_> = futures::stream::iter(work.iter())
                .map(|(n, w)| async move { (n.evpn.clone(), ctx.network(n, w).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (evpn, r) in results {
                if let Err(e) = &r {
                    tracing::warn!(evpn = %evpn, error = %e, "network not realised");
                }
                report.networks.insert(evpn, r);
            }
        }
        report.vtep = vtep;
        report.changes = changes.into_inner();
        report
    }
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
        work.push(SegmentWork { seg, scope, master, svi });
    }
    if let (Some(seg), Some((scope, master))) = (&n.ip_vrf, vrf) {
        work.push(SegmentWork { seg, scope, master, svi: None });
    }
    Ok(work)
}

fn owner_of(l: &Link) -> Option<&str> {
    l.alias.as_deref()?.strip_prefix(OWNER_ALIAS_PREFIX)
}

/// Deletes our devices that no planned network wants where they are.
async fn remove_unwanted(
    scopes: &mut [Scope<'_>],
    work: &[(&NetworkPlan, Vec<SegmentWork<'_>>)],
    protected: &HashSet<&str>,
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
            if protected.contains(owner) || wanted.contains(&(i, l.name.as_str(), owner)) {
                continue;
            }
            doomed.push((i, l.index, l.name.clone()));
        }
    }
    let results: Vec<_> = futures::stream::iter(doomed)
        .map(|(i, index, name)| {
            let ns = scopes[i].ns;
            async move { (i, delete_link(changes, ns, index, &name).await.map(|()| name)) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (i, r) in results {
        match r {
            Ok(name) => scopes[i].snap.forget(&name),
            Err(e) => removals.push(e),
        }
    }
}

/// The Managed VTEP's address on its device, or the Unmanaged VTEP's address found on the node.
async fn ensure_vtep(
    node: &mut Scope<'_>,
    vtep: &VtepPlan,
    dummy_supported: &mut Option<bool>,
    changes: &AtomicUsize,
) -> Result<VtepStatus, DataplaneError> {
    let cidrs = vtep
        .cidrs
        .iter()
        .map(|c| Cidr::parse(c).ok_or_else(|| DataplaneError::InvalidVtepCidr { cidr: c.clone() }))
        .collect::<Result<Vec<_>, _>>()?;
    let in_cidrs = |ip: IpAddr| cidrs.iter().any(|c| c.contains(ip));
    let ip = match (vtep.mode, vtep.ip) {
        (VtepMode::Managed, Some(ip)) => ip,
        (VtepMode::Managed, None) => {
            return Err(DataplaneError::VtepUnavailable(format!("Managed VTEP {:?} has no address", vtep.name)));
        }
        (VtepMode::Unmanaged, _) => {
            // Lowest interface and address first, so the choice is stable between applies; the
            // SVIs of our own bridges are gateways inside the overlay, never the VTEP.
            let ours = |index| node.snap.link_by_index(index).is_some_and(|l| owner_of(l).is_some());
            let found =
                node.snap.all_addrs().filter(|a| in_cidrs(a.ip) && !ours(a.index)).min_by_key(|a| (a.index, a.ip));
            return match found {
                Some(a) => Ok(VtepStatus {
                    ip: a.ip,
                    device: node.snap.link_by_index(a.index).map(|l| l.name.clone()).unwrap_or_default(),
                }),
                None => {
                    Err(DataplaneError::VtepAddressNotFound { cidrs: vtep.cidrs.clone(), ns: node.ns.label.clone() })
                }
            };
        }
    };
    let ns = node.ns;
    let device = vtep_device(node, dummy_supported, changes).await?;
    if !device.up {
        change_link(changes, ns, LinkUnspec::new_with_index(device.index).up().build(), "state", &device.name).await?;
    }
    let host_len = host_prefix_len(ip);
    let mut present = false;
    for a in node.snap.addrs(device.index) {
        if a.ip == ip && a.prefix_len == host_len {
            present = true;
        } else if a.prefix_len == host_prefix_len(a.ip) && in_cidrs(a.ip) {
            // A VTEP address this agent put here before (the node's address changed).
            remove_address(changes, ns, &device.name, a.index, a.ip, a.prefix_len).await?;
        }
    }
    if !present {
        add_address(changes, ns, &device.name, device.index, ip, host_len).await?;
    }
    Ok(VtepStatus { ip, device: device.name })
}

/// The device for a Managed VTEP address: the dummy `evpn-vtep`, made if the kernel can, else
/// the loopback.
async fn vtep_device(
    node: &Scope<'_>,
    dummy_supported: &mut Option<bool>,
    changes: &AtomicUsize,
) -> Result<Link, DataplaneError> {
    if let Some(l) = node.snap.link(VTEP_DEVICE).filter(|l| l.kind == Some(InfoKind::Dummy)) {
        return Ok(l.clone());
    }
    if *dummy_supported != Some(false) {
        let created = node.ns.handle.link().add(LinkDummy::new(VTEP_DEVICE).up().build()).execute().await;
        match created {
            Ok(()) => {
                changes.fetch_add(1, Ordering::Relaxed);
                *dummy_supported = Some(true);
                let index = link_index(node.ns, VTEP_DEVICE).await?;
                return Ok(Link { index, name: VTEP_DEVICE.into(), up: true, ..Link::default() });
            }
            Err(e) if errno(&e) == Some(Errno::EOPNOTSUPP as i32) => {
                tracing::info!("no dummy devices in this kernel: the VTEP address goes on {LOOPBACK}");
                *dummy_supported = Some(false);
            }
            Err(source) => {
                return Err(DataplaneError::CreateLink {
                    kind: "dummy",
                    device: VTEP_DEVICE.into(),
                    ns: node.ns.label.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    node.snap.link(LOOPBACK).cloned().ok_or_else(|| {
        DataplaneError::VtepUnavailable(format!("no {LOOPBACK} device in {} to carry the address", node.ns.label))
    })
}

/// What every network's devices share during one apply.
struct Ctx<'a> {
    scopes: &'a [Scope<'a>],
    local: IpAddr,
    vtep: &'a VtepPlan,
    changes: &'a AtomicUsize,
}

impl Ctx<'_> {
    async fn network(&self, n: &NetworkPlan, work: &[SegmentWork<'_>]) -> Result<(), DataplaneError> {
        let owner = n.owner_alias();
        // Checked before anything is made: a device whose mark the kernel refuses would be left
        // unmarked, and so beyond our cleanup.
        if owner.len() > MAX_ALIAS_LEN {
            return Err(DataplaneError::OwnerMarkTooLong { alias: owner });
        }
        for w in work {
            let scope = &self.scopes[w.scope];
            let bridge = self.bridge(scope, &w.seg.bridge, &owner, w.master, w.svi.map(|s| s.mac)).await?;
            self.vxlan(w.scope, w.seg, bridge, &owner).await?;
            if let Some(svi) = w.svi {
                self.svi_addresses(scope, &w.seg.bridge, bridge, svi).await?;
            }
        }
        Ok(())
    }

    /// Ensures the bridge `name` and returns its index.
    async fn bridge(
        &self,
        scope: &Scope<'_>,
        name: &str,
        owner: &str,
        master: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<u32, DataplaneError> {
        let ns = scope.ns;
        if let Some(l) = scope.snap.link(name) {
            let fits = l.kind == Some(InfoKind::Bridge);
            let adopt = claim(l, owner, ns, fits)?;
            if fits {
                let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
                let mut changed = adopt;
                if adopt {
                    b = b.alias(owner);
                }
                if l.master != master {
                    b = if master == 0 { b.nocontroller() } else { b.controller(master) };
                    changed = true;
                }
                if !l.up {
                    b = b.up();
                    changed = true;
                }
                if let Some(mac) = mac.filter(|m| l.mac.as_deref() != Some(m.as_slice())) {
                    b = b.address(mac.to_vec());
                    changed = true;
                }
                if l.bridge.stp != Some(BridgeStpState::Disabled) {
                    b = b.stp_state(BridgeStpState::Disabled);
                    changed = true;
                }
                if l.bridge.mcast_snooping != Some(false) {
                    b = b.append_info_data(InfoBridge::MulticastSnooping(false));
                    changed = true;
                }
                if changed {
                    change_link(self.changes, ns, b.build(), "bridge settings", name).await?;
                }
                return Ok(l.index);
            }
            // Ours, but no longer a bridge.
            delete_link(self.changes, ns, l.index, name).await?;
        }
        let mut b = LinkMessageBuilder::<LinkBridge>::new(name)
            .up()
            .stp_state(BridgeStpState::Disabled)
            .append_info_data(InfoBridge::MulticastSnooping(false));
        if master != 0 {
            b = b.controller(master);
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        create_link(self.changes, ns, b.build(), "bridge", name).await?;
        change_link(self.changes, ns, LinkUnspec::new_with_name(name).alias(owner).build(), "alias", name).await?;
        link_index(ns, name).await
    }

    /// Ensures the VXLAN device of `seg` in scope `scope_idx`, enslaved to `bridge`.
    async fn vxlan(&self, scope_idx: usize, seg: &SegmentPlan, bridge: u32, owner: &str) -> Result<(), DataplaneError> {
        let scope = &self.scopes[scope_idx];
        let ns = scope.ns;
        let name = seg.vxlan.as_str();
        let want = Vxlan {
            vni: Some(seg.vni),
            local: Some(self.local),
            port: Some(self.vtep.udp_port),
            learning: Some(false),
        };
        let mtu = vxlan_mtu(self.vtep.mtu, self.local);
        if let Some(l) = scope.snap.link(name) {
            let fits = l.kind == Some(InfoKind::Vxlan) && l.vxlan == want;
            let adopt = claim(l, owner, ns, fits)?;
            if fits {
                let mut b = LinkUnspec::new_with_name(name);
                let mut changed = false;
                if l.master != bridge {
                    b = b.controller(bridge);
                    changed = true;
                }
                if !l.up {
                    b = b.up();
                    changed = true;
                }
                if let Some(m) = mtu.filter(|m| l.mtu != Some(*m)) {
                    b = b.mtu(m);
                    changed = true;
                }
                if changed {
                    change_link(self.changes, ns, b.build(), "master, state and MTU", name).await?;
                }
                // A new master resets the port flags to the bridge's defaults.
                let port_ok =
                    l.master == bridge && l.port.learning == Some(false) && l.port.neigh_suppress == Some(true);
                if adopt || !port_ok {
                    change_link(self.changes, ns, port_settings(name, owner), "bridge-port flags", name).await?;
                }
                return Ok(());
            }
            // Ours, but its VNI, local address or port (fixed at creation) differ.
            delete_link(self.changes, ns, l.index, name).await?;
        }

        let mut b = LinkVxlan::new(name, seg.vni).port(self.vtep.udp_port).learning(false);
        b = match self.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        b = b.controller(bridge).up();
        if scope_idx == NODE {
            create_link(self.changes, ns, b.build(), "VXLAN", name).await?;
        } else {
            // Requested from the node namespace but placed in the VRF namespace: the device
            // opens its UDP socket in the namespace the request came from, the underlay. This
            // is lab.sh's create-then-move in one request, so the device never sits in the
            // node namespace, and the master index is resolved in the VRF namespace.
            let node = self.scopes[NODE].ns;
            let target = ns.open_file()?;
            let msg = b.setns_by_fd(target.as_raw_fd()).build();
            node.handle.link().add(msg).execute().await.map_err(|source| DataplaneError::CreateLink {
                kind: "VXLAN",
                device: name.into(),
                ns: format!("{} from {}", ns.label, node.label),
                source: Box::new(source),
            })?;
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        change_link(self.changes, ns, port_settings(name, owner), "bridge-port flags", name).await
    }

    /// Makes the SVI addresses exactly the bridge's addresses (IPv6 link-local ones aside: the
    /// kernel makes those and IPv6 needs them).
    async fn svi_addresses(
        &self,
        scope: &Scope<'_>,
        device: &str,
        index: u32,
        svi: &SviPlan,
    ) -> Result<(), DataplaneError> {
        let want = svi
            .addresses
            .iter()
            .map(|a| {
                parse_prefix(a)
                    .ok_or_else(|| DataplaneError::InvalidSviAddress { address: a.clone(), device: device.into() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let have = scope.snap.addrs(index);
        for a in have.iter().filter(|a| !is_link_local(a.ip)) {
            if !want.contains(&(a.ip, a.prefix_len)) {
                remove_address(self.changes, scope.ns, device, index, a.ip, a.prefix_len).await?;
            }
        }
        for (ip, len) in want {
            if !have.iter().any(|a| a.ip == ip && a.prefix_len == len) {
                add_address(self.changes, scope.ns, device, index, ip, len).await?;
            }
        }
        Ok(())
    }
}

/// Decides whether an existing device with a name the network needs may be used: `Ok(false)`
/// when it is this network's, `Ok(true)` when it is unmarked but already what the plan asks for
/// (to be marked now), an error when it belongs to someone else.
fn claim(l: &Link, owner: &str, ns: &Netns, fits: bool) -> Result<bool, DataplaneError> {
    match l.alias.as_deref() {
        Some(a) if a == owner => Ok(false),
        None if fits => Ok(true),
        holder => Err(DataplaneError::DeviceConflict {
            device: l.name.clone(),
            ns: ns.label.clone(),
            holder: holder.map_or_else(|| "an unmarked device of another kind".to_owned(), |h| format!("{h:?}")),
        }),
    }
}

/// Bridge-port flags of a VXLAN port (EVPN fills the FDB and answers ARP/ND: no learning,
/// neighbour suppression on) and the owner mark, in one request.
fn port_settings(name: &str, owner: &str) -> LinkMessage {
    LinkUnspec::new_with_name(name)
        .alias(owner)
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(InfoPortData::BridgePort(vec![
            InfoBridgePort::Learning(false),
            InfoBridgePort::NeighSupress(true),
        ]))
        .build()
}

/// VXLAN overhead: outer Ethernet 14 + IP 20/40 + UDP 8 + VXLAN 8.
fn vxlan_mtu(vtep_mtu: Option<u32>, local: IpAddr) -> Option<u32> {
    let overhead = if local.is_ipv4() { 50 } else { 70 };
    vtep_mtu.map(|m| m.saturating_sub(overhead))
}

async fn link_index(ns: &Netns, name: &str) -> Result<u32, DataplaneError> {
    let fail = |source: rtnetlink::Error| DataplaneError::Dump {
        what: "a created link",
        ns: ns.label.clone(),
        source: Box::new(source),
    };
    let msg = ns.handle.link().get().match_name(name).execute().try_next().await.map_err(fail)?;
    msg.map(|m| m.header.index).ok_or_else(|| fail(rtnetlink::Error::RequestFailed))
}

async fn create_link(
    changes: &AtomicUsize,
    ns: &Netns,
    msg: LinkMessage,
    kind: &'static str,
    device: &str,
) -> Result<(), DataplaneError> {
    tracing::debug!(device, kind, ns = %ns.label, "creating link");
    ns.handle.link().add(msg).execute().await.map_err(|source| DataplaneError::CreateLink {
        kind,
        device: device.into(),
        ns: ns.label.clone(),
        source: Box::new(source),
    })?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn change_link(
    changes: &AtomicUsize,
    ns: &Netns,
    msg: LinkMessage,
    what: &'static str,
    device: &str,
) -> Result<(), DataplaneError> {
    tracing::debug!(device, what, ns = %ns.label, "changing link");
    ns.handle.link().change(msg).execute().await.map_err(|source| DataplaneError::ChangeLink {
        what,
        device: device.into(),
        ns: ns.label.clone(),
        source: Box::new(source),
    })?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn delete_link(changes: &AtomicUsize, ns: &Netns, index: u32, device: &str) -> Result<(), DataplaneError> {
    tracing::debug!(device, ns = %ns.label, "deleting link");
    ns.handle.link().del(index).execute().await.map_err(|source| DataplaneError::DeleteLink {
        device: device.into(),
        ns: ns.label.clone(),
        source: Box::new(source),
    })?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn add_address(
    changes: &AtomicUsize,
    ns: &Netns,
    device: &str,
    index: u32,
    ip: IpAddr,
    prefix_len: u8,
) -> Result<(), DataplaneError> {
    let mut req = ns.handle.address().add(index, ip, prefix_len);
    if ip.is_ipv6() {
        // Anycast gateway and VTEP addresses are meant to be unique only per node (or shared on
        // purpose): duplicate address detection would only delay or disable them.
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(|source| DataplaneError::AddAddress {
        address: ip,
        prefix_len,
        device: device.into(),
        ns: ns.label.clone(),
        source: Box::new(source),
    })?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn remove_address(
    changes: &AtomicUsize,
    ns: &Netns,
    device: &str,
    index: u32,
    ip: IpAddr,
    prefix_len: u8,
) -> Result<(), DataplaneError> {
    let msg = match ip {
        IpAddr::V4(a) => {
            rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new().index(index).address(a, prefix_len).build()
        }
        IpAddr::V6(a) => {
            rtnetlink::AddressMessageBuilder::<std::net::Ipv6Addr>::new().index(index).address(a, prefix_len).build()
        }
    };
    ns.handle.address().del(msg).execute().await.map_err(|source| DataplaneError::RemoveAddress {
        address: ip,
        prefix_len,
        device: device.into(),
        ns: ns.label.clone(),
        source: Box::new(source),
    })?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
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

/// An IP network, to tell whether an address lies in a VTEP's CIDRs.
#[derive(Clone, Copy, Debug)]
struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Self> {
        parse_prefix(s).map(|(net, len)| Cidr { net, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses_only() {
        let c = Cidr::parse("198.18.0.0/24").unwrap();
        assert!(c.contains("198.18.0.7".parse().unwrap()));
        assert!(!c.contains("198.18.1.7".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/64").unwrap().contains("fd00::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn vxlan_mtu_subtracts_the_encapsulation() {
        assert_eq!(vxlan_mtu(Some(9000), "198.18.0.1".parse().unwrap()), Some(8950));
        assert_eq!(vxlan_mtu(Some(9000), "fd00::1".parse().unwrap()), Some(8930));
        assert_eq!(vxlan_mtu(None, "198.18.0.1".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_link_local_is_recognised() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(!is_link_local("fd00::1".parse().unwrap()));
    }
}
