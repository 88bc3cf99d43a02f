//! The admin console: a real browser (headless Chromium) through its pages, the system
//! page's figures, and the guards on state changes and sign-in.

use reqwest::Method;
use starcite_tests::TestGateway;

mod browser;
mod guards;
mod system;

/// The console's system page, asserting a 200.
pub(crate) async fn system_page(gateway: &TestGateway) -> String {
    let response = gateway.request(Method::GET, "/admin/system", None).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The charts of the system page, by the id each has after `chart-`.
const CHARTS: [&str; 5] = [
    "appends",
    "deliveries",
    "append-latency",
    "live-streams",
    "server-errors",
];
