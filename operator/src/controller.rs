//! The loop around [`crate::plan`]: mirror the cluster, plan, write the difference.
//!
//! Watches keep in-memory mirrors of what the planner needs (node states reduced to their spec
//! and what their agent reported). Any change marks the world dirty; a round starts once changes
//! pause for `debounce` (or `max_delay` after the first), so a burst of creates becomes a few
//! rounds. A round writes, in this order: finalizers, EVPN statuses (where allocations are
//! recorded), network sets, node specs, VTEP statuses; each only where the object differs from
//! the plan. A write that fails is retried with per-object exponential backoff, never in a hot
//! loop, and only while a round still wants it: a write whose answer was lost may have landed. A status change that only moves node counts waits until `status_refresh` has passed
//! since that EVPN's last write, so nodes reporting one after another cost a few writes per
//! EVPN, not one per node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use evpn_crds::common::NetworkKind;
use evpn_crds::frrk8s::{BgpSessionState, BgpSessionStateStatus, FrrConfiguration, FrrNodeState, FrrNodeStateStatus};
use evpn_crds::{Evpn, EvpnNetworkSet, EvpnNodeState, EvpnNodeStateSpec, Vtep};
use evpn_webhook::index::{NetworkFacts, NetworkKey};
use evpn_webhook::watch::{attachment_resource, network_resource};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::frrk8s;
use crate::metrics::{Metrics, WriteLabels};
use crate::plan::{FINALIZER, NodeInfo, ObservedNodeState, Plan, Planner, Snapshot};

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "evpn-operator";

/// Tuning of the loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Quiet time after a change before a round starts.
    pub debounce: Duration,
    /// Longest a round waits for a burst to end.
    pub max_delay: Duration,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Shortest time between two writes of one EVPN's status that only move node counts.
    pub status_refresh: Duration,
    /// System MAC of type-3 ESIs, shared by the whole cluster.
    pub system_mac: [u8; 6],
    /// Namespace where frr-k8s reads FRRConfigurations (frr-k8s mode).
    pub frr_namespace: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            concurrency: 32,
            status_refresh: Duration::from_secs(2),
            system_mac: [0x02, 0x65, 0x76, 0x70, 0x6e, 0x00],
            frr_namespace: "frr-k8s-system".into(),
        }
    }
}

/// A map of name to value, kept current by a watch.
struct Mirror<V> {
    items: Mutex<BTreeMap<String, V>>,
    synced: AtomicBool,
    /// Set when the kind's API does not exist in the cluster.
    absent: AtomicBool,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Self { items: Mutex::default(), synced: AtomicBool::new(false), absent: AtomicBool::new(false) }
    }
}

impl<V> Mirror<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, V>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `mirror` equal to what the watch reports, mapping each object with `map`.
async fn follow<K, V>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    mirror: &Mirror<V>,
    map: impl Fn(&K) -> Option<(String, V)>,
    dirty: &Notify,
) {
    let events = events.default_backoff();
    futures::pin_mut!(events);
    let mut listing = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(obj)) => {
                if let Some((k, v)) = map(&obj) {
                    mirror.lock().insert(k, v);
                }
            }
            Ok(Event::Delete(obj)) => {
                if let Some((k, _)) = map(&obj) {
                    mirror.lock().remove(&k);
                }
            }
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(obj)) => listing.extend(map(&obj)),
            Ok(Event::InitDone) => {
                *mirror.lock() = std::mem::take(&mut listing);
                mirror.synced.store(true, Ordering::Release);
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) if status.code == 404 => {
                // The kind is not installed: an empty, synced mirror, and say so once.
                if !mirror.absent.swap(true, Ordering::AcqRel) {
                    tracing::warn!("an API the operator reads is not installed: {}", status.message);
                }
                mirror.lock().clear();
                mirror.synced.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch failed; retrying");
                continue;
            }
        }
        dirty.notify_one();
    }
}

/// Everything the controller mirrors.
#[derive(Default)]
struct World {
    evpns: Mirror<Arc<Evpn>>,
    vteps: Mirror<Arc<Vtep>>,
    nodes: Mirror<NodeInfo>,
    network_sets: Mirror<Arc<EvpnNetworkSet>>,
    node_states: Mirror<ObservedNodeState>,
    cluster_networks: Mirror<NetworkFacts>,
    networks: Mirror<NetworkFacts>,
    /// Per NetworkAttachmentDefinition (namespace/name): the OVN network name and ID it carries.
    attachments: Mirror<(String, u32)>,
    frr_configurations: Mirror<Arc<FrrConfiguration>>,
    frr_node_states: Mirror<FrrNodeStateStatus>,
    frr_sessions: Mirror<BgpSessionStateStatus>,
}

impl World {
    fn synced(&self) -> bool {
        [
            &self.evpns.synced,
            &self.vteps.synced,
            &self.nodes.synced,
            &self.network_sets.synced,
            &self.node_states.synced,
            &self.cluster_networks.synced,
            &self.networks.synced,
            &self.attachments.synced,
            &self.frr_configurations.synced,
            &self.frr_node_states.synced,
            &self.frr_sessions.synced,
        ]
        .iter()
        .all(|s| s.load(Ordering::Acquire))
    }
}

/// Runs the controller until the future is dropped (for instance on losing leadership).
pub async fn run(client: Client, config: Config, metrics: Arc<Metrics>) {
    let world = World::default();
    let dirty = Notify::new();
    let cfg = watcher::Config::default();
    let watches = async {
        futures::join!(
            follow(
                watcher(Api::<Evpn>::all(client.clone()), cfg.clone()),
                &world.evpns,
                |o: &Evpn| { Some((o.name_any(), Arc::new(o.clone()))) },
                &dirty
            ),
            follow(
                watcher(Api::<Vtep>::all(client.clone()), cfg.clone()),
                &world.vteps,
                |o: &Vtep| { Some((o.name_any(), Arc::new(o.clone()))) },
                &dirty
            ),
            follow(
                watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg.clone()),
                &world.nodes,
                |n: &PartialObjectMeta<Node>| {
                    let info = NodeInfo {
                        name: n.name_any(),
                        uid: n.uid()?,
                        labels: n.labels().clone(),
                        subnets: NodeInfo::parse_subnets(n.annotations().get(NODE_SUBNETS_ANNOTATION)),
                    };
                    Some((info.name.clone(), info))
                },
                &dirty
            ),
            follow(
                watcher(Api::<EvpnNetworkSet>::all(client.clone()), cfg.clone()),
                &world.network_sets,
                |o: &EvpnNetworkSet| { Some((o.name_any(), Arc::new(o.clone()))) },
                &dirty
            ),
            follow(
                watcher(Api::<EvpnNodeState>::all(client.clone()), cfg.clone()),
                &world.node_states,
                |s: &EvpnNodeState| { Some((s.name_any(), ObservedNodeState::of(s))) },
                &dirty
            ),
            follow(
                watcher(
                    Api::<DynamicObject>::all_with(
                        client.clone(),
                        &network_resource(NetworkKind::ClusterUserDefinedNetwork)
                    ),
                    cfg.clone()
                ),
                &world.cluster_networks,
                |o: &DynamicObject| Some((o.name_any(), NetworkFacts::from_network_spec(&o.data["spec"]["network"])?)),
                &dirty
            ),
            follow(
                watcher(
                    Api::<DynamicObject>::all_with(client.clone(), &network_resource(NetworkKind::UserDefinedNetwork)),
                    cfg.clone()
                ),
                &world.networks,
                |o: &DynamicObject| Some((
                    format!("{}/{}", o.namespace()?, o.name_any()),
                    NetworkFacts::from_network_spec(&o.data["spec"])?
                )),
                &dirty
            ),
            follow(
                watcher(Api::<DynamicObject>::all_with(client.clone(), &attachment_resource()), cfg.clone()),
                &world.attachments,
                |o: &DynamicObject| {
                    let annotations = o.annotations();
                    let network = annotations.get(NETWORK_NAME_ANNOTATION)?.clone();
                    let id = annotations.get(NETWORK_ID_ANNOTATION)?.parse().ok()?;
                    Some((format!("{}/{}", o.namespace()?, o.name_any()), (network, id)))
                },
                &dirty
            ),
            follow(
                watcher(Api::<FrrConfiguration>::namespaced(client.clone(), &config.frr_namespace), cfg.clone()),
                &world.frr_configurations,
                |o: &FrrConfiguration| Some((o.name_any(), Arc::new(o.clone()))),
                &dirty
            ),
            follow(
                watcher(Api::<FrrNodeState>::all(client.clone()), cfg.clone()),
                &world.frr_node_states,
                |o: &FrrNodeState| Some((o.name_any(), o.status.clone().unwrap_or_default())),
                &dirty
            ),
            follow(
                watcher(Api::<BgpSessionState>::namespaced(client.clone(), &config.frr_namespace), cfg.clone()),
                &world.frr_sessions,
                |o: &BgpSessionState| Some((o.name_any(), o.status.clone()?)),
                &dirty
            ),
        )
    };
    let rounds = async {
        let mut planner = Planner::new(config.system_mac);
        let writer = Writer::new(client.clone(), &config, metrics.clone());
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            match retry_at {
                Some(at) => {
                    tokio::select! {
                        () = dirty.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => dirty.notified().await,
            }
            let _busy = metrics.progress.busy();
            debounce(&dirty, config.debounce, config.max_delay).await;
            if !world.synced() {
                // Deciding from half a picture could hand out a VNI that is taken.
                continue;
            }
            let started = Instant::now();
            // One span per round: the writes' warnings carry it, and a collector shows the round
            // with its writes.
            let round = tracing::info_span!(
                "reconcile_round",
                evpns = tracing::field::Empty,
                nodes = tracing::field::Empty,
                retry = tracing::field::Empty
            );
            let plan = round.in_scope(|| {
                let (evpns, vteps, nodes) = (values(&world.evpns), values(&world.vteps), values(&world.nodes));
                let networks = networks(&world);
                let network_ids: HashMap<String, u32> = world.attachments.lock().values().cloned().collect();
                let network_sets = world.network_sets.lock().clone();
                let frr_configurations = values(&world.frr_configurations);
                let frr_node_states = world.frr_node_states.lock().clone();
                let mut frr_sessions: BTreeMap<String, Vec<BgpSessionStateStatus>> = BTreeMap::new();
                for session in world.frr_sessions.lock().values() {
                    frr_sessions.entry(session.node.clone()).or_default().push(session.clone());
                }
                let node_states = world.node_states.lock();
                planner.plan(&Snapshot {
                    evpns: &evpns,
                    vteps: &vteps,
                    nodes: &nodes,
                    networks: &networks,
                    network_ids: &network_ids,
                    network_sets: &network_sets,
                    node_states: &node_states,
                    frr_configurations: &frr_configurations,
                    frr_node_states: &frr_node_states,
                    frr_sessions: &frr_sessions,
                    frr_namespace: &config.frr_namespace,
                    now: Time(k8s_openapi::jiff::Timestamp::now()),
                })
            });
            round.record("evpns", plan.evpn_statuses.len()).record("nodes", plan.node_specs.len());
            tracing::debug!(
                parent: &round,
                add_finalizer = plan.add_finalizer.len(),
                remove_finalizer = ?plan.remove_finalizer,
                "planned"
            );
            metrics.record_conditions(plan.evpn_statuses.values());
            let observed = Observed::take(&world);
            retry_at = writer.apply(plan, observed).instrument(round.clone()).await.map(tokio::time::Instant::from_std);
            round.record("retry", retry_at.is_some());
            tracing::debug!(parent: &round, elapsed = ?started.elapsed(), ?retry_at, "round done");
            metrics.rounds.inc();
            metrics.round_seconds.observe(started.elapsed().as_secs_f64());
            metrics.vnis_in_use.set(planner.vnis_in_use() as i64);
            metrics.ips_in_use.set(planner.ips_in_use() as i64);
        }
    };
    futures::join!(watches, rounds);
}

/// Where OVN-Kubernetes records a node's subnets of each network.
const NODE_SUBNETS_ANNOTATION: &str = "k8s.ovn.org/node-subnets";
/// Annotations OVN-Kubernetes puts on each NetworkAttachmentDefinition of a user-defined network.
const NETWORK_NAME_ANNOTATION: &str = "k8s.ovn.org/network-name";
const NETWORK_ID_ANNOTATION: &str = "k8s.ovn.org/network-id";

/// Waits until changes pause for `quiet`, or `max` has passed.
async fn debounce(dirty: &Notify, quiet: Duration, max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        tokio::select! {
            () = dirty.notified() => if tokio::time::Instant::now() >= deadline { return },
            () = tokio::time::sleep(quiet) => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

fn values<V: Clone>(mirror: &Mirror<V>) -> Vec<V> {
    mirror.lock().values().cloned().collect()
}

fn networks(world: &World) -> HashMap<NetworkKey, NetworkFacts> {
    let mut all: HashMap<NetworkKey, NetworkFacts> = world
        .cluster_networks
        .lock()
        .iter()
        .map(|(name, f)| ((NetworkKind::ClusterUserDefinedNetwork, None, name.clone()), f.clone()))
        .collect();
    for (key, f) in world.networks.lock().iter() {
        if let Some((ns, name)) = key.split_once('/') {
            all.insert((NetworkKind::UserDefinedNetwork, Some(ns.to_owned()), name.to_owned()), f.clone());
        }
    }
    all
}

/// What the writes compare against, taken after planning.
struct Observed {
    evpns: BTreeMap<String, Arc<Evpn>>,
    vteps: BTreeMap<String, Arc<Vtep>>,
    network_sets: BTreeMap<String, Arc<EvpnNetworkSet>>,
    node_specs: BTreeMap<String, EvpnNodeStateSpec>,
    frr_configurations: BTreeMap<String, Arc<FrrConfiguration>>,
}

impl Observed {
    fn take(world: &World) -> Self {
        Self {
            evpns: world.evpns.lock().clone(),
            vteps: world.vteps.lock().clone(),
            network_sets: world.network_sets.lock().clone(),
            node_specs: world.node_states.lock().iter().map(|(k, v)| (k.clone(), v.spec.clone())).collect(),
            frr_configurations: world.frr_configurations.lock().clone(),
        }
    }
}

/// What a write targets: the kind of write and the object's name.
type WriteKey = (&'static str, String);

/// Which writes failed and when each may be tried again, kept only while the write is wanted.
///
/// A failed write can still have landed (the apiserver committed it, then the answer was lost),
/// and the plan can change its mind before the retry is due. Either way the next round finds
/// nothing to write, so an entry removed only by a successful write would stay forever: a stale
/// entry that, through `next_retry`, wakes the loop at an instant already past (a hot loop) and
/// that could close a stage's gate. So each round records the writes it wants, and a stage,
/// once planned, forgets the failures of its kinds that it no longer wants. Only-progress status
/// writes deferred by `status_refresh` count as not wanted: the refresh already paces them.
#[derive(Debug, Default)]
struct Backoff {
    failures: HashMap<WriteKey, Failure>,
    /// Writes the current round wanted, attempted or not.
    wanted: HashSet<WriteKey>,
}

#[derive(Debug)]
struct Failure {
    due: Instant,
    attempts: u32,
}

impl Backoff {
    fn begin_round(&mut self) {
        self.wanted.clear();
    }

    /// Records that this round wants the write; whether it may be attempted now.
    fn may_write(&mut self, key: &WriteKey, now: Instant) -> bool {
        self.wanted.insert(key.clone());
        self.failures.get(key).is_none_or(|f| f.due <= now)
    }

    fn succeeded(&mut self, key: &WriteKey) {
        self.failures.remove(key);
    }

    /// Records a failure; how long until the retry.
    fn failed(&mut self, key: WriteKey, now: Instant) -> Duration {
        let attempts = self.failures.get(&key).map_or(0, |f| f.attempts) + 1;
        let delay = BACKOFF_MIN.saturating_mul(1 << attempts.min(10)).min(BACKOFF_MAX);
        self.failures.insert(key, Failure { due: now + delay, attempts });
        delay
    }

    /// Forgets the failures of `kinds` that this round does not want written.
    fn settle(&mut self, kinds: &[&'static str]) {
        let wanted = &self.wanted;
        self.failures.retain(|key, _| !kinds.contains(&key.0) || wanted.contains(key));
    }

    /// The next retry still ahead. A retry already due belongs to a stage this round did not
    /// reach (a settled stage leaves only retries ahead); the gate that stopped the round has
    /// one ahead of its own, and the stage is retried when that opens.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.failures.values().map(|f| f.due).filter(|due| *due > now).min()
    }
}

/// Applies plans, with per-object backoff after failures.
struct Writer {
    client: Client,
    concurrency: usize,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    backoff: Mutex<Backoff>,
    status_refresh: Duration,
    frr_namespace: String,
    /// When each EVPN's status was last written.
    status_written: Mutex<HashMap<String, Instant>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// A write that takes longer is abandoned (and retried), so one stuck request cannot stall a round.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Writer {
    fn new(client: Client, config: &Config, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER));
        Self {
            client,
            concurrency: config.concurrency,
            metrics,
            recorder,
            backoff: Mutex::default(),
            status_refresh: config.status_refresh,
            frr_namespace: config.frr_namespace.clone(),
            status_written: Mutex::default(),
        }
    }

    /// Writes what differs; returns when the next retry is due, if any write failed.
    async fn apply(&self, plan: Plan, observed: Observed) -> Option<Instant> {
        self.lock_backoff().begin_round();
        let evpns: Api<Evpn> = Api::all(self.client.clone());
        let mut writes: Vec<Option<BoxFuture<'_, bool>>> = Vec::new();
        let finalizer_changes =
            plan.add_finalizer.iter().map(|n| (n, true)).chain(plan.remove_finalizer.iter().map(|n| (n, false)));
        for (name, add) in finalizer_changes {
            let Some(obj) = observed.evpns.get(name) else { continue };
            let mut finalizers: Vec<String> = obj.finalizers().to_vec();
            finalizers.retain(|f| f != FINALIZER);
            if add {
                finalizers.push(FINALIZER.into());
            }
            // resourceVersion makes this a compare-and-swap on the finalizer list; finalizers go
            // first in a round, while the observed version is still current. A new EVPN's
            // allocations are recorded in the same write (see `record`).
            let mut body = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
            if let Some(spec) = plan.evpn_specs.get(name).filter(|_| add) {
                body["spec"] = json!(spec);
            }
            let (evpns, name) = (evpns.clone(), name.clone());
            writes.push(self.write("EVPN/finalizer", name.clone(), async move {
                evpns.patch(&name, &PatchParams::default(), &Patch::Merge(&body)).await.map(drop)
            }));
        }
        self.run_stage(&["EVPN/finalizer"], std::mem::take(&mut writes)).await;

        for (kind, name, write) in crate::record::spec_writes(&self.client, &plan, &observed.evpns, &observed.vteps) {
            writes.push(self.write(kind, name, write));
        }
        self.run_stage(&["EVPN/spec", "VTEP/spec"], std::mem::take(&mut writes)).await;

        let mut deferred: Option<Instant> = None;
        for (name, status) in &plan.evpn_statuses {
            let Some(obj) = observed.evpns.get(name) else { continue };
            if obj.status.as_ref() == Some(status) {
                continue;
            }
            let last = self.status_written.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied();
            if let (Some(old), Some(due)) = (&obj.status, last.map(|at| at + self.status_refresh))
                && due > Instant::now()
                && only_progress(old, status)
            {
                deferred = Some(deferred.map_or(due, |d| d.min(due)));
                continue;
            }
            writes.push(self.write_status(&evpns, obj, status));
        }
        if !self.run_stage(&["EVPN/status"], std::mem::take(&mut writes)).await {
            // Nodes may only be told allocations their EVPNs record: try again next round.
            return earliest(self.next_retry(), deferred);
        }

        let sets: Api<EvpnNetworkSet> = Api::all(self.client.clone());
        for (vtep, set) in &plan.network_sets {
            if observed.network_sets.get(vtep).is_some_and(|o| o.spec == set.spec) {
                continue;
            }
            let owner = OwnerReference {
                api_version: "evpn.k8s.ovn.org/v1alpha1".into(),
                kind: "VTEP".into(),
                name: vtep.clone(),
                uid: set.vtep_uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            };
            let mut object = EvpnNetworkSet::new(vtep, set.spec.clone());
            object.metadata.owner_references = Some(vec![owner]);
            let (sets, vtep) = (sets.clone(), vtep.clone());
            writes.push(self.write("EVPNNetworkSet", vtep.clone(), async move {
                sets.patch(&vtep, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object)).await.map(drop)
            }));
        }
        if !self.run_stage(&["EVPNNetworkSet"], std::mem::take(&mut writes)).await {
            // A node must not be pointed at a VTEP whose set is not written yet.
            return earliest(self.next_retry(), deferred);
        }

        let states: Api<EvpnNodeState> = Api::all(self.client.clone());
        for (node, desired) in &plan.node_specs {
            if observed.node_specs.get(node) == Some(&desired.spec) {
                continue;
            }
            tracing::debug!(%node, "node spec differs");
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.clone(),
                uid: desired.uid.clone(),
                block_owner_deletion: None,
                controller: None,
            };
            let mut state = EvpnNodeState::new(node, desired.spec.clone());
            state.metadata.owner_references = Some(vec![owner]);
            let (states, node) = (states.clone(), node.clone());
            writes.push(self.write("EVPNNodeState", node.clone(), async move {
                states.patch(&node, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&state)).await.map(drop)
            }));
        }
        self.run_stage(&["EVPNNodeState"], std::mem::take(&mut writes)).await;

        let frr: Api<FrrConfiguration> = Api::namespaced(self.client.clone(), &self.frr_namespace);
        for (name, desired) in &plan.frr_configurations {
            let current = observed.frr_configurations.get(name);
            if current.is_some_and(|c| c.spec == desired.spec && c.metadata.labels == desired.metadata.labels) {
                continue;
            }
            let (frr, name, desired) = (frr.clone(), name.clone(), desired.clone());
            writes.push(self.write("FRRConfiguration", name.clone(), async move {
                frr.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await.map(drop)
            }));
        }
        for (name, current) in &observed.frr_configurations {
            if frrk8s::is_ours(&current.metadata) && !plan.frr_configurations.contains_key(name) {
                let (frr, name) = (frr.clone(), name.clone());
                writes.push(self.write("FRRConfiguration/delete", name.clone(), async move {
                    frr.delete(&name, &Default::default()).await.map(drop)
                }));
            }
        }
        self.run_stage(&["FRRConfiguration", "FRRConfiguration/delete"], std::mem::take(&mut writes)).await;

        let vteps: Api<Vtep> = Api::all(self.client.clone());
        for (name, status) in &plan.vtep_statuses {
            let Some(obj) = observed.vteps.get(name) else { continue };
            if obj.status.as_ref() == Some(status) {
                continue;
            }
            let body = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "status": status});
            let (vteps, name) = (vteps.clone(), name.clone());
            writes.push(self.write("VTEP/status", name.clone(), async move {
                vteps.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await.map(drop)
            }));
        }
        self.run_stage(&["VTEP/status"], writes).await;
        earliest(self.next_retry(), deferred)
    }

    /// Writes an EVPN's status and publishes the events of its transitions.
    fn write_status<'a>(
        &'a self,
        evpns: &Api<Evpn>,
        obj: &Evpn,
        status: &evpn_crds::EvpnStatus,
    ) -> Option<BoxFuture<'a, bool>> {
        let events = transitions(obj, status);
        let (evpns, recorder, name) = (evpns.clone(), &self.recorder, obj.name_any());
        let body = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "status": status});
        let reference = obj.object_ref(&());
        self.write("EVPN/status", name.clone(), async move {
            evpns.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
            self.status_written.lock().unwrap_or_else(PoisonError::into_inner).insert(name, Instant::now());
            for event in events {
                // Events are best effort: a lost one must not fail the write.
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %e, "publishing an event failed");
                }
            }
            Ok(())
        })
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_retry(&self) -> Option<Instant> {
        self.lock_backoff().next_retry(Instant::now())
    }

    /// Runs one stage's wanted writes (`None`: backing off), a bounded number at a time, and
    /// forgets the failures of `kinds` the stage no longer wants; whether every wanted write
    /// succeeded, the gate of the stages after it.
    async fn run_stage(&self, kinds: &[&'static str], writes: Vec<Option<BoxFuture<'_, bool>>>) -> bool {
        self.lock_backoff().settle(kinds);
        let wanted = writes.len();
        let succeeded = futures::stream::iter(writes.into_iter().flatten())
            .buffer_unordered(self.concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        succeeded == wanted
    }

    /// One write, skipped while its object is backing off; failures extend the backoff.
    fn write<'a>(
        &'a self,
        kind: &'static str,
        name: String,
        write: impl Future<Output = Result<(), kube::Error>> + Send + 'a,
    ) -> Option<BoxFuture<'a, bool>> {
        let key = (kind, name);
        if !self.lock_backoff().may_write(&key, Instant::now()) {
            return None;
        }
        let span = tracing::debug_span!("write", kind, name = %key.1);
        Some(Box::pin(
            async move {
                let result = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(result) => result,
                    Err(_) => Err(kube::Error::Service(format!("no answer within {WRITE_TIMEOUT:?}").into())),
                };
                self.metrics
                    .writes
                    .get_or_create(&WriteLabels { kind, result: if result.is_ok() { "ok" } else { "error" } })
                    .inc();
                let ok = result.is_ok();
                match result {
                    Ok(()) => self.lock_backoff().succeeded(&key),
                    Err(e) => {
                        let name = key.1.clone();
                        let delay = self.lock_backoff().failed(key, Instant::now());
                        tracing::warn!(kind, %name, error = %e, retry_in = ?delay, "write failed");
                    }
                }
                ok
            }
            .instrument(span),
        ))
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a new status differs from the old only in node counts and their wording: no
/// condition changes status or reason, nothing resolved changes.
fn only_progress(old: &evpn_crds::EvpnStatus, new: &evpn_crds::EvpnStatus) -> bool {
    let strip = |s: &evpn_crds::EvpnStatus| {
        let mut s = s.clone();
        s.nodes = None;
        s.ready_nodes = None;
        s.failed_nodes.clear();
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    strip(old) == strip(new)
}

/// Events for the condition changes that matter to a user.
fn transitions(old: &Evpn, new: &evpn_crds::EvpnStatus) -> Vec<KubeEvent> {
    let before = |t: &str| {
        old.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut events = Vec::new();
    for c in &new.conditions {
        if before(&c.type_) == Some((c.status.clone(), c.reason.clone())) {
            continue;
        }
        let event = |type_, reason: &str| KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(c.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        match (c.type_.as_str(), c.status.as_str(), c.reason.as_str()) {
            ("Accepted", "True", _) => events.push(event(EventType::Normal, "Allocated")),
            ("Accepted", "False", reason) => events.push(event(EventType::Warning, reason)),
            ("Ready", "True", _) => events.push(event(EventType::Normal, "Ready")),
            ("Degraded", "True", _) => events.push(event(EventType::Warning, "NodesFailed")),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &'static str, name: &str) -> WriteKey {
        (kind, name.to_owned())
    }

    #[test]
    fn a_failed_write_that_landed_is_forgotten_once_no_round_wants_it() {
        let (mut b, t0) = (Backoff::default(), Instant::now());
        let status = key("EVPN/status", "blue");
        b.begin_round();
        assert!(b.may_write(&status, t0));
        b.failed(status.clone(), t0);
        b.settle(&["EVPN/status"]);
        assert_eq!(b.next_retry(t0), Some(t0 + BACKOFF_MIN * 2));
        // The write had landed: the next round finds the status as planned and wants nothing.
        b.begin_round();
        b.settle(&["EVPN/status"]);
        assert!(b.failures.is_empty(), "{b:?}");
        assert_eq!(b.next_retry(t0), None);
    }

    #[test]
    fn a_wanted_write_backs_off_exponentially_and_stays_until_it_succeeds() {
        let (mut b, t0) = (Backoff::default(), Instant::now());
        let set = key("EVPNNetworkSet", "vtep");
        let mut now = t0;
        for delay in [400, 800, 1600] {
            b.begin_round();
            assert!(b.may_write(&set, now));
            assert_eq!(b.failed(set.clone(), now), Duration::from_millis(delay));
            b.settle(&["EVPNNetworkSet"]);
            b.begin_round();
            assert!(!b.may_write(&set, now + Duration::from_millis(delay - 1)), "not before it is due");
            b.settle(&["EVPNNetworkSet"]);
            now += Duration::from_millis(delay);
        }
        b.begin_round();
        assert!(b.may_write(&set, now));
        b.succeeded(&set);
        assert_eq!(b.next_retry(now), None);
    }

    #[test]
    fn a_stage_settles_only_its_own_kinds_and_no_retry_is_in_the_past() {
        let (mut b, t0) = (Backoff::default(), Instant::now());
        let (status, node) = (key("EVPN/status", "blue"), key("EVPNNodeState", "n1"));
        b.begin_round();
        b.may_write(&status, t0);
        b.may_write(&node, t0);
        b.failed(node.clone(), t0);
        b.failed(status.clone(), t0);
        // A later round stops at the status gate: the node's retry is due but not reached.
        let later = t0 + Duration::from_secs(1);
        b.begin_round();
        assert!(b.may_write(&status, later));
        b.failed(status.clone(), later);
        b.settle(&["EVPN/status"]);
        assert!(b.failures.contains_key(&node), "a stage not reached keeps its failures");
        assert_eq!(b.next_retry(later), Some(later + BACKOFF_MIN * 4), "the gate's retry, not the past one");
    }
}
