//! Authentication and tenancy, with tokens from a JWKS served on loopback: `tokens` is what a
//! credential is worth (bad tokens, key files, expiry, stream quotas), `tenancy` what it reaches
//! (scopes, session pins, tenant fences, the actor rule).

mod tenancy;
mod tokens;

use starcite_tests::auth::{SigningKey, claims, mint};

/// A token of `tenant` with every session scope.
fn everything(tenant: &str) -> String {
    mint(
        &claims(
            tenant,
            "service:backend",
            "session:create session:read session:append",
        ),
        SigningKey::Rsa,
    )
}
