//! The agent's loop: watch this node's `EVPNNodeState` and the network sets it names, realise
//! them, report back.
//!
//! Only the latest inputs matter, so the watches feed a single-slot channel and a burst of
//! updates becomes one reconcile. Every reconcile runs the whole plan (the data plane and FRR each apply
//! only the difference), and a periodic resync repairs what changed underneath: FRR restarted,
//! a VRF appeared, a device was deleted by hand. Exiting leaves the data plane and FRR as they
//! are, so restarting the agent never interrupts traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evpn_crds::nodestate::{AgentInfo, AppliedNetworkSet, DesiredNode, FrrDriver, VtepState};
use evpn_crds::{EvpnNetworkSet, EvpnNodeState, EvpnNodeStateStatus};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use tokio::sync::watch;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing::{info, warn};

use crate::dataplane::{ApplyScope, Dataplane};
use crate::frr::{self, Frr, RenderOptions};
use crate::metrics::{Metrics, RepairLabels, ResultLabels};
use crate::passwords::{PasswordSecrets, SecretName, Unavailable};
use crate::plan::{self, NodePlan};
use crate::report::{self, Observed, Outcome};

/// Field manager of the agent's status writes.
const FIELD_MANAGER: &str = "evpn-agent";

/// The agent of one node.
pub struct Agent {
    pub node: String,
    /// The Secrets that hold BGP passwords, watched once [`Agent::run`] has a client.
    password_secrets: PasswordSecrets,
    pub dataplane: Dataplane,
    pub frr: Frr,
    pub render: RenderOptions,
    pub resync: Duration,
    /// What the agent counts and whether it is ready; shared with the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Networks this agent realised and has not yet confirmed removed.
    known: BTreeSet<String>,
    /// The generation of each network last applied.
    applied: BTreeMap<String, i64>,
    /// The status last written, to write only on change.
    written: Option<EvpnNodeStateStatus>,
    /// The interface towards each address neighbor, as last found.
    uplinks: BTreeMap<IpAddr, String>,
    /// Per IP-VRF, the remote VTEPs zebra holds no router MAC for, and since when.
    stranded: BTreeMap<String, (BTreeSet<Ipv4Addr>, Instant)>,
}

/// How long a reconcile waits for the first read of a password Secret it has just started
/// watching before it reports the networks `Pending`.
const PASSWORD_SETTLE: Duration = Duration::from_secs(5);

/// How long a VRF's routes may go through a VTEP zebra has no router MAC for before the agent
/// repairs it: zebra adds the next hop with the route, so more than a moment is not convergence.
const STRANDED_GRACE: Duration = Duration::from_secs(5);

impl Agent {
    pub fn new(node: String, dataplane: Dataplane, frr: Frr, render: RenderOptions, resync: Duration) -> Self {
        Self {
            node,
            password_secrets: PasswordSecrets::default(),
            dataplane,
            frr,
            render,
            resync,
            metrics: Arc::default(),
            known: BTreeSet::new(),
            applied: BTreeMap::new(),
            written: None,
            uplinks: BTreeMap::new(),
            stranded: BTreeMap::new(),
        }
    }

    /// Runs until the process is told to stop.
    pub async fn run(mut self, client: kube::Client) -> anyhow::Result<()> {
        let api: Api<EvpnNodeState> = Api::all(client.clone());
        let (tx, mut rx) = watch::channel(Inputs::default());
        let secrets_changed = tx.clone();
        self.password_secrets = PasswordSecrets::new(Some(client.clone()), move || secrets_changed.send_modify(|_| ()));
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.node));
        tokio::spawn(follow(watcher(api.clone(), config), tx.clone(), |inputs, state| {
            inputs.state = Some(state.into_iter().next())
        }));
        tokio::spawn(follow(
            watcher(Api::<EvpnNetworkSet>::all(client), watcher::Config::default()),
            tx,
            |inputs, sets| {
                inputs.sets = Some(sets.into_iter().map(|s| (s.metadata.name.clone().unwrap_or_default(), s)).collect())
            },
        ));
        let mut tick = tokio::time::interval(self.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One listener for the whole run: a signal that arrives mid-reconcile is not lost.
        let shutdown = evpn_telemetry::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            // A change touches only the networks that changed; the resync compares everything,
            // repairing what changed underneath.
            let scope = tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the node state watch ended")
                    }
                    ApplyScope::Changes
                }
                _ = tick.tick() => ApplyScope::Full,
                _ = &mut shutdown => {
                    info!("stopping; devices and FRR configuration stay as they are");
                    return Ok(());
                }
            };
            // Nothing until both first lists are in: reconciling before would take "not listed
            // yet" for "no networks" and tear the node down, as a restarted agent must never do.
            let (Some(state), Some(sets)) = ({
                let inputs = rx.borrow_and_update();
                (inputs.state.clone(), inputs.sets.clone())
            }) else {
                continue;
            };
            self.metrics.mark_listed();
            if self.written.is_none() {
                // A restarted agent learns from its last report which networks may still need
                // removing.
                let reported = state.iter().flat_map(|s| s.status.iter()).flat_map(|st| &st.unapplied_networks);
                self.known.extend(reported.map(|n| n.evpn.clone()));
            }
            let spec = state.as_ref().map(|s| s.spec.clone()).unwrap_or_default();
            let desired = DesiredNode::assemble(&spec, |vtep| sets.get(vtep).map(|s| &s.spec));
            let mut observed =
                self.reconcile(&desired, state.as_ref().and_then(|s| s.metadata.generation), scope).await;
            observed.network_sets = spec
                .vteps
                .iter()
                .filter_map(|v| sets.get(&v.name))
                .filter_map(|set| {
                    Some(AppliedNetworkSet {
                        name: set.metadata.name.clone()?,
                        uid: set.metadata.uid.clone()?,
                        revision: set.spec.revision,
                    })
                })
                .collect();
            if let Some(state) = state {
                self.write_status(&api, &state, &observed).await;
            }
            self.metrics.mark_ready();
        }
    }

    /// Realises `spec` and says how each network fared. `scope` says how much of the data plane
    /// to compare: only what changed since the last apply, or everything.
    pub async fn reconcile(&mut self, spec: &DesiredNode, generation: Option<i64>, scope: ApplyScope) -> Observed {
        let span = tracing::info_span!("reconcile", ?scope, networks = spec.networks.len(), failed = Empty);
        let started = Instant::now();
        let observed = self.realise(spec, generation, scope).instrument(span.clone()).await;
        let failed =
            observed.networks.iter().filter(|(_, o)| !matches!(o, Outcome::Applied { .. } | Outcome::Pending { .. }));
        span.record("failed", failed.count());
        self.metrics.reconciled(scope, &observed, started.elapsed());
        observed
    }

    async fn realise(&mut self, spec: &DesiredNode, generation: Option<i64>, scope: ApplyScope) -> Observed {
        let plan = plan::plan(spec);
        let started = Instant::now();
        let dp = self.dataplane.apply_scoped(&plan, scope).instrument(tracing::info_span!("dataplane_apply")).await;
        self.metrics.applied("dataplane", started.elapsed());
        let vtep_failed = matches!(dp.vtep, Some(Err(_)));
        if vtep_failed || dp.networks.values().any(Result::is_err) || !dp.removals.is_empty() {
            self.metrics.error("dataplane");
        }
        let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
        for (evpn, e) in &plan.rejected {
            outcomes.insert(evpn.clone(), Outcome::Failed { reason: e.reason().into(), message: e.to_string() });
        }
        let vtep_ip = match &dp.vtep {
            Some(Ok(vtep)) => Some(vtep.ip),
            Some(Err(e)) => {
                for n in &plan.networks {
                    outcomes.insert(n.evpn.clone(), failed(e.reason(), e.to_string()));
                }
                None
            }
            None => None,
        };
        for (evpn, result) in &dp.networks {
            if let Err(e) = result {
                outcomes.insert(evpn.clone(), failed(e.reason(), e.to_string()));
            }
        }
        // A VTEP without `bgp` hands FRR to frr-k8s, which renders the FRRConfigurations the
        // operator writes: this agent builds the devices only. Touching FRR would fight frr-k8s
        // (a reload of this agent's partial configuration would wipe frr-k8s' own).
        let frr_k8s = plan.vtep.as_ref().is_some_and(|v| v.bgp.is_none());
        // Networks whose VRF zebra has not bound yet stay out of FRR: configuring a netns VRF
        // before zebra sees it leaves it inactive for good.
        let mut frr_plan = NodePlan { vtep: plan.vtep.clone(), networks: Vec::new(), rejected: Vec::new() };
        let active_vrfs = if !frr_k8s && plan.networks.iter().any(|n| n.ip_vrf.is_some()) {
            self.frr.active_vrfs().await.unwrap_or_else(|e| {
                self.metrics.error("frr_state");
                warn!("reading FRR's VRFs: {e}");
                BTreeSet::new()
            })
        } else {
            BTreeSet::new()
        };
        for n in &plan.networks {
            if outcomes.contains_key(&n.evpn) {
                continue;
            }
            if !frr_k8s && n.ip_vrf.is_some() && !active_vrfs.contains(&n.vrf) {
                outcomes.insert(
                    n.evpn.clone(),
                    Outcome::Pending {
                        reason: "VrfNotReady".into(),
                        message: format!("FRR does not see VRF {:?} yet", n.vrf),
                    },
                );
                continue;
            }
            frr_plan.networks.push(n.clone());
        }
        let mut frr_removals = BTreeMap::new();
        let frr_ip = if frr_k8s {
            for n in &frr_plan.networks {
                outcomes.insert(n.evpn.clone(), Outcome::Applied { generation: n.generation });
            }
            None
        } else {
            vtep_ip
        };
        let frr_ip = match self.passwords(&plan).await {
            Ok(passwords) => {
                self.render.passwords = passwords;
                frr_ip
            }
            // Never bring a session up without the password the admin asked for. A Secret whose
            // watch has just started is a moment away; its first read starts another reconcile.
            Err(Unavailable::Pending(message)) => {
                for n in &frr_plan.networks {
                    let pending = Outcome::Pending { reason: "BgpPasswordPending".into(), message: message.clone() };
                    outcomes.insert(n.evpn.clone(), pending);
                }
                None
            }
            Err(Unavailable::Failed(message)) => {
                self.metrics.error("bgp_password");
                for n in &frr_plan.networks {
                    outcomes.insert(n.evpn.clone(), failed("BgpPasswordUnavailable", message.clone()));
                }
                None
            }
        };
        if let Some(ip) = frr_ip {
            self.refresh_uplinks(&frr_plan).await;
            let config = frr::render(&frr_plan, ip, &self.render);
            let started = Instant::now();
            let sync = self.frr.sync(&config).instrument(tracing::info_span!("frr_sync")).await;
            self.metrics.applied("frr", started.elapsed());
            if sync.owners.iter().any(|o| o.result.is_err()) {
                self.metrics.error("frr");
            }
            let node_wide = sync.result(None).and_then(|r| r.as_ref().err()).map(|e| e.to_string());
            for n in &frr_plan.networks {
                let outcome = match (&node_wide, sync.result(Some(&n.evpn))) {
                    (Some(e), _) => failed("FrrNodeConfigFailed", format!("FRR's node-wide configuration: {e}")),
                    (None, Some(Err(e))) => failed("FrrConfigFailed", e.to_string()),
                    (None, _) => Outcome::Applied { generation: n.generation },
                };
                outcomes.insert(n.evpn.clone(), outcome);
            }
            for owner in &sync.owners {
                if let (Some(evpn), Err(e)) = (&owner.owner, &owner.result) {
                    frr_removals.insert(evpn.clone(), e.to_string());
                }
            }
            self.repair_stranded_vteps(&frr_plan).await;
        }

        // Networks gone from the spec: reported until both the data plane and FRR let them go.
        // The data plane's cleanup errors name devices, not networks, so any of them keeps every
        // departing network listed: an EVPN's VNIs must not be reused while a device may remain.
        let planned: BTreeSet<String> = spec.networks.iter().map(|n| n.entry.evpn.clone()).collect();
        let mut removing = Vec::new();
        for evpn in self.known.difference(&planned) {
            let problem = match (frr_removals.get(evpn), dp.removals.first()) {
                (Some(e), _) => Some(("FrrRemovalFailed", e.clone())),
                (None, Some(e)) => Some((e.reason(), e.to_string())),
                (None, None) => None,
            };
            match problem {
                Some((reason, message)) => {
                    removing.push((evpn.clone(), Outcome::RemovalFailed { reason: reason.into(), message }))
                }
                None => info!(evpn, "removed"),
            }
        }
        self.known = planned.clone();
        self.known.extend(removing.iter().map(|(e, _)| e.clone()));

        let mut networks: Vec<(String, Outcome)> = spec
            .networks
            .iter()
            .map(|n| {
                let outcome = outcomes.remove(&n.entry.evpn).unwrap_or_else(|| Outcome::Pending {
                    reason: "NoVtep".into(),
                    message: "the node has no VTEP address yet".into(),
                });
                (n.entry.evpn.clone(), outcome)
            })
            .collect();
        networks.extend(removing);
        for (evpn, outcome) in &networks {
            if let Outcome::Applied { generation } = outcome {
                self.applied.insert(evpn.clone(), *generation);
            }
        }
        self.applied.retain(|evpn, _| self.known.contains(evpn));

        let has_segments = plan.ethernet_segments().next().is_some();
        let segments = async { if has_segments { self.frr.ethernet_segments().await } else { Ok(Vec::new()) } };
        let (sessions, vnis, segments) = tokio::join!(self.frr.bgp_sessions(), self.frr.vnis(), segments);
        let segments = segments.unwrap_or_else(|e| {
            self.metrics.error("frr_state");
            warn!("reading Ethernet segments from FRR: {e}");
            Vec::new()
        });
        Observed {
            generation,
            agent: Some(AgentInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                vrf_backend: self.dataplane.backend(),
                frr_driver: if frr_k8s { FrrDriver::FrrK8s } else { FrrDriver::Direct },
            }),
            vteps: plan
                .vtep
                .iter()
                .map(|v| VtepState { name: v.name.clone(), ip: vtep_ip.map(|ip: IpAddr| ip.to_string()) })
                .collect(),
            sessions: sessions.unwrap_or_else(|e| {
                self.metrics.error("frr_state");
                warn!("reading BGP sessions from FRR: {e}");
                Vec::new()
            }),
            network_sets: Vec::new(),
            applied_generations: self.applied.clone(),
            networks,
            vnis: vnis.unwrap_or_default().into_iter().map(|v| (v.vni, v)).collect(),
            network_vnis: plan.networks.iter().map(|n| (n.evpn.clone(), n.vnis().collect())).collect(),
            segments: report::segment_states(&plan.networks, &segments),
        }
    }

    /// Re-attaches the L3VNI of an IP-VRF whose routes have gone through remote VTEPs that zebra
    /// holds no router MAC for ([`Frr::stranded_vteps`]) for longer than [`STRANDED_GRACE`].
    async fn repair_stranded_vteps(&mut self, plan: &NodePlan) {
        let ip_vrfs: BTreeMap<String, (&str, u32)> = plan
            .networks
            .iter()
            .filter_map(|n| Some((n.vrf.clone(), (n.evpn.as_str(), n.ip_vrf.as_ref()?.vni))))
            .collect();
        let l3vnis = ip_vrfs.iter().map(|(vrf, (_, vni))| (vrf.clone(), *vni)).collect();
        let stranded = match self.frr.stranded_vteps(&l3vnis).await {
            Ok(stranded) => stranded,
            Err(e) => {
                self.metrics.error("frr_state");
                warn!("reading the IP-VRFs' routes and EVPN next hops from FRR: {e}");
                return;
            }
        };
        let now = Instant::now();
        let previous = std::mem::take(&mut self.stranded);
        for (vrf, vteps) in stranded {
            let since = match previous.get(&vrf) {
                Some((before, since)) if *before == vteps => *since,
                _ => now,
            };
            let Some(&(evpn, vni)) = ip_vrfs.get(&vrf) else { continue };
            if now.duration_since(since) < STRANDED_GRACE {
                self.stranded.insert(vrf, (vteps, since));
                continue;
            }
            warn!(
                evpn,
                vrf,
                vni,
                ?vteps,
                "zebra holds no router MAC for remote VTEPs this VRF routes through; re-attaching its L3VNI"
            );
            self.metrics.frr_repairs.get_or_create(&RepairLabels { repair: "l3vni_reattached" }).inc();
            if let Err(e) = self.frr.reattach_l3vni(evpn, &vrf, vni).await {
                self.metrics.error("frr");
                warn!(evpn, vrf, vni, "re-attaching the L3VNI: {e}");
            }
        }
    }

    /// Finds the interfaces towards the address neighbors while the node has Ethernet segments
    /// (only then are they rendered as uplinks). A neighbor with no route now keeps its last
    /// interface, and a failed lookup keeps them all: an uplink that goes down is exactly when
    /// zebra must still count it, to hold the segments down.
    async fn refresh_uplinks(&mut self, plan: &NodePlan) {
        if plan.ethernet_segments().next().is_none() {
            return;
        }
        let neighbors = plan.vtep.iter().flat_map(|v| v.bgp.iter()).flat_map(|b| &b.neighbors);
        let addresses: Vec<IpAddr> = neighbors.filter_map(|n| n.address.as_deref()?.parse().ok()).collect();
        match self.dataplane.route_interfaces(&addresses).await {
            Ok(found) => self.uplinks = merge_uplinks(&self.uplinks, found, &addresses),
            Err(e) => {
                self.metrics.error("dataplane");
                warn!("finding the uplinks: {e}");
            }
        }
        self.render.uplinks = self.uplinks.values().cloned().collect();
    }

    /// The TCP MD5 passwords of the VTEP's BGP neighbors, from the watched Secrets; the
    /// Secrets watched become exactly those the plan names.
    async fn passwords(&mut self, plan: &NodePlan) -> Result<BTreeMap<String, String>, Unavailable> {
        let neighbors = || plan.vtep.iter().flat_map(|v| v.bgp.iter()).flat_map(|b| &b.neighbors);
        let secrets = neighbors()
            .filter_map(|n| n.password_secret.as_ref())
            .map(|s| SecretName { namespace: s.namespace.clone(), name: s.name.clone() })
            .collect();
        self.password_secrets.follow(&secrets);
        self.password_secrets.settle(PASSWORD_SETTLE).await;
        let mut passwords = BTreeMap::new();
        for n in neighbors() {
            let (Some(secret), Some(name)) = (&n.password_secret, frr::neighbor_name(n)) else { continue };
            let what = format!(
                "BGP password of neighbor {name} (Secret {}/{} key {:?})",
                secret.namespace, secret.name, secret.key
            );
            let at = SecretName { namespace: secret.namespace.clone(), name: secret.name.clone() };
            let password = self.password_secrets.value(&at, &secret.key).map_err(|e| match e {
                Unavailable::Pending(e) => Unavailable::Pending(format!("{what}: {e}")),
                Unavailable::Failed(e) => Unavailable::Failed(format!("{what}: {e}")),
            })?;
            passwords.insert(name.to_owned(), password);
        }
        Ok(passwords)
    }

    async fn write_status(&mut self, api: &Api<EvpnNodeState>, state: &EvpnNodeState, observed: &Observed) {
        let previous = self.written.as_ref().or(state.status.as_ref());
        let status = report::status(observed, previous, Time(k8s_openapi::jiff::Timestamp::now()));
        if state.status.as_ref() == Some(&status) || self.written.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({
            "apiVersion": "evpn.k8s.ovn.org/v1alpha1",
            "kind": "EVPNNodeState",
            "status": status,
        });
        let written =
            api.patch_status(&self.node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await;
        let result = if written.is_ok() { "ok" } else { "error" };
        self.metrics.status_writes.get_or_create(&ResultLabels { result }).inc();
        match written {
            Ok(_) => self.written = Some(status),
            Err(e) => warn!(node = self.node, "writing the node state's status: {e}"),
        }
    }
}

/// What the agent acts on; each part `None` until its watch has listed once.
#[derive(Clone, Default)]
struct Inputs {
    /// This node's state, `Some(None)` when it does not exist.
    state: Option<Option<EvpnNodeState>>,
    /// Every network set, by name.
    sets: Option<BTreeMap<String, EvpnNetworkSet>>,
}

/// Keeps one part of `inputs` equal to what a watch lists, handing the whole list to `set`
/// after each change.
async fn follow<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    inputs: watch::Sender<Inputs>,
    set: impl Fn(&mut Inputs, Vec<K>) + Send + 'static,
) where
    K: kube::Resource<DynamicType = ()> + Clone + Send + 'static,
{
    let mut events = events.default_backoff().boxed();
    let (mut objects, mut listing) = (BTreeMap::new(), BTreeMap::new());
    let key = |o: &K| o.meta().name.clone().unwrap_or_default();
    while let Some(event) = events.next().await {
        match event {
            // A (re)list in progress: nothing is handed on until it is complete.
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                listing.insert(key(&obj), obj);
                continue;
            }
            Ok(watcher::Event::InitDone) => objects = std::mem::take(&mut listing),
            Ok(watcher::Event::Apply(obj)) => {
                objects.insert(key(&obj), obj);
            }
            Ok(watcher::Event::Delete(obj)) => {
                objects.remove(&key(&obj));
            }
            Err(e) => {
                warn!("watching {}: {e}", K::plural(&()));
                continue;
            }
        }
        let list: Vec<K> = objects.values().cloned().collect();
        inputs.send_modify(|i| set(i, list));
    }
}

fn failed(reason: &str, message: String) -> Outcome {
    Outcome::Failed { reason: reason.into(), message }
}

/// The uplinks after a lookup: each neighbor still configured keeps its interface, the one found
/// now or, when it has no route now, the one it had.
fn merge_uplinks(
    last: &BTreeMap<IpAddr, String>,
    found: BTreeMap<IpAddr, String>,
    neighbors: &[IpAddr],
) -> BTreeMap<IpAddr, String> {
    neighbors.iter().filter_map(|a| Some((*a, found.get(a).or_else(|| last.get(a))?.clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_neighbor_keeps_its_uplink() {
        let (tor, spine): (IpAddr, IpAddr) = ("198.18.255.1".parse().unwrap(), "198.18.254.1".parse().unwrap());
        let both = BTreeMap::from([(tor, "eth0".to_owned()), (spine, "eth1".to_owned())]);
        // eth0 went down: its neighbor has no route any more, yet eth0 stays an uplink.
        let cut = merge_uplinks(&both, BTreeMap::from([(spine, "eth1".to_owned())]), &[tor, spine]);
        assert_eq!(cut, both);
        // A route that moved follows the neighbor; a neighbor removed from the VTEP takes its
        // uplink with it.
        let moved = merge_uplinks(&both, BTreeMap::from([(tor, "eth2".to_owned())]), &[tor]);
        assert_eq!(moved, BTreeMap::from([(tor, "eth2".to_owned())]));
    }
}
