//! Writes the allocations a plan records in specs: the EVPN fields and the VTEP's
//! `nodeAddresses` that the user left empty (see [`crate::plan`] for why specs).
//!
//! Each write is a JSON merge patch carrying the observed `resourceVersion`, so it is a
//! compare-and-swap: a user's edit that lands between the observation and the write makes it
//! fail (and the next round plan again from the edit), never undoes the edit. The writes run
//! beside the status writes and gate nothing: statuses still record every allocation before a
//! node is told it, so a spec that cannot be written yet delays only its own record.
//!
//! A new EVPN's record goes in the same write as its finalizer (made first in its first round),
//! not in one of its own: two writes in a round with one observed `resourceVersion` would make
//! the second fail and the record lag behind the EVPN's first `Ready`. Either way the record
//! changes nothing the nodes act on, so their network set entry keeps its revision
//! ([`evpn_crds::networkset::SetNetwork::same_content`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use evpn_crds::{Evpn, Vtep};
use futures::future::BoxFuture;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::plan::Plan;

/// One spec write: the kind of write (for backoff and metrics), the object's name, the write.
pub type SpecWrite = (&'static str, String, BoxFuture<'static, Result<(), kube::Error>>);

/// The spec writes of `plan` against what was observed.
pub fn spec_writes(
    client: &Client,
    plan: &Plan,
    evpns: &BTreeMap<String, Arc<Evpn>>,
    vteps: &BTreeMap<String, Arc<Vtep>>,
) -> Vec<SpecWrite> {
    let mut writes: Vec<SpecWrite> = Vec::new();
    let evpn_api: Api<Evpn> = Api::all(client.clone());
    for (name, spec) in &plan.evpn_specs {
        // A new EVPN's record rides on the write that adds its finalizer.
        if plan.add_finalizer.contains(name) {
            continue;
        }
        let Some(observed) = evpns.get(name) else { continue };
        let body = json!({"metadata": {"resourceVersion": observed.resource_version()}, "spec": spec});
        let (api, object) = (evpn_api.clone(), name.clone());
        writes.push((
            "EVPN/spec",
            name.clone(),
            Box::pin(async move { api.patch(&object, &PatchParams::default(), &Patch::Merge(&body)).await.map(drop) }),
        ));
    }
    let vtep_api: Api<Vtep> = Api::all(client.clone());
    for (name, addresses) in &plan.vtep_addresses {
        let Some(observed) = vteps.get(name) else { continue };
        let body = json!({"metadata": {"resourceVersion": observed.resource_version()},
            "spec": {"nodeAddresses": addresses}});
        let (api, object) = (vtep_api.clone(), name.clone());
        writes.push((
            "VTEP/spec",
            name.clone(),
            Box::pin(async move { api.patch(&object, &PatchParams::default(), &Patch::Merge(&body)).await.map(drop) }),
        ));
    }
    writes
}
