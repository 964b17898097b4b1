//! Types shared by more than one kind.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A status condition, as the Kubernetes API conventions define it (`metav1.Condition`).
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The largest VNI a 24-bit VXLAN header can carry.
pub const VNI_MAX: u32 = 16_777_215;

/// The route-distinguisher indexes the operator hands out (the 2-byte number of an IPv4-address
/// RD). FRR gives every VNI and VRF it knows an automatic RD `<router ID>:<n>`, n counting up from
/// 1, even while the explicit RD of its configuration is not applied yet (as when FRR starts from
/// a saved configuration). The router ID is the VTEP IP, so an index in that low range equals
/// another VNI's automatic RD: both then originate the same type-3 route, and when one of them
/// moves to its configured RD it withdraws the other's. Only the upper half, which FRR would
/// reach with more than 32,767 VNIs on one node, is ours.
pub const RD_INDEX_RANGE: std::ops::RangeInclusive<u32> = 32768..=65535;

/// The OVN-Kubernetes network kinds an EVPN can extend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum NetworkKind {
    /// A cluster-scoped `ClusterUserDefinedNetwork` (k8s.ovn.org/v1).
    ClusterUserDefinedNetwork,
    /// A namespaced `UserDefinedNetwork` (k8s.ovn.org/v1).
    UserDefinedNetwork,
}

/// A reference to the OVN-Kubernetes primary network an EVPN extends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'UserDefinedNetwork' ? has(self.__namespace__) : !has(self.__namespace__)")
    .message("namespace is required for a UserDefinedNetwork and not allowed for a ClusterUserDefinedNetwork")
    .reason(Reason::FieldValueInvalid))]
pub struct NetworkRef {
    /// Kind of the network object.
    pub kind: NetworkKind,
    /// Name of the network object.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Namespace of a UserDefinedNetwork; must be empty for a ClusterUserDefinedNetwork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAMESPACE_PATTERN))]
    pub namespace: Option<String>,
}

impl std::fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// BGP extended-community route targets of a VRF.
///
/// Each entry is `ASN:NN` with a 2-byte ASN and a 4-byte number, `ASN:NN` with a 4-byte ASN and a
/// 2-byte number, or `A.B.C.D:NN` with a 2-byte number. Left empty, the operator derives
/// `ASN:VNI` from the VTEP's BGP ASN for both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTargets {
    /// Route targets whose routes are imported into this VRF.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = ROUTE_TARGET_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub import: Vec<String>,
    /// Route targets attached to the routes this VRF exports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = ROUTE_TARGET_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub export: Vec<String>,
}

/// Shape of a route target; [`crate::validation::parse_route_target`] also checks the ranges.
pub const ROUTE_TARGET_PATTERN: &str = r"^([0-9]{1,10}|[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}):[0-9]{1,10}$";

// The names below reach FRR's configuration (one command per line, words split at spaces) and
// the kernel's device names (`dev_valid_name`, sysfs paths), verbatim. Each pattern admits only
// characters neither can misread; `validation` holds the same rule as a function, for the
// webhook (older apiservers) and for the agent (objects written past the webhook).

/// A Linux interface name FRR can be given: 1-15 characters (`IFNAMSIZ`), letters, digits, `_`,
/// `.` and `-`, not starting with `.` or `-` (so never `.` or `..`, an option or a sysfs path).
pub const INTERFACE_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$";

/// A name of an FRR object (a BFD profile): 1-63 characters (bfdd's limit) of the same set.
pub const FRR_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$";

/// A Kubernetes object name (DNS subdomain, RFC 1123).
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A Kubernetes namespace name (DNS label, RFC 1123).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Whether a label set matches a selector (`matchLabels` and `matchExpressions` ANDed). A
/// selector with an unknown operator matches nothing, so a typo never selects every node.
pub fn selector_matches(selector: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    labels_match
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" => labels.get(&req.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&req.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&req.key),
                "DoesNotExist" => !labels.contains_key(&req.key),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors() {
        let node = labels(&[("rack", "r1"), ("role", "worker")]);
        assert!(selector_matches(&LabelSelector::default(), &node), "the empty selector selects everything");
        let by_label = LabelSelector { match_labels: Some(labels(&[("rack", "r1")])), ..Default::default() };
        assert!(selector_matches(&by_label, &node));
        assert!(!selector_matches(&by_label, &labels(&[("rack", "r2")])));
        let expr = |reqs| LabelSelector { match_expressions: Some(reqs), ..Default::default() };
        assert!(selector_matches(&expr(vec![requirement("rack", "In", &["r1", "r2"])]), &node));
        assert!(!selector_matches(&expr(vec![requirement("rack", "NotIn", &["r1"])]), &node));
        assert!(selector_matches(&expr(vec![requirement("zone", "NotIn", &["a"])]), &node));
        assert!(selector_matches(&expr(vec![requirement("role", "Exists", &[])]), &node));
        assert!(!selector_matches(&expr(vec![requirement("role", "DoesNotExist", &[])]), &node));
        assert!(!selector_matches(&expr(vec![requirement("role", "Equals", &["worker"])]), &node));
    }
}
