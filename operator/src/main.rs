//! `evpn-operator`: the admission webhook now; the controllers (allocation, per-node fan-out,
//! status) join it in this binary as they land.

use std::process::ExitCode;

use clap::Parser;

/// BGP-EVPN for OVN-Kubernetes user-defined networks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    webhook: evpn_webhook::WebhookArgs,
    /// Log filter, e.g. `info` or `evpn_webhook=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter(args.log.as_str()).init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    tokio::select! {
        result = evpn_webhook::run(&args.webhook, client) => result,
        signal = tokio::signal::ctrl_c() => {
            signal?;
            tracing::info!("interrupted, exiting");
            Ok(())
        }
    }
}
