//! Spans reach a real OTLP/HTTP receiver, over the network, as protobuf, without a thread of
//! their own. The only test of this binary, so the thread count is not disturbed by others.

#![allow(clippy::unwrap_used, reason = "a test that cannot set up should panic")]

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use evpn_telemetry::{Args, LogFormat, subscriber};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::sync::mpsc;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn string_attribute(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_by_a_task_not_a_thread() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let _ = tx.send((content_type, body));
            async { StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let before = threads();
    let args = Args { log: "info".into(), log_format: LogFormat::Json, otlp_endpoint: Some(format!("http://{addr}/")) };
    let (subscriber, telemetry) = subscriber(&args, "evpn-test", false, std::io::sink).unwrap();
    assert!(telemetry.exporting());
    tracing::subscriber::with_default(subscriber, || {
        let round = tracing::info_span!("reconcile_round", evpns = 3, result = tracing::field::Empty);
        let _entered = round.enter();
        tracing::info_span!("write").in_scope(|| tracing::info!("inside"));
        round.record("result", "ok");
    });
    let after = threads();
    telemetry.shutdown().await;

    let (content_type, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(string_attribute(&resource.attributes, "service.name").as_deref(), Some("evpn-test"));
    let spans: Vec<_> = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
    let round = spans.iter().find(|s| s.name == "reconcile_round").unwrap();
    assert_eq!(string_attribute(&round.attributes, "evpns").as_deref(), Some("3"));
    assert_eq!(string_attribute(&round.attributes, "result").as_deref(), Some("ok"), "recorded after the start");
    let write = spans.iter().find(|s| s.name == "write").unwrap();
    assert_eq!((write.trace_id.clone(), write.parent_span_id.clone()), (round.trace_id.clone(), round.span_id.clone()));
    assert_eq!(after, before, "the exporter runs as a task on the runtime, not on a thread of its own");
}
