//! Token and client-assertion attacks from the security reference (§3.3, §4.2): every one must be
//! a rejection with the right reason, never a token treated as valid with a claim "absent".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tsunagi_auth::{
    Principal, Role,
    assertion::verify_client_assertion,
    token::{self, AccessClaims, Expected, SigningKey, SubjectKind, TokenError},
};

const NOW: i64 = 1_795_000_000;
const ISS: &str = "https://tsunagi.example.jp";
const AUD: &str = "https://tsunagi.example.jp/fhir";
const TOKEN_URL: &str = "https://tsunagi.example.jp/auth/token";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "client_id": "portal",
        "exp": NOW + 240, "nbf": NOW - 60, "iat": NOW - 60, "jti": "t-1",
        "scope": "user/*.rs", "facility": "0610100010", "role": "doctor", "kind": "user"
    })
}

/// Signs an arbitrary payload with Tsunagi's key, as an attacker who stole nothing cannot but as
/// a buggy issuer might: claim checks must hold even for correctly signed tokens.
fn signed(key: &SigningKey, pem: &str, payload: &Value) -> String {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(
        &header,
        payload,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn expected() -> Expected<'static> {
    Expected {
        issuer: ISS,
        audience: AUD,
        now: NOW,
    }
}

#[test]
fn a_valid_token_round_trips_into_a_principal() {
    let (key, _) = SigningKey::generate().unwrap();
    let claims: AccessClaims = serde_json::from_value(claims()).unwrap();
    let token = token::issue(&key, &claims).unwrap();
    let verified = token::verify(std::slice::from_ref(&key), &token, &expected()).unwrap();
    assert_eq!(verified, claims);
    let principal = Principal::from_claims(verified).unwrap();
    assert_eq!(principal.role, Role::Doctor);
    assert_eq!(principal.kind, SubjectKind::User);
    assert!(principal.may("Observation", tsunagi_auth::Interaction::Search));
    assert!(!principal.may("AuditEvent", tsunagi_auth::Interaction::Search));
    // A key read back from its PEM verifies the same token.
    let (key2, pem2) = SigningKey::generate().unwrap();
    let again = SigningKey::from_pkcs8_pem(key2.kid(), &pem2).unwrap();
    let token2 = token::issue(&key2, &claims).unwrap();
    assert!(token::verify(&[again], &token2, &expected()).is_ok());
    assert_eq!(key.public_jwk()["kty"], "EC");
    assert_eq!(key.public_jwk()["crv"], "P-384");
    assert!(
        key.public_jwk().get("d").is_none(),
        "private part published"
    );
}

#[test]
fn every_claim_attack_is_rejected_with_its_reason() {
    let (key, pem) = SigningKey::generate().unwrap();
    let keys = std::slice::from_ref(&key);
    let with = |name: &str, value: Value| {
        let mut payload = claims();
        payload[name] = value;
        payload
    };
    let without = |name: &str| {
        let mut payload = claims();
        payload.as_object_mut().unwrap().remove(name);
        payload
    };
    let cases: Vec<(&str, Value, TokenError)> = vec![
        ("expired", with("exp", json!(NOW - 31)), TokenError::Expired),
        (
            "not yet valid",
            with("nbf", json!(NOW + 31)),
            TokenError::NotYetValid,
        ),
        (
            "issued in the future",
            with("iat", json!(NOW + 31)),
            TokenError::NotYetValid,
        ),
        (
            "exp never",
            with("exp", json!("never")),
            TokenError::Claim("exp"),
        ),
        (
            "nbf as string",
            with("nbf", json!("99999999999")),
            TokenError::Claim("nbf"),
        ),
        (
            "exp as float",
            with("exp", json!(1.5e9)),
            TokenError::Claim("exp"),
        ),
        (
            "aud as number",
            with("aud", json!(123)),
            TokenError::Claim("aud"),
        ),
        (
            "aud as list",
            with("aud", json!([AUD])),
            TokenError::Claim("aud"),
        ),
        ("no exp", without("exp"), TokenError::Claim("exp")),
        ("no nbf", without("nbf"), TokenError::Claim("nbf")),
        ("no aud", without("aud"), TokenError::Claim("aud")),
        ("no iss", without("iss"), TokenError::Claim("iss")),
        (
            "wrong audience",
            with("aud", json!("https://other.example.jp/fhir")),
            TokenError::Audience,
        ),
        (
            "wrong issuer",
            with("iss", json!("https://idp.example.jp")),
            TokenError::Issuer,
        ),
        (
            "too long-lived",
            with("exp", json!(NOW - 60 + 301)),
            TokenError::Lifetime,
        ),
        (
            "unknown kind",
            with("kind", json!("root")),
            TokenError::Claim("kind"),
        ),
        (
            "extra claim",
            with("admin", json!(true)),
            TokenError::Claim("kind"),
        ),
        (
            "empty jti",
            with("jti", json!("")),
            TokenError::Claim("jti"),
        ),
    ];
    for (name, payload, reason) in cases {
        let token = signed(&key, &pem, &payload);
        assert_eq!(
            token::verify(keys, &token, &expected()),
            Err(reason),
            "{name}"
        );
    }
    // Claims that verify but make no principal.
    for (name, payload) in [
        ("unknown role", with("role", json!("root"))),
        (
            "system scope on a user",
            with("scope", json!("system/*.rs")),
        ),
        ("bad scope", with("scope", json!("user/*.dus"))),
        (
            "user claiming the system role",
            with("role", json!("system")),
        ),
    ] {
        let token = signed(&key, &pem, &payload);
        let claims = token::verify(keys, &token, &expected()).unwrap();
        assert!(Principal::from_claims(claims).is_err(), "{name}");
    }
}

#[test]
fn header_and_signature_attacks_are_rejected() {
    let (key, pem) = SigningKey::generate().unwrap();
    let keys = std::slice::from_ref(&key);
    let good = signed(&key, &pem, &claims());
    let parts: Vec<&str> = good.split('.').collect();

    // alg: none, with and without a signature part.
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    for token in [
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}.{}", parts[1], parts[2]),
    ] {
        // jsonwebtoken has no `none` algorithm: the header does not even parse.
        let result = token::verify(keys, &token, &expected());
        assert!(
            matches!(result, Err(TokenError::Malformed | TokenError::Algorithm)),
            "{result:?}"
        );
    }
    // Algorithm confusion: HS384 keyed with the public JWK's text.
    let secret = key.public_jwk().to_string();
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some(key.kid().to_owned());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        token::verify(keys, &confused, &expected()),
        Err(TokenError::Algorithm)
    );
    // A payload changed after signing.
    let mut payload = claims();
    payload["facility"] = json!("0610200018");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(payload.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        token::verify(keys, &forged, &expected()),
        Err(TokenError::Signature)
    );
    // Signed by another key with the same kid.
    let (other, other_pem) = SigningKey::generate().unwrap();
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(key.kid().to_owned());
    let impostor = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        token::verify(keys, &impostor, &expected()),
        Err(TokenError::Signature)
    );
    // Unknown kid, no kid.
    let unknown = signed(&other, &other_pem, &claims());
    assert_eq!(
        token::verify(keys, &unknown, &expected()),
        Err(TokenError::UnknownKey)
    );
    let mut header = Header::new(Algorithm::ES384);
    header.kid = None;
    let kidless = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        token::verify(keys, &kidless, &expected()),
        Err(TokenError::UnknownKey)
    );
    // A jku header pointing at an attacker's key set.
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(key.kid().to_owned());
    header.jku = Some("https://evil.example/jwks.json".to_owned());
    let jku = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        token::verify(keys, &jku, &expected()),
        Err(TokenError::KeyHeader)
    );
    // Garbage.
    for garbage in [
        "",
        "a.b",
        "a.b.c",
        "....",
        &"x".repeat(10_000),
        "e30.e30.e30",
    ] {
        assert!(
            token::verify(keys, garbage, &expected()).is_err(),
            "{garbage:.20}"
        );
    }
}

fn assertion(alg: Algorithm, kid: &str, pem: &str, payload: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let key = match alg {
        Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    jsonwebtoken::encode(&header, payload, &key).unwrap()
}

fn assertion_claims(client: &str) -> Value {
    json!({"iss": client, "sub": client, "aud": TOKEN_URL, "exp": NOW + 240, "jti": "a-1"})
}

#[test]
fn client_assertions_rs384_and_es384() {
    let lab_pem = fixture("lab-rs384.pem");
    let lab_jwks: Value = serde_json::from_str(&fixture("lab-rs384.jwks.json")).unwrap();
    let portal_pem = fixture("portal-es384.pem");
    let portal_jwks: Value = serde_json::from_str(&fixture("portal-es384.jwks.json")).unwrap();

    let lab = assertion(
        Algorithm::RS384,
        "lab-1",
        &lab_pem,
        &assertion_claims("lab"),
    );
    let verified = verify_client_assertion(&lab, "lab", &lab_jwks, TOKEN_URL, NOW).unwrap();
    assert_eq!((verified.jti.as_str(), verified.exp), ("a-1", NOW + 240));
    let portal = assertion(
        Algorithm::ES384,
        "portal-1",
        &portal_pem,
        &assertion_claims("portal"),
    );
    assert!(verify_client_assertion(&portal, "portal", &portal_jwks, TOKEN_URL, NOW).is_ok());

    let check = |token: &str, client: &str, jwks: &Value| {
        verify_client_assertion(token, client, jwks, TOKEN_URL, NOW)
    };
    // The lab's assertion against the portal's keys, or for another client id.
    assert_eq!(
        check(&lab, "lab", &portal_jwks),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(check(&lab, "portal", &lab_jwks), Err(TokenError::Issuer));
    // RS256 is not on the SMART allow-list.
    let rs256 = assertion(
        Algorithm::RS256,
        "lab-1",
        &lab_pem,
        &assertion_claims("lab"),
    );
    assert_eq!(check(&rs256, "lab", &lab_jwks), Err(TokenError::Algorithm));
    // Unknown kid.
    let wrong_kid = assertion(
        Algorithm::RS384,
        "lab-2",
        &lab_pem,
        &assertion_claims("lab"),
    );
    assert_eq!(
        check(&wrong_kid, "lab", &lab_jwks),
        Err(TokenError::UnknownKey)
    );
    let mut payload = assertion_claims("lab");
    payload["exp"] = json!(NOW + 301);
    let long = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert_eq!(check(&long, "lab", &lab_jwks), Err(TokenError::Lifetime));
    payload["exp"] = json!(NOW - 31);
    let old = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert_eq!(check(&old, "lab", &lab_jwks), Err(TokenError::Expired));
    payload["exp"] = json!("soon");
    let typed = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert_eq!(
        check(&typed, "lab", &lab_jwks),
        Err(TokenError::Claim("exp"))
    );
    let mut payload = assertion_claims("lab");
    payload["aud"] = json!("https://tsunagi.example.jp/fhir");
    let aud = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert_eq!(check(&aud, "lab", &lab_jwks), Err(TokenError::Audience));
    payload["aud"] = json!(["x", TOKEN_URL]);
    let listed = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert!(check(&listed, "lab", &lab_jwks).is_ok());
    let mut payload = assertion_claims("lab");
    payload.as_object_mut().unwrap().remove("jti");
    let no_jti = assertion(Algorithm::RS384, "lab-1", &lab_pem, &payload);
    assert_eq!(
        check(&no_jti, "lab", &lab_jwks),
        Err(TokenError::Claim("jti"))
    );
}

/// The verified-token cache skips only the signature: a remembered token still expires, and a
/// remembered token presented to another audience is still refused; a forged copy is not
/// remembered.
#[test]
fn remembered_tokens_are_still_checked_against_the_clock_and_audience() {
    let (key, _) = SigningKey::generate().unwrap();
    let keys = std::slice::from_ref(&key);
    let claims: AccessClaims = serde_json::from_value(claims()).unwrap();
    let token = token::issue(&key, &claims).unwrap();
    let cache = token::VerifiedTokens::new(2);
    assert_eq!(cache.verify(keys, &token, &expected()).unwrap(), claims);
    assert_eq!(cache.verify(keys, &token, &expected()).unwrap(), claims);
    let later = Expected {
        now: NOW + 240 + 30,
        ..expected()
    };
    assert_eq!(
        cache.verify(keys, &token, &later).unwrap_err(),
        TokenError::Expired
    );
    let elsewhere = Expected {
        audience: "https://other.example.jp/fhir",
        ..expected()
    };
    assert_eq!(
        cache.verify(keys, &token, &elsewhere).unwrap_err(),
        TokenError::Audience
    );
    // A token with a flipped signature byte is verified, and refused, every time.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for _ in 0..2 {
        assert!(cache.verify(keys, &forged, &expected()).is_err());
    }
    // More tokens than the capacity: still correct.
    for n in 0..5 {
        let mut more = claims.clone();
        more.jti = format!("t-{n}");
        let token = token::issue(&key, &more).unwrap();
        assert_eq!(
            cache.verify(keys, &token, &expected()).unwrap().jti,
            more.jti
        );
    }
}
