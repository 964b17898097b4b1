//! The `evpn-operator` binary as an operator of it sees it, against a real kube-apiserver: its
//! metrics and probes on the plain-HTTP port, its JSON log lines, and its spans arriving at an
//! OTLP/HTTP receiver, after the apiserver sent it an admission request and it ran a round.

#![allow(clippy::unwrap_used, reason = "a test that cannot set up should panic")]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use evpn_crds::Evpn;
use evpn_tests::{TestCa, control_plane, eventually, http_get, sample, unique_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{ValidatingWebhookConfiguration, WebhookClientConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

/// The operator process, killed however the test ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// An OTLP/HTTP receiver: every body posted to `/v1/traces`.
async fn otlp_receiver() -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            received.lock().unwrap().push(body);
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, bodies)
}

/// Whether any exported span batch holds `needle` (span names and attribute values are plain
/// UTF-8 inside the protobuf).
fn exported(bodies: &Mutex<Vec<Bytes>>, needle: &str) -> bool {
    bodies.lock().unwrap().iter().any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_probes_json_logs_and_traces_of_the_real_binary() {
    let cp = control_plane().await.unwrap();
    let client = cp.admin().await.unwrap();
    let (otlp, bodies) = otlp_receiver().await;
    let id = unique_name("obs");
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.serving_pair().unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let (webhook, metrics) = (free_addr(), free_addr());

    let mut child = Command::new(env!("CARGO_BIN_EXE_evpn-operator"))
        .args(["--webhook-listen", &webhook.to_string(), "--metrics-listen", &metrics.to_string()])
        .arg(format!("--tls-cert-file={}", dir.join("tls.crt").display()))
        .arg(format!("--tls-key-file={}", dir.join("tls.key").display()))
        .args(["--lease-name", &id, "--identity", &id, "--system-mac", "02:00:00:00:00:02"])
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("EVPN_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr as it comes, so the pipe never fills and blocks the operator.
    let stderr = child.stderr.take().unwrap();
    let operator = Operator(child);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        })
    };
    let logged = || log.lock().unwrap().join("\n");

    // Alive at once, ready once the webhook serves with its caches listed.
    let alive = eventually(|| async { http_get(metrics, "/healthz").await.is_ok_and(|r| r.status == 200) }).await;
    assert!(alive.is_ok(), "/healthz never answered; the operator logged:\n{}", logged());
    let ready = eventually(|| async { http_get(metrics, "/readyz").await.is_ok_and(|r| r.status == 200) }).await;
    assert!(ready.is_ok(), "/readyz never turned ready; the operator logged:\n{}", logged());

    // The apiserver calls the webhook for objects with this process's label: a dry-run EVPN that
    // names a missing VTEP is denied by it.
    let label = "evpn.k8s.ovn.org/test-observability";
    let selector = LabelSelector { match_labels: Some([(label.to_owned(), id.clone())].into()), ..Default::default() };
    let client_config = WebhookClientConfig {
        url: Some(format!("https://{webhook}")),
        ca_bundle: Some(ByteString(ca.cert_pem.clone().into_bytes())),
        ..Default::default()
    };
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let configuration = evpn_webhook::configuration(&id, client_config, Some(selector));
    configs.patch(&id, &PatchParams::apply("evpn-tests").force(), &Patch::Apply(&configuration)).await.unwrap();
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
        "metadata": {"name": id, "labels": {label: id}},
        "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": "none"}, "vtep": "no-such-vtep", "macVRF": {}}
    }))
    .unwrap();
    let evpns: Api<DynamicObject> = Api::all_with(client.clone(), &kube::api::ApiResource::erase::<Evpn>(&()));
    let denied = eventually(|| async {
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        evpns.create(&dry_run, &probe).await.is_err_and(|e| e.to_string().contains("\"no-such-vtep\" does not exist"))
    })
    .await;
    configs.delete(&id, &DeleteParams::default()).await.unwrap();
    denied.expect("the webhook never judged the probe");

    // The controllers lead and run rounds; both registries are on the one port.
    let last = Mutex::new(String::new());
    eventually(|| async {
        let Ok(scraped) = http_get(metrics, "/metrics").await else { return false };
        let led = sample(&scraped.body, "evpn_operator_leader") == Some(1.0)
            && sample(&scraped.body, "evpn_operator_reconcile_rounds_total").is_some_and(|n| n >= 1.0);
        *last.lock().unwrap() = scraped.body;
        led
    })
    .await
    .unwrap_or_else(|_| panic!("the operator never led a round:\n{}\n{}", last.lock().unwrap(), logged()));
    let scraped = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(scraped.content_type.as_deref(), Some(evpn_telemetry::serve::OPENMETRICS));
    let denials = r#"evpn_webhook_admission_requests_total{kind="EVPN",operation="create",result="denied"}"#;
    assert!(sample(&scraped.body, denials).is_some_and(|n| n >= 1.0), "{}", scraped.body);
    // (Labelled families, such as the API writes, show once they have a sample.)
    for metric in [
        "# TYPE evpn_operator_reconcile_round_seconds histogram",
        "# TYPE evpn_operator_vnis_in_use gauge",
        "# TYPE evpn_operator_vtep_ips_in_use gauge",
        "# TYPE evpn_webhook_admission_duration_seconds histogram",
    ] {
        assert!(scraped.body.contains(metric), "{metric} missing:\n{}", scraped.body);
    }
    assert!(scraped.body.ends_with("# EOF\n"));

    // Spans of the round and of the admission request reach the collector.
    // (The denial's reason is an event of the admission span.)
    let wanted = ["evpn-operator", "reconcile_round", "admission", "no-such-vtep"];
    let spans = eventually(|| async { wanted.iter().all(|n| exported(&bodies, n)) }).await;
    let missing: Vec<_> = wanted.iter().filter(|n| !exported(&bodies, n)).collect();
    assert!(spans.is_ok(), "no exported span holds {missing:?}");

    // SIGTERM stops it cleanly, and every line it logged is a JSON object.
    let status = Command::new("kill").args(["-TERM", &operator.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    reader.join().unwrap();
    let mut operator = operator;
    assert!(operator.0.wait().unwrap().success(), "SIGTERM is a clean stop:\n{}", logged());
    let lines = log.lock().unwrap().clone();
    let logged: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(logged.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    assert!(logged.iter().any(|l| l["message"] == "admission webhook listening"), "{lines:#?}");
    let _ = std::fs::remove_dir_all(dir);
}
