//! Who may call: whether bearer tokens are required, and how they are checked.

use std::path::PathBuf;

use super::ConfigError;
use super::values::Named;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Jwt,
}

impl Named for AuthMode {
    const NAMES: &'static [(&'static str, AuthMode)] =
        &[("none", AuthMode::None), ("jwt", AuthMode::Jwt)];
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// `none` for local runs; `jwt` in production: every `/v1` request needs a bearer token.
    pub mode: AuthMode,
    /// Where the signing keys are published (JSON Web Key Set, over http).
    pub jwks_url: Option<String>,
    /// A PEM public key, for setups without a JWKS endpoint.
    pub key_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// The `aud` every token must carry (or include).
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::None,
            jwks_url: None,
            key_file: None,
            issuer: None,
            audience: None,
            leeway_seconds: 1,
        }
    }
}

impl AuthConfig {
    /// JWT mode cannot start half-configured: name the first missing variable.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.mode != AuthMode::Jwt {
            return Ok(());
        }
        let missing = |variable, flag| ConfigError::Invalid {
            variable,
            flag,
            reason: "required with STARCITE_AUTH_MODE=jwt".into(),
        };
        if self.jwks_url.is_none() && self.key_file.is_none() {
            return Err(missing(
                "STARCITE_AUTH_JWKS_URL",
                "--auth-jwks-url (or STARCITE_AUTH_KEY_FILE)",
            ));
        }
        if self.issuer.is_none() {
            return Err(missing("STARCITE_AUTH_JWT_ISSUER", "--auth-jwt-issuer"));
        }
        if self.audience.is_none() {
            return Err(missing("STARCITE_AUTH_JWT_AUDIENCE", "--auth-jwt-audience"));
        }
        Ok(())
    }
}
