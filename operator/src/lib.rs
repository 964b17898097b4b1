//! The evpn-operator's controllers: allocation, per-node fan-out and status aggregation
//! ([`plan`], pure), the loop that feeds and applies it ([`controller`]), and leader election
//! ([`leader`]).

pub mod agents;
pub mod allocator;
pub mod controller;
pub mod frrk8s;
pub mod leader;
pub mod metrics;
pub mod plan;

use std::sync::Arc;

/// Runs the controllers whenever this replica holds the leader lease, until dropped.
pub async fn run_controllers(
    client: kube::Client,
    election: leader::Election,
    config: controller::Config,
    metrics: Arc<metrics::Metrics>,
) {
    let work = || controller::run(client.clone(), config.clone(), metrics.clone());
    let record = |leading: bool| {
        metrics.leader.set(i64::from(leading));
    };
    election.lead(client.clone(), work, record).await;
}

/// A cluster-wide system MAC for type-3 ESIs: locally administered, derived from the UID of
/// the kube-system namespace, so every replica and every restart derives the same one.
pub async fn system_mac(client: &kube::Client) -> Result<[u8; 6], kube::Error> {
    use std::hash::{Hash, Hasher};
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let uid = ns.get("kube-system").await?.metadata.uid.unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let b = h.finish().to_be_bytes();
    Ok([0x02, b[0], b[1], b[2], b[3], b[4]])
}
