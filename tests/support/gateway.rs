//! A gateway running in the test process on a random loopback port.

use std::time::Duration;

use gateway::Gateway;
use gateway::config::Config;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{TailClient, TestNats, eventually};

pub struct TestGateway {
    pub base_url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// A gateway with default settings on `nats`, ready to serve.
    pub async fn start(nats: &TestNats) -> TestGateway {
        TestGateway::start_with(TestGateway::config(nats)).await
    }

    /// The settings `start` uses, to adjust before `start_with`.
    pub fn config(nats: &TestNats) -> Config {
        let mut config = Config::default();
        config.nats.urls = vec![nats.url.clone()];
        config.nats.timeout = Duration::from_secs(2);
        config.catalog.dir = nats.catalog_dir();
        config
    }

    /// Settings for a gateway on the cluster nodes at `urls`, with streams of three replicas.
    pub fn replicated_config(urls: Vec<String>) -> Config {
        let mut config = Config::default();
        config.nats.urls = urls;
        config.nats.stream_replicas = 3;
        config.nats.timeout = Duration::from_secs(2);
        config
    }

    pub async fn start_with(config: Config) -> TestGateway {
        let gateway = TestGateway::spawn(config).await;
        gateway.wait_until_ready().await;
        gateway
    }

    /// Starts without waiting for readiness (for tests of NATS being down).
    pub async fn spawn(config: Config) -> TestGateway {
        gateway::telemetry::init("warn", gateway::telemetry::LogFormat::Text);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        // The gateway's reqwest speaks TLS through rustls, whose crypto provider is installed
        // once per process; the tests' clients share that build of reqwest.
        gateway::auth::install_crypto_provider();
        let gateway = Gateway::start(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestGateway {
            base_url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn wait_until_ready(&self) {
        self.wait_for_readiness(|status, _| status == 200).await;
    }

    /// `/health/ready`'s status and body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self.request(Method::GET, "/health/ready", None).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Polls readiness until `wanted` holds, and returns the body that satisfied it.
    pub async fn wait_for_readiness(&self, wanted: impl Fn(u16, &Value) -> bool) -> Value {
        eventually(Duration::from_secs(15), || async {
            let (status, body) = self.readiness().await;
            if wanted(status, &body) {
                Ok(body)
            } else {
                Err(format!("readiness stayed {status} {body}"))
            }
        })
        .await
    }

    /// Stops gracefully, closing tails, and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        self.prepare(method, path, body).send().await.unwrap()
    }

    /// A request with `token` as its bearer credentials.
    pub async fn request_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let request = self.prepare(method, path, body).bearer_auth(token);
        request.send().await.unwrap()
    }

    /// Opens `path` as Server-Sent Events with `token`; the reply is the stream or an error.
    pub async fn event_stream_as(&self, token: &str, path: &str) -> Response {
        let request = self.prepare(Method::GET, path, None).bearer_auth(token);
        let request = request.header("accept", "text/event-stream");
        request.send().await.unwrap()
    }

    fn prepare(&self, method: Method, path: &str, body: Option<Value>) -> RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    }

    /// Creates a session with `body` and returns the reply, asserting a 201.
    pub async fn create_session_with(&self, body: Value) -> Value {
        let response = self.request(Method::POST, "/v1/sessions", Some(body)).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// Creates a session with `body` as the holder of `token`; the reply may be a refusal.
    pub async fn create_session_as(&self, token: &str, body: Value) -> Response {
        self.request_as(token, Method::POST, "/v1/sessions", Some(body))
            .await
    }

    /// Creates a session with a generated id and returns its id.
    pub async fn create_session(&self) -> String {
        let session = self.create_session_with(json!({})).await;
        session["id"].as_str().unwrap().to_owned()
    }

    pub async fn append(&self, session_id: &str, body: Value) -> Response {
        let path = format!("/v1/sessions/{}/append", path_segment(session_id));
        self.request(Method::POST, &path, Some(body)).await
    }

    /// Appends and returns the reply body, asserting a 201.
    pub async fn append_ok(&self, session_id: &str, body: Value) -> Value {
        let response = self.append(session_id, body).await;
        let status = response.status();
        let reply: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "append failed: {reply}");
        reply
    }

    pub async fn session(&self, session_id: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/v1/sessions/{}", path_segment(session_id)),
            None,
        )
        .await
    }

    pub async fn last_seq(&self, session_id: &str) -> u64 {
        let session: Value = self.session(session_id).await.json().await.unwrap();
        session["last_seq"].as_u64().unwrap()
    }

    /// Reads a JSON reply, asserting its status.
    pub async fn expect(&self, response: Response, status: u16) -> Value {
        let actual = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(actual, status, "unexpected reply: {body}");
        body
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.replacen("http", "ws", 1))
    }

    pub async fn tail(&self, session_id: &str, cursor: u64) -> TailClient {
        let url = format!(
            "{}/v1/sessions/{}/tail?cursor={cursor}",
            self.base_url.replacen("http", "ws", 1),
            path_segment(session_id)
        );
        TailClient::connect(&url).await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Percent-encodes everything but unreserved characters, for ids in URL paths.
/// Every event of `session_id` stored behind the gateway at `base_url`, in seq order, read
/// page by page.
pub async fn stored_events(base_url: &str, session_id: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut events = Vec::new();
    loop {
        let url = format!(
            "{base_url}/v1/sessions/{}/events?cursor={}&limit=1000",
            path_segment(session_id),
            events.len()
        );
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "reading {session_id} back");
        let page: Value = response.json().await.unwrap();
        let batch = page["events"].as_array().unwrap();
        if batch.is_empty() {
            return events;
        }
        events.extend(batch.iter().cloned());
    }
}

pub fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
