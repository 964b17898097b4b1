//! The HTTPS server: routes, handlers and the TLS accept loop.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evpn_crds::{Evpn, GROUP, Vtep};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::index::Index;
use crate::metrics::{KindLabel, Metrics, RequestLabels};
use crate::review::{self, DecodeError};
use crate::rules::{self, Policy, Request, Verdict};

/// Bodies above this are refused: an object is at most 1.5 MiB and a review carries two.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The watches that must have listed once before requests are judged.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Cache {
    Evpns = 1,
    Vteps = 2,
    Nodes = 4,
    ConfigMap = 8,
    ClusterNetworks = 16,
    Networks = 32,
}

const ALL_CACHES: u8 = 63;

/// Everything a request handler needs.
pub struct State {
    pub index: RwLock<Index>,
    pub policy: Policy,
    pub metrics: Metrics,
    synced: AtomicU8,
    /// Set once the listener is bound with a certificate loaded and the accept loop runs.
    serving: AtomicBool,
}

impl State {
    /// A state whose caches still have to sync.
    pub fn new(policy: Policy) -> Self {
        Self {
            index: RwLock::default(),
            policy,
            metrics: Metrics::default(),
            synced: AtomicU8::new(0),
            serving: AtomicBool::new(false),
        }
    }

    /// A state judged from a prepared index, with no watches (benchmarks and tests).
    pub fn with_index(policy: Policy, index: Index) -> Self {
        Self {
            index: RwLock::new(index),
            policy,
            metrics: Metrics::default(),
            synced: AtomicU8::new(ALL_CACHES),
            serving: AtomicBool::new(false),
        }
    }

    /// Records that a cache listed its objects.
    pub fn mark_synced(&self, cache: Cache) {
        self.synced.fetch_or(cache as u8, Ordering::Release);
    }

    /// Whether every cache listed its objects at least once.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire) == ALL_CACHES
    }

    /// Records that the HTTPS listener accepts admission requests.
    pub(crate) fn mark_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Whether the HTTPS listener accepts admission requests.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Why the webhook cannot take requests yet, if it cannot: what `/readyz` answers.
    pub fn readiness(&self) -> Result<(), String> {
        match (self.is_serving(), self.is_ready()) {
            (true, true) => Ok(()),
            (false, _) => Err("the webhook's HTTPS listener is not serving yet".into()),
            (true, false) => Err("the webhook's caches have not listed the cluster yet".into()),
        }
    }

    /// Changes the index.
    pub fn update(&self, change: impl FnOnce(&mut Index)) {
        change(&mut self.index.write().unwrap_or_else(PoisonError::into_inner));
    }

    fn judge<K>(&self, req: &Request<'_, K>, rule: fn(&Request<'_, K>, &Index, &Policy) -> Verdict) -> Verdict {
        if !self.is_ready() {
            // Judging from half a cache could admit a duplicate VNI: refuse until synced.
            return Verdict::Deny(
                "the EVPN webhook is starting and has not read the cluster yet; retry in a few seconds".into(),
            );
        }
        rule(req, &self.index.read().unwrap_or_else(PoisonError::into_inner), &self.policy)
    }
}

/// The webhook's routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/validate/evpns", post(evpns))
        .route("/validate/vteps", post(vteps))
        .route("/validate/evpnnodestates", post(node_states))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn evpns(Extract(st): Extract<Arc<State>>, body: Body) -> Response {
    admit::<Evpn>(&st, body, "EVPN", rules::validate_evpn).await
}

async fn vteps(Extract(st): Extract<Arc<State>>, body: Body) -> Response {
    admit::<Vtep>(&st, body, "VTEP", rules::validate_vtep).await
}

async fn node_states(Extract(st): Extract<Arc<State>>, body: Body) -> Response {
    // Ownership of node states needs no cache, so these are judged even while caches sync.
    handle(&st, body, "EVPNNodeState", |req| rules::validate_node_state(req, &st.policy)).await
}

async fn admit<K>(
    st: &State,
    body: Body,
    kind: &'static str,
    rule: fn(&Request<'_, K>, &Index, &Policy) -> Verdict,
) -> Response
where
    K: for<'de> serde::Deserialize<'de>,
{
    handle(st, body, kind, |req| st.judge(req, rule)).await
}

async fn handle<K>(
    st: &State,
    body: Body,
    kind: &'static str,
    judge: impl FnOnce(&Request<'_, K>) -> Verdict,
) -> Response
where
    K: for<'de> serde::Deserialize<'de>,
{
    let started = Instant::now();
    // The span covers reading the body. What is learned later goes to the trace alone
    // (`set_attribute`): recording it as span fields would make the JSON log layer re-encode the
    // span's fields on every record, a few µs per request on the webhook's hottest path.
    let span = tracing::info_span!("admission", kind);
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).instrument(span.clone()).await;
    let _entered = span.enter();
    let (response, operation, result) = match bytes {
        Err(_) => (
            json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {MAX_BODY_BYTES} bytes")),
            "unknown",
            "error",
        ),
        Ok(bytes) => match review::decode::<K>(&bytes, GROUP, kind) {
            Err(DecodeError::BadRequest(message)) => {
                (json_error(StatusCode::BAD_REQUEST, &message), "unknown", "error")
            }
            Err(DecodeError::Unreadable { api_version, uid, message }) => {
                span.set_attribute("uid", uid.clone());
                (review_response(review::encode(&api_version, &uid, &Verdict::Deny(message))), "unknown", "denied")
            }
            Ok(decoded) => {
                span.set_attribute("uid", decoded.uid.clone());
                let verdict = judge(&decoded.request());
                let result = if matches!(verdict, Verdict::Allow(_)) { "allowed" } else { "denied" };
                if let Verdict::Deny(reason) = &verdict {
                    tracing::info!(uid = %decoded.uid, operation = decoded.operation().as_str(), %reason, "denied");
                }
                let body = review::encode(&decoded.api_version, &decoded.uid, &verdict);
                (review_response(body), decoded.operation().as_str(), result)
            }
        },
    };
    span.set_attribute("operation", operation);
    span.set_attribute("result", result);
    st.metrics.requests.get_or_create(&RequestLabels { kind, operation, result }).inc();
    st.metrics.latency.get_or_create(&KindLabel { kind }).observe(started.elapsed().as_secs_f64());
    response
}

fn review_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn readyz(Extract(st): Extract<Arc<State>>) -> Response {
    if st.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

async fn metrics(Extract(st): Extract<Arc<State>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.encode()).into_response()
}

/// Serves `app` over TLS on `listener` until the task is dropped. HTTP/1.1 and HTTP/2 (ALPN).
pub async fn serve_tls(listener: TcpListener, tls: rustls::ServerConfig, app: Router) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small reviews and answers: without this, HTTP/2 latency waits on Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            if let Err(e) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
