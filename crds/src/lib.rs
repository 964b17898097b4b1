//! The `evpn.k8s.ovn.org/v1alpha1` API.
//!
//! Four cluster-scoped kinds:
//! - [`Vtep`]: the underlay endpoint pool (VTEP IPs, VNI pool, how BGP is reached);
//! - [`Evpn`]: EVPN for one OVN-Kubernetes primary network (a MAC-VRF, an IP-VRF, or both);
//! - [`EvpnNetworkSet`]: per VTEP, the resolved networks its nodes carry, written by the operator;
//! - [`EvpnNodeState`]: what is particular to one node, written by the operator, with that
//!   node's agent reporting back in its status.
//!
//! Every rule that needs only the object itself lives twice: as CEL (`x-kubernetes-validations`)
//! in the generated schema, so new apiservers enforce it without a webhook round trip, and as the
//! plain functions in [`validation`], which the webhook calls because older apiservers (v1.20)
//! drop CEL silently. Unit tests hold the two to the same verdicts.

// kube's printcolumn(...) attributes repeat `type_ = ...` by design.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod evpn;
pub mod frrk8s;
pub mod manifests;
pub mod networkset;
pub mod nodestate;
pub mod validation;
pub mod vtep;

pub use common::{Condition, NetworkKind, NetworkRef, RouteTargets};
pub use evpn::{Evpn, EvpnSpec, EvpnStatus};
pub use networkset::{EvpnNetworkSet, EvpnNetworkSetSpec};
pub use nodestate::{EvpnNodeState, EvpnNodeStateSpec, EvpnNodeStateStatus};
pub use vtep::{Vtep, VtepSpec, VtepStatus};

/// The API group of every kind in this crate.
pub const GROUP: &str = "evpn.k8s.ovn.org";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs of this API, in the order they should be installed.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Vtep::crd(), Evpn::crd(), EvpnNetworkSet::crd(), EvpnNodeState::crd()]
}
