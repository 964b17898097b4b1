//! `evpn-operator`: the admission webhook (every replica) and the controllers (the leader).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use evpn_operator::{controller, leader, metrics::Metrics};
use evpn_telemetry::serve;

/// BGP-EVPN for OVN-Kubernetes user-defined networks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    webhook: evpn_webhook::WebhookArgs,
    /// Do not serve the admission webhook.
    #[arg(long)]
    no_webhook: bool,
    /// Do not run the controllers (webhook only).
    #[arg(long)]
    no_controllers: bool,
    /// Plain-HTTP listener for /metrics (the controllers' and the webhook's), /healthz and /readyz.
    #[arg(long, env = "EVPN_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "evpn-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "evpn-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (defaults to the pod name, else host and PID).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a standby waits after the leader's last renewal before taking the Lease over
    /// (whole seconds). Leader election needs lease duration > renew deadline > retry period.
    #[arg(long, value_parser = leader::parse_duration, default_value = "15s")]
    lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    #[arg(long, value_parser = leader::parse_duration, default_value = "10s")]
    renew_deadline: Duration,
    /// How often the leader renews and a standby looks at the Lease: at most this long after a
    /// leader releases the Lease on SIGTERM, a standby leads.
    #[arg(long, value_parser = leader::parse_duration, default_value = "1s")]
    retry_period: Duration,
    /// Namespace where frr-k8s reads FRRConfigurations (VTEPs in frr-k8s mode).
    #[arg(long, default_value = "frr-k8s-system")]
    frr_k8s_namespace: String,
    /// Override the type-3 ESI system MAC (default: derived from the kube-system namespace UID).
    #[arg(long, value_parser = parse_mac)]
    system_mac: Option<[u8; 6]>,
    /// Keep the agents' DaemonSet, with this image, applied in the operator's namespace (for
    /// installers that cannot apply a DaemonSet themselves, such as OLM).
    #[arg(long, env = "EVPN_AGENT_IMAGE")]
    agent_image: Option<String>,
    /// How long one round of the controllers may take before /healthz fails (a wedged loop); a
    /// loop waiting for changes is healthy however long it waits.
    #[arg(long, value_parser = leader::parse_duration, default_value = "2m")]
    round_stall_limit: Duration,
    #[command(flatten)]
    telemetry: evpn_telemetry::Args,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> =
        s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    bytes.try_into().map_err(|_| format!("{s:?} is not six colon-separated hex bytes"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = args.telemetry.clone();
    evpn_telemetry::main(&telemetry, "evpn-operator", run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let election = leader::Election {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity,
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    election.validate()?;
    let listener = serve::bind(args.metrics_listen).await?;
    let kube_config = kube::Config::infer().await?;
    let client = kube::Client::try_from(kube_config.clone())?;
    let webhook_state = (!args.no_webhook).then(|| Arc::new(args.webhook.state(client.clone())));
    let mut metrics = Metrics::default();
    if let Some(state) = &webhook_state {
        metrics.include_webhook(&state.metrics);
    }
    let metrics = Arc::new(metrics);
    let webhook = async {
        match &webhook_state {
            Some(state) => evpn_webhook::run(&args.webhook, client.clone(), state.clone()).await,
            None => std::future::pending().await,
        }
    };
    let controllers = async {
        if args.no_controllers {
            return std::future::pending().await;
        }
        let system_mac = match args.system_mac {
            Some(mac) => mac,
            None => evpn_operator::system_mac(&client).await?,
        };
        let config =
            controller::Config { system_mac, frr_namespace: args.frr_k8s_namespace.clone(), ..Default::default() };
        let connection = leader::Connection::fenced_at_the_socket(kube_config)?;
        evpn_operator::run_controllers(connection, election.clone(), config, metrics.clone()).await;
        anyhow::Ok(())
    };
    let agents = async {
        match &args.agent_image {
            Some(image) => evpn_operator::agents::keep_applied(client.clone(), &args.lease_namespace, image).await,
            None => std::future::pending().await,
        }
    };
    let (encode, readiness, progress) = (metrics.clone(), webhook_state.clone(), metrics.clone());
    // Ready means able to admit: the webhook serves and its caches have listed. Leadership does
    // not count, so the replica that is not leading still takes admission requests.
    let endpoints = serve::Endpoints {
        metrics: Arc::new(move || encode.encode()),
        ready: Arc::new(move || readiness.as_ref().map_or(Ok(()), |state| state.readiness())),
        live: Arc::new(move || progress.progress.check(args.round_stall_limit)),
    };
    let result = tokio::select! {
        result = webhook => result,
        result = controllers => result,
        result = serve::serve(listener, endpoints) => result,
        () = agents => Ok(()),
        () = evpn_telemetry::shutdown_signal() => Ok(()),
    };
    // The controllers' future is dropped by now: their work has stopped, so the Lease can go to a
    // standby at once instead of after it expires (every rollout would wait that long).
    if !args.no_controllers
        && let Err(e) = election.release(client).await
    {
        tracing::warn!(error = format!("{e:#}"), "the Lease stays ours until it expires");
    }
    result
}
