//! SMART Backend Services client assertions (`private_key_jwt`, RFC 7523 §3): how a system
//! client proves who it is at the token endpoint, with a key whose public half it registered.
//!
//! Rules (SMART `client-confidential-asymmetric`): RS384 or ES384 only; the key is chosen by
//! `kid` and must have the `kty` the algorithm needs; key-bearing headers (`jku`, `jwk`, `x5u`,
//! `x5c`) are refused because keys are registered by value; `iss` = `sub` = the client id; `aud`
//! = the token endpoint URL; `exp` at most five minutes ahead; a `jti` the caller must check for
//! replay (this crate has no memory, see [`VerifiedAssertion::jti`]).

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde_json::Value;

use crate::token::{MAX_LIFETIME, TokenError, check_times, time_claim, verified_payload};

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The client id (`iss` = `sub`).
    pub client_id: String,
    /// Unique per assertion; the caller rejects one already seen before `exp`.
    pub jti: String,
    /// Expiry, seconds since the epoch (how long the `jti` must be remembered).
    pub exp: i64,
}

/// The `kty` an algorithm needs.
fn kty_of(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES384 => "EC",
        _ => "RSA",
    }
}

/// The key of `jwks` (a JWK Set) that verifies a header with `kid` and `alg`.
fn select_key(jwks: &Value, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, TokenError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(TokenError::UnknownKey)?;
    let kty = kty_of(alg);
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|key| key.get("kty").and_then(Value::as_str) == Some(kty))
        .filter(|key| match kid {
            Some(kid) => key.get("kid").and_then(Value::as_str) == Some(kid),
            None => true,
        })
        .collect();
    // Without a kid the choice must be unambiguous.
    let [key] = candidates.as_slice() else {
        return Err(TokenError::UnknownKey);
    };
    if key
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|declared| declared != format!("{alg:?}"))
    {
        return Err(TokenError::UnknownKey);
    }
    let jwk: Jwk = serde_json::from_value((*key).clone()).map_err(|_| TokenError::UnknownKey)?;
    DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::UnknownKey)
}

/// The `iss` of an assertion, read **without** verifying it: only to find which client's keys
/// to verify it with ([`verify_client_assertion`] then requires `iss` to be that client).
pub fn unverified_issuer(assertion: &str) -> Option<String> {
    if assertion.len() > crate::token::MAX_TOKEN_LEN {
        return None;
    }
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies `assertion` from `client_id`, whose registered key set is `jwks`, presented at
/// `token_url` at `now` (seconds).
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    jwks: &Value,
    token_url: &str,
    now: i64,
) -> Result<VerifiedAssertion, TokenError> {
    let payload = verified_payload(
        assertion,
        &[Algorithm::RS384, Algorithm::ES384],
        &|header| select_key(jwks, header.kid.as_deref(), header.alg),
    )?;
    let text = |name: &'static str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .ok_or(TokenError::Claim(name))
    };
    let (iss, sub, jti) = (text("iss")?, text("sub")?, text("jti")?);
    if iss != client_id || sub != client_id {
        return Err(TokenError::Issuer);
    }
    let audience_ok = match payload.get("aud") {
        Some(Value::String(aud)) => aud == token_url,
        Some(Value::Array(list)) => list.iter().any(|aud| aud.as_str() == Some(token_url)),
        _ => return Err(TokenError::Claim("aud")),
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    let exp = time_claim(&payload, "exp", true)?.ok_or(TokenError::Claim("exp"))?;
    let nbf = time_claim(&payload, "nbf", false)?;
    let iat = time_claim(&payload, "iat", false)?;
    check_times(exp, nbf, iat, now)?;
    if exp > now.saturating_add(MAX_LIFETIME) {
        return Err(TokenError::Lifetime);
    }
    if jti.is_empty() || jti.len() > 256 {
        return Err(TokenError::Claim("jti"));
    }
    Ok(VerifiedAssertion {
        client_id: client_id.to_owned(),
        jti: jti.to_owned(),
        exp,
    })
}
