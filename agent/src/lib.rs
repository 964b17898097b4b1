//! `evpn-agent`: turns this node's `EVPNNodeState` into Linux devices and FRR configuration,
//! and reports back what it did.
//!
//! [`plan`] derives, purely, what the node must look like; the data plane and the FRR driver
//! realise it; the reconciler ties them to the API. One network's failure is reported for that
//! network alone: every stage works network by network.

pub mod dataplane;
pub mod frr;
pub mod metrics;
pub mod passwords;
pub mod plan;
pub mod reconcile;
pub mod report;
