//! The HTTP surface without TLS: every kind of bad input gets a precise answer, never a crash,
//! and a mutation fuzzer drives the decoder and every validator with broken reviews.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use evpn_webhook::index::Index;
use evpn_webhook::rules::Policy;
use evpn_webhook::server::{MAX_BODY_BYTES, State, router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> Arc<State> {
    let mut index = Index::default();
    index.networks_api_present = true;
    Arc::new(State::with_index(Policy::default(), index))
}

async fn post(state: &Arc<State>, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(path).header("content-type", "application/json").body(body.into()).unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("answer to {path} is not JSON ({e}): {bytes:?}"));
    (status, value)
}

fn review(kind: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "4b1f", "kind": {"group": "evpn.k8s.ovn.org", "version": "v1alpha1", "kind": kind},
            "operation": "CREATE", "userInfo": {"username": "alice", "groups": ["system:masters"]},
            "object": object, "oldObject": null
        }
    })
}

fn evpn_object() -> Value {
    json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": "blue"},
           "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"}, "vtep": "fabric", "macVRF": {"vni": 10}}})
}

#[tokio::test]
async fn non_json_is_a_400_with_a_json_error() {
    let (status, body) = post(&state(), "/validate/evpns", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("not JSON"), "{body}");
}

#[tokio::test]
async fn wrong_envelope_is_a_400() {
    let (status, body) =
        post(&state(), "/validate/evpns", json!({"apiVersion": "v1", "kind": "Pod"}).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("AdmissionReview"), "{body}");
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let (status, body) = post(&state(), "/validate/evpns", no_request.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("no request"), "{body}");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let (status, body) = post(&state(), "/validate/evpns", vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("larger than"), "{body}");
}

#[tokio::test]
async fn object_of_the_wrong_shape_is_denied_with_the_reason() {
    let mut obj = evpn_object();
    obj["spec"]["macVRF"] = json!("ten");
    let (status, body) = post(&state(), "/validate/evpns", review("EVPN", obj).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["uid"], "4b1f");
    assert_eq!(body["response"]["allowed"], false);
    assert!(body["response"]["status"]["message"].as_str().unwrap().contains("does not match"), "{body}");
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let mut obj = evpn_object();
    obj["spec"]["futureField"] = json!({"x": 1});
    let mut rev = review("EVPN", obj);
    rev["request"]["somethingNew"] = json!(true);
    let (status, body) = post(&state(), "/validate/evpns", rev.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    // Judged on its merits: the VTEP "fabric" is not in this empty index.
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"].as_str().unwrap().contains("VTEP \"fabric\" does not exist"),
        "{body}"
    );
}

#[tokio::test]
async fn a_vtep_sent_to_the_evpn_endpoint_is_denied() {
    let vtep = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": "fabric"},
                      "spec": {"cidrs": ["198.18.0.0/24"], "frrConfigurationSelector": {}}});
    let (status, body) = post(&state(), "/validate/evpns", review("VTEP", vtep).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["response"]["status"]["message"].as_str().unwrap().contains("validates EVPN"), "{body}");
}

#[tokio::test]
async fn unsynced_caches_refuse_to_judge() {
    let state = Arc::new(State::new(Policy::default()));
    let (_, body) = post(&state, "/validate/evpns", review("EVPN", evpn_object()).to_string()).await;
    assert_eq!(body["response"]["allowed"], false);
    assert!(body["response"]["status"]["message"].as_str().unwrap().contains("starting"), "{body}");
    let resp = router(state).oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_count_requests_by_kind_operation_and_result() {
    let state = state();
    post(&state, "/validate/evpns", review("EVPN", evpn_object()).to_string()).await;
    post(&state, "/validate/evpns", "garbage").await;
    let resp = router(state).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains(r#"evpn_webhook_admission_requests_total{kind="EVPN",operation="create",result="denied"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"evpn_webhook_admission_requests_total{kind="EVPN",operation="unknown",result="error"} 1"#),
        "{text}"
    );
    assert!(text.contains("evpn_webhook_admission_duration_seconds_bucket"), "{text}");
}

/// A small deterministic generator (xorshift), so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-(rng.below(1000) as i64)),
        4 => json!("x".repeat(rng.below(40))),
        5 => json!([1, "a", null]),
        6 => json!({"a": {"b": []}}),
        _ => json!(16_777_216),
    }
}

/// Replaces, deletes or retypes one node somewhere in the JSON tree.
fn mutate_value(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(map) if !map.is_empty() && rng.below(4) != 0 => {
            let key = map.keys().nth(rng.below(map.len())).cloned().unwrap();
            match rng.below(4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_value(rng));
                }
                _ => mutate_value(map.get_mut(&key).unwrap(), rng),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.below(3) != 0 => {
            let i = rng.below(items.len());
            mutate_value(&mut items[i], rng);
        }
        other => *other = random_value(rng),
    }
}

fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(3) {
        0 => bytes.truncate(rng.below(bytes.len() + 1)),
        1 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
        _ => {
            let i = rng.below(bytes.len());
            bytes.insert(i, b"{}[]\",:\\"[rng.below(8)]);
        }
    }
}

#[tokio::test]
async fn mutated_reviews_never_crash_the_webhook() {
    let cases: u64 = std::env::var("EVPN_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000);
    let vtep = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": "fabric"},
                      "spec": {"cidrs": ["198.18.0.0/24"], "vniRanges": [{"start": 1, "end": 20}],
                               "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.1.1", "asn": 65000}]}}});
    let node_state = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPNNodeState", "metadata": {"name": "w1"},
                            "spec": {"vteps": [{"name": "fabric", "mode": "Managed", "cidrs": ["198.18.0.0/24"], "udpPort": 4789}]}});
    let mut update = review("EVPN", evpn_object());
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = evpn_object();
    let seeds = [
        ("/validate/evpns", review("EVPN", evpn_object())),
        ("/validate/evpns", update),
        ("/validate/vteps", review("VTEP", vtep)),
        ("/validate/evpnnodestates", review("EVPNNodeState", node_state)),
    ];
    let state = state();
    let mut rng = Rng(0x5eed_0000_0000_0001);
    for case in 0..cases {
        let (path, seed) = &seeds[rng.below(seeds.len())];
        let mut value = seed.clone();
        for _ in 0..=rng.below(3) {
            mutate_value(&mut value, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&value).unwrap();
        if rng.below(4) == 0 {
            mutate_bytes(&mut bytes, &mut rng);
        }
        let (status, body) = post(&state, path, bytes.clone()).await;
        let ok = match status {
            StatusCode::OK => body["response"]["allowed"].is_boolean() && body["response"]["uid"].is_string(),
            StatusCode::BAD_REQUEST => body["error"].is_string(),
            _ => false,
        };
        assert!(ok, "case {case} on {path}: {status} {body}\ninput: {}", String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn without_an_api_client_only_admin_groups_manage_evpns() {
    let mut rev = review("EVPN", evpn_object());
    rev["request"]["userInfo"] = json!({"username": "bob", "groups": ["system:authenticated"]});
    let (status, body) = post(&state(), "/validate/evpns", rev.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("verb \"manage\"") && message.contains("\"bob\""), "{body}");
}
