//! `tsunagi admin …` and `tsunagi token issue`: the network operator's acts on the directory,
//! patient links and consents, the audit trail, and access tokens for scripts. Every act that
//! changes who may see what is itself written to the audit trail.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use tsunagi_core::{
    clock::{Clock, SystemClock},
    time::format_instant_jst,
};
use tsunagi_server::security::{Subject, TokenSettings, issue_token, signing_keys};
use tsunagi_store::{
    Backend,
    governance::{
        AuditFilter, AuditRecord, Change, Client, Consent, FACILITY_KINDS, Facility,
        OPERATOR_CLIENT, Participant, Revocation,
    },
    operator::{Act, ActFacts},
};

use crate::open::open_store;

/// `tsunagi admin <what>`.
#[derive(Debug, Subcommand)]
pub(crate) enum Admin {
    /// Facilities of the network.
    Facility {
        #[command(subcommand)]
        action: FacilityAction,
    },
    /// People who sign in through the portal.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Registered system clients and portals (SMART Backend Services).
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Consents: who may see which facility's record of a patient.
    Consent {
        #[command(subcommand)]
        action: ConsentAction,
    },
    /// Link a patient's records at several facilities under one regional id (紐付け).
    Link {
        #[arg(long)]
        db: String,
        /// Regional patient id.
        #[arg(long)]
        regional: String,
        /// Patient logical id to link.
        #[arg(long)]
        patient: String,
    },
    /// Remove a patient record from its regional record.
    Unlink {
        #[arg(long)]
        db: String,
        #[arg(long)]
        patient: String,
    },
    /// Inbound HL7 v2 messages that could not be applied (unknown type, unknown patient…) and
    /// conflicting resends.
    Quarantine {
        #[command(subcommand)]
        action: crate::quarantine::QuarantineAction,
    },
    /// Notes and documents queued for the hospitals' EHRs: pending deliveries and dead letters.
    Outbox {
        #[command(subcommand)]
        action: crate::outbox::OutboxAction,
    },
    /// Access tokens: revoke one (by jti) or every token of a user or client, from the next
    /// request on.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// An online copy of an embedded store (its audit journal imported first) into a new
    /// folder, with a manifest (size, SHA-256). PostgreSQL: pg_dump (see the README).
    Backup {
        #[arg(long)]
        db: String,
        /// The folder to write (new or empty).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// A backup brought back into a new place (checked against its manifest and by SQLite).
    Restore {
        /// The backup's folder.
        #[arg(long)]
        from: std::path::PathBuf,
        /// Where the database goes (must not exist).
        #[arg(long)]
        db: String,
    },
    /// Print audit records (AuditEvent NDJSON), newest first.
    Audit {
        #[arg(long)]
        db: String,
        /// Only records about this Patient logical id.
        #[arg(long)]
        patient: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FacilityAction {
    /// Add or update a facility.
    Add {
        #[arg(long)]
        db: String,
        /// 10-digit code.
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// hospital, clinic, dental-clinic, pharmacy, home-nursing, care-manager-office,
        /// nursing-home, lab-company or lab-centre.
        #[arg(long)]
        kind: String,
        /// For a lab company or lab centre: the facilities whose patients it reports results
        /// for (comma-separated codes, each registered), over FHIR and HL7 v2.
        #[arg(long, value_delimiter = ',')]
        reports_for: Vec<String>,
    },
    /// Set the facilities a lab reports results for (replacing the list; none clears it).
    ReportsFor {
        #[arg(long)]
        db: String,
        /// The lab's 10-digit code.
        #[arg(long)]
        code: String,
        /// Comma-separated facility codes.
        #[arg(long, value_delimiter = ',')]
        facilities: Vec<String>,
    },
    /// Deactivate a facility that leaves the network: the tokens of its people and clients
    /// are refused from the next request on, and no new ones are issued.
    Deactivate {
        #[arg(long)]
        db: String,
        #[arg(long)]
        code: String,
    },
    /// List facilities.
    List {
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Revoke tokens: one by its jti, or every token a user or client was issued so far.
    Revoke {
        #[arg(long)]
        db: String,
        /// The token's jti (in the audit trail of its use).
        #[arg(long, conflicts_with = "subject", required_unless_present = "subject")]
        jti: Option<String>,
        /// A user id or client id: every token issued to it (or through it, for a portal) up
        /// to now.
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserAction {
    /// Add or update a user.
    Add {
        #[arg(long)]
        db: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        facility: String,
        /// doctor, nurse, pharmacist, care-manager, therapist, lab-staff or administrator.
        #[arg(long)]
        role: String,
    },
    /// Deactivate a user (no further tokens).
    Deactivate {
        #[arg(long)]
        db: String,
        #[arg(long)]
        id: String,
    },
    /// List users.
    List {
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientAction {
    /// Register a client with its public keys.
    Add {
        #[arg(long)]
        db: String,
        /// client_id.
        #[arg(long)]
        id: String,
        #[arg(long)]
        facility: String,
        /// system or portal.
        #[arg(long, default_value = "system")]
        kind: String,
        /// A JWK Set file with the client's public keys (RS384 or ES384).
        #[arg(long)]
        jwks: std::path::PathBuf,
        /// The most a token of this client may carry, e.g. "system/*.rs".
        #[arg(long)]
        scope: String,
        /// A portal: facilities besides its own whose users it may act for (comma-separated
        /// codes; a regional portal lists each facility it serves).
        #[arg(long, value_delimiter = ',')]
        serves: Vec<String>,
    },
    /// Deactivate a client: its tokens are refused from the next request on.
    Deactivate {
        #[arg(long)]
        db: String,
        #[arg(long)]
        id: String,
    },
    /// List clients.
    List {
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConsentAction {
    /// Record a consent from a signed form (or an invitation the operator enters).
    Add {
        #[arg(long)]
        db: String,
        /// Consent id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// A Patient logical id of the person.
        #[arg(long)]
        patient: String,
        /// The disclosing facility's code.
        #[arg(long)]
        from: String,
        /// The viewing facility's code.
        #[arg(long)]
        to: String,
        /// First day, YYYY-MM-DD (default: now).
        #[arg(long)]
        start: Option<String>,
        /// Last day, YYYY-MM-DD (default: open-ended).
        #[arg(long)]
        end: Option<String>,
    },
    /// Withdraw a consent now.
    Withdraw {
        #[arg(long)]
        db: String,
        #[arg(long)]
        id: String,
    },
    /// List consents (of one patient's person, or all).
    List {
        #[arg(long)]
        db: String,
        #[arg(long)]
        patient: Option<String>,
    },
}

/// The audit record of an operator's act on `what` (and `patient`), committed with the act
/// (`Governance::change`, `Operation::Audit`).
pub(crate) fn act(act: Act, what: &str, patient: Option<&str>, now: i64) -> AuditRecord {
    let operator = std::env::var("USER")
        .ok()
        .map(|user| user.trim().to_owned())
        .filter(|user| !user.is_empty());
    ActFacts::new(act, what, operator).record(patient, now, &tsunagi_auth::token::random_id(8))
}

/// Records which facilities lab `code` reports for (a lab company or lab centre only).
async fn set_reports_for(
    store: &dyn Backend,
    code: &str,
    facilities: &[String],
    now: i64,
) -> anyhow::Result<()> {
    // The store checks that `code` is a lab and that every facility is registered.
    let change = Change::LabReportsFor {
        lab: code.to_owned(),
        facilities: facilities.to_vec(),
    };
    let record = act(Act::FacilityReportsFor, code, None, now);
    store.change(change, Some(&record)).await?;
    if facilities.is_empty() {
        println!("lab {code} reports for no facility");
    } else {
        println!("lab {code} reports for {}", facilities.join(", "));
    }
    println!(
        "  POST /fhir reads this from the next request; HL7 v2 feeds (hl7v2 sources) when serve next starts"
    );
    Ok(())
}

/// The first and the past-the-last microsecond of a date.
fn day_bounds(text: &str) -> anyhow::Result<(i64, i64)> {
    let (start, end) = tsunagi_core::time::fhir_date_range(text)
        .with_context(|| format!("{text} is not a date (YYYY-MM-DD)"))?;
    Ok((
        start.saturating_mul(1_000_000),
        end.saturating_mul(1_000_000),
    ))
}

/// Runs one `tsunagi admin` command.
pub(crate) async fn admin(command: Admin) -> anyhow::Result<()> {
    let now = SystemClock.now_micros();
    match command {
        Admin::Facility { action } => match action {
            FacilityAction::Add {
                db,
                code,
                name,
                kind,
                reports_for,
            } => {
                if code.len() != 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("--code {code:?}: a facility code is 10 digits");
                }
                if !FACILITY_KINDS.contains(&kind.as_str()) {
                    bail!("--kind {kind:?}: one of {}", FACILITY_KINDS.join(", "));
                }
                if !reports_for.is_empty() && !tsunagi_store::governance::reports_results(&kind) {
                    bail!(
                        "--reports-for: only a lab-company or lab-centre reports results for others"
                    );
                }
                let store = open_store(&db).await?;
                let facility = Facility {
                    code: code.clone(),
                    name,
                    kind,
                    active: true,
                };
                let record = act(Act::FacilityAdd, &code, None, now);
                store
                    .change(Change::Facility(facility), Some(&record))
                    .await?;
                println!("facility {code} saved");
                if !reports_for.is_empty() {
                    set_reports_for(store.as_ref(), &code, &reports_for, now).await?;
                }
            }
            FacilityAction::ReportsFor {
                db,
                code,
                facilities,
            } => {
                let store = open_store(&db).await?;
                set_reports_for(store.as_ref(), &code, &facilities, now).await?;
            }
            FacilityAction::Deactivate { db, code } => {
                let store = open_store(&db).await?;
                let mut facility = store
                    .facilities()
                    .await?
                    .into_iter()
                    .find(|facility| facility.code == code)
                    .with_context(|| format!("no facility {code}"))?;
                facility.active = false;
                let record = act(Act::FacilityDeactivate, &code, None, now);
                store
                    .change(Change::Facility(facility), Some(&record))
                    .await?;
                println!("facility {code} deactivated");
            }
            FacilityAction::List { db } => {
                for facility in open_store(&db).await?.facilities().await? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        facility.code,
                        facility.kind,
                        if facility.active {
                            "active"
                        } else {
                            "inactive"
                        },
                        facility.name
                    );
                }
            }
        },
        Admin::User { action } => match action {
            UserAction::Add {
                db,
                id,
                name,
                facility,
                role,
            } => {
                let parsed: tsunagi_auth::Role = role.parse()?;
                if parsed == tsunagi_auth::Role::System {
                    bail!("--role system is for clients: use tsunagi admin client add");
                }
                let store = open_store(&db).await?;
                // Users and clients share one namespace: a revocation by subject names one.
                if id == OPERATOR_CLIENT || store.client(&id).await?.is_some() {
                    bail!("--id {id} is a client's id; users and clients need ids of their own");
                }
                let user = Participant {
                    id: id.clone(),
                    name,
                    facility,
                    role,
                    active: true,
                };
                let record = act(Act::UserAdd, &id, None, now);
                store
                    .change(Change::Participant(user), Some(&record))
                    .await?;
                println!("user {id} saved");
            }
            UserAction::Deactivate { db, id } => {
                let store = open_store(&db).await?;
                let mut user = store
                    .participant(&id)
                    .await?
                    .with_context(|| format!("no user {id}"))?;
                user.active = false;
                let record = act(Act::UserDeactivate, &id, None, now);
                store
                    .change(Change::Participant(user), Some(&record))
                    .await?;
                println!("user {id} deactivated");
            }
            UserAction::List { db } => {
                for user in open_store(&db).await?.participants().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        user.id,
                        user.facility,
                        user.role,
                        if user.active { "active" } else { "inactive" },
                        user.name
                    );
                }
            }
        },
        Admin::Client { action } => match action {
            ClientAction::Add {
                db,
                id,
                facility,
                kind,
                jwks,
                scope,
                serves,
            } => {
                if kind != "system" && kind != "portal" {
                    bail!("--kind {kind:?}: system or portal");
                }
                if id == OPERATOR_CLIENT {
                    bail!("--id {OPERATOR_CLIENT} is reserved for tokens the operator issues");
                }
                if kind != "portal" && !serves.is_empty() {
                    bail!("--serves is for portals: a system client acts for its own facility");
                }
                let text = std::fs::read_to_string(&jwks)
                    .with_context(|| format!("cannot read {}", jwks.display()))?;
                let parsed: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", jwks.display()))?;
                if !parsed["keys"].is_array() {
                    bail!("{}: a JWK Set has a \"keys\" array", jwks.display());
                }
                if parsed["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|key| key.get("d").is_some())
                {
                    bail!(
                        "{}: holds a private key; register only public keys",
                        jwks.display()
                    );
                }
                tsunagi_auth::Scopes::parse(&scope)?;
                let store = open_store(&db).await?;
                if store.participant(&id).await?.is_some() {
                    bail!("--id {id} is a user's id; users and clients need ids of their own");
                }
                let known = store.facilities().await?;
                if let Some(unknown) = serves
                    .iter()
                    .find(|code| !known.iter().any(|facility| &facility.code == *code))
                {
                    bail!("--serves {unknown}: no such facility in the directory");
                }
                let client = Client {
                    id: id.clone(),
                    facility,
                    kind,
                    jwks: text,
                    scope,
                    active: true,
                    serves,
                };
                let record = act(Act::ClientAdd, &id, None, now);
                store.change(Change::Client(client), Some(&record)).await?;
                println!("client {id} registered");
            }
            ClientAction::Deactivate { db, id } => {
                let store = open_store(&db).await?;
                let mut client = store
                    .client(&id)
                    .await?
                    .with_context(|| format!("no client {id}"))?;
                client.active = false;
                let record = act(Act::ClientDeactivate, &id, None, now);
                store.change(Change::Client(client), Some(&record)).await?;
                println!("client {id} deactivated");
            }
            ClientAction::List { db } => {
                for client in open_store(&db).await?.clients().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        client.id,
                        client.facility,
                        client.kind,
                        if client.active { "active" } else { "inactive" },
                        client.scope,
                        client.serves.join(",")
                    );
                }
            }
        },
        Admin::Token { action } => match action {
            TokenAction::Revoke { db, jti, subject } => {
                let store = open_store(&db).await?;
                let (revocation, what) = match (jti, subject) {
                    (Some(jti), _) => (Revocation::Token(jti.clone()), format!("token {jti}")),
                    (None, Some(id)) => (
                        Revocation::Subject {
                            id: id.clone(),
                            at: now.div_euclid(1_000_000),
                        },
                        format!("every token of {id}"),
                    ),
                    (None, None) => bail!("give --jti <token id> or --subject <user or client id>"),
                };
                let record = act(Act::TokenRevoke, &what, None, now);
                store
                    .change(Change::Revoke(revocation), Some(&record))
                    .await?;
                println!("revoked {what}");
            }
        },
        Admin::Consent { action } => match action {
            ConsentAction::Add {
                db,
                id,
                patient,
                from,
                to,
                start,
                end,
            } => {
                let store = open_store(&db).await?;
                let id =
                    id.unwrap_or_else(|| format!("consent-{}", tsunagi_auth::token::random_id(8)));
                let consent = Consent {
                    id: id.clone(),
                    patient: patient.clone(),
                    disclosing: from,
                    viewing: to,
                    start: start
                        .as_deref()
                        .map(day_bounds)
                        .transpose()?
                        .map_or(now, |day| day.0),
                    end: end
                        .as_deref()
                        .map(day_bounds)
                        .transpose()?
                        .map_or(i64::MAX, |day| day.1),
                    withdrawn_at: None,
                    source: "signed-consent".to_owned(),
                    created_by: "operator".to_owned(),
                    created_at: now,
                };
                let record = act(Act::ConsentAdd, &id, Some(&patient), now);
                store
                    .change(Change::Consent(consent), Some(&record))
                    .await?;
                println!("consent {id} recorded");
            }
            ConsentAction::Withdraw { db, id } => {
                let store = open_store(&db).await?;
                let patient = store
                    .consents(None)
                    .await?
                    .into_iter()
                    .find(|consent| consent.id == id)
                    .map(|consent| consent.patient);
                let record = act(Act::ConsentWithdraw, &id, patient.as_deref(), now);
                let change = Change::WithdrawConsent {
                    id: id.clone(),
                    at: now,
                };
                if !store.change(change, Some(&record)).await? {
                    bail!("no consent {id}");
                }
                println!("consent {id} withdrawn");
            }
            ConsentAction::List { db, patient } => {
                for consent in open_store(&db).await?.consents(patient.as_deref()).await? {
                    let state = if consent.withdrawn_at.is_some() {
                        "withdrawn"
                    } else {
                        "in force"
                    };
                    println!(
                        "{}\t{}\t{} -> {}\t{}\t{}",
                        consent.id,
                        consent.patient,
                        consent.disclosing,
                        consent.viewing,
                        format_instant_jst(consent.start),
                        state
                    );
                }
            }
        },
        Admin::Link {
            db,
            regional,
            patient,
        } => {
            let store = open_store(&db).await?;
            let record = act(Act::Link, &regional, Some(&patient), now);
            let change = Change::Link {
                regional: regional.clone(),
                patient: patient.clone(),
                by: "operator".to_owned(),
                at: now,
            };
            store.change(change, Some(&record)).await?;
            println!("Patient/{patient} linked under {regional}");
        }
        Admin::Unlink { db, patient } => {
            let store = open_store(&db).await?;
            let record = act(Act::Unlink, &patient, Some(&patient), now);
            let change = Change::Unlink {
                patient: patient.clone(),
            };
            if store.change(change, Some(&record)).await? {
                println!("Patient/{patient} unlinked");
            } else {
                println!("Patient/{patient} was not linked: nothing changed");
            }
        }
        Admin::Backup { db, out } => crate::backup::backup(&db, &out).await?,
        Admin::Restore { from, db } => crate::backup::restore(&from, &db).await?,
        Admin::Quarantine { action } => crate::quarantine::run(action, now).await?,
        Admin::Outbox { action } => crate::outbox::run(action, now).await?,
        Admin::Audit { db, patient, limit } => {
            let filter = AuditFilter {
                patient,
                limit,
                ..AuditFilter::default()
            };
            // One AuditEvent per line, resourceType first. A reader that stops early (`| head`)
            // ends the listing quietly.
            let mut out = std::io::stdout().lock();
            for listed in open_store(&db).await?.audit(&filter).await? {
                let mut line = Vec::with_capacity(2048);
                tsunagi_fhir::json::write_resource(
                    &tsunagi_store::audit::render(&listed.record),
                    &mut line,
                )?;
                line.push(b'\n');
                match out.write_all(&line) {
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
                    written => written?,
                }
            }
        }
    }
    Ok(())
}

/// `tsunagi token issue`.
pub(crate) async fn issue(
    db: &str,
    system: Option<&str>,
    user: Option<&str>,
    scope: &str,
    origin: Option<&str>,
) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    let now = SystemClock.now_micros();
    let keys = signing_keys(store.as_ref(), now).await?;
    let key = keys.first().context("no signing key")?;
    let subject = match (system, user) {
        (Some(client), None) => Subject::System(client),
        (None, Some(user)) => Subject::User {
            user,
            via: "operator",
        },
        _ => bail!("give exactly one of --system <client-id> or --user <user-id>"),
    };
    // Without --origin: the origin `tsunagi serve` last served under on this store.
    let recorded = match origin {
        Some(_) => None,
        None => store.served_origin().await?,
    };
    let settings = origin
        .or(recorded.as_deref())
        .map_or_else(TokenSettings::default, TokenSettings::for_base);
    let (token, _) = issue_token(
        store.as_ref(),
        key,
        &settings,
        subject,
        scope,
        now / 1_000_000,
    )
    .await?;
    println!("{token}");
    Ok(())
}
