//! Admission webhook for the evpn.k8s.ovn.org API: cross-object rules (VNI uniqueness, admin-only
//! writes, gateway mode, network references) on top of the per-object rules in
//! [`evpn_crds::validation`]. The server lands with its own issue; until then the apiserver's
//! schema (and CEL, on apiservers that have it) is the only check.
