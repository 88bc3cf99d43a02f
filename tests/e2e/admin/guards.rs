//! The console's guards: CSRF tokens on state changes, versions on renames, the switch that
//! turns it off, and the admin sign-in that limits it to one tenant.

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use starcite_tests::{TestGateway, TestNats};

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_renames_respect_versions() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    gateway
        .create_session_with(json!({"id": "guarded", "title": "Before"}))
        .await;
    let path = |action: &str| format!("/admin/sessions/guarded{action}");

    let anonymous = Console::new(&gateway, None);
    let forged = anonymous
        .post(&path("/archive"), &[("csrf", &"0".repeat(32))])
        .await;
    assert_eq!(forged.status(), 403);
    let token = "ab".repeat(16);
    let console = Console::new(&gateway, Some(format!("starcite_csrf={token}")));
    let wrong = console
        .post(&path("/archive"), &[("csrf", &"cd".repeat(16))])
        .await;
    assert_eq!(wrong.status(), 403);
    let session: Value = gateway.session("guarded").await.json().await.unwrap();
    assert_eq!(session["archived"], false, "a forged POST changed nothing");

    let rename = |title: &'static str| {
        let form = [
            ("csrf", token.as_str()),
            ("title", title),
            ("expected_version", "1"),
        ];
        let path = path("/rename");
        let console = &console;
        async move { console.post(&path, &form).await }
    };
    let renamed = rename("After").await;
    assert_eq!(renamed.status(), 303);
    let stale = rename("Late").await;
    assert_eq!(stale.status(), 303);
    assert!(
        stale.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=version_conflict")
    );
    let session: Value = gateway.session("guarded").await.json().await.unwrap();
    assert_eq!(
        (session["title"].as_str(), session["version"].as_u64()),
        (Some("After"), Some(2))
    );

    // The page sets the cookie it expects back.
    let page = anonymous.get(&path("")).await;
    assert!(
        page.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("starcite_csrf=")
    );
    let missing = anonymous.get("/admin/sessions/nobody").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn every_console_page_of_a_missing_session_is_not_found() {
    let nats = TestNats::start();
    let gateway = TestGateway::start(&nats).await;
    let path = |action: &str| format!("/admin/sessions/nobody{action}");
    for action in ["", "?before=10&actor=a", "/live?cursor=0"] {
        let page = Console::new(&gateway, None).get(&path(action)).await;
        assert_eq!(page.status(), 404, "GET {action}");
        assert_eq!(
            page.text().await.unwrap(),
            "no such session",
            "GET {action}"
        );
    }
    let token = "ab".repeat(16);
    let console = Console::new(&gateway, Some(format!("starcite_csrf={token}")));
    for (action, form) in [
        ("/rename", vec![("csrf", token.as_str()), ("title", "New")]),
        ("/archive", vec![("csrf", token.as_str())]),
        ("/unarchive", vec![("csrf", token.as_str())]),
    ] {
        let answer = console.post(&path(action), &form).await;
        assert_eq!(answer.status(), 404, "POST {action}");
        assert_eq!(
            answer.text().await.unwrap(),
            "no such session",
            "POST {action}"
        );
    }
}

/// The console as a browser's requests reach it: redirects not followed, `cookie` sent.
struct Console<'a> {
    gateway: &'a TestGateway,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Console<'_> {
    fn new(gateway: &TestGateway, cookie: Option<String>) -> Console<'_> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Console {
            gateway,
            client,
            cookie,
        }
    }

    async fn get(&self, path: &str) -> Response {
        self.send(self.client.get(self.url(path))).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.send(self.client.post(self.url(path)).form(form)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base_url)
    }

    async fn send(&self, request: RequestBuilder) -> Response {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn the_console_can_be_switched_off() {
    let nats = TestNats::start();
    let mut config = TestGateway::config(&nats);
    config.admin.enabled = false;
    let gateway = TestGateway::start_with(config).await;
    let response = gateway.request(Method::GET, "/admin", None).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn with_tokens_required_the_console_needs_an_admin_sign_in_and_shows_one_tenant() {
    use starcite_tests::auth::{SigningKey, TestJwks, claims, mint};
    let nats = TestNats::start();
    let jwks = TestJwks::start().await;
    let gateway = TestGateway::start_with(jwks.config(&nats)).await;
    for (tenant, id) in [("acme", "mine"), ("globex", "theirs")] {
        let writer = mint(
            &claims(tenant, "service:app", "session:create"),
            SigningKey::Rsa,
        );
        let created = gateway.create_session_as(&writer, json!({"id": id})).await;
        assert_eq!(created.status(), 201);
    }
    let anonymous = Console::new(&gateway, None);
    let first_visit = anonymous.get("/admin").await;
    assert_eq!(first_visit.status(), 303);
    assert_eq!(first_visit.headers()["location"], "/admin/login");
    let login = anonymous.get("/admin/login").await;
    assert_eq!(login.status(), 200);
    let csrf = "ab".repeat(16);
    let csrf_cookie = format!("starcite_csrf={csrf}");
    let with_csrf = Console::new(&gateway, Some(csrf_cookie.clone()));
    let sign_in = |scope: &str| {
        let token = mint(&claims("acme", "user:1", scope), SigningKey::Rsa);
        let with_csrf = &with_csrf;
        let csrf = csrf.clone();
        async move {
            let form = [("csrf", csrf.as_str()), ("token", token.as_str())];
            with_csrf.post("/admin/login", &form).await
        }
    };
    let refused = sign_in("session:read").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("starcite:admin"));
    let signed_in = sign_in("starcite:admin").await;
    assert_eq!(signed_in.status(), 303);
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("Secure")
            && set_cookie.contains("SameSite=Strict")
    );
    let session_cookie = set_cookie.split(';').next().unwrap().to_owned();
    let admin = Console::new(&gateway, Some(format!("{session_cookie}; {csrf_cookie}")));

    let page = admin.get("/admin").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("data-session-id=\"mine\""));
    assert!(
        !page.contains("theirs"),
        "another tenant's session is listed"
    );
    let other = admin.get("/admin/sessions/theirs").await;
    assert_eq!(other.status(), 404);
    let archive = admin
        .post("/admin/sessions/theirs/archive", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(archive.status(), 404);
    assert_eq!(admin.get("/admin/sessions/mine").await.status(), 200);
    // The page's live timeline rides on the sign-in, not on a bearer token.
    let live = admin.get("/admin/sessions/mine/live?cursor=0").await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let theirs = admin.get("/admin/sessions/theirs/live").await;
    assert_eq!(theirs.status(), 404);
    let no_sign_in = anonymous.get("/admin/sessions/mine/live").await;
    assert_eq!(no_sign_in.status(), 303);

    // A cookie with a changed payload is nobody's.
    let (payload, mac) = session_cookie.split_once('.').unwrap();
    let forged = Console::new(&gateway, Some(format!("{payload}x.{mac}")));
    assert_eq!(forged.get("/admin").await.status(), 303);
}
