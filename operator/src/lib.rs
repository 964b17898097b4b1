//! The evpn-operator's controllers: allocation, per-node fan-out and status aggregation
//! ([`plan`], pure), the loop that feeds and applies it ([`controller`]), and leader election
//! ([`leader`]).

pub mod agents;
pub mod allocator;
pub mod bgp_passwords;
pub mod controller;
pub mod frrk8s;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod record;

use std::sync::Arc;

/// Runs the controllers whenever this replica holds the leader lease, until dropped.
pub async fn run_controllers(
    connection: impl Into<leader::Connection>,
    election: leader::Election,
    config: controller::Config,
    metrics: Arc<metrics::Metrics>,
) {
    // The leader's client is fenced: it refuses every request once leadership has lapsed.
    let work = |fenced: kube::Client| {
        let controllers = controller::run(fenced.clone(), config.clone(), metrics.clone());
        let grants = bgp_passwords::run(fenced, election.namespace.clone());
        async move {
            futures::join!(controllers, grants);
        }
    };
    let record = |leading: bool| {
        metrics.leader.set(i64::from(leading));
    };
    election.lead(connection.into(), work, record).await;
}

/// A cluster-wide system MAC for type-3 ESIs: locally administered, derived from the UID of
/// the kube-system namespace, so every replica and every restart derives the same one.
pub async fn system_mac(client: &kube::Client) -> Result<[u8; 6], kube::Error> {
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let uid = ns.get("kube-system").await?.metadata.uid.unwrap_or_default();
    Ok(system_mac_of(&uid))
}

/// The system MAC of a cluster whose kube-system namespace has `uid`: `02` and the first five
/// bytes (big-endian) of SipHash-1-3 with zero keys over the UID's bytes and a 0xff terminator.
/// That is what std's `DefaultHasher` computed when these MACs were first handed out; std does
/// not promise it across releases, so the algorithm is spelled out here and pinned by a test.
pub fn system_mac_of(uid: &str) -> [u8; 6] {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(uid.as_bytes());
    h.write_u8(0xff);
    let b = h.finish().to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

#[cfg(test)]
mod tests {
    /// Values `DefaultHasher` gave on the toolchain that first handed them out (Rust 1.95): every
    /// automatic ESI in a running fabric depends on them.
    #[test]
    fn system_macs_are_pinned() {
        assert_eq!(super::system_mac_of(""), [0x02, 0x30, 0x40, 0x6e, 0xa5, 0x23]);
        assert_eq!(super::system_mac_of("3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7"), [0x02, 0x9d, 0x70, 0x28, 0x54, 0x2f]);
        assert_eq!(super::system_mac_of("kube-system-uid"), [0x02, 0xe9, 0x99, 0x01, 0x53, 0x00]);
    }
}
