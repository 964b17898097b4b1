//! Watches that keep the [`Index`](crate::index::Index) current.
//!
//! Each watch lists once (marking its cache synced, so `/readyz` turns green), then applies
//! changes as they come. A failed watch retries with backoff and the index keeps what it had;
//! the network kinds' API missing altogether is a fact, not an error: the index records it and
//! the rules say so in their denials.

use std::sync::Arc;

use evpn_crds::common::NetworkKind;
use evpn_crds::{Evpn, Vtep};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};

use crate::index::{self, NetworkFacts, NetworkKey, NodeFacts};
use crate::server::{Cache, State};

/// Name of the ConfigMap OVN-Kubernetes reads its configuration from.
pub const OVNKUBE_CONFIG: &str = "ovnkube-config";

/// A change to apply to the index.
enum Change<K> {
    Apply(K),
    Delete(K),
    /// A fresh list: everything there is.
    Reset(Vec<K>),
}

/// Runs every watch until the process ends.
pub async fn run(client: Client, state: Arc<State>, ovnkube_config_namespace: String) {
    let evpns =
        follow(watcher(Api::<Evpn>::all(client.clone()), watcher::Config::default()), &state, Cache::Evpns, |ix, c| {
            match c {
                Change::Apply(e) => ix.apply_evpn(&e),
                Change::Delete(e) => ix.delete_evpn(&e.name_any()),
                Change::Reset(all) => ix.reset_evpns(&all),
            }
        });
    let vteps =
        follow(watcher(Api::<Vtep>::all(client.clone()), watcher::Config::default()), &state, Cache::Vteps, |ix, c| {
            match c {
                Change::Apply(v) => ix.apply_vtep(&v),
                Change::Delete(v) => ix.delete_vtep(&v.name_any()),
                Change::Reset(all) => ix.reset_vteps(&all),
            }
        });
    let nodes = follow(
        watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), watcher::Config::default()),
        &state,
        Cache::Nodes,
        |ix, c| match c {
            Change::Apply(n) => ix.set_node(n.name_any(), Some(node_facts(&n.metadata))),
            Change::Delete(n) => ix.set_node(n.name_any(), None),
            Change::Reset(all) => ix.reset_nodes(all.iter().map(|n| (n.name_any(), node_facts(&n.metadata)))),
        },
    );
    let config = watcher::Config::default().fields(&format!("metadata.name={OVNKUBE_CONFIG}"));
    let configmap = follow(
        watcher(Api::<ConfigMap>::namespaced(client.clone(), &ovnkube_config_namespace), config),
        &state,
        Cache::ConfigMap,
        |ix, c| {
            ix.ovnkube_config = match c {
                Change::Apply(cm) => ovnkube_config(&cm),
                Change::Delete(_) => index::OvnkubeConfig::default(),
                Change::Reset(all) => all.first().map(ovnkube_config).unwrap_or_default(),
            }
        },
    );
    let cluster_networks = follow_networks(client.clone(), &state, NetworkKind::ClusterUserDefinedNetwork);
    let networks = follow_networks(client, &state, NetworkKind::UserDefinedNetwork);
    futures::join!(evpns, vteps, nodes, configmap, cluster_networks, networks);
}

fn node_facts(meta: &kube::api::ObjectMeta) -> NodeFacts {
    NodeFacts {
        labels: meta.labels.clone().unwrap_or_default(),
        gateway_mode: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(index::L3_GATEWAY_ANNOTATION))
            .and_then(|v| index::gateway_mode_from_annotation(v)),
    }
}

fn ovnkube_config(cm: &ConfigMap) -> index::OvnkubeConfig {
    cm.data
        .as_ref()
        .and_then(|d| d.get("ovnkube.conf"))
        .map(|conf| index::OvnkubeConfig::parse(conf))
        .unwrap_or_default()
}

/// The API resource of an OVN-Kubernetes network kind.
pub fn network_resource(kind: NetworkKind) -> ApiResource {
    let (kind, plural) = match kind {
        NetworkKind::ClusterUserDefinedNetwork => ("ClusterUserDefinedNetwork", "clusteruserdefinednetworks"),
        NetworkKind::UserDefinedNetwork => ("UserDefinedNetwork", "userdefinednetworks"),
    };
    ApiResource {
        group: "k8s.ovn.org".into(),
        version: "v1".into(),
        api_version: "k8s.ovn.org/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Multus' NetworkAttachmentDefinition, where OVN-Kubernetes records each user-defined
/// network's ID (which names its VRF when the network's own name cannot).
pub fn attachment_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

fn network_entry(kind: NetworkKind, obj: &DynamicObject) -> (NetworkKey, Option<NetworkFacts>) {
    let spec = &obj.data["spec"];
    let (ns, network) = match kind {
        NetworkKind::ClusterUserDefinedNetwork => (None, &spec["network"]),
        NetworkKind::UserDefinedNetwork => (obj.namespace(), spec),
    };
    ((kind, ns, obj.name_any()), NetworkFacts::from_network_spec(network))
}

async fn follow_networks(client: Client, state: &State, kind: NetworkKind) {
    let resource = network_resource(kind);
    let cache = match kind {
        NetworkKind::ClusterUserDefinedNetwork => Cache::ClusterNetworks,
        NetworkKind::UserDefinedNetwork => Cache::Networks,
    };
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let apply = move |ix: &mut index::Index, change: Change<DynamicObject>| {
        ix.networks_api_present = true;
        match change {
            Change::Apply(o) => {
                let (key, facts) = network_entry(kind, &o);
                ix.set_network(key, facts);
            }
            Change::Delete(o) => ix.set_network(network_entry(kind, &o).0, None),
            Change::Reset(all) => ix.reset_networks(
                kind,
                all.iter().filter_map(|o| {
                    let (key, facts) = network_entry(kind, o);
                    Some((key, facts?))
                }),
            ),
        }
    };
    let absent = move |ix: &mut index::Index| {
        ix.networks_api_present = false;
        ix.reset_networks(kind, []);
    };
    follow_or_absent(watcher(api, watcher::Config::default()), state, cache, apply, Some(absent)).await;
}

/// Turns watcher events into index changes; `listed` buffers an initial list until it is whole.
fn collect<K>(event: Event<K>, listed: &mut Vec<K>) -> Option<Change<K>> {
    match event {
        Event::Apply(obj) => Some(Change::Apply(obj)),
        Event::Delete(obj) => Some(Change::Delete(obj)),
        Event::Init => {
            listed.clear();
            None
        }
        Event::InitApply(obj) => {
            listed.push(obj);
            None
        }
        Event::InitDone => Some(Change::Reset(std::mem::take(listed))),
    }
}

async fn follow<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    state: &State,
    cache: Cache,
    apply: impl Fn(&mut index::Index, Change<K>),
) {
    follow_or_absent(events, state, cache, apply, None::<fn(&mut index::Index)>).await;
}

/// Like [`follow`]; when the kind's API does not exist (404 on list), `absent` records that and
/// the cache counts as synced: an uninstalled API has nothing more to list.
async fn follow_or_absent<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    state: &State,
    cache: Cache,
    apply: impl Fn(&mut index::Index, Change<K>),
    absent: Option<impl Fn(&mut index::Index)>,
) {
    let events = events.default_backoff();
    futures::pin_mut!(events);
    let mut listed = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let is_list = matches!(event, Event::InitDone);
                if let Some(change) = collect(event, &mut listed) {
                    state.update(|ix| apply(ix, change));
                }
                if is_list {
                    state.mark_synced(cache);
                }
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.code == 404 && absent.is_some() =>
            {
                if let Some(absent) = &absent {
                    state.update(absent);
                }
                state.mark_synced(cache);
            }
            Err(e) => tracing::warn!(?cache, error = %e, "watch failed; retrying"),
        }
    }
}
