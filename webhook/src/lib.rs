//! Admission webhook for the evpn.k8s.ovn.org API.
//!
//! Rules that need other objects (VNI uniqueness, admin-only writes, gateway mode, the network
//! reference, agents writing only their own node's status) on top of the per-object rules in
//! [`evpn_crds::validation`]. Requests are judged against an in-memory [`index::Index`] fed by
//! watches, never by API calls of their own, so a decision takes microseconds and does not
//! depend on the apiserver answering while it waits for us.

pub mod index;
pub mod rules;
