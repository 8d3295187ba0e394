//! Changes of the network's records on either database (`tsunagi_store::governance::Change`):
//! each in one writing transaction with its FHIR projection, the permitted set (`access`)
//! recomputed where who may see what moves, and the audit record of the operator's act that
//! made it — committed together or not at all.

use sqlx::Database;
use tsunagi_store::{
    Batch, Operation, StoreError,
    governance::{
        AuditRecord, Change, Client, Consent, Facility, Participant, Revocation, check_lab_reports,
        reports_results,
    },
    projection,
};

use crate::{
    audit,
    dialect::{Cells, Dialect, db_error, stmt},
    governance::{CONSENT_COLUMNS, consent_from_row, facilities_on},
    store::{Engine, SqlStore, to_the_end},
};

type Connection<D> = <D as Database>::Connection;

impl<E: Engine> SqlStore<E> {
    /// Makes `change` and appends `audit` in one transaction; the audit record only when
    /// something changed.
    pub(crate) async fn make_change(
        &self,
        change: Change,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let (store, audit) = (self.clone(), audit.cloned());
        to_the_end(async move { store.change_now(change, audit.as_ref()).await }).await
    }

    /// [`SqlStore::make_change`], in the task that runs it to its end.
    async fn change_now(
        &self,
        change: Change,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        // What can be refused without the write lock is refused first.
        if let Change::Consent(consent) = &change
            && consent.end <= consent.start
        {
            return Err(StoreError::Invalid(
                "a consent's end must be after its start".to_owned(),
            ));
        }
        // A revocation or a client's record projects nothing and must not wait for a bulk
        // writer (PostgreSQL's writer lock): it takes the small write.
        let mut transaction = match &change {
            Change::Revoke(_) | Change::Client(_) => self.begin_small_write().await?,
            _ => self.begin_write().await?,
        };
        let connection = &mut *transaction;
        let changed = match &change {
            Change::Facility(facility) => self.write_facility(connection, facility).await?,
            Change::Participant(participant) => {
                self.write_participant(connection, participant).await?
            }
            Change::Client(client) => {
                write_client::<E::Db>(connection, client, self.clock().now_micros()).await?
            }
            Change::Link {
                regional,
                patient,
                by,
                at,
            } => link::<E::Db>(connection, regional, patient, by, *at).await?,
            Change::Unlink { patient } => unlink::<E::Db>(connection, patient).await?,
            Change::Consent(consent) => self.write_consent(connection, consent).await?,
            Change::WithdrawConsent { id, at } => self.withdraw(connection, id, *at).await?,
            Change::LabReportsFor { lab, facilities } => {
                // Checked against the directory as this transaction sees it.
                check_lab_reports(&facilities_on::<E::Db>(connection).await?, lab, facilities)?;
                lab_reports::<E::Db>(connection, lab, facilities).await?
            }
            Change::Revoke(revocation) => revoke::<E::Db>(connection, revocation).await?,
        };
        if !changed {
            // Nothing happened: nothing to audit either (the transaction rolls back).
            return Ok(false);
        }
        if let Some(record) = audit {
            audit::insert::<E::Db>(connection, std::slice::from_ref(record), 1).await?;
        }
        // Standings read before may no longer hold.
        let standing = matches!(
            change,
            Change::Facility(_) | Change::Participant(_) | Change::Client(_) | Change::Revoke(_)
        );
        if standing {
            self.engine().standing_changing(connection).await?;
        }
        transaction.commit().await.map_err(db_error)?;
        if standing {
            self.standing_changed()?;
        }
        Ok(true)
    }

    async fn write_facility(
        &self,
        connection: &mut Connection<E::Db>,
        facility: &Facility,
    ) -> Result<bool, StoreError> {
        stmt(
            "INSERT INTO facilities (code, name, kind, created_at, active) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, active = excluded.active",
        )
        .arg(&facility.code)
        .arg(&facility.name)
        .arg(&facility.kind)
        .arg(self.clock().now_micros())
        .arg(facility.active)
        .execute::<E::Db>(connection)
        .await?;
        // Only a lab reports results for others: a facility that is no longer one lists none.
        if !reports_results(&facility.kind) {
            stmt("DELETE FROM lab_reports WHERE lab = ?1")
                .arg(&facility.code)
                .execute::<E::Db>(connection)
                .await?;
        }
        self.project(connection, projection::facility(facility)?)
            .await?;
        Ok(true)
    }

    async fn write_participant(
        &self,
        connection: &mut Connection<E::Db>,
        participant: &Participant,
    ) -> Result<bool, StoreError> {
        require_facility::<E::Db>(connection, &participant.facility).await?;
        stmt(
            "INSERT INTO participants (id, name, facility, role, active, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, facility = excluded.facility, role = excluded.role, active = excluded.active",
        )
        .arg(&participant.id)
        .arg(&participant.name)
        .arg(&participant.facility)
        .arg(&participant.role)
        .arg(participant.active)
        .arg(self.clock().now_micros())
        .execute::<E::Db>(connection)
        .await?;
        self.project(connection, projection::participant(participant)?)
            .await?;
        Ok(true)
    }

    async fn write_consent(
        &self,
        connection: &mut Connection<E::Db>,
        consent: &Consent,
    ) -> Result<bool, StoreError> {
        if compartment_of::<E::Db>(connection, &consent.patient)
            .await?
            .is_none()
        {
            return Err(StoreError::Invalid(format!(
                "no patient {}",
                consent.patient
            )));
        }
        for facility in [&consent.disclosing, &consent.viewing] {
            require_facility::<E::Db>(connection, facility).await?;
        }
        stmt(
            "INSERT INTO consents (id, patient, disclosing, viewing, start, \"end\", withdrawn_at, source, created_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (id) DO UPDATE SET patient = excluded.patient, disclosing = excluded.disclosing, viewing = excluded.viewing, \
             start = excluded.start, \"end\" = excluded.\"end\", withdrawn_at = excluded.withdrawn_at, source = excluded.source",
        )
        .arg(&consent.id)
        .arg(&consent.patient)
        .arg(&consent.disclosing)
        .arg(&consent.viewing)
        .arg(consent.start)
        .arg(consent.end)
        .arg(consent.withdrawn_at)
        .arg(&consent.source)
        .arg(&consent.created_by)
        .arg(consent.created_at)
        .execute::<E::Db>(connection)
        .await?;
        recompute::<E::Db>(connection, std::slice::from_ref(&consent.id)).await?;
        self.project_consent(connection, &consent.id).await?;
        Ok(true)
    }

    /// Withdraws consent `id` at `at`; false when there is no such consent. A consent withdrawn
    /// earlier stays as it was (and counts as a change: the withdrawal holds).
    async fn withdraw(
        &self,
        connection: &mut Connection<E::Db>,
        id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let changed = stmt(
            "UPDATE consents SET withdrawn_at = ?2 WHERE id = ?1 AND (withdrawn_at IS NULL OR withdrawn_at > ?2)",
        )
        .arg(id)
        .arg(at)
        .execute::<E::Db>(connection)
        .await?;
        let exists = stmt("SELECT id FROM consents WHERE id = ?1")
            .arg(id)
            .fetch_optional::<E::Db>(connection)
            .await?;
        if changed > 0 {
            recompute::<E::Db>(connection, &[id.to_owned()]).await?;
            self.project_consent(connection, id).await?;
        }
        Ok(exists.is_some())
    }

    /// Writes a record's FHIR projection in the record's own transaction.
    async fn project(
        &self,
        connection: &mut Connection<E::Db>,
        operation: Operation,
    ) -> Result<(), StoreError> {
        self.apply_in(
            connection,
            Batch {
                operations: vec![operation],
            },
        )
        .await
        .map(drop)
    }

    /// Rewrites consent `id`'s Consent resource from its row as it now stands.
    async fn project_consent(
        &self,
        connection: &mut Connection<E::Db>,
        id: &str,
    ) -> Result<(), StoreError> {
        let row = stmt(format!(
            "SELECT {CONSENT_COLUMNS} FROM consents k WHERE k.id = ?1"
        ))
        .arg(id)
        .fetch_one::<E::Db>(connection)
        .await?;
        let consent = consent_from_row(&row)?;
        self.project(connection, projection::consent(&consent)?)
            .await
    }
}

async fn write_client<D: Dialect>(
    connection: &mut Connection<D>,
    client: &Client,
    now: i64,
) -> Result<bool, StoreError> {
    require_facility::<D>(connection, &client.facility).await?;
    stmt(
        "INSERT INTO clients (id, facility, kind, jwks, scope, active, created_at, serves) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (id) DO UPDATE SET facility = excluded.facility, kind = excluded.kind, jwks = excluded.jwks, scope = excluded.scope, active = excluded.active, serves = excluded.serves",
    )
    .arg(&client.id)
    .arg(&client.facility)
    .arg(&client.kind)
    .arg(&client.jwks)
    .arg(&client.scope)
    .arg(client.active)
    .arg(now)
    .arg(client.serves.join(" "))
    .execute::<D>(connection)
    .await?;
    Ok(true)
}

async fn link<D: Dialect>(
    connection: &mut Connection<D>,
    regional: &str,
    patient: &str,
    by: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let Some((compartment, previous)) = compartment_of::<D>(connection, patient).await? else {
        return Err(StoreError::Invalid(format!("no patient {patient}")));
    };
    let mut affected = match &previous {
        Some(previous) => consents_of_regional::<D>(connection, previous).await?,
        None => Vec::new(),
    };
    stmt(
        "INSERT INTO patient_links (compartment, regional, created_by, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (compartment) DO UPDATE SET regional = excluded.regional, created_by = excluded.created_by, created_at = excluded.created_at",
    )
    .arg(compartment)
    .arg(regional)
    .arg(by)
    .arg(at)
    .execute::<D>(connection)
    .await?;
    affected.extend(consents_of_regional::<D>(connection, regional).await?);
    affected.sort_unstable();
    affected.dedup();
    recompute::<D>(connection, &affected).await?;
    Ok(true)
}

/// Unlinks Patient `patient`; false when it was not linked.
async fn unlink<D: Dialect>(
    connection: &mut Connection<D>,
    patient: &str,
) -> Result<bool, StoreError> {
    let Some((compartment, Some(regional))) = compartment_of::<D>(connection, patient).await?
    else {
        return Ok(false);
    };
    let affected = consents_of_regional::<D>(connection, &regional).await?;
    stmt("DELETE FROM patient_links WHERE compartment = ?1")
        .arg(compartment)
        .execute::<D>(connection)
        .await?;
    recompute::<D>(connection, &affected).await?;
    Ok(true)
}

async fn lab_reports<D: Dialect>(
    connection: &mut Connection<D>,
    lab: &str,
    facilities: &[String],
) -> Result<bool, StoreError> {
    stmt("DELETE FROM lab_reports WHERE lab = ?1")
        .arg(lab)
        .execute::<D>(connection)
        .await?;
    for facility in facilities {
        stmt("INSERT INTO lab_reports (lab, facility) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
            .arg(lab)
            .arg(facility)
            .execute::<D>(connection)
            .await?;
    }
    Ok(true)
}

async fn revoke<D: Dialect>(
    connection: &mut Connection<D>,
    revocation: &Revocation,
) -> Result<bool, StoreError> {
    let (kind, value, at) = revocation.row();
    stmt(format!(
        "INSERT INTO revocations (kind, value, at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (kind, value) DO UPDATE SET at = {}(revocations.at, excluded.at)",
        D::GREATEST
    ))
    .arg(kind)
    .arg(value)
    .arg(at)
    .execute::<D>(connection)
    .await?;
    Ok(true)
}

/// Rewrites the `access` rows of consents `ids`: the compartments of the disclosing facility
/// that belong to the consent's person (its own record and the records linked with it), for the
/// consent's period cut at its withdrawal.
async fn recompute<D: Dialect>(
    connection: &mut Connection<D>,
    ids: &[String],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    stmt(format!(
        "DELETE FROM access WHERE {}",
        D::in_list("consent", "?1")
    ))
    .arg(ids)
    .execute::<D>(connection)
    .await?;
    let until = format!(
        "{}(k.\"end\", COALESCE(k.withdrawn_at, k.\"end\"))",
        D::LEAST
    );
    stmt(format!(
        "INSERT INTO access (viewer, pat, not_before, not_after, consent) \
         SELECT k.viewing, c.id, k.start, {until}, k.id \
         FROM consents k JOIN compartments p ON p.patient = k.patient \
         JOIN compartments c ON c.id IN (SELECT p.id UNION SELECT l2.compartment FROM patient_links l1 \
              JOIN patient_links l2 ON l2.regional = l1.regional WHERE l1.compartment = p.id) \
         WHERE {} AND c.facility = k.disclosing AND {until} > k.start \
         ON CONFLICT DO NOTHING",
        D::in_list("k.id", "?1")
    ))
    .arg(ids)
    .execute::<D>(connection)
    .await?;
    Ok(())
}

/// Rewrites the `access` rows of every consent (after a reindex, which may create or move
/// compartments): inside the caller's writing transaction.
pub(crate) async fn recompute_all<D: Dialect>(
    connection: &mut Connection<D>,
) -> Result<(), StoreError> {
    let rows = stmt("SELECT id FROM consents ORDER BY id")
        .fetch_all::<D>(connection)
        .await?;
    let ids = rows
        .iter()
        .map(|row| row.text("id"))
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in ids.chunks(500) {
        recompute::<D>(connection, chunk).await?;
    }
    Ok(())
}

/// Ids of the consents about any record of the regional record `regional`.
async fn consents_of_regional<D: Dialect>(
    connection: &mut Connection<D>,
    regional: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = stmt(
        "SELECT k.id FROM consents k JOIN compartments p ON p.patient = k.patient \
         JOIN patient_links l ON l.compartment = p.id WHERE l.regional = ?1",
    )
    .arg(regional)
    .fetch_all::<D>(connection)
    .await?;
    rows.iter().map(|row| row.text("id")).collect()
}

/// The compartment id and regional id of Patient `patient`.
async fn compartment_of<D: Dialect>(
    connection: &mut Connection<D>,
    patient: &str,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let row = stmt(
        "SELECT c.id, l.regional FROM compartments c LEFT JOIN patient_links l ON l.compartment = c.id WHERE c.patient = ?1",
    )
    .arg(patient)
    .fetch_optional::<D>(connection)
    .await?;
    row.map(|row| Ok((row.int("id")?, row.opt_text("regional")?)))
        .transpose()
}

async fn require_facility<D: Dialect>(
    connection: &mut Connection<D>,
    code: &str,
) -> Result<(), StoreError> {
    stmt("SELECT code FROM facilities WHERE code = ?1")
        .arg(code)
        .fetch_optional::<D>(connection)
        .await?
        .map(|_| ())
        .ok_or_else(|| StoreError::Invalid(format!("no facility {code} in the directory")))
}
