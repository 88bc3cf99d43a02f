//! Test tokens: a JWKS served on loopback from the fixture keys, and tokens minted with them.

use std::time::{SystemTime, UNIX_EPOCH};

use gateway::config::{AuthMode, Config};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::TcpAcceptor;
use poem::web::Json;
use poem::{EndpointExt, Route, get, handler};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::TestNats;

pub const ISSUER: &str = "https://issuer.starcite.test";
pub const AUDIENCE: &str = "starcite";

/// A signing key of the fixtures: `rsa`, `ec`, `ed` are in the JWKS, `other` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Rsa,
    Ec,
    Ed,
    /// An RSA key the JWKS does not hold, presented under the `rsa-1` key id.
    Other,
}

impl SigningKey {
    fn parts(self) -> (EncodingKey, Algorithm, &'static str) {
        let pem = |name: &str| {
            std::fs::read(format!(
                "{}/fixtures/keys/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        match self {
            SigningKey::Rsa => (
                EncodingKey::from_rsa_pem(&pem("rsa.pem")).unwrap(),
                Algorithm::RS256,
                "rsa-1",
            ),
            SigningKey::Ec => (
                EncodingKey::from_ec_pem(&pem("ec.pem")).unwrap(),
                Algorithm::ES256,
                "ec-1",
            ),
            SigningKey::Ed => (
                EncodingKey::from_ed_pem(&pem("ed25519.pem")).unwrap(),
                Algorithm::EdDSA,
                "ed-1",
            ),
            SigningKey::Other => (
                EncodingKey::from_rsa_pem(&pem("other-rsa.pem")).unwrap(),
                Algorithm::RS256,
                "rsa-1",
            ),
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims for `tenant` and `sub` with a space-separated `scope`, for five minutes.
pub fn claims(tenant: &str, sub: &str, scope: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "iat": now(),
           "tenant_id": tenant, "sub": sub, "scope": scope})
}

pub fn mint(claims: &Value, key: SigningKey) -> String {
    let (encoding, algorithm, kid) = key.parts();
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A JWKS with the `rsa`, `ec` and `ed` public keys, on a loopback port.
pub struct TestJwks {
    pub url: String,
    server: JoinHandle<()>,
}

impl TestJwks {
    pub async fn start() -> TestJwks {
        let keys = [SigningKey::Rsa, SigningKey::Ec, SigningKey::Ed]
            .into_iter()
            .map(|key| {
                let (encoding, algorithm, kid) = key.parts();
                let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
                jwk.common.key_id = Some(kid.to_owned());
                jwk
            })
            .collect();
        let set = serde_json::to_value(JwkSet { keys }).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        let app = Route::new().at("/jwks.json", get(jwks)).data(set);
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        TestJwks { url, server }
    }

    /// Gateway settings that require tokens from this JWKS.
    pub fn config(&self, nats: &TestNats) -> Config {
        let mut config = crate::TestGateway::config(nats);
        config.auth.mode = AuthMode::Jwt;
        config.auth.jwks_url = Some(self.url.clone());
        config.auth.issuer = Some(ISSUER.to_owned());
        config.auth.audience = Some(AUDIENCE.to_owned());
        config
    }
}

impl Drop for TestJwks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[handler]
fn jwks(set: poem::web::Data<&Value>) -> Json<Value> {
    Json(set.0.clone())
}
