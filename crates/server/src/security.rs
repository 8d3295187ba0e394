//! Authentication, authorisation and audit at the HTTP edge.
//!
//! [`guard`] wraps every FHIR route except `metadata`: it verifies the bearer token (401
//! otherwise), makes the request's [`Caller`] (principal + the store [`Access`] it reads under),
//! runs the handler, then appends one BALP AuditEvent per patient the response touched (one
//! without a patient when it touched none, denials included) and sends the response only after
//! the audit writer has committed them. If the audit cannot be written the client gets a 500,
//! never unrecorded data.
//!
//! Also here: the SMART token endpoint (`client_credentials` + `private_key_jwt`, and a
//! registered portal acting for a signed-in user), `/.well-known/smart-configuration` and the
//! JWKS of Tsunagi's signing keys.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension, Form, Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tsunagi_auth::{
    Interaction, Principal, Role, Scopes,
    assertion::{unverified_issuer, verify_client_assertion},
    token::{self, AccessClaims, Expected, SigningKey, SubjectKind, TokenError, random_id},
};
use tsunagi_store::{
    Access, StoreError, StoredResource,
    audit::{AuditAgent, AuditFacts, record_id},
    governance::{AuditRecord, Governance, StoredKey, TokenFacts},
};

use crate::{AppState, access::RequestId, outcome::ApiError, tls::Peer};

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
        governance.put_signing_key(&record).await?;
        stored.push(record);
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

/// The authenticated caller of one request.
#[derive(Debug)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// What the store lets them see, at the request's instant.
    pub access: Access,
    touched: Mutex<BTreeSet<String>>,
}

impl Caller {
    /// A caller with nothing touched yet.
    pub(crate) fn new(principal: Principal, access: Access) -> Self {
        Self {
            principal,
            access,
            touched: Mutex::default(),
        }
    }

    /// Scope and role allow `interaction` on `resource_type`, else 403.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> Result<(), ApiError> {
        if self.principal.may(resource_type, interaction) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token's scopes or the {} role do not allow {} of {resource_type}",
                self.principal.role,
                match interaction {
                    Interaction::Read => "read",
                    Interaction::Search => "search",
                    Interaction::Create => "create",
                    Interaction::Update => "update",
                    Interaction::Delete => "delete",
                }
            )))
        }
    }

    /// True when the caller's scopes and role let it read `resource_type` (for included
    /// resources, which are dropped rather than refused).
    pub fn may_see(&self, resource_type: &str) -> bool {
        self.principal.may(resource_type, Interaction::Read)
            || self.principal.may(resource_type, Interaction::Search)
    }

    /// Notes the patients of resources about to be returned (audited per patient).
    pub fn touch<'a>(&self, resources: impl IntoIterator<Item = &'a StoredResource>) {
        let mut touched = self
            .touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource in resources {
            if let Some(patient) = &resource.patient {
                touched.insert(patient.clone());
            }
        }
    }

    /// Notes a patient whose data is about to be returned (audited per patient).
    pub fn touch_patient(&self, patient: &str) {
        self.touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(patient.to_owned());
    }

    /// Paging snapshots belong to the principal that made them.
    pub fn snapshot_scope(&self, path: &str) -> String {
        format!(
            "{}|{}|{}|{path}",
            self.principal.facility, self.principal.subject, self.principal.client_id
        )
    }
}

/// A batch of audit records and the reply sent once they are committed.
type AuditJob = (Vec<AuditRecord>, oneshot::Sender<Result<(), String>>);

/// Appends audit records: at once when the store journals them (one short write, no hand-off
/// between tasks), else with group commit, whatever is queued written in one transaction.
#[derive(Clone)]
pub struct AuditWriter {
    sender: mpsc::Sender<AuditJob>,
    governance: Arc<dyn Governance>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Starts the writer task.
    pub fn start(governance: Arc<dyn Governance>) -> Self {
        let (sender, mut receiver) = mpsc::channel::<AuditJob>(4096);
        let writer = Self {
            sender,
            governance: governance.clone(),
        };
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < 512 {
                    match receiver.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let records: Vec<AuditRecord> = jobs
                    .iter()
                    .flat_map(|(records, _)| records.clone())
                    .collect();
                let result = governance
                    .append_audit(&records)
                    .await
                    .map_err(|error| error.to_string());

                for (_, reply) in jobs {
                    // A caller that went away no longer needs to know.
                    let _ = reply.send(result.clone());
                }
            }
        });
        writer
    }

    /// Appends `records` and waits until they are committed.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<(), String> {
        if let Some(done) = self.governance.append_audit_now(&records) {
            return done.map_err(|error| error.to_string());
        }
        let (reply, done) = oneshot::channel();
        self.sender
            .send((records, reply))
            .await
            .map_err(|_| "the audit writer has stopped".to_owned())?;
        match tokio::time::timeout(Duration::from_secs(30), done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the audit writer dropped the request".to_owned()),
            Err(_) => Err("the audit writer did not answer in 30 s".to_owned()),
        }
    }
}

/// What the audit needs to know about the request, taken before the handler runs.
struct RequestFacts {
    method: String,
    path: String,
    query: Option<String>,
    request_id: String,
    address: Option<String>,
}

/// The middleware around every authenticated route.
pub async fn guard(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = state.clock.now_micros();
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0.clone());
    let facts = RequestFacts {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default(),
        address: peer.as_ref().map(|peer| peer.address.ip().to_string()),
    };
    let certified = peer.and_then(|peer| peer.certified_client);
    let refused = |reason: &str| {
        let mut response =
            ApiError::unauthorized(format!("access token refused: {reason}")).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tsunagi\", error=\"invalid_token\""),
        );
        response
    };
    // A connection is spared from eviction at the cap only while the token it carries is
    // valid and stands; a request that fails to authenticate exposes it again.
    let evictable = request
        .extensions()
        .get::<tsunagi_net::Evictable>()
        .cloned();
    let expose = || {
        if let Some(evictable) = &evictable {
            evictable.expose();
        }
    };
    let principal = match authenticate(&state, request.headers(), now, certified.as_deref()) {
        Ok(principal) => principal,
        Err(reason) => {
            expose();
            let record = audit_record(
                &facts,
                Agent::Unauthenticated,
                None,
                StatusCode::UNAUTHORIZED,
                now,
            );
            return finish(&state, vec![record], refused(&reason)).await;
        }
    };
    // The records behind the token, read again whenever they may have changed: a deactivation
    // or revocation holds from the next request on, whatever the token's expiry.
    let epoch = state.governance.standing_epoch();
    let seconds = now.div_euclid(1_000_000);
    let remembered =
        epoch.is_some_and(|epoch| state.standings.holds(&principal.token_id, epoch, seconds));
    let standing = if remembered {
        Ok(())
    } else {
        let token = crate::standing::facts_of(&principal);
        match state.governance.token_standing(&token).await {
            Ok(standing) => crate::standing::judge(&token, principal.role.code(), &standing),
            Err(error) => return ApiError::from(error).into_response(),
        }
    };
    if let (Ok(()), false, Some(epoch)) = (&standing, remembered, epoch) {
        state
            .standings
            .remember(&principal.token_id, epoch, principal.expires_at);
    }
    if let Err(reason) = standing {
        expose();
        let agent = Agent::Principal(&principal);
        let record = audit_record(&facts, agent, None, StatusCode::UNAUTHORIZED, now);
        return finish(&state, vec![record], refused(&reason)).await;
    }
    if let Some(evictable) = &evictable {
        let lifetime = principal
            .expires_at
            .saturating_sub(now.div_euclid(1_000_000));
        evictable.spare_for(Duration::from_secs(u64::try_from(lifetime).unwrap_or(0)));
    }
    let access = Access::facility(principal.facility.clone(), now);
    let caller = Arc::new(Caller::new(principal, access));
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    let status = response.status();
    let touched = std::mem::take(
        &mut *caller
            .touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let records: Vec<AuditRecord> = if touched.is_empty() {
        vec![audit_record(
            &facts,
            Agent::Principal(&caller.principal),
            None,
            status,
            now,
        )]
    } else {
        let event = audit_facts(&facts, Agent::Principal(&caller.principal), status);
        touched
            .iter()
            .map(|patient| AuditRecord {
                id: record_id(now, &random_id(8)),
                recorded: now,
                patient: Some(patient.clone()),
                facility: Some(caller.principal.facility.clone()),
                event: event.clone(),
            })
            .collect()
    };
    finish(&state, records, response).await
}

/// Sends `response` once `records` are committed, a 500 if they cannot be.
async fn finish(state: &AppState, records: Vec<AuditRecord>, response: Response) -> Response {
    match state.audit.append(records).await {
        Ok(()) => response,
        Err(error) => {
            tracing::error!(target: "tsunagi::audit", %error, "audit records not written; response withheld");
            ApiError::internal("the access could not be audited; no data was returned")
                .into_response()
        }
    }
}

/// The principal of the request's bearer token.
/// On the mutual-TLS listener (`certified` is the client id the certificate names) the token
/// must have been issued to that client (RFC 8705 §3, bound by client id).
fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    now_micros: i64,
    certified: Option<&str>,
) -> Result<Principal, String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("the Authorization scheme must be Bearer")?
        .trim();
    let expected = Expected {
        issuer: &state.settings.tokens.issuer,
        audience: &state.settings.tokens.audience,
        now: now_micros.div_euclid(1_000_000),
    };
    let claims = state
        .verified
        .verify(&state.keys, token, &expected)
        .map_err(|error| error.to_string())?;
    let principal = Principal::from_claims(claims).map_err(|error| error.to_string())?;
    match certified {
        Some(client) if client != principal.client_id => {
            Err("the token was not issued to the client the TLS certificate names".to_owned())
        }
        _ => Ok(principal),
    }
}

/// Who an audit record names as the requesting side.
#[derive(Clone, Copy)]
enum Agent<'a> {
    /// No valid token.
    Unauthenticated,
    /// An authenticated request.
    Principal(&'a Principal),
    /// A token issued at the token endpoint (the login of MHLW §17 ①).
    Login {
        client: &'a str,
        user: Option<&'a str>,
    },
}

/// The audit record of one access, holding its compact facts (rendered as an IHE BALP
/// AuditEvent when the trail is read: [`tsunagi_store::audit::render`]).
fn audit_record(
    facts: &RequestFacts,
    agent: Agent<'_>,
    patient: Option<&str>,
    status: StatusCode,
    now: i64,
) -> AuditRecord {
    AuditRecord {
        id: record_id(now, &random_id(8)),
        recorded: now,
        patient: patient.map(str::to_owned),
        facility: match agent {
            Agent::Principal(principal) => Some(principal.facility.clone()),
            _ => None,
        },
        event: audit_facts(facts, agent, status),
    }
}

/// The stored facts of an access ([`AuditFacts`]).
fn audit_facts(facts: &RequestFacts, agent: Agent<'_>, status: StatusCode) -> Vec<u8> {
    let agent = match agent {
        Agent::Unauthenticated => AuditAgent::Unauthenticated,
        Agent::Principal(principal) => AuditAgent::Principal {
            client: principal.client_id.clone(),
            subject: principal.subject.clone(),
            user: principal.kind == SubjectKind::User,
            role: principal.role.code().to_owned(),
            token: principal.token_id.clone(),
            facility: principal.facility.clone(),
        },
        Agent::Login { client, user } => AuditAgent::Login {
            client: client.to_owned(),
            user: user.map(str::to_owned),
        },
    };
    AuditFacts::new(
        &facts.method,
        &facts.path,
        facts.query.as_deref(),
        &facts.request_id,
        facts.address.as_deref(),
        status.as_u16(),
        agent,
    )
    .to_bytes()
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
        "response_types_supported": [],
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
        "code_challenge_methods_supported": []
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
