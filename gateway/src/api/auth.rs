//! Authentication at the door and authorization per operation.
//!
//! Every `/v1` request carries exactly one `Authorization: Bearer <jwt>`; browsers, which
//! cannot set headers on a WebSocket or `EventSource`, may pass `access_token` in the query of
//! a live stream or a producer socket instead (it is never logged). With authentication off every caller is the
//! local principal.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::Templates;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::ops::RouteTemplate;
use crate::auth::{AuthFailure, Principal, Scope, Verifier};
use crate::metrics::{self, Metrics};
use crate::sessions::SessionLog;
use crate::sessions::model::SessionId;

/// Puts the caller's `Principal` on the request, or answers 401 with the documented
/// `WWW-Authenticate` (counted by reason, under the documented route the path fits).
pub async fn authenticate<E: Endpoint>(
    endpoint: E,
    mut request: Request,
    verifier: Option<Arc<Verifier>>,
    metrics: Arc<Metrics>,
    templates: Templates,
) -> poem::Result<Response> {
    let principal = match verifier {
        Some(verifier) if request.uri().path().starts_with("/v1/") => {
            let verified = match bearer_token(&request) {
                Ok(token) => verifier.verify(&token).await,
                Err(failure) => Err(failure),
            };
            match verified {
                Ok(principal) => principal,
                Err(failure) => {
                    metrics.auth_failed(match failure {
                        AuthFailure::Missing => metrics::AuthFailure::Missing,
                        AuthFailure::Malformed => metrics::AuthFailure::Malformed,
                        AuthFailure::Invalid(_) => metrics::AuthFailure::Invalid,
                    });
                    let mut response = unauthorized(&failure);
                    if let Some(template) = templates.template(request.uri().path()) {
                        response.set_data(RouteTemplate(template));
                    }
                    return Ok(response);
                }
            }
        }
        _ => Principal::local(),
    };
    request.set_data(principal);
    endpoint
        .call(request)
        .await
        .map(IntoResponse::into_response)
}

fn bearer_token(request: &Request) -> Result<String, AuthFailure> {
    let headers: Vec<_> = request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .collect();
    match headers.as_slice() {
        [] => live_stream_token(request).ok_or(AuthFailure::Missing),
        [value] => {
            let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
            match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer")
                        && !token.is_empty()
                        && !token.contains(' ') =>
                {
                    Ok(token.to_owned())
                }
                _ => Err(AuthFailure::Malformed),
            }
        }
        _ => Err(AuthFailure::Malformed),
    }
}

/// `access_token` from the query, accepted on live streams and producer sockets only.
fn live_stream_token(request: &Request) -> Option<String> {
    if !is_live_stream(request.uri().path()) {
        return None;
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or_default()).ok()?;
    pairs
        .into_iter()
        .find(|(name, _)| name == "access_token")
        .map(|(_, token)| token)
}

/// `/v1/lifecycle`, or `/v1/sessions/{id}/tail` or `/produce` (an id holds no `/`, which a
/// client percent-encodes): not `GET /v1/sessions/tail`, a session named `tail`.
fn is_live_stream(path: &str) -> bool {
    let session_stream = path
        .strip_prefix("/v1/sessions/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, stream)| !id.is_empty() && matches!(stream, "tail" | "produce"));
    session_stream || path == "/v1/lifecycle"
}

fn unauthorized(failure: &AuthFailure) -> Response {
    let challenge = match failure {
        AuthFailure::Missing => r#"Bearer realm="starcite""#,
        AuthFailure::Malformed => {
            r#"Bearer realm="starcite", error="invalid_request", error_description="Malformed bearer token""#
        }
        AuthFailure::Invalid(why) => {
            tracing::debug!(auth.failure = %why, "refusing a token: {why}");
            r#"Bearer realm="starcite", error="invalid_token""#
        }
    };
    let body = ErrorBody {
        error: ErrorCode::Unauthorized,
        message: "Unauthorized".into(),
        current_version: None,
    };
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .content_type("application/json; charset=utf-8")
        .header(header::WWW_AUTHENTICATE, challenge)
        .body(
            serde_json::to_string(&poem_openapi::types::ToJSON::to_json(&body)).unwrap_or_default(),
        )
}

/// Whose quota a live stream counts against: the token's holder (none without tokens).
pub fn holder(principal: &Principal) -> Option<String> {
    principal
        .authenticated
        .then(|| format!("{}/{}", principal.tenant, principal.subject))
}

/// The scope check, then the pin: a token for one session reaches no other.
pub fn authorize(
    principal: &Principal,
    scope: Scope,
    session: Option<&SessionId>,
) -> Result<(), ApiError> {
    if !principal.allows(scope) {
        return Err(ApiError::new(
            ErrorCode::ForbiddenScope,
            "Token scope does not allow this operation",
        ));
    }
    if let (Some(pinned), Some(session)) = (&principal.session, session)
        && pinned != session
    {
        return Err(ApiError::new(
            ErrorCode::ForbiddenSession,
            "Token is pinned to another session",
        ));
    }
    Ok(())
}

/// Another tenant's session answers exactly like a missing one: a 403 would confirm it exists.
pub async fn own(log: &SessionLog, principal: &Principal, id: &SessionId) -> Result<(), ApiError> {
    let tenant = principal.authenticated.then_some(principal.tenant.as_str());
    Ok(log.visible_to(id, tenant).await?)
}

#[cfg(test)]
mod tests {
    use super::is_live_stream;

    #[test]
    fn query_tokens_are_for_live_streams_and_producer_sockets_only() {
        for path in [
            "/v1/lifecycle",
            "/v1/sessions/s/tail",
            "/v1/sessions/a%2Fb/produce",
        ] {
            assert!(is_live_stream(path), "{path}");
        }
        for path in [
            "/v1/sessions/tail",
            "/v1/sessions/produce",
            "/v1/sessions//tail",
            "/v1/sessions/s/events",
            "/v1/sessions/s/tail/x",
            "/admin/sessions/s/tail",
        ] {
            assert!(!is_live_stream(path), "{path}");
        }
    }
}
