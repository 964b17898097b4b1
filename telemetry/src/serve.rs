//! The plain-HTTP endpoint of both binaries: `/metrics` (Prometheus), `/healthz` and `/readyz`.
//! What "alive" and "ready" mean is each binary's to say; both answer `503` with the reason when
//! not, which is what a probe acts on and a person reads.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// The content type of prometheus-client's text encoding (it ends with `# EOF`).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoints {
    /// The metrics, encoded as OpenMetrics text.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// `Ok` when ready, else why not (served with 503).
    pub ready: Check,
    /// `Ok` while alive, else why not (served with 503): a liveness probe restarts the process.
    pub live: Check,
}

/// A probe's check: `Ok`, or why not.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A check that always passes: the process answering is all it says.
pub fn answering() -> Check {
    Arc::new(|| Ok(()))
}

/// The routes, for serving or for calling directly.
pub fn router(endpoints: Endpoints) -> axum::Router {
    let Endpoints { metrics, ready, live } = endpoints;
    axum::Router::new()
        .route("/metrics", get(move || async move { ([(header::CONTENT_TYPE, OPENMETRICS)], metrics()) }))
        .route("/healthz", get(move || async move { probe(&live) }))
        .route("/readyz", get(move || async move { probe(&ready) }))
}

fn probe(check: &Check) -> axum::response::Response {
    match check() {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Binds `addr`, naming it in the error (a port taken by another host-network pod shows here).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener {addr}"))
}

/// Serves the endpoints on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(endpoints)).await.context("serving metrics")
}
