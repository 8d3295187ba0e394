//! Authentication, authorisation and audit at the HTTP edge.
//!
//! [`guard`] wraps every FHIR route except `metadata`: it verifies the bearer token (401
//! otherwise), makes the request's [`Caller`] (principal + the store [`Access`] it reads under),
//! runs the handler, then appends one BALP AuditEvent per patient the response touched (one
//! without a patient when it touched none, denials included) and sends the response only after
//! the audit writer has committed them. If the audit cannot be written the client gets a 500,
//! never unrecorded data.
//!
//! The SMART token endpoint, discovery and token issuance are in [`crate::token_api`]; their
//! names are re-exported here, where callers have always found them.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::{mpsc, oneshot};
use tsunagi_auth::{
    Interaction, Principal,
    token::{Expected, SubjectKind, random_id},
};
use tsunagi_store::{
    Access, StoredResource,
    audit::{AuditAgent, AuditFacts, record_id},
    governance::{AuditRecord, Governance},
};

pub use crate::token_api::{
    IssueError, Subject, TokenSettings, issue_token, jwks, signing_keys, smart_configuration,
    token_endpoint,
};
use crate::{AppState, access::RequestId, outcome::ApiError, tls::Peer};

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
pub(crate) struct RequestFacts {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) request_id: String,
    pub(crate) address: Option<String>,
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
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD);
    let answered = answer(state, facts, caller, request, next, now);
    if reads_only {
        return answered.await;
    }
    // A request that may write runs to its end with its audit, in a task of its own, whether or
    // not its client still waits: the store finishes a write it has begun (`store-sql`'s
    // `to_the_end`), so the record of who made it must be finished too.
    match tokio::spawn(answered).await {
        Ok(response) => response,
        Err(_) => ApiError::internal("the request stopped before it was answered").into_response(),
    }
}

/// Runs the handler for `caller` and sends its answer once the audit records of what it touched
/// are committed.
async fn answer(
    state: Arc<AppState>,
    facts: RequestFacts,
    caller: Arc<Caller>,
    request: Request,
    next: Next,
    now: i64,
) -> Response {
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
pub(crate) async fn finish(
    state: &AppState,
    records: Vec<AuditRecord>,
    response: Response,
) -> Response {
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
pub(crate) enum Agent<'a> {
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
pub(crate) fn audit_record(
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
