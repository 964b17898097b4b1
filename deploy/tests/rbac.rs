//! The RBAC each binary runs with allows every API request its code makes, and grants nothing
//! that no code uses: both the roles of `config/rbac/` and the permissions of the bundle's CSV.
//!
//! The requests are read from the source (see `api_calls`), so adding an API call without its
//! RBAC, or dropping the last call that needed a rule, fails here. Two approximations, both on the
//! side of the apiserver's own checks: a request through an `Api` built with a namespace is
//! covered by a Role of the account in any namespace (which namespace is not read from the code),
//! and a namespaced kind reached through `Api::all` needs a ClusterRole.
//!
//! One right is granted at run time instead: the operator's per-VTEP Roles let agents list and
//! watch their BGP password Secrets (`GRANTED_VERBS` in `operator/src/bgp_passwords.rs`, read from
//! there). The agent's static rules need not cover those requests, and the operator must hold
//! that right itself, since RBAC lets no one grant what they do not have.

#![allow(clippy::unwrap_used, reason = "a test that cannot read the repository should panic")]

mod api_calls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use api_calls::{Call, Scan};
use evpn_deploy::files::{read_yaml_dir, repo_root};
use serde_json::Value;

/// A permission a request needs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    group: String,
    resource: String,
    verb: String,
    namespaced: bool,
    at: String,
}

fn typed<K: kube::Resource<DynamicType = ()>>() -> (String, String) {
    (K::group(&()).into_owned(), K::plural(&()).into_owned())
}

/// The group and resource of the kind a request is about. CRD kinds come from the CRDs
/// themselves (the Rust type is the kind in other letter case); built-in kinds from their
/// k8s-openapi types; dynamic APIs from the function that builds their resource.
fn resources_of(call: &Call) -> Result<Vec<(String, String)>, String> {
    use k8s_openapi::api::{apps, authorization, coordination, core, events, rbac};
    if let Some(crd) = evpn_crds::crds().iter().find(|c| c.spec.names.kind.eq_ignore_ascii_case(&call.kind)) {
        return Ok(vec![(crd.spec.group.clone(), crd.spec.names.plural.clone())]);
    }
    Ok(vec![match call.kind.as_str() {
        "ConfigMap" => typed::<core::v1::ConfigMap>(),
        "DaemonSet" => typed::<apps::v1::DaemonSet>(),
        "Event" => typed::<events::v1::Event>(),
        "FrrConfiguration" => typed::<evpn_crds::frrk8s::FrrConfiguration>(),
        "FrrNodeState" => typed::<evpn_crds::frrk8s::FrrNodeState>(),
        "BgpSessionState" => typed::<evpn_crds::frrk8s::BgpSessionState>(),
        "Lease" => typed::<coordination::v1::Lease>(),
        "Namespace" => typed::<core::v1::Namespace>(),
        "Node" => typed::<core::v1::Node>(),
        "Role" => typed::<rbac::v1::Role>(),
        "RoleBinding" => typed::<rbac::v1::RoleBinding>(),
        "Secret" => typed::<core::v1::Secret>(),
        "SubjectAccessReview" => typed::<authorization::v1::SubjectAccessReview>(),
        "DynamicObject" => {
            use evpn_crds::NetworkKind::{ClusterUserDefinedNetwork, UserDefinedNetwork};
            let network = |kind| {
                let r = evpn_webhook::watch::network_resource(kind);
                (r.group, r.plural)
            };
            return match call.dynamic.as_deref() {
                Some("network_resource(kind)") => {
                    Ok(vec![network(ClusterUserDefinedNetwork), network(UserDefinedNetwork)])
                }
                Some("network_resource(NetworkKind::ClusterUserDefinedNetwork)") => {
                    Ok(vec![network(ClusterUserDefinedNetwork)])
                }
                Some("network_resource(NetworkKind::UserDefinedNetwork)") => Ok(vec![network(UserDefinedNetwork)]),
                Some("attachment_resource()") => {
                    let r = evpn_webhook::watch::attachment_resource();
                    Ok(vec![(r.group, r.plural)])
                }
                other => Err(format!("{}: a dynamic Api of resource {other:?}, which this test cannot map", call.at)),
            };
        }
        other => return Err(format!("{}: Api<{other}>: add the kind to resources_of in {}", call.at, file!())),
    }])
}

/// What a binary's requests need, from its scan.
fn needs(scan: &Scan) -> Result<Vec<Need>, Vec<String>> {
    let mut errors = scan.errors.clone();
    let mut needs = Vec::new();
    for call in &scan.calls {
        match resources_of(call) {
            Ok(resources) => {
                for (group, plural) in resources {
                    let resource = match call.subresource {
                        Some(sub) => format!("{plural}/{sub}"),
                        None => plural,
                    };
                    for verb in &call.verbs {
                        needs.push(Need {
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: (*verb).into(),
                            namespaced: scan.namespaced_kinds.contains(&call.kind),
                            at: call.at.clone(),
                        });
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(needs) } else { Err(errors) }
}

/// Every module of the crates a binary links that can call the API.
fn binary_sources(roots: &[&str]) -> Vec<(PathBuf, syn::File)> {
    let repo = repo_root();
    let mut files = Vec::new();
    for root in roots {
        for file in api_calls::module_files(&repo.join(root)).unwrap() {
            let text = std::fs::read_to_string(&file).unwrap();
            let ast = syn::parse_file(&text).unwrap();
            let relative = file.strip_prefix(&repo).map(Path::to_owned).unwrap_or(file);
            files.push((relative, ast));
        }
    }
    files
}

const OPERATOR_SOURCES: [&str; 5] =
    ["operator/src/main.rs", "operator/src/lib.rs", "webhook/src/lib.rs", "deploy/src/lib.rs", "crds/src/lib.rs"];
const AGENT_SOURCES: [&str; 3] = ["agent/src/main.rs", "agent/src/lib.rs", "crds/src/lib.rs"];

fn allows(rule: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let has = |field: &str, want: &str| {
        rule[field].as_array().into_iter().flatten().any(|v| v.as_str().is_some_and(|s| s == want || s == "*"))
    };
    has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
}

/// Requests the rules do not allow, and rule entries (group, resource, verb) no request needs.
fn compare(cluster: &[Value], namespaced: &[Value], needs: &[Need]) -> (Vec<String>, Vec<String>) {
    let missing = needs
        .iter()
        .filter(|n| {
            let by = |rules: &[Value]| rules.iter().any(|r| allows(r, &n.group, &n.resource, &n.verb));
            !(by(cluster) || (n.namespaced && by(namespaced)))
        })
        .map(|n| format!("{} {}/{} ({}, needed at {})", n.verb, n.group, n.resource, scope(n.namespaced), n.at))
        .collect();
    let mut unused = Vec::new();
    for (rules, role) in [(cluster, "ClusterRole"), (namespaced, "Role")] {
        for rule in rules {
            let list = |field: &str| -> Vec<String> {
                rule[field].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        let used = needs.iter().any(|n| {
                            n.group == group
                                && n.resource == resource
                                && n.verb == verb
                                && (role == "ClusterRole" || n.namespaced)
                        });
                        if !used {
                            unused.push(format!("{role} grants {verb} {group}/{resource}"));
                        }
                    }
                }
            }
        }
    }
    (missing, unused)
}

fn scope(namespaced: bool) -> &'static str {
    if namespaced { "in one namespace" } else { "cluster-wide" }
}

/// The rules the CSV grants a service account: (cluster-wide, in the install namespace).
fn csv_rules(account: &str) -> (Vec<Value>, Vec<Value>) {
    let csv = &read_yaml_dir(&repo_root().join("bundle/manifests"))
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ClusterServiceVersion")
        .unwrap();
    let rules = |field: &str| -> Vec<Value> {
        csv["spec"]["install"]["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["serviceAccountName"] == account)
            .flat_map(|p| p["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    (rules("clusterPermissions"), rules("permissions"))
}

fn config_rules(account: &str) -> (Vec<Value>, Vec<Value>) {
    let rbac = read_yaml_dir(&repo_root().join("config/rbac")).unwrap();
    let permissions = evpn_deploy::bundle::permissions(&rbac).unwrap();
    let get = |m: &BTreeMap<String, Vec<Value>>| m.get(account).cloned().unwrap_or_default();
    (get(&permissions.cluster), get(&permissions.namespaced))
}

/// Where the operator says what it grants agents on their password Secrets.
const GRANTS_AT: &str = "operator/src/bgp_passwords.rs";

/// The verbs of `GRANTED_VERBS` in [`GRANTS_AT`].
fn granted_verbs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(GRANTS_AT)).unwrap();
    let file = syn::parse_file(&text).unwrap();
    let verbs = file.items.iter().find_map(|item| match item {
        syn::Item::Const(c) if c.ident == "GRANTED_VERBS" => Some(quote::ToTokens::to_token_stream(&c.expr)),
        _ => None,
    });
    let verbs = verbs.unwrap_or_else(|| panic!("{GRANTS_AT} has no const GRANTED_VERBS"));
    let array: syn::ExprArray = syn::parse2(verbs).unwrap();
    array
        .elems
        .iter()
        .map(|e| match e {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => s.value(),
            other => panic!("GRANTED_VERBS holds {}, not a string", quote::ToTokens::to_token_stream(other)),
        })
        .collect()
}

fn is_password_read(need: &Need, verbs: &[String]) -> bool {
    need.group.is_empty() && need.resource == "secrets" && need.namespaced && verbs.contains(&need.verb)
}

/// The agent's namespaced reads of Secrets are what the operator grants at run time.
fn granted_at_run_time(mut needs: Vec<Need>) -> Vec<Need> {
    let verbs = granted_verbs();
    needs.retain(|n| !is_password_read(n, &verbs));
    needs
}

/// The operator holds what it grants.
fn held_to_grant(mut needs: Vec<Need>) -> Vec<Need> {
    needs.extend(granted_verbs().into_iter().map(|verb| Need {
        group: String::new(),
        resource: "secrets".into(),
        verb,
        namespaced: true,
        at: format!("{GRANTS_AT}, granting it to agents"),
    }));
    needs
}

fn check_binary(binary: &str, account: &str, sources: &[&str], adjust: fn(Vec<Need>) -> Vec<Need>) {
    let scan = api_calls::scan(&binary_sources(sources));
    let needs = match needs(&scan) {
        Ok(needs) => adjust(needs),
        Err(errors) => panic!("the API calls of {binary} cannot all be read:\n  {}", errors.join("\n  ")),
    };
    assert!(!needs.is_empty(), "no API call found in {binary}: the scanner is broken");
    let mut report = Vec::new();
    for (source, (cluster, namespaced)) in
        [("config/rbac", config_rules(account)), ("the bundle's CSV", csv_rules(account))]
    {
        let (missing, unused) = compare(&cluster, &namespaced, &needs);
        report.extend(missing.iter().map(|m| format!("{source} does not allow {binary} to {m}")));
        report.extend(unused.iter().map(|u| format!("{source}: {u} to {account}, but no code of {binary} needs it")));
    }
    assert!(
        report.is_empty(),
        "RBAC and code disagree (after editing config/rbac, run `{}`):\n  {}",
        evpn_deploy::files::COMMAND,
        report.join("\n  ")
    );
}

#[test]
fn the_operator_may_make_every_request_its_code_makes_and_no_other() {
    check_binary("evpn-operator", evpn_deploy::OPERATOR, &OPERATOR_SOURCES, held_to_grant);
}

#[test]
fn the_agent_may_make_every_request_its_code_makes_and_no_other() {
    check_binary("evpn-agent", evpn_deploy::AGENT, &AGENT_SOURCES, granted_at_run_time);
}

fn scan_text(source: &str) -> Scan {
    api_calls::scan(&[(PathBuf::from("example.rs"), syn::parse_file(source).unwrap())])
}

#[test]
fn a_new_call_shows_up_as_a_need_the_rules_lack() {
    let scan = scan_text(
        r#"
        async fn prune(client: kube::Client) {
            let pods: Api<Pod> = Api::namespaced(client.clone(), "x");
            let (p, _) = (pods.clone(), 1);
            p.delete("a", &Default::default()).await;
            watcher(Api::<Node>::all(client), Default::default());
        }
        "#,
    );
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let found: Vec<(&str, &[&str])> = scan.calls.iter().map(|c| (c.kind.as_str(), c.verbs.as_slice())).collect();
    assert_eq!(found, [("Node", &["list", "watch"][..]), ("Pod", &["delete"][..])]);
    assert!(scan.namespaced_kinds.contains("Pod"));
    let need = Need {
        group: String::new(),
        resource: "pods".into(),
        verb: "delete".into(),
        namespaced: true,
        at: "example.rs:5".into(),
    };
    let rule: Value = serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]});
    let (missing, unused) = compare(&[], std::slice::from_ref(&rule), std::slice::from_ref(&need));
    assert_eq!(missing, ["delete /pods (in one namespace, needed at example.rs:5)"]);
    assert_eq!(unused, ["Role grants get /pods"]);
}

#[test]
fn what_the_scanner_cannot_follow_is_an_error() {
    let scan = scan_text(
        r#"
        fn f(client: Client) {
            let api = Api::all(client);
            let typed: Api<Node> = Api::all(client);
            somewhere_else(&typed);
            typed.evict("x");
            client.request_text(req);
        }
        "#,
    );
    let errors = scan.errors.join("\n");
    assert!(errors.contains("example.rs:3: cannot tell the kind"), "{errors}");
    assert!(errors.contains("example.rs:5: an Api is passed to somewhere_else"), "{errors}");
    assert!(errors.contains("example.rs:6: Api::evict"), "{errors}");
    assert!(errors.contains("example.rs:7: raw client request"), "{errors}");
}
