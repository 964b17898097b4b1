//! The agents' DaemonSet, kept applied by the operator where the installer cannot apply it: an
//! OLM bundle installs Deployments only. It is [`evpn_deploy::workloads::agent_daemonset`], the
//! object `config/deploy/agent.yaml` holds for installs with plain manifests.
//!
//! Every replica applies it (server-side apply of the same object is idempotent, so no Lease is
//! needed), at start and then periodically, which also undoes edits and a deletion.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};

/// Field manager of the DaemonSet.
const MANAGER: &str = "evpn-operator";
/// How often an applied DaemonSet is applied again.
const REAPPLY: Duration = Duration::from_secs(300);
/// How soon a failed apply is retried.
const RETRY: Duration = Duration::from_secs(10);

/// Applies the agents' DaemonSet with `image` in `namespace`, forever.
pub async fn keep_applied(client: kube::Client, namespace: &str, image: &str) {
    let api: Api<DaemonSet> = Api::namespaced(client, namespace);
    let daemonset = evpn_deploy::workloads::agent_daemonset(namespace, image);
    let params = PatchParams::apply(MANAGER).force();
    loop {
        let wait = match api.patch(evpn_deploy::AGENT, &params, &Patch::Apply(&daemonset)).await {
            Ok(_) => {
                tracing::debug!(%namespace, image, "agent DaemonSet applied");
                REAPPLY
            }
            Err(e) => {
                tracing::warn!(%namespace, error = %e, "applying the agent DaemonSet failed");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}
