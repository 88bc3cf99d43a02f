//! Console sign-in when the gateway requires tokens: an access token with the
//! `starcite:admin` scope buys a signed, HTTP-only session cookie for its tenant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use poem::Request;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::{Principal, Scope, Verifier};

const COOKIE: &str = "starcite_admin";
/// The longest a console sign-in lasts, however long the token would.
const MAX_SIGN_IN: Duration = Duration::from_secs(8 * 3600);

/// Who is using the console: one tenant's operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operator {
    pub tenant: String,
    pub subject: String,
    /// Seconds since the epoch.
    expires: u64,
}

/// Signs and checks console sign-ins with a secret the gateways share.
pub struct SignIn {
    verifier: std::sync::Arc<Verifier>,
    secret: Vec<u8>,
}

impl SignIn {
    /// Without a configured secret each gateway makes its own: sign-ins then hold only on it.
    pub fn new(verifier: std::sync::Arc<Verifier>, secret: Option<&str>) -> SignIn {
        let secret = match secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        SignIn { verifier, secret }
    }

    /// The cookie for a valid admin token, or why there is none.
    pub async fn sign_in(&self, token: &str) -> Result<String, String> {
        let principal: Principal = self
            .verifier
            .verify(token.trim())
            .await
            .map_err(|_| "That token is not valid.".to_owned())?;
        if !principal.allows(Scope::Admin) {
            return Err("That token lacks the starcite:admin scope.".to_owned());
        }
        let now = SystemTime::now();
        let until = principal.expires_at.unwrap_or(now).min(now + MAX_SIGN_IN);
        let expires = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let operator = Operator {
            tenant: principal.tenant,
            subject: principal.subject,
            expires,
        };
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&operator).unwrap_or_default());
        let max_age = until.duration_since(now).unwrap_or_default().as_secs();
        Ok(format!(
            "{COOKIE}={payload}.{}; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}",
            self.mac(&payload)
        ))
    }

    /// The operator a request's cookie names, if its signature holds and it has not expired.
    pub fn operator(&self, request: &Request) -> Option<Operator> {
        let cookie = super::cookie(request, COOKIE)?;
        let (payload, mac) = cookie.split_once('.')?;
        let mut check = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        check.update(payload.as_bytes());
        check.verify_slice(&hex(mac)?).ok()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let operator: Operator = serde_json::from_slice(&bytes).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        (operator.expires > now).then_some(operator)
    }

    fn mac(&self, payload: &str) -> String {
        // An HMAC accepts a key of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(payload.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// Clears the sign-in cookie.
pub fn sign_out_cookie() -> String {
    format!("{COOKIE}=; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}
