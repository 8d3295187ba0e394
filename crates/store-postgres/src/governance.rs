//! The network's records on PostgreSQL (see `tsunagi_store::Governance`): directory, links,
//! consents with the permitted set recomputed in the same transaction, the append-only audit
//! table, seen assertion ids and signing keys; the same statements as the SQLite store's, in
//! PostgreSQL's dialect. Writes that touch compartments or projections hold the writer lock.

use sqlx::{PgConnection, Row, postgres::PgRow};
use tsunagi_store::{
    Batch, Operation, StoreError,
    governance::{
        AuditFilter, AuditRecord, Client, Consent, Facility, Governance, LinkedRecord, ListedAudit,
        Participant, Revocation, Standing, StoredKey, TokenFacts,
    },
    projection,
};
use tsunagi_store_sql::standing::{serves_from, standing_from_row, standing_query};

use crate::{PostgresStore, db_error};

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(db_error)
}

fn consent_from_row(row: &PgRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        id: get(row, "id")?,
        patient: get(row, "patient")?,
        disclosing: get(row, "disclosing")?,
        viewing: get(row, "viewing")?,
        start: get(row, "start")?,
        end: get(row, "end")?,
        withdrawn_at: get(row, "withdrawn_at")?,
        source: get(row, "source")?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
    })
}

/// Rewrites the `access` rows of consents `ids`: the compartments of the disclosing facility
/// that belong to the consent's person (its own record and the records linked with it), for the
/// consent's period cut at its withdrawal.
async fn recompute(connection: &mut PgConnection, ids: &[String]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM access WHERE consent = ANY($1)")
        .bind(ids)
        .execute(&mut *connection)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO access (viewer, pat, not_before, not_after, consent) \
         SELECT k.viewing, c.id, k.start, LEAST(k.\"end\", COALESCE(k.withdrawn_at, k.\"end\")), k.id \
         FROM consents k JOIN compartments p ON p.patient = k.patient \
         JOIN compartments c ON c.id IN (SELECT p.id UNION SELECT l2.compartment FROM patient_links l1 \
              JOIN patient_links l2 ON l2.regional = l1.regional WHERE l1.compartment = p.id) \
         WHERE k.id = ANY($1) AND c.facility = k.disclosing \
         AND LEAST(k.\"end\", COALESCE(k.withdrawn_at, k.\"end\")) > k.start \
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .execute(&mut *connection)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Ids of the consents about any record of the regional record `regional`.
async fn consents_of_regional(
    connection: &mut PgConnection,
    regional: &str,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT k.id FROM consents k JOIN compartments p ON p.patient = k.patient \
         JOIN patient_links l ON l.compartment = p.id WHERE l.regional = $1",
    )
    .bind(regional)
    .fetch_all(&mut *connection)
    .await
    .map_err(db_error)
}

/// The compartment id and regional id of Patient `patient`.
async fn compartment_of(
    connection: &mut PgConnection,
    patient: &str,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let row = sqlx::query(
        "SELECT c.id, l.regional FROM compartments c LEFT JOIN patient_links l ON l.compartment = c.id WHERE c.patient = $1",
    )
    .bind(patient)
    .fetch_optional(&mut *connection)
    .await
    .map_err(db_error)?;
    row.map(|row| Ok((get(&row, "id")?, get(&row, "regional")?)))
        .transpose()
}

/// Audit records per INSERT statement (5 bound values each; PostgreSQL allows 65535).
const AUDIT_CHUNK: usize = 1000;

/// The columns `consent_from_row` reads, of `consents k`.
const CONSENT_COLUMNS: &str = "k.id, k.patient, k.disclosing, k.viewing, k.start, k.\"end\", k.withdrawn_at, k.source, k.created_by, k.created_at";

impl PostgresStore {
    /// Writes a record's FHIR projection in the record's own transaction.
    async fn project(
        &self,
        connection: &mut PgConnection,
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
        connection: &mut PgConnection,
        id: &str,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONSENT_COLUMNS} FROM consents k WHERE k.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *connection)
        .await
        .map_err(db_error)?;
        let consent = consent_from_row(&row)?;
        self.project(connection, projection::consent(&consent)?)
            .await
    }
}

#[async_trait::async_trait]
impl Governance for PostgresStore {
    async fn put_facility(&self, facility: &Facility) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO facilities (code, name, kind, created_at, active) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, active = excluded.active",
        )
        .bind(&facility.code)
        .bind(&facility.name)
        .bind(&facility.kind)
        .bind(self.clock.now_micros())
        .bind(facility.active)
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?;
        // Only a lab reports results for others: a facility that is no longer one lists none.
        if !tsunagi_store::governance::reports_results(&facility.kind) {
            sqlx::query("DELETE FROM lab_reports WHERE lab = $1")
                .bind(&facility.code)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
        }
        self.project(&mut transaction, projection::facility(facility)?)
            .await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        let rows = sqlx::query("SELECT code, name, kind, active FROM facilities ORDER BY code")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Facility {
                    code: get(row, "code")?,
                    name: get(row, "name")?,
                    kind: get(row, "kind")?,
                    active: get(row, "active")?,
                })
            })
            .collect()
    }

    async fn put_participant(&self, participant: &Participant) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        require_facility(&mut transaction, &participant.facility).await?;
        sqlx::query(
            "INSERT INTO participants (id, name, facility, role, active, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, facility = excluded.facility, role = excluded.role, active = excluded.active",
        )
        .bind(&participant.id)
        .bind(&participant.name)
        .bind(&participant.facility)
        .bind(&participant.role)
        .bind(participant.active)
        .bind(self.clock.now_micros())
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?;
        self.project(&mut transaction, projection::participant(participant)?)
            .await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn participant(&self, id: &str) -> Result<Option<Participant>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, facility, role, active FROM participants WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        row.as_ref().map(participant_from_row).transpose()
    }

    async fn participants(&self) -> Result<Vec<Participant>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, facility, role, active FROM participants ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.iter().map(participant_from_row).collect()
    }

    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        require_facility(&mut transaction, &client.facility).await?;
        sqlx::query(
            "INSERT INTO clients (id, facility, kind, jwks, scope, active, created_at, serves) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET facility = excluded.facility, kind = excluded.kind, jwks = excluded.jwks, scope = excluded.scope, active = excluded.active, serves = excluded.serves",
        )
        .bind(&client.id)
        .bind(&client.facility)
        .bind(&client.kind)
        .bind(&client.jwks)
        .bind(&client.scope)
        .bind(client.active)
        .bind(self.clock.now_micros())
        .bind(client.serves.join(" "))
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?;
        transaction.commit().await.map_err(db_error)
    }

    async fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query(
            "SELECT id, facility, kind, jwks, scope, active, serves FROM clients WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, facility, kind, jwks, scope, active, serves FROM clients ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn holder(&self, patient: &str) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query("SELECT facility FROM compartments WHERE patient = $1")
            .bind(patient)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| get(&row, "facility")).transpose()
    }

    async fn link(
        &self,
        regional: &str,
        patient: &str,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let Some((compartment, previous)) = compartment_of(&mut transaction, patient).await? else {
            return Err(StoreError::Invalid(format!("no patient {patient}")));
        };
        let mut affected = match &previous {
            Some(previous) => consents_of_regional(&mut transaction, previous).await?,
            None => Vec::new(),
        };
        sqlx::query(
            "INSERT INTO patient_links (compartment, regional, created_by, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (compartment) DO UPDATE SET regional = excluded.regional, created_by = excluded.created_by, created_at = excluded.created_at",
        )
        .bind(compartment)
        .bind(regional)
        .bind(by)
        .bind(at)
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?;
        affected.extend(consents_of_regional(&mut transaction, regional).await?);
        affected.sort_unstable();
        affected.dedup();
        recompute(&mut transaction, &affected).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn unlink(&self, patient: &str) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let Some((compartment, Some(regional))) = compartment_of(&mut transaction, patient).await?
        else {
            return Ok(());
        };
        let affected = consents_of_regional(&mut transaction, &regional).await?;
        sqlx::query("DELETE FROM patient_links WHERE compartment = $1")
            .bind(compartment)
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        recompute(&mut transaction, &affected).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn linked(&self, patient: &str) -> Result<Vec<LinkedRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.patient, c.facility, l2.regional FROM compartments p \
             JOIN patient_links l1 ON l1.compartment = p.id \
             JOIN patient_links l2 ON l2.regional = l1.regional \
             JOIN compartments c ON c.id = l2.compartment WHERE p.patient = $1 ORDER BY c.patient",
        )
        .bind(patient)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(LinkedRecord {
                    patient: get(row, "patient")?,
                    facility: get(row, "facility")?,
                    regional: get(row, "regional")?,
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
        if compartment_of(&mut transaction, &consent.patient)
            .await?
            .is_none()
        {
            return Err(StoreError::Invalid(format!(
                "no patient {}",
                consent.patient
            )));
        }
        for facility in [&consent.disclosing, &consent.viewing] {
            require_facility(&mut transaction, facility).await?;
        }
        sqlx::query(
            "INSERT INTO consents (id, patient, disclosing, viewing, start, \"end\", withdrawn_at, source, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET patient = excluded.patient, disclosing = excluded.disclosing, viewing = excluded.viewing, \
             start = excluded.start, \"end\" = excluded.\"end\", withdrawn_at = excluded.withdrawn_at, source = excluded.source",
        )
        .bind(&consent.id)
        .bind(&consent.patient)
        .bind(&consent.disclosing)
        .bind(&consent.viewing)
        .bind(consent.start)
        .bind(consent.end)
        .bind(consent.withdrawn_at)
        .bind(&consent.source)
        .bind(&consent.created_by)
        .bind(consent.created_at)
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?;
        recompute(&mut transaction, std::slice::from_ref(&consent.id)).await?;
        self.project_consent(&mut transaction, &consent.id).await?;
        transaction.commit().await.map_err(db_error)
    }

    async fn withdraw_consent(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE consents SET withdrawn_at = $2 WHERE id = $1 AND (withdrawn_at IS NULL OR withdrawn_at > $2)",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?
        .rows_affected();
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM consents WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(db_error)?;
        if changed > 0 {
            recompute(&mut transaction, &[id.to_owned()]).await?;
            self.project_consent(&mut transaction, id).await?;
        }
        transaction.commit().await.map_err(db_error)?;
        Ok(exists.is_some())
    }

    async fn consents(&self, patient: Option<&str>) -> Result<Vec<Consent>, StoreError> {
        let rows = match patient {
            // The person's consents: recorded against this record or any record linked with it.
            Some(patient) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents k WHERE k.patient = $1 OR k.patient IN ( \
                     SELECT c.patient FROM compartments p JOIN patient_links l1 ON l1.compartment = p.id \
                     JOIN patient_links l2 ON l2.regional = l1.regional JOIN compartments c ON c.id = l2.compartment \
                     WHERE p.patient = $1) ORDER BY k.id"
                )))
                .bind(patient)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents k ORDER BY k.id"
                )))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_error)?;
        rows.iter().map(consent_from_row).collect()
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await.map_err(db_error)?;
        for chunk in records.chunks(AUDIT_CHUNK) {
            let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO audit (id, recorded, patient, facility, event) ",
            );
            sql.push_values(chunk, |mut row, record| {
                row.push_bind(record.id.as_str())
                    .push_bind(record.recorded)
                    .push_bind(record.patient.as_deref())
                    .push_bind(record.facility.as_deref())
                    .push_bind(record.event.as_slice());
            });
            sql.build()
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
        }
        transaction.commit().await.map_err(db_error)
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<ListedAudit>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, recorded, patient, facility, event FROM audit \
             WHERE ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR patient = $2) \
             AND ($3::bigint IS NULL OR recorded >= $3) AND ($4::bigint IS NULL OR recorded < $4) \
             AND ($5::text IS NULL OR facility = $5 OR patient IN (SELECT patient FROM compartments WHERE facility = $5)) \
             AND ($6::bigint IS NULL OR seq < $6) \
             ORDER BY seq DESC LIMIT $7",
        )
        .bind(filter.id.as_deref())
        .bind(filter.patient.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.facility.as_deref())
        .bind(filter.before)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(ListedAudit {
                    position: get(row, "seq")?,
                    record: AuditRecord {
                        id: get::<Option<String>>(row, "id")?.unwrap_or_default(),
                        recorded: get(row, "recorded")?,
                        patient: get(row, "patient")?,
                        facility: get(row, "facility")?,
                        event: get(row, "event")?,
                    },
                })
            })
            .collect()
    }

    async fn audit_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(count as u64)
    }

    async fn remember_assertion(
        &self,
        client: &str,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM seen_assertions WHERE exp < $1")
            .bind(now - crate::ASSERTION_MEMORY_SLACK)
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO seen_assertions (client, jti, exp) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(client)
        .bind(jti)
        .bind(exp)
        .execute(&mut *transaction)
        .await
        .map_err(db_error)?
        .rows_affected();
        transaction.commit().await.map_err(db_error)?;
        Ok(inserted == 1)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, pem, created_at FROM signing_keys ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: get(row, "kid")?,
                    pem: get(row, "pem")?,
                    created_at: get(row, "created_at")?,
                })
            })
            .collect()
    }

    async fn lab_reports_for(&self, lab: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT facility FROM lab_reports WHERE lab = $1 ORDER BY facility")
            .bind(lab)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn set_lab_reports_for(
        &self,
        lab: &str,
        facilities: &[String],
    ) -> Result<(), StoreError> {
        tsunagi_store::governance::check_lab_reports(&self.facilities().await?, lab, facilities)?;
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM lab_reports WHERE lab = $1")
            .bind(lab)
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        for facility in facilities {
            sqlx::query(
                "INSERT INTO lab_reports (lab, facility) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(lab)
            .bind(facility)
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        }
        transaction.commit().await.map_err(db_error)
    }

    async fn served_origin(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'served_origin'")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn record_served_origin(&self, origin: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO store_meta (key, value) VALUES ('served_origin', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
            .bind(origin)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let (kind, value, at) = revocation.row();
        sqlx::query(
            "INSERT INTO revocations (kind, value, at) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, value) DO UPDATE SET at = GREATEST(revocations.at, excluded.at)",
        )
        .bind(kind)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn token_standing(&self, token: &TokenFacts) -> Result<Standing, StoreError> {
        let row = standing_query::<sqlx::Postgres>(token)
            .build()
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        standing_from_row(&row)
    }

    async fn put_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, pem, created_at) VALUES ($1, $2, $3)")
            .bind(&key.kid)
            .bind(&key.pem)
            .bind(key.created_at)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

async fn require_facility(connection: &mut PgConnection, code: &str) -> Result<(), StoreError> {
    let found: Option<String> = sqlx::query_scalar("SELECT code FROM facilities WHERE code = $1")
        .bind(code)
        .fetch_optional(&mut *connection)
        .await
        .map_err(db_error)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::Invalid(format!("no facility {code} in the directory")))
}

fn participant_from_row(row: &PgRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        facility: get(row, "facility")?,
        role: get(row, "role")?,
        active: get(row, "active")?,
    })
}

fn client_from_row(row: &PgRow) -> Result<Client, StoreError> {
    Ok(Client {
        id: get(row, "id")?,
        facility: get(row, "facility")?,
        kind: get(row, "kind")?,
        jwks: get(row, "jwks")?,
        scope: get(row, "scope")?,
        active: get(row, "active")?,
        serves: serves_from(&get::<String>(row, "serves")?),
    })
}

/// Audit records are committed directly: nothing to start.
impl tsunagi_store::Backend for PostgresStore {}
