//! `evpn-agent`: makes this node an EVPN PE router as its `EVPNNodeState` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use evpn_agent::dataplane::{BackendChoice, Dataplane};
use evpn_agent::frr::{Frr, RenderOptions};
use evpn_agent::reconcile::Agent;
use evpn_telemetry::serve;

/// The node agent of evpn-operator: programs the node's bridge, VXLAN, SVI, VTEP IP and FRR.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of this node (and of its EVPNNodeState).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Program the data plane inside this network namespace instead of the agent's own (labs
    /// that run nodes as namespaces).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// How VRFs are realised: kernel VRF devices, network namespaces, or whichever the kernel
    /// supports.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    vrf_backend: Backend,
    /// Where the network namespaces of netns-VRFs are (the netns backend).
    #[arg(long, default_value = "/run/netns")]
    vrf_netns_dir: PathBuf,
    /// FRR pathspace (`vtysh -N`), when FRR runs with one.
    #[arg(long)]
    frr_pathspace: Option<String>,
    /// Seconds between full reconciles that repair drift (FRR restarted, a device removed).
    #[arg(long, default_value_t = 10)]
    resync_seconds: u64,
    /// Plain-HTTP listener for /metrics, /healthz and /readyz. The agent runs in the node's
    /// network namespace, so the port is the node's: the default stays clear of what
    /// OVN-Kubernetes, frr-k8s, MetalLB, the kubelet and node exporters bind there.
    #[arg(long, env = "EVPN_AGENT_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    telemetry: evpn_telemetry::Args,
}

/// The agent's metrics address; `evpn-deploy` names the same port in the DaemonSet.
const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9482";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Auto,
    Kernel,
    Netns,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = args.telemetry.clone();
    evpn_telemetry::main(&telemetry, "evpn-agent", run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    // First, so that a port taken by another host-network pod stops the agent before it acts.
    let listener = serve::bind(args.metrics_listen).await?;
    let choice = match args.vrf_backend {
        Backend::Auto => BackendChoice::Auto,
        Backend::Kernel => BackendChoice::Kernel,
        Backend::Netns => BackendChoice::Netns { dir: args.vrf_netns_dir.clone() },
    };
    let dataplane = Dataplane::new(args.netns.clone(), choice).await.context("opening the data plane")?;
    tracing::info!(node = args.node_name, backend = ?dataplane.backend(), "data plane ready");
    let render = RenderOptions {
        hostname: args.node_name.clone(),
        vrf_backend: dataplane.backend(),
        // zebra names a netns-VRF by the path it sees, /run/netns/<vrf> (its own mount namespace
        // may map that elsewhere); the rendered config must say the same or a reload detaches it.
        vrf_netns_dir: "/run/netns".into(),
        passwords: Default::default(),
        uplinks: Default::default(),
    };
    let frr = Frr::new(args.frr_pathspace.clone());
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let agent = Agent::new(args.node_name, dataplane, frr, render, Duration::from_secs(args.resync_seconds));
    let (encode, ready) = (agent.metrics.clone(), agent.metrics.clone());
    let endpoints = serve::Endpoints {
        metrics: Arc::new(move || encode.encode()),
        ready: Arc::new(move || ready.readiness()),
        live: serve::answering(),
    };
    tokio::select! {
        result = agent.run(client) => result,
        result = serve::serve(listener, endpoints) => result,
    }
}
