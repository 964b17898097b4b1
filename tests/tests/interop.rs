//! Our minimal OVN-Kubernetes and frr-k8s CRDs against the real upstream schemas.
//!
//! The samples are the third-party objects under `config/samples/third-party/` and the
//! FRRConfigurations the operator generates in frr-k8s mode (its golden files).
//!
//! The upstream CRDs are installed beside ours under a renamed group (`upstream.<group>`), so
//! both can be served at once. Every third-party sample must be accepted by both and read back
//! with the same spec, and must pass upstream's CEL rules, evaluated locally because the local
//! apiserver (v1.20) ignores them.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::path::PathBuf;

use evpn_tests::{
    apply_crd, control_plane, dynamic_api, read_yaml, read_yaml_dir, repo_root, server_has_cel, strip_cel, unique_name,
    wait_crd_established,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::cel::Validator;
use serde_json::{Value, json};

/// Where the upstream schemas are: `EVPN_UPSTREAM_CRDS`, or the fixtures beside the repository.
fn upstream_dir() -> PathBuf {
    std::env::var_os("EVPN_UPSTREAM_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures/crds"))
}

const UPSTREAM_FILES: [&str; 5] = [
    "ovn-kubernetes/k8s.ovn.org_clusteruserdefinednetworks.yaml",
    "ovn-kubernetes/k8s.ovn.org_userdefinednetworks.yaml",
    "frr-k8s/frrk8s.metallb.io_frrconfigurations.yaml",
    "frr-k8s/frrk8s.metallb.io_frrnodestates.yaml",
    "frr-k8s/frrk8s.metallb.io_bgpsessionstates.yaml",
];

fn renamed_group(group: &str) -> String {
    format!("upstream.{group}")
}

#[tokio::test]
async fn minimal_crds_accept_the_samples_like_upstream() {
    let dir = upstream_dir();
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED minimal_crds_accept_the_samples_like_upstream: no upstream CRD schemas at {} \
             (set EVPN_UPSTREAM_CRDS to a folder holding {UPSTREAM_FILES:?})",
            dir.display()
        );
        return;
    }
    let cp = control_plane().await.unwrap();
    let client = cp.admin().await.unwrap();
    let has_cel = server_has_cel(&client).await.unwrap();

    // Install upstream under renamed groups, keeping the original schemas for local CEL checks.
    let mut schemas = std::collections::HashMap::new();
    for file in UPSTREAM_FILES {
        let mut doc = read_yaml(&dir.join(file)).unwrap().remove(0);
        let group = doc["spec"]["group"].as_str().unwrap().to_owned();
        let kind = doc["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let plural = doc["spec"]["names"]["plural"].as_str().unwrap().to_owned();
        schemas.insert(kind, doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone());
        doc["spec"]["group"] = json!(renamed_group(&group));
        doc["metadata"] = json!({"name": format!("{plural}.{}", renamed_group(&group))});
        if !has_cel {
            strip_cel(&mut doc);
        }
        let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
        let name = apply_crd(&client, &crd).await.unwrap();
        wait_crd_established(&client, &name).await.unwrap();
    }

    let mut samples = read_yaml_dir(&repo_root().join("config/samples/third-party")).unwrap();
    assert!(samples.len() >= 4, "expected third-party samples, found {}", samples.len());
    // What the operator writes in frr-k8s mode must be valid under both schemas too.
    let generated = read_yaml_dir(&repo_root().join("operator/src/frrk8s/golden")).unwrap();
    assert!(generated.len() >= 4, "expected the generated FRRConfigurations, found {}", generated.len());
    samples.extend(generated);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for sample in samples {
        let kind = sample["kind"].as_str().unwrap().to_owned();
        let what = format!("{kind} {}", sample["metadata"]["name"]);
        if let Some(ns) = sample["metadata"]["namespace"].as_str() {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            namespaces.patch(ns, &PatchParams::apply("evpn-tests"), &Patch::Apply(&obj)).await.unwrap();
        }

        let schema = schemas.get(&kind).unwrap_or_else(|| panic!("no upstream schema for {what}"));
        if let Err(e) = Validator::new().validate(schema, &sample, None) {
            panic!("{what} breaks upstream's CEL rules: {e}");
        }

        let name = unique_name(sample["metadata"]["name"].as_str().unwrap());
        let mut ours = sample.clone();
        ours["metadata"]["name"] = json!(name);
        let mut theirs = ours.clone();
        let api_version = sample["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap();
        theirs["apiVersion"] = json!(format!("{}/{version}", renamed_group(group)));

        let ours = create(&client, &ours).await.unwrap_or_else(|e| panic!("our minimal CRD rejected {what}: {e}"));
        let theirs = create(&client, &theirs).await.unwrap_or_else(|e| panic!("the upstream CRD rejected {what}: {e}"));
        assert_eq!(ours["spec"], theirs["spec"], "{what} reads back differently under our minimal CRD and upstream's");
    }
}

async fn create(client: &kube::Client, obj: &Value) -> anyhow::Result<Value> {
    let (api, name) = dynamic_api(client, obj).await?;
    let dynamic: DynamicObject = serde_json::from_value(obj.clone())?;
    let created = api.create(&PostParams::default(), &dynamic).await?;
    api.delete(&name, &DeleteParams::default()).await?;
    Ok(serde_json::to_value(created)?)
}
