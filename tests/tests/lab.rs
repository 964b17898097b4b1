//! End to end: the lab fabric of `hack/lab.sh` (a top-of-rack and two nodes as network
//! namespaces, each node with its own FRR), the real control plane, the operator, and one real
//! `evpn-agent` process per node. Users' view: objects go in through the API, packets come out
//! of the fabric.
//!
//! Needs root and network namespaces; without them every test says so and passes as skipped.
//! The lab is one set of namespaces, so the tests take turns.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot build its input should panic")]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::{Evpn, EvpnNodeState};
use evpn_operator::controller::Config;
use evpn_operator::leader::Election;
use evpn_operator::metrics::Metrics;
use evpn_tests::{apply, control_plane, repo_root, unique_name};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a fabric condition (BGP, routes, pings) may take before the test fails.
const FABRIC_DEADLINE: Duration = Duration::from_secs(60);

/// Nodes of the lab: namespace `evl-nN` is Kubernetes node `worker-N`.
const NODES: [(&str, &str); 2] = [("evl-n1", "worker-1"), ("evl-n2", "worker-2")];

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root (network namespaces, FRR)".into());
    }
    let probe = std::process::Command::new("ip").args(["netns", "list"]).output();
    match probe {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`ip netns` does not work here: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

macro_rules! require_lab {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The lab's namespaces and daemons; torn down when dropped.
struct Lab {
    script: PathBuf,
}

impl Lab {
    async fn up(tor: &str) -> Self {
        let lab = Lab { script: repo_root().join("hack/lab.sh") };
        lab.sh(&["down"]).await;
        let out = lab.sh(&["up", tor]).await;
        assert!(out.status.success(), "lab.sh up {tor} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    async fn sh(&self, args: &[&str]) -> Output {
        Command::new("bash").arg(&self.script).args(args).stdin(Stdio::null()).output().await.unwrap()
    }

    async fn ok(&self, args: &[&str]) {
        let out = self.sh(args).await;
        assert!(
            out.status.success(),
            "lab.sh {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn vtysh(&self, node: &str, cmd: &str) -> String {
        String::from_utf8_lossy(&self.sh(&["vtysh", node, cmd]).await.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // EVPN_LAB_KEEP=1 leaves a failed run's fabric up to look at (`hack/lab.sh status`).
        if std::env::var_os("EVPN_LAB_KEEP").is_some() {
            return;
        }
        let _ = std::process::Command::new("bash").arg(&self.script).arg("down").output();
    }
}

/// Runs `cmd` inside network namespace `ns`.
async fn in_ns(ns: &str, cmd: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).stdin(Stdio::null()).output().await.unwrap()
}

async fn ping(from: &str, to: &str) -> bool {
    in_ns(from, &["ping", "-c1", "-W1", to]).await.status.success()
}

/// Polls `check` until it holds or [`FABRIC_DEADLINE`] passes; panics naming `what`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            eprintln!("ok   {what} ({:.2}s)", start.elapsed().as_secs_f64());
            return;
        }
        assert!(start.elapsed() < FABRIC_DEADLINE, "{what}: not within {FABRIC_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that `check` keeps failing for `window` (isolation: something must NOT happen).
async fn never<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < window {
        assert!(!check().await, "{what}: happened, and must not");
    }
    eprintln!("ok   {what} (held for {window:?})");
}

/// The `evpn-agent` binary next to this test binary, brought up to date first: `cargo test`
/// builds another package's tests but not its binary.
fn agent_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo).args(["build", "-p", "evpn-agent"]).status().unwrap();
        assert!(status.success(), "building evpn-agent");
    });
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("evpn-agent")
}

/// One node's agent, killed when dropped.
struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    fn start(lab_node: &str, node: &str) -> Self {
        let cp_dir = std::env::var("EVPN_TEST_CONTROL_PLANE").ok();
        let kubeconfig = match cp_dir {
            Some(d) => PathBuf::from(d).join(format!("node-{node}.kubeconfig")),
            None => control_plane_dir().join(format!("node-{node}.kubeconfig")),
        };
        let log = std::env::temp_dir().join(format!("evpn-lab-agent-{node}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(agent_binary())
            .args(["--node-name", node, "--netns", &format!("/run/netns/{lab_node}")])
            .args(["--vrf-backend", "netns", "--vrf-netns-dir", &format!("/var/run/frr/{lab_node}/netns")])
            .args(["--frr-pathspace", lab_node, "--resync-seconds", "2"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,evpn_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        AgentProcess { child }
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn control_plane_dir() -> PathBuf {
    std::env::temp_dir().join(format!("evpn-operator/test-{}", std::process::id()))
}

/// The operator's controllers, in this process; aborted when dropped.
struct Operator(JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn operator(client: &Client) -> Operator {
    let election = Election {
        namespace: "evpn-system".into(),
        name: unique_name("lab-lease"),
        identity: "lab".into(),
        duration: Duration::from_secs(5),
        renew: Duration::from_secs(1),
    };
    let config =
        Config { debounce: Duration::from_millis(20), max_delay: Duration::from_millis(200), ..Config::default() };
    Operator(tokio::spawn(evpn_operator::run_controllers(
        client.clone(),
        election,
        config,
        Arc::new(Metrics::default()),
    )))
}

/// Everything the scenarios share: the lab, the cluster side, the agents.
struct Fabric {
    lab: Lab,
    client: Client,
    tor: &'static str,
    vtep: String,
    agents: Vec<Option<AgentProcess>>,
    _operator: Operator,
}

impl Fabric {
    async fn up(tor: &'static str) -> Self {
        let lab = Lab::up(tor).await;
        let cp = control_plane().await.unwrap();
        let client = cp.admin().await.unwrap();
        let id = unique_name("lab");
        for (_, node) in NODES {
            apply(
                &client,
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"evpn-lab": id}}}),
            )
            .await
            .unwrap();
        }
        let vtep = format!("{id}-vtep");
        apply(
            &client,
            &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep}, "spec": {
                "cidrs": ["198.18.0.0/24"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-lab": id}},
                "vniRanges": [{"start": 10000, "end": 19999}],
                "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}),
        )
        .await
        .unwrap();
        let operator = operator(&client);
        let agents = NODES.iter().map(|(lab_node, node)| Some(AgentProcess::start(lab_node, node))).collect();
        let fabric = Fabric { lab, client, tor: &tor[..1], vtep, agents, _operator: operator };
        fabric.remove_leftovers().await;
        for (lab_node, node) in NODES {
            let states: Api<EvpnNodeState> = Api::all(fabric.client.clone());
            until(&format!("{node}: BGP session to the TOR Established, as its agent reports"), || async {
                let Ok(s) = states.get(node).await else { return false };
                s.status.is_some_and(|st| st.bgp_sessions.iter().any(|b| b.state == "Established"))
            })
            .await;
            let _ = lab_node;
        }
        fabric
    }

    /// This fabric's EVPNs, at the end of a test and left over from an earlier run that stopped
    /// half-way: they would hold VNIs and, re-applied with fewer fields, trip v1.20's server-side
    /// apply (which leaves `null` behind).
    async fn remove_leftovers(&self) {
        let api: Api<Evpn> = Api::all(self.client.clone());
        let suffix = format!("-{}", self.tor);
        for e in api.list(&Default::default()).await.unwrap().items {
            let name = e.metadata.name.unwrap_or_default();
            if name.ends_with(&suffix) && e.spec.vtep.starts_with("lab-") {
                self.delete_evpn(&name).await;
            }
        }
    }

    async fn network(&self, name: &str, topology: &str, subnets: Value) {
        let section = topology.to_lowercase();
        apply(
            &self.client,
            &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork",
            "metadata": {"name": name}, "spec": {"namespaceSelector": {}, "network": {"topology": topology,
            section: {"role": "Primary", "subnets": subnets}}}}),
        )
        .await
        .unwrap();
    }

    /// Applies an EVPN and waits until it is Ready on every node; returns its status.
    async fn evpn(&self, name: &str, network: &str, vrfs: Value) -> Evpn {
        let mut spec = json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": self.vtep});
        for (k, v) in vrfs.as_object().unwrap() {
            spec[k] = v.clone();
        }
        apply(
            &self.client,
            &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .unwrap();
        self.ready(name).await
    }

    async fn ready(&self, name: &str) -> Evpn {
        let api: Api<Evpn> = Api::all(self.client.clone());
        let is_ready = |e: &Evpn| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.observed_generation == e.metadata.generation
            })
        };
        until(&format!("EVPN {name} Ready on every node"), || async {
            api.get(name).await.is_ok_and(|e| is_ready(&e))
        })
        .await;
        api.get(name).await.unwrap()
    }

    /// A Layer3 network `name` with subnet 10.`octet`.0.0/16, its VRF on every node (as
    /// OVN-Kubernetes would make it), and on node N a routed host `evl-<name>-hN` at
    /// 10.`octet`.N.10/24. Returns the VRF name.
    async fn layer3_with_hosts(&self, name: &str, octet: u8) -> String {
        self.network(name, "Layer3", json!([{"cidr": format!("10.{octet}.0.0/16"), "hostSubnet": 24}])).await;
        let vrf = name.chars().take(15).collect::<String>();
        for (i, (lab_node, _)) in NODES.iter().enumerate() {
            let n = i + 1;
            let host = format!("evl-{name}-h{n}");
            self.lab.ok(&["vrf", lab_node, &vrf]).await;
            let (addr, gw) = (format!("10.{octet}.{n}.10/24"), format!("10.{octet}.{n}.1"));
            self.lab.ok(&["host", lab_node, &vrf, &host, &addr, &gw]).await;
        }
        vrf
    }

    /// Names stay short: a network's name is its VRF's name on the nodes (15 characters).
    fn name(&self, short: &str) -> String {
        format!("{short}-{}", self.tor)
    }

    async fn delete_evpn(&self, name: &str) {
        let api: Api<Evpn> = Api::all(self.client.clone());
        api.delete(name, &DeleteParams::default()).await.unwrap();
        until(&format!("EVPN {name} gone (finalizer released after every node removed it)"), || async {
            matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
        })
        .await;
    }
}

fn mac_vni(e: &Evpn) -> u32 {
    e.status.as_ref().and_then(|s| s.mac_vrf.as_ref()).map(|v| v.vni).expect("a MAC-VNI in the status")
}

fn ip_vni(e: &Evpn) -> u32 {
    e.status.as_ref().and_then(|s| s.ip_vrf.as_ref()).map(|v| v.vni).expect("an IP-VNI in the status")
}

fn vrf_name(e: &Evpn) -> String {
    e.status.as_ref().and_then(|s| s.vrf_name.clone()).expect("a VRF name in the status")
}

async fn link_exists(ns: &str, dev: &str) -> bool {
    Command::new("ip").args(["-n", ns, "link", "show", dev]).output().await.is_ok_and(|o| o.status.success())
}

/// Captures one VXLAN packet on the TOR's port towards node 1 (a bridge device does not see the
/// unicast it switches between ports) and returns tcpdump's line for it.
async fn capture_vxlan(lab_ns: &str, trigger_from: &str, trigger_to: &str) -> String {
    let dump = Command::new("ip")
        .args(["netns", "exec", lab_ns, "timeout", "10", "tcpdump", "-l", "-n", "-c", "1", "-i", "n1"])
        .args(["udp", "port", "4789"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut dump = dump;
    // tcpdump needs a moment to open the socket; keep pinging until it caught one packet.
    let pinger = async {
        loop {
            let _ = ping(trigger_from, trigger_to).await;
        }
    };
    let out = tokio::select! {
        out = async { dump.wait().await.map(|_| ()) } => out,
        _ = pinger => unreachable!(),
    };
    out.unwrap();
    let mut text = String::new();
    if let Some(mut stdout) = dump.stdout.take() {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut text).await.unwrap();
    }
    text
}

#[tokio::test]
async fn fabric_with_an_frr_tor() {
    require_lab!();
    let _turn = TURN.lock().await;
    let mut f = Fabric::up("frr").await;

    // --- L2: a MAC-VRF across two nodes.
    let blue = f.name("blue");
    f.network(&blue, "Layer2", json!(["10.10.0.0/24"])).await;
    let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
    let vni = mac_vni(&evpn);
    let bridge = format!("evb{vni}");
    f.lab.ok(&["pod", "evl-n1", "evl-blue1", &bridge, "10.10.0.11/24"]).await;
    f.lab.ok(&["pod", "evl-n2", "evl-blue2", &bridge, "10.10.0.12/24"]).await;
    until("L2: blue1 -> blue2 ping across the fabric", || ping("evl-blue1", "10.10.0.12")).await;
    let packet = capture_vxlan("evl-tor", "evl-blue1", "10.10.0.12").await;
    assert!(packet.contains(&format!("vni {vni}")), "the underlay carries VXLAN with VNI {vni}: {packet}");
    until("L2: type-3 routes of both VTEPs at the TOR", || async {
        let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type multicast").await;
        routes.contains("[3]:[0]:[32]:[198.18.0.1]") && routes.contains("[3]:[0]:[32]:[198.18.0.2]")
    })
    .await;
    let mac2 = String::from_utf8_lossy(&in_ns("evl-blue2", &["cat", "/sys/class/net/eth0/address"]).await.stdout)
        .trim()
        .to_owned();
    until("L2: type-2 route of blue2's MAC at the TOR", || async {
        f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type macip").await.contains(&format!("[{mac2}]"))
    })
    .await;

    // --- Overlapping tenants: cyan reuses blue's subnet, on its own MAC-VRF.
    let cyan = f.name("cyan");
    f.network(&cyan, "Layer2", json!(["10.10.0.0/24"])).await;
    let cyan_evpn = f.evpn(&cyan, &cyan, json!({"macVRF": {}})).await;
    let cyan_bridge = format!("evb{}", mac_vni(&cyan_evpn));
    f.lab.ok(&["pod", "evl-n1", "evl-cyan1", &cyan_bridge, "10.10.0.21/24"]).await;
    f.lab.ok(&["pod", "evl-n2", "evl-cyan2", &cyan_bridge, "10.10.0.22/24"]).await;
    until("overlap: cyan1 -> cyan2 inside cyan", || ping("evl-cyan1", "10.10.0.22")).await;
    until("overlap: blue1 -> blue2 inside blue still", || ping("evl-blue1", "10.10.0.12")).await;
    never("overlap: blue1 reaches cyan2 (another tenant)", Duration::from_secs(3), || ping("evl-blue1", "10.10.0.22"))
        .await;
    never("overlap: cyan1 reaches blue2 (another tenant)", Duration::from_secs(3), || ping("evl-cyan1", "10.10.0.12"))
        .await;

    // --- L3: an IP-VRF with a routed subnet per node (type-5).
    let red = f.name("red");
    let vrf = f.layer3_with_hosts(&red, 20).await;
    let red_evpn = f.evpn(&red, &red, json!({"ipVRF": {}})).await;
    assert_eq!(vrf_name(&red_evpn), vrf);
    until("L3: type-5 routes of both node subnets at the TOR", || async {
        let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
        routes.contains("[5]:[0]:[24]:[10.20.1.0]") && routes.contains("[5]:[0]:[24]:[10.20.2.0]")
    })
    .await;
    until("L3: red-h1 -> red-h2 routed over the L3VNI", || ping("evl-red-f-h1", "10.20.2.10")).await;

    // --- Route targets decide the VPN: changing them moves a network live, traffic follows.
    let custom = "65001:777";
    let moved = json!({"ipVRF": {"routeTargets": {"import": [custom], "export": [custom]}}});
    let _ = f.evpn(&red, &red, moved).await;
    until("VPNs: the TOR sees red's type-5 routes with the new route target only", || async {
        let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
        routes.contains(&format!("RT:{custom}")) && !routes.contains(&format!("RT:65001:{} ", ip_vni(&red_evpn)))
    })
    .await;
    until("VPNs: red-h1 -> red-h2 still routed in the new VPN", || ping("evl-red-f-h1", "10.20.2.10")).await;
    let green = f.name("green");
    f.network(&green, "Layer3", json!([{"cidr": "10.30.0.0/16", "hostSubnet": 24}])).await;
    let green_vrf = green.chars().take(15).collect::<String>();
    for (lab_node, _) in NODES {
        f.lab.ok(&["vrf", lab_node, &green_vrf]).await;
    }
    let green_evpn = f.evpn(&green, &green, json!({"ipVRF": {}})).await;
    let green_ns = format!("evl-n1-{green_vrf}");
    let has_red_route = || async {
        let out = Command::new("ip").args(["-n", &green_ns, "route", "show", "10.20.2.0/24"]).output().await.unwrap();
        !out.stdout.is_empty()
    };
    never("VPNs: green (its own VPN) learns red's prefixes", Duration::from_secs(2), has_red_route).await;
    let green_rt = format!("65001:{}", ip_vni(&green_evpn));
    let _ = f
        .evpn(&green, &green, json!({"ipVRF": {"routeTargets": {"import": [green_rt, custom], "export": [green_rt]}}}))
        .await;
    until("VPNs: importing red's route target brings red's prefixes into green's VRF", has_red_route).await;

    // --- Faults. FRR restarted: the agent puts the configuration back.
    f.lab.ok(&["restart-frr", "evl-n2"]).await;
    until("fault: after FRR restarts on n2, blue1 -> blue2 works again", || ping("evl-blue1", "10.10.0.12")).await;
    until("fault: after FRR restarts on n2, red-h1 -> red-h2 works again", || ping("evl-red-f-h1", "10.20.2.10")).await;
    until("fault: after FRR restarts on n2, cyan1 -> cyan2 works again", || ping("evl-cyan1", "10.10.0.22")).await;

    // The agent restarted while traffic flows: not one packet lost.
    let pinger =
        tokio::spawn(async { in_ns("evl-blue1", &["ping", "-c", "60", "-i", "0.05", "-W", "1", "10.10.0.12"]).await });
    if let Some(agent) = f.agents[0].take() {
        agent.kill().await;
    }
    f.agents[0] = Some(AgentProcess::start(NODES[0].0, NODES[0].1));
    let out = pinger.await.unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(" 0% packet loss"), "ping during the agent restart lost packets: {summary}");
    eprintln!("ok   fault: agent restarted under traffic, 0% loss");

    // A network that cannot be built on a node fails alone, visibly, and the others keep working.
    let broken = f.name("broken");
    f.network(&broken, "Layer3", json!([{"cidr": "10.40.0.0/16", "hostSubnet": 24}])).await;
    apply(
        &f.client,
        &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": broken},
        "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": broken}, "vtep": f.vtep, "ipVRF": {}}}),
    )
    .await
    .unwrap();
    let evpns: Api<Evpn> = Api::all(f.client.clone());
    until("fault: the EVPN whose VRF exists nowhere is not Ready and names the nodes and the reason", || async {
        let Ok(e) = evpns.get(&broken).await else { return false };
        e.status.is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False")
                && s.failed_nodes.iter().any(|n| n.reason == "VrfNotFound")
        })
    })
    .await;
    until("fault: blue still forwards beside the broken network", || ping("evl-blue1", "10.10.0.12")).await;
    until("fault: red still routes beside the broken network", || ping("evl-red-f-h1", "10.20.2.10")).await;
    f.delete_evpn(&broken).await;

    // --- Deletion removes devices, FRR configuration and routes everywhere.
    f.delete_evpn(&blue).await;
    for (lab_node, _) in NODES {
        until(&format!("delete: {bridge} gone on {lab_node}"), || async { !link_exists(lab_node, &bridge).await })
            .await;
        until(&format!("delete: VNI {vni} gone from FRR on {lab_node}"), || async {
            !f.lab.vtysh(lab_node, "show running-config").await.contains(&format!(" vni {vni}\n"))
        })
        .await;
    }
    until("delete: no route of VNI's VTEPs left at the TOR for blue's MACs", || async {
        !f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type macip").await.contains(&format!("[{mac2}]"))
    })
    .await;
    until("delete: cyan unaffected", || ping("evl-cyan1", "10.10.0.22")).await;
    f.remove_leftovers().await;
}

#[tokio::test]
async fn fabric_with_a_gobgp_tor() {
    require_lab!();
    let _turn = TURN.lock().await;
    let f = Fabric::up("gobgp").await;

    let blue = f.name("blue");
    f.network(&blue, "Layer2", json!(["10.50.0.0/24"])).await;
    let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
    let bridge = format!("evb{}", mac_vni(&evpn));
    f.lab.ok(&["pod", "evl-n1", "evl-gblue1", &bridge, "10.50.0.11/24"]).await;
    f.lab.ok(&["pod", "evl-n2", "evl-gblue2", &bridge, "10.50.0.12/24"]).await;
    until("GoBGP L2: gblue1 -> gblue2", || ping("evl-gblue1", "10.50.0.12")).await;

    let red = f.name("red");
    f.layer3_with_hosts(&red, 60).await;
    f.evpn(&red, &red, json!({"ipVRF": {}})).await;
    until("GoBGP L3: type-5 routes in the TOR's RIB", || async {
        let rib =
            String::from_utf8_lossy(&f.lab.sh(&["gobgp", "global", "rib", "-a", "evpn"]).await.stdout).into_owned();
        rib.contains("10.60.1.0/24") && rib.contains("10.60.2.0/24")
    })
    .await;
    until("GoBGP L3: gred-h1 -> gred-h2", || ping("evl-red-g-h1", "10.60.2.10")).await;
    f.remove_leftovers().await;
}
