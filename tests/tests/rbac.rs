//! Who may read which Secret, asked of a real kube-apiserver (v1.20.2, the oldest the project
//! supports): the RBAC of `config/rbac/` plus the per-VTEP Roles the operator's
//! `bgp_passwords` module writes, running with the operator's own service account so that RBAC's
//! escalation check applies to it as it would in a cluster. Agents are impersonated the way
//! `kubectl --as=system:node:NAME --as-group=system:nodes` does: a node may list and watch the
//! password Secrets of its own VTEPs by name and nothing else (not the webhook's serving key, not
//! another VTEP's password), and loses them when it leaves the VTEP. The agent's watch-backed
//! password store is run with such an identity too.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use evpn_agent::passwords::{PasswordSecrets, SecretName, Unavailable};
use evpn_tests::{DEADLINE, api_status, control_plane, eventually, unique_name};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, ListParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

const NAMESPACE: &str = "evpn-system";

/// The Secret holding the webhook's serving key, as the installed manifests name it.
fn webhook_key_secret() -> String {
    let certificate =
        evpn_tests::read_yaml(&evpn_tests::repo_root().join("config/cert-manager/certificate.yaml")).unwrap();
    let found = certificate.iter().find_map(|d| d["spec"]["secretName"].as_str());
    found.unwrap().to_owned()
}

/// The agents' service account, as `config/rbac/agent.yaml` makes it.
fn agent_account() -> String {
    let rbac = evpn_tests::read_yaml(&evpn_tests::repo_root().join("config/rbac/agent.yaml")).unwrap();
    let account = rbac.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    )
}

/// A client that the apiserver takes for `user` in `groups`, through the admin's right to
/// impersonate.
async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let cp = control_plane().await.unwrap();
    let kubeconfig = Kubeconfig::read_from(cp.admin_kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    Client::try_from(config).unwrap()
}

async fn node(name: &str) -> Client {
    impersonating(&format!("system:node:{name}"), &["system:nodes", "system:authenticated"]).await
}

/// The three ways to read one Secret and what the apiserver answered each: Ok, or the status.
async fn reads(client: &Client, name: &str) -> BTreeMap<&'static str, Result<(), u16>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let code = |e: kube::Error| api_status(&e).unwrap_or(0);
    let by_name = format!("metadata.name={name}");
    BTreeMap::from([
        ("get", api.get(name).await.map(drop).map_err(code)),
        ("list", api.list(&ListParams::default().fields(&by_name)).await.map(drop).map_err(code)),
        ("watch", api.watch(&WatchParams::default().fields(&by_name).timeout(1), "0").await.map(drop).map_err(code)),
    ])
}

/// Whether every read of `name` by `client` is refused with 403.
async fn refused(client: &Client, name: &str) -> bool {
    reads(client, name).await.values().all(|r| *r == Err(403))
}

/// Whether `client` may list and watch `name` (by name; `get` is not granted).
async fn watchable(client: &Client, name: &str) -> bool {
    let found = reads(client, name).await;
    found["list"].is_ok() && found["watch"].is_ok()
}

async fn put_secret_in(admin: &Client, namespace: &str, name: &str, password: &str) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "stringData": {"password": password}});
    evpn_tests::apply(admin, &secret).await.unwrap();
}

async fn put_secret(admin: &Client, name: &str, password: &str) {
    put_secret_in(admin, NAMESPACE, name, password).await
}

/// An EVPNNodeState for `node` whose VTEP `vtep` has one neighbor with password Secret
/// `namespace/secret`.
async fn put_node_state_naming(admin: &Client, node: &str, vtep: &str, namespace: &str, secret: &str) {
    let state = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPNNodeState", "metadata": {"name": node},
        "spec": {"ethernetSegments": [], "vteps": [{"name": vtep, "mode": "Managed", "cidrs": ["198.18.0.0/24"], "udpPort": 4789,
            "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000,
                "passwordSecret": {"namespace": namespace, "name": secret}}]}}]}});
    evpn_tests::apply(admin, &state).await.unwrap();
}

async fn put_node_state(admin: &Client, node: &str, vtep: &str, secret: &str) {
    put_node_state_naming(admin, node, vtep, NAMESPACE, secret).await
}

/// The operator's grants, written with the operator's own service account, until aborted.
async fn run_grants() -> tokio::task::JoinHandle<()> {
    let operator = control_plane().await.unwrap().operator().await.unwrap();
    tokio::spawn(evpn_operator::bgp_passwords::run(operator, NAMESPACE.into()))
}

#[tokio::test]
async fn a_node_reads_its_own_vteps_passwords_and_no_other_secret() {
    let admin = control_plane().await.unwrap().admin().await.unwrap();
    let (red, blue) = (unique_name("red"), unique_name("blue"));
    let (red_secret, blue_secret) = (format!("{red}-tor"), format!("{blue}-tor"));
    let (one, two) = (unique_name("node"), unique_name("node"));
    // The webhook's serving key, where cert-manager keeps it.
    let key = webhook_key_secret();
    put_secret(&admin, &key, "not-a-password").await;
    put_secret(&admin, &red_secret, "red-password").await;
    put_secret(&admin, &blue_secret, "blue-password").await;
    let (node_one, node_two) = (node(&one).await, node(&two).await);
    // Nothing from config/rbac alone: the serving key was every node's before.
    assert!(refused(&node_one, &key).await, "{:?}", reads(&node_one, &key).await);

    put_node_state(&admin, &one, &red, &red_secret).await;
    put_node_state(&admin, &two, &blue, &blue_secret).await;
    let grants = run_grants().await;
    eventually(|| watchable(&node_one, &red_secret)).await.unwrap();
    eventually(|| watchable(&node_two, &blue_secret)).await.unwrap();
    for (client, secret) in
        [(&node_one, key.as_str()), (&node_one, blue_secret.as_str()), (&node_two, red_secret.as_str())]
    {
        assert!(refused(client, secret).await, "{secret}: {:?}", reads(client, secret).await);
    }
    // Reading its own password is a list or watch by name: a plain get is not granted, nor is a
    // list of the namespace.
    assert_eq!(reads(&node_one, &red_secret).await["get"], Err(403));
    let all: Api<Secret> = Api::namespaced(node_one.clone(), NAMESPACE);
    assert_eq!(all.list(&ListParams::default()).await.map(drop).map_err(|e| api_status(&e)), Err(Some(403)));

    // The agents' shared service account is one identity on every node: it reads every VTEP's
    // passwords (what RBAC cannot split), still not the serving key.
    let account = impersonating(
        &agent_account(),
        &["system:serviceaccounts", &format!("system:serviceaccounts:{NAMESPACE}"), "system:authenticated"],
    )
    .await;
    assert!(watchable(&account, &red_secret).await && watchable(&account, &blue_secret).await);
    assert!(refused(&account, &key).await);

    // Node one moves to blue: red's password is gone for it, blue's is there.
    put_node_state(&admin, &one, &blue, &blue_secret).await;
    eventually(|| watchable(&node_one, &blue_secret)).await.unwrap();
    eventually(|| refused(&node_one, &red_secret)).await.unwrap();
    // No node has red any more: no Role names its Secret.
    let roles: Api<Role> = Api::namespaced(admin.clone(), NAMESPACE);
    let managed =
        ListParams::default().labels(&evpn_operator::bgp_passwords::MANAGED.map(|(k, v)| format!("{k}={v}")).join(","));
    let names_red = |role: &Role| {
        role.rules.iter().flatten().flat_map(|r| r.resource_names.iter().flatten()).any(|n| *n == red_secret)
    };
    eventually(|| async { !roles.list(&managed).await.unwrap().items.iter().any(names_red) }).await.unwrap();
    grants.abort();
}

#[tokio::test]
async fn the_agent_keeps_its_passwords_from_a_watch_and_reports_refusals() {
    let admin = control_plane().await.unwrap().admin().await.unwrap();
    let (vtep, other) = (unique_name("vtep"), unique_name("other"));
    let (mine, theirs) = (format!("{vtep}-tor"), format!("{other}-tor"));
    let name = unique_name("node");
    put_secret(&admin, &mine, "first").await;
    put_secret(&admin, &theirs, "not-yours").await;
    put_node_state(&admin, &name, &vtep, &mine).await;
    let grants = run_grants().await;
    let client = node(&name).await;
    eventually(|| watchable(&client, &mine)).await.unwrap();

    let changes = Arc::new(AtomicUsize::new(0));
    let counter = changes.clone();
    let mut store = PasswordSecrets::new(Some(client), move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let at = |name: &str| SecretName { namespace: NAMESPACE.into(), name: name.into() };
    store.follow(&BTreeSet::from([at(&mine), at(&theirs)]));
    // What a reconcile does before it reads: wait for the first answers.
    store.settle(DEADLINE).await;
    assert_eq!(store.value(&at(&mine), "password"), Ok("first".into()));
    // Another VTEP's Secret: refused, and the reason says so without any Secret's content.
    let Err(Unavailable::Failed(why)) = store.value(&at(&theirs), "password") else {
        panic!("{:?}", store.value(&at(&theirs), "password"))
    };
    assert!(why.contains("forbidden"), "{why}");
    assert!(!why.contains("not-yours"), "{why}");
    assert_eq!(store.value(&at(&mine), "other-key"), Err(Unavailable::Failed("the key is missing".into())));

    // A changed password arrives by itself and says so, without a read per reconcile.
    let before = changes.load(Ordering::SeqCst);
    put_secret(&admin, &mine, "second").await;
    eventually(|| async { store.value(&at(&mine), "password") == Ok("second".into()) }).await.unwrap();
    assert!(changes.load(Ordering::SeqCst) > before);
    // A Secret no longer followed is forgotten.
    store.follow(&BTreeSet::from([at(&theirs)]));
    assert!(matches!(store.value(&at(&mine), "password"), Err(Unavailable::Pending(_))));
    grants.abort();
}

#[tokio::test]
async fn a_password_secret_outside_the_operators_namespace_is_granted_to_no_one() {
    let admin = control_plane().await.unwrap().admin().await.unwrap();
    let (elsewhere, here) = (unique_name("elsewhere"), unique_name("here"));
    let (one, two) = (unique_name("node"), unique_name("node"));
    let here_secret = format!("{here}-tor");
    put_secret(&admin, &here_secret, "here").await;
    // "default": the operator holds nothing there to grant.
    put_secret_in(&admin, "default", &elsewhere, "elsewhere").await;
    put_node_state_naming(&admin, &one, &elsewhere, "default", &elsewhere).await;
    put_node_state(&admin, &two, &here, &here_secret).await;
    let grants = run_grants().await;
    // The Secret nobody may have holds up no other VTEP.
    let node_two = node(&two).await;
    eventually(|| watchable(&node_two, &here_secret)).await.unwrap();
    let node_one: Api<Secret> = Api::namespaced(node(&one).await, "default");
    let by_name = ListParams::default().fields(&format!("metadata.name={elsewhere}"));
    assert_eq!(node_one.list(&by_name).await.map(drop).map_err(|e| api_status(&e)), Err(Some(403)));
    // Moved into the operator's namespace, the Secret is granted.
    put_secret(&admin, &elsewhere, "moved").await;
    put_node_state(&admin, &one, &elsewhere, &elsewhere).await;
    let node_one = node(&one).await;
    eventually(|| watchable(&node_one, &elsewhere)).await.unwrap();
    grants.abort();
}
