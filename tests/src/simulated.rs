//! Simulated node agents: test code that writes node-state statuses the way real agents would,
//! for controller tests and the scale benchmark, where hundreds of nodes have no data plane.
//!
//! Every simulated agent acts on its node's spec and network sets as soon as it sees them: it
//! reports the sets' current revisions as applied, with no network listed (all applied), or, on
//! a failing node, every network listed `Failed`. Like a real agent it writes only when its
//! status changes and has at most one write in flight, so a burst of set revisions costs each
//! node a few writes, not one per revision.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use evpn_crds::nodestate::{AppliedNetworkSet, NetworkPhase, NetworkState};
use evpn_crds::{EvpnNetworkSet, EvpnNodeState, EvpnNodeStateStatus};
use futures::stream::{FuturesUnordered, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Which nodes to simulate and how they behave.
#[derive(Clone, Debug, Default)]
pub struct Agents {
    /// Nodes whose agent runs.
    pub nodes: BTreeSet<String>,
    /// Nodes whose agent reports every network failed.
    pub failing: BTreeSet<String>,
    /// Successful status writes, counted for benchmarks.
    pub writes: Arc<AtomicU64>,
}

enum Change {
    State(Box<EvpnNodeState>),
    Set(Arc<EvpnNetworkSet>),
    SetGone(String),
    Written(String, Option<EvpnNodeStateStatus>),
}

impl Agents {
    /// Runs the agents until the returned future is dropped.
    pub async fn run(self, client: Client) {
        let states: Api<EvpnNodeState> = Api::all(client.clone());
        let state_events = watcher(states.clone(), watcher::Config::default()).applied_objects().default_backoff();
        let set_events = watcher(Api::<EvpnNetworkSet>::all(client), watcher::Config::default())
            .default_backoff()
            .filter_map(|e| async move {
                match e {
                    Ok(Event::Apply(s) | Event::InitApply(s)) => Some(Change::Set(Arc::new(s))),
                    Ok(Event::Delete(s)) => Some(Change::SetGone(s.name_any())),
                    _ => None,
                }
            });
        let state_events = state_events.filter_map(|e| async move { e.ok().map(|s| Change::State(Box::new(s))) });
        let mut changes = futures::stream::select(state_events.boxed(), set_events.boxed());

        let mut specs: BTreeMap<String, EvpnNodeState> = BTreeMap::new();
        let mut sets: HashMap<String, Arc<EvpnNetworkSet>> = HashMap::new();
        let mut written: HashMap<String, EvpnNodeStateStatus> = HashMap::new();
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut writes = FuturesUnordered::new();
        loop {
            let change = tokio::select! {
                Some(change) = changes.next() => change,
                Some(done) = writes.next(), if !writes.is_empty() => done,
                else => return,
            };
            let touched: Vec<String> = match change {
                Change::State(state) => {
                    let node = state.name_any();
                    if !self.nodes.contains(&node) {
                        continue;
                    }
                    match &state.status {
                        Some(status) => written.insert(node.clone(), status.clone()),
                        None => written.remove(&node),
                    };
                    specs.insert(node.clone(), *state);
                    vec![node]
                }
                Change::Set(set) => {
                    let name = set.name_any();
                    sets.insert(name.clone(), set);
                    nodes_of(&specs, &name)
                }
                Change::SetGone(name) => {
                    sets.remove(&name);
                    nodes_of(&specs, &name)
                }
                Change::Written(node, status) => {
                    in_flight.remove(&node);
                    if let Some(status) = status {
                        self.writes.fetch_add(1, Ordering::Relaxed);
                        written.insert(node.clone(), status);
                    }
                    vec![node]
                }
            };
            for node in touched {
                let Some(state) = specs.get(&node) else { continue };
                if in_flight.contains(&node) {
                    continue;
                }
                let status = self.status_of(state, &sets);
                if written.get(&node) == Some(&status) {
                    continue;
                }
                in_flight.insert(node.clone());
                let states = states.clone();
                writes.push(async move {
                    let body = json!({"status": status});
                    // A failed write is retried on the next change, as an agent would.
                    let ok = states.patch_status(&node, &PatchParams::default(), &Patch::Merge(&body)).await.is_ok();
                    Change::Written(node, ok.then_some(status))
                });
            }
        }
    }

    fn status_of(&self, state: &EvpnNodeState, sets: &HashMap<String, Arc<EvpnNetworkSet>>) -> EvpnNodeStateStatus {
        let carried: Vec<&EvpnNetworkSet> =
            state.spec.vteps.iter().filter_map(|v| sets.get(&v.name)).map(AsRef::as_ref).collect();
        let network_sets = carried
            .iter()
            .map(|s| AppliedNetworkSet {
                name: s.name_any(),
                uid: s.metadata.uid.clone().unwrap_or_default(),
                revision: s.spec.revision,
            })
            .collect();
        let all = carried.iter().flat_map(|s| &s.spec.networks);
        let (unapplied, applied) = if self.failing.contains(&state.name_any()) {
            let failed: Vec<NetworkState> = all
                .map(|n| NetworkState {
                    evpn: n.evpn.clone(),
                    applied_generation: None,
                    phase: NetworkPhase::Failed,
                    reason: Some("VxlanCreateFailed".into()),
                    message: Some("simulated: RTNETLINK answers: Operation not supported".into()),
                    vnis: vec![],
                })
                .collect();
            (failed, 0)
        } else {
            (Vec::new(), all.count() as u32)
        };
        EvpnNodeStateStatus {
            observed_generation: state.metadata.generation,
            network_sets,
            failed_networks: unapplied.len() as u32,
            unapplied_networks: unapplied,
            applied_networks: applied,
            ..Default::default()
        }
    }
}

fn nodes_of(specs: &BTreeMap<String, EvpnNodeState>, set: &str) -> Vec<String> {
    specs.iter().filter(|(_, s)| s.spec.vteps.iter().any(|v| v.name == set)).map(|(n, _)| n.clone()).collect()
}
