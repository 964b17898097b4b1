//! Scale: many EVPNs on many nodes against the real local apiserver.
//!
//!     cargo bench -p evpn-operator --bench scale
//!     # EVPN_SCALE_NODES (default 500), EVPN_SCALE_EVPNS (default 1000)
//!
//! Creates the nodes, one Managed VTEP selecting them all, and one Layer2 network per EVPN;
//! starts the `evpn-operator` binary (controllers only) as its own process; simulated agents
//! (`evpn_tests::simulated`, one pair of watches in this process for all nodes) report every
//! node's network sets applied as soon as they see them. Then it creates every EVPN at once and measures the time until all are Ready, the
//! operator's API writes by kind (from its metrics), the agents' writes, and the operator's peak
//! RSS, and sets the writes beside what one object per (EVPN, node) would need.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should stop")]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evpn_crds::Evpn;
use evpn_tests::simulated::Agents;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The operator process, killed however the bench ends (a failed run must not leave it behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (node_count, evpn_count) = (env_or("EVPN_SCALE_NODES", 500), env_or("EVPN_SCALE_EVPNS", 1000));
    let cp = evpn_tests::control_plane().await.expect("a control plane (hack/control-plane.sh install)");
    let client = cp.admin().await.unwrap();
    let id = evpn_tests::unique_name("scale");
    println!("{node_count} nodes, {evpn_count} EVPNs, run {id}");

    let setup = Instant::now();
    let nodes: Vec<String> = (0..node_count).map(|i| format!("{id}-n{i}")).collect();
    let labels = json!({"evpn-scale": id});
    run_all(nodes.iter().map(|n| {
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": labels}});
        let client = client.clone();
        async move { evpn_tests::apply(&client, &obj).await.map(drop) }
    }))
    .await;
    let vtep = format!("{id}-vtep");
    evpn_tests::apply(
        &client,
        &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep},
        "spec": {"cidrs": ["100.64.0.0/16"], "nodeSelector": {"matchLabels": {"evpn-scale": id}},
                 "vniRanges": [{"start": 5_000_000, "end": 5_999_999}],
                 "bgp": {"asn": 65001, "neighbors": [{"address": "100.127.255.254", "asn": 65000}]}}}),
    )
    .await
    .unwrap();
    let networks: Vec<String> = (0..evpn_count).map(|i| format!("{id}-net{i}")).collect();
    run_all(networks.iter().enumerate().map(|(i, n)| {
        let obj = json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork", "metadata": {"name": n},
            "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}});
        let client = client.clone();
        // The names are too long for VRFs: OVN-Kubernetes would name them by network ID.
        async move {
            evpn_tests::apply(&client, &obj).await?;
            evpn_tests::annotate_network_id(&client, n, 100 + i as u32).await
        }
    }))
    .await;
    println!("setup: {:.1} s", setup.elapsed().as_secs_f64());

    let agent_writes = Arc::new(AtomicU64::new(0));
    let simulated =
        Agents { nodes: nodes.iter().cloned().collect(), writes: agent_writes.clone(), ..Agents::default() };
    let agents = tokio::spawn(simulated.run(client.clone()));
    let metrics_port = free_port();
    let operator = Command::new(env!("CARGO_BIN_EXE_evpn-operator"))
        .args(["--no-webhook", "--lease-name", &id, "--identity", "scale-bench", "--system-mac", "02:00:00:00:00:01"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    // Let it take the lease and settle on what already exists before the clock starts.
    let leading = Instant::now();
    while scrape(metrics_port, "evpn_operator_leader").await != Some(1.0) {
        assert!(leading.elapsed() < Duration::from_secs(60), "the operator never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes_before = writes(metrics_port).await;
    let agent_writes_before = agent_writes.load(Ordering::Relaxed);

    let t0 = Instant::now();
    let names: Vec<String> = (0..evpn_count).map(|i| format!("{id}-e{i}")).collect();
    let evpns: Api<Evpn> = Api::all(client.clone());
    run_all(names.iter().zip(&networks).map(|(name, net)| {
        let obj: Evpn = serde_json::from_value(
            json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name},
            "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": net}, "vtep": vtep, "macVRF": {}}}),
        )
        .unwrap();
        let evpns = evpns.clone();
        async move { evpns.create(&PostParams::default(), &obj).await.map(drop).map_err(anyhow::Error::from) }
    }))
    .await;
    let created = t0.elapsed();
    let wanted: BTreeSet<&String> = names.iter().collect();
    let ready = loop {
        let list = evpns.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|e| wanted.contains(&e.name_any()))
            .filter(|e| {
                e.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == "True" && c.observed_generation == e.metadata.generation
                    })
                })
            })
            .count();
        if ready == evpn_count {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "only {ready} of {evpn_count} Ready after 10 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let writes_after = writes(metrics_port).await;
    let rss = peak_rss_mib(operator.0.id());
    drop(operator);
    agents.abort();

    println!(
        "\ncreated {evpn_count} EVPNs in {:.1} s; all Ready {:.1} s after the first create",
        created.as_secs_f64(),
        ready.as_secs_f64()
    );
    println!("operator peak RSS: {rss:.0} MiB\n");
    println!("| writes | count |\n|---|---|");
    let mut total = 0.0;
    for (kind, after) in &writes_after {
        let n = after - writes_before.iter().find(|(k, _)| k == kind).map_or(0.0, |(_, v)| *v);
        total += n;
        println!("| operator {kind} | {n:.0} |");
    }
    println!("| operator total | {total:.0} |");
    println!(
        "| simulated agents (EVPNNodeState/status) | {} |",
        agent_writes.load(Ordering::Relaxed) - agent_writes_before
    );
    println!("| one object per (EVPN, node), creates alone | {} |", node_count * evpn_count);
}

async fn run_all<F>(tasks: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = Result<(), anyhow::Error>>,
{
    let results: Vec<_> = futures::stream::iter(tasks).buffer_unordered(64).collect().await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        panic!("setup write failed: {e:#}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn metrics_text(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

async fn scrape(port: u16, metric: &str) -> Option<f64> {
    let text = metrics_text(port).await?;
    text.lines().find(|l| l.starts_with(metric) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
}

/// Successful operator writes by kind.
async fn writes(port: u16) -> Vec<(String, f64)> {
    let text = metrics_text(port).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("evpn_operator_api_writes_total{") && l.contains("result=\"ok\""))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?.to_owned();
            Some((kind, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
