//! The deployment of evpn-operator, as code.
//!
//! Whatever a cluster needs beyond the hand-written RBAC (`config/rbac/`) and samples
//! (`config/samples/`) is built here from the code it deploys, so the manifests cannot drift from
//! it: the webhook configuration is the webhook crate's own [`evpn_webhook::configuration`], the
//! owned CRDs are [`evpn_crds::crds`], the OLM bundle's permissions are read from `config/rbac/`
//! and its examples from `config/samples/`. One command,
//! `cargo run -p evpn-deploy --bin generate`, writes `config/crd/`, `config/deploy/`,
//! `config/cert-manager/`, `bundle/` and the API reference `docs/api.md` ([`apidoc`]) ([`files`]);
//! a test fails when any of them is stale.
//!
//! The operator binary uses [`workloads::agent_daemonset`] too: OLM installs Deployments only,
//! so under OLM the operator applies the agent's DaemonSet itself, built by the same function
//! that writes `config/deploy/agent.yaml`.

pub mod apidoc;
pub mod bundle;
pub mod files;
pub mod workloads;

/// Namespace the plain manifests install into (OLM installs into the namespace the user picks).
pub const NAMESPACE: &str = "evpn-system";
/// The operator's Deployment, ServiceAccount and leader-election Lease.
pub const OPERATOR: &str = "evpn-operator";
/// The node agent's DaemonSet and ServiceAccount.
pub const AGENT: &str = "evpn-agent";
/// The Service in front of the webhook (plain manifests; OLM makes its own).
pub const WEBHOOK_SERVICE: &str = "evpn-operator-webhook";
/// The Secret holding the webhook's serving certificate (plain manifests).
pub const WEBHOOK_SECRET: &str = "evpn-operator-webhook-tls";
/// The ValidatingWebhookConfiguration (plain manifests; OLM names its own).
pub const WEBHOOK_CONFIGURATION: &str = "evpn-operator";
/// The container port of the webhook's HTTPS listener (admission; also /healthz, /readyz and its
/// own /metrics).
pub const WEBHOOK_PORT: u16 = 9443;
/// The container port of the operator's plain-HTTP listener (/metrics of the controllers and the
/// webhook, /healthz, /readyz): what probes and Prometheus use.
pub const METRICS_PORT: u16 = 8080;
/// The agent's plain-HTTP listener (/metrics, /healthz, /readyz), a port of the node itself (host
/// network): clear of what OVN-Kubernetes (9409-9411, 9476, 10256), frr-k8s (7572, 7573, 9140,
/// 9141), MetalLB (7472, 7473, 7946), the kubelet and kube-proxy (10248-10259) and node exporters
/// (9100) bind there.
pub const AGENT_METRICS_PORT: u16 = 9482;
/// Where the project's images are published.
pub const IMAGE_REGISTRY: &str = "ghcr.io/evpn-operator";
/// The version every generated manifest and image tag carries: the workspace version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The operator image of this version.
pub fn operator_image() -> String {
    format!("{IMAGE_REGISTRY}/{OPERATOR}:v{VERSION}")
}

/// The agent image of this version.
pub fn agent_image() -> String {
    format!("{IMAGE_REGISTRY}/{AGENT}:v{VERSION}")
}

/// Failure to read the inputs of, build, or write the generated files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: std::path::PathBuf, message: String },
    #[error("serializing {what}: {message}")]
    Serialize { what: String, message: String },
    #[error("writing {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}
