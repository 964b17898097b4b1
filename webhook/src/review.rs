//! AdmissionReview in and out.
//!
//! The happy path decodes the body once, straight into the typed object: decoding is most of a
//! request's cost. Only when that fails does the slow path look at the body as plain JSON, to
//! answer with a precise reason: HTTP 400 when the body is not an AdmissionReview at all (no
//! `uid` to answer to), a denied response when it is one but its object does not fit our types.

use k8s_openapi::api::authentication::v1::UserInfo;
use serde::{Deserialize, Serialize};

use crate::rules::{Operation, Request, Verdict};

/// API versions of AdmissionReview the webhook speaks.
const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<K> {
    api_version: String,
    kind: String,
    request: Option<ReviewRequest<K>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequest<K> {
    uid: String,
    kind: GroupVersionKind,
    operation: Operation,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    user_info: UserInfo,
    object: Option<K>,
    old_object: Option<K>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// A decoded request, owning its objects.
pub struct Decoded<K> {
    pub api_version: String,
    pub uid: String,
    operation: Operation,
    sub_resource: Option<String>,
    user_info: UserInfo,
    object: Option<K>,
    old_object: Option<K>,
}

impl<K> Decoded<K> {
    /// The view the rules take.
    pub fn request(&self) -> Request<'_, K> {
        Request {
            operation: self.operation,
            sub_resource: self.sub_resource.as_deref(),
            user: &self.user_info,
            object: self.object.as_ref(),
            old_object: self.old_object.as_ref(),
        }
    }

    /// The operation, for metrics.
    pub fn operation(&self) -> Operation {
        self.operation
    }
}

/// Why a body could not be judged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not an AdmissionReview: answered with HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// An AdmissionReview whose object we cannot read: answered with a denial.
    #[error("{message}")]
    Unreadable { api_version: String, uid: String, message: String },
}

/// Decodes a review for `kind` (e.g. `EVPN` in `evpn.k8s.ovn.org`).
pub fn decode<K: for<'de> Deserialize<'de>>(body: &[u8], group: &str, kind: &str) -> Result<Decoded<K>, DecodeError> {
    match serde_json::from_slice::<Review<K>>(body) {
        Ok(review) => {
            check_envelope(&review.api_version, &review.kind)?;
            let req = review.request.ok_or_else(|| DecodeError::BadRequest("AdmissionReview has no request".into()))?;
            if let Some(message) = kind_mismatch(group, kind, &req.kind.group, &req.kind.kind) {
                return Err(DecodeError::Unreadable { api_version: review.api_version, uid: req.uid, message });
            }
            Ok(Decoded {
                api_version: review.api_version,
                uid: req.uid,
                operation: req.operation,
                sub_resource: req.sub_resource.filter(|s| !s.is_empty()),
                user_info: req.user_info,
                object: req.object,
                old_object: req.old_object,
            })
        }
        Err(typed_error) => Err(explain(body, group, kind, &typed_error)),
    }
}

fn kind_mismatch(group: &str, kind: &str, got_group: &str, got_kind: &str) -> Option<String> {
    (got_group != group || got_kind != kind).then(|| {
        format!("this endpoint validates {kind}.{group}, not {got_kind}.{got_group}: check the webhook configuration's rules")
    })
}

fn check_envelope(api_version: &str, kind: &str) -> Result<(), DecodeError> {
    if kind != "AdmissionReview" || !API_VERSIONS.contains(&api_version) {
        return Err(DecodeError::BadRequest(format!(
            "expected an AdmissionReview in {API_VERSIONS:?}, got kind {kind:?} in {api_version:?}"
        )));
    }
    Ok(())
}

/// The slow path: says what is wrong with a body the typed decoder refused.
fn explain(body: &[u8], group: &str, kind: &str, typed_error: &serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return DecodeError::BadRequest(format!("body is not JSON: {e}")),
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let (api_version, review_kind) = (text(&value["apiVersion"]), text(&value["kind"]));
    if let Err(e) = check_envelope(&api_version, &review_kind) {
        return e;
    }
    let Some(uid) = value["request"]["uid"].as_str().filter(|u| !u.is_empty()) else {
        return DecodeError::BadRequest("AdmissionReview has no request.uid".into());
    };
    let request_kind = &value["request"]["kind"];
    let message = kind_mismatch(group, kind, &text(&request_kind["group"]), &text(&request_kind["kind"]))
        .unwrap_or_else(|| {
            format!("the request's {kind} does not match the evpn.k8s.ovn.org/v1alpha1 schema: {typed_error}")
        });
    DecodeError::Unreadable { api_version, uid: uid.to_owned(), message }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    reason: &'static str,
    message: &'a str,
}

/// Encodes the answer to a review.
pub fn encode(api_version: &str, uid: &str, verdict: &Verdict) -> Vec<u8> {
    let (allowed, status, warnings): (bool, Option<Status<'_>>, &[String]) = match verdict {
        Verdict::Allow(warnings) => (true, None, warnings),
        Verdict::Deny(message) => (false, Some(Status { code: 403, reason: "Forbidden", message }), &[]),
    };
    let review =
        ReviewOut { api_version, kind: "AdmissionReview", response: Response { uid, allowed, status, warnings } };
    // Serializing these plain structs cannot fail; an empty body would still be answered as an error.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use evpn_crds::Evpn;
    use serde_json::json;

    fn review(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "kind": "EVPN"},
                "resource": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "resource": "evpns"},
                "operation": "CREATE", "userInfo": {"username": "alice", "groups": ["system:masters"]},
                "object": object, "oldObject": null, "dryRun": false
            }
        }))
        .unwrap()
    }

    fn evpn() -> serde_json::Value {
        json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": "blue"},
               "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "macVRF": {"vni": 10}}})
    }

    #[test]
    fn decodes_a_review() {
        let decoded = decode::<Evpn>(&review(evpn()), "evpn.k8s.ovn.org", "EVPN").unwrap();
        assert_eq!(decoded.uid, "u-1");
        let req = decoded.request();
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.object.unwrap().spec.mac_vrf.as_ref().unwrap().vni, Some(10));
        assert!(req.old_object.is_none());
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        let bad = |body: &[u8]| match decode::<Evpn>(body, "evpn.k8s.ovn.org", "EVPN") {
            Err(DecodeError::BadRequest(m)) => m,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("decoded"),
        };
        assert!(bad(b"not json").contains("not JSON"));
        assert!(bad(b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}").contains("expected an AdmissionReview"));
        assert!(bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).contains("no request"));
        assert!(bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#).contains("uid"));
    }

    #[test]
    fn an_object_that_does_not_fit_is_denied_with_the_reason() {
        let mut obj = evpn();
        obj["spec"]["macVRF"]["vni"] = json!("ten");
        match decode::<Evpn>(&review(obj), "evpn.k8s.ovn.org", "EVPN") {
            Err(DecodeError::Unreadable { uid, message, .. }) => {
                assert_eq!(uid, "u-1");
                assert!(message.contains("does not match"), "{message}");
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn wrong_kind_for_the_endpoint_is_denied() {
        match decode::<Evpn>(&review(evpn()), "evpn.k8s.ovn.org", "VTEP") {
            Err(DecodeError::Unreadable { message, .. }) => assert!(message.contains("validates VTEP"), "{message}"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn encodes_denials_and_warnings() {
        let denied: serde_json::Value =
            serde_json::from_slice(&encode("admission.k8s.io/v1", "u-1", &Verdict::Deny("no".into()))).unwrap();
        assert_eq!(
            denied["response"],
            json!({"uid": "u-1", "allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "no"}})
        );
        let warned: serde_json::Value =
            serde_json::from_slice(&encode("admission.k8s.io/v1", "u-2", &Verdict::Allow(vec!["careful".into()])))
                .unwrap();
        assert_eq!(warned["response"], json!({"uid": "u-2", "allowed": true, "warnings": ["careful"]}));
        assert_eq!(warned["kind"], json!("AdmissionReview"));
    }
}
