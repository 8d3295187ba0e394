//! Tokens: the SMART token endpoint (`client_credentials` with a `private_key_jwt` client
//! assertion, and a registered portal acting for its signed-in user), discovery
//! (`/.well-known/smart-configuration`), the JWKS of Tsunagi's signing keys, and issuing an
//! access token — only to a subject whose records let it stand ([`crate::standing`]).

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Form, Json,
    extract::{ConnectInfo, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tsunagi_auth::{
    Role, Scopes,
    assertion::{unverified_issuer, verify_client_assertion},
    token::{self, AccessClaims, SigningKey, SubjectKind, TokenError, random_id},
};
use tsunagi_store::{
    StoreError,
    governance::{Governance, StoredKey, TokenFacts},
};

use crate::{
    AppState,
    access::RequestId,
    outcome::ApiError,
    security::{Agent, RequestFacts, audit_record, finish},
    tls::Peer,
};

/// Where tokens come from and whom they are for.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` of the access tokens Tsunagi signs.
    pub issuer: String,
    /// `aud` they carry and every request's token must carry: the FHIR base URL.
    pub audience: String,
    /// The token endpoint URL clients put in their assertions' `aud`.
    pub token_url: String,
    /// Lifetime of an access token, seconds (at most 300).
    pub lifetime: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self::for_base("http://127.0.0.1:8080")
    }
}

impl TokenSettings {
    /// Settings for a server whose public origin is `origin` (no trailing slash).
    pub fn for_base(origin: &str) -> Self {
        let origin = origin.trim_end_matches('/');
        Self {
            issuer: origin.to_owned(),
            audience: format!("{origin}/fhir"),
            token_url: format!("{origin}/auth/token"),
            lifetime: token::MAX_LIFETIME,
        }
    }
}

/// Loads Tsunagi's signing keys, creating the first one when there is none.
pub async fn signing_keys(
    governance: &dyn Governance,
    now_micros: i64,
) -> Result<Vec<SigningKey>, StoreError> {
    let mut stored = governance.signing_keys().await?;
    if stored.is_empty() {
        let (key, pem) =
            SigningKey::generate().map_err(|error| StoreError::Invalid(error.to_string()))?;
        let record = StoredKey {
            kid: key.kid().to_owned(),
            pem,
            created_at: now_micros,
        };
        // Another node starting on the same new database may win: its key is then the one.
        if governance.put_first_signing_key(&record).await? {
            stored.push(record);
        } else {
            stored = governance.signing_keys().await?;
            if stored.is_empty() {
                return Err(StoreError::Corrupt(
                    "a first signing key was recorded but none is stored".to_owned(),
                ));
            }
        }
    }
    stored
        .iter()
        .map(|key| {
            SigningKey::from_pkcs8_pem(&key.kid, &key.pem)
                .map_err(|error| StoreError::Corrupt(format!("signing key {}: {error}", key.kid)))
        })
        .collect()
}

/// Why a token cannot be issued to a subject.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A scope that grants nothing, or that cannot be read.
    #[error("{0}")]
    Refused(String),
    /// The subject may not have a token through this client: unknown or inactive client, user
    /// or facility, or a portal asking for a user of a facility it does not serve
    /// ([`crate::standing`]).
    #[error("{0}")]
    Grant(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Who a token is for.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A system client acting as itself.
    System(&'a str),
    /// A user, through client `via` (a portal; the operator's CLI says `operator`).
    User {
        /// User id.
        user: &'a str,
        /// The client acting for the user.
        via: &'a str,
    },
}

/// Issues an access token for `subject` with the requested scopes narrowed by what its
/// registration allows; returns the token and the granted scopes.
pub async fn issue_token(
    governance: &dyn Governance,
    key: &SigningKey,
    settings: &TokenSettings,
    subject: Subject<'_>,
    requested: &str,
    now_seconds: i64,
) -> Result<(String, String), IssueError> {
    let requested =
        Scopes::parse(requested).map_err(|error| IssueError::Refused(error.to_string()))?;
    let (sub, client_id, facility, role, kind, allowed) =
        match subject {
            Subject::System(id) => {
                let client = governance
                    .client(id)
                    .await?
                    .filter(|client| client.active && client.kind == "system")
                    .ok_or_else(|| IssueError::Grant(format!("no active system client {id}")))?;
                let allowed = Scopes::parse(&client.scope)
                    .map_err(|error| IssueError::Refused(error.to_string()))?;
                (
                    id,
                    id,
                    client.facility,
                    Role::System,
                    SubjectKind::System,
                    allowed,
                )
            }
            Subject::User { user, via } => {
                let participant = governance
                    .participant(user)
                    .await?
                    .filter(|participant| participant.active)
                    .ok_or_else(|| IssueError::Grant(format!("no active user {user}")))?;
                let role: Role = participant.role.parse().map_err(
                    |error: tsunagi_auth::role::UnknownRole| IssueError::Refused(error.to_string()),
                )?;
                if role == Role::System {
                    return Err(IssueError::Refused(format!("{user} is not a person")));
                }
                let allowed = Scopes::parse("user/*.cruds")
                    .map_err(|error| IssueError::Refused(error.to_string()))?;
                (
                    user,
                    via,
                    participant.facility,
                    role,
                    SubjectKind::User,
                    allowed,
                )
            }
        };
    let granted = allowed.narrow(&requested);
    if granted.resources.is_empty() {
        return Err(IssueError::Refused(format!(
            "none of the requested scopes is allowed for {sub}"
        )));
    }
    let jti = random_id(16);
    let facts = TokenFacts {
        token_id: jti.clone(),
        subject: sub.to_owned(),
        client: client_id.to_owned(),
        facility: facility.clone(),
        user: kind == SubjectKind::User,
        issued_at: now_seconds,
    };
    let standing = governance.token_standing(&facts).await?;
    crate::standing::judge(&facts, role.code(), &standing).map_err(IssueError::Grant)?;
    let lifetime = settings.lifetime.clamp(1, token::MAX_LIFETIME);
    let claims = AccessClaims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: sub.to_owned(),
        client_id: client_id.to_owned(),
        exp: now_seconds + lifetime,
        nbf: now_seconds,
        iat: now_seconds,
        jti,
        scope: granted.to_string(),
        facility,
        role: role.code().to_owned(),
        kind,
    };
    Ok((token::issue(key, &claims)?, claims.scope))
}

/// `GET /.well-known/smart-configuration`.
pub async fn smart_configuration(State(state): State<Arc<AppState>>) -> Response {
    let tokens = &state.settings.tokens;
    Json(json!({
        "issuer": tokens.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", tokens.issuer),
        "token_endpoint": tokens.token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.rs", "user/*.rs", "system/*.read", "user/*.read"],
        // Backend services only: no authorize endpoint, so no response types or PKCE methods
        // are listed (an empty list would be an empty array served).
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"]
    }))
    .into_response()
}

/// `GET /.well-known/jwks.json`: the public halves of Tsunagi's signing keys.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let keys: Vec<Value> = state
        .keys
        .iter()
        .map(|key| key.public_jwk().clone())
        .collect();
    Json(json!({"keys": keys})).into_response()
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The OAuth error form is the token endpoint's wire form, not an OperationOutcome.
    response.extensions_mut().insert(crate::limits::OwnForm);
    response
}

/// `POST /auth/token`: `client_credentials` with a `private_key_jwt` client assertion. A
/// registered portal adds `user=<user id>` to obtain a token for its signed-in user.
pub async fn token_endpoint(
    State(state): State<Arc<AppState>>,
    request_id: Option<Extension<RequestId>>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    evictable: Option<Extension<tsunagi_net::Evictable>>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        // RFC 6749 §4.4: the request is application/x-www-form-urlencoded.
        Err(rejection) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "the token request is a form (application/x-www-form-urlencoded): {rejection}"
                ),
            );
        }
    };
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer);
    let value = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let now = state.clock.now_micros();
    let seconds = now.div_euclid(1_000_000);
    if value("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if value("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be jwt-bearer",
        );
    }
    let Some(assertion) = value("client_assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion is required",
        );
    };
    let invalid_client =
        |reason: &str| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", reason);
    let Some(client_id) = value("client_id")
        .map(str::to_owned)
        .or_else(|| unverified_issuer(assertion))
    else {
        return invalid_client("the assertion names no client");
    };
    if let Some(certified) = peer
        .as_ref()
        .and_then(|peer| peer.certified_client.as_deref())
        && certified != client_id
    {
        return invalid_client("the TLS client certificate names another client");
    }
    let client = match state.governance.client(&client_id).await {
        Ok(Some(client)) if client.active => client,
        Ok(_) => return invalid_client("unknown client"),
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Ok(jwks) = serde_json::from_str::<Value>(&client.jwks) else {
        return invalid_client("the client's registered keys are unreadable");
    };
    let verified = match verify_client_assertion(
        assertion,
        &client_id,
        &jwks,
        &state.settings.tokens.token_url,
        seconds,
    ) {
        Ok(verified) => verified,
        Err(error) => return invalid_client(&format!("client assertion refused: {error}")),
    };
    match state
        .governance
        .remember_assertion(&client_id, &verified.jti, verified.exp, seconds)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return invalid_client(&format!(
                "client assertion refused: {}",
                TokenError::Replayed
            ));
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    let subject = match (client.kind.as_str(), value("user")) {
        ("system", None) => Subject::System(&client_id),
        ("portal", Some(user)) => Subject::User {
            user,
            via: &client_id,
        },
        ("portal", None) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a portal names the signed-in user with user=",
            );
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "only a portal may act for a user",
            );
        }
    };
    let requested = value("scope").unwrap_or_default();
    let Some(key) = state.keys.first() else {
        return ApiError::internal("no signing key").into_response();
    };
    let facts = RequestFacts {
        method: "POST".to_owned(),
        path: "/auth/token".to_owned(),
        query: None,
        request_id: request_id.map(|Extension(id)| id.0).unwrap_or_default(),
        address: peer.map(|peer| peer.address.ip().to_string()),
    };
    match issue_token(
        state.governance.as_ref(),
        key,
        &state.settings.tokens,
        subject,
        requested,
        seconds,
    )
    .await
    {
        Ok((token, scope)) => {
            // The client proved who it is: its connection is spared while the token lasts.
            if let Some(Extension(evictable)) = &evictable {
                let lifetime = state.settings.tokens.lifetime.clamp(1, token::MAX_LIFETIME);
                evictable.spare_for(Duration::from_secs(u64::try_from(lifetime).unwrap_or(0)));
            }
            let mut response = Json(json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": state.settings.tokens.lifetime.clamp(1, token::MAX_LIFETIME),
                "scope": scope
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            let login = Agent::Login {
                client: &client_id,
                user: value("user"),
            };
            let record = audit_record(&facts, login, None, StatusCode::OK, now);
            finish(&state, vec![record], response).await
        }
        Err(IssueError::Refused(reason)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &reason)
        }
        Err(IssueError::Grant(reason)) => {
            // A refusal after the client proved who it is: audited, like a login.
            let login = Agent::Login {
                client: &client_id,
                user: value("user"),
            };
            let record = audit_record(&facts, login, None, StatusCode::BAD_REQUEST, now);
            finish(
                &state,
                vec![record],
                oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &reason),
            )
            .await
        }
        Err(IssueError::Store(error)) => ApiError::from(error).into_response(),
        Err(IssueError::Token(error)) => ApiError::internal(error.to_string()).into_response(),
    }
}
