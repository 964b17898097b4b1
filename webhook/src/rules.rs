//! The admission rules: pure functions of a request, the [`Index`] and the [`Policy`].
//!
//! Every denial names the field, the object it conflicts with, and what to do instead. Rules
//! that need only the object itself come from [`evpn_crds::validation`], so the webhook and the
//! CRDs' CEL rules cannot drift apart.

use evpn_crds::common::{NetworkKind, VNI_MAX, selector_matches};
use evpn_crds::validation::{FieldError, join};
use evpn_crds::{Evpn, EvpnNodeState, Vtep};
use k8s_openapi::api::authentication::v1::UserInfo;

use crate::index::{GatewayMode, Index, NetworkFacts, VrfSide, network_key};

mod mtu;

/// What kind of write a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// Lower-case name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Connect => "connect",
        }
    }
}

/// One admission request, reduced to what the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a, K> {
    pub operation: Operation,
    /// `status` for writes to the status subresource.
    pub sub_resource: Option<&'a str>,
    pub user: &'a UserInfo,
    /// The object after the write (absent on delete).
    pub object: Option<&'a K>,
    /// The object before the write (absent on create).
    pub old_object: Option<&'a K>,
}

/// The outcome of the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admit, with warnings `kubectl` prints.
    Allow(Vec<String>),
    /// Refuse, with the message `kubectl` prints.
    Deny(String),
}

impl Verdict {
    fn allow() -> Self {
        Self::Allow(Vec::new())
    }

    fn from_errors(errors: Vec<FieldError>, warnings: Vec<String>) -> Self {
        if errors.is_empty() { Self::Allow(warnings) } else { Self::Deny(join(&errors)) }
    }
}

/// What to do when neither the nodes nor the ovnkube-config ConfigMap tell the gateway mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UnknownGatewayMode {
    /// Admit, with a warning that says the mode could not be checked.
    #[default]
    Warn,
    /// Refuse until the mode can be checked.
    Deny,
}

/// Who is who, from the webhook's configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Groups trusted without asking RBAC: their members manage EVPNs on every VTEP with no
    /// SubjectAccessReview (see [`crate::access`]) and may write any node's EVPNNodeState status.
    pub admin_groups: Vec<String>,
    /// The operator's user name: the only writer of EVPNNodeState specs.
    pub operator_user: String,
    /// Gateway-mode policy when nothing tells the mode.
    pub unknown_gateway_mode: UnknownGatewayMode,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            admin_groups: DEFAULT_ADMIN_GROUPS.iter().map(|g| (*g).to_owned()).collect(),
            operator_user: DEFAULT_OPERATOR_USER.into(),
            unknown_gateway_mode: UnknownGatewayMode::Warn,
        }
    }
}

/// The group the apiserver's authorizer never refuses: trusting it skips a review whose answer
/// is known. Every other admin passes through RBAC.
pub const DEFAULT_ADMIN_GROUPS: [&str; 1] = ["system:masters"];

/// The operator's service account, as deployed by config/.
pub const DEFAULT_OPERATOR_USER: &str = "system:serviceaccount:evpn-system:evpn-operator";

/// Extra user info key bound service-account tokens carry for pods (Kubernetes 1.30+).
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

impl Policy {
    /// Whether `user` is in one of the admin groups.
    pub fn is_admin(&self, user: &UserInfo) -> bool {
        user.groups.iter().flatten().any(|g| self.admin_groups.contains(g))
    }
}

/// The node an identity acts for: `system:node:NAME` (the kubelet's credentials), or a bound
/// service-account token's node-name extra.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    if let Some(node) = user.username.as_deref().and_then(|u| u.strip_prefix("system:node:")) {
        return Some(node);
    }
    user.extra.as_ref()?.get(NODE_NAME_EXTRA)?.first().map(String::as_str)
}

/// Rules for EVPN writes.
pub fn validate_evpn(req: &Request<'_, Evpn>, index: &Index, policy: &Policy) -> Verdict {
    match (req.operation, req.object, req.old_object) {
        (Operation::Delete, _, _) => Verdict::allow(),
        (Operation::Create, Some(new), _) => {
            let mut errors = new.spec.validate();
            let warnings = check_evpn_against_cluster(new, None, index, policy, &mut errors);
            Verdict::from_errors(errors, warnings)
        }
        (Operation::Update, Some(new), Some(old)) => {
            // Finalizers, labels and status-free metadata changes: RBAC alone decides.
            if new.spec == old.spec {
                return Verdict::allow();
            }
            let mut errors = new.spec.validate_update(&old.spec);
            let warnings = check_evpn_against_cluster(new, Some(old), index, policy, &mut errors);
            Verdict::from_errors(errors, warnings)
        }
        _ => Verdict::Deny("the request carries no EVPN to validate".into()),
    }
}

fn spec_vnis(evpn: &Evpn) -> Vec<(VrfSide, u32)> {
    [(VrfSide::Mac, &evpn.spec.mac_vrf), (VrfSide::Ip, &evpn.spec.ip_vrf)]
        .into_iter()
        .filter_map(|(side, vrf)| Some((side, vrf.as_ref()?.vni?)))
        .collect()
}

fn check_evpn_against_cluster(
    new: &Evpn,
    old: Option<&Evpn>,
    index: &Index,
    policy: &Policy,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    let name = new.metadata.name.as_deref().unwrap_or_default();
    let vtep_name = &new.spec.vtep;
    let vtep = index.vtep(vtep_name);
    if vtep.is_none() && old.is_none() {
        errors.push(field_error(
            "spec.vtep",
            format!("VTEP {vtep_name:?} does not exist: create it first, or name an existing one"),
        ));
    }

    for (side, vni) in spec_vnis(new) {
        let field = format!("spec.{}.vni", side.field());
        if !(1..=VNI_MAX).contains(&vni) {
            continue; // already reported by the per-object rules
        }
        // An update may keep or confirm a VNI the EVPN already holds; anything else must be free.
        let held = old.and_then(|_| index.evpn(name)).is_some_and(|e| e.vnis.contains(&(side, vni)));
        if let Some(resolved) = resolved_vni(old, side)
            && resolved != vni
        {
            errors.push(field_error(
                &field,
                format!("the operator allocated VNI {resolved} to this VRF; set {resolved} or leave vni empty (VNIs cannot change in place)"),
            ));
            continue;
        }
        if !held && let Some((other, other_side)) = index.vni_owners(vni, name).first() {
            errors.push(field_error(
                &field,
                format!(
                    "VNI {vni} is already used by EVPN {other:?} (spec.{}); MAC-VRFs and IP-VRFs share one VNI space: \
                     choose a free VNI, or leave vni empty to have one allocated",
                    other_side.field()
                ),
            ));
        }
        if let Some(vtep) = vtep
            && !vtep.vni_ranges.is_empty()
            && !vtep.vni_ranges.iter().any(|r| (r.start..=r.end).contains(&vni))
        {
            let ranges: Vec<String> = vtep.vni_ranges.iter().map(|r| format!("{}-{}", r.start, r.end)).collect();
            errors.push(field_error(
                &field,
                format!(
                    "VNI {vni} is outside VTEP {vtep_name:?}'s vniRanges [{}]: pick one inside them",
                    ranges.join(", ")
                ),
            ));
        }
    }

    if let Some(network) = check_network(new, old.is_some(), index, errors)
        && let Some(vtep) = vtep
    {
        mtu::check_evpn(&new.spec.network, network, vtep_name, vtep, &index.ovnkube_config, errors);
    }

    if let Some(vtep) = vtep
        && vtep.frr_configuration_selector.is_some()
        && new.spec.multi_homing.as_ref().is_some_and(|m| !m.ethernet_segments.is_empty())
    {
        errors.push(field_error(
            "spec.multiHoming",
            format!(
                "VTEP {vtep_name:?} leaves FRR to frr-k8s, whose FRRConfiguration has no field for Ethernet segments: \
                 use a VTEP with a bgp block, or remove the segments"
            ),
        ));
    }

    match (old, vtep) {
        (None, Some(vtep)) => check_gateway_mode(vtep_name, vtep.node_selector.as_ref(), index, policy, errors),
        _ => Vec::new(),
    }
}

fn resolved_vni(old: Option<&Evpn>, side: VrfSide) -> Option<u32> {
    let status = old?.status.as_ref()?;
    let vrf = match side {
        VrfSide::Mac => status.mac_vrf.as_ref(),
        VrfSide::Ip => status.ip_vrf.as_ref(),
    };
    vrf.map(|v| v.vni)
}

/// Checks the network an EVPN names, and returns its facts when the index has them.
fn check_network<'a>(
    new: &Evpn,
    is_update: bool,
    index: &'a Index,
    errors: &mut Vec<FieldError>,
) -> Option<&'a NetworkFacts> {
    let net = &new.spec.network;
    if net.kind == NetworkKind::UserDefinedNetwork && net.namespace.is_none() {
        return None; // reported by the per-object rules
    }
    if !index.networks_api_present {
        if !is_update {
            errors.push(field_error(
                "spec.network",
                format!("{net} cannot be checked: the k8s.ovn.org network API is not installed (is OVN-Kubernetes with user-defined networks running?)"),
            ));
        }
        return None;
    }
    let Some(facts) = index.network(&network_key(net)) else {
        if !is_update {
            errors.push(field_error("spec.network", format!("{net} does not exist: create the network first")));
        }
        return None;
    };
    if facts.transport.as_deref() == Some("EVPN") {
        errors.push(field_error(
            "spec.network",
            format!("{net} uses OVN-Kubernetes' own EVPN transport (spec.network.transport: EVPN); one network cannot be managed twice"),
        ));
    }
    if facts.role.as_deref() != Some("Primary") {
        errors.push(field_error(
            "spec.network",
            format!(
                "{net} has role {}: EVPN extends primary networks only",
                facts.role.as_deref().map_or_else(|| "none".to_owned(), |r| format!("{r:?}"))
            ),
        ));
    }
    match facts.topology.as_str() {
        "Layer2" if new.spec.mac_vrf.is_none() => errors.push(field_error(
            "spec.macVRF",
            format!("{net} is a Layer2 network: it needs a macVRF (add ipVRF as well for routing)"),
        )),
        "Layer3" if new.spec.mac_vrf.is_some() => errors.push(field_error(
            "spec.macVRF",
            format!(
                "{net} is a Layer3 network, which has no shared Layer2 segment to stretch: remove macVRF and use ipVRF"
            ),
        )),
        "Layer3" if new.spec.ip_vrf.is_none() => {
            errors.push(field_error("spec.ipVRF", format!("{net} is a Layer3 network: it needs an ipVRF")))
        }
        "Layer2" | "Layer3" => {}
        other => errors.push(field_error(
            "spec.network",
            format!("{net} has topology {other}: EVPN supports Layer2 and Layer3 networks only"),
        )),
    }
    Some(facts)
}

fn check_gateway_mode(
    vtep_name: &str,
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    index: &Index,
    policy: &Policy,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    let empty = Default::default();
    let selected = index.nodes().iter().filter(|(_, n)| selector_matches(selector.unwrap_or(&empty), &n.labels));
    let mut shared = Vec::new();
    let mut known = false;
    for (node, facts) in selected {
        match facts.gateway_mode {
            Some(GatewayMode::Shared) => shared.push(node.as_str()),
            Some(GatewayMode::Local) => known = true,
            None => {}
        }
    }
    if !shared.is_empty() {
        let more = if shared.len() > 3 { format!(" and {} more", shared.len() - 3) } else { String::new() };
        shared.truncate(3);
        errors.push(field_error(
            "spec.vtep",
            format!(
                "node(s) {shared:?}{more} of VTEP {vtep_name:?} run OVN-Kubernetes in shared gateway mode ({} annotation): \
                 EVPN needs local gateway mode (gateway mode=local in ovnkube-config)",
                crate::index::L3_GATEWAY_ANNOTATION
            ),
        ));
        return Vec::new();
    }
    match index.ovnkube_config.gateway_mode {
        Some(GatewayMode::Shared) if !known => {
            errors.push(field_error(
                "spec.vtep",
                "OVN-Kubernetes runs in shared gateway mode (ConfigMap ovnkube-config, [gateway] mode=shared): \
                 EVPN needs local gateway mode",
            ));
            Vec::new()
        }
        Some(_) => Vec::new(),
        None if known => Vec::new(),
        None => {
            let msg = format!(
                "could not tell OVN-Kubernetes' gateway mode: no node of VTEP {vtep_name:?} has the {} annotation and \
                 there is no ovnkube-config ConfigMap; EVPN works only in local gateway mode",
                crate::index::L3_GATEWAY_ANNOTATION
            );
            match policy.unknown_gateway_mode {
                UnknownGatewayMode::Warn => vec![msg],
                UnknownGatewayMode::Deny => {
                    errors.push(field_error("spec.vtep", msg));
                    Vec::new()
                }
            }
        }
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), message: message.into() }
}

/// Rules for VTEP writes; the policy is unused, as RBAC alone authorizes them (see
/// [`crate::access`]), but keeps the signature of every rule judged from the index.
pub fn validate_vtep(req: &Request<'_, Vtep>, index: &Index, _: &Policy) -> Verdict {
    match (req.operation, req.object, req.old_object) {
        (Operation::Delete, _, old) => {
            let name = old.and_then(|o| o.metadata.name.as_deref()).unwrap_or_default();
            let users = index.evpns_using_vtep(name);
            if users.is_empty() {
                Verdict::allow()
            } else {
                Verdict::Deny(format!("VTEP {name:?} is used by EVPN(s) {users:?}: delete those first"))
            }
        }
        (Operation::Create | Operation::Update, Some(new), old) => {
            if old.is_some_and(|o| o.spec == new.spec) {
                return Verdict::allow();
            }
            let mut errors = new.spec.validate();
            let name = new.metadata.name.as_deref().unwrap_or_default();
            if old.is_some() && !new.spec.vni_ranges.is_empty() {
                for evpn in index.evpns_using_vtep(name) {
                    for (side, vni) in index.evpn(evpn).map(|e| e.vnis.clone()).unwrap_or_default() {
                        if !new.spec.vni_ranges.iter().any(|r| (r.start..=r.end).contains(&vni)) {
                            errors.push(field_error(
                                "spec.vniRanges",
                                format!(
                                    "EVPN {evpn:?} uses VNI {vni} ({}), which the new ranges leave out; keep it inside",
                                    side.field()
                                ),
                            ));
                        }
                    }
                }
            }
            mtu::check_vtep(name, &new.spec, old.map(|o| &o.spec), index, &mut errors);
            Verdict::from_errors(errors, Vec::new())
        }
        _ => Verdict::Deny("the request carries no VTEP to validate".into()),
    }
}

/// Rules for EVPNNodeState writes: the operator owns specs, each node's agent its own status.
pub fn validate_node_state(req: &Request<'_, EvpnNodeState>, policy: &Policy) -> Verdict {
    let user = req.user.username.as_deref().unwrap_or_default();
    let name = req.object.or(req.old_object).and_then(|o| o.metadata.name.as_deref()).unwrap_or_default();
    if req.sub_resource == Some("status") {
        if node_of(req.user) == Some(name) || policy.is_admin(req.user) {
            return Verdict::allow();
        }
        return Verdict::Deny(match node_of(req.user) {
            Some(node) => format!(
                "user {user:?} acts for node {node:?} and may write only the status of EVPNNodeState {node:?}, not {name:?}"
            ),
            None => format!(
                "user {user:?} is not tied to a node (neither system:node:NAME nor a token with {NODE_NAME_EXTRA}): \
                 only a node's own agent writes an EVPNNodeState status"
            ),
        });
    }
    let spec_unchanged = match (req.object, req.old_object) {
        (Some(new), Some(old)) => new.spec == old.spec,
        _ => false,
    };
    if spec_unchanged || user == policy.operator_user {
        return Verdict::allow();
    }
    Verdict::Deny(format!(
        "EVPNNodeState {name:?} is written by the operator ({:?}) only, not by {user:?}: change the EVPN or VTEP it is derived from instead",
        policy.operator_user
    ))
}

#[cfg(test)]
mod tests;
