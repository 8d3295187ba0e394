//! The network's own records, next to the clinical ones: the directory (facilities,
//! participants, registered clients), patient links, consents, the audit trail, seen assertion
//! ids and token-signing keys. [`Access`] is how a read names whose eyes it is for.

use crate::StoreError;

/// Whose eyes a read is for. Every read of clinical data takes one; there is no read without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A principal of facility `code`, at instant `at` (microseconds): only the compartments the
    /// facility holds or a consent in force at `at` lets it see, plus resources outside every
    /// patient's record (the directory).
    Facility {
        /// 10-digit facility code.
        code: String,
        /// Microseconds since the epoch.
        at: i64,
    },
    /// Everything: the operator's command line, the ingest pipeline and store tests. The HTTP
    /// API never builds one (a test in `tests/e2e` checks the server's source).
    Unrestricted,
}

impl Access {
    /// A facility's view at `at`.
    pub fn facility(code: impl Into<String>, at: i64) -> Self {
        Access::Facility {
            code: code.into(),
            at,
        }
    }
}

/// A facility of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    /// 10-digit code.
    pub code: String,
    /// Name.
    pub name: String,
    /// hospital, clinic, dental-clinic, pharmacy, home-nursing, care-manager-office,
    /// nursing-home, lab-company, lab-centre.
    pub kind: String,
    /// False once deactivated (left the network): no token of its people or clients stands.
    pub active: bool,
}

/// Whether facilities of `kind` report results for others (lab companies and lab centres).
pub fn reports_results(kind: &str) -> bool {
    matches!(kind, "lab-company" | "lab-centre")
}

/// Checks a lab's list of facilities against the directory (`known`): `lab` must be a lab company
/// or lab centre, every listed facility registered. Both backends call it before writing.
pub fn check_lab_reports(
    known: &[Facility],
    lab: &str,
    facilities: &[String],
) -> Result<(), StoreError> {
    match known.iter().find(|facility| facility.code == lab) {
        Some(facility) if reports_results(&facility.kind) => {}
        Some(facility) => {
            return Err(StoreError::Invalid(format!(
                "facility {lab} is a {}: only a lab-company or lab-centre reports results for others",
                facility.kind
            )));
        }
        None => {
            return Err(StoreError::Invalid(format!(
                "facility {lab} is not registered"
            )));
        }
    }
    match facilities
        .iter()
        .find(|code| !known.iter().any(|facility| &facility.code == *code))
    {
        Some(code) => Err(StoreError::Invalid(format!(
            "facility {code} is not registered"
        ))),
        None => Ok(()),
    }
}

/// The facility kinds the directory accepts.
pub const FACILITY_KINDS: &[&str] = &[
    "hospital",
    "clinic",
    "dental-clinic",
    "pharmacy",
    "home-nursing",
    "care-manager-office",
    "nursing-home",
    "lab-company",
    "lab-centre",
];

/// A person who signs in through the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// User id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The facility they work for.
    pub facility: String,
    /// Role code (see `tsunagi_auth::Role`).
    pub role: String,
    /// False once deactivated: no token is issued for them.
    pub active: bool,
}

/// A registered client: a system (hospital adapter, lab company, portal backend acting as
/// itself) or the portal acting for its signed-in users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// client_id.
    pub id: String,
    /// The facility it acts for (for a portal: the network operator's facility).
    pub facility: String,
    /// `system` or `portal`.
    pub kind: String,
    /// Its public keys, a JWK Set as JSON text.
    pub jwks: String,
    /// The most a token issued to it may carry.
    pub scope: String,
    /// False once deactivated.
    pub active: bool,
    /// A portal: the facilities besides its own whose users it may act for (a regional portal
    /// lists every facility it serves). Empty for a system client.
    pub serves: Vec<String>,
}

/// The client id of tokens the operator issues from the command line (`tsunagi token issue`);
/// no registered client may take it.
pub const OPERATOR_CLIENT: &str = "operator";

/// A revocation: tokens it names are refused from the next request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One token, by its `jti`.
    Token(String),
    /// Every token of a user or client (as subject or as the client it was issued to) issued
    /// up to `at` (seconds since the epoch).
    Subject {
        /// User or client id.
        id: String,
        /// Seconds: tokens issued at or before are refused.
        at: i64,
    },
}

impl Revocation {
    /// Its row in `revocations`: kind (`token` or `subject`), the jti or id, and the instant.
    pub fn row(&self) -> (&'static str, &str, i64) {
        match self {
            Revocation::Token(jti) => ("token", jti.as_str(), 0),
            Revocation::Subject { id, at } => ("subject", id.as_str(), *at),
        }
    }
}

/// What a token names, to look up whether it still stands ([`Governance::token_standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// `jti`.
    pub token_id: String,
    /// `sub`: a user id or a client id.
    pub subject: String,
    /// `client_id`.
    pub client: String,
    /// The facility the token acts for.
    pub facility: String,
    /// Whether the subject is a user (a participant) rather than a client.
    pub user: bool,
    /// `iat`, seconds.
    pub issued_at: i64,
}

/// The network's records behind a token, as they are now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The client it was issued to, if registered.
    pub client: Option<Client>,
    /// For a user's token: the participant, if registered.
    pub user: Option<Participant>,
    /// Whether the token's facility is in the directory and active.
    pub facility_active: bool,
    /// Whether the facility of the client it was issued to is in the directory and active (a
    /// portal of a facility that left the network acts for nobody).
    pub client_facility_active: bool,
    /// Whether the token, its subject or its client was revoked after it was issued.
    pub revoked: bool,
}

/// A consent: `viewing` may see what `disclosing` holds of `patient`'s person, during
/// [`Consent::start`, `Consent::end`), unless withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Id.
    pub id: String,
    /// A Patient logical id of the person (any of their linked records).
    pub patient: String,
    /// Facility code whose data is disclosed.
    pub disclosing: String,
    /// Facility code that may view it.
    pub viewing: String,
    /// Microseconds, inclusive.
    pub start: i64,
    /// Microseconds, exclusive.
    pub end: i64,
    /// When withdrawn, if it was.
    pub withdrawn_at: Option<i64>,
    /// `invitation` (a holding facility's act) or `signed-consent` (the operator, from paper).
    pub source: String,
    /// Who recorded it (user or client id, or `operator`).
    pub created_by: String,
    /// When, microseconds.
    pub created_at: i64,
}

/// One linked record of a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedRecord {
    /// Patient logical id.
    pub patient: String,
    /// The facility holding it.
    pub facility: Option<String>,
    /// The regional patient id it is linked under.
    pub regional: String,
}

/// An audit record ready to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The AuditEvent's logical id.
    pub id: String,
    /// Microseconds.
    pub recorded: i64,
    /// The Patient logical id the event is about, if any.
    pub patient: Option<String>,
    /// The facility of the requesting agent, when one was authenticated.
    pub facility: Option<String>,
    /// The facts of the access ([`crate::audit::AuditFacts`]), or an AuditEvent, serialized;
    /// [`crate::audit::render`] gives the AuditEvent of either.
    pub event: Vec<u8>,
}

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only the record with this AuditEvent id.
    pub id: Option<String>,
    /// Only records about this Patient logical id.
    pub patient: Option<String>,
    /// Recorded at or after (microseconds).
    pub from: Option<i64>,
    /// Recorded before (microseconds).
    pub to: Option<i64>,
    /// An administrator's facility: only records about patients it holds, or made by its own
    /// agents. `None` for the operator.
    pub facility: Option<String>,
    /// Records older than this position only (the `position` of the last record of a page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// A listed audit record with its position in the trail (for paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedAudit {
    /// Append order.
    pub position: i64,
    /// The record.
    pub record: AuditRecord,
}

/// A stored token-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// PKCS#8 PEM.
    pub pem: String,
    /// Microseconds.
    pub created_at: i64,
}

/// A change of the network's records. Each is made in one transaction, with the audit record
/// of the operator's act that made it when there is one ([`Governance::change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds or updates a facility.
    Facility(Facility),
    /// Adds or updates a participant; the facility must exist.
    Participant(Participant),
    /// Adds or updates a client; the facility must exist.
    Client(Client),
    /// Links Patient `patient` under regional id `regional` (moving it if linked elsewhere).
    Link {
        /// The regional id.
        regional: String,
        /// The facility's Patient id.
        patient: String,
        /// Who linked.
        by: String,
        /// Microseconds.
        at: i64,
    },
    /// Removes Patient `patient` from its regional record.
    Unlink {
        /// The Patient id.
        patient: String,
    },
    /// Records a consent (its patient must exist).
    Consent(Consent),
    /// Withdraws a consent at `at`: unchanged (`false`) when there is none with this id.
    WithdrawConsent {
        /// The consent's id.
        id: String,
        /// Microseconds.
        at: i64,
    },
    /// Replaces the facilities lab `lab` reports for (each a registered facility; `lab` one too).
    LabReportsFor {
        /// The lab's facility code.
        lab: String,
        /// The facilities it reports for.
        facilities: Vec<String>,
    },
    /// Records a revocation (a later revocation of the same subject moves its instant on).
    Revoke(Revocation),
}

/// What waits in the database's queues, for `/metrics`: the same on every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Outbound messages pending delivery.
    pub outbox_pending: u64,
    /// Dead letters waiting for the operator.
    pub outbox_dead: u64,
    /// When the oldest pending outbound message was queued (microseconds), if any.
    pub outbox_oldest_pending: Option<i64>,
    /// Inbound HL7 v2 messages in quarantine.
    pub messages_quarantined: u64,
    /// Each scheduled source (`kind:facility`): when its last tick was claimed and until when
    /// its pull holds it (0: done), microseconds.
    pub pulls: Vec<(String, i64, i64)>,
}

/// The network's records. Every change that affects who may see what recomputes the permitted
/// set in the same transaction, so it holds for the next request. The API's paging snapshots
/// ([`crate::Paging`]) live beside them.
#[async_trait::async_trait]
pub trait Governance: crate::Paging + Send + Sync {
    /// Makes `change` and appends `audit` (the operator's act that made it) in one transaction:
    /// both or neither. `Ok(false)` when the change names nothing there is (no consent by that
    /// id, a patient record not linked): nothing is written, the audit record neither.
    async fn change(&self, change: Change, audit: Option<&AuditRecord>)
    -> Result<bool, StoreError>;

    /// Adds or updates a facility.
    async fn put_facility(&self, facility: &Facility) -> Result<(), StoreError> {
        self.change(Change::Facility(facility.clone()), None)
            .await
            .map(drop)
    }
    /// Every facility, by code.
    async fn facilities(&self) -> Result<Vec<Facility>, StoreError>;

    /// Adds or updates a participant; the facility must exist.
    async fn put_participant(&self, participant: &Participant) -> Result<(), StoreError> {
        self.change(Change::Participant(participant.clone()), None)
            .await
            .map(drop)
    }
    /// One participant.
    async fn participant(&self, id: &str) -> Result<Option<Participant>, StoreError>;
    /// Every participant, by id.
    async fn participants(&self) -> Result<Vec<Participant>, StoreError>;

    /// Adds or updates a client; the facility must exist.
    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        self.change(Change::Client(client.clone()), None)
            .await
            .map(drop)
    }
    /// One client.
    async fn client(&self, id: &str) -> Result<Option<Client>, StoreError>;
    /// Every client, by id.
    async fn clients(&self) -> Result<Vec<Client>, StoreError>;

    /// The facility holding Patient `patient`'s record, `None` when the patient is unknown.
    async fn holder(&self, patient: &str) -> Result<Option<Option<String>>, StoreError>;

    /// Links Patient `patient` under regional id `regional` (moving it if linked elsewhere).
    async fn link(
        &self,
        regional: &str,
        patient: &str,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let change = Change::Link {
            regional: regional.to_owned(),
            patient: patient.to_owned(),
            by: by.to_owned(),
            at,
        };
        self.change(change, None).await.map(drop)
    }
    /// Removes Patient `patient` from its regional record.
    async fn unlink(&self, patient: &str) -> Result<(), StoreError> {
        let change = Change::Unlink {
            patient: patient.to_owned(),
        };
        self.change(change, None).await.map(drop)
    }
    /// The records linked with Patient `patient` (itself included when linked).
    async fn linked(&self, patient: &str) -> Result<Vec<LinkedRecord>, StoreError>;

    /// Records a consent (its patient must exist).
    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError> {
        self.change(Change::Consent(consent.clone()), None)
            .await
            .map(drop)
    }
    /// Withdraws a consent at `at`; false when there is none with this id.
    async fn withdraw_consent(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let change = Change::WithdrawConsent {
            id: id.to_owned(),
            at,
        };
        self.change(change, None).await
    }
    /// Consents about Patient `patient`'s person (`None`: all).
    async fn consents(&self, patient: Option<&str>) -> Result<Vec<Consent>, StoreError>;

    /// Appends audit records atomically; when it returns they survive a crash of the process
    /// (a backend may journal them and import them later, but every read of the trail must see
    /// them).
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// Appends audit records at once, without waiting on the database, when this backend can
    /// (a local journal, one short write): `None` when it cannot, and the caller uses
    /// [`Governance::append_audit`]. The same durability promise holds.
    fn append_audit_now(&self, records: &[AuditRecord]) -> Option<Result<(), StoreError>> {
        let _ = records;
        None
    }
    /// Audit records matching `filter`, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<ListedAudit>, StoreError>;
    /// The number of audit records.
    async fn audit_count(&self) -> Result<u64, StoreError>;

    /// Remembers assertion id `jti` of `client` until `exp` (seconds); false when it was already
    /// seen (a replay). Forgets expired ids as it goes.
    async fn remember_assertion(
        &self,
        client: &str,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Token-signing keys, newest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Claims the scheduled pull of `source` at `tick` (seconds) for `node`, holding the source
    /// until `lease_until` (microseconds): true for the one claimant of each (source, tick);
    /// false for every other, for a tick not later than the last one claimed, and while the
    /// last claimant still holds the source (its pull runs on).
    async fn claim_run(
        &self,
        source: &str,
        tick: i64,
        node: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError>;

    /// What waits in the outbox, the quarantine and the scheduled pulls (`/metrics`).
    async fn queue_depths(&self) -> Result<QueueDepths, StoreError>;

    /// Extends the hold of a claimed tick while its pull runs (`false`: no such claim, or it is
    /// already over).
    async fn renew_run(
        &self,
        source: &str,
        tick: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError>;

    /// Ends the hold of a claimed tick: its pull is over.
    async fn finish_run(&self, source: &str, tick: i64) -> Result<(), StoreError>;

    /// Forgets the claims of sources not in `configured` whose hold has ended by `now` (sources
    /// removed from the configuration, whose lag would otherwise grow in `/metrics` forever);
    /// a source being pulled keeps its claim. Gives how many were forgotten.
    async fn forget_runs(&self, configured: &[String], now: i64) -> Result<u64, StoreError>;

    /// Whether the database answers and holds exactly this build's schema (`Ok(Some(reason))`
    /// when it answers but another schema is there: a node of another version migrated it).
    async fn schema_status(&self) -> Result<Option<String>, StoreError> {
        self.signing_keys().await.map(|_| None)
    }

    /// The facilities lab company `lab` reports results for (the directory's record), sorted.
    async fn lab_reports_for(&self, lab: &str) -> Result<Vec<String>, StoreError>;
    /// Replaces them (every code must be a registered facility; `lab` must be one too).
    async fn set_lab_reports_for(
        &self,
        lab: &str,
        facilities: &[String],
    ) -> Result<(), StoreError> {
        let change = Change::LabReportsFor {
            lab: lab.to_owned(),
            facilities: facilities.to_vec(),
        };
        self.change(change, None).await.map(drop)
    }

    /// The origin (`scheme://host:port`) the API last served under, recorded by `tsunagi
    /// serve`: the issuer `tsunagi token issue` names by default.
    async fn served_origin(&self) -> Result<Option<String>, StoreError>;
    /// Records the origin the API serves under.
    async fn record_served_origin(&self, origin: &str) -> Result<(), StoreError>;
    /// Stores `key` as the first signing key, unless another node has stored (or is storing)
    /// one: `false` then, and the caller reads the keys again. Of several nodes starting
    /// together on a new database, one key wins, so every node signs and verifies with it.
    async fn put_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError>;

    /// Records a revocation (a later revocation of the same subject moves its instant on).
    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.change(Change::Revoke(revocation.clone()), None)
            .await
            .map(drop)
    }

    /// The records behind a token, read in one query.
    async fn token_standing(&self, token: &TokenFacts) -> Result<Standing, StoreError>;

    /// A number that moves whenever a record [`Governance::token_standing`] reads may have
    /// changed, in any process, and that is cheap to read (no query): while it stays, standings
    /// read before still hold. `None` when this backend cannot tell (every request then reads
    /// the records).
    fn standing_epoch(&self) -> Option<u64> {
        None
    }
}
