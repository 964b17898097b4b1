//! The HTTPS server: routes, handlers and the TLS accept loop.
//!
//! Anything in the cluster can open a connection to the webhook, so no client may hold one for
//! long without doing its part ([`Limits`]): the TLS handshake has a deadline; a connection on
//! which no request is being handled is closed after the idle timeout, which also bounds a client
//! trickling a request's headers (no request is handled before its headers are complete, for
//! HTTP/1.1 and HTTP/2 alike); a request, body included, has a deadline inside the apiserver's
//! 5 s; and the number of open connections is capped, so a flood costs waiting clients time,
//! not the process its file descriptors. The apiserver multiplexes its reviews over one HTTP/2
//! connection that keeps working while others are cut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evpn_crds::{Evpn, GROUP, Vtep};
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::access::{self, Access, Need, Reviews};
use crate::index::Index;
use crate::metrics::{ConnectionMetrics, KindLabel, LimitLabel, Metrics, RequestLabels};
use crate::review::{self, DecodeError};
use crate::rules::{self, Policy, Request, Verdict};

/// Bodies above this are refused: an object is at most 1.5 MiB and a review carries two.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// How long a connection closed for idling has to send its last bytes (an HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a client may hold of the server, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// To finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request being handled (idle, or still sending a request's headers).
    pub idle_timeout: Duration,
    /// To read a request's body and answer it; inside the apiserver's 5 s webhook timeout.
    pub request_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(4),
            max_connections: 1024,
        }
    }
}

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
    access: Access,
    synced: AtomicU8,
    /// Set once the listener is bound with a certificate loaded and the accept loop runs.
    serving: AtomicBool,
}

impl State {
    /// A state whose caches still have to sync. Without [`State::with_reviews`], only members
    /// of the policy's admin groups may manage EVPNs.
    pub fn new(policy: Policy) -> Self {
        let metrics = Metrics::default();
        Self {
            index: RwLock::default(),
            policy,
            access: Access::new(None, metrics.access_checks.clone()),
            metrics,
            synced: AtomicU8::new(0),
            serving: AtomicBool::new(false),
        }
    }

    /// A state judged from a prepared index, with no watches (benchmarks and tests).
    pub fn with_index(policy: Policy, index: Index) -> Self {
        Self { index: RwLock::new(index), synced: AtomicU8::new(ALL_CACHES), ..Self::new(policy) }
    }

    /// Asks the apiserver (SubjectAccessReviews) who may manage EVPNs on a VTEP.
    pub fn with_reviews(self, reviews: Reviews) -> Self {
        Self { access: Access::new(Some(reviews), self.metrics.access_checks.clone()), ..self }
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
    admit::<Evpn>(&st, body, "EVPN", access::evpn_needs, rules::validate_evpn).await
}

async fn vteps(Extract(st): Extract<Arc<State>>, body: Body) -> Response {
    // RBAC's verbs on vteps are the whole authorization of a VTEP write (see crate::access).
    admit::<Vtep>(&st, body, "VTEP", |_| None, rules::validate_vtep).await
}

async fn node_states(Extract(st): Extract<Arc<State>>, body: Body) -> Response {
    // Ownership of node states needs no cache, so these are judged even while caches sync.
    handle(&st, body, "EVPNNodeState", |_| None, |req| rules::validate_node_state(req, &st.policy)).await
}

async fn admit<K>(
    st: &State,
    body: Body,
    kind: &'static str,
    needs: fn(&Request<'_, K>) -> Option<Need>,
    rule: fn(&Request<'_, K>, &Index, &Policy) -> Verdict,
) -> Response
where
    K: for<'de> serde::Deserialize<'de>,
{
    handle(st, body, kind, needs, |req| st.judge(req, rule)).await
}

/// Decodes a review, asks RBAC for what the request `needs` on top of the write itself, and
/// `judge`s what RBAC allows.
async fn handle<K>(
    st: &State,
    body: Body,
    kind: &'static str,
    needs: fn(&Request<'_, K>) -> Option<Need>,
    judge: impl FnOnce(&Request<'_, K>) -> Verdict,
) -> Response
where
    K: for<'de> serde::Deserialize<'de>,
{
    let started = Instant::now();
    // The span covers reading the body and the access review. What is learned later goes to the
    // trace alone (`set_attribute`): recording it as span fields would make the JSON log layer
    // re-encode the span's fields on every record, a few µs per request on the webhook's hottest path.
    let span = tracing::info_span!("admission", kind);
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).instrument(span.clone()).await;
    let decoded = bytes.map(|bytes| review::decode::<K>(&bytes, GROUP, kind));
    let asked = match &decoded {
        Ok(Ok(decoded)) => needs(&decoded.request()).map(|need| (decoded.request().user, need)),
        _ => None,
    };
    let denied = match asked {
        Some((user, need)) => st.access.check(&st.policy, user, &need).instrument(span.clone()).await.err(),
        None => None,
    };
    let _entered = span.enter();
    let (response, operation, result) = match decoded {
        Err(_) => (
            json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {MAX_BODY_BYTES} bytes")),
            "unknown",
            "error",
        ),
        Ok(decoded) => match decoded {
            Err(DecodeError::BadRequest(message)) => {
                (json_error(StatusCode::BAD_REQUEST, &message), "unknown", "error")
            }
            Err(DecodeError::Unreadable { api_version, uid, message }) => {
                span.set_attribute("uid", uid.clone());
                (review_response(review::encode(&api_version, &uid, &Verdict::Deny(message))), "unknown", "denied")
            }
            Ok(decoded) => {
                span.set_attribute("uid", decoded.uid.clone());
                let verdict = match denied {
                    Some(reason) => Verdict::Deny(reason),
                    None => judge(&decoded.request()),
                };
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
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: Limits,
    metrics: ConnectionMetrics,
) {
    let limited = |limit| metrics.limited.get_or_create(&LimitLabel { limit }).inc();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                limited("connections");
                tracing::warn!(limit = limits.max_connections, "connection limit reached: new connections wait");
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return, // the semaphore is never closed
                }
            }
        };
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
        let (acceptor, app, metrics) = (acceptor.clone(), app.clone(), metrics.clone());
        metrics.open.inc();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_connection(tls, app, limits, &metrics, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => {
                    metrics.limited.get_or_create(&LimitLabel { limit: "handshake" }).inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
            metrics.open.dec();
            drop(slot);
        });
    }
}

/// Whether a connection is handling requests, and since when it has not.
struct Activity {
    /// Requests being handled, and when the last one started or ended (or the connection opened).
    state: Mutex<(usize, Instant)>,
}

/// One request being handled; ends with its drop.
struct InFlight(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = (state.0 + 1, Instant::now());
        InFlight(self.clone())
    }

    /// Counts from now, as if a request had just ended.
    fn restart(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = Instant::now();
    }

    /// When the connection will have idled for `timeout`, unless a request comes first.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        let (in_flight, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if in_flight > 0 { Instant::now() + timeout } else { since + timeout }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = (state.0.saturating_sub(1), Instant::now());
    }
}

/// Serves one TLS connection until the client closes it or it idles past the limit.
async fn serve_connection(
    tls: TlsStream<TcpStream>,
    app: Router,
    limits: Limits,
    metrics: &ConnectionMetrics,
    peer: SocketAddr,
) {
    let activity = Arc::new(Activity { state: Mutex::new((0, Instant::now())) });
    let service = {
        let (activity, app, timed_out) = (activity.clone(), TowerToHyperService::new(app), metrics.limited.clone());
        hyper::service::service_fn(move |request| {
            let in_flight = activity.begin();
            let (answer, timed_out) = (app.call(request), timed_out.clone());
            async move {
                let response = match tokio::time::timeout(limits.request_timeout, answer).await {
                    Ok(response) => response,
                    Err(_) => {
                        timed_out.get_or_create(&LimitLabel { limit: "request" }).inc();
                        let message =
                            format!("the request was not read and answered within {:?}", limits.request_timeout);
                        Ok(json_error(StatusCode::SERVICE_UNAVAILABLE, &message))
                    }
                };
                drop(in_flight);
                response
            }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let mut closing = false;
    let result = loop {
        let limit = if closing { CLOSE_GRACE } else { limits.idle_timeout };
        tokio::select! {
            result = connection.as_mut() => break result,
            () = tokio::time::sleep_until(activity.idle_deadline(limit).into()) => {
                if activity.idle_deadline(limit) > Instant::now() {
                    continue; // a request came meanwhile
                }
                if closing {
                    break Ok(()); // dropping the connection cuts it
                }
                metrics.limited.get_or_create(&LimitLabel { limit: "idle" }).inc();
                tracing::debug!(%peer, "closing an idle connection");
                // HTTP/2 says GOAWAY and still answers the requests the client sent before it
                // heard, each within the request timeout; HTTP/1.1 closes at once between
                // requests. A client half-way through its headers gets no more than the grace.
                connection.as_mut().graceful_shutdown();
                activity.restart();
                closing = true;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
