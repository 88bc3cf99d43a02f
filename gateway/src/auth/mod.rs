//! Who is calling: bearer JWTs verified against a JWKS (or a key file) and turned into a
//! `Principal` — a tenant, scopes, and maybe one session the token is pinned to. With auth off,
//! every caller is the one local principal.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;
use tracing::warn;

use crate::config::AuthConfig;
use crate::sessions::model::{LOCAL_TENANT, SessionId};

/// A JWKS is fetched again after this long, or sooner for an unknown key id.
const JWKS_MAX_AGE: Duration = Duration::from_secs(60);
/// An unknown key id refetches the JWKS at most this often, so bad tokens cannot flood it.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Create, rename, retag, archive sessions.
    Create,
    /// List, read, tail sessions and the lifecycle feed.
    Read,
    /// Append events.
    Append,
    /// Sign in to the admin console (for the token's tenant).
    Admin,
}

impl Scope {
    fn parse(scope: &str) -> Option<Scope> {
        match scope {
            "session:create" => Some(Scope::Create),
            "session:read" => Some(Scope::Read),
            "session:append" => Some(Scope::Append),
            "starcite:admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub tenant: String,
    /// `<type>:<id>`, e.g. `user:42`; the actor of the events it appends.
    pub subject: String,
    scopes: Vec<Scope>,
    /// A token for one session only.
    pub session: Option<SessionId>,
    /// When the token stops being valid; live streams close then.
    pub expires_at: Option<SystemTime>,
    /// False for the local principal: no token, one tenant, every scope.
    pub authenticated: bool,
}

impl Principal {
    pub fn local() -> Principal {
        Principal {
            tenant: LOCAL_TENANT.to_owned(),
            subject: "service:local".to_owned(),
            scopes: vec![Scope::Create, Scope::Read, Scope::Append],
            session: None,
            expires_at: None,
            authenticated: false,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Why a request is not authenticated; each has its own `WWW-Authenticate` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no bearer token")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub struct Verifier {
    validation: Validation,
    keys: Keys,
}

enum Keys {
    File {
        key: DecodingKey,
        algorithm: Algorithm,
    },
    Jwks {
        url: String,
        http: reqwest::Client,
        cache: RwLock<JwksCache>,
    },
}

#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// The claims a Starcite token carries.
#[derive(Debug, Deserialize)]
struct Claims {
    tenant_id: String,
    sub: String,
    exp: u64,
    scope: Option<String>,
    scopes: Option<Vec<String>>,
    session_id: Option<String>,
}

impl Verifier {
    pub fn new(settings: &AuthConfig) -> Result<Verifier, String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[settings.issuer.as_deref().unwrap_or_default()]);
        validation.set_audience(&[settings.audience.as_deref().unwrap_or_default()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway_seconds;
        let keys = match (&settings.key_file, &settings.jwks_url) {
            (Some(path), _) => {
                let pem =
                    std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
                let (key, algorithm) = key_from_pem(&pem).ok_or_else(|| {
                    format!(
                        "{}: not an RSA, P-256 or Ed25519 public key",
                        path.display()
                    )
                })?;
                Keys::File { key, algorithm }
            }
            (None, Some(url)) => Keys::Jwks {
                url: url.clone(),
                http: jwks_client()?,
                cache: RwLock::new(JwksCache::default()),
            },
            (None, None) => return Err("a JWKS URL or a key file is needed".to_owned()),
        };
        Ok(Verifier { validation, keys })
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        // `alg: none` and unknown algorithms fail here: jsonwebtoken knows only real ones.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| AuthFailure::Invalid(err.to_string()))?;
        let (key, algorithm) = match &self.keys {
            Keys::File { key, algorithm } => (key.clone(), *algorithm),
            Keys::Jwks { .. } => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthFailure::Invalid("no `kid` in the header".into()))?;
                self.jwks_key(kid).await?
            }
        };
        if header.alg != algorithm {
            return Err(AuthFailure::Invalid(format!(
                "{:?} does not match the key's {algorithm:?}",
                header.alg
            )));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|err| AuthFailure::Invalid(err.to_string()))?
            .claims;
        principal(claims)
    }

    async fn jwks_key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthFailure> {
        let Keys::Jwks { url, http, cache } = &self.keys else {
            return Err(AuthFailure::Invalid("no JWKS configured".into()));
        };
        {
            let cache = cache.read().await;
            let fresh = cache
                .fetched
                .is_some_and(|fetched| fetched.elapsed() < JWKS_MAX_AGE);
            if let (true, Some(key)) = (fresh, cache.keys.get(kid)) {
                return Ok(key.clone());
            }
        }
        let mut cache = cache.write().await;
        // Stale, or a key id we have not seen (the issuer rotated): fetch, unless just done.
        let recently = cache
            .fetched
            .is_some_and(|fetched| fetched.elapsed() < JWKS_MIN_REFETCH);
        if !recently {
            match fetch_jwks(http, url).await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched = Some(Instant::now());
                }
                // Keep serving the keys we have: a JWKS outage must not log everyone out.
                Err(err) => warn!(error = %err, "fetching the JWKS failed: {err}"),
            }
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthFailure::Invalid(format!("unknown key id `{kid}`")))
    }
}

/// rustls (behind reqwest's https) needs one crypto provider per process; a second install
/// (several gateways in one process) is a harmless no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP(S) client for the JWKS.
fn jwks_client() -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|err| err.to_string())
}

async fn fetch_jwks(
    http: &reqwest::Client,
    url: &str,
) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
    let set: JwkSet = http
        .get(url)
        .send()
        .await
        .map_err(|err| err.to_string())?
        .json()
        .await
        .map_err(|err| err.to_string())?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(curve) if curve.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(pair) if pair.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (key, algorithm));
        }
    }
    Ok(keys)
}

/// A PEM public key, whichever of the three kinds it is.
fn key_from_pem(pem: &[u8]) -> Option<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, Algorithm::ES256));
    }
    DecodingKey::from_ed_pem(pem)
        .ok()
        .map(|key| (key, Algorithm::EdDSA))
}

fn principal(claims: Claims) -> Result<Principal, AuthFailure> {
    let invalid = |why: &str| AuthFailure::Invalid(why.to_owned());
    if claims.tenant_id.is_empty() {
        return Err(invalid("empty `tenant_id`"));
    }
    let principal_type = claims
        .sub
        .split_once(':')
        .map(|(kind, id)| (kind, id.is_empty()));
    if !matches!(
        principal_type,
        Some(("user" | "agent" | "service" | "svc" | "org", false))
    ) {
        return Err(invalid("`sub` must be `<user|agent|service|svc|org>:<id>`"));
    }
    let named: Vec<String> = match (claims.scope, claims.scopes) {
        (Some(scope), _) => scope.split_whitespace().map(str::to_owned).collect(),
        (None, Some(scopes)) => scopes,
        (None, None) => Vec::new(),
    };
    let scopes: Vec<Scope> = named
        .iter()
        .filter_map(|scope| Scope::parse(scope))
        .collect();
    if named.is_empty() {
        return Err(invalid("no `scope` or `scopes`"));
    }
    let session = match claims.session_id {
        None => None,
        Some(id) => Some(SessionId::parse(&id).map_err(|_| invalid("bad `session_id`"))?),
    };
    Ok(Principal {
        tenant: claims.tenant_id,
        subject: claims.sub,
        scopes,
        session,
        expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
        authenticated: true,
    })
}
