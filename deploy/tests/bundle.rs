//! The committed generated files are current, and the OLM bundle is one OLM would accept.
//!
//! The bundle is read back from `bundle/` as plain YAML, not through the generator's code, and
//! checked the way `operator-sdk bundle validate` and OLM itself do (see README, "OLM bundle"):
//! layout and annotations, the CSV's required fields, CRD ownership, descriptors, examples,
//! webhook definitions against `config/deploy/webhook.yaml` and against the routes the webhook
//! really serves, and the install strategy.

#![allow(clippy::unwrap_used, reason = "a test that cannot read the repository should panic")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use evpn_deploy::files::{COMMAND, generate, read_yaml_dir, repo_root, stale};
use serde_json::Value;

#[test]
fn generated_files_match_the_code() {
    let root = repo_root();
    let files = generate(&root).unwrap();
    let mut out_of_date: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(root.join(&f.path)).ok().as_deref() != Some(f.text.as_str()))
        .map(|f| f.path.display().to_string())
        .collect();
    out_of_date.extend(stale(&root, &files).unwrap().iter().map(|p| format!("{} (no longer generated)", p.display())));
    assert!(
        out_of_date.is_empty(),
        "generated files are out of date: run `{COMMAND}` and commit the result:\n  {}",
        out_of_date.join("\n  ")
    );
}

fn bundle_dir() -> std::path::PathBuf {
    repo_root().join("bundle")
}

fn annotations() -> BTreeMap<String, String> {
    let docs = read_yaml_dir(&bundle_dir().join("metadata")).unwrap();
    assert_eq!(docs.len(), 1, "metadata/ holds one annotations.yaml");
    serde_json::from_value(docs[0]["annotations"].clone()).unwrap()
}

fn manifests() -> Vec<Value> {
    read_yaml_dir(&bundle_dir().join("manifests")).unwrap()
}

fn csv() -> Value {
    let csvs: Vec<Value> = manifests().into_iter().filter(|d| d["kind"] == "ClusterServiceVersion").collect();
    assert_eq!(csvs.len(), 1, "a bundle holds exactly one ClusterServiceVersion");
    csvs.into_iter().next().unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn layout_and_annotations_match_the_bundle_dockerfile() {
    let mut entries: Vec<String> = std::fs::read_dir(bundle_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["bundle.Dockerfile", "manifests", "metadata"]);

    let annotations = annotations();
    let key =
        |k: &str| annotations.get(&format!("operators.operatorframework.io.bundle.{k}")).cloned().unwrap_or_default();
    assert_eq!(key("mediatype.v1"), "registry+v1");
    assert_eq!(key("manifests.v1"), "manifests/");
    assert_eq!(key("metadata.v1"), "metadata/");
    assert!(!key("package.v1").is_empty(), "package.v1 is required");
    let channels: Vec<String> = key("channels.v1").split(',').map(str::to_owned).collect();
    assert!(channels.iter().all(|c| !c.is_empty()), "channels.v1 lists channels");
    assert!(channels.contains(&key("channel.default.v1")), "the default channel is one of the channels");

    // The image's labels are what OLM reads from a bundle image: the same keys and values.
    let dockerfile = std::fs::read_to_string(bundle_dir().join("bundle.Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines.first(), Some(&"FROM scratch"));
    let labels: BTreeMap<String, String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("LABEL "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(labels, annotations, "bundle.Dockerfile LABELs and metadata/annotations.yaml differ");
    assert!(lines.contains(&format!("COPY manifests /{}", key("manifests.v1")).as_str()));
    assert!(lines.contains(&format!("COPY metadata /{}", key("metadata.v1")).as_str()));
}

/// The kinds a registry+v1 bundle may carry (operator-registry's supported resources).
const SUPPORTED_KINDS: [&str; 16] = [
    "ClusterServiceVersion",
    "CustomResourceDefinition",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "Role",
    "RoleBinding",
    "PrometheusRule",
    "ServiceMonitor",
    "PodDisruptionBudget",
    "PriorityClass",
    "VerticalPodAutoscaler",
    "ConsoleYAMLSample",
];

#[test]
fn manifests_are_supported_kinds_within_olms_size_limit() {
    for doc in manifests() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        assert!(SUPPORTED_KINDS.contains(&kind), "{kind} cannot be part of a registry+v1 bundle");
        assert!(doc["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()), "a {kind} without a name");
    }
    // OLM unpacks a bundle into a ConfigMap, whose size the apiserver caps near 1 MiB.
    let size: u64 =
        std::fs::read_dir(bundle_dir().join("manifests")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size < 1 << 20, "manifests/ is {size} bytes; OLM cannot unpack a bundle near 1 MiB");
}

#[test]
fn csv_has_the_fields_olm_requires() {
    let csv = csv();
    let annotations = annotations();
    let package = &annotations["operators.operatorframework.io.bundle.package.v1"];
    assert_eq!(csv["apiVersion"], "operators.coreos.com/v1alpha1");
    let spec = &csv["spec"];
    let version = spec["version"].as_str().unwrap_or_default();
    assert!(is_semver(version), "spec.version {version:?} is not semver");
    assert_eq!(
        csv["metadata"]["name"],
        format!("{package}.v{version}").as_str(),
        "the CSV is named <package>.v<version>"
    );
    assert_eq!(version, evpn_deploy::VERSION, "the CSV's version is the workspace version");
    for field in ["displayName", "description", "maturity"] {
        assert!(spec[field].as_str().is_some_and(|s| !s.is_empty()), "spec.{field} is required");
    }
    assert!(spec["provider"]["name"].as_str().is_some_and(|s| !s.is_empty()), "spec.provider.name is required");
    let min_kube = spec["minKubeVersion"].as_str().unwrap_or_default();
    assert!(is_semver(min_kube), "spec.minKubeVersion {min_kube:?} is not semver");
    let capabilities = csv["metadata"]["annotations"]["capabilities"].as_str().unwrap_or_default();
    assert!(
        ["Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot"].contains(&capabilities),
        "capabilities {capabilities:?} is not an OperatorHub level"
    );

    let modes: BTreeMap<String, bool> = spec["installModes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["type"].as_str().unwrap().to_owned(), m["supported"].as_bool().unwrap()))
        .collect();
    let all: BTreeSet<&str> = ["OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"].into();
    assert_eq!(modes.keys().map(String::as_str).collect::<BTreeSet<_>>(), all, "every install mode is stated once");
    // Cluster-scoped kinds and one webhook for the whole cluster: only AllNamespaces makes sense.
    assert_eq!(modes.iter().filter(|(_, s)| **s).map(|(m, _)| m.as_str()).collect::<Vec<_>>(), ["AllNamespaces"]);
}

fn install_deployments(csv: &Value) -> Vec<Value> {
    assert_eq!(csv["spec"]["install"]["strategy"], "deployment", "OLM knows the deployment strategy only");
    csv["spec"]["install"]["spec"]["deployments"].as_array().cloned().unwrap_or_default()
}

fn containers(pod_spec: &Value) -> Vec<Value> {
    pod_spec["containers"].as_array().cloned().unwrap_or_default()
}

#[test]
fn install_strategy_deployments_permissions_and_images_fit_together() {
    let csv = csv();
    let deployments = install_deployments(&csv);
    assert!(!deployments.is_empty(), "the install strategy deploys something");
    let names: BTreeSet<&str> = deployments.iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names.len(), deployments.len(), "deployment names are unique and present");

    let mut accounts = BTreeSet::new();
    let mut images = BTreeSet::new();
    for deployment in &deployments {
        let spec = &deployment["spec"];
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "deployment {}'s selector does not select its pods", deployment["name"]);
        }
        let pod = &spec["template"]["spec"];
        accounts.insert(pod["serviceAccountName"].as_str().unwrap().to_owned());
        for container in containers(pod) {
            images.insert(container["image"].as_str().unwrap().to_owned());
            // The agents' DaemonSet, which the operator applies, runs this image.
            for arg in strings(&container["args"]) {
                if let Some(image) = arg.strip_prefix("--agent-image=") {
                    images.insert(image.to_owned());
                    accounts.insert(evpn_deploy::AGENT.to_owned());
                }
            }
        }
    }

    let permission_accounts: BTreeSet<String> = ["clusterPermissions", "permissions"]
        .iter()
        .flat_map(|f| csv["spec"]["install"]["spec"][*f].as_array().cloned().unwrap_or_default())
        .map(|p| p["serviceAccountName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(permission_accounts, accounts, "every pod's service account has permissions, and no other account does");

    let related: BTreeSet<String> = csv["spec"]["relatedImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(related, images, "relatedImages lists every image the operator runs, for disconnected mirrors");
    assert!(images.contains(csv["metadata"]["annotations"]["containerImage"].as_str().unwrap()));
}

/// The schema of a CRD version, through the CRD as committed in the bundle.
fn schema_of<'a>(crd: &'a Value, version: &str) -> &'a Value {
    let v = crd["spec"]["versions"].as_array().unwrap().iter().find(|v| v["name"] == version).unwrap();
    &v["schema"]["openAPIV3Schema"]
}

/// Whether a descriptor path (`a.b`, `a[0].b`) names a field of the schema.
fn resolves(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    for part in path.split('.') {
        let (field, indexed) = match part.split_once('[') {
            Some((f, _)) => (f, true),
            None => (part, false),
        };
        node = &node["properties"][field];
        if node.is_null() {
            return false;
        }
        if indexed {
            node = &node["items"];
        }
    }
    true
}

#[test]
fn every_crd_of_the_api_is_owned_shipped_and_described() {
    let csv = csv();
    let owned = csv["spec"]["customresourcedefinitions"]["owned"].as_array().unwrap();
    let shipped: Vec<Value> = manifests().into_iter().filter(|d| d["kind"] == "CustomResourceDefinition").collect();
    let expected: BTreeSet<String> = evpn_crds::crds().iter().filter_map(|c| c.metadata.name.clone()).collect();
    let owned_names: BTreeSet<String> = owned.iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect();
    let shipped_names: BTreeSet<String> =
        shipped.iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(owned_names, expected, "the CSV owns exactly the CRDs of evpn_crds::crds()");
    assert_eq!(shipped_names, expected, "manifests/ holds exactly the CRDs of evpn_crds::crds()");

    for description in owned {
        let name = description["name"].as_str().unwrap();
        let crd = shipped.iter().find(|c| c["metadata"]["name"] == name).unwrap();
        assert_eq!(description["kind"], crd["spec"]["names"]["kind"], "{name}: kind");
        let version = description["version"].as_str().unwrap();
        let served =
            crd["spec"]["versions"].as_array().unwrap().iter().any(|v| v["name"] == version && v["served"] == true);
        assert!(served, "{name}: the owned version {version} is not served by the CRD");
        assert!(description["displayName"].as_str().is_some_and(|s| !s.is_empty()), "{name}: displayName");
        let schema = schema_of(crd, version);
        for (list, section) in [("specDescriptors", "spec"), ("statusDescriptors", "status")] {
            let descriptors = description[list].as_array().cloned().unwrap_or_default();
            for descriptor in &descriptors {
                let path = descriptor["path"].as_str().unwrap();
                assert!(
                    resolves(&schema["properties"][section], path),
                    "{name}: {list} path {path:?} is not in the schema"
                );
                for x in strings(&descriptor["x-descriptors"]) {
                    assert!(x.starts_with("urn:alm:descriptor:"), "{name}: {path}: {x:?} is no x-descriptor");
                }
            }
            if !schema["properties"][section]["properties"].as_object().is_none_or(|p| p.is_empty()) {
                assert!(!descriptors.is_empty(), "{name} has a {section} but no {list}");
            }
        }
    }
}

#[test]
fn examples_are_valid_objects_of_owned_kinds() {
    let csv = csv();
    let annotations = &csv["metadata"]["annotations"];
    let examples: Vec<Value> = serde_json::from_str(annotations["alm-examples"].as_str().unwrap()).unwrap();
    let internal: Vec<String> =
        serde_json::from_str(annotations["operators.operatorframework.io/internal-objects"].as_str().unwrap()).unwrap();
    let owned = csv["spec"]["customresourcedefinitions"]["owned"].as_array().unwrap();
    assert!(!examples.is_empty());
    for example in &examples {
        let kind = example["kind"].as_str().unwrap();
        let api_version = example["apiVersion"].as_str().unwrap();
        let description = owned
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && format!(
                        "{}/{}",
                        o["name"].as_str().unwrap().split_once('.').unwrap().1,
                        o["version"].as_str().unwrap()
                    ) == api_version
            })
            .unwrap_or_else(|| panic!("example {kind} {api_version} is not an owned kind"));
        assert!(example["metadata"]["name"].is_string(), "an example {kind} without a name");
        let name = description["name"].as_str().unwrap();
        assert!(!internal.iter().any(|i| i == name), "{name} has examples but is marked internal");
        // The example must decode into the API types, as the apiserver's schema would accept it.
        let decoded = match kind {
            "EVPN" => serde_json::from_value::<evpn_crds::Evpn>(example.clone()).map(drop),
            "VTEP" => serde_json::from_value::<evpn_crds::Vtep>(example.clone()).map(drop),
            other => panic!("no decoder for example kind {other}"),
        };
        assert!(decoded.is_ok(), "example {kind} does not fit the API: {decoded:?}");
    }
    for description in owned {
        let name = description["name"].as_str().unwrap();
        let has_example = examples.iter().any(|e| e["kind"] == description["kind"]);
        assert!(
            has_example || internal.iter().any(|i| i == name),
            "{name} has neither an example nor is marked internal"
        );
    }
}

fn config_webhook() -> Value {
    let docs = read_yaml_dir(&repo_root().join("config/deploy")).unwrap();
    docs.into_iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").unwrap()
}

#[test]
fn webhook_definitions_match_the_webhook_configuration() {
    let csv = csv();
    let definitions = csv["spec"]["webhookdefinitions"].as_array().unwrap();
    let config = config_webhook();
    let hooks = config["webhooks"].as_array().unwrap();
    assert_eq!(definitions.len(), hooks.len(), "one webhook definition per webhook of config/deploy/webhook.yaml");
    let deployments = install_deployments(&csv);
    for hook in hooks {
        let name = hook["name"].as_str().unwrap();
        let def = definitions
            .iter()
            .find(|d| d["generateName"] == name)
            .unwrap_or_else(|| panic!("no definition for {name}"));
        assert_eq!(def["type"], "ValidatingAdmissionWebhook", "{name}: type");
        assert_eq!(def["webhookPath"], hook["clientConfig"]["service"]["path"], "{name}: path");
        for field in
            ["rules", "failurePolicy", "sideEffects", "admissionReviewVersions", "matchPolicy", "timeoutSeconds"]
        {
            assert_eq!(def[field], hook[field], "{name}: {field}");
        }
        assert!(
            ["None", "NoneOnDryRun"].contains(&def["sideEffects"].as_str().unwrap()),
            "{name}: admission/v1 needs None or NoneOnDryRun"
        );
        assert!(strings(&def["admissionReviewVersions"]).contains(&"v1".to_owned()), "{name}: v1 reviews");
        // OLM refuses webhooks that could lock the cluster: all groups, its own, webhook configs.
        for rule in def["rules"].as_array().unwrap() {
            let groups = strings(&rule["apiGroups"]);
            assert!(!groups.iter().any(|g| g == "*" || g == "operators.coreos.com"), "{name}: intercepts {groups:?}");
            let resources = strings(&rule["resources"]);
            assert!(
                !resources.iter().any(|r| r.contains("webhookconfigurations") || r == "*"),
                "{name}: intercepts {resources:?}"
            );
        }
        let deployment = deployments
            .iter()
            .find(|d| d["name"] == def["deploymentName"])
            .unwrap_or_else(|| panic!("{name}: deploymentName {} is not an install deployment", def["deploymentName"]));
        let port = def["targetPort"].as_u64().or(def["containerPort"].as_u64()).unwrap();
        let listens = containers(&deployment["spec"]["template"]["spec"])
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .any(|p| p["containerPort"].as_u64() == Some(port));
        assert!(listens, "{name}: no container of {} listens on {port}", def["deploymentName"]);
    }
}

#[test]
fn webhook_rules_name_owned_resources() {
    let crds = evpn_crds::crds();
    for hook in config_webhook()["webhooks"].as_array().unwrap() {
        for rule in hook["rules"].as_array().unwrap() {
            for resource in strings(&rule["resources"]) {
                let (plural, sub) = resource.split_once('/').map_or((resource.as_str(), None), |(p, s)| (p, Some(s)));
                let crd = crds
                    .iter()
                    .find(|c| c.spec.names.plural == plural)
                    .unwrap_or_else(|| panic!("{resource} is not a kind of this API"));
                assert!(strings(&rule["apiGroups"]).contains(&crd.spec.group));
                if sub == Some("status") {
                    let has_status =
                        crd.spec.versions.iter().any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
                    assert!(has_status, "{resource}: the CRD has no status subresource");
                }
            }
        }
    }
}

#[tokio::test]
async fn the_webhook_serves_every_configured_path() {
    use tower::ServiceExt as _;
    let state = std::sync::Arc::new(evpn_webhook::server::State::new(evpn_webhook::rules::Policy::default()));
    for hook in config_webhook()["webhooks"].as_array().unwrap() {
        let path = hook["clientConfig"]["service"]["path"].as_str().unwrap();
        let request = axum::http::Request::post(path).body(axum::body::Body::from("{}")).unwrap();
        let response = evpn_webhook::server::router(state.clone()).oneshot(request).await.unwrap();
        // A served route refuses a body that is not an AdmissionReview; an unknown one is a 404.
        assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST, "{path} is not a route of the webhook");
    }
}

#[test]
fn the_plain_manifests_and_the_csv_run_the_same_operator() {
    let docs = read_yaml_dir(&repo_root().join("config/deploy")).unwrap();
    let plain = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let csv = csv();
    let olm = install_deployments(&csv).into_iter().find(|d| d["name"] == plain["metadata"]["name"]).unwrap();
    let pick = |spec: &Value| {
        let c = &containers(&spec["template"]["spec"])[0];
        (
            c["image"].clone(),
            c["ports"].clone(),
            c["livenessProbe"].clone(),
            c["readinessProbe"].clone(),
            spec["replicas"].clone(),
        )
    };
    assert_eq!(pick(&plain["spec"]), pick(&olm["spec"]));
    assert!(Path::new(&repo_root().join("config/deploy/agent.yaml")).is_file());
}
