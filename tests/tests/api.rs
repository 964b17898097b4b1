//! The API against a real kube-apiserver: CRDs served, samples accepted, the schema rejecting
//! bad input with the apiserver's own message, printer columns through the Table API, and RBAC.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use evpn_crds::{Evpn, EvpnNodeState, Vtep};
use evpn_tests::{api_status, control_plane, dynamic_api, read_yaml_dir, repo_root, unique_name};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

async fn admin() -> Client {
    control_plane().await.expect("control plane").admin().await.expect("admin client")
}

fn evpn_object(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name}, "spec": spec})
}

fn layer2_spec() -> Value {
    json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "macVRF": {}})
}

/// Creates an EVPN from raw JSON, so the test can send what the Rust types would refuse to build.
async fn create_raw(client: &Client, obj: &Value) -> Result<Value, kube::Error> {
    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
    let obj: kube::api::DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await.map(|o| serde_json::to_value(o).unwrap())
}

#[tokio::test]
async fn crds_are_established_with_their_names() {
    let client = admin().await;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in [Vtep::crd(), Evpn::crd(), EvpnNodeState::crd()] {
        let name = crd.metadata.name.unwrap();
        let served = api.get(&name).await.unwrap();
        let conditions = served.status.unwrap().conditions.unwrap_or_default();
        assert!(
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is not Established: {conditions:?}"
        );
        assert_eq!(served.spec.scope, "Cluster", "{name}");
    }
    let evpn = api.get("evpns.evpn.k8s.ovn.org").await.unwrap();
    assert_eq!(evpn.spec.names.kind, "EVPN");
    assert_eq!(evpn.spec.names.short_names, Some(vec!["evpn".to_owned()]));
}

#[tokio::test]
async fn every_sample_is_accepted() {
    let client = admin().await;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let samples = repo_root().join("config/samples");
    let mut docs = read_yaml_dir(&samples).unwrap();
    docs.extend(read_yaml_dir(&samples.join("third-party")).unwrap());
    assert!(docs.len() >= 10, "expected the samples of every kind, found {}", docs.len());
    for mut doc in docs {
        let original = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let name = unique_name(&original);
        doc["metadata"]["name"] = json!(name);
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            ns_api
                .patch(ns, &PatchParams::apply("evpn-tests"), &Patch::Apply(&namespace))
                .await
                .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
        }
        let (api, _) = dynamic_api(&client, &doc).await.unwrap();
        let obj: kube::api::DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("sample {} {original} was rejected: {e}", doc["kind"]));
        // Nothing the sample says may be pruned: a pruned field means the sample and the schema disagree.
        let created = serde_json::to_value(&created).unwrap();
        if let Some(spec) = doc.get("spec") {
            assert_json_includes(&created["spec"], spec, &format!("{} {original}: spec", doc["kind"]));
        }
        api.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

/// Every field of `expected` is in `actual` with the same value (the server may add defaults).
fn assert_json_includes(actual: &Value, expected: &Value, path: &str) {
    match expected {
        Value::Object(fields) => {
            for (k, v) in fields {
                assert_json_includes(&actual[k], v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            let got = actual.as_array().map_or(0, Vec::len);
            assert_eq!(got, items.len(), "{path} has {got} items, the sample {}", items.len());
            for (i, v) in items.iter().enumerate() {
                assert_json_includes(&actual[i], v, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{path} was changed or dropped by the apiserver"),
    }
}

#[tokio::test]
async fn schema_rejects_out_of_range_and_malformed_fields() {
    let client = admin().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("VNI 0", json!({"macVRF": {"vni": 0}}), "spec.macVRF.vni"),
        ("VNI above 24 bits", json!({"macVRF": {"vni": 16_777_216}}), "spec.macVRF.vni"),
        ("VNI as a string", json!({"ipVRF": {"vni": "ten"}}), "spec.ipVRF.vni"),
        (
            "route target without a colon",
            json!({"macVRF": {"routeTargets": {"import": ["65000"]}}}),
            "spec.macVRF.routeTargets.import",
        ),
        ("unknown network kind", json!({"network": {"kind": "Network", "name": "blue"}}), "spec.network.kind"),
        (
            "ESI of nine bytes",
            json!({"multiHoming": {"ethernetSegments": [{"name": "a", "interface": "eth1", "nodeSelector": {}, "esi": "00:11:22:33:44:55:66:77:88"}]}}),
            "spec.multiHoming.ethernetSegments[0].esi",
        ),
        (
            "unknown redundancy mode",
            json!({"multiHoming": {"ethernetSegments": [{"name": "a", "interface": "eth1", "nodeSelector": {}, "mode": "Active"}]}}),
            "spec.multiHoming.ethernetSegments[0].mode",
        ),
    ];
    for (case, overrides, field) in cases {
        let mut spec = layer2_spec();
        for (k, v) in overrides.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let err = create_raw(&client, &evpn_object(&unique_name("bad"), spec))
            .await
            .expect_err(&format!("{case}: the apiserver accepted it"));
        assert_eq!(api_status(&err), Some(422), "{case}: {err}");
        // Older apiservers leave list indexes out of field paths; newer ones include them.
        let message = err.to_string().replace("[0]", "");
        assert!(message.contains(&field.replace("[0]", "")), "{case}: the message should name {field}: {err}");
    }
    let mut no_vtep = layer2_spec();
    no_vtep.as_object_mut().unwrap().remove("vtep");
    let err = create_raw(&client, &evpn_object(&unique_name("bad"), no_vtep)).await.expect_err("missing vtep accepted");
    assert!(err.to_string().contains("spec.vtep: Required value"), "{err}");
}

#[tokio::test]
async fn table_api_shows_resolved_printer_columns() {
    let client = admin().await;
    let name = unique_name("table");
    create_raw(&client, &evpn_object(&name, layer2_spec())).await.unwrap();
    let api: Api<Evpn> = Api::all(client.clone());
    let status = json!({"status": {
        "observedGeneration": 1,
        "macVRF": {"vni": 10100, "routeTargets": {"import": ["65001:10100"], "export": ["65001:10100"]}},
        "ipVRF": {"vni": 20100, "routeTargets": {}},
        "nodes": {"desired": 3, "ready": 2, "failed": 1},
        "readyNodes": "2/3",
        "conditions": [{"type": "Ready", "status": "False", "reason": "NodesFailing", "message": "1 of 3 nodes failed",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let req = http::Request::get(format!("/apis/evpn.k8s.ovn.org/v1alpha1/evpns/{name}"))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(req).await.unwrap();
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "Network", "MAC-VNI", "IP-VNI", "Nodes", "Ready", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], json!(name));
    assert_eq!(cells[1], json!("blue"));
    assert_eq!(cells[2], json!(10100));
    assert_eq!(cells[3], json!(20100));
    assert_eq!(cells[4], json!("2/3"));
    assert_eq!(cells[5], json!("False"));
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn status_and_spec_are_written_separately() {
    let client = admin().await;
    let name = unique_name("subresource");
    create_raw(&client, &evpn_object(&name, layer2_spec())).await.unwrap();
    let api: Api<Evpn> = Api::all(client.clone());
    // A status written through the main resource is ignored...
    let with_status = json!({"spec": {"macVRF": {"vni": 10200}}, "status": {"readyNodes": "9/9"}});
    let after = api.patch(&name, &PatchParams::default(), &Patch::Merge(&with_status)).await.unwrap();
    assert_eq!(after.spec.mac_vrf.unwrap().vni, Some(10200));
    assert!(after.status.is_none(), "status changed through the main resource: {:?}", after.status);
    assert_eq!(after.metadata.generation, Some(2));
    // ...and a spec written through /status is ignored, without bumping the generation.
    let through_status = json!({"spec": {"vtep": "elsewhere"}, "status": {"readyNodes": "1/1"}});
    let after = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&through_status)).await.unwrap();
    assert_eq!(after.spec.vtep, "fabric");
    assert_eq!(after.status.unwrap().ready_nodes.as_deref(), Some("1/1"));
    assert_eq!(after.metadata.generation, Some(2));
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn non_admin_cannot_write_evpns_even_as_a_viewer() {
    let cp = control_plane().await.unwrap();
    let admin = cp.admin().await.unwrap();
    let user = cp.user().await.unwrap();
    let name = unique_name("rbac");

    let err = create_raw(&user, &evpn_object(&name, layer2_spec())).await.expect_err("evpn-user created an EVPN");
    assert_eq!(api_status(&err), Some(403), "{err}");
    assert!(err.to_string().contains("evpn-user"), "{err}");

    // The viewer role from config/rbac lets the user read EVPNs, and still not write them.
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "evpn-viewer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "evpn-user".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let user_evpns: Api<Evpn> = Api::all(user.clone());
    // RBAC changes reach the authorizer through an informer: wait until the grant is visible.
    evpn_tests::eventually(|| async { user_evpns.list(&Default::default()).await.is_ok() }).await.unwrap();
    let err = create_raw(&user, &evpn_object(&name, layer2_spec())).await.expect_err("a viewer created an EVPN");
    assert_eq!(api_status(&err), Some(403), "{err}");
    bindings.delete(&name, &DeleteParams::default()).await.unwrap();

    // The admin identity can.
    let created = create_raw(&admin, &evpn_object(&name, layer2_spec())).await.unwrap();
    assert_eq!(created["metadata"]["name"], json!(name));
    let admin_evpns: Api<Evpn> = Api::all(admin);
    let evpn = admin_evpns.get(&name).await.unwrap();
    assert_eq!(evpn.name_any(), name);
    admin_evpns.delete(&name, &DeleteParams::default()).await.unwrap();
}
