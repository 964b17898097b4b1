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

use evpn_crds::{Evpn, EvpnNodeState, NetworkKind, Vtep};
use evpn_tests::{TestCa, api_status, apply, control_plane, eventually, unique_name};
use evpn_webhook::server::State;
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
    let args = WebhookArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: cert.clone(),
        tls_key_file: key.clone(),
        tls_reload_seconds: 1,
        admin_groups: vec!["system:masters".into()],
        operator_user: evpn_webhook::rules::DEFAULT_OPERATOR_USER.into(),
        unknown_gateway_mode: evpn_webhook::rules::UnknownGatewayMode::Warn,
        ovnkube_config_namespace: "ovn-kubernetes".into(),
    };
    let state = Arc::new(State::new(args.policy()));
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

#[tokio::test]
async fn non_admin_is_denied_even_when_rbac_allows() {
    let cp = control_plane().await.unwrap();
    let client = admin().await;
    let w = world(&client, "local").await;
    // Grant evpn-user the evpn-admin role: RBAC now lets it through, the webhook must not.
    let binding = unique_name("grant");
    apply(&client, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "evpn-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "evpn-user"}]}))
    .await
    .unwrap();
    let user = cp.user().await.unwrap();
    let obj = evpn_json(&unique_name("sneaky"), &w.vtep, l2(&w.layer2, None));
    let last = std::sync::Mutex::new(String::new());
    eventually(|| async {
        match create(&user, &obj).await {
            Err(e) if e.to_string().contains("admission webhook") => {
                *last.lock().unwrap() = e.to_string();
                true
            }
            _ => false, // RBAC has not caught up with the binding yet
        }
    })
    .await
    .unwrap();
    let last = last.into_inner().unwrap();
    assert!(last.contains("cluster admins only") && last.contains("evpn-user"), "{last}");
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client);
    bindings.delete(&binding, &DeleteParams::default()).await.unwrap();
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
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::pem_slice_iter(fx.ca.cert_pem.as_bytes()).next().unwrap().unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(fx.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
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
