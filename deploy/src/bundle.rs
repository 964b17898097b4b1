//! The OLM bundle (registry+v1): a ClusterServiceVersion, the CRDs and the people's ClusterRoles
//! under `manifests/`, the package and channel in `metadata/annotations.yaml`, and the
//! `bundle.Dockerfile` that labels the bundle image with the same values.
//!
//! What OLM cannot express is left to the operator or to the install guide: OLM installs
//! Deployments only, so the operator applies the agent's DaemonSet itself
//! ([`crate::workloads::agent_daemonset`], enabled by `--agent-image` in the CSV's deployment);
//! and CSV permissions name service accounts only, so the binding of the agent's role to the
//! group `system:nodes` (agents running with node credentials) is a plain-manifests feature.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use crate::workloads::{self, Certificates};
use crate::{AGENT, Error, NAMESPACE, OPERATOR, VERSION, WEBHOOK_PORT};

/// The OLM package of the bundle.
pub const PACKAGE: &str = "evpn-operator";
/// The channel this version is published in, and the package's default channel.
pub const CHANNEL: &str = "alpha";
/// Kubernetes 1.30 puts the node's name into a pod's service-account token, which is how the
/// webhook lets an agent running under OLM (with its service account, not node credentials)
/// write its own node's status.
pub const MIN_KUBE_VERSION: &str = "1.30.0";
/// The annotation that hides internal kinds from the console's "create" views.
pub const INTERNAL_OBJECTS: &str = "operators.operatorframework.io/internal-objects";

/// The CSV's name: package and version.
pub fn csv_name() -> String {
    format!("{PACKAGE}.v{VERSION}")
}

/// The bundle's metadata: `metadata/annotations.yaml` and the bundle image's labels.
pub fn annotations() -> BTreeMap<String, String> {
    [
        ("operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"),
        ("operators.operatorframework.io.bundle.manifests.v1", "manifests/"),
        ("operators.operatorframework.io.bundle.metadata.v1", "metadata/"),
        ("operators.operatorframework.io.bundle.package.v1", PACKAGE),
        ("operators.operatorframework.io.bundle.channels.v1", CHANNEL),
        ("operators.operatorframework.io.bundle.channel.default.v1", CHANNEL),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `bundle.Dockerfile`, built with `bundle/` as its context.
pub fn dockerfile() -> String {
    let mut text = String::from("FROM scratch\n\n");
    for (key, value) in annotations() {
        text.push_str(&format!("LABEL {key}={value}\n"));
    }
    text.push_str("\nCOPY manifests /manifests/\nCOPY metadata /metadata/\n");
    text
}

/// The RBAC of `config/rbac/` as OLM wants it: rules per service account, cluster-wide and in
/// the install namespace, and the ClusterRoles bound to no service account (the roles for
/// people), which the bundle ships as they are.
#[derive(Debug, Default)]
pub struct Permissions {
    pub cluster: BTreeMap<String, Vec<Value>>,
    pub namespaced: BTreeMap<String, Vec<Value>>,
    pub people_roles: Vec<Value>,
}

/// Reads the roles and bindings of `config/rbac/` into [`Permissions`]. Group subjects are left
/// out (a CSV cannot bind groups); a binding to a role that does not exist is an error.
pub fn permissions(rbac: &[Value]) -> Result<Permissions, Error> {
    let mut roles: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for doc in rbac {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind == "ClusterRole" || kind == "Role" {
            roles.insert((kind.to_owned(), name(doc).to_owned()), doc);
        }
    }
    let mut out = Permissions::default();
    let mut bound = Vec::new();
    for doc in rbac {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let target = match kind {
            "ClusterRoleBinding" => &mut out.cluster,
            "RoleBinding" if doc["metadata"]["namespace"] == NAMESPACE => &mut out.namespaced,
            "RoleBinding" => {
                return Err(Error::Invalid(format!(
                    "RoleBinding {} is outside {NAMESPACE}: a CSV grants namespaced rules only in its install namespace",
                    name(doc)
                )));
            }
            _ => continue,
        };
        let role_kind = doc["roleRef"]["kind"].as_str().unwrap_or_default().to_owned();
        let role_name = doc["roleRef"]["name"].as_str().unwrap_or_default().to_owned();
        let role = roles.get(&(role_kind.clone(), role_name.clone())).ok_or_else(|| {
            Error::Invalid(format!("{kind} {} refers to {role_kind} {role_name}, which config/rbac lacks", name(doc)))
        })?;
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        for subject in doc["subjects"].as_array().into_iter().flatten() {
            if subject["kind"] == "ServiceAccount" {
                let account = subject["name"].as_str().unwrap_or_default().to_owned();
                target.entry(account).or_default().extend(rules.iter().cloned());
                bound.push((role_kind.clone(), role_name.clone()));
            }
        }
    }
    out.people_roles = roles
        .iter()
        .filter(|((kind, name), _)| kind == "ClusterRole" && !bound.contains(&(kind.clone(), name.clone())))
        .map(|(_, role)| (*role).clone())
        .collect();
    Ok(out)
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The owned CRD description of `crd` for the CSV.
fn owned_crd(crd: &CustomResourceDefinition) -> Result<Value, Error> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .ok_or_else(|| Error::Invalid(format!("CRD {:?} has no storage version", crd.metadata.name)))?;
    let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    let schema = serde_json::to_value(schema)
        .map_err(|e| Error::Serialize { what: "a CRD schema".into(), message: e.to_string() })?;
    Ok(json!({
        "name": crd.metadata.name,
        "version": version.name,
        "kind": crd.spec.names.kind,
        "displayName": crd.spec.names.kind,
        "description": first_sentence(schema["description"].as_str().unwrap_or_default()),
        "specDescriptors": descriptors(&schema, "spec"),
        "statusDescriptors": descriptors(&schema, "status"),
    }))
}

/// One descriptor per top-level field of the `spec` or `status` schema, in the console's terms.
fn descriptors(schema: &Value, section: &str) -> Vec<Value> {
    let Some(fields) = schema["properties"][section]["properties"].as_object() else { return Vec::new() };
    fields
        .iter()
        .map(|(field, prop)| {
            let mut descriptor = json!({
                "path": field,
                "displayName": display_name(field),
                "description": first_sentence(prop["description"].as_str().unwrap_or_default()),
            });
            let x = x_descriptors(section, field, prop);
            if !x.is_empty() {
                descriptor["x-descriptors"] = json!(x);
            }
            descriptor
        })
        .collect()
}

/// The console widget for a field: conditions, numbers, switches, choices, node selectors.
fn x_descriptors(section: &str, field: &str, prop: &Value) -> Vec<String> {
    const UI: &str = "urn:alm:descriptor:com.tectonic.ui";
    match (section, field, prop["type"].as_str()) {
        ("status", "conditions", _) => vec!["urn:alm:descriptor:io.kubernetes.conditions".into()],
        ("status", _, Some("string" | "integer")) => vec!["urn:alm:descriptor:text".into()],
        ("spec", "nodeSelector", _) => vec![format!("{UI}:selector:core:v1:Node")],
        ("spec", _, Some("integer")) => vec![format!("{UI}:number")],
        ("spec", _, Some("boolean")) => vec![format!("{UI}:booleanSwitch")],
        ("spec", _, Some("string")) => prop["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|choice| format!("{UI}:select:{choice}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// `vniRanges` -> "VNI Ranges", `macVRF` -> "MAC VRF".
fn display_name(field: &str) -> String {
    const ACRONYMS: [&str; 13] =
        ["bfd", "bgp", "cidrs", "esi", "frr", "ip", "ips", "mac", "mtu", "udp", "vni", "vrf", "vtep"];
    let mut words: Vec<String> = Vec::new();
    for c in field.chars() {
        let starts_word = c.is_uppercase() && words.last().is_some_and(|w| !w.chars().all(char::is_uppercase));
        match words.last_mut() {
            Some(word) if !starts_word => word.push(c),
            _ => words.push(c.to_string()),
        }
    }
    words
        .iter()
        .map(|word| match word.to_lowercase().as_str() {
            "cidrs" => "CIDRs".to_owned(),
            "ips" => "IPs".to_owned(),
            lower if ACRONYMS.contains(&lower) => lower.to_uppercase(),
            _ => {
                let mut chars = word.chars();
                chars.next().map(|f| f.to_uppercase().chain(chars).collect()).unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_sentence(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.find(". ") {
        Some(end) => text[..=end].to_owned(),
        None => text,
    }
}

/// What the CSV says about the project on OperatorHub and in the console.
const DESCRIPTION: &str = "\
BGP-EVPN for OVN-Kubernetes primary user-defined networks (ClusterUserDefinedNetwork and \
UserDefinedNetwork).

Declare a `VTEP` (the underlay: VTEP addresses, VNI pool, BGP peers) and one `EVPN` per network. \
The operator allocates what you leave out (VNIs, route targets, ESIs, VTEP IPs), writes one \
`EVPNNodeState` per node, and an agent on every node programs Linux (bridge, VXLAN, SVI, VTEP IP) \
and the node's FRR, then reports back, so `kubectl get evpn` shows what really runs.

A Layer2 network becomes a MAC-VRF (L2VNI, route types 2 and 3), a Layer3 network an IP-VRF \
(L3VNI, route type 5, symmetric IRB). Bad or conflicting requests are rejected at admission.

Requires OVN-Kubernetes in local gateway mode and FRR on the nodes; see the install guide.";

/// The ClusterServiceVersion, from the code and `config/`: `rbac` and `samples` are the parsed
/// documents of `config/rbac/` and `config/samples/`.
pub fn csv(rbac: &[Value], samples: &[Value]) -> Result<Value, Error> {
    let crds = evpn_crds::crds();
    let examples: Vec<&Value> =
        samples.iter().filter(|s| s["apiVersion"].as_str().is_some_and(|v| v.starts_with(evpn_crds::GROUP))).collect();
    // Kinds nobody creates by hand (no sample) are the operator's and the agents' own.
    let internal: Vec<&str> = crds
        .iter()
        .filter(|crd| !examples.iter().any(|e| e["kind"] == crd.spec.names.kind.as_str()))
        .filter_map(|crd| crd.metadata.name.as_deref())
        .collect();
    let permissions = permissions(rbac)?;
    let rules_of = |accounts: &BTreeMap<String, Vec<Value>>| -> Vec<Value> {
        accounts.iter().map(|(account, rules)| json!({"serviceAccountName": account, "rules": rules})).collect()
    };
    let deployment = workloads::operator_deployment(Certificates::Olm, Some(&crate::agent_image()));
    let webhooks = workloads::webhook_configuration().webhooks.unwrap_or_default();
    let webhook_definitions: Vec<Value> = webhooks
        .iter()
        .map(|hook| {
            json!({
                "type": "ValidatingAdmissionWebhook",
                "generateName": hook.name,
                "deploymentName": OPERATOR,
                // OLM makes a Service `<deployment>-service` on this port and points it here.
                "containerPort": WEBHOOK_PORT,
                "targetPort": WEBHOOK_PORT,
                "webhookPath": hook.client_config.service.as_ref().and_then(|s| s.path.clone()),
                "rules": hook.rules,
                "failurePolicy": hook.failure_policy,
                "matchPolicy": hook.match_policy,
                "sideEffects": hook.side_effects,
                "timeoutSeconds": hook.timeout_seconds,
                "admissionReviewVersions": hook.admission_review_versions,
            })
        })
        .collect();
    let repository = env!("CARGO_PKG_REPOSITORY");
    Ok(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": csv_name(),
            "annotations": {
                "alm-examples": json_text("alm-examples", &examples)?,
                "capabilities": "Basic Install",
                "categories": "Networking",
                "containerImage": crate::operator_image(),
                "description": "BGP-EVPN for OVN-Kubernetes user-defined networks",
                "repository": repository,
                INTERNAL_OBJECTS: json_text("internal objects", &internal)?,
                "operatorframework.io/suggested-namespace": NAMESPACE,
            },
        },
        "spec": {
            "displayName": "EVPN Operator",
            "description": DESCRIPTION,
            "version": VERSION,
            "minKubeVersion": MIN_KUBE_VERSION,
            "maturity": CHANNEL,
            "keywords": ["evpn", "bgp", "vxlan", "ovn-kubernetes", "networking"],
            "provider": {"name": "evpn-operator", "url": repository},
            "links": [
                {"name": "Source", "url": repository},
                {"name": "Install guide", "url": format!("{repository}/blob/main/docs/install.md")},
            ],
            // The kinds are cluster-scoped and the operator watches the whole cluster.
            "installModes": [
                {"type": "OwnNamespace", "supported": false},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": true},
            ],
            "customresourcedefinitions": {
                "owned": crds.iter().map(owned_crd).collect::<Result<Vec<_>, _>>()?,
            },
            "webhookdefinitions": webhook_definitions,
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [{
                        "name": deployment.metadata.name,
                        "label": deployment.metadata.labels,
                        "spec": deployment.spec,
                    }],
                    "clusterPermissions": rules_of(&permissions.cluster),
                    "permissions": rules_of(&permissions.namespaced),
                },
            },
            "relatedImages": [
                {"name": OPERATOR, "image": crate::operator_image()},
                {"name": AGENT, "image": crate::agent_image()},
            ],
        },
    }))
}

/// An annotation value that is JSON text of its own.
fn json_text<T: serde::Serialize>(what: &str, value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Serialize { what: what.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_spell_acronyms() {
        assert_eq!(display_name("vniRanges"), "VNI Ranges");
        assert_eq!(display_name("macVRF"), "MAC VRF");
        assert_eq!(display_name("frrConfigurationSelector"), "FRR Configuration Selector");
        assert_eq!(display_name("cidrs"), "CIDRs");
        assert_eq!(display_name("observedGeneration"), "Observed Generation");
    }

    #[test]
    fn first_sentence_stops_at_the_first_full_stop() {
        assert_eq!(first_sentence("One thing.  Another\nthing."), "One thing.");
        assert_eq!(first_sentence("No stop"), "No stop");
    }
}
