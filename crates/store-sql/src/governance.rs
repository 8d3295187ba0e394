//! The network's records on either database (see `tsunagi_store::Governance`): reads of the
//! directory, links, consents, signing keys and the lab's list; seen assertion ids; the audit
//! trail's appends (the table itself is `audit`). Changes are in `changes`.

use tsunagi_store::{
    StoreError,
    governance::{
        AuditFilter, AuditRecord, Change, Client, Consent, Facility, Governance, LinkedRecord,
        ListedAudit, Participant, QueueDepths, Standing, StoredKey, TokenFacts,
    },
};

use crate::{
    audit,
    dialect::{Cells, db_error, fetch_built, stmt},
    standing::{serves_from, standing_from_row, standing_query},
    store::{Engine, SqlStore},
};

/// Seconds an assertion id is remembered past its `exp` (clock skew between client and us).
const ASSERTION_MEMORY_SLACK: i64 = 60;

/// The columns `consent_from_row` reads, of `consents k`.
pub(crate) const CONSENT_COLUMNS: &str = "k.id, k.patient, k.disclosing, k.viewing, k.start, k.\"end\", k.withdrawn_at, k.source, k.created_by, k.created_at";

/// Every facility, by code, as `connection` sees them.
pub(crate) async fn facilities_on<D: crate::dialect::Dialect>(
    connection: &mut <D as sqlx::Database>::Connection,
) -> Result<Vec<Facility>, StoreError> {
    let rows = stmt("SELECT code, name, kind, active FROM facilities ORDER BY code")
        .fetch_all::<D>(connection)
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

pub(crate) fn consent_from_row(row: &impl Cells) -> Result<Consent, StoreError> {
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

#[async_trait::async_trait]
impl<E: Engine> Governance for SqlStore<E> {
    async fn schema_status(&self) -> Result<Option<String>, StoreError> {
        let mut connection = self.read_connection().await?;
        crate::migrations::check::<E::Db>(&mut connection, self.engine().migrator()).await
    }

    async fn change(
        &self,
        change: Change,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.make_change(change, audit).await
    }

    async fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        let mut connection = self.write_connection().await?;
        facilities_on::<E::Db>(&mut connection).await
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
            audit::insert::<E::Db>(&mut connection, records, E::AUDIT_CHUNK).await?;
            connection.done();
            return Ok(());
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

    async fn claim_run(
        &self,
        source: &str,
        tick: i64,
        node: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        // One row per source, claimed in one upsert: a later tick, and the last hold over.
        let claimed = stmt(
            "INSERT INTO pull_holds (source, tick, node, claimed, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (source) DO UPDATE SET tick = excluded.tick, node = excluded.node, \
             claimed = excluded.claimed, lease_until = excluded.lease_until \
             WHERE pull_holds.tick < excluded.tick AND pull_holds.lease_until <= excluded.claimed",
        )
        .arg(source)
        .arg(tick)
        .arg(node)
        .arg(now)
        .arg(lease_until)
        .execute_in::<E::Db>(self.writer())
        .await?;
        Ok(claimed == 1)
    }

    async fn queue_depths(&self) -> Result<QueueDepths, StoreError> {
        let mut connection = self.read_connection().await?;
        let mut depths = QueueDepths::default();
        for row in stmt(
            "SELECT state, COUNT(*) AS n, MIN(created) AS oldest FROM outbox \
             WHERE state IN ('pending', 'dead') GROUP BY state",
        )
        .fetch_all::<E::Db>(&mut *connection)
        .await?
        {
            let count = u64::try_from(row.int("n")?).unwrap_or(0);
            match row.text("state")?.as_str() {
                "pending" => {
                    depths.outbox_pending = count;
                    depths.outbox_oldest_pending = row.opt_int("oldest")?;
                }
                _ => depths.outbox_dead = count,
            }
        }
        // `state <> 'applied'` lets SQLite use the partial index of open messages.
        let quarantined = stmt(
            "SELECT COUNT(*) AS n FROM messages WHERE state = 'quarantined' AND state <> 'applied'",
        )
        .fetch_one::<E::Db>(&mut *connection)
        .await?;
        depths.messages_quarantined = u64::try_from(quarantined.int("n")?).unwrap_or(0);
        for row in stmt("SELECT source, claimed, lease_until FROM pull_holds ORDER BY source")
            .fetch_all::<E::Db>(&mut *connection)
            .await?
        {
            depths.pulls.push((
                row.text("source")?,
                row.int("claimed")?,
                row.int("lease_until")?,
            ));
        }
        Ok(depths)
    }

    async fn renew_run(
        &self,
        source: &str,
        tick: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let renewed = stmt(
            "UPDATE pull_holds SET lease_until = ?1 WHERE source = ?2 AND tick = ?3 AND lease_until > 0",
        )
        .arg(lease_until)
        .arg(source)
        .arg(tick)
        .execute_in::<E::Db>(self.writer())
        .await?;
        Ok(renewed == 1)
    }

    async fn finish_run(&self, source: &str, tick: i64) -> Result<(), StoreError> {
        stmt("UPDATE pull_holds SET lease_until = 0 WHERE source = ?1 AND tick = ?2")
            .arg(source)
            .arg(tick)
            .execute_in::<E::Db>(self.writer())
            .await?;
        Ok(())
    }

    async fn forget_runs(&self, configured: &[String], now: i64) -> Result<u64, StoreError> {
        stmt(format!(
            "DELETE FROM pull_holds WHERE lease_until <= ?1 AND NOT ({})",
            <E::Db as crate::dialect::Dialect>::in_list("source", "?2")
        ))
        .arg(now)
        .arg(configured)
        .execute_in::<E::Db>(self.writer())
        .await
    }

    async fn put_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let mut transaction = self.begin_small_write().await?;
        // One row decides: a second node's insert waits for the first's commit, then does
        // nothing.
        let claimed = stmt(
            "INSERT INTO store_meta (key, value) VALUES ('first_signing_key', ?1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .arg(&key.kid)
        .execute::<E::Db>(&mut *transaction)
        .await?;
        if claimed == 1 {
            stmt("INSERT INTO signing_keys (kid, pem, created_at) VALUES (?1, ?2, ?3)")
                .arg(&key.kid)
                .arg(&key.pem)
                .arg(key.created_at)
                .execute::<E::Db>(&mut *transaction)
                .await?;
        }
        transaction.commit().await.map_err(db_error)?;
        Ok(claimed == 1)
    }

    fn standing_epoch(&self) -> Option<u64> {
        self.engine().standing_epoch()
    }

    async fn token_standing(&self, token: &TokenFacts) -> Result<Standing, StoreError> {
        let mut sql = standing_query::<E::Db>(token);
        let mut connection = self.read_connection().await?;
        let rows = fetch_built::<E::Db>(&mut connection, &mut sql).await?;
        connection.done();
        let row = rows
            .first()
            .ok_or_else(|| StoreError::database("the standing query returned no row".to_owned()))?;
        standing_from_row(row)
    }
}
