//! The FHIR store interface.
//!
//! A backend (SQLite now, PostgreSQL later) implements [`Store`]. Writes arrive as a [`Batch`]
//! of [`Operation`]s applied in **one transaction**: resources, their search-index rows and the
//! adapter checkpoints that cover them commit together or not at all, so a crash never leaves a
//! half-written record or a checkpoint ahead of its data.
//!
//! Versioning rules every backend follows (the [`conformance`] suite checks them):
//! - a resource id is `(type, id)`; its first write is version 1;
//! - a write whose content hash equals the current version's is a no-op (idempotent re-ingest);
//! - any other write, or a write to a deleted resource, creates version n+1 and keeps version n
//!   in history;
//! - a delete creates a version marked deleted, with no content, and keeps history;
//! - [`Operation::ReplaceSource`] makes a list the complete current set of one source record:
//!   resources it held before and no longer lists are deleted.
//!
//! `meta.versionId` and `meta.lastUpdated` are not part of the stored content: the store owns
//! them and [`StoredResource::to_json`] adds them when a resource is read.

pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod conformance_access;
#[cfg(feature = "conformance")]
pub mod conformance_queues;
pub mod contributions;
pub mod governance;
pub mod messages;
pub mod operator;
pub mod outbox;
pub mod paging;
pub mod projection;

pub use governance::{Access, Governance};
pub use messages::{InboundMessage, MessageLog, MessageState};
pub use outbox::{
    Claim, DeliveryState, DeliveryUpdate, HeldForLife, HeldName, NodeHold, OutboundMessage, Outbox,
};
pub use paging::{NewSnapshot, Paging, SnapshotPage};
#[cfg(feature = "conformance")]
pub mod conformance_search;
#[cfg(feature = "conformance")]
pub mod conformance_standing;
#[cfg(feature = "conformance")]
pub mod conformance_text;

use std::collections::BTreeMap;

/// The SHA-256 of the stored bytes a Binary names (its [`tsunagi_fhir::systems::STORED_BYTES`]
/// tag), `None` when it names none (its bytes, if any, are its `data`).
pub fn stored_bytes_of(resource: &Value) -> Option<[u8; 32]> {
    let hex = resource["meta"]["tag"]
        .as_array()?
        .iter()
        .find(|tag| tag["system"] == tsunagi_fhir::systems::STORED_BYTES)?["code"]
        .as_str()?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// The largest part a content is stored in ([`Store::blob_part`]): a read of a document holds
/// one part, not the document.
pub const BLOB_PART_BYTES: usize = 1 << 20;

use serde_json::Value;
use tsunagi_core::{hash::content_hash, time::format_instant_jst};
use tsunagi_fhir::search::{IndexEntry, compartment_patient, extract};

/// A resource ready to be written: serialized content, its hash and its index rows, computed
/// together so they cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceWrite {
    /// FHIR resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// `Type/id`.
    pub tid: String,
    /// Serialized JSON.
    pub content: Vec<u8>,
    /// `tsunagi_core::hash::content_hash` of `content`.
    pub hash: u64,
    /// Search-index rows.
    pub index: Vec<IndexEntry>,
    /// Logical id of the patient whose record this resource belongs to
    /// ([`tsunagi_fhir::search::compartment_patient`]).
    pub compartment: Option<String>,
}

impl ResourceWrite {
    /// Serializes, hashes and indexes a resource. A `meta.versionId` or `meta.lastUpdated` the
    /// resource arrives with is dropped: the store owns both.
    pub fn from_json(resource_type: &str, id: &str, resource: &Value) -> Result<Self, StoreError> {
        let owned_meta =
            |meta: &Value| meta.get("versionId").is_some() || meta.get("lastUpdated").is_some();
        let stripped;
        let resource = match resource.get("meta") {
            Some(meta) if owned_meta(meta) => {
                let mut copy = resource.clone();
                if let Some(Value::Object(meta)) = copy.get_mut("meta") {
                    meta.remove("versionId");
                    meta.remove("lastUpdated");
                    if meta.is_empty()
                        && let Value::Object(top) = &mut copy
                    {
                        top.remove("meta");
                    }
                }
                stripped = copy;
                &stripped
            }
            _ => resource,
        };
        let mut content = Vec::with_capacity(2048);
        tsunagi_fhir::json::write_resource(resource, &mut content)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        let index = extract(resource_type, resource);
        Ok(Self {
            compartment: compartment_patient(resource_type, resource),
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            tid: format!("{resource_type}/{id}"),
            hash: content_hash(&content),
            index,
            content,
        })
    }

    /// `Type/id`.
    pub fn type_and_id(&self) -> String {
        self.tid.clone()
    }
}

/// One step of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Makes `resources` the complete current set of the source record `source_key`.
    ReplaceSource {
        /// Identifies the source record (e.g. facility + SS-MIX2 record key).
        source_key: String,
        /// The facility whose record this is: it holds (discloses) the patient compartments the
        /// resources fall in.
        facility: String,
        /// Everything the record holds now.
        resources: Vec<ResourceWrite>,
    },
    /// Fails the batch, whole, with [`StoreError::Conflict`] when `tid` (`Type/id`) is current
    /// (stored and not deleted): a create that must happen once. The check runs inside the
    /// batch's own transaction, under the writer lock, so a retried POST racing its first
    /// attempt cannot write twice.
    RequireNew {
        /// `Type/id` of the resource that must not exist yet.
        tid: String,
    },
    /// Deletes every current resource of `source_key` (history is kept).
    DeleteSource {
        /// The source record.
        source_key: String,
    },
    /// Logs an inbound message with what was done with it ([`messages`]); a second message
    /// under the same sender and control id (other than a conflict) fails the batch.
    LogMessage(Box<InboundMessage>),
    /// Changes a logged message's state and reason (the operator's retry or drop).
    SetMessageState {
        /// The message.
        seq: i64,
        /// Its new state.
        state: MessageState,
        /// Why (empty when applied).
        reason: String,
    },
    /// Queues a delivery ([`outbox`]) with the resource it carries.
    Enqueue(Box<OutboundMessage>),
    /// Records an attempt's outcome, or the operator's retry or drop, on a queued delivery.
    SetDelivery(Box<DeliveryUpdate>),
    /// Stores the bytes of a document under their SHA-256, unless the same content is already
    /// stored (the Binary resource naming them is written in the same batch), in parts of at
    /// most [`BLOB_PART_BYTES`].
    PutBlob {
        /// SHA-256 of `bytes`.
        sha256: [u8; 32],
        /// The bytes, exactly as the source wrote them.
        bytes: Vec<u8>,
    },
    /// Appends a record to the audit trail with the batch (an operator's act on the quarantine
    /// or the outbox, committed with what it did).
    Audit(Box<governance::AuditRecord>),
    /// Stores an opaque checkpoint value.
    PutCheckpoint {
        /// Namespace, e.g. `ssmix2:<facility>`.
        scope: String,
        /// Key within the namespace.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
}

/// Operations applied atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// In application order.
    pub operations: Vec<Operation>,
}

impl Batch {
    /// Number of resources written by the batch.
    pub fn resource_count(&self) -> usize {
        self.operations
            .iter()
            .map(|operation| match operation {
                Operation::ReplaceSource { resources, .. } => resources.len(),
                _ => 0,
            })
            .sum()
    }
}

/// What a batch changed, per resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// New resources.
    pub created: BTreeMap<String, u64>,
    /// New versions of existing (or previously deleted) resources.
    pub updated: BTreeMap<String, u64>,
    /// Writes identical to the current version.
    pub unchanged: BTreeMap<String, u64>,
    /// Deletions.
    pub deleted: BTreeMap<String, u64>,
}

impl ApplyStats {
    /// Adds another batch's counts.
    pub fn merge(&mut self, other: &ApplyStats) {
        for (mine, theirs) in [
            (&mut self.created, &other.created),
            (&mut self.updated, &other.updated),
            (&mut self.unchanged, &other.unchanged),
            (&mut self.deleted, &other.deleted),
        ] {
            for (resource_type, count) in theirs {
                *mine.entry(resource_type.clone()).or_default() += count;
            }
        }
    }

    /// Resources created or updated (the versions written).
    pub fn written(&self) -> u64 {
        self.created.values().sum::<u64>() + self.updated.values().sum::<u64>()
    }
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// FHIR resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version, from 1.
    pub version: i64,
    /// When this version was written, in microseconds since the epoch.
    pub last_updated: i64,
    /// True for a deletion marker (no content).
    pub deleted: bool,
    /// Serialized JSON without versionId/lastUpdated; `None` when deleted.
    pub content: Option<Vec<u8>>,
    /// The Patient logical id of the compartment the resource is in (audited per patient).
    pub patient: Option<String>,
}

impl StoredResource {
    /// The resource serialized with `meta.versionId` and `meta.lastUpdated` filled in
    /// (`resourceType`, `id`, `meta` first); `None` when deleted.
    pub fn to_json_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(value) = self.to_json()? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(self.content.as_ref().map_or(0, Vec::len) + 96);
        tsunagi_fhir::json::write_resource(&value, &mut out)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        Ok(Some(out))
    }

    /// Appends the resource as JSON with `meta.versionId` and `meta.lastUpdated` filled in;
    /// `false` (nothing written) when deleted. Content written by
    /// [`tsunagi_fhir::json::write_resource`] starts `{"resourceType":…,"id":…` with `meta` next,
    /// so the two elements are spliced in without parsing; other content is re-serialized.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<bool, StoreError> {
        let Some(content) = &self.content else {
            return Ok(false);
        };
        let head = format!(
            "{{\"resourceType\":\"{}\",\"id\":\"{}\"",
            self.resource_type, self.id
        );
        let safe_id = self
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let Some(rest) = content.strip_prefix(head.as_bytes()).filter(|_| safe_id) else {
            if let Some(bytes) = self.to_json_bytes()? {
                out.extend_from_slice(&bytes);
            }
            return Ok(true);
        };
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b",\"meta\":{\"versionId\":\"");
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.extend_from_slice(b"\",\"lastUpdated\":\"");
        out.extend_from_slice(format_instant_jst(self.last_updated).as_bytes());
        out.push(b'"');
        const META: &[u8] = b",\"meta\":{";
        if let Some(meta) = rest.strip_prefix(META) {
            if !meta.starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(meta);
        } else {
            out.push(b'}');
            out.extend_from_slice(rest);
        }
        Ok(true)
    }

    /// The resource with `meta.versionId` and `meta.lastUpdated` filled in; `None` when deleted.
    pub fn to_json(&self) -> Result<Option<Value>, StoreError> {
        let Some(content) = &self.content else {
            return Ok(None);
        };
        let mut value: Value = serde_json::from_slice(content)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let Value::Object(map) = &mut value else {
            return Err(StoreError::Corrupt(format!(
                "{}/{} is not a JSON object",
                self.resource_type, self.id
            )));
        };
        let meta = map
            .entry("meta")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(meta) = meta {
            let mut rebuilt = serde_json::Map::new();
            rebuilt.insert(
                "versionId".to_owned(),
                Value::String(self.version.to_string()),
            );
            rebuilt.insert(
                "lastUpdated".to_owned(),
                Value::String(format_instant_jst(self.last_updated)),
            );
            for (key, value) in std::mem::take(meta) {
                if key != "versionId" && key != "lastUpdated" {
                    rebuilt.insert(key, value);
                }
            }
            *meta = rebuilt;
        }
        Ok(Some(value))
    }
}

/// What a store needs to find matches of one search: the typed query (see
/// [`tsunagi_fhir::query`]). Re-exported so backends and the server name one type.
pub use tsunagi_fhir::query::SearchQuery;

/// A store's key for one resource: stable for the resource's life (all its versions), so that a
/// list of keys is a snapshot of a result set that later pages are cut from.
pub type Key = i64;

/// An entry of a history listing.
pub type HistoryEntry = StoredResource;

/// A position in a type- or system-level history listing, which is ordered by `last_updated`
/// descending, then type and id ascending, then version descending. History only grows at its
/// newest end, so a page that starts after a cursor never repeats or skips a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    /// Microseconds since the epoch.
    pub last_updated: i64,
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version number.
    pub version: i64,
}

impl HistoryCursor {
    /// The cursor just after `entry`.
    pub fn after(entry: &HistoryEntry) -> Self {
        Self {
            last_updated: entry.last_updated,
            resource_type: entry.resource_type.clone(),
            id: entry.id.clone(),
            version: entry.version,
        }
    }

    /// The cursor as one URL-safe token: `micros.version.Type.id` (ids may hold dots, so the id
    /// comes last).
    pub fn token(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.last_updated, self.version, self.resource_type, self.id
        )
    }

    /// Reads [`HistoryCursor::token`]'s form.
    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.splitn(4, '.');
        let last_updated = parts.next()?.parse().ok()?;
        let version = parts.next()?.parse().ok()?;
        let resource_type = parts.next()?.to_owned();
        let id = parts.next()?.to_owned();
        let type_ok = (1..=64).contains(&resource_type.len())
            && resource_type.bytes().all(|b| b.is_ascii_alphanumeric());
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (type_ok && id_ok).then_some(Self {
            last_updated,
            resource_type,
            id,
            version,
        })
    }
}

/// What the database (or the store's own reading of it) reported: a message, and the driver's
/// error it came from, kept as the source so callers can walk the chain without parsing text.
#[derive(Debug, Clone)]
pub struct DatabaseError {
    message: String,
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl DatabaseError {
    /// The driver's `error`, with its text as the message.
    pub fn caused_by(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: error.to_string(),
            cause: Some(std::sync::Arc::new(error)),
        }
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for DatabaseError {
    fn from(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Self {
            message: error.to_string(),
            cause: Some(std::sync::Arc::from(error)),
        }
    }
}

impl std::fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

impl StoreError {
    /// A database failure the store itself found (a row missing, a value it cannot read).
    pub fn database(message: impl Into<String>) -> Self {
        Self::Database(DatabaseError {
            message: message.into(),
            cause: None,
        })
    }
}

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not usable.
    #[error("database url: {0}")]
    Url(String),
    /// The backend exists in the URL grammar but not yet in this build.
    #[error("{0}")]
    Unsupported(String),
    /// The database said no (its own error is the source, when there is one).
    #[error("database error: {0}")]
    Database(#[source] DatabaseError),
    /// Input that cannot be stored.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A write lost a race for a unique key (another writer stored the same key first).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A node recorded work under a claim (an outbox lease) that another node has taken over
    /// since: nothing of its batch was written.
    #[error("claim lost: {0}")]
    ClaimLost(String),
    /// What an operation names does not exist (an outbound message, a logged message).
    #[error("not found: {0}")]
    NotFound(String),
    /// No connection to the database could be had (the pool's timeout passed, the pool is
    /// closed): nothing was done, and the same request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Counts of current (not deleted) resources.
pub type Counts = BTreeMap<String, u64>;

/// Receives resources one by one from [`Store::for_each_current`].
pub type Visitor<'a> = dyn FnMut(StoredResource) -> Result<(), StoreError> + Send + 'a;

/// The FHIR store.
///
/// Every read of clinical data takes an [`Access`]. Under [`Access::Facility`] a resource in a
/// compartment the facility may not see is **absent**: not returned, not counted, not matched by
/// a chain, not included, not in history; the filter runs inside the backend's query, so totals
/// and pages are computed on permitted data only. Resources outside every compartment (the
/// directory) are visible to every facility.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Applies a batch atomically.
    async fn apply(&self, batch: Batch) -> Result<ApplyStats, StoreError>;

    /// The current version of a resource (possibly a deletion marker).
    async fn read(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// A specific version.
    async fn vread(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// Every version, newest first.
    async fn history(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<StoredResource>, StoreError>;

    /// A checkpoint value.
    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The size in bytes of the content stored under `sha256` ([`Operation::PutBlob`]), `None`
    /// when none is. No access rule applies to blobs: callers reach bytes only through a Binary
    /// the caller may read, which names them.
    async fn blob_size(&self, sha256: &[u8; 32]) -> Result<Option<u64>, StoreError>;

    /// The stored part of the content under `sha256` that holds byte `at`, as (the offset of
    /// its first byte, its bytes); parts are at most [`BLOB_PART_BYTES`] long and follow each
    /// other without gaps, so a reader streams a content (or a range of it) part by part and
    /// never holds more than one. `None` when no part holds `at`.
    async fn blob_part(
        &self,
        sha256: &[u8; 32],
        at: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// The whole content stored under `sha256`, assembled from its parts (for callers that
    /// need it whole: a Binary's base64 `data`).
    async fn blob(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(size) = self.blob_size(sha256).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while (bytes.len() as u64) < size {
            let at = bytes.len() as u64;
            match self.blob_part(sha256, at).await? {
                Some((first, part)) if first <= at && first + part.len() as u64 > at => {
                    let skip = usize::try_from(at - first).unwrap_or(0);
                    bytes.extend_from_slice(part.get(skip..).unwrap_or_default());
                }
                _ => return Err(StoreError::Corrupt(format!("blob part at {at} is missing"))),
            }
        }
        Ok(Some(bytes))
    }

    /// Every checkpoint of a scope, ordered by key.
    async fn checkpoints(&self, scope: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Every checkpoint of any of `scopes`, as (scope, key, value), ordered by scope then key:
    /// one round trip for many scopes (a batch's contributions). The default asks scope by scope.
    async fn checkpoints_in(
        &self,
        scopes: &[String],
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        let mut sorted: Vec<&String> = scopes.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut all = Vec::new();
        for scope in sorted {
            for (key, value) in self.checkpoints(scope).await? {
                all.push((scope.clone(), key, value));
            }
        }
        Ok(all)
    }

    /// Calls `visit` for every current resource, ordered by type then id.
    async fn for_each_current(&self, visit: &mut Visitor<'_>) -> Result<u64, StoreError>;

    /// Counts current resources by type.
    async fn count_current(&self) -> Result<Counts, StoreError>;

    /// Ids of current resources of `resource_type` with a token index row for `param`
    /// (`system` `None` matches any system). The minimal search the pipeline needs to prove its
    /// index; the full FHIR search builds on the same rows.
    async fn find_by_token(
        &self,
        resource_type: &str,
        param: &str,
        system: Option<&str>,
        code: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Ids of current resources whose reference parameter `param` points at `target`
    /// (`Type/id`).
    async fn find_by_reference(
        &self,
        resource_type: &str,
        param: &str,
        target: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// The keys of every current resource matching `query`, in the query's sort order (ties and
    /// unsorted queries in storage order). `query.count` and paging are the caller's business.
    async fn search(&self, access: &Access, query: &SearchQuery) -> Result<Vec<Key>, StoreError>;

    /// The number of matches of `query` (for `_summary=count`).
    async fn count(&self, access: &Access, query: &SearchQuery) -> Result<u64, StoreError> {
        Ok(self.search(access, query).await?.len() as u64)
    }

    /// The current versions of `keys`, in the order given; deleted or unknown keys are skipped.
    async fn fetch(&self, access: &Access, keys: &[Key])
    -> Result<Vec<StoredResource>, StoreError>;

    /// Keys of the current, non-deleted resources `Type/id` among `references`.
    async fn keys_of(
        &self,
        access: &Access,
        references: &[(String, String)],
    ) -> Result<Vec<Key>, StoreError>;

    /// Keys of current resources whose reference parameter `param` (a registry id) points at
    /// one of `targets` (`Type`, `id`), in storage order, at most `limit`.
    async fn referencing(
        &self,
        access: &Access,
        param: u16,
        targets: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<Key>, StoreError>;

    /// Keys of the current resources in the compartment of Patient `patient` and of the records
    /// linked with it (when `patient` itself is visible to `access`; the Patients first),
    /// optionally only those of `types` and changed at or after `since`
    /// (microseconds), in storage order.
    async fn compartment(
        &self,
        access: &Access,
        patient: &str,
        types: &[String],
        since: Option<i64>,
    ) -> Result<Vec<Key>, StoreError>;

    /// Versions (current and earlier, deletions included) of every resource, or of one type,
    /// changed at or after `since` (microseconds), at most `limit`, in [`HistoryCursor`] order
    /// (newest first), starting after `after`.
    async fn history_all(
        &self,
        access: &Access,
        resource_type: Option<&str>,
        since: Option<i64>,
        after: Option<&HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// What a pushed feed writes to: the FHIR store and the message log of what senders pushed.
pub trait FeedStore: Store + MessageLog {}
impl<T: Store + MessageLog + ?Sized> FeedStore for T {}

/// A complete backend: the FHIR store and the network's records in one database, as the CLI
/// opens it from a URL (`sqlite://…`, `postgres://…`).
#[async_trait::async_trait]
pub trait Backend: FeedStore + Governance + Outbox {
    /// Readies the backend to serve the API: called once before the server starts (the SQLite
    /// store begins journaling audit records here). Nothing by default.
    async fn start_serving(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_database_error_keeps_the_drivers_error_as_its_source() {
        use std::error::Error;
        let cause = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection reset");
        let error = StoreError::Database(DatabaseError::caused_by(cause));
        assert_eq!(error.to_string(), "database error: connection reset");
        let source = error.source().and_then(Error::source).unwrap();
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        let found = StoreError::database("the statement returned no row");
        assert!(found.source().unwrap().source().is_none());
    }

    #[test]
    fn the_store_owns_version_and_last_updated() {
        let arriving = serde_json::json!({
            "resourceType": "Patient", "id": "p",
            "meta": {"versionId": "7", "lastUpdated": "2020-01-01T00:00:00Z", "profile": ["x"]}
        });
        let write = ResourceWrite::from_json("Patient", "p", &arriving).unwrap();
        let content: Value = serde_json::from_slice(&write.content).unwrap();
        assert_eq!(content["meta"], serde_json::json!({"profile": ["x"]}));
        let only_owned =
            serde_json::json!({"resourceType": "Patient", "id": "p", "meta": {"versionId": "7"}});
        let write = ResourceWrite::from_json("Patient", "p", &only_owned).unwrap();
        let content: Value = serde_json::from_slice(&write.content).unwrap();
        assert!(content.get("meta").is_none(), "{content}");
    }
}
