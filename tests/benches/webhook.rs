//! Webhook throughput and latency against a null server on the same stack.
//!
//!     cargo bench -p evpn-tests --bench webhook
//!
//! Two server processes on loopback, both axum + hyper + rustls through the webhook's own TLS
//! accept loop: the webhook with 1,000 EVPNs in its index, and a null server that decodes the
//! review (it must, to answer its uid) and allows it without validating. A load process drives
//! them in turn with the same 2.3 KB EVPN CREATE review, which passes every rule, over HTTP/1.1
//! keep-alive and over HTTP/2, alternating servers for several rounds so drift hits both alike.
//! Settings: EVPN_BENCH_SECONDS (per run, default 5), EVPN_BENCH_ROUNDS (default 2).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should stop")]

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use evpn_crds::common::NetworkKind;
use evpn_crds::{Evpn, Vtep};
use evpn_tests::TestCa;
use evpn_webhook::index::{GatewayMode, Index, NetworkFacts, NodeFacts};
use evpn_webhook::rules::Policy;
use evpn_webhook::server::{State, router, serve_tls};
use evpn_webhook::tls::Certificates;
use http_body_util::{BodyExt, Full};
use serde_json::json;

const EVPNS_IN_INDEX: u32 = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2], &args[3], &args[4]);
    }
    // `cargo bench` passes --bench; anything else is not for us.
    let seconds: u64 = env_or("EVPN_BENCH_SECONDS", 5);
    let rounds: u32 = env_or("EVPN_BENCH_ROUNDS", 2);
    let dir = std::env::temp_dir().join(format!("evpn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.serving_pair().unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let dir_str = dir.to_str().unwrap();
    let null = Server::spawn("null", dir_str);
    let webhook = Server::spawn("webhook", dir_str);
    let body = Bytes::from(review_body());
    println!(
        "review body: {} bytes; {EVPNS_IN_INDEX} EVPNs in the webhook's index; {seconds} s per run, {rounds} rounds",
        body.len()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut table = Vec::new();
    // Saturation shows what validation costs in throughput; a single client in turn shows the
    // latency of one request with no queue in front of it.
    let shapes = [
        (Protocol::Http1, Shape { connections: 32, streams: 1 }),
        (Protocol::Http2, Shape { connections: 4, streams: 16 }),
        (Protocol::Http1, Shape { connections: 1, streams: 1 }),
        (Protocol::Http2, Shape { connections: 1, streams: 1 }),
    ];
    for (protocol, shape) in shapes {
        let mut results: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, server) in [&null, &webhook].into_iter().enumerate() {
                let r = runtime.block_on(load(
                    server.port,
                    &ca,
                    protocol,
                    shape,
                    body.clone(),
                    Duration::from_secs(seconds),
                ));
                eprintln!(
                    "{protocol:?} {shape} {:<8} {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
                    server.name, r.rps, r.p50_us, r.p99_us, r.errors
                );
                results[i].push(r);
            }
        }
        let [null_runs, hook_runs] = results;
        let (n, w) = (RunResult::median(&null_runs), RunResult::median(&hook_runs));
        table.push(format!(
            "| {protocol:?} | {shape} | {:.0} | {} | {} | {:.0} | {} | {} | {:.1}% |",
            n.rps,
            n.p50_us,
            n.p99_us,
            w.rps,
            w.p50_us,
            w.p99_us,
            100.0 * (1.0 - w.rps / n.rps)
        ));
    }
    println!(
        "\n| protocol | clients | null req/s | null p50 µs | null p99 µs | webhook req/s | webhook p50 µs | webhook p99 µs | throughput cost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    drop((null, webhook));
    let _ = std::fs::remove_dir_all(dir);
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A server child process, killed when dropped.
struct Server {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Server {
    fn spawn(name: &'static str, dir: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["serve", name, dir, &EVPNS_IN_INDEX.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Self { name, port: line.trim().parse().expect("the server printed its port"), child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child process: serve until the parent goes away.
fn serve(kind: &str, dir: &str, evpns: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = std::path::Path::new(dir);
        let certs = Certificates::load(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
        let app = match kind {
            "null" => axum::Router::new().route("/validate/evpns", axum::routing::post(null_handler)),
            _ => router(Arc::new(State::with_index(Policy::default(), populated_index(evpns.parse().unwrap())))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        // Exit when the parent closes our stdin (it died or finished).
        let parent_gone = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        tokio::select! {
            () = serve_tls(listener, certs.server_config().unwrap(), app, Default::default(), Default::default()) => {}
            _ = parent_gone => {}
        }
    });
}

/// The null server: read the review, answer "allowed" for its uid.
async fn null_handler(body: Body) -> axum::response::Response {
    let bytes = axum::body::to_bytes(body, 4 << 20).await.unwrap_or_default();
    let review: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], "allowed": true}});
    ([(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
}

fn populated_index(evpns: u32) -> Index {
    let mut ix = Index::default();
    ix.networks_api_present = true;
    let vtep: Vtep = serde_json::from_value(
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": "fabric"},
        "spec": {"cidrs": ["198.18.0.0/16"], "vniRanges": [{"start": 1, "end": 100000}],
                 "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}),
    )
    .unwrap();
    ix.apply_vtep(&vtep);
    for n in 0..50 {
        let facts = NodeFacts { labels: Default::default(), gateway_mode: Some(GatewayMode::Local) };
        ix.set_node(format!("worker-{n}"), Some(facts));
    }
    for i in 0..evpns {
        let name = format!("tenant-{i}");
        let facts = NetworkFacts {
            topology: "Layer2".into(),
            role: Some("Primary".into()),
            transport: None,
            subnets: Vec::new(),
            mtu: None,
        };
        ix.set_network((NetworkKind::ClusterUserDefinedNetwork, None, name.clone()), Some(facts));
        let evpn: Evpn = serde_json::from_value(json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name},
            "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": name}, "vtep": "fabric", "macVRF": {"vni": 10000 + i}}}))
        .unwrap();
        ix.apply_evpn(&evpn);
    }
    ix
}

/// An EVPN CREATE review as an apiserver sends it (metadata and managedFields included), for an
/// object that passes every rule, so the webhook does all its work.
fn review_body() -> Vec<u8> {
    let object = json!({
        "apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
        "metadata": {
            "name": "tenant-new", "uid": "3f1c2a0e-8f7d-4c43-9a56-0d5c3b7f1e21", "generation": 1,
            "creationTimestamp": "2026-11-24T06:00:00Z",
            "labels": {"app.kubernetes.io/part-of": "tenant-new", "tenant": "new"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"evpn.k8s.ovn.org/v1alpha1\",\"kind\":\"EVPN\",\"metadata\":{\"annotations\":{},\"name\":\"tenant-new\"},\"spec\":{\"macVRF\":{\"routeTargets\":{\"export\":[\"65001:60000\"],\"import\":[\"65001:60000\"]},\"vni\":60000},\"network\":{\"kind\":\"ClusterUserDefinedNetwork\",\"name\":\"tenant-7\"},\"vtep\":\"fabric\"}}\n"},
            "managedFields": [{"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "fieldsType": "FieldsV1", "manager": "kubectl-client-side-apply",
                               "operation": "Update", "time": "2026-11-24T06:00:00Z",
                               "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                                            "f:labels": {".": {}, "f:app.kubernetes.io/part-of": {}, "f:tenant": {}}},
                                            "f:spec": {".": {}, "f:macVRF": {".": {}, "f:routeTargets": {".": {}, "f:export": {}, "f:import": {}}, "f:vni": {}},
                                                       "f:network": {".": {}, "f:kind": {}, "f:name": {}}, "f:vtep": {}}}}]
        },
        "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": "tenant-7"}, "vtep": "fabric",
                 "macVRF": {"vni": 60000, "routeTargets": {"import": ["65001:60000"], "export": ["65001:60000"]}}}
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d7c6a3e-2b8f-4a91-b1f0-6e9d0c2a4b55",
            "kind": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "kind": "EVPN"},
            "resource": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "resource": "evpns"},
            "requestKind": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "kind": "EVPN"},
            "requestResource": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "resource": "evpns"},
            "name": "tenant-new", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "uid": "aws-iam-authenticator:123456789012:AIDAEXAMPLE",
                         "groups": ["system:masters", "system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
        }
    }))
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
}

/// How many requests are in flight: connections, each with this many concurrent streams.
#[derive(Clone, Copy, Debug)]
struct Shape {
    connections: usize,
    streams: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.connections, self.streams)
    }
}

#[derive(Clone, Copy, Debug)]
struct RunResult {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

impl RunResult {
    /// The run with the median throughput.
    fn median(runs: &[RunResult]) -> RunResult {
        let mut sorted = runs.to_vec();
        sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        sorted[sorted.len() / 2]
    }
}

async fn connect(port: u16, ca: &TestCa, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    ca.connector(alpn).unwrap().connect(name, tcp).await.unwrap()
}

fn request(body: Bytes) -> http::Request<Full<Bytes>> {
    http::Request::post("/validate/evpns")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Full::new(body))
        .unwrap()
}

/// One request sender per concurrent stream of requests.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(&mut self, body: Bytes) -> bool {
        let resp = match self {
            Self::Http1(s) => s.send_request(request(body)).await,
            Self::Http2(s) => s.send_request(request(body)).await,
        };
        match resp {
            Ok(resp) if resp.status().is_success() => resp.into_body().collect().await.is_ok(),
            _ => false,
        }
    }
}

/// Drives one server for `duration` with `shape` requests in flight (HTTP/1.1 has one stream per
/// keep-alive connection; the apiserver multiplexes HTTP/2 over few connections).
async fn load(port: u16, ca: &TestCa, protocol: Protocol, shape: Shape, body: Bytes, duration: Duration) -> RunResult {
    let mut senders = Vec::new();
    match protocol {
        Protocol::Http1 => {
            for _ in 0..shape.connections {
                let io = hyper_util::rt::TokioIo::new(connect(port, ca, b"http/1.1").await);
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                senders.push(Sender::Http1(sender));
            }
        }
        Protocol::Http2 => {
            for _ in 0..shape.connections {
                let io = hyper_util::rt::TokioIo::new(connect(port, ca, b"h2").await);
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                senders.extend((0..shape.streams).map(|_| Sender::Http2(sender.clone())));
            }
        }
    }
    // The clock starts once every connection is up.
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let body = body.clone();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if sender.send(body.clone()).await {
                        latencies.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (latencies, e) = t.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    RunResult { rps: all.len() as f64 / elapsed, p50_us: pct(0.50), p99_us: pct(0.99), errors }
}
