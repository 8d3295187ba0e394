//! The index rows of a batch, written in bulk: every waiting row gathered per table, sorted in
//! the table's key order and deduplicated in memory (an element may repeat a value), then
//! streamed with one binary `COPY` per table ([`crate::copy`]).
//!
//! No row can collide with a stored one: a `rid` either is new, or had its rows deleted when
//! the batch flushed ([`crate::writer`]'s `unindex`), before any is copied. Sorted rows also
//! reach each B-tree in order, which PostgreSQL inserts faster than scattered ones.

use std::collections::BTreeMap;

use tsunagi_fhir::search::{IndexEntry, IndexValue};
use tsunagi_store::StoreError;

use crate::copy::CopyRows;
use crate::writer::BatchWriter;

/// One batch's index rows, a vector of keys per table, each key in its table's primary-key
/// column order.
#[derive(Default)]
struct IndexRows {
    /// `idx_token (param, code, pat, system_id, rid)`.
    tokens: Vec<(i64, String, i64, i64, i64)>,
    /// `idx_string (param, pat, value, rid)`.
    strings: Vec<(i64, i64, String, i64)>,
    /// `idx_date (param, pat, start, "end", rid)`.
    dates: Vec<(i64, i64, i64, i64, i64)>,
    /// `idx_reference (param, target_id, target_type, rid)`.
    references: Vec<(i64, String, String, i64)>,
    /// `idx_quantity (param, code, pat, value, system, rid)`, the value as its sortable bits.
    quantities: Vec<(i64, String, i64, u64, String, i64)>,
    /// `idx_text (rid, param, pat, narrative, other)`: one row per resource, its first entry.
    texts: Vec<(i64, i64, i64, String, String)>,
}

/// `value`'s bits, ordered as the numbers are; PostgreSQL's equal values (0 and -0, every NaN)
/// give equal keys, so deduplication matches its primary key.
fn float_key(value: f64) -> u64 {
    let value = if value == 0.0 {
        0.0
    } else if value.is_nan() {
        f64::NAN
    } else {
        value
    };
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The number [`float_key`] was made from (0 and NaN in their one form).
fn float_from_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

fn sorted<T: Ord>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort_unstable();
    rows.dedup();
    rows
}

impl BatchWriter<'_> {
    /// Every waiting index row, one binary `COPY` per table.
    pub(crate) async fn insert_index(
        &mut self,
        index: BTreeMap<i64, (i64, Vec<IndexEntry>)>,
    ) -> Result<(), StoreError> {
        let mut rows = IndexRows::default();
        for (rid, (pat, entries)) in index {
            let mut text_done = false;
            for entry in entries {
                let param = i64::from(entry.param);
                match entry.value {
                    IndexValue::Token { system, code } => {
                        let system = self.system_id(&system).await?;
                        rows.tokens.push((param, code, pat, system, rid));
                    }
                    IndexValue::String(value) => rows.strings.push((param, pat, value, rid)),
                    IndexValue::Date { start, end } => {
                        rows.dates.push((param, pat, start, end, rid));
                    }
                    IndexValue::Reference {
                        target_type,
                        target_id,
                    } => rows.references.push((param, target_id, target_type, rid)),
                    IndexValue::Quantity {
                        value,
                        system,
                        code,
                    } => rows
                        .quantities
                        .push((param, code, pat, float_key(value), system, rid)),
                    // One row of words per resource (the table's key): the first.
                    IndexValue::Text { narrative, other } if !text_done => {
                        text_done = true;
                        rows.texts.push((rid, param, pat, narrative, other));
                    }
                    IndexValue::Text { .. } => {}
                }
            }
        }
        self.copy_index(rows).await
    }

    async fn copy_index(&mut self, rows: IndexRows) -> Result<(), StoreError> {
        let mut copy = CopyRows::new(5);
        for (param, code, pat, system, rid) in sorted(rows.tokens) {
            copy.row()
                .int8(param)
                .text(&code)?
                .int8(pat)
                .int8(system)
                .int8(rid);
        }
        copy.send(
            &mut *self.connection,
            "idx_token (param, code, pat, system_id, rid)",
        )
        .await?;
        let mut copy = CopyRows::new(4);
        for (param, pat, value, rid) in sorted(rows.strings) {
            copy.row().int8(param).int8(pat).text(&value)?.int8(rid);
        }
        copy.send(&mut *self.connection, "idx_string (param, pat, value, rid)")
            .await?;
        let mut copy = CopyRows::new(5);
        for (param, pat, start, end, rid) in sorted(rows.dates) {
            copy.row()
                .int8(param)
                .int8(pat)
                .int8(start)
                .int8(end)
                .int8(rid);
        }
        copy.send(
            &mut *self.connection,
            "idx_date (param, pat, start, \"end\", rid)",
        )
        .await?;
        let mut copy = CopyRows::new(4);
        for (param, target_id, target_type, rid) in sorted(rows.references) {
            copy.row()
                .int8(param)
                .text(&target_id)?
                .text(&target_type)?
                .int8(rid);
        }
        copy.send(
            &mut *self.connection,
            "idx_reference (param, target_id, target_type, rid)",
        )
        .await?;
        let mut copy = CopyRows::new(6);
        for (param, code, pat, value, system, rid) in sorted(rows.quantities) {
            copy.row()
                .int8(param)
                .text(&code)?
                .int8(pat)
                .float8(float_from_key(value))
                .text(&system)?
                .int8(rid);
        }
        copy.send(
            &mut *self.connection,
            "idx_quantity (param, code, pat, value, system, rid)",
        )
        .await?;
        let mut copy = CopyRows::new(5);
        for (rid, param, pat, narrative, other) in sorted(rows.texts) {
            copy.row()
                .int8(rid)
                .int8(param)
                .int8(pat)
                .text(&narrative)?
                .text(&other)?;
        }
        copy.send(
            &mut *self.connection,
            "idx_text (rid, param, pat, narrative, other)",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_keys_order_as_numbers_and_fold_what_postgresql_holds_equal() {
        let values = [
            f64::NEG_INFINITY,
            -2.5,
            -1e-300,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
        ];
        let keys: Vec<u64> = values.iter().map(|value| float_key(*value)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
        for value in values {
            assert_eq!(float_from_key(float_key(value)).to_bits(), value.to_bits());
        }
        assert_eq!(float_key(-0.0), float_key(0.0));
        assert_eq!(float_key(f64::NAN), float_key(-f64::NAN));
        assert!(float_from_key(float_key(-f64::NAN)).is_nan());
    }
}
