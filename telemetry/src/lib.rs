//! What `evpn-operator` and `evpn-agent` tell their operators, set up the same way in both:
//! logs, traces, and a plain-HTTP endpoint for metrics and probes.
//!
//! Logs are JSON, one object a line, when stderr is not a terminal (a container's log is read by
//! collectors), and text for people at a terminal; `--log-format` overrides the guess. Traces
//! exist only when an OTLP endpoint is configured: without one no exporter, span processor or
//! task is made, and spans cost what the log filter makes them cost. With one, spans go over
//! OTLP/HTTP (protobuf) from a batch processor that runs as a task on the binary's own tokio
//! runtime, so tracing adds no thread.

pub mod serve;
mod signals;

pub use signals::shutdown_signal;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The standard variables that point the exporter at a collector; either one turns tracing on.
pub const OTLP_ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Command-line settings of logs and traces, the same in both binaries.
#[derive(clap::Args, Clone, Debug)]
#[group(id = "telemetry")]
pub struct Args {
    /// Log filter, e.g. `info` or `info,evpn_agent=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
    /// Log format: `json` (one object a line), `text`, or `auto` (text when stderr is a
    /// terminal, JSON otherwise).
    #[arg(long, env = "EVPN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector to send traces to, e.g. `http://otel-collector:4318` (`/v1/traces` is
    /// appended). Without it the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used; with none of them, nothing is traced.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

/// Format of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

impl LogFormat {
    /// `Auto` settled by whether the output is a terminal.
    pub fn resolve(self, terminal: bool) -> Self {
        match self {
            Self::Auto if terminal => Self::Text,
            Self::Auto => Self::Json,
            other => other,
        }
    }
}

impl Args {
    /// Where traces go, if anywhere: the flag, else whether a standard variable is set (the
    /// exporter reads those itself, with their own rules for the path).
    fn trace_endpoint(&self) -> Option<Option<String>> {
        match &self.otlp_endpoint {
            Some(base) => Some(Some(format!("{}/v1/traces", base.trim_end_matches('/')))),
            None => OTLP_ENDPOINT_VARS
                .iter()
                .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
                .then_some(None),
        }
    }
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] sends what is still buffered.
#[must_use = "dropping it loses the spans not yet exported; call shutdown before exiting"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter. The flush blocks on the exporter task,
    /// so it runs off the async workers.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

/// What a binary's `main` does around its work: sets up logs and traces for `service`, runs
/// `work`, flushes the traces, and turns the outcome into the exit code (an error logged first).
pub async fn main(args: &Args, service: &'static str, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let telemetry = match init(args, service) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{service}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = work.await;
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown().await;
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Installs the process-wide logger (and tracer, when an endpoint is configured) for `service`,
/// writing logs to stderr. Must run inside the tokio runtime when traces are exported.
pub fn init(args: &Args, service: &'static str) -> anyhow::Result<Telemetry> {
    let (subscriber, telemetry) = subscriber(args, service, std::io::stderr().is_terminal(), std::io::stderr)?;
    subscriber.try_init().context("installing the logger")?;
    Ok(telemetry)
}

/// The subscriber [`init`] installs, writing log lines to `writer` (`terminal`: whether that is
/// a terminal): a separate function so tests can capture its output and scope it to themselves.
pub fn subscriber<W>(
    args: &Args,
    service: &'static str,
    terminal: bool,
    writer: W,
) -> anyhow::Result<(impl tracing::Subscriber + Send + Sync + 'static, Telemetry)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&args.log).with_context(|| format!("invalid log filter {:?}", args.log))?;
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match args.log_format.resolve(terminal) {
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(terminal)),
        LogFormat::Json | LogFormat::Auto => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer),
        ),
    };
    let provider = match args.trace_endpoint() {
        Some(endpoint) => Some(tracer_provider(endpoint, service)?),
        None => None,
    };
    let traces = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let subscriber = Registry::default().with(logs).with(traces).with(filter);
    Ok((subscriber, Telemetry { provider }))
}

/// The OTLP/HTTP exporter behind a batch processor on the current tokio runtime. `endpoint`
/// `None` leaves the exporter to the standard variables.
fn tracer_provider(endpoint: Option<String>, service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .context("loading the system's root certificates for the OTLP exporter")?
        .https_or_http()
        .enable_http1()
        .build();
    let client = opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build().context("configuring the OTLP trace exporter")?;
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    // OTEL_SERVICE_NAME, when set, names the service instead.
    let mut resource =
        Resource::builder().with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.build()).build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test that cannot set up should panic")]

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn args(format: LogFormat) -> Args {
        Args { log: "info".into(), log_format: format, otlp_endpoint: None }
    }

    fn log_with(args: &Args, terminal: bool) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let (subscriber, _telemetry) = subscriber(args, "evpn-test", terminal, move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("reconcile", node = "worker-1").in_scope(|| {
                tracing::warn!(evpn = "blue", reason = "VrfNotFound", "network failed");
                tracing::debug!("filtered out");
            })
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_are_objects_with_the_fields_and_the_span() {
        let text = log_with(&args(LogFormat::Json), false);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "the debug line is filtered out: {text}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "network failed");
        assert_eq!((&line["evpn"], &line["reason"]), (&"blue".into(), &"VrfNotFound".into()), "fields are top-level");
        assert_eq!(line["span"]["name"], "reconcile");
        assert_eq!(line["span"]["node"], "worker-1");
        assert!(line["timestamp"].is_string());
    }

    #[test]
    fn auto_is_json_for_machines_and_text_at_a_terminal() {
        assert!(serde_json::from_str::<serde_json::Value>(log_with(&args(LogFormat::Auto), false).trim()).is_ok());
        let text = log_with(&args(LogFormat::Auto), true);
        assert!(text.contains('\u{1b}') && text.contains("network failed"), "coloured text: {text}");
        let forced = log_with(&args(LogFormat::Text), false);
        assert!(forced.contains(r#"reconcile{node="worker-1"}"#), "{forced}");
        assert!(!forced.contains('\u{1b}'), "no colour codes when not writing to a terminal: {forced}");
    }

    #[test]
    fn a_bad_filter_is_an_error_not_a_silent_default() {
        let bad = Args { log: "evpn=nonsense=".into(), ..args(LogFormat::Json) };
        assert!(subscriber(&bad, "evpn-test", false, std::io::sink).is_err());
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        if OTLP_ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return; // the environment configures a collector
        }
        let (_, telemetry) = subscriber(&args(LogFormat::Json), "evpn-test", false, std::io::sink).unwrap();
        assert!(!telemetry.exporting());
    }
}
