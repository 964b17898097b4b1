//! The admission webhook called by a real kube-apiserver through a ValidatingWebhookConfiguration
//! (a URL on 127.0.0.1 with the test CA as caBundle).
//!
//! One webhook serves the whole binary, on a runtime of its own so it outlives each test's. Its
//! configuration only selects objects labelled for this process, so a leftover configuration can
//! never judge another suite's objects. Every test builds its own small world (a node, a VTEP, a
//! network) under unique names, so the tests run in parallel.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use evpn_crds::{Evpn, EvpnNodeState, NetworkKind, Vtep};
use evpn_tests::{TestCa, api_status, apply, control_plane, eventually, unique_name};
use evpn_webhook::server::{Limits, State};
use evpn_webhook::{Webhook, WebhookArgs, configuration};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{ValidatingWebhookConfiguration, WebhookClientConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Label that puts an object under this process's webhook.
const SELECT: &str = "evpn.k8s.ovn.org/test-webhook";

struct Fixture {
    addr: std::net::SocketAddr,
    ca: TestCa,
    cert: PathBuf,
    key: PathBuf,
    state: Arc<State>,
}

fn selector_value() -> String {
    std::process::id().to_string()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let (fixture, webhook, client) = start().await;
                let watches = evpn_webhook::watch::run(client, fixture.state.clone(), "ovn-kubernetes".into());
                tx.send(fixture).unwrap();
                tokio::join!(watches, async { webhook.serve().await.unwrap() });
            });
        });
        rx.recv().expect("the webhook thread failed to start; see its panic above")
    })
}

/// The webhook's settings as deployed, but for its files, port and what a client may hold.
fn webhook_args(cert: &std::path::Path, key: &std::path::Path, limits: Limits) -> WebhookArgs {
    WebhookArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: cert.to_owned(),
        tls_key_file: key.to_owned(),
        tls_reload_seconds: 1,
        admin_groups: evpn_webhook::rules::DEFAULT_ADMIN_GROUPS.map(String::from).into(),
        access_review_timeout: Duration::from_secs(2),
        access_review_cache: Duration::from_secs(10),
        webhook_handshake_timeout: limits.handshake_timeout,
        webhook_idle_timeout: limits.idle_timeout,
        webhook_request_timeout: limits.request_timeout,
        webhook_max_connections: limits.max_connections,
        operator_user: evpn_webhook::rules::DEFAULT_OPERATOR_USER.into(),
        unknown_gateway_mode: evpn_webhook::rules::UnknownGatewayMode::Warn,
        ovnkube_config_namespace: "ovn-kubernetes".into(),
    }
}

async fn start() -> (Fixture, Webhook, Client) {
    let cp = control_plane().await.unwrap();
    let client = cp.admin().await.unwrap();
    let dir = std::env::temp_dir().join(format!("evpn-webhook-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new().unwrap();
    let (cert_pem, key_pem) = ca.serving_pair().unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let args = webhook_args(&cert, &key, Limits::default());
    let state = Arc::new(args.state(client.clone()));
    let webhook = Webhook::bind(&args, state.clone()).await.unwrap();
    let addr = webhook.local_addr().unwrap();

    let selector =
        LabelSelector { match_labels: Some([(SELECT.to_owned(), selector_value())].into()), ..Default::default() };
    let client_config = WebhookClientConfig {
        url: Some(format!("https://{addr}")),
        ca_bundle: Some(ByteString(ca.cert_pem.clone().into_bytes())),
        ..Default::default()
    };
    let name = format!("evpn-test-webhook-{}", std::process::id());
    let config = configuration(&name, client_config, Some(selector));
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configs.patch(&name, &PatchParams::apply("evpn-tests").force(), &Patch::Apply(&config)).await.unwrap();
    (Fixture { addr, ca, cert, key, state }, webhook, client)
}

/// Waits until the apiserver routes our objects to a synced webhook: a dry-run EVPN naming a
/// VTEP that does not exist is then denied by it.
async fn ready(client: &Client) {
    fixture();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
    let probe = serde_json::from_value(evpn_json(&unique_name("probe"), "no-such-vtep", l2("none", None))).unwrap();
    eventually(|| async {
        match api.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await {
            Err(e) => e.to_string().contains("\"no-such-vtep\" does not exist"),
            Ok(_) => false,
        }
    })
    .await
    .expect("the webhook never became active");
}

fn labelled(mut obj: Value) -> Value {
    obj["metadata"]["labels"][SELECT] = json!(selector_value());
    obj
}

fn evpn_json(name: &str, vtep: &str, mut spec: Value) -> Value {
    spec["vtep"] = json!(vtep);
    labelled(
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name}, "spec": spec}),
    )
}

fn l2(network: &str, vni: Option<u32>) -> Value {
    let mut spec = json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "macVRF": {}});
    if let Some(vni) = vni {
        spec["macVRF"]["vni"] = json!(vni);
    }
    spec
}

/// A small world of its own: a node in `mode` gateway mode, a VTEP selecting it, a Layer2 and a
/// Layer3 primary network.
struct World {
    vtep: String,
    layer2: String,
    layer3: String,
}

async fn world(client: &Client, gateway_mode: &str) -> World {
    let id = unique_name("w");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": format!("{id}-node"), "labels": {"evpn-test/world": id},
        "annotations": {"k8s.ovn.org/l3-gateway-config": json!({"default": {"mode": gateway_mode}}).to_string()}}});
    apply(client, &node).await.unwrap();
    let vtep = format!("{id}-vtep");
    apply(
        client,
        &labelled(
            json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep}, "spec": {
        "cidrs": ["198.18.0.0/24"], "nodeSelector": {"matchLabels": {"evpn-test/world": id}},
        "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}),
        ),
    )
    .await
    .unwrap();
    let (layer2, layer3) = (format!("{id}-l2"), format!("{id}-l3"));
    apply(client, &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": layer2},
        "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}}))
    .await
    .unwrap();
    apply(client, &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": layer3},
        "spec": {"namespaceSelector": {}, "network": {"topology": "Layer3", "layer3": {"role": "Primary", "subnets": [{"cidr": "10.200.0.0/16"}]}}}}))
    .await
    .unwrap();
    // The webhook judges from its watches: wait until they have seen this world.
    let state = &fixture().state;
    eventually(|| async {
        let ix = state.index.read().unwrap();
        ix.vtep(&vtep).is_some()
            && ix.nodes().contains_key(&format!("{id}-node"))
            && ix.network(&(evpn_crds::NetworkKind::ClusterUserDefinedNetwork, None, layer3.clone())).is_some()
    })
    .await
    .unwrap();
    World { vtep, layer2, layer3 }
}

async fn create(client: &Client, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
    api.create(&PostParams::default(), &serde_json::from_value(obj.clone()).unwrap()).await
}

#[track_caller]
fn assert_denied(result: Result<DynamicObject, kube::Error>, needles: &[&str]) {
    let err = result.expect_err("the webhook let it through");
    let msg = err.to_string();
    assert!(msg.contains("admission webhook"), "not denied by the webhook: {msg}");
    for n in needles {
        assert!(msg.contains(n), "the denial should mention {n:?}: {msg}");
    }
}

async fn admin() -> Client {
    let client = control_plane().await.unwrap().admin().await.unwrap();
    ready(&client).await;
    client
}

#[tokio::test]
async fn admin_creates_an_evpn() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let name = unique_name("blue");
    create(&client, &evpn_json(&name, &w.vtep, l2(&w.layer2, None))).await.unwrap();
    let metrics = fixture().state.metrics.encode();
    assert!(
        metrics.contains(r#"admission_requests_total{kind="EVPN",operation="create",result="allowed"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn duplicate_vni_is_denied_naming_the_holder() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let first = unique_name("first");
    let vni = 100_000 + std::process::id() % 100_000;
    create(&client, &evpn_json(&first, &w.vtep, l2(&w.layer2, Some(vni)))).await.unwrap();
    let state = &fixture().state;
    eventually(|| async { !state.index.read().unwrap().vni_owners(vni, "").is_empty() }).await.unwrap();
    let second = evpn_json(&unique_name("second"), &w.vtep, l2(&w.layer2, Some(vni)));
    assert_denied(create(&client, &second).await, &["spec.macVRF.vni", &format!("VNI {vni}"), &first]);
}

/// A client of the admin kubeconfig's cluster with the identity `auth` sets.
async fn client_as(auth: impl FnOnce(&mut kube::config::AuthInfo)) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(control_plane().await.unwrap().admin_kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    auth(&mut config.auth_info);
    Client::try_from(config).unwrap()
}

/// Creates `obj` as `client` until RBAC has caught up with a new binding (or the deadline
/// passes); the last error, if it never succeeded.
async fn create_once_bound(client: &Client, obj: &Value) -> Result<(), String> {
    let last = std::sync::Mutex::new(String::new());
    let created = eventually(|| async {
        match create(client, obj).await {
            Ok(_) => true,
            Err(e) => {
                *last.lock().unwrap() = e.to_string();
                false
            }
        }
    })
    .await;
    created.map_err(|_| last.into_inner().unwrap())
}

fn cluster_role_binding(name: &str, role: &str, subject: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject]})
}

#[tokio::test]
async fn a_gitops_service_account_bound_to_evpn_admin_manages_evpns() {
    let client = admin().await;
    let w = world(&client, "local").await;
    // A service account of its own namespace, as Argo CD or Flux run with, authenticated by a
    // token the apiserver signs: no group beyond system:serviceaccounts.
    let namespace = unique_name("gitops");
    apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await.unwrap();
    apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sync", "namespace": namespace}}),
    )
    .await
    .unwrap();
    apply(
        &client,
        &cluster_role_binding(
            &namespace,
            "evpn-admin",
            json!({"kind": "ServiceAccount", "name": "sync", "namespace": namespace}),
        ),
    )
    .await
    .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token =
        accounts.create_token_request("sync", &PostParams::default(), &request).await.unwrap().status.unwrap().token;
    let gitops =
        client_as(|auth| *auth = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() }).await;

    let name = unique_name("synced");
    create_once_bound(&gitops, &evpn_json(&name, &w.vtep, l2(&w.layer2, None)))
        .await
        .unwrap_or_else(|last| panic!("the bound service account never created its EVPN: {last}"));
    let evpns: Api<Evpn> = Api::all(gitops);
    evpns.delete(&name, &DeleteParams::default()).await.unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    bindings.delete(&namespace, &DeleteParams::default()).await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces.delete(&namespace, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_tenant_who_may_create_udns_is_told_which_permission_is_missing() {
    let client = admin().await;
    let (theirs, other) = (world(&client, "local").await, world(&client, "local").await);
    // A tenant may create networks and EVPNs, and manage EVPNs on one VTEP by name only, granted
    // apart so that grant can be revoked alone.
    let tenant = unique_name("tenant");
    let manage = format!("{tenant}-manage");
    let rule = |group: &str, resource: &str, verbs: &[&str]| json!({"apiGroups": [group], "resources": [resource], "verbs": verbs});
    let roles = [
        (
            &tenant,
            vec![
                rule("k8s.ovn.org", "userdefinednetworks", &["create", "get", "list"]),
                rule("evpn.k8s.ovn.org", "evpns", &["create", "get", "list"]),
            ],
        ),
        (
            &manage,
            vec![
                json!({"apiGroups": ["evpn.k8s.ovn.org"], "resources": ["vteps"], "verbs": ["manage"], "resourceNames": [theirs.vtep]}),
            ],
        ),
    ];
    for (name, rules) in roles {
        apply(&client, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}))
            .await
            .unwrap();
        let user = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": tenant});
        apply(&client, &cluster_role_binding(name, name, user)).await.unwrap();
    }
    let as_tenant = client_as(|auth| {
        auth.impersonate = Some(tenant.clone());
        auth.impersonate_groups = Some(vec!["system:authenticated".into()]);
    })
    .await;

    // Its own VTEP: allowed, once RBAC has the bindings.
    create_once_bound(&as_tenant, &evpn_json(&unique_name("own"), &theirs.vtep, l2(&theirs.layer2, None)))
        .await
        .unwrap_or_else(|last| panic!("the tenant never created an EVPN on the VTEP it may manage: {last}"));
    // Another VTEP: denied, naming the verb, the resource, the VTEP and the role that grants it.
    let denied = create(&as_tenant, &evpn_json(&unique_name("foreign"), &other.vtep, l2(&other.layer2, None))).await;
    assert_denied(
        denied,
        &[
            "creating an EVPN",
            &format!("manage VTEP {:?}", other.vtep),
            "verb \"manage\" on resource \"vteps\" in API group \"evpn.k8s.ovn.org\"",
            &format!("user {tenant:?} lacks"),
            "ClusterRole evpn-admin",
            &format!("resourceNames: [{:?}]", other.vtep),
        ],
    );
    let metrics = fixture().state.metrics.encode();
    assert!(metrics.contains(r#"evpn_webhook_access_checks_total{result="denied"}"#), "{metrics}");
    // Revoked, its own VTEP is refused too, once RBAC and the webhook's cached answer expire.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    bindings.delete(&manage, &DeleteParams::default()).await.unwrap();
    let revoked_at = Instant::now();
    let again = evpn_json(&unique_name("revoked"), &theirs.vtep, l2(&theirs.layer2, None));
    eventually(|| async { create(&as_tenant, &again).await.is_err_and(|e| e.to_string().contains("lacks")) })
        .await
        .expect("the revoked tenant could still create EVPNs");
    println!("revocation took effect after {:?}", revoked_at.elapsed());
    let cluster_roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client);
    bindings.delete(&tenant, &DeleteParams::default()).await.unwrap();
    for name in [&tenant, &manage] {
        cluster_roles.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn the_operator_records_an_allocated_vni_without_manage() {
    let cp = control_plane().await.unwrap();
    let client = admin().await;
    let w = world(&client, "local").await;
    let name = unique_name("allocated");
    create(&client, &evpn_json(&name, &w.vtep, l2(&w.layer2, None))).await.unwrap();
    let state = &fixture().state;
    eventually(|| async { state.index.read().unwrap().evpn(&name).is_some() }).await.unwrap();
    // Its RBAC has patch on evpns and no manage on any VTEP: the webhook knows it by name.
    let vni = 300_000 + std::process::id() % 100_000;
    let operator: Api<Evpn> = Api::all(cp.operator().await.unwrap());
    let recorded = json!({"spec": {"macVRF": {"vni": vni}}});
    let patched = operator.patch(&name, &PatchParams::default(), &Patch::Merge(&recorded)).await.unwrap();
    assert_eq!(patched.spec.mac_vrf.and_then(|v| v.vni), Some(vni));
}

#[tokio::test]
async fn shared_gateway_mode_is_denied() {
    let client = admin().await;
    let w = world(&client, "shared").await;
    let obj = evpn_json(&unique_name("blue"), &w.vtep, l2(&w.layer2, None));
    assert_denied(create(&client, &obj).await, &["shared gateway mode", "local gateway mode"]);
}

#[tokio::test]
async fn layer3_network_with_mac_vrf_is_denied() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let spec = json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": w.layer3}, "macVRF": {}, "ipVRF": {}});
    assert_denied(create(&client, &evpn_json(&unique_name("red"), &w.vtep, spec)).await, &["spec.macVRF", "Layer3"]);
}

#[tokio::test]
async fn network_mtu_must_fit_the_vtep_underlay() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let vteps: Api<Vtep> = Api::all(client.clone());
    vteps.patch(&w.vtep, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"mtu": 9000}}))).await.unwrap();
    // 9000 bytes of IPv4 underlay carry 8950 of overlay: one network fits exactly, one is a byte over.
    let (fits, too_big) = (format!("{}-8950", w.layer2), format!("{}-8951", w.layer2));
    for (name, mtu) in [(&fits, 8950), (&too_big, 8951)] {
        apply(&client, &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": name},
            "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"], "mtu": mtu}}}}))
        .await
        .unwrap();
    }
    let state = &fixture().state;
    eventually(|| async {
        let ix = state.index.read().unwrap();
        ix.vtep(&w.vtep).is_some_and(|v| v.mtu == Some(9000))
            && [&fits, &too_big].iter().all(|n| {
                ix.network(&(NetworkKind::ClusterUserDefinedNetwork, None, (*n).clone()))
                    .is_some_and(|f| f.mtu.is_some())
            })
    })
    .await
    .unwrap();

    assert_denied(
        create(&client, &evpn_json(&unique_name("big"), &w.vtep, l2(&too_big, None))).await,
        &[
            "spec.network",
            &format!("ClusterUserDefinedNetwork {too_big} has MTU 8951"),
            "at most 8950 (spec.mtu 9000 minus 50 bytes of VXLAN over IPv4)",
            "spec.mtu to 9001",
        ],
    );
    let name = unique_name("fits");
    create(&client, &evpn_json(&name, &w.vtep, l2(&fits, None))).await.unwrap();

    // Once the EVPN is there, its VTEP cannot shrink under it.
    eventually(|| async { state.index.read().unwrap().evpn(&name).is_some() }).await.unwrap();
    let err = vteps
        .patch(&w.vtep, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"mtu": 8999}})))
        .await
        .expect_err("the VTEP shrank under its EVPN");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{name:?} (network MTU 8950)")) && msg.contains("keep spec.mtu at 9000"), "{msg}");
}

#[tokio::test]
async fn vni_change_is_denied() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let name = unique_name("fixed");
    let vni = 200_000 + std::process::id() % 100_000;
    create(&client, &evpn_json(&name, &w.vtep, l2(&w.layer2, Some(vni)))).await.unwrap();
    let api: Api<Evpn> = Api::all(client);
    let patch = json!({"spec": {"macVRF": {"vni": vni + 1}}});
    let err = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect_err("VNI changed");
    assert!(err.to_string().contains("immutable once set") && err.to_string().contains(&format!("was {vni}")), "{err}");
    // Route targets may change.
    let patch = json!({"spec": {"macVRF": {"routeTargets": {"import": ["65000:1"]}}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test]
async fn agents_write_only_their_own_node_state() {
    let cp = control_plane().await.unwrap();
    let client = admin().await;
    // The nodes' agents get the agent role through their group.
    apply(
        &client,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "evpn-test-agents"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "evpn-agent"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}),
    )
    .await
    .unwrap();
    let operator = cp.operator().await.unwrap();
    let states: Api<EvpnNodeState> = Api::all(operator);
    let state_json = |node: &str| {
        labelled(
            json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPNNodeState", "metadata": {"name": node}, "spec": {}}),
        )
    };
    let admin_states: Api<EvpnNodeState> = Api::all(client.clone());
    for node in ["worker-1", "worker-2"] {
        // Start from scratch: a run that stopped half-way left these labelled for its own,
        // now dead, webhook.
        let _ = admin_states.delete(node, &DeleteParams::default()).await;
        let obj: EvpnNodeState = serde_json::from_value(state_json(node)).unwrap();
        states.patch(node, &PatchParams::apply("evpn-operator").force(), &Patch::Apply(&obj)).await.unwrap();
    }
    // Only the operator writes specs: not even an admin.
    let spec = json!({"spec": {"vteps": [{"name": "x", "mode": "Managed", "cidrs": [], "udpPort": 4789}]}});
    let err = admin_states
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect_err("admin wrote a spec");
    assert!(err.to_string().contains("written by the operator"), "{err}");

    let agent = cp.node("worker-1").await.unwrap();
    let agent_states: Api<EvpnNodeState> = Api::all(agent);
    let status = json!({"status": {"appliedNetworks": 0, "failedNetworks": 0}});
    eventually(|| async {
        agent_states.patch_status("worker-1", &PatchParams::default(), &Patch::Merge(&status)).await.is_ok()
    })
    .await
    .expect("worker-1's agent could not write its own status");
    let err = agent_states
        .patch_status("worker-2", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect_err("cross-node write");
    assert_eq!(api_status(&err), Some(403), "{err}");
    assert!(err.to_string().contains("\"worker-1\"") && err.to_string().contains("not \"worker-2\""), "{err}");
    // The lab's agents are these same two nodes: node states left with this process's label
    // would send their writes to this webhook after it is gone.
    for node in ["worker-1", "worker-2"] {
        admin_states.delete(node, &DeleteParams::default()).await.unwrap();
    }
}

/// The certificate the webhook presents to a fresh TLS connection.
async fn served_certificate(fx: &Fixture) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(fx.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = fx.ca.connector(b"h2").unwrap().connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn certificate_rotates_on_disk_while_requests_keep_succeeding() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let fx = fixture();
    let before = served_certificate(fx).await;

    // Keep admission requests flowing (dry-run creates) while the certificate rotates.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop, vtep, net) = (client.clone(), stop.clone(), w.vtep.clone(), w.layer2.clone());
        tokio::spawn(async move {
            let api: Api<DynamicObject> = Api::all_with(client, &kube::api::ApiResource::erase::<Evpn>(&()));
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let obj = serde_json::from_value(evpn_json(&unique_name("rotate"), &vtep, l2(&net, None))).unwrap();
                match api.create(&PostParams { dry_run: true, ..Default::default() }, &obj).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };

    let (cert_pem, key_pem) = fx.ca.serving_pair().unwrap();
    // Rotate the way a Secret volume does: write aside, then rename over, key first.
    for (path, pem) in [(&fx.key, key_pem), (&fx.cert, cert_pem.clone())] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    let expected =
        rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()).next().unwrap().unwrap().to_vec();
    eventually(|| async { served_certificate(fx).await == expected })
        .await
        .expect("the new certificate was never served");
    // Requests that start after the swap use the new certificate, through the apiserver too.
    let after_swap = {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
        let obj = serde_json::from_value(evpn_json(&unique_name("after"), &w.vtep, l2(&w.layer2, None))).unwrap();
        api.create(&PostParams { dry_run: true, ..Default::default() }, &obj).await
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert_ne!(before, expected, "the rotation should change the certificate");
    assert!(after_swap.is_ok(), "{after_swap:?}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..1]
    );
    assert!(ok > 0, "no request ran during the rotation");
    let metrics = fx.state.metrics.encode();
    assert!(metrics.contains(r#"evpn_webhook_tls_reloads_total{result="reloaded"}"#), "{metrics}");
}

/// A webhook of its own with short limits, judging from the fixture's state. It runs on a
/// runtime of its own, as in the operator, so the test's clients do not share its scheduler.
async fn limited_webhook(limits: Limits) -> std::net::SocketAddr {
    let fx = fixture();
    let (args, state) = (webhook_args(&fx.cert, &fx.key, limits), fx.state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let webhook = Webhook::bind(&args, state).await.unwrap();
            tx.send(webhook.local_addr().unwrap()).unwrap();
            webhook.serve().await.unwrap();
        });
    });
    rx.await.unwrap()
}

/// The soft limit on this process's open files, from /proc/self/limits.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
}

/// What an attacking connection does once open.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Opens TCP and sends nothing: not even a TLS hello.
    SilentTcp,
    /// Completes TLS and sends nothing.
    IdleTls,
    /// Completes TLS and sends a request's headers a byte every 100 ms, never finishing them.
    Slowloris,
    /// Sends complete headers, then the body a byte every 100 ms.
    SlowBody,
}

/// Runs `attack` on a fresh connection until the server closes it; how long that took.
async fn attack_once(addr: std::net::SocketAddr, tls: &tokio_rustls::TlsConnector, attack: Attack) -> Duration {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 512];
    let until_closed = |opened: Instant| opened.elapsed();
    match attack {
        Attack::SilentTcp => {
            let _ = tcp.read(&mut buf).await;
            until_closed(opened)
        }
        Attack::IdleTls => {
            let Ok(mut stream) = tls.connect(name, tcp).await else { return until_closed(opened) };
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            until_closed(opened)
        }
        Attack::Slowloris | Attack::SlowBody => {
            let Ok(stream) = tls.connect(name, tcp).await else { return until_closed(opened) };
            let (mut reader, mut writer) = tokio::io::split(stream);
            let (head, body): (&[u8], &[u8]) = match attack {
                Attack::Slowloris => (b"", b"POST /validate/evpns HTTP/1.1\r\nHost: webhook\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                _ => (b"POST /validate/evpns HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", &[b' '; 1000]),
            };
            let trickle = async {
                writer.write_all(head).await?;
                for byte in body {
                    writer.write_all(std::slice::from_ref(byte)).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                std::future::pending::<std::io::Result<()>>().await
            };
            let closed = async { while reader.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
            tokio::select! { _ = trickle => {}, () = closed => {} }
            until_closed(opened)
        }
    }
}

#[tokio::test]
async fn slow_and_idle_clients_do_not_hold_the_webhook() {
    let client = admin().await;
    let w = world(&client, "local").await;
    let limits = Limits {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        max_connections: 1024,
    };
    let addr = limited_webhook(limits).await;
    // Route this test's objects alone to the limited webhook.
    let label = format!("{}-limited", selector_value());
    let selector =
        LabelSelector { match_labels: Some([(SELECT.to_owned(), label.clone())].into()), ..Default::default() };
    let client_config = WebhookClientConfig {
        url: Some(format!("https://{addr}")),
        ca_bundle: Some(ByteString(fixture().ca.cert_pem.clone().into_bytes())),
        ..Default::default()
    };
    let config_name = format!("evpn-test-webhook-{label}");
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .patch(
            &config_name,
            &PatchParams::apply("evpn-tests").force(),
            &Patch::Apply(&configuration(&config_name, client_config, Some(selector))),
        )
        .await
        .unwrap();
    let routed = |name: &str, vtep: &str| {
        let mut obj = evpn_json(name, vtep, l2(&w.layer2, None));
        obj["metadata"]["labels"][SELECT] = json!(label);
        serde_json::from_value::<DynamicObject>(obj).unwrap()
    };
    let evpns: Api<DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    // A denial only this webhook gives proves the apiserver calls it.
    let probe = || async { evpns.create(&dry_run, &routed(&unique_name("probe"), "no-such-vtep")).await };
    eventually(|| async { probe().await.is_err_and(|e| e.to_string().contains("\"no-such-vtep\" does not exist")) })
        .await
        .expect("the limited webhook never became active");

    // Several hundred connections that do nothing useful, each reopened as soon as it is cut;
    // both ends are in this process.
    let per_kind = (open_files_limit().saturating_sub(512) / 8).min(150);
    assert!(per_kind >= 50, "raise the open-files limit (ulimit -n) to run this test");
    // Each must be cut within its limit; two seconds of slack, as both ends and the churn of
    // reopening share this process and two cores.
    let slack = Duration::from_secs(2);
    let bound = |attack| {
        slack
            + match attack {
                Attack::SilentTcp => limits.handshake_timeout,
                Attack::IdleTls | Attack::Slowloris => limits.idle_timeout + Duration::from_secs(1),
                Attack::SlowBody => limits.request_timeout + Duration::from_secs(1),
            }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for attack in [Attack::SilentTcp, Attack::IdleTls, Attack::Slowloris, Attack::SlowBody] {
        for _ in 0..per_kind {
            let (stop, tls, bound) = (stop.clone(), fixture().ca.connector(b"http/1.1").unwrap(), bound(attack));
            attackers.push(tokio::spawn(async move {
                let mut lifetimes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match tokio::time::timeout(bound, attack_once(addr, &tls, attack)).await {
                        Ok(lifetime) => lifetimes.push(lifetime),
                        Err(_) => return Err(format!("a {attack:?} connection was not cut within {bound:?}")),
                    }
                }
                Ok((attack, lifetimes))
            }));
        }
    }

    // Real admissions meanwhile, through the apiserver: each answered well inside its 5 s.
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(12);
    let mut admitted = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let allowed = evpns.create(&dry_run, &routed(&unique_name("busy"), &w.vtep)).await;
        slowest = slowest.max(started.elapsed());
        assert!(allowed.is_ok(), "an admission failed under load: {allowed:?}");
        let started = Instant::now();
        let denied = probe().await.expect_err("the probe was admitted").to_string();
        slowest = slowest.max(started.elapsed());
        assert!(denied.contains("\"no-such-vtep\" does not exist"), "the probe was not judged: {denied}");
        admitted += 2;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("{admitted} admissions under {} attacking connections, the slowest took {slowest:?}", 4 * per_kind);
    assert!(slowest < Duration::from_secs(5), "an admission took {slowest:?}");

    // Idle connections are not cut before the idle timeout either.
    let mut cut = 0;
    for attacker in attackers {
        let (attack, lifetimes) = attacker.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        if let Attack::IdleTls = attack {
            let early = lifetimes.iter().find(|l| **l < limits.idle_timeout - Duration::from_millis(100));
            assert!(early.is_none(), "an idle connection was cut after {early:?}");
        }
        cut += lifetimes.len();
    }
    println!("{cut} attacking connections cut");
    let metrics = fixture().state.metrics.encode();
    for limit in ["handshake", "idle", "request"] {
        let counted = format!(r#"evpn_webhook_limit_hits_total{{limit="{limit}"}}"#);
        assert!(metrics.contains(&counted), "{counted} missing: {metrics}");
    }
    configs.delete(&config_name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let limits = Limits { max_connections: 4, idle_timeout: Duration::from_secs(30), ..Limits::default() };
    let addr = limited_webhook(limits).await;
    let tls = fixture().ca.connector(b"h2").unwrap();
    let name = || rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.push(tls.connect(name(), tcp).await.unwrap());
    }
    // The fifth waits in the listen backlog: its handshake does not complete...
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut fifth = Box::pin(tls.connect(name(), tcp));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut fifth).await.is_err(),
        "a fifth connection was served"
    );
    // ...until one of the four closes.
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(3), fifth).await;
    assert!(matches!(served, Ok(Ok(_))), "the fifth connection was not served once a slot freed: {served:?}");
    let metrics = fixture().state.metrics.encode();
    assert!(metrics.contains(r#"evpn_webhook_limit_hits_total{limit="connections"}"#), "{metrics}");
}
