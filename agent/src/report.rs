//! What the agent tells the cluster: the node state's status, built purely from the outcome of
//! one reconcile.
//!
//! The operator reads it to count ready and failed nodes and to release an EVPN's VNIs only once
//! no node holds the EVPN any more. The status names the network set revisions acted on and lists
//! only the networks that are not applied (pending, failed, or still being removed), so a node
//! that carries a thousand healthy networks writes a small status, and a network that left the
//! sets stays listed until its devices and FRR configuration are gone.
//!
//! The status is readable through the built-in `view` role, so every message passes
//! [`crate::frr::redact`] once more here: no path from FRR's output to the status can carry a
//! BGP password.

use std::collections::BTreeMap;

use evpn_crds::EvpnNodeStateStatus;
use evpn_crds::common::Condition;
use evpn_crds::nodestate::{
    AgentInfo, AppliedNetworkSet, BgpSessionState, DesignatedForwarderRole, NetworkPhase, NetworkState, SegmentState,
    VniState, VtepState,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::frr::{ZebraSegment, redact};
use crate::plan::NetworkPlan;

/// How one network fared in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Devices and FRR configuration of this generation are in place.
    Applied { generation: i64 },
    /// Not realised yet for a reason that resolves itself (e.g. the VRF is not there yet).
    Pending { reason: String, message: String },
    /// Realising it failed; the reason is for machines, the message for people.
    Failed { reason: String, message: String },
    /// Left the spec, but removing it failed; retried on the next reconcile.
    RemovalFailed { reason: String, message: String },
}

/// Everything one reconcile learned.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    pub agent: Option<AgentInfo>,
    pub vteps: Vec<VtepState>,
    pub sessions: Vec<BgpSessionState>,
    /// The network set revisions this reconcile acted on.
    pub network_sets: Vec<AppliedNetworkSet>,
    /// The generation of each network last applied, what is still programmed when it fails.
    pub applied_generations: BTreeMap<String, i64>,
    /// Per EVPN, in spec order first, then the ones being removed.
    pub networks: Vec<(String, Outcome)>,
    /// VNI states as FRR reports them, by VNI.
    pub vnis: BTreeMap<u32, VniState>,
    /// VNIs of each network, to attach FRR's view of them.
    pub network_vnis: BTreeMap<String, Vec<u32>>,
    /// The planned Ethernet segments with FRR's view of them.
    pub segments: Vec<SegmentState>,
}

/// Each planned Ethernet segment with what zebra reports of it, found by ESI: the state where
/// zebra has it as local (once its `evpn mh` lines are applied), the role once zebra also runs
/// the election (it knows the VTEP address; before, no `nonDF` flag means nothing).
pub fn segment_states(networks: &[NetworkPlan], zebra: &[ZebraSegment]) -> Vec<SegmentState> {
    let planned = networks.iter().flat_map(|n| n.ethernet_segments.iter().map(move |s| (&n.evpn, s)));
    planned
        .map(|(evpn, segment)| {
            let local = zebra.iter().find(|z| z.esi == segment.esi && z.local);
            SegmentState {
                evpn: evpn.clone(),
                name: segment.name.clone(),
                esi: segment.esi.clone(),
                role: local
                    .filter(|z| z.ready)
                    .map(|z| if z.non_df { DesignatedForwarderRole::NonDF } else { DesignatedForwarderRole::DF }),
                state: local.map(|z| if z.oper_up { "Up" } else { "Down" }.to_owned()),
                peers: local.map(|z| z.vteps.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Builds the status. `previous` supplies the transition time of an unchanged condition.
pub fn status(observed: &Observed, previous: Option<&EvpnNodeStateStatus>, now: Time) -> EvpnNodeStateStatus {
    let mut applied = 0u32;
    let unapplied: Vec<NetworkState> = observed
        .networks
        .iter()
        .filter_map(|(evpn, outcome)| {
            let (phase, reason, message) = match outcome {
                Outcome::Applied { .. } => {
                    applied += 1;
                    return None;
                }
                Outcome::Pending { reason, message } => (NetworkPhase::Pending, reason, message),
                Outcome::Failed { reason, message } => (NetworkPhase::Failed, reason, message),
                Outcome::RemovalFailed { reason, message } => (NetworkPhase::Removing, reason, message),
            };
            let vnis = observed
                .network_vnis
                .get(evpn)
                .into_iter()
                .flatten()
                .filter_map(|vni| observed.vnis.get(vni).cloned())
                .collect();
            Some(NetworkState {
                evpn: evpn.clone(),
                applied_generation: observed.applied_generations.get(evpn).copied(),
                phase,
                reason: Some(reason.clone()),
                message: Some(redact(message, &[])),
                vnis,
            })
        })
        .collect();
    let failed = unapplied.iter().filter(|n| n.phase == NetworkPhase::Failed).count() as u32;
    let (ready, reason, message) = match unapplied.first() {
        None => ("True", "AllNetworksApplied", format!("{applied} networks applied")),
        Some(n) => (
            "False",
            if failed > 0 { "NetworksFailed" } else { "NetworksPending" },
            format!(
                "{applied} of {} networks applied; {} is {:?}: {}",
                observed.networks.len(),
                n.evpn,
                n.phase,
                n.message.as_deref().unwrap_or("no detail")
            ),
        ),
    };
    let previous_ready = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == ready => c.last_transition_time.clone(),
        _ => now,
    };
    EvpnNodeStateStatus {
        observed_generation: observed.generation,
        agent: observed.agent.clone(),
        vteps: observed.vteps.clone(),
        bgp_sessions: observed.sessions.clone(),
        ethernet_segments: observed.segments.clone(),
        network_sets: observed.network_sets.clone(),
        unapplied_networks: unapplied,
        applied_networks: applied,
        failed_networks: failed,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: observed.generation,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn observed(networks: Vec<(&str, Outcome)>) -> Observed {
        Observed {
            generation: Some(3),
            networks: networks.into_iter().map(|(n, o)| (n.to_owned(), o)).collect(),
            network_vnis: [("blue".to_owned(), vec![100])].into(),
            vnis: [(100, VniState { vni: 100, type_: "L2".into(), up: true })].into(),
            ..Default::default()
        }
    }

    fn failed(reason: &str) -> Outcome {
        Outcome::Failed { reason: reason.into(), message: "the VRF red does not exist".into() }
    }

    #[test]
    fn all_applied_is_ready_and_lists_nothing() {
        let s = status(&observed(vec![("blue", Outcome::Applied { generation: 2 })]), None, at(10));
        assert_eq!(s.applied_networks, 1);
        assert!(s.unapplied_networks.is_empty(), "applied networks are not listed");
        assert_eq!((s.conditions[0].status.as_str(), s.conditions[0].reason.as_str()), ("True", "AllNetworksApplied"));
    }

    #[test]
    fn a_failure_keeps_what_is_still_programmed_and_names_the_network() {
        let first = status(&observed(vec![("blue", Outcome::Applied { generation: 2 })]), None, at(10));
        let mut failing = observed(vec![("blue", failed("VrfNotFound"))]);
        failing.applied_generations.insert("blue".into(), 2);
        let s = status(&failing, Some(&first), at(20));
        let blue = &s.unapplied_networks[0];
        assert_eq!((blue.phase, blue.applied_generation), (NetworkPhase::Failed, Some(2)));
        assert_eq!(blue.vnis.len(), 1, "FRR's view of the network's VNIs is attached");
        assert_eq!(s.failed_networks, 1);
        let ready = &s.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NetworksFailed"));
        assert!(ready.message.contains("blue") && ready.message.contains("VRF red"), "{}", ready.message);
        assert_eq!(ready.last_transition_time, at(20));
    }

    #[test]
    fn no_message_carries_a_password_line() {
        let echo =
            "FRR rejected the commands of network blue: % Unknown command: neighbor 198.18.1.1 password s3cret x";
        let s = status(
            &observed(vec![("blue", Outcome::Failed { reason: "FrrConfigFailed".into(), message: echo.into() })]),
            None,
            at(10),
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("s3cret") && text.contains(crate::frr::REDACTED), "{text}");
    }

    #[test]
    fn transition_time_kept_while_the_condition_holds() {
        let first = status(&observed(vec![("blue", Outcome::Applied { generation: 2 })]), None, at(10));
        let again = status(&observed(vec![("blue", Outcome::Applied { generation: 3 })]), Some(&first), at(20));
        assert_eq!(again.conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn segments_carry_zebras_election_and_state() {
        use crate::frr::render::tests::{ethernet_segment, network, segment};
        let mut blue = network("blue", Some(segment(100, 1, &[], &[])), None);
        blue.ethernet_segments = vec![ethernet_segment(true), ethernet_segment(false)];
        let zebra = |esi: &str, local: bool, non_df: bool| ZebraSegment {
            esi: esi.into(),
            interface: local.then(|| "bond3".into()),
            local,
            ready: local,
            non_df,
            oper_up: true,
            vteps: vec!["198.18.0.2".into()],
        };
        let states = segment_states(
            std::slice::from_ref(&blue),
            &[zebra("00:11:22:33:44:55:66:77:88:99", false, false), zebra("03:02:aa:00:00:00:01:00:00:07", true, true)],
        );
        assert_eq!(
            states[0],
            SegmentState {
                evpn: "blue".into(),
                name: "s3".into(),
                esi: "03:02:aa:00:00:00:01:00:00:07".into(),
                role: Some(DesignatedForwarderRole::NonDF),
                state: Some("Up".into()),
                peers: vec!["198.18.0.2".into()],
            }
        );
        assert_eq!((states[1].role, states[1].state.as_deref()), (None, None), "known to zebra as remote only");
        let not_ready = ZebraSegment { ready: false, ..zebra("00:11:22:33:44:55:66:77:88:99", true, false) };
        let unelected = segment_states(std::slice::from_ref(&blue), &[not_ready]);
        assert_eq!((unelected[1].role, unelected[1].state.as_deref()), (None, Some("Up")), "no election yet");
        let s = status(&Observed { segments: states, ..observed(Vec::new()) }, None, at(10));
        assert_eq!(s.ethernet_segments.len(), 2);
    }

    #[test]
    fn removal_in_progress_is_listed_until_done() {
        let removing = Outcome::RemovalFailed { reason: "FrrCommandFailed".into(), message: "busy".into() };
        let s = status(&observed(vec![("red", removing)]), None, at(10));
        assert_eq!(s.unapplied_networks[0].phase, NetworkPhase::Removing);
        assert_eq!(s.conditions[0].reason, "NetworksPending");
    }
}
