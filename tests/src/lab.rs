//! The lab fabric of `hack/lab.sh` with the cluster side around it: the control plane, the
//! operator's controllers in this process, and one real `evpn-agent` process per node. Shared by
//! the end-to-end suite (`tests/lab.rs`) and the apply-to-first-ping benchmark
//! (`benches/lab.rs`).
//!
//! Needs root and network namespaces; [`unavailable`] says why not. The lab is one set of
//! namespaces, so only one user at a time.
//!
//! VRFs are network namespaces by default (this machine's kernel has no VRF device). With
//! `EVPN_LAB_VRF=kernel` they are kernel VRF devices and the agents use their production
//! backend: what the VM lab (`hack/vmlab.sh`, `tests/vmlab.rs`) runs on Debian's kernel.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a fixture that cannot build its input should panic")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use evpn_crds::frrk8s::{FrrConfiguration, FrrNodeState};
use evpn_crds::{Evpn, EvpnNodeState};
use evpn_operator::controller::Config;
use evpn_operator::leader::Election;
use evpn_operator::metrics::Metrics;
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{apply, control_plane, frrk8s, repo_root, unique_name};

/// How long a fabric condition (BGP, routes, pings) may take before the test fails:
/// `EVPN_LAB_DEADLINE_SECONDS`, default 60 (the VM lab, under software emulation on a shared
/// machine, runs several times slower).
pub fn fabric_deadline() -> Duration {
    let seconds = std::env::var("EVPN_LAB_DEADLINE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    Duration::from_secs(seconds)
}

/// How the lab's VRFs are made, from `EVPN_LAB_VRF` (default: network namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrfKind {
    /// A VRF is the network namespace `<node>-<vrf>` (kernels without the VRF device).
    Netns,
    /// A VRF is a VRF device in the node's namespace, as in production.
    Kernel,
}

impl VrfKind {
    pub fn from_env() -> Self {
        match std::env::var("EVPN_LAB_VRF").as_deref() {
            Ok("kernel") => VrfKind::Kernel,
            _ => VrfKind::Netns,
        }
    }

    fn name(self) -> &'static str {
        match self {
            VrfKind::Netns => "netns",
            VrfKind::Kernel => "kernel",
        }
    }
}

/// Nodes of the lab: namespace `evl-nN` is Kubernetes node `worker-N`.
pub const NODES: [(&str, &str); 2] = [("evl-n1", "worker-1"), ("evl-n2", "worker-2")];

/// Why the lab cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
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

/// The lab is one set of namespaces: the tests of a binary take turns with this.
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Returns from the calling test, saying why, when the lab cannot run here.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = $crate::lab::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Why bond devices cannot be made here, if they cannot (an Ethernet segment's interface is a
/// bond: FRR 8.4.4 takes no other). This machine's kernel has none; Debian's, in the VM lab, has.
pub fn bonds_unavailable() -> Option<String> {
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
    let probe = "evl-bond-probe";
    let _ = ip(&["netns", "add", probe]);
    let made = ip(&["-n", probe, "link", "add", "probe0", "type", "bond"]);
    let _ = ip(&["netns", "del", probe]);
    match made {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "this kernel makes no bond devices ({}); the VM lab (tests/vmlab.rs) runs it on Debian's kernel",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The lab's namespaces and daemons; torn down when dropped.
pub struct Lab {
    pub script: PathBuf,
}

impl Lab {
    /// The fabric with `tor` as top-of-rack and `nodes` lab nodes (1-3).
    pub async fn up(tor: &str, nodes: usize) -> Self {
        let lab = Lab { script: repo_root().join("hack/lab.sh") };
        lab.sh(&["down"]).await;
        let out = lab.sh(&["up", tor, &nodes.to_string()]).await;
        assert!(out.status.success(), "lab.sh up {tor} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    pub async fn sh(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("EVPN_LAB_VRF", VrfKind::from_env().name())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap()
    }

    pub async fn ok(&self, args: &[&str]) {
        let out = self.sh(args).await;
        assert!(
            out.status.success(),
            "lab.sh {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn vtysh(&self, node: &str, cmd: &str) -> String {
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

/// The routes to `prefix` in VRF `vrf` of lab node `node`, as `ip route` prints them.
pub async fn vrf_routes(node: &str, vrf: &str, prefix: &str) -> String {
    // `ip route` lists IPv4 unless told otherwise, whatever the prefix.
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let out = match VrfKind::from_env() {
        VrfKind::Netns => {
            Command::new("ip").args([family, "-n", &vrf_netns(node, vrf), "route", "show", prefix]).output()
        }
        VrfKind::Kernel => Command::new("ip").args([family, "-n", node, "route", "show", "vrf", vrf, prefix]).output(),
    };
    String::from_utf8_lossy(&out.await.unwrap().stdout).into_owned()
}

/// The namespace holding VRF `vrf` of lab switch `node`, and so its bridges and SVIs.
pub fn vrf_netns(node: &str, vrf: &str) -> String {
    match VrfKind::from_env() {
        VrfKind::Netns => format!("{node}-{vrf}"),
        VrfKind::Kernel => node.to_owned(),
    }
}

/// Runs `cmd` inside network namespace `ns`.
pub async fn in_ns(ns: &str, cmd: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).stdin(Stdio::null()).output().await.unwrap()
}

pub async fn ping(from: &str, to: &str) -> bool {
    in_ns(from, &["ping", "-c1", "-W1", to]).await.status.success()
}

pub async fn ping6(from: &str, to: &str) -> bool {
    in_ns(from, &["ping", "-6", "-c1", "-W1", to]).await.status.success()
}

/// Polls `check` until it holds or [`fabric_deadline`] passes; panics naming `what`.
pub async fn until<F, Fut>(what: &str, mut check: F)
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
        let deadline = fabric_deadline();
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that `check` keeps failing for `window` (isolation: something must NOT happen).
pub async fn never<F, Fut>(what: &str, window: Duration, mut check: F)
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

/// The `evpn-agent` binary next to this test binary (see [`crate::workspace_binary`]).
/// `EVPN_LAB_AGENT` names one to use as it is (inside the VM lab, which cannot build).
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EVPN_LAB_AGENT") {
        return path.into();
    }
    crate::workspace_binary("evpn-agent")
}

/// One node's agent, killed when dropped.
pub struct AgentProcess {
    child: Child,
    /// Its metrics endpoint: every agent of the lab runs on this host, each on a port of its own.
    pub metrics: std::net::SocketAddr,
}

impl AgentProcess {
    pub fn start(lab_node: &str, node: &str) -> Self {
        let cp_dir = std::env::var("EVPN_TEST_CONTROL_PLANE").ok();
        let kubeconfig = match cp_dir {
            Some(d) => PathBuf::from(d).join(format!("node-{node}.kubeconfig")),
            None => control_plane_dir().join(format!("node-{node}.kubeconfig")),
        };
        Self::start_with(lab_node, node, &kubeconfig)
    }

    /// An agent that reports to the cluster `kubeconfig` leads to.
    pub fn start_with(lab_node: &str, node: &str, kubeconfig: &Path) -> Self {
        let log = std::env::temp_dir().join(format!("evpn-lab-agent-{node}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let backend = match VrfKind::from_env() {
            VrfKind::Netns => vec![
                "--vrf-backend".into(),
                "netns".into(),
                "--vrf-netns-dir".into(),
                format!("/var/run/frr/{lab_node}/netns"),
            ],
            VrfKind::Kernel => vec!["--vrf-backend".into(), "kernel".into()],
        };
        let child = Command::new(agent_binary())
            .args(["--node-name", node, "--netns", &format!("/run/netns/{lab_node}")])
            .args(backend)
            .args(["--frr-pathspace", lab_node, "--resync-seconds", "2"])
            .args(["--metrics-listen", &metrics.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,evpn_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        AgentProcess { child, metrics }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

pub fn control_plane_dir() -> PathBuf {
    std::env::temp_dir().join(format!("evpn-operator/test-{}", std::process::id()))
}

/// The operator's controllers, in this process; aborted when dropped.
pub struct Operator(JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn operator(client: &Client) -> Operator {
    let election = Election {
        namespace: "evpn-system".into(),
        name: unique_name("lab-lease"),
        identity: "lab".into(),
        // The binary's defaults: under the VM tier's software emulation a Lease renewal can take
        // seconds while the operator's writes load the apiserver, and a leader that stops at a
        // tight renew deadline starts its work over and over. A lease of its own per operator,
        // so no lab operator waits out another's.
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(1),
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

/// Who configures BGP on the lab's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BgpDriver {
    /// The agents, from the VTEP's `bgp` block.
    Agent,
    /// frr-k8s (its stand-in, [`FrrK8sStandIn`]), from FRRConfigurations: the user's underlay
    /// and what the operator layers on it.
    FrrK8s,
}

/// Namespace of the FRRConfigurations in frr-k8s mode (the operator's default).
pub const FRR_K8S_NAMESPACE: &str = "frr-k8s-system";
/// The fabric's AS numbers and the TOR's address on the underlay LAN (`hack/lab.sh`).
const NODE_ASN: u32 = 65001;
const TOR_ASN: u32 = 65000;
const TOR_ADDRESS: &str = "198.18.255.1";

/// Everything the scenarios share: the lab, the cluster side, the agents.
pub struct Fabric {
    pub lab: Lab,
    pub client: Client,
    /// Suffix of the fabric's object names (see [`Fabric::name`]).
    pub tor: &'static str,
    pub vtep: String,
    /// The VTEP's spec as applied.
    vtep_spec: Value,
    pub agents: Vec<Option<AgentProcess>>,
    _operator: Operator,
    _frr_k8s: Option<FrrK8sStandIn>,
}

impl Fabric {
    /// The lab with `tor` as top-of-rack, the agents driving FRR.
    pub async fn up(tor: &'static str) -> Self {
        Self::up_with(tor, BgpDriver::Agent).await
    }

    pub async fn up_with(tor: &'static str, driver: BgpDriver) -> Self {
        Self::up_in(Lab::up(tor, NODES.len()).await, tor, driver).await
    }

    /// The cluster side on a lab already up (which may have more nodes than [`NODES`], for
    /// another cluster).
    pub async fn up_in(lab: Lab, tor: &'static str, driver: BgpDriver) -> Self {
        let cp = control_plane().await.unwrap();
        let client = cp.admin().await.unwrap();
        let id = unique_name("lab");
        for (_, node) in NODES {
            let labels = json!({"evpn-lab": id, "kubernetes.io/hostname": node});
            apply(&client, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}}))
                .await
                .unwrap();
        }
        let vtep = format!("{id}-vtep");
        let mut spec = json!({
            "cidrs": ["198.18.0.0/24"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-lab": id}},
            "vniRanges": [{"start": 10000, "end": 19999}]});
        let neighbor = json!({"address": TOR_ADDRESS, "asn": TOR_ASN});
        match driver {
            BgpDriver::Agent => spec["bgp"] = json!({"asn": NODE_ASN, "neighbors": [neighbor]}),
            BgpDriver::FrrK8s => {
                // The user's underlay: the sessions to the TOR on every node of the fabric.
                apply(
                    &client,
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FRR_K8S_NAMESPACE}}),
                )
                .await
                .unwrap();
                apply(
                    &client,
                    &json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
                    "metadata": {"name": format!("{id}-underlay"), "namespace": FRR_K8S_NAMESPACE,
                        "labels": {"evpn-lab/underlay": id}},
                    "spec": {"nodeSelector": {"matchLabels": {"evpn-lab": id}},
                        "bgp": {"routers": [{"asn": NODE_ASN, "neighbors": [neighbor]}]}}}),
                )
                .await
                .unwrap();
                spec["frrConfigurationSelector"] = json!({"matchLabels": {"evpn-lab/underlay": id}});
            }
        }
        apply_vtep(&client, &vtep, &spec).await;
        let operator = operator(&client);
        let agents = NODES.iter().map(|(lab_node, node)| Some(AgentProcess::start(lab_node, node))).collect();
        let (suffix, frr_k8s) = match driver {
            BgpDriver::Agent => (&tor[..1], None),
            BgpDriver::FrrK8s => ("k", Some(FrrK8sStandIn::start(&client, &id, &vtep))),
        };
        let fabric =
            Fabric { lab, client, tor: suffix, vtep, vtep_spec: spec, agents, _operator: operator, _frr_k8s: frr_k8s };
        fabric.remove_leftovers().await;
        if driver == BgpDriver::FrrK8s {
            fabric.announce_vtep_ips(&id).await;
        }
        for (i, (_, node)) in NODES.iter().enumerate() {
            session_established(&fabric.client, node).await;
            let metrics = fabric.agents[i].as_ref().map(|a| a.metrics);
            until(&format!("{node}: its agent ready, the session Established in its metrics"), || async {
                let Some(addr) = metrics else { return false };
                let ready = crate::http_get(addr, "/readyz").await.is_ok_and(|r| r.status == 200);
                let Ok(scraped) = crate::http_get(addr, "/metrics").await else { return false };
                ready && crate::sample(&scraped.body, r#"evpn_agent_bgp_sessions{state="Established"}"#) >= Some(1.0)
            })
            .await;
        }
        fabric
    }

    /// Turns BFD on the sessions to the TOR on (300 ms x 3, the TOR's profile) or off, in the
    /// VTEP's `bgp` block; the agents reconfigure FRR.
    pub async fn underlay_bfd(&mut self, on: bool) {
        let bgp = &mut self.vtep_spec["bgp"];
        if on {
            bgp["bfdProfiles"] =
                json!([{"name": "fabric", "receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3}]);
            bgp["neighbors"][0]["bfdProfile"] = json!("fabric");
        } else if let Some(b) = bgp.as_object_mut() {
            b.remove("bfdProfiles");
            if let Some(n) = b.get_mut("neighbors").and_then(|n| n[0].as_object_mut()) {
                n.remove("bfdProfile");
            }
        }
        apply_vtep(&self.client, &self.vtep, &self.vtep_spec).await;
    }

    /// Sets the VTEP's underlay MTU; the agents size the VXLAN devices to it.
    pub async fn vtep_mtu(&mut self, mtu: u32) {
        self.vtep_spec["mtu"] = json!(mtu);
        apply_vtep(&self.client, &self.vtep, &self.vtep_spec).await;
    }

    /// Whether the TOR's BFD sessions with both nodes are up.
    pub async fn bfd_up_at_tor(&self) -> bool {
        self.lab.vtysh("evl-tor", "show bfd peers brief").await.matches(" up ").count() >= NODES.len()
    }

    /// frr-k8s mode: the user announces each node's VTEP address, here in a configuration per
    /// node (as docs/frr-k8s.md shows), once the operator has handed the addresses out.
    async fn announce_vtep_ips(&self, id: &str) {
        let states: Api<EvpnNodeState> = Api::all(self.client.clone());
        for (_, node) in NODES {
            let vtep_ip = || async {
                let s = states.get(node).await.ok()?;
                s.spec.vteps.iter().find(|v| v.name == self.vtep).and_then(|v| v.ip.clone())
            };
            until(&format!("{node}: a VTEP IP handed out"), || async { vtep_ip().await.is_some() }).await;
            let prefix = format!("{}/32", vtep_ip().await.unwrap());
            apply(
                &self.client,
                &json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
                "metadata": {"name": format!("{id}-vtep-{node}"), "namespace": FRR_K8S_NAMESPACE},
                "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}},
                    "bgp": {"routers": [{"asn": NODE_ASN, "prefixes": [prefix]}]}}}),
            )
            .await
            .unwrap();
        }
    }

    /// This fabric's EVPNs, at the end of a test and left over from an earlier run that stopped
    /// half-way: they would hold VNIs and, re-applied with fewer fields, trip v1.20's server-side
    /// apply (which leaves `null` behind).
    pub async fn remove_leftovers(&self) {
        let api: Api<Evpn> = Api::all(self.client.clone());
        let suffix = format!("-{}", self.tor);
        for e in api.list(&Default::default()).await.unwrap().items {
            let name = e.metadata.name.unwrap_or_default();
            if name.ends_with(&suffix) && e.spec.vtep.starts_with("lab-") {
                self.delete_evpn(&name).await;
            }
        }
    }

    pub async fn network(&self, name: &str, topology: &str, subnets: Value) {
        apply_network(&self.client, name, topology, subnets).await;
    }

    /// Applies an EVPN on this fabric's VTEP and waits until it is Ready on every node; returns
    /// its status.
    pub async fn evpn(&self, name: &str, network: &str, vrfs: Value) -> Evpn {
        apply_evpn(&self.client, name, network, &self.vtep, vrfs).await
    }

    pub async fn ready(&self, name: &str) -> Evpn {
        evpn_ready(&self.client, name).await
    }

    /// A Layer3 network `name` with subnet 10.`octet`.0.0/16, its VRF on every node (as
    /// OVN-Kubernetes would make it), and on node N a routed host `evl-<name>-hN` at
    /// 10.`octet`.N.10/24. Returns the VRF name.
    pub async fn layer3_with_hosts(&self, name: &str, octet: u8) -> String {
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
    pub fn name(&self, short: &str) -> String {
        format!("{short}-{}", self.tor)
    }

    pub async fn delete_evpn(&self, name: &str) {
        let api: Api<Evpn> = Api::all(self.client.clone());
        api.delete(name, &DeleteParams::default()).await.unwrap();
        until(&format!("EVPN {name} gone (finalizer released after every node removed it)"), || async {
            matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
        })
        .await;
    }
}

/// Waits until `node`'s agent reports its BGP session to the TOR Established.
pub async fn session_established(client: &Client, node: &str) {
    let states: Api<EvpnNodeState> = Api::all(client.clone());
    until(&format!("{node}: BGP session to the TOR Established, as its agent reports"), || async {
        let Ok(s) = states.get(node).await else { return false };
        s.status.is_some_and(|st| st.bgp_sessions.iter().any(|b| b.state == "Established"))
    })
    .await;
}

/// Applies ClusterUserDefinedNetwork `name`, a primary network of `topology`.
pub async fn apply_network(client: &Client, name: &str, topology: &str, subnets: Value) {
    let section = topology.to_lowercase();
    apply(
        client,
        &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork",
        "metadata": {"name": name}, "spec": {"namespaceSelector": {}, "network": {"topology": topology,
        section: {"role": "Primary", "subnets": subnets}}}}),
    )
    .await
    .unwrap();
}

/// Applies EVPN `name` for network `network` on VTEP `vtep` (`vrfs`: the rest of the spec) and
/// waits until it is Ready on every node; returns its status.
pub async fn apply_evpn(client: &Client, name: &str, network: &str, vtep: &str, vrfs: Value) -> Evpn {
    let mut spec = json!({"network": {"kind": "ClusterUserDefinedNetwork", "name": network}, "vtep": vtep});
    for (k, v) in vrfs.as_object().unwrap() {
        spec[k] = v.clone();
    }
    apply(
        client,
        &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": name}, "spec": spec}),
    )
    .await
    .unwrap();
    evpn_ready(client, name).await
}

/// Waits until EVPN `name` is Ready on every node for its current generation; returns it.
pub async fn evpn_ready(client: &Client, name: &str) -> Evpn {
    let api: Api<Evpn> = Api::all(client.clone());
    let is_ready = |e: &Evpn| {
        e.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                && s.observed_generation == e.metadata.generation
        })
    };
    until(&format!("EVPN {name} Ready on every node"), || async { api.get(name).await.is_ok_and(|e| is_ready(&e)) })
        .await;
    api.get(name).await.unwrap()
}

pub async fn apply_vtep(client: &Client, name: &str, spec: &Value) {
    let vtep =
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": name}, "spec": spec});
    apply(client, &vtep).await.unwrap();
}

/// frr-k8s' part on the lab's nodes, for a fabric in frr-k8s mode: the FRRConfigurations that
/// select a node, merged and rendered as frr-k8s would ([`crate::frrk8s`]), loaded into the
/// node's FRR with frr-reload.py, and the outcome reported in the node's FRRNodeState, where the
/// operator reads it. Only this fabric's configurations count (the user's, named after the
/// fabric, and the operator's for its VTEP): objects of earlier runs stay behind in the control
/// plane, which has no garbage collector. Stops when dropped.
pub struct FrrK8sStandIn(JoinHandle<()>);

impl Drop for FrrK8sStandIn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FrrK8sStandIn {
    fn start(client: &Client, fabric: &str, vtep: &str) -> Self {
        let (client, fabric, vtep) = (client.clone(), format!("{fabric}-"), vtep.to_owned());
        FrrK8sStandIn(tokio::spawn(async move {
            let (mut loaded, mut reported) = (BTreeMap::new(), BTreeMap::new());
            loop {
                frr_k8s_round(&client, &fabric, &vtep, &mut loaded, &mut reported).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

/// One pass over the nodes. `loaded`: the text each node's FRR last took; `reported`: the status
/// last written for each node.
async fn frr_k8s_round(
    client: &Client,
    fabric: &str,
    vtep: &str,
    loaded: &mut BTreeMap<&'static str, String>,
    reported: &mut BTreeMap<&'static str, Value>,
) {
    let api: Api<FrrConfiguration> = Api::namespaced(client.clone(), FRR_K8S_NAMESPACE);
    let Ok(list) = api.list(&Default::default()).await else { return };
    let ours = |c: &FrrConfiguration| {
        c.metadata.name.as_deref().is_some_and(|n| n.starts_with(fabric))
            || c.metadata.labels.as_ref().and_then(|l| l.get(evpn_operator::frrk8s::VTEP_LABEL)).map(String::as_str)
                == Some(vtep)
    };
    let configs: Vec<FrrConfiguration> = list.items.into_iter().filter(ours).collect();
    let nodes: Api<Node> = Api::all(client.clone());
    for (lab_node, node) in NODES {
        let Ok(n) = nodes.get(node).await else { continue };
        let labels = n.metadata.labels.unwrap_or_default();
        let options = frrk8s::RenderOptions {
            hostname: lab_node.into(),
            vrf_netns_dir: (VrfKind::from_env() == VrfKind::Netns).then(|| "/run/netns".into()),
            // zebra's bound VRFs, as the agent reads them; none when FRR does not answer.
            bound_vrfs: evpn_agent::frr::Frr::new(Some(lab_node.into())).active_vrfs().await.unwrap_or_default(),
            allowas_in_origin: true,
            ..Default::default()
        };
        // A failed conversion leaves FRR, and so the last reload's result, as they were.
        let status = match frrk8s::render(&frrk8s::for_node(&configs, &labels), &options) {
            Err(e) => json!({"lastConversionResult": e.to_string()}),
            Ok(text) if loaded.get(lab_node) == Some(&text) => {
                json!({"lastConversionResult": "success", "lastReloadResult": "success"})
            }
            Ok(text) => {
                let result = frr_reload(lab_node, &text).await;
                if result.is_ok() {
                    loaded.insert(lab_node, text);
                }
                json!({"lastConversionResult": "success", "lastReloadResult": result.err().unwrap_or_else(|| "success".into())})
            }
        };
        if reported.get(lab_node) == Some(&status) {
            continue;
        }
        let reports: Api<FrrNodeState> = Api::all(client.clone());
        let _ = reports.create(&Default::default(), &FrrNodeState::new(node, Default::default())).await;
        let patch = Patch::Merge(json!({"status": status}));
        if reports.patch_status(node, &PatchParams::default(), &patch).await.is_ok() {
            reported.insert(lab_node, status);
        }
    }
}

/// Loads `text` into the node's FRR as frr-k8s does, with frr-reload.py; a second pass when the
/// first reports errors (removing an L3VNI with its VRF's BGP instance takes two on 8.4.4).
async fn frr_reload(lab_node: &str, text: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("evpn-lab-frr-k8s-{lab_node}.conf"));
    tokio::fs::write(&path, text).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut last = String::new();
    for _pass in 0..2 {
        let out = Command::new("/usr/lib/frr/frr-reload.py")
            .args(["--reload", "-N", lab_node, "--stdout"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("frr-reload.py: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Err(format!("frr-reload.py failed: {}", last.trim()))
}

/// The scenarios of one test, run in order on one fabric. Each outcome is printed and, with
/// `EVPN_LAB_REPORT` naming a file, appended to it as a JSON line: how the VM lab's host side
/// (`tests/vmlab.rs`) learns the result of each. Later scenarios build on earlier ones, so after
/// a failure the rest are recorded as not run and the test fails.
pub struct Scenarios {
    test: &'static str,
    names: &'static [&'static str],
    done: usize,
}

impl Scenarios {
    pub fn new(test: &'static str, names: &'static [&'static str]) -> Self {
        Scenarios { test, names, done: 0 }
    }

    /// Runs the next scenario, which must be `name`; `None` when it failed (the caller then
    /// ends the test with [`Scenarios::fail`]).
    pub async fn run<T>(&mut self, name: &str, body: impl std::future::Future<Output = T>) -> Option<T> {
        assert_eq!(self.names.get(self.done).copied(), Some(name), "scenarios run in the declared order");
        self.done += 1;
        let start = Instant::now();
        let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
        let seconds = start.elapsed().as_secs_f64();
        match outcome {
            Ok(value) => {
                self.record(name, "passed", seconds, "");
                Some(value)
            }
            Err(panic) => {
                self.record(name, "failed", seconds, &panic_message(panic.as_ref()));
                None
            }
        }
    }

    /// Records the scenarios not run yet and fails the test.
    pub fn fail(self) {
        let failed = self.names[self.done - 1];
        for name in &self.names[self.done..] {
            self.record(name, "not run", 0.0, &format!("scenario {failed} failed before it"));
        }
        panic!("scenario {failed} of {} failed", self.test);
    }

    fn record(&self, scenario: &str, result: &str, seconds: f64, message: &str) {
        eprintln!("scenario {scenario}: {result} ({seconds:.1}s)");
        let Some(path) = std::env::var_os("EVPN_LAB_REPORT") else { return };
        let line =
            json!({"test": self.test, "scenario": scenario, "result": result, "seconds": seconds, "message": message});
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }
}

/// A lab benchmark's `main`: says why and returns when the lab cannot run here, else runs
/// `bench` with the number of rounds from `EVPN_BENCH_ROUNDS` (default `default_rounds`).
pub fn bench_main<Fut: std::future::Future<Output = ()>>(default_rounds: usize, bench: impl FnOnce(usize) -> Fut) {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let rounds = std::env::var("EVPN_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_rounds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(rounds));
}

/// Milliseconds, for the benchmarks' figures.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `median (min-max)` of `times` in milliseconds, as the benchmarks print them.
pub fn median_min_max_ms(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    match (sorted.first(), sorted.last()) {
        (Some(min), Some(max)) => format!("{:.0} ({:.0}-{:.0})", ms(sorted[sorted.len() / 2]), ms(*min), ms(*max)),
        _ => "no rounds".into(),
    }
}

/// The message a panic carried.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".into())
}

pub fn mac_vni(e: &Evpn) -> u32 {
    e.status.as_ref().and_then(|s| s.mac_vrf.as_ref()).map(|v| v.vni).expect("a MAC-VNI in the status")
}

pub fn ip_vni(e: &Evpn) -> u32 {
    e.status.as_ref().and_then(|s| s.ip_vrf.as_ref()).map(|v| v.vni).expect("an IP-VNI in the status")
}

pub fn vrf_name(e: &Evpn) -> String {
    e.status.as_ref().and_then(|s| s.vrf_name.clone()).expect("a VRF name in the status")
}

pub async fn link_exists(ns: &str, dev: &str) -> bool {
    Command::new("ip").args(["-n", ns, "link", "show", dev]).output().await.is_ok_and(|o| o.status.success())
}

/// A type-2 route of one MAC at the TOR, as its best path shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacRoute {
    pub next_hop: String,
    /// The IP of a MAC/IP route; `None` for the MAC-only route.
    pub ip: Option<String>,
    /// The MAC mobility sequence number (RFC 7432 15); 0 when the route carries none.
    pub mobility_seq: u32,
}

impl Lab {
    /// The FRR TOR's type-2 routes of `mac`, from every originator.
    pub async fn tor_mac_routes(&self, mac: &str) -> Vec<MacRoute> {
        let text = self.vtysh("evl-tor", "show bgp l2vpn evpn route type macip json").await;
        let Ok(table) = serde_json::from_str::<Value>(&text) else { return Vec::new() };
        let mut routes = Vec::new();
        for rd in table.as_object().into_iter().flat_map(|t| t.values()) {
            for prefix in rd.as_object().into_iter().flat_map(|p| p.values()) {
                let best = prefix["paths"].as_array().into_iter().flatten().flat_map(|p| p.as_array()).flatten();
                for path in best.filter(|p| p["bestpath"] == true && p["mac"] == mac) {
                    let communities = path["extendedCommunity"]["string"].as_str().unwrap_or_default();
                    routes.push(MacRoute {
                        next_hop: path["nexthops"][0]["ip"].as_str().unwrap_or_default().to_owned(),
                        ip: path["ip"].as_str().map(str::to_owned),
                        mobility_seq: mobility_seq(communities),
                    });
                }
            }
        }
        routes
    }
}

/// The sequence number of FRR's `MM:<seq>` (or `MM:<seq>, sticky MAC`) extended community.
fn mobility_seq(communities: &str) -> u32 {
    communities
        .split_whitespace()
        .find_map(|c| c.strip_prefix("MM:"))
        .and_then(|s| s.trim_end_matches(',').parse().ok())
        .unwrap_or(0)
}

/// A packet capture in a lab namespace, on every interface, written to a file: started before
/// the traffic it is for, read after [`Capture::stop`] with tcpdump filters.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing `filter` in `ns`; returns once tcpdump listens.
    pub async fn start(ns: &str, filter: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let file = std::env::temp_dir().join(format!("{}.pcap", unique_name("evpn-lab-capture")));
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-s", "128", "-w"])
            .arg(&file)
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(fabric_deadline(), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on") {
                    return true;
                }
            }
            false
        });
        assert!(listening.await.unwrap_or(false), "tcpdump in {ns} did not start listening");
        Capture { child, file }
    }

    /// Stops the capture (SIGINT: tcpdump flushes the file) and returns it. Immediate mode hands
    /// tcpdump every packet at once, so what passed before the stop is in the file.
    pub async fn stop(mut self) -> CaptureFile {
        interrupt(&mut self.child).await;
        CaptureFile(self.file.clone())
    }
}

/// Ends a child as Ctrl-C would (tcpdump and ping then finish their output) and waits for it.
async fn interrupt(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
    }
    let _ = child.wait().await;
}

/// A finished capture.
pub struct CaptureFile(PathBuf);

impl CaptureFile {
    /// How many captured packets match the tcpdump `filter`. Captured on every interface, a
    /// packet the TOR switches counts twice: on its way in and on its way out.
    pub async fn count(&self, filter: &str) -> usize {
        let text = self.read(&["--count"], filter).await;
        text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("tcpdump --count: {text}"))
    }

    /// tcpdump's lines for the captured packets that match `filter`.
    pub async fn text(&self, filter: &str) -> String {
        self.read(&[], filter).await
    }

    async fn read(&self, options: &[&str], filter: &str) -> String {
        let mut tcpdump = Command::new("tcpdump");
        tcpdump.arg("-r").arg(&self.0).arg("-n").args(options).args(filter.split_whitespace());
        let out = tcpdump.output().await.unwrap();
        assert!(out.status.success(), "tcpdump -r {filter}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A continuous ping (every 10 ms) from a lab namespace, recording which requests were answered:
/// the traffic gap of a change is the longest run of unanswered ones.
pub struct PingRun {
    child: Child,
    answered: Arc<std::sync::Mutex<Vec<u64>>>,
    reader: JoinHandle<()>,
}

/// The ping interval of a [`PingRun`].
pub const PING_INTERVAL: Duration = Duration::from_millis(10);

impl PingRun {
    pub fn start(from: &str, to: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let interval = format!("{}", PING_INTERVAL.as_secs_f64());
        let mut child = Command::new("ip")
            .args(["netns", "exec", from, "ping", "-n", "-i", &interval, "-W", "1", to])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = answered.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(seq) = reply_seq(&line) {
                    sink.lock().unwrap().push(seq);
                }
            }
        });
        PingRun { child, answered, reader }
    }

    /// Whether the last `n` requests sent so far (up to the newest reply) were all answered.
    pub fn flowing(&self, n: u64) -> bool {
        let answered = self.answered.lock().unwrap();
        let Some(&last) = answered.last() else { return false };
        last >= n && answered.iter().rev().take(n as usize).copied().eq((last + 1 - n..=last).rev())
    }

    /// The newest answered request.
    pub fn newest(&self) -> Option<u64> {
        self.answered.lock().unwrap().last().copied()
    }

    /// Stops pinging; returns the longest gap between answered requests.
    pub async fn stop(mut self) -> Duration {
        interrupt(&mut self.child).await;
        let _ = self.reader.await;
        longest_gap(&self.answered.lock().unwrap())
    }
}

/// `icmp_seq` of a ping reply line.
fn reply_seq(line: &str) -> Option<u64> {
    line.contains(" bytes from ").then_some(())?;
    line.split_whitespace().find_map(|w| w.strip_prefix("icmp_seq=")).and_then(|s| s.parse().ok())
}

/// The longest stretch without answers, in ping intervals: answered 1, 2, 3, 7 lost 4-6, a gap of
/// 4 intervals (from the last answered request to the next).
fn longest_gap(answered: &[u64]) -> Duration {
    let mut seqs = answered.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    let widest = seqs.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(1);
    PING_INTERVAL * u32::try_from(widest.saturating_sub(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobility_sequence_numbers_are_read_from_frr_communities() {
        assert_eq!(mobility_seq("RT:65000:3001 ET:8"), 0);
        assert_eq!(mobility_seq("RT:65000:3001 ET:8 MM:3"), 3);
        assert_eq!(mobility_seq("RT:65000:3001 MM:12, sticky MAC ET:8"), 12);
    }

    #[test]
    fn the_gap_is_the_longest_run_of_unanswered_pings() {
        assert_eq!(longest_gap(&[1, 2, 3, 4]), Duration::ZERO);
        assert_eq!(longest_gap(&[1, 2, 3, 7, 8]), PING_INTERVAL * 3);
        assert_eq!(longest_gap(&[5, 1, 2, 9]), PING_INTERVAL * 3);
        assert_eq!(longest_gap(&[]), Duration::ZERO);
        assert_eq!(reply_seq("64 bytes from 10.30.0.50: icmp_seq=17 ttl=64 time=0.1 ms"), Some(17));
        assert_eq!(reply_seq("From 10.30.0.11 icmp_seq=3 Destination Host Unreachable"), None);
    }
}
