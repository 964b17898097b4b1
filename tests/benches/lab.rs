//! `kubectl apply` of an EVPN to the first ping across the fabric, end to end: the lab of
//! `hack/lab.sh` (FRR TOR, two nodes), the control plane, the operator's controllers and one
//! release-built `evpn-agent` per node (`--resync-seconds 2`), BGP already Established.
//!
//!     cargo bench -p evpn-tests --bench lab
//!
//! Settings: EVPN_BENCH_ROUNDS (default 7), EVPN_TEST_CONTROL_PLANE (reuse a running control
//! plane, as the tests do). Needs root; brings the lab down before and after.
//!
//! Each round creates a fresh Layer2 EVPN (its own name and VNI) for one network. Before the
//! create, a pod namespace per node waits with its veth up but on no bridge; a watcher per node
//! polls every 10 ms for the EVPN's bridge and enslaves the pod's veth the moment it appears (what
//! a CNI does once the bridge exists). Right after the create returns, pod 1 pings pod 2 every
//! 10 ms until the first reply (ping is restarted when it gives up on unanswered ARP). The pods'
//! ARP retransmit time is 10 ms, so resolution is retried at the ping's pace instead of once a
//! second.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should panic")]

use std::process::Stdio;
use std::time::Duration;

use evpn_crds::Evpn;
use evpn_tests::apply;
use evpn_tests::lab::{Fabric, NODES, agent_binary, bench_main, link_exists, median_min_max_ms, ms};
use kube::api::Api;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

/// Polling period of every watcher (bridge, Ready).
const POLL: Duration = Duration::from_millis(10);
/// Longest a round may take before the benchmark gives up.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
const FIRST_VNI: u32 = 15_000;

fn main() {
    bench_main(7, run);
}

/// One round's times, from the moment the create call returned.
struct Round {
    create_call: Duration,
    ready: Duration,
    bridges: [Duration; 2],
    ping: Duration,
}

async fn run(rounds: usize) {
    // Builds target/release/evpn-agent from this tree before the clock matters.
    assert!(agent_binary().exists());

    let f = Fabric::up("frr").await;
    let network = f.name("ping");
    f.network(&network, "Layer2", json!(["10.70.0.0/24"])).await;
    let mut results = Vec::new();
    for round in 0..rounds {
        let name = f.name(&format!("p{round}"));
        let vni = FIRST_VNI + round as u32;
        let r = one_round(&f, &name, &network, vni).await;
        println!(
            "round {round}: create call {:.0} ms; from its return: Ready {:.0} ms, bridges {:.0} / {:.0} ms, first ping {:.0} ms",
            ms(r.create_call),
            ms(r.ready),
            ms(r.bridges[0]),
            ms(r.bridges[1]),
            ms(r.ping)
        );
        results.push(r);
        for (i, _) in NODES.iter().enumerate() {
            run_ok("ip", &["netns", "del", &pod(i)]).await;
        }
        f.delete_evpn(&name).await;
        for (lab_node, _) in NODES {
            let bridge = format!("evb{vni}");
            let start = Instant::now();
            while link_exists(lab_node, &bridge).await {
                assert!(start.elapsed() < ROUND_DEADLINE, "{bridge} stays on {lab_node}");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    let col = |f: &dyn Fn(&Round) -> Duration| median_min_max_ms(&results.iter().map(f).collect::<Vec<_>>());
    println!("\nEVPN apply to first ping, {rounds} rounds; median (min-max) in ms from the create call's return");
    println!("  create call itself:            {}", col(&|r| r.create_call));
    println!("  EVPN Ready:                    {}", col(&|r| r.ready));
    println!("  bridge on node 1:              {}", col(&|r| r.bridges[0]));
    println!("  bridge on node 2:              {}", col(&|r| r.bridges[1]));
    println!("  bridge on both nodes:          {}", col(&|r| r.bridges[0].max(r.bridges[1])));
    println!("  first ping reply:              {}", col(&|r| r.ping));
    println!("  first ping after both bridges: {}", col(&|r| r.ping.saturating_sub(r.bridges[0].max(r.bridges[1]))));
}

fn pod(i: usize) -> String {
    format!("evl-pp{}", i + 1)
}

/// The host end of pod `i`'s veth, in its node's namespace.
fn pod_port(i: usize) -> String {
    format!("pp{}", i + 1)
}

fn pod_addr(i: usize) -> String {
    format!("10.70.0.{}", 11 + i)
}

async fn one_round(f: &Fabric, name: &str, network: &str, vni: u32) -> Round {
    let bridge = format!("evb{vni}");
    for (i, (lab_node, _)) in NODES.iter().enumerate() {
        let (pod, port) = (pod(i), pod_port(i));
        let _ = Command::new("ip").args(["netns", "del", &pod]).output().await;
        run_ok("ip", &["netns", "add", &pod]).await;
        run_ok("ip", &["link", "add", "eth0", "netns", &pod, "type", "veth", "peer", "name", &port, "netns", lab_node])
            .await;
        run_ok("ip", &["-n", &pod, "addr", "add", &format!("{}/24", pod_addr(i)), "dev", "eth0"]).await;
        run_ok("ip", &["netns", "exec", &pod, "sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10"]).await;
        for dev in ["lo", "eth0"] {
            run_ok("ip", &["-n", &pod, "link", "set", dev, "up"]).await;
        }
        run_ok("ip", &["-n", lab_node, "link", "set", &port, "up"]).await;
    }
    let api: Api<Evpn> = Api::all(f.client.clone());
    let evpn = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name},
        "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": f.vtep,
        "macVRF": {"vni": vni}}});

    let called = Instant::now();
    apply(&f.client, &evpn).await.unwrap();
    let t0 = Instant::now();
    let create_call = t0 - called;

    let attach = |i: usize| {
        let (lab_node, bridge, port) = (NODES[i].0, bridge.clone(), pod_port(i));
        async move {
            while !link_exists(lab_node, &bridge).await {
                assert!(t0.elapsed() < ROUND_DEADLINE, "no {bridge} on {lab_node}");
                tokio::time::sleep(POLL).await;
            }
            let seen = t0.elapsed();
            run_ok("ip", &["-n", lab_node, "link", "set", &port, "master", &bridge]).await;
            seen
        }
    };
    let ready = async {
        loop {
            if api.get(name).await.is_ok_and(|e| is_ready(&e)) {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < ROUND_DEADLINE, "EVPN {name} not Ready");
            tokio::time::sleep(POLL).await;
        }
    };
    // iputils ping gives up after a few "Destination Host Unreachable" (ARP failed while the
    // bridge is missing), so it is started again until a reply line shows up.
    let ping = async {
        loop {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &pod(0), "ping", "-n", "-i", "0.01", "-w", "10"])
                .arg(pod_addr(1))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains(" bytes from ") {
                    let at = t0.elapsed();
                    let _ = child.kill().await;
                    return at;
                }
            }
            let _ = child.wait().await;
            assert!(t0.elapsed() < ROUND_DEADLINE, "no ping reply within {ROUND_DEADLINE:?}");
        }
    };
    let (ready, b1, b2, ping) = tokio::join!(ready, attach(0), attach(1), ping);
    Round { create_call, ready, bridges: [b1, b2], ping }
}

fn is_ready(e: &Evpn) -> bool {
    e.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && s.observed_generation == e.metadata.generation
    })
}

async fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().await.unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
