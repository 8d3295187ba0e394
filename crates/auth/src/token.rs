//! Access tokens: JWTs Tsunagi signs with its own ES384 key and verifies on every request.
//!
//! Verification trusts nothing in the token before the signature is checked, and nothing after
//! it without a type check: jsonwebtoken checks the signature with an algorithm pinned by us
//! (never the header's choice), then every claim is parsed into [`AccessClaims`], whose fields
//! are typed, so `"exp":"never"` or `"aud":123` is a rejection and never "absent"
//! (CVE-2026-25537). Time checks use the caller's clock so tests are exact.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p384::{
    SecretKey,
    elliptic_curve::rand_core::{OsRng, RngCore},
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: i64 = 30;
/// The longest an access token or client assertion may live, in seconds (SMART: ≤ 300).
pub const MAX_LIFETIME: i64 = 300;
/// The longest token accepted at all, in bytes (an 8 kB header limit is common).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token or assertion was refused. The texts name the failed check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, too long, or the header is not JSON.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm not on the allow-list (including `none`).
    #[error("algorithm not allowed")]
    Algorithm,
    /// No registered key matches the header's `kid` and the algorithm.
    #[error("unknown signing key")]
    UnknownKey,
    /// A header parameter that would fetch or embed a key (`jku`, `jwk`, `x5u`, `x5c`).
    #[error("key-bearing header parameter not accepted")]
    KeyHeader,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// A claim is missing or of the wrong type.
    #[error("claim {0} is missing or malformed")]
    Claim(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token lives longer than allowed.
    #[error("token lifetime exceeds 300 seconds")]
    Lifetime,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name us.
    #[error("wrong audience")]
    Audience,
    /// `jti` was seen before.
    #[error("token id replayed")]
    Replayed,
    /// A key could not be created or read.
    #[error("key error: {0}")]
    Key(String),
}

/// Tsunagi's token-signing key (ES384, P-384).
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A random URL-safe identifier of `bytes` random bytes (hex).
pub fn random_id(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A new key with a random `kid`; returns it with its PKCS#8 PEM for storage.
    pub fn generate() -> Result<(Self, String), TokenError> {
        let secret = SecretKey::random(&mut OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|error| TokenError::Key(error.to_string()))?;
        let kid = random_id(8);
        let key = Self::from_pkcs8_pem(&kid, &pem)?;
        Ok((key, pem.to_string()))
    }

    /// A stored key.
    pub fn from_pkcs8_pem(kid: &str, pem: &str) -> Result<Self, TokenError> {
        let secret =
            SecretKey::from_pkcs8_pem(pem).map_err(|error| TokenError::Key(error.to_string()))?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|error| TokenError::Key(error.to_string()))?;
        let mut jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())
            .map_err(|error| TokenError::Key(error.to_string()))?;
        let (Some(x), Some(y)) = (
            jwk.get("x").and_then(Value::as_str),
            jwk.get("y").and_then(Value::as_str),
        ) else {
            return Err(TokenError::Key("public key has no coordinates".to_owned()));
        };
        let decoding = DecodingKey::from_ec_components(x, y)
            .map_err(|error| TokenError::Key(error.to_string()))?;
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".to_owned(), Value::String(kid.to_owned()));
            map.insert("alg".to_owned(), Value::String("ES384".to_owned()));
            map.insert("use".to_owned(), Value::String("sig".to_owned()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            encoding,
            decoding,
            jwk,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (for `/.well-known/jwks.json`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }
}

/// Whether a token was issued to a user or a system client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A practitioner signed in to a registered portal.
    User,
    /// A registered system client.
    System,
}

/// The claims of a Tsunagi access token. Every field is required and typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: Tsunagi's base URL.
    pub iss: String,
    /// Audience: the FHIR base URL.
    pub aud: String,
    /// The user id or the client id.
    pub sub: String,
    /// The registered client that obtained the token (the portal for a user).
    pub client_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id (audited).
    pub jti: String,
    /// Granted scopes.
    pub scope: String,
    /// The facility code the subject acts for.
    pub facility: String,
    /// The subject's role code.
    pub role: String,
    /// User or system.
    pub kind: SubjectKind,
}

/// What a token must say about where it is used.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// Seconds since the epoch.
    pub now: i64,
}

/// Signs `claims`.
pub fn issue(key: &SigningKey, claims: &AccessClaims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|error| TokenError::Key(error.to_string()))
}

/// Checks the header and signature with one of `keys` and the algorithms of `allowed`, and
/// returns the payload as JSON (claims not yet checked).
pub(crate) fn verified_payload(
    token: &str,
    allowed: &[Algorithm],
    key_for: &dyn Fn(&Header) -> Result<DecodingKey, TokenError>,
) -> Result<Value, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        _ => TokenError::Malformed,
    })?;
    if !allowed.contains(&header.alg) {
        return Err(TokenError::Algorithm);
    }
    if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() || header.x5c.is_some()
    {
        return Err(TokenError::KeyHeader);
    }
    let key = key_for(&header)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|error| {
            match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })?;
    Ok(data.claims)
}

/// The integer value of a time claim; a claim of another type is malformed.
pub(crate) fn time_claim(
    payload: &Value,
    name: &'static str,
    required: bool,
) -> Result<Option<i64>, TokenError> {
    match payload.get(name) {
        None if !required => Ok(None),
        Some(Value::Number(number)) => number.as_i64().map(Some).ok_or(TokenError::Claim(name)),
        _ => Err(TokenError::Claim(name)),
    }
}

/// Verifies an access token signed by one of `keys` and returns its claims.
pub fn verify(
    keys: &[SigningKey],
    token: &str,
    expected: &Expected<'_>,
) -> Result<AccessClaims, TokenError> {
    let claims = verify_signature(keys, token)?;
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// The signature, algorithm, key and shape of a token: what does not change with the clock and
/// is worth remembering ([`VerifiedTokens`]).
fn verify_signature(keys: &[SigningKey], token: &str) -> Result<AccessClaims, TokenError> {
    let payload = verified_payload(token, &[Algorithm::ES384], &|header| {
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        keys.iter()
            .find(|key| key.kid == kid)
            .map(|key| key.decoding.clone())
            .ok_or(TokenError::UnknownKey)
    })?;
    // Type errors name the claim: check the time claims first, then the whole shape.
    for name in ["exp", "nbf", "iat"] {
        time_claim(&payload, name, true)?;
    }
    for name in [
        "iss",
        "aud",
        "sub",
        "client_id",
        "jti",
        "scope",
        "facility",
        "role",
    ] {
        if !payload.get(name).is_some_and(Value::is_string) {
            return Err(TokenError::Claim(name));
        }
    }
    serde_json::from_value(payload).map_err(|_| TokenError::Claim("kind"))
}

/// The claims that depend on the clock and on who is asking: checked on every request.
fn check_claims(claims: &AccessClaims, expected: &Expected<'_>) -> Result<(), TokenError> {
    check_times(claims.exp, Some(claims.nbf), Some(claims.iat), expected.now)?;
    if claims.exp - claims.iat > MAX_LIFETIME {
        return Err(TokenError::Lifetime);
    }
    if claims.iss != expected.issuer {
        return Err(TokenError::Issuer);
    }
    if claims.aud != expected.audience {
        return Err(TokenError::Audience);
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(TokenError::Claim("jti"));
    }
    Ok(())
}

/// Tokens whose signature has been verified, so that a client sending the same token on every
/// request pays for the ES384 verification once per token lifetime (≤ 5 minutes), not per
/// request. Only the signature is remembered: times, issuer and audience are checked every time.
/// Bounded: when full, expired entries go, and if that is not enough, all of them.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<String, AccessClaims>>,
    capacity: usize,
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: std::sync::Mutex::default(),
            capacity,
        }
    }

    /// Like [`verify`], skipping the signature of a token already verified against `keys`
    /// (the caller keeps one cache per key set).
    pub fn verify(
        &self,
        keys: &[SigningKey],
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<AccessClaims, TokenError> {
        let known = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned();
        if let Some(claims) = known {
            check_claims(&claims, expected)?;
            return Ok(claims);
        }
        let claims = verify_signature(keys, token)?;
        check_claims(&claims, expected)?;
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let now = expected.now;
            entries.retain(|_, claims| now < claims.exp.saturating_add(LEEWAY));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

/// `exp` not passed, `nbf` and `iat` not in the future, each within [`LEEWAY`].
pub(crate) fn check_times(
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    now: i64,
) -> Result<(), TokenError> {
    if now >= exp.saturating_add(LEEWAY) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY))
        || iat.is_some_and(|iat| iat > now.saturating_add(LEEWAY))
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}
