//! Admission webhook for the evpn.k8s.ovn.org API.
//!
//! Rules that need other objects (VNI uniqueness, who manages EVPNs, gateway mode, the network
//! reference, the network's MTU against the VTEP's underlay, agents writing only their own node's
//! status) on top of the per-object rules in [`evpn_crds::validation`]. Requests are judged
//! against an in-memory [`index::Index`] fed by watches, so a rule takes microseconds and does
//! not depend on the apiserver answering while it waits for us.
//!
//! The one exception is who may manage EVPNs: RBAC's call, through a SubjectAccessReview of a
//! dedicated verb on the VTEP an EVPN names ([`access`]), bounded by a timeout and cached. What
//! a client may hold of the server is bounded too ([`server::Limits`]).

pub mod access;
pub mod index;
pub mod metrics;
pub mod review;
pub mod rules;
pub mod server;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::metrics::ResultLabel;
use crate::rules::{Policy, UnknownGatewayMode};
use crate::server::State;

/// Command-line settings of the webhook.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Address of the HTTPS listener (admission, /healthz, /readyz, /metrics).
    #[arg(long = "webhook-listen", env = "EVPN_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to the apiserver; reloaded when it changes.
    #[arg(long, env = "EVPN_WEBHOOK_TLS_CERT", default_value = "/var/run/evpn-operator/tls/tls.crt")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the certificate; reloaded when it changes.
    #[arg(long, env = "EVPN_WEBHOOK_TLS_KEY", default_value = "/var/run/evpn-operator/tls/tls.key")]
    pub tls_key_file: PathBuf,
    /// How often to check the certificate files for rotation, in seconds.
    #[arg(long, default_value_t = 2)]
    pub tls_reload_seconds: u64,
    /// Group whose members manage EVPNs on every VTEP without a SubjectAccessReview, and may
    /// write any node's EVPNNodeState status (repeat for several; everyone else passes through RBAC).
    #[arg(long = "admin-group", default_values_t = rules::DEFAULT_ADMIN_GROUPS.map(String::from))]
    pub admin_groups: Vec<String>,
    /// How long to wait for the apiserver's answer to a SubjectAccessReview before denying.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub access_review_timeout: Duration,
    /// How long an allowing SubjectAccessReview answer is reused for the same identity and VTEP.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub access_review_cache: Duration,
    /// How long a client may take to finish the TLS handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub webhook_handshake_timeout: Duration,
    /// How long a connection may stay open with no request being handled, headers still being
    /// sent included.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub webhook_idle_timeout: Duration,
    /// How long reading and answering one request may take (the apiserver gives up after 5 s).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub webhook_request_timeout: Duration,
    /// Connections open at once; further clients wait until one closes.
    #[arg(long, default_value_t = 1024)]
    pub webhook_max_connections: usize,
    /// User name of the operator, the only writer of EVPNNodeState specs.
    #[arg(long, default_value = rules::DEFAULT_OPERATOR_USER)]
    pub operator_user: String,
    /// What to do with an EVPN when nothing tells OVN-Kubernetes' gateway mode.
    #[arg(long, value_enum, default_value_t = UnknownGatewayMode::Warn)]
    pub unknown_gateway_mode: UnknownGatewayMode,
    /// Namespace of OVN-Kubernetes' ovnkube-config ConfigMap.
    #[arg(long, default_value = "ovn-kubernetes")]
    pub ovnkube_config_namespace: String,
}

impl WebhookArgs {
    /// The rules' policy from these settings.
    pub fn policy(&self) -> Policy {
        Policy {
            admin_groups: self.admin_groups.clone(),
            operator_user: self.operator_user.clone(),
            unknown_gateway_mode: self.unknown_gateway_mode,
        }
    }

    /// The handlers' state, asking the apiserver through `client` who may manage EVPNs.
    pub fn state(&self, client: kube::Client) -> State {
        let reviews = access::Reviews::new(client, self.access_review_timeout, self.access_review_cache);
        State::new(self.policy()).with_reviews(reviews)
    }

    /// What a client may hold of the server.
    pub fn limits(&self) -> server::Limits {
        server::Limits {
            handshake_timeout: self.webhook_handshake_timeout,
            idle_timeout: self.webhook_idle_timeout,
            request_timeout: self.webhook_request_timeout,
            max_connections: self.webhook_max_connections,
        }
    }
}

/// A duration flag: a whole number of seconds (`30s`) or milliseconds (`500ms`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let number = |digits: &str| digits.parse::<u64>().map_err(|e| format!("{text:?}: {e}"));
    match (text.strip_suffix("ms"), text.strip_suffix('s')) {
        (Some(ms), _) => Ok(Duration::from_millis(number(ms)?)),
        (None, Some(s)) => Ok(Duration::from_secs(number(s)?)),
        (None, None) => Err(format!("{text:?} has no unit: write 30s or 500ms")),
    }
}

/// A webhook bound to its port, ready to run.
pub struct Webhook {
    listener: tokio::net::TcpListener,
    certificates: tls::Certificates,
    reload_every: Duration,
    limits: server::Limits,
    state: Arc<State>,
}

impl Webhook {
    /// Loads the certificate and binds the listener; fails early on either.
    pub async fn bind(args: &WebhookArgs, state: Arc<State>) -> anyhow::Result<Self> {
        let certificates = tls::Certificates::load(&args.tls_cert_file, &args.tls_key_file)?;
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let reload_every = Duration::from_secs(args.tls_reload_seconds.max(1));
        Ok(Self { listener, certificates, reload_every, limits: args.limits(), state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the future is dropped, reloading the certificate as it rotates.
    pub async fn serve(self) -> anyhow::Result<()> {
        let config = self.certificates.server_config()?;
        let state = self.state.clone();
        let reloads = self.certificates.watch(self.reload_every, move |outcome| {
            let result = match outcome {
                Ok(true) => "reloaded",
                Ok(false) => return,
                Err(_) => "failed",
            };
            state.metrics.tls_reloads.get_or_create(&ResultLabel { result }).inc();
        });
        tracing::info!(addr = %self.listener.local_addr()?, "admission webhook listening");
        self.state.mark_serving();
        tokio::join!(
            reloads,
            server::serve_tls(
                self.listener,
                config,
                server::router(self.state.clone()),
                self.limits,
                self.state.metrics.connections.clone(),
            )
        );
        Ok(())
    }
}

/// Runs the webhook with its watches until the process ends. `state` (made with
/// [`WebhookArgs::state`]) is the caller's too, for readiness and metrics.
pub async fn run(args: &WebhookArgs, client: kube::Client, state: Arc<State>) -> anyhow::Result<()> {
    let webhook = Webhook::bind(args, state.clone()).await?;
    let watches = watch::run(client, state, args.ovnkube_config_namespace.clone());
    tokio::select! {
        result = webhook.serve() => result,
        () = watches => anyhow::bail!("the webhook's watches ended"),
    }
}

/// The ValidatingWebhookConfiguration that routes our kinds to this webhook. `client` says how
/// the apiserver reaches it (a Service in a cluster, a URL in tests); `object_selector` narrows
/// which objects it judges.
pub fn configuration(
    name: &str,
    client: WebhookClientConfig,
    object_selector: Option<LabelSelector>,
) -> ValidatingWebhookConfiguration {
    let hook = |hook_name: &str, path: &str, resources: &[&str], operations: &[&str]| {
        let mut client = client.clone();
        match (&mut client.service, &mut client.url) {
            (Some(service), _) => service.path = Some(path.into()),
            (None, Some(url)) => *url = format!("{}{path}", url.trim_end_matches('/')),
            (None, None) => {}
        }
        ValidatingWebhook {
            name: format!("{hook_name}.{}", evpn_crds::GROUP),
            client_config: client,
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![evpn_crds::GROUP.into()]),
                api_versions: Some(vec![evpn_crds::VERSION.into()]),
                resources: Some(resources.iter().map(|r| (*r).into()).collect()),
                operations: Some(operations.iter().map(|o| (*o).into()).collect()),
                scope: Some("Cluster".into()),
            }]),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            timeout_seconds: Some(5),
            object_selector: object_selector.clone(),
            ..Default::default()
        }
    };
    ValidatingWebhookConfiguration {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        webhooks: Some(vec![
            hook("evpns", "/validate/evpns", &["evpns"], &["CREATE", "UPDATE", "DELETE"]),
            hook("vteps", "/validate/vteps", &["vteps"], &["CREATE", "UPDATE", "DELETE"]),
            hook(
                "evpnnodestates",
                "/validate/evpnnodestates",
                &["evpnnodestates", "evpnnodestates/status"],
                &["CREATE", "UPDATE"],
            ),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn the_flags_defaults_are_the_servers() {
        let cli = Cli::try_parse_from(["evpn-operator"]).unwrap();
        assert_eq!(cli.webhook.limits(), server::Limits::default());
        assert_eq!(cli.webhook.admin_groups, ["system:masters"]);
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("-1s").is_err());
    }
}
