//! The network's records on either database (see `tsunagi_store::Governance`): the directory,
//! links, consents with the permitted set (`access`) recomputed in the same transaction, seen
//! assertion ids, signing keys, revocations and the lab's list. Every write runs in a writing
//! transaction of the engine and writes its FHIR projection in that transaction; the audit is in
//! `audit`.

use sqlx::Database;
use tsunagi_store::{
    Batch, Operation, StoreError,
    governance::{
        AuditFilter, AuditRecord, Client, Consent, Facility, Governance, LinkedRecord, ListedAudit,
        Participant, Revocation, Standing, StoredKey, TokenFacts, check_lab_reports,
        reports_results,
    },
    projection,
};

use crate::{
    audit,
    dialect::{Cells, Dialect, db_error, fetch_built, stmt},
    standing::{serves_from, standing_from_row, standing_query},
    store::{Engine, SqlStore},
};

type Connection<D> = <D as Database>::Connection;

/// Seconds an assertion id is remembered past its `exp` (clock skew between client and us).
const ASSERTION_MEMORY_SLACK: i64 = 60;

/// The columns `consent_from_row` reads, of `consents k`.
const CONSENT_COLUMNS: &str = "k.id, k.patient, k.disclosing, k.viewing, k.start, k.\"end\", k.withdrawn_at, k.source, k.created_by, k.created_at";

fn consent_from_row(row: &impl Cells) -> Result<Consent, StoreError> {
    Ok(Consent {
        id: row.text("id")?,
        patient: row.text("patient")?,
        disclosing: row.text("disclosing")?,
        viewing: row.text("viewing")?,
        start: row.int("start")?,
        end: row.int("end")?,
        withdrawn_at: row.opt_int("withdrawn_at")?,
        source: row.text("source")?,
        created_by: row.text("created_by")?,
        created_at: row.int("created_at")?,
    })
}

fn participant_from_row(row: &impl Cells) -> Result<Participant, StoreError> {
    Ok(Participant {
        id: row.text("id")?,
        name: row.text("name")?,
        facility: row.text("facility")?,
        role: row.text("role")?,
        active: row.flag("active")?,
    })
}

fn client_from_row(row: &impl Cells) -> Result<Client, StoreError> {
    Ok(Client {
        id: row.text("id")?,
        facility: row.text("facility")?,
        kind: row.text("kind")?,
        jwks: row.text("jwks")?,
        scope: row.text("scope")?,
        active: row.flag("active")?,
        serves: serves_from(&row.text("serves")?),
    })
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
pub async fn recompute_all<D: Dialect>(connection: &mut Connection<D>) -> Result<(), StoreError> {
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

impl<E: Engine> SqlStore<E> {
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

#[async_trait::async_trait]
impl<E: Engine> Governance for SqlStore<E> {
    async fn put_facility(&self, facility: &Facility) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        stmt(
            "INSERT INTO facilities (code, name, kind, created_at, active) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, active = excluded.active",
        )
        .arg(&facility.code)
        .arg(&facility.name)
        .arg(&facility.kind)
        .arg(self.clock().now_micros())
        .arg(facility.active)
        .execute::<E::Db>(&mut *transaction)
        .await?;
        // Only a lab reports results for others: a facility that is no longer one lists none.
        if !reports_results(&facility.kind) {
            stmt("DELETE FROM lab_reports WHERE lab = ?1")
                .arg(&facility.code)
                .execute::<E::Db>(&mut *transaction)
                .await?;
        }
        self.project(&mut *transaction, projection::facility(facility)?)
            .await?;
        transaction.commit().await.map_err(db_error)?;
        self.standing_changed()
    }

    async fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        let rows = stmt("SELECT code, name, kind, active FROM facilities ORDER BY code")
            .fetch_all_in::<E::Db>(self.writer())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Facility {
                    code: row.text("code")?,
                    name: row.text("name")?,
                    kind: row.text("kind")?,
                    active: row.flag("active")?,
                })
            })
            .collect()
    }

    async fn put_participant(&self, participant: &Participant) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        require_facility::<E::Db>(&mut transaction, &participant.facility).await?;
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
        .execute::<E::Db>(&mut *transaction)
        .await?;
        self.project(&mut *transaction, projection::participant(participant)?)
            .await?;
        transaction.commit().await.map_err(db_error)?;
        self.standing_changed()
    }

    async fn participant(&self, id: &str) -> Result<Option<Participant>, StoreError> {
        let row = stmt("SELECT id, name, facility, role, active FROM participants WHERE id = ?1")
            .arg(id)
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.as_ref().map(participant_from_row).transpose()
    }

    async fn participants(&self) -> Result<Vec<Participant>, StoreError> {
        let rows = stmt("SELECT id, name, facility, role, active FROM participants ORDER BY id")
            .fetch_all_in::<E::Db>(self.writer())
            .await?;
        rows.iter().map(participant_from_row).collect()
    }

    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        require_facility::<E::Db>(&mut transaction, &client.facility).await?;
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
        .arg(self.clock().now_micros())
        .arg(client.serves.join(" "))
        .execute::<E::Db>(&mut *transaction)
        .await?;
        transaction.commit().await.map_err(db_error)?;
        self.standing_changed()
    }

    async fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let row = stmt(
            "SELECT id, facility, kind, jwks, scope, active, serves FROM clients WHERE id = ?1",
        )
        .arg(id)
        .fetch_optional_in::<E::Db>(self.writer())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows =
            stmt("SELECT id, facility, kind, jwks, scope, active, serves FROM clients ORDER BY id")
                .fetch_all_in::<E::Db>(self.writer())
                .await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn holder(&self, patient: &str) -> Result<Option<Option<String>>, StoreError> {
        let row = stmt("SELECT facility FROM compartments WHERE patient = ?1")
            .arg(patient)
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.map(|row| row.opt_text("facility")).transpose()
    }

    async fn link(
        &self,
        regional: &str,
        patient: &str,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let Some((compartment, previous)) =
            compartment_of::<E::Db>(&mut transaction, patient).await?
        else {
            return Err(StoreError::Invalid(format!("no patient {patient}")));
        };
        let mut affected = match &previous {
            Some(previous) => consents_of_regional::<E::Db>(&mut transaction, previous).await?,
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
        .execute::<E::Db>(&mut *transaction)
        .await?;
        affected.extend(consents_of_regional::<E::Db>(&mut transaction, regional).await?);
        affected.sort_unstable();
        affected.dedup();
        recompute::<E::Db>(&mut transaction, &affected).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn unlink(&self, patient: &str) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let Some((compartment, Some(regional))) =
            compartment_of::<E::Db>(&mut transaction, patient).await?
        else {
            return Ok(());
        };
        let affected = consents_of_regional::<E::Db>(&mut transaction, &regional).await?;
        stmt("DELETE FROM patient_links WHERE compartment = ?1")
            .arg(compartment)
            .execute::<E::Db>(&mut *transaction)
            .await?;
        recompute::<E::Db>(&mut transaction, &affected).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn linked(&self, patient: &str) -> Result<Vec<LinkedRecord>, StoreError> {
        let rows = stmt(
            "SELECT c.patient, c.facility, l2.regional FROM compartments p \
             JOIN patient_links l1 ON l1.compartment = p.id \
             JOIN patient_links l2 ON l2.regional = l1.regional \
             JOIN compartments c ON c.id = l2.compartment WHERE p.patient = ?1 ORDER BY c.patient",
        )
        .arg(patient)
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LinkedRecord {
                    patient: row.text("patient")?,
                    facility: row.opt_text("facility")?,
                    regional: row.text("regional")?,
                })
            })
            .collect()
    }

    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError> {
        if consent.end <= consent.start {
            return Err(StoreError::Invalid(
                "a consent's end must be after its start".to_owned(),
            ));
        }
        let mut transaction = self.begin_write().await?;
        if compartment_of::<E::Db>(&mut transaction, &consent.patient)
            .await?
            .is_none()
        {
            return Err(StoreError::Invalid(format!(
                "no patient {}",
                consent.patient
            )));
        }
        for facility in [&consent.disclosing, &consent.viewing] {
            require_facility::<E::Db>(&mut transaction, facility).await?;
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
        .execute::<E::Db>(&mut *transaction)
        .await?;
        recompute::<E::Db>(&mut transaction, std::slice::from_ref(&consent.id)).await?;
        self.project_consent(&mut transaction, &consent.id).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn withdraw_consent(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let changed = stmt(
            "UPDATE consents SET withdrawn_at = ?2 WHERE id = ?1 AND (withdrawn_at IS NULL OR withdrawn_at > ?2)",
        )
        .arg(id)
        .arg(at)
        .execute::<E::Db>(&mut *transaction)
        .await?;
        let exists = stmt("SELECT id FROM consents WHERE id = ?1")
            .arg(id)
            .fetch_optional::<E::Db>(&mut *transaction)
            .await?;
        if changed > 0 {
            recompute::<E::Db>(&mut transaction, &[id.to_owned()]).await?;
            self.project_consent(&mut transaction, id).await?;
        }
        transaction.commit().await.map_err(db_error)?;
        Ok(exists.is_some())
    }

    async fn consents(&self, patient: Option<&str>) -> Result<Vec<Consent>, StoreError> {
        let statement = match patient {
            // The person's consents: recorded against this record or any record linked with it.
            Some(patient) => stmt(format!(
                "SELECT {CONSENT_COLUMNS} FROM consents k WHERE k.patient = ?1 OR k.patient IN ( \
                 SELECT c.patient FROM compartments p JOIN patient_links l1 ON l1.compartment = p.id \
                 JOIN patient_links l2 ON l2.regional = l1.regional JOIN compartments c ON c.id = l2.compartment \
                 WHERE p.patient = ?1) ORDER BY k.id"
            ))
            .arg(patient),
            None => stmt(format!(
                "SELECT {CONSENT_COLUMNS} FROM consents k ORDER BY k.id"
            )),
        };
        let rows = statement.fetch_all_in::<E::Db>(self.writer()).await?;
        rows.iter().map(consent_from_row).collect()
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() || self.journal(records)? {
            return Ok(());
        }
        let mut connection = self.write_connection().await?;
        // One statement is atomic on its own: the common case (a group commit of a few
        // requests) costs one round trip instead of three.
        if records.len() <= E::AUDIT_CHUNK {
            return audit::insert::<E::Db>(&mut connection, records, E::AUDIT_CHUNK).await;
        }
        drop(connection);
        let mut transaction = self.begin_write().await?;
        audit::insert::<E::Db>(&mut transaction, records, E::AUDIT_CHUNK).await?;
        transaction.commit().await.map_err(db_error)
    }

    fn append_audit_now(&self, records: &[AuditRecord]) -> Option<Result<(), StoreError>> {
        match self.journal(records) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        }
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<ListedAudit>, StoreError> {
        self.settle_audit().await?;
        let mut connection = self.write_connection().await?;
        audit::list::<E::Db>(&mut connection, filter).await
    }

    async fn audit_count(&self) -> Result<u64, StoreError> {
        self.settle_audit().await?;
        let row = stmt("SELECT COUNT(*) AS n FROM audit")
            .fetch_one_in::<E::Db>(self.writer())
            .await?;
        Ok(row.int("n")?.max(0) as u64)
    }

    async fn remember_assertion(
        &self,
        client: &str,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_small_write().await?;
        stmt("DELETE FROM seen_assertions WHERE exp < ?1")
            .arg(now - ASSERTION_MEMORY_SLACK)
            .execute::<E::Db>(&mut *transaction)
            .await?;
        let inserted = stmt(
            "INSERT INTO seen_assertions (client, jti, exp) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .arg(client)
        .arg(jti)
        .arg(exp)
        .execute::<E::Db>(&mut *transaction)
        .await?;
        transaction.commit().await.map_err(db_error)?;
        Ok(inserted == 1)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows =
            stmt("SELECT kid, pem, created_at FROM signing_keys ORDER BY created_at DESC, kid")
                .fetch_all_in::<E::Db>(self.writer())
                .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.text("kid")?,
                    pem: row.text("pem")?,
                    created_at: row.int("created_at")?,
                })
            })
            .collect()
    }

    async fn lab_reports_for(&self, lab: &str) -> Result<Vec<String>, StoreError> {
        let rows = stmt("SELECT facility FROM lab_reports WHERE lab = ?1 ORDER BY facility")
            .arg(lab)
            .fetch_all_in::<E::Db>(self.writer())
            .await?;
        rows.iter().map(|row| row.text("facility")).collect()
    }

    async fn set_lab_reports_for(
        &self,
        lab: &str,
        facilities: &[String],
    ) -> Result<(), StoreError> {
        check_lab_reports(&self.facilities().await?, lab, facilities)?;
        let mut transaction = self.begin_write().await?;
        stmt("DELETE FROM lab_reports WHERE lab = ?1")
            .arg(lab)
            .execute::<E::Db>(&mut *transaction)
            .await?;
        for facility in facilities {
            stmt("INSERT INTO lab_reports (lab, facility) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
                .arg(lab)
                .arg(facility)
                .execute::<E::Db>(&mut *transaction)
                .await?;
        }
        transaction.commit().await.map_err(db_error)
    }

    async fn served_origin(&self) -> Result<Option<String>, StoreError> {
        let row = stmt("SELECT value FROM store_meta WHERE key = 'served_origin'")
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.map(|row| row.text("value")).transpose()
    }

    async fn record_served_origin(&self, origin: &str) -> Result<(), StoreError> {
        stmt(
            "INSERT INTO store_meta (key, value) VALUES ('served_origin', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .arg(origin)
        .execute_in::<E::Db>(self.writer())
        .await?;
        Ok(())
    }

    async fn put_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        stmt("INSERT INTO signing_keys (kid, pem, created_at) VALUES (?1, ?2, ?3)")
            .arg(&key.kid)
            .arg(&key.pem)
            .arg(key.created_at)
            .execute_in::<E::Db>(self.writer())
            .await?;
        Ok(())
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let (kind, value, at) = revocation.row();
        stmt(format!(
            "INSERT INTO revocations (kind, value, at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (kind, value) DO UPDATE SET at = {}(revocations.at, excluded.at)",
            E::Db::GREATEST
        ))
        .arg(kind)
        .arg(value)
        .arg(at)
        .execute_in::<E::Db>(self.writer())
        .await?;
        self.standing_changed()
    }

    fn standing_epoch(&self) -> Option<u64> {
        self.engine().standing_epoch()
    }

    async fn token_standing(&self, token: &TokenFacts) -> Result<Standing, StoreError> {
        let mut sql = standing_query::<E::Db>(token);
        let mut connection = self.read_connection().await?;
        let rows = fetch_built::<E::Db>(&mut connection, &mut sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Database("the standing query returned no row".to_owned()))?;
        standing_from_row(row)
    }
}
