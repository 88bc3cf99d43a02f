//! An OpenTelemetry collector on loopback: it takes OTLP/HTTP trace exports (protobuf), as a
//! real collector's receiver does, and keeps every span for the test to look at.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, handler, http::StatusCode, post};
use prost::Message;
use tokio::task::JoinHandle;

use crate::eventually;

pub struct TestCollector {
    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    server: JoinHandle<()>,
}

#[handler]
fn export(body: Vec<u8>, spans: Data<&Arc<Mutex<Vec<Span>>>>) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) else {
        return StatusCode::BAD_REQUEST;
    };
    let received = request
        .resource_spans
        .into_iter()
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans);
    spans.lock().unwrap().extend(received);
    StatusCode::OK
}

impl TestCollector {
    pub async fn start() -> TestCollector {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let address = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let app = Route::new()
            .at("/v1/traces", post(export))
            .data(spans.clone());
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        TestCollector {
            endpoint: format!("http://{address}"),
            spans,
            server,
        }
    }

    /// The first span received that `wanted` accepts, waiting up to 15 s for it.
    pub async fn span(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        eventually(Duration::from_secs(15), || async {
            let spans = self.spans.lock().unwrap();
            let span = spans.iter().find(|span| wanted(span)).cloned();
            span.ok_or_else(|| format!("no {what} span"))
        })
        .await
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A span attribute's value as text (strings as they are, numbers and booleans written out).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}
