//! The index rows of a batch, written in bulk: every waiting row gathered into one array per
//! column, one `INSERT … SELECT FROM UNNEST(…)` per table (and per
//! [`crate::writer::ROWS_PER_STATEMENT`] rows).

use std::collections::BTreeMap;

use tsunagi_fhir::search::{IndexEntry, IndexValue};
use tsunagi_store::StoreError;
use tsunagi_store_sql::db_error;

use crate::writer::{BatchWriter, chunks};

/// `idx_token`'s columns.
#[derive(Default)]
struct Tokens {
    param: Vec<i64>,
    code: Vec<String>,
    pat: Vec<i64>,
    system: Vec<i64>,
    rid: Vec<i64>,
}

/// `idx_string`'s columns.
#[derive(Default)]
struct Strings {
    param: Vec<i64>,
    pat: Vec<i64>,
    value: Vec<String>,
    rid: Vec<i64>,
}

/// `idx_date`'s columns.
#[derive(Default)]
struct Dates {
    param: Vec<i64>,
    pat: Vec<i64>,
    start: Vec<i64>,
    end: Vec<i64>,
    rid: Vec<i64>,
}

/// `idx_reference`'s columns.
#[derive(Default)]
struct References {
    param: Vec<i64>,
    target_id: Vec<String>,
    target_type: Vec<String>,
    rid: Vec<i64>,
}

/// `idx_quantity`'s columns.
#[derive(Default)]
struct Quantities {
    param: Vec<i64>,
    code: Vec<String>,
    pat: Vec<i64>,
    value: Vec<f64>,
    system: Vec<String>,
    rid: Vec<i64>,
}

/// `idx_text`'s columns (one row per resource: its first entry).
#[derive(Default)]
struct Texts {
    rid: Vec<i64>,
    param: Vec<i64>,
    pat: Vec<i64>,
    narrative: Vec<String>,
    other: Vec<String>,
}

impl BatchWriter<'_> {
    /// Every waiting index row, one bulk statement per table (and per [`crate::writer::ROWS_PER_STATEMENT`] rows).
    pub(crate) async fn insert_index(
        &mut self,
        index: BTreeMap<i64, (i64, Vec<IndexEntry>)>,
    ) -> Result<(), StoreError> {
        let mut tokens = Tokens::default();
        let mut strings = Strings::default();
        let mut dates = Dates::default();
        let mut references = References::default();
        let mut quantities = Quantities::default();
        let mut texts = Texts::default();
        for (rid, (pat, entries)) in index {
            let mut text_done = false;
            for entry in entries {
                let param = i64::from(entry.param);
                match entry.value {
                    IndexValue::Token { system, code } => {
                        let system = self.system_id(&system).await?;
                        tokens.param.push(param);
                        tokens.code.push(code);
                        tokens.pat.push(pat);
                        tokens.system.push(system);
                        tokens.rid.push(rid);
                    }
                    IndexValue::String(value) => {
                        strings.param.push(param);
                        strings.pat.push(pat);
                        strings.value.push(value);
                        strings.rid.push(rid);
                    }
                    IndexValue::Date { start, end } => {
                        dates.param.push(param);
                        dates.pat.push(pat);
                        dates.start.push(start);
                        dates.end.push(end);
                        dates.rid.push(rid);
                    }
                    IndexValue::Reference {
                        target_type,
                        target_id,
                    } => {
                        references.param.push(param);
                        references.target_id.push(target_id);
                        references.target_type.push(target_type);
                        references.rid.push(rid);
                    }
                    IndexValue::Quantity {
                        value,
                        system,
                        code,
                    } => {
                        quantities.param.push(param);
                        quantities.code.push(code);
                        quantities.pat.push(pat);
                        quantities.value.push(value);
                        quantities.system.push(system);
                        quantities.rid.push(rid);
                    }
                    // One row of words per resource (the table's key): the first.
                    IndexValue::Text { narrative, other } if !text_done => {
                        text_done = true;
                        texts.rid.push(rid);
                        texts.param.push(param);
                        texts.pat.push(pat);
                        texts.narrative.push(narrative);
                        texts.other.push(other);
                    }
                    IndexValue::Text { .. } => {}
                }
            }
        }
        for range in chunks(tokens.param.len()) {
            sqlx::query(
                "INSERT INTO idx_token (param, code, pat, system_id, rid) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&tokens.param[range.clone()])
            .bind(&tokens.code[range.clone()])
            .bind(&tokens.pat[range.clone()])
            .bind(&tokens.system[range.clone()])
            .bind(&tokens.rid[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        for range in chunks(strings.param.len()) {
            sqlx::query(
                "INSERT INTO idx_string (param, pat, value, rid) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&strings.param[range.clone()])
            .bind(&strings.pat[range.clone()])
            .bind(&strings.value[range.clone()])
            .bind(&strings.rid[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        for range in chunks(dates.param.len()) {
            sqlx::query(
                "INSERT INTO idx_date (param, pat, start, \"end\", rid) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&dates.param[range.clone()])
            .bind(&dates.pat[range.clone()])
            .bind(&dates.start[range.clone()])
            .bind(&dates.end[range.clone()])
            .bind(&dates.rid[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        for range in chunks(references.param.len()) {
            sqlx::query(
                "INSERT INTO idx_reference (param, target_id, target_type, rid) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&references.param[range.clone()])
            .bind(&references.target_id[range.clone()])
            .bind(&references.target_type[range.clone()])
            .bind(&references.rid[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        for range in chunks(quantities.param.len()) {
            sqlx::query(
                "INSERT INTO idx_quantity (param, code, pat, value, system, rid) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::float8[], $5::text[], $6::int8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&quantities.param[range.clone()])
            .bind(&quantities.code[range.clone()])
            .bind(&quantities.pat[range.clone()])
            .bind(&quantities.value[range.clone()])
            .bind(&quantities.system[range.clone()])
            .bind(&quantities.rid[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        for range in chunks(texts.rid.len()) {
            sqlx::query(
                "INSERT INTO idx_text (rid, param, pat, narrative, other) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&texts.rid[range.clone()])
            .bind(&texts.param[range.clone()])
            .bind(&texts.pat[range.clone()])
            .bind(&texts.narrative[range.clone()])
            .bind(&texts.other[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }
}
