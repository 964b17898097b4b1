//! Who may read which BGP password: each node's agent the Secrets its own VTEPs name, nothing
//! else.
//!
//! RBAC cannot say "the Secrets of the VTEPs of the node asking", so the operator writes it out:
//! for every VTEP with password Secrets, a Role `evpn-bgp-passwords-<vtep>` allowing `list` and
//! `watch` of exactly those Secrets (by `resourceNames`; the apiserver treats a list or watch with
//! the field selector `metadata.name=X` as a request for X), and a RoleBinding of it to
//! `system:node:<node>` for every node whose `EVPNNodeState` carries that VTEP. The node states
//! are the source because they are what each agent reads its neighbors from. The agents' shared
//! service account is bound too: a service account is one identity for every node, so agents
//! running with it can read the password Secrets of every VTEP (but no other Secret); only node
//! credentials confine an agent to its own VTEPs.
//!
//! Everything lives in the operator's own namespace, and so must the password Secrets: RBAC
//! lets the operator grant only what it holds itself, and it holds `list`/`watch` of Secrets
//! (without ever reading one) and the right to write Roles there only, so that it gains no power
//! over any other namespace. A Secret named elsewhere is granted to no one, and the operator says
//! so. The Roles and bindings carry [`MANAGED`] labels; those no node state calls for any more are
//! deleted. Every change of a node state or of a managed object starts a round after a short
//! quiet time; a failed write is retried after [`RETRY`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::EvpnNodeState;
use futures::{Stream, StreamExt};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::controller::MANAGER;
use crate::frrk8s::MANAGED_BY;

/// What agents may do with a password Secret: exactly what their watch of it needs.
pub const GRANTED_VERBS: [&str; 2] = ["list", "watch"];
/// Labels of every Role and RoleBinding this module writes, and the selector that finds them.
pub const MANAGED: [(&str, &str); 2] = [MANAGED_BY, ("app.kubernetes.io/component", "bgp-passwords")];
/// Name prefix of the Role and RoleBinding of one VTEP.
const PREFIX: &str = "evpn-bgp-passwords-";
/// Quiet time before a round, so a burst of node state changes costs one round.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How soon a round with a failed write is repeated.
const RETRY: Duration = Duration::from_secs(10);
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The Role and RoleBinding of one VTEP in one namespace: which Secrets, read by which nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub secrets: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

/// What the node states call for: the grant of each VTEP, and the password Secrets they name
/// outside `namespace`, which nobody can be granted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub grants: BTreeMap<String, Grant>,
    /// `namespace/name` of each Secret outside, with the VTEPs naming it.
    pub outside: BTreeMap<String, BTreeSet<String>>,
}

pub fn wanted<'a>(states: impl IntoIterator<Item = &'a EvpnNodeState>, namespace: &str) -> Wanted {
    let mut wanted = Wanted::default();
    for state in states {
        let node = state.name_any();
        for vtep in &state.spec.vteps {
            let refs = vtep.bgp.iter().flat_map(|b| &b.neighbors).filter_map(|n| n.password_secret.as_ref());
            for secret in refs {
                if secret.namespace == namespace {
                    let grant = wanted.grants.entry(vtep.name.clone()).or_default();
                    grant.secrets.insert(secret.name.clone());
                    grant.nodes.insert(node.clone());
                } else {
                    let at = format!("{}/{}", secret.namespace, secret.name);
                    wanted.outside.entry(at).or_default().insert(vtep.name.clone());
                }
            }
        }
    }
    wanted
}

fn metadata(namespace: &str, vtep: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(format!("{PREFIX}{vtep}")),
        namespace: Some(namespace.into()),
        labels: Some(MANAGED.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
        ..Default::default()
    }
}

/// The Role letting the nodes of `vtep` watch its password Secrets, in `namespace`.
pub fn role(namespace: &str, vtep: &str, grant: &Grant) -> Role {
    Role {
        metadata: metadata(namespace, vtep),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(grant.secrets.iter().cloned().collect()),
            verbs: GRANTED_VERBS.iter().map(|v| (*v).into()).collect(),
            non_resource_urls: None,
        }]),
    }
}

/// The binding of [`role`] to the nodes' own identities and the agents' service account, in
/// `namespace`.
pub fn binding(namespace: &str, vtep: &str, grant: &Grant) -> RoleBinding {
    let nodes = grant.nodes.iter().map(|node| Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: "User".into(),
        name: format!("system:node:{node}"),
        namespace: None,
    });
    let service_account = Subject {
        api_group: None,
        kind: "ServiceAccount".into(),
        name: evpn_deploy::AGENT.into(),
        namespace: Some(namespace.into()),
    };
    RoleBinding {
        metadata: metadata(namespace, vtep),
        role_ref: RoleRef { api_group: RBAC_GROUP.into(), kind: "Role".into(), name: format!("{PREFIX}{vtep}") },
        subjects: Some(nodes.chain([service_account]).collect()),
    }
}

/// Keeps the grants equal to what the node states call for, until dropped. `namespace` is the
/// operator's: where the agents' service account, the password Secrets and the grants are.
pub async fn run(client: Client, namespace: String) {
    let dirty = Notify::new();
    let managed = watcher::Config::default()
        .labels(&MANAGED.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
    let (states, states_writer) = reflector::store::<EvpnNodeState>();
    let (roles, roles_writer) = reflector::store::<Role>();
    let (bindings, bindings_writer) = reflector::store::<RoleBinding>();
    let state_events =
        reflector(states_writer, watcher(Api::<EvpnNodeState>::all(client.clone()), watcher::Config::default()));
    let role_events =
        reflector(roles_writer, watcher(Api::<Role>::namespaced(client.clone(), &namespace), managed.clone()));
    let binding_events =
        reflector(bindings_writer, watcher(Api::<RoleBinding>::namespaced(client.clone(), &namespace), managed));
    let rounds = async {
        if states.wait_until_ready().await.is_err()
            || roles.wait_until_ready().await.is_err()
            || bindings.wait_until_ready().await.is_err()
        {
            return;
        }
        let (mut failed, mut reported) = (false, BTreeMap::new());
        loop {
            if failed {
                // A change still starts the next round at once; otherwise it is the retry.
                let _ = tokio::time::timeout(RETRY, dirty.notified()).await;
            } else {
                dirty.notified().await;
            }
            tokio::time::sleep(DEBOUNCE).await;
            let wanted = wanted(states.state().iter().map(Arc::as_ref), &namespace);
            if wanted.outside != reported {
                for (secret, vteps) in &wanted.outside {
                    tracing::warn!(
                        secret,
                        ?vteps,
                        "a BGP password Secret outside {namespace}: no agent may read it; move it to {namespace}"
                    );
                }
                reported = wanted.outside.clone();
            }
            failed = !round(&client, &namespace, &wanted.grants, &roles, &bindings).await;
        }
    };
    futures::join!(
        mark(state_events, "EVPNNodeStates", &dirty),
        mark(role_events, "the password Roles", &dirty),
        mark(binding_events, "the password RoleBindings", &dirty),
        rounds,
    );
}

/// Marks the world dirty on every event of a watch.
async fn mark<K>(events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>, what: &str, dirty: &Notify) {
    let events = events.default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching {what} failed; retrying");
        }
        dirty.notify_one();
    }
}

/// One pass: writes what differs, deletes what is no longer called for. False when a write
/// failed.
async fn round(
    client: &Client,
    namespace: &str,
    grants: &BTreeMap<String, Grant>,
    roles: &Store<Role>,
    bindings: &Store<RoleBinding>,
) -> bool {
    let params = PatchParams::apply(MANAGER).force();
    let role_api: Api<Role> = Api::namespaced(client.clone(), namespace);
    let binding_api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let mut ok = true;
    let keep: BTreeSet<String> = grants.keys().map(|vtep| format!("{PREFIX}{vtep}")).collect();
    for (vtep, grant) in grants {
        let name = format!("{PREFIX}{vtep}");
        let role = role(namespace, vtep, grant);
        if roles.get(&ObjectRef::new(&name).within(namespace)).is_none_or(|r| r.rules != role.rules) {
            ok &= report(role_api.patch(&name, &params, &Patch::Apply(&role)).await, "applying", "Role", &name);
        }
        let binding = binding(namespace, vtep, grant);
        if bindings.get(&ObjectRef::new(&name).within(namespace)).is_none_or(|b| b.subjects != binding.subjects) {
            let applied = binding_api.patch(&name, &params, &Patch::Apply(&binding)).await;
            ok &= report(applied, "applying", "RoleBinding", &name);
        }
    }
    // Bindings first, so no binding is ever left naming a Role that is gone.
    for name in bindings.state().iter().map(|b| b.name_any()).filter(|n| !keep.contains(n)) {
        let deleted = gone(binding_api.delete(&name, &DeleteParams::default()).await);
        ok &= report(deleted, "deleting", "RoleBinding", &name);
    }
    for name in roles.state().iter().map(|r| r.name_any()).filter(|n| !keep.contains(n)) {
        ok &= report(gone(role_api.delete(&name, &DeleteParams::default()).await), "deleting", "Role", &name);
    }
    ok
}

/// A delete that finds nothing has done its job.
fn gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

/// Logs a failed write; true when it succeeded.
fn report<T>(result: Result<T, kube::Error>, doing: &str, kind: &str, name: &str) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, name, "{doing} the {kind} of BGP password Secrets failed");
            false
        }
    }
}

#[cfg(test)]
mod tests;
