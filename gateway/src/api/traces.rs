//! A request's span for traces: one per HTTP request, a child of the caller's W3C
//! `traceparent` when it sends one, named and labelled once the router has matched the route.
//! Disabled, at the cost of a check, unless the gateway exports traces (`telemetry`).

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use poem::Request;
use poem::http::HeaderMap;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::TRACE_TARGET;

/// The span a request runs in; record its outcome with `finish`.
pub fn request_span(request: &Request) -> tracing::Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "HTTP request",
        otel.kind = "server",
        http.route = Empty,
        http.request.method = %request.method(),
        http.response.status_code = Empty,
        starcite.session_id = Empty,
        trace_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&RequestHeaders(request.headers()))
    });
    let callers = parent.span().span_context().clone();
    // Without a valid parent the span starts a trace of its own.
    let _ = span.set_parent(parent);
    // Without trace export (JSON logs only) the span has no trace of its own: the caller's
    // trace id, if it sent one, still ties the log lines to its trace.
    let own = span.context().span().span_context().clone();
    if let Some(trace) = [own, callers]
        .into_iter()
        .find(|context| context.is_valid())
    {
        span.record("trace_id", tracing::field::display(trace.trace_id()));
    }
    if let Some(id) = session_id(request.uri().path()) {
        span.record("starcite.session_id", id.as_str());
    }
    span
}

/// Names the span after the route the request matched, and records its status.
pub fn finish(span: &tracing::Span, method: &str, route: &str, status: u16) {
    if span.is_disabled() {
        return;
    }
    // The span started when the request began (its trace id goes into every log line of the
    // request), so its name is updated rather than recorded.
    span.context()
        .span()
        .update_name(format!("{method} {route}"));
    span.record("http.route", route);
    span.record("http.response.status_code", status);
}

/// The session a `/v1/sessions/{id}…` path names, percent-decoded.
fn session_id(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/v1/sessions/")?.split('/').next()?;
    if segment.is_empty() {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

/// Request headers as the propagator reads them.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_id_comes_from_the_path_decoded() {
        assert_eq!(
            session_id("/v1/sessions/a%2Fb/append").as_deref(),
            Some("a/b")
        );
        assert_eq!(session_id("/v1/sessions/plain").as_deref(), Some("plain"));
        assert_eq!(session_id("/v1/sessions"), None);
        assert_eq!(session_id("/v1/sessions/"), None);
        assert_eq!(session_id("/v1/sessions/%FF"), None);
        assert_eq!(session_id("/admin/sessions/x"), None);
    }
}
