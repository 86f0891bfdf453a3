//! Logs and traces of a Polaris process (`polaris serve`, the sidecar, `polaris agent run`).
//!
//! This crate owns the process's `tracing` subscriber — log lines on stderr and, when an
//! OTLP endpoint is configured, spans exported to a collector — and the trace context an
//! event carries from process to process: each hop makes its span a child of the event's
//! `traceparent` and passes its own context on ([`adopt`]). It never exports unless an
//! endpoint is configured, and never makes the event path wait for the collector: ended
//! spans go to a bounded queue that the SDK's own thread sends in batches (a full queue
//! drops spans, it does not block). Without an endpoint a hop costs one atomic load and
//! passes the event's context through untouched.
#![warn(missing_docs, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use polaris_config::{LogFormat, TelemetryConfig};
use polaris_protocol::TraceParent;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Whether spans are exported (set once by [`init`]): every hop checks it before it makes
/// a span of its own.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export may take before the batch is given up: a collector that does not
/// answer costs its spans, nothing else, and delays shutdown by at most this much.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// True when this process exports spans.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why the subscriber could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its settings.
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A subscriber was installed already.
    #[error("logging: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy)]
pub struct Logs<'a> {
    /// A `tracing` filter such as `info` or `polaris_runtime=debug,info` (`info` if it does
    /// not parse).
    pub filter: &'a str,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// The exporter, while this process exports: [`Telemetry::shutdown`] sends what is queued.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

/// Installs the process's subscriber: log lines on stderr filtered by `logs.filter`, and,
/// when `telemetry` is given, the spans of Polaris's own crates (at `info` and above,
/// whatever the log filter says) exported over OTLP/HTTP.
pub fn init(
    logs: Logs<'_>,
    telemetry: Option<&TelemetryConfig>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(logs.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match logs.format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr),
        ),
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
    };
    let provider = telemetry.map(provider).transpose()?;
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("polaris"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("polaris", LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(traces)
        .try_init()?;
    ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

fn provider(c: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(c.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(c.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // A trace continued from another process keeps that process's decision, so a trace is
    // whole or absent, never partly sampled.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(c.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Exports what is queued and stops. It blocks (at most about [`EXPORT_TIMEOUT`] for a
    /// collector that does not answer): call it after the async runtime has finished.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }
}

/// Makes `span` the event's next hop, before the span is first entered: its parent is
/// the context the event came with (`parent`), or it starts a trace; the answer is the
/// context the event goes on with (the span's own). When this process does not export,
/// `parent` goes on unchanged and nothing is formatted.
pub fn adopt(span: &Span, parent: Option<TraceParent>) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return parent;
    }
    if let Some(p) = &parent {
        // Fails only for a span the exporter does not see (filtered out): it then passes
        // the parent on below.
        let _ = span.set_parent(remote(p));
    }
    context_of(span).or(parent)
}

/// The context of `span` as a `traceparent` (`None` when this process does not export,
/// or the span is not exported).
pub fn context_of(span: &Span) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    if !sc.is_valid() {
        return None;
    }
    TraceParent::from_parts(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
    )
}

/// The context another process sent, as a parent for a span here.
fn remote(p: &TraceParent) -> Context {
    let sc = SpanContext::new(
        TraceId::from_bytes(p.trace_id_bytes()),
        SpanId::from_bytes(p.parent_id_bytes()),
        TraceFlags::new(p.flags()),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_continues_the_events_trace_with_a_span_of_its_own() {
        // No exporter: spans are made and dropped, which is all this needs.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(Targets::new().with_target("polaris", LevelFilter::INFO)),
        );
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        // Not exporting: the context goes on untouched.
        assert_eq!(adopt(&Span::none(), parent.clone()), parent);
        tracing::subscriber::with_default(subscriber, || {
            ENABLED.store(true, Ordering::Relaxed);
            let span = tracing::info_span!("hop");
            let next = adopt(&span, parent.clone()).expect("a context");
            let p = parent.as_ref().expect("parent");
            assert_eq!(next.trace_id(), p.trace_id());
            assert_ne!(next.parent_id(), p.parent_id());
            assert_eq!(next.flags(), 1);
            assert_eq!(context_of(&span), Some(next));
            // No context: a trace starts here.
            let root = adopt(&tracing::info_span!("root"), None).expect("a new trace");
            assert_ne!(root.trace_id(), p.trace_id());
            // A span the exporter does not see passes the parent on.
            let other = tracing::info_span!(target: "sqlx", "query");
            assert_eq!(adopt(&other, parent.clone()), parent);
        });
    }
}
