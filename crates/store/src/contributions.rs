//! Resources several source records make together — an inpatient stay's one Encounter, from
//! the admission record, the transfer records and the discharge record.
//!
//! The invariant "a record's resources are replaced as a set" holds for everything a record
//! holds alone. What it shares, it declares as a *part* ([`declare`]): one checkpoint row per
//! (target, record) in scope `contribution:<Type>/<id>`, and one per (record, target) in scope
//! `contributor:<source key>` so that replacing or deleting the record finds what it had
//! contributed. Before a batch is applied, [`settle`] brings every target the batch touches up
//! to date **in the same batch**: the parts stored, overlaid with the parts the batch declares
//! and withdraws, folded by the caller's [`Fold`] into the resource, stored under source key
//! `fold:<Type>/<id>` (or deleted when no part is left). So a record deleted (flag 0) takes
//! back exactly its part, a newer version replaces exactly its part, and the folded resource
//! and the parts never disagree after a commit.
//!
//! `settle` reads the parts stored before the batch, so batches that touch the same target must
//! be settled and applied one after the other (each facility's pull and each feed has one
//! writer; two writers racing on one visit leave its fold one event behind until its next event).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::{Batch, Operation, ResourceWrite, Store, StoreError};

/// Scope prefix of the parts of one target (key: the contributing record's source key).
pub const PART_SCOPE: &str = "contribution:";
/// Scope prefix of the targets one record contributes to (key: `<Type>/<id>`).
pub const INDEX_SCOPE: &str = "contributor:";
/// Source-key prefix of folded resources.
pub const FOLD_SOURCE: &str = "fold:";

/// How parts become a resource.
pub trait Fold: Send + Sync {
    /// Whether records under `source_key` may contribute parts: only those are looked up when
    /// a batch replaces or deletes them (a cheap test on the key).
    fn may_contribute(&self, source_key: &str) -> bool;
    /// The resource `resource_type`/`id` made of `parts` (any order); `None` when nothing is
    /// left of it.
    fn fold(&self, resource_type: &str, id: &str, parts: &[Value]) -> Option<Value>;
}

/// One record's part of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The target's type.
    pub resource_type: String,
    /// The target's logical id.
    pub id: String,
    /// The facility whose record this is (it holds the folded resource).
    pub facility: String,
    /// The part itself.
    pub part: Value,
}

/// The operations declaring `parts` as everything `source_key` now contributes: push them after
/// the record's `ReplaceSource` (a `DeleteSource` declares nothing, withdrawing all).
pub fn declare(source_key: &str, parts: &[Part]) -> Vec<Operation> {
    parts
        .iter()
        .map(|part| Operation::PutCheckpoint {
            scope: format!("{PART_SCOPE}{}/{}", part.resource_type, part.id),
            key: source_key.to_owned(),
            value: json!({"facility": part.facility, "part": part.part})
                .to_string()
                .into_bytes(),
        })
        .collect()
}

/// What one record contributes after the batch, by target (`None`: withdrawn).
type Overlay = BTreeMap<String, BTreeMap<String, Option<Vec<u8>>>>;

/// Completes `batch` with the folded resources of every target its records' parts touch, and
/// with the bookkeeping rows (withdrawn parts, the per-record index). See the module docs.
///
/// A part that cannot be read (not JSON) is left out of its fold rather than failing the batch:
/// one damaged row must not stop a facility's intake.
pub async fn settle<S: Store + ?Sized>(
    store: &S,
    mut batch: Batch,
    fold: &dyn Fold,
) -> Result<Batch, StoreError> {
    // What each touched record contributes after the batch: its declarations after its last
    // replacement or deletion in the batch. `ever` keeps every target a record declared anywhere
    // in the batch, so that what an earlier version of it declared is withdrawn too.
    let mut declared: Overlay = BTreeMap::new();
    let mut ever: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for operation in &batch.operations {
        match operation {
            Operation::ReplaceSource { source_key, .. }
            | Operation::DeleteSource { source_key }
                if fold.may_contribute(source_key) =>
            {
                declared.insert(source_key.clone(), BTreeMap::new());
            }
            Operation::PutCheckpoint { scope, key, value } => {
                if let Some(target) = scope.strip_prefix(PART_SCOPE) {
                    ever.entry(key.clone())
                        .or_default()
                        .insert(target.to_owned());
                    declared.entry(key.clone()).or_default().insert(
                        target.to_owned(),
                        (!value.is_empty()).then(|| value.clone()),
                    );
                }
            }
            _ => {}
        }
    }
    if declared.is_empty() {
        return Ok(batch);
    }
    let mut targets: BTreeSet<String> = BTreeSet::new();
    let mut extra = Vec::new();
    // What every touched record had contributed, in one round trip.
    let index_scopes: Vec<String> = declared
        .keys()
        .map(|source| format!("{INDEX_SCOPE}{source}"))
        .collect();
    let mut stored_index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (scope, target, value) in store.checkpoints_in(&index_scopes).await? {
        if let Some(source) = scope.strip_prefix(INDEX_SCOPE)
            && !value.is_empty()
        {
            stored_index
                .entry(source.to_owned())
                .or_default()
                .insert(target);
        }
    }
    for (source, parts) in &mut declared {
        let indexed = stored_index.remove(source.as_str()).unwrap_or_default();
        let before: BTreeSet<String> = indexed
            .iter()
            .chain(ever.get(source).into_iter().flatten())
            .cloned()
            .collect();
        for target in &before {
            let withdrawn = !matches!(parts.get(target), Some(Some(_)));
            if withdrawn {
                // Contributed before (stored, or by an earlier version in this batch), not now:
                // its part row is emptied, after anything the batch wrote to it.
                parts.insert(target.clone(), None);
                extra.push(Operation::PutCheckpoint {
                    scope: format!("{PART_SCOPE}{target}"),
                    key: source.clone(),
                    value: Vec::new(),
                });
            }
        }
        for (target, part) in parts.iter() {
            if part.is_some() != indexed.contains(target) {
                extra.push(Operation::PutCheckpoint {
                    scope: format!("{INDEX_SCOPE}{source}"),
                    key: target.clone(),
                    value: if part.is_some() {
                        b"1".to_vec()
                    } else {
                        Vec::new()
                    },
                });
            }
            targets.insert(target.clone());
        }
    }
    // Every touched target's stored parts, in one round trip.
    let part_scopes: Vec<String> = targets
        .iter()
        .map(|target| format!("{PART_SCOPE}{target}"))
        .collect();
    let mut stored_parts: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (scope, source, value) in store.checkpoints_in(&part_scopes).await? {
        if let Some(target) = scope.strip_prefix(PART_SCOPE)
            && !value.is_empty()
        {
            stored_parts
                .entry(target.to_owned())
                .or_default()
                .insert(source, value);
        }
    }
    for target in targets {
        let Some((resource_type, id)) = target.split_once('/') else {
            continue;
        };
        let mut parts = stored_parts.remove(&target).unwrap_or_default();
        for (source, contributed) in &declared {
            match contributed.get(&target) {
                Some(Some(part)) => {
                    parts.insert(source.clone(), part.clone());
                }
                // Withdrawn, or a part row its record's index does not know (a touched record
                // contributes exactly what it declared): gone, and its row emptied.
                Some(None) => {
                    parts.remove(source);
                }
                None => {
                    if parts.remove(source).is_some() {
                        extra.push(Operation::PutCheckpoint {
                            scope: format!("{PART_SCOPE}{target}"),
                            key: source.clone(),
                            value: Vec::new(),
                        });
                    }
                }
            }
        }
        let mut facility = None;
        let mut values = Vec::with_capacity(parts.len());
        for bytes in parts.values() {
            let Ok(stored) = serde_json::from_slice::<Value>(bytes) else {
                continue;
            };
            if facility.is_none() {
                facility = stored["facility"].as_str().map(str::to_owned);
            }
            values.push(stored["part"].clone());
        }
        let source_key = format!("{FOLD_SOURCE}{target}");
        match fold.fold(resource_type, id, &values).zip(facility) {
            Some((resource, facility)) => {
                // A fold the store cannot take keeps what was folded before, rather than
                // failing every later batch of the facility.
                if let Ok(write) = ResourceWrite::from_json(resource_type, id, &resource) {
                    extra.push(Operation::ReplaceSource {
                        source_key,
                        facility,
                        resources: vec![write],
                    });
                }
            }
            None => extra.push(Operation::DeleteSource { source_key }),
        }
    }
    batch.operations.append(&mut extra);
    Ok(batch)
}
