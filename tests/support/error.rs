//! The error shape every non-2xx reply shares: `{"error": code, "message": text}`.

use reqwest::Response;
use serde_json::Value;

/// The reply's status and error code, asserting the shape: exactly `error` and a non-empty
/// `message`.
pub async fn error_of(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body.as_object().map(|fields| fields.len()),
        Some(2),
        "error bodies have exactly two keys: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error body has a message: {body}"
    );
    let code = body["error"].as_str();
    let code = code.unwrap_or_else(|| panic!("an error body has a code: {body}"));
    (status, code.to_owned())
}
