//! The admin console at `/admin`: domain -> `admin_ui` view models -> HTML. Pages that change
//! state take a POST with a CSRF token (double-submit cookie, so any gateway can check it).

pub mod history;
mod login;
mod pages;
mod system;

use std::sync::Arc;

use admin_ui::{SCRIPT, STYLESHEET};
use poem::endpoint::BoxEndpoint;
use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Path, Query};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, post};
use serde::Deserialize;
use tracing::{error, warn};

use crate::catalog::Catalog;
use crate::figures::Figures;
use crate::live::{Feed, Live, Reader, Transport};
use crate::nats::Store;
use crate::sessions::SessionLog;
pub use history::History;
pub use login::SignIn;
use pages::PageError;

/// What the console reads from the rest of the gateway.
pub struct Admin {
    pub log: Arc<SessionLog>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    pub figures: Arc<Figures>,
    /// The last minutes of the metrics, for the system page's charts.
    pub history: Arc<History>,
    /// Present when the gateway requires tokens: the console then requires a sign-in.
    pub sign_in: Option<SignIn>,
}

/// Whose console this request is: one tenant's operator, or everyone's with auth off.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub tenant: Option<String>,
}

/// The console's routes, to be nested at `/admin`.
pub fn routes(admin: Admin, live: Live) -> BoxEndpoint<'static, Response> {
    let admin = Arc::new(admin);
    let gate = admin.clone();
    let pages = Route::new()
        .at("/", get(sessions_page))
        .at("/sessions/:id", get(session_page))
        .at("/sessions/:id/rename", post(rename))
        .at("/sessions/:id/:action", post(archive_action))
        .at("/system", get(system_page))
        .at("/system/charts", get(system_charts))
        .at("/sessions/:id/live", get(live_feed))
        .around(move |endpoint, mut request| {
            let gate = gate.clone();
            async move {
                let viewer = match &gate.sign_in {
                    None => Viewer { tenant: None },
                    Some(sign_in) => match sign_in.operator(&request) {
                        Some(operator) => Viewer {
                            tenant: Some(operator.tenant),
                        },
                        None => return Ok(see_other("/admin/login")),
                    },
                };
                request.set_data(viewer);
                endpoint
                    .call(request)
                    .await
                    .map(IntoResponse::into_response)
            }
        });
    Route::new()
        .at("/login", get(login_page).post(log_in))
        .at("/logout", post(log_out))
        .at("/assets/admin.css", get(stylesheet))
        .at("/assets/admin.js", get(script))
        .nest("/", pages)
        .data(admin)
        .data(live)
        .boxed()
}

fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

#[handler]
fn login_page(request: &Request) -> Response {
    let (token, new_token) = csrf_token(request);
    let page = admin_ui::LoginPage {
        csrf_token: token.clone(),
        error: None,
    };
    html(&page, &token, new_token)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
}

#[handler]
async fn log_in(
    request: &Request,
    admin: Data<&Arc<Admin>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !csrf_ok(request, &form.csrf) {
        return forbidden();
    }
    let Some(sign_in) = &admin.sign_in else {
        return see_other("/admin");
    };
    match sign_in.sign_in(&form.token).await {
        Ok(cookie) => {
            let mut response = see_other("/admin");
            if let Ok(cookie) = cookie.parse() {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => {
            let page = admin_ui::LoginPage {
                csrf_token: form.csrf,
                error: Some(error),
            };
            let mut response = html(&page, "", false);
            if response.status().is_success() {
                response.set_status(StatusCode::UNAUTHORIZED);
            }
            response
        }
    }
}

#[handler]
fn log_out(request: &Request, Form(form): Form<ActionForm>) -> Response {
    if !csrf_ok(request, &form.csrf) {
        return forbidden();
    }
    let mut response = see_other("/admin/login");
    if let Ok(cookie) = login::sign_out_cookie().parse() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

const CSRF_COOKIE: &str = "starcite_csrf";

/// The CSRF token of this browser: the cookie's value, or a fresh one to set.
fn csrf_token(request: &Request) -> (String, bool) {
    match cookie(request, CSRF_COOKIE) {
        Some(token) if token.len() == 32 && token.bytes().all(|byte| byte.is_ascii_hexdigit()) => {
            (token, false)
        }
        _ => (format!("{:032x}", rand::random::<u128>()), true),
    }
}

fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A page as HTML, setting the CSRF cookie when the browser has none yet.
fn html(page: &impl askama::Template, token: &str, new_token: bool) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(err) => {
            warn!(error = %err, "an admin page failed to render: {err}");
            return (StatusCode::INTERNAL_SERVER_ERROR, COULD_NOT_SHOW).into_response();
        }
    };
    let mut response = Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            "content-security-policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:",
        )
        .header("x-frame-options", "DENY")
        .body(body);
    if new_token {
        let cookie = format!("{CSRF_COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict");
        if let Ok(cookie) = cookie.parse() {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
struct SessionsQuery {
    q: Option<String>,
    metadata: Option<String>,
    archived: Option<String>,
    cursor: Option<String>,
}

#[handler]
async fn sessions_page(
    viewer: Data<&Viewer>,
    request: &Request,
    admin: Data<&Arc<Admin>>,
    Query(query): Query<SessionsQuery>,
) -> Response {
    let (token, new_token) = csrf_token(request);
    match pages::sessions(
        &admin,
        &viewer,
        query.q,
        query.metadata,
        query.archived,
        query.cursor,
    )
    .await
    {
        Ok(page) => html(&page, &token, new_token),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    actor: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<String>,
    before: Option<String>,
    notice: Option<String>,
}

#[handler]
async fn session_page(
    viewer: Data<&Viewer>,
    request: &Request,
    admin: Data<&Arc<Admin>>,
    Path(id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Response {
    let (token, new_token) = csrf_token(request);
    let timeline = pages::Timeline {
        actor: query.actor.unwrap_or_default(),
        kind: query.kind.unwrap_or_default(),
        jump: query.seq.unwrap_or_default(),
        before: query.before.and_then(|before| before.parse().ok()),
    };
    match pages::session(&admin, &viewer, &id, timeline, &token, query.notice).await {
        Ok(page) => html(&page, &token, new_token),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct RenameForm {
    title: String,
    expected_version: Option<u64>,
    csrf: String,
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: String,
}

/// A POST only counts when its form carries the token its own cookie holds: another site can
/// make the browser send the cookie, but cannot read it to put it in the form.
fn csrf_ok(request: &Request, sent: &str) -> bool {
    cookie(request, CSRF_COOKIE).is_some_and(|expected| !sent.is_empty() && expected == sent)
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "missing or wrong CSRF token: reload the page and try again",
    )
        .into_response()
}

#[handler]
async fn rename(
    viewer: Data<&Viewer>,
    request: &Request,
    admin: Data<&Arc<Admin>>,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Response {
    if !csrf_ok(request, &form.csrf) {
        return forbidden();
    }
    let title = Some(form.title.trim().to_owned()).filter(|title| !title.is_empty());
    after_action(
        &id,
        pages::rename(&admin, &viewer, &id, title, form.expected_version).await,
    )
}

/// `archive` or `unarchive`, the two buttons of the session page.
#[handler]
async fn archive_action(
    viewer: Data<&Viewer>,
    request: &Request,
    admin: Data<&Arc<Admin>>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let archived = match action.as_str() {
        "archive" => true,
        "unarchive" => false,
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    if !csrf_ok(request, &form.csrf) {
        return forbidden();
    }
    after_action(
        &id,
        pages::set_archived(&admin, &viewer, &id, archived).await,
    )
}

/// Back to the session page (303, so a reload does not repeat the POST), with a notice when
/// someone changed the session meanwhile.
fn after_action(id: &str, outcome: Result<(), PageError>) -> Response {
    let href = pages::session_href(id);
    match outcome {
        Ok(()) => see_other(&href),
        Err(PageError::VersionConflict) => see_other(&format!("{href}?notice=version_conflict")),
        Err(err) => err.into_response(),
    }
}

/// What the console says when storage (or a template) failed it.
const COULD_NOT_SHOW: &str = "the page could not be shown; NATS may be unavailable, try again";

/// The console's answer when a page or an action did not go through.
impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SessionNotFound => {
                (StatusCode::NOT_FOUND, "no such session").into_response()
            }
            PageError::VersionConflict => (
                StatusCode::CONFLICT,
                "Someone changed this session meanwhile: review it and try again.",
            )
                .into_response(),
            PageError::Invalid(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
            PageError::CatalogLoading => (
                StatusCode::SERVICE_UNAVAILABLE,
                "This gateway is building its session catalog; the list shows once it is done \
                 (the System page says how far it has come). Reload in a few seconds.",
            )
                .with_header(poem::http::header::RETRY_AFTER, "5")
                .into_response(),
            PageError::Store(err) => {
                warn!(error = %err, "an admin page failed: {err}");
                (StatusCode::SERVICE_UNAVAILABLE, COULD_NOT_SHOW).into_response()
            }
            PageError::View(err) => {
                error!(error = %err, "an admin page failed: {err}");
                (StatusCode::INTERNAL_SERVER_ERROR, COULD_NOT_SHOW).into_response()
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct LiveQuery {
    cursor: Option<String>,
}

/// The session page's live timeline: the session's SSE tail, opened with the console's
/// sign-in (an `EventSource` sends the cookie) instead of a bearer token.
#[handler]
async fn live_feed(
    viewer: Data<&Viewer>,
    admin: Data<&Arc<Admin>>,
    live: Data<&Live>,
    Path(id): Path<String>,
    Query(query): Query<LiveQuery>,
) -> Response {
    let id = match pages::visible(&admin, &viewer, &id).await {
        Ok(id) => id,
        Err(err) => return err.into_response(),
    };
    let Ok(cursor) = crate::sessions::input::cursor(query.cursor.as_deref()) else {
        return (StatusCode::BAD_REQUEST, "bad cursor").into_response();
    };
    let start = match admin.log.open_tail(&id, cursor).await {
        Ok(start) => start,
        Err(err) => return PageError::from(err).into_response(),
    };
    let reader = Reader {
        feed: Feed::Session,
        cursor: start.cursor,
        gap: start.gap,
        batch_size: 1,
        contiguous: true,
        expires_at: None,
        permit: None,
    };
    live.respond(Transport::ServerSentEvents, start.entries, reader)
        .into_response()
}

#[handler]
async fn system_page(request: &Request, admin: Data<&Arc<Admin>>) -> Response {
    let (token, new_token) = csrf_token(request);
    html(&system::page(&admin).await, &token, new_token)
}

/// The system page's charts alone, which its script fetches to refresh them.
#[handler]
fn system_charts(admin: Data<&Arc<Admin>>) -> Response {
    html(&system::charts(&admin), "", false)
}

#[handler]
fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

#[handler]
fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::error::ReadError;
    use crate::sessions::model::SessionId;

    #[test]
    fn a_session_missing_when_its_timeline_is_read_is_not_found() {
        let id = SessionId::parse("gone").unwrap();
        let response = PageError::from(ReadError::SessionNotFound(id)).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
