//! The generated manifests pass a real kube-apiserver's validation: every object of
//! `config/deploy/`, the bundle's people roles, and what OLM would create from the CSV (its
//! deployment, its permissions as roles) are server-side applied with dry run, so schema and
//! validation errors (a misspelt field, a bad probe, a capability the API refuses) fail here.
//! Kinds the server does not serve (cert-manager's, or policy/v1 on an old server) are reported
//! and skipped.

#![allow(clippy::unwrap_used, reason = "a test that cannot read the repository should panic")]

use evpn_tests::{control_plane, dynamic_api, read_yaml_dir, repo_root};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const MANAGER: &str = "evpn-deploy-dry-run";

/// Applies `obj` with dry run; `Ok(false)` when the server does not serve its kind.
async fn dry_run(client: &Client, obj: &Value) -> anyhow::Result<bool> {
    let Ok((api, name)) = dynamic_api(client, obj).await else {
        eprintln!("skipped {} {}: not served by this apiserver", obj["apiVersion"], obj["kind"]);
        return Ok(false);
    };
    api.patch(&name, &PatchParams::apply(MANAGER).force().dry_run(), &Patch::Apply(obj))
        .await
        .map_err(|e| anyhow::anyhow!("{} {name}: {e}", obj["kind"]))?;
    Ok(true)
}

/// What OLM makes from the CSV: its deployments, and its permissions as a ClusterRole or Role
/// per service account.
fn from_csv(csv: &Value) -> Vec<Value> {
    let install = &csv["spec"]["install"]["spec"];
    let mut objects: Vec<Value> = install["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": format!("{}-from-csv", d["name"].as_str().unwrap()), "namespace": "evpn-system"},
                "spec": d["spec"],
            })
        })
        .collect();
    for (field, kind) in [("clusterPermissions", "ClusterRole"), ("permissions", "Role")] {
        for p in install[field].as_array().into_iter().flatten() {
            let mut role = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": format!("{}-from-csv", p["serviceAccountName"].as_str().unwrap())},
                "rules": p["rules"],
            });
            if kind == "Role" {
                role["metadata"]["namespace"] = json!("evpn-system");
            }
            objects.push(role);
        }
    }
    objects
}

#[tokio::test]
async fn generated_manifests_pass_the_apiservers_validation() {
    let cp = control_plane().await.unwrap();
    let client = cp.admin().await.unwrap();
    let root = repo_root();
    let mut objects = read_yaml_dir(&root.join("config/deploy")).unwrap();
    objects.extend(read_yaml_dir(&root.join("config/cert-manager")).unwrap());
    let manifests = read_yaml_dir(&root.join("bundle/manifests")).unwrap();
    let csv = manifests.iter().find(|d| d["kind"] == "ClusterServiceVersion").unwrap();
    objects.extend(from_csv(csv));
    objects.extend(manifests.iter().filter(|d| d["kind"] == "ClusterRole").cloned());

    let mut applied = Vec::new();
    let mut failures = Vec::new();
    for obj in &objects {
        match dry_run(&client, obj).await {
            Ok(true) => applied.push(obj["kind"].as_str().unwrap().to_owned()),
            Ok(false) => {}
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "the apiserver refused:\n  {}", failures.join("\n  "));
    for kind in ["Deployment", "DaemonSet", "Service", "ValidatingWebhookConfiguration", "ClusterRole", "Role"] {
        assert!(applied.iter().any(|k| k == kind), "no {kind} was checked; applied: {applied:?}");
    }
}

#[tokio::test]
async fn the_operator_may_apply_the_agent_daemonset() {
    let cp = control_plane().await.unwrap();
    let operator = cp.operator().await.unwrap();
    let daemonset = read_yaml_dir(&repo_root().join("config/deploy"))
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    let name = daemonset["metadata"]["name"].as_str().unwrap().to_owned();
    // With its own RBAC from config/rbac, as under OLM: a server-side apply that creates it.
    let api: Api<DaemonSet> = Api::namespaced(operator, "evpn-system");
    api.patch(&name, &PatchParams::apply("evpn-operator").force().dry_run(), &Patch::Apply(&daemonset)).await.unwrap();
}
