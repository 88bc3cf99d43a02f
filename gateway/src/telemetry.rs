//! Logs and traces.
//!
//! Logs are lines on stderr filtered by `STARCITE_LOG` (a `tracing` filter), as text or, with
//! `STARCITE_LOG_FORMAT=json`, one JSON object each. Traces go to an OpenTelemetry collector
//! over OTLP/HTTP when the standard variables name one (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_BSP_*` are read by the SDK). The spans meant for traces have a target of their own,
//! `TRACE_TARGET`: with no collector and text logs nothing is interested in it, so they are
//! never even created.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::prelude::*;

/// The target of every span meant for traces.
pub const TRACE_TARGET: &str = "starcite::trace";

/// The service name when `OTEL_SERVICE_NAME` is not set.
const SERVICE_NAME: &str = "starcite";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object a line, with the fields of the request's span (its trace id included).
    Json,
}

/// Keeps the trace exporter running; `shutdown` sends what is still buffered.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans go to a collector.
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }

    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(err) = traces.shutdown()
        {
            tracing::warn!("could not send the last traces: {err}");
        }
    }
}

/// Installs the process's logging and, when a collector is configured, trace export. A second
/// call (tests starting several gateways in one process) keeps the first.
pub fn init(filter: &str, format: LogFormat) -> Telemetry {
    let log_filter = || {
        // Text lines never show span fields: the trace spans stay out of them. JSON lines
        // carry the request span's fields, its trace id among them.
        let wanted = match format {
            LogFormat::Json => filter.to_owned(),
            LogFormat::Text => format!("{filter},{TRACE_TARGET}=off"),
        };
        EnvFilter::try_new(wanted).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let traces = collector_configured().then(tracer_provider).flatten();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
    };
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(Targets::new().with_target(TRACE_TARGET, Level::TRACE))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if !installed {
        return Telemetry { traces: None };
    }
    // W3C Trace Context in and out: callers' `traceparent` headers, and the one stored with
    // each event.
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));
    Telemetry { traces }
}

/// The W3C `traceparent` of `span` when it is traced: it rides with what the span stores, so
/// that whoever reads it later can link back.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove("traceparent")
}

/// A span for handing one stored event to a live reader, linked to the span that stored it
/// (`stored_by`, its `traceparent`): one trace shows an event from its producer to its readers.
pub fn delivery_span(stored_by: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(target: TRACE_TARGET, "tail delivery", otel.kind = "consumer");
    let Some(stored_by) = stored_by.filter(|_| !span.is_disabled()) else {
        return span;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), stored_by.to_owned())]);
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
    span
}

/// Whether the standard variables name an OTLP endpoint.
fn collector_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// A provider exporting in batches over OTLP/HTTP with protobuf; `None` (and a log line) when
/// the exporter cannot be built, since logs and the gateway work without traces.
fn tracer_provider() -> Option<SdkTracerProvider> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol != "http/protobuf"
    {
        eprintln!(
            "starcite: OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; traces go over http/protobuf"
        );
    }
    // The exporter's HTTP client is the gateway's reqwest build, which brings TLS without a
    // crypto provider of its own.
    crate::auth::install_crypto_provider();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("starcite: traces are off, the OTLP exporter failed: {err}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build(),
    )
}
