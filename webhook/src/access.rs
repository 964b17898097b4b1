//! Who may manage EVPNs on a VTEP: RBAC decides, through a SubjectAccessReview.
//!
//! Writing an EVPN attaches a network to a fabric, so besides RBAC's own `create`/`update`/
//! `delete` on `evpns` it needs the dedicated verb [`MANAGE_VERB`] on the VTEP the EVPN names,
//! the way `use` on a PodSecurityPolicy or `approve` on a signer works: the ClusterRole
//! `evpn-admin` grants it on every VTEP, and a role with `resourceNames` can grant it on some.
//! Group membership alone is not the test, so GitOps service accounts and the admins of managed
//! clusters pass by being bound, like everything else in Kubernetes.
//!
//! The review is an apiserver round trip inside an admission call the apiserver is waiting on,
//! so it is bounded by a timeout well inside the webhook's 5 s (a review that fails or is late
//! denies, saying so), and positive answers are cached for a few seconds per identity and VTEP.
//! Denials are not cached, so a new binding takes effect on the next try. Members of the
//! configured admin groups (`--admin-group`, default `system:masters`, whom the apiserver's
//! authorizer never refuses anyway) are trusted without a review, and so is the operator
//! (`--operator-user`), which writes into EVPN specs only what it allocated.
//!
//! VTEP writes need nothing beyond RBAC's verbs on `vteps`, which only `evpn-admin` grants:
//! whoever RBAC lets write a VTEP manages the fabric by definition.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use evpn_crds::{Evpn, GROUP, Vtep};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Resource as _;
use kube::api::{Api, PostParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ResultLabel;
use crate::rules::{Operation, Policy, Request};

/// The verb on `vteps` that lets a subject manage EVPNs on that VTEP.
pub const MANAGE_VERB: &str = "manage";

/// The ClusterRole of config/rbac/users.yaml that grants [`MANAGE_VERB`] on every VTEP.
pub const GRANTING_ROLE: &str = "evpn-admin";

/// Entries kept at most in the cache of positive answers; beyond it the cache starts over.
const CACHE_CAPACITY: usize = 4096;

/// A permission an admission request needs from RBAC on top of RBAC's own check of the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// What the request does, for the denial: "creating an EVPN".
    pub action: &'static str,
    /// The VTEP to manage; `None` asks for every VTEP (an EVPN delete that carries no object).
    pub vtep: Option<String>,
}

/// What an EVPN write needs: [`MANAGE_VERB`] on the VTEP it names, unless the spec stays as it is
/// (finalizers, labels: RBAC alone decides, so the operator can manage its finalizer).
pub fn evpn_needs(req: &Request<'_, Evpn>) -> Option<Need> {
    let vtep_of = |evpn: Option<&Evpn>| evpn.map(|e| e.spec.vtep.clone());
    let (action, vtep) = match (req.operation, req.object, req.old_object) {
        (Operation::Delete, new, old) => ("deleting an EVPN", vtep_of(old.or(new))),
        (Operation::Create, Some(new), _) => ("creating an EVPN", vtep_of(Some(new))),
        (Operation::Update, Some(new), Some(old)) if new.spec != old.spec => ("changing an EVPN", vtep_of(Some(new))),
        _ => return None,
    };
    Some(Need { action, vtep })
}

/// The identity and permission a cached answer is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    user: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    vtep: Option<String>,
}

/// How the webhook asks the apiserver: the client, how long it waits, how long it remembers.
pub struct Reviews {
    client: kube::Client,
    timeout: Duration,
    cache_ttl: Duration,
    allowed: Mutex<HashMap<Key, Instant>>,
}

impl Reviews {
    /// Reviews through `client`, each bounded by `timeout`; positive answers kept for `cache_ttl`.
    pub fn new(client: kube::Client, timeout: Duration, cache_ttl: Duration) -> Self {
        Self { client, timeout, cache_ttl, allowed: Mutex::default() }
    }
}

/// Decides [`Need`]s: admin groups first, then a SubjectAccessReview.
pub struct Access {
    /// `None` where no apiserver is at hand (tests of the HTTP surface): only admin groups pass.
    reviews: Option<Reviews>,
    /// Checks by how they were settled.
    settled: Family<ResultLabel, Counter>,
}

impl Access {
    /// Asks the apiserver through `reviews`, counting checks in `settled`.
    pub fn new(reviews: Option<Reviews>, settled: Family<ResultLabel, Counter>) -> Self {
        Self { reviews, settled }
    }

    /// `Ok` when `user` holds `need`; otherwise the denial, naming the missing permission.
    pub async fn check(&self, policy: &Policy, user: &UserInfo, need: &Need) -> Result<(), String> {
        let (result, outcome) = self.settle(policy, user, need).await;
        self.settled.get_or_create(&ResultLabel { result }).inc();
        outcome
    }

    async fn settle(&self, policy: &Policy, user: &UserInfo, need: &Need) -> (&'static str, Result<(), String>) {
        if policy.is_admin(user) {
            return ("admin_group", Ok(()));
        }
        // The operator records what it allocated into the spec fields a user left empty; it
        // manages no EVPN of its own, and its writes pass the rules like anyone's.
        if user.username.as_deref() == Some(policy.operator_user.as_str()) {
            return ("operator", Ok(()));
        }
        let username = user.username.as_deref().unwrap_or_default();
        let Some(reviews) = &self.reviews else {
            let denial = format!(
                "{} needs {}, and this webhook has no API client to ask whether user {username:?} holds it",
                need.action,
                permission(need)
            );
            return ("no_client", Err(denial));
        };
        let key = Key {
            user: username.to_owned(),
            uid: user.uid.clone().unwrap_or_default(),
            groups: user.groups.clone().unwrap_or_default(),
            extra: user.extra.clone().unwrap_or_default(),
            vtep: need.vtep.clone(),
        };
        if reviews
            .allowed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .is_some_and(|t| t.elapsed() < reviews.cache_ttl)
        {
            return ("cached", Ok(()));
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(Vtep::plural(&()).into_owned()),
                    verb: Some(MANAGE_VERB.into()),
                    name: need.vtep.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(reviews.client.clone());
        let answer = match tokio::time::timeout(reviews.timeout, api.create(&PostParams::default(), &review)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return ("failed", Err(unanswered(need, username, &format!("the SubjectAccessReview failed: {e}"))));
            }
            Err(_) => {
                let late = format!("the apiserver did not answer the SubjectAccessReview within {:?}", reviews.timeout);
                return ("failed", Err(unanswered(need, username, &late)));
            }
        };
        let status = answer.status.unwrap_or_default();
        if status.allowed && !status.denied.unwrap_or(false) {
            let mut allowed = reviews.allowed.lock().unwrap_or_else(PoisonError::into_inner);
            if allowed.len() >= CACHE_CAPACITY {
                allowed.retain(|_, t| t.elapsed() < reviews.cache_ttl);
                if allowed.len() >= CACHE_CAPACITY {
                    allowed.clear();
                }
            }
            allowed.insert(key, Instant::now());
            return ("allowed", Ok(()));
        }
        let detail = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() { String::new() } else { format!(" (the apiserver says: {detail})") };
        let denial = format!(
            "{} needs {}, which user {username:?} lacks{detail}: bind the ClusterRole {GRANTING_ROLE}, \
             or a role with that verb{}",
            need.action,
            permission(need),
            need.vtep.as_ref().map(|v| format!(" and resourceNames: [{v:?}]")).unwrap_or_default()
        );
        ("denied", Err(denial))
    }
}

/// The permission in RBAC's terms: verb, resource, group and name.
fn permission(need: &Need) -> String {
    let on = match &need.vtep {
        Some(vtep) => format!("VTEP {vtep:?}"),
        None => "every VTEP".into(),
    };
    format!("permission to manage {on}: verb {MANAGE_VERB:?} on resource \"vteps\" in API group {GROUP:?}")
}

fn unanswered(need: &Need, username: &str, why: &str) -> String {
    format!(
        "{} needs {}, and whether user {username:?} holds it could not be checked: {why}; retry once the apiserver answers",
        need.action,
        permission(need)
    )
}
