//! The adapter extension point: [`PullAdapter`] for a source the gateway reads on a schedule
//! (SS-MIX2 storage), [`listen::ListenAdapter`] for a source whose senders push (HL7 v2 over MLLP
//! or HTTP), and [`outbound::Destination`] for a facility the gateway delivers to (over MLLP,
//! into a folder), with the outbox's [`delivery::Deliverer`] that drives destinations; and
//! [`storage`], what the pull sources of SS-MIX2 storage trees share.
//!
//! An adapter acquires raw input from one source system (an SS-MIX2 share, an MLLP feed, a
//! vendor export), maps it, and writes through the store in batches that carry its checkpoint,
//! so a re-run resumes exactly where the last committed batch ended. Adapters never see a
//! concrete store, the HTTP layer or another adapter. The list of adapters lives in one place:
//! `crates/cli/src/registry.rs`.

pub mod delivery;
pub mod listen;
pub mod outbound;
pub mod storage;

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;
use tsunagi_core::clock::Clock;
use tsunagi_store::{ApplyStats, Store, StoreError};

/// Reports progress while a pull runs (a terminal progress bar, a log line…).
pub trait Progress: Send + Sync {
    /// Some more files were looked at.
    fn advance(&self, files_seen: u64, resources_written: u64);
}

/// Ignores progress.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _files_seen: u64, _resources_written: u64) {}
}

/// What an adapter may use.
#[derive(Clone)]
pub struct AdapterContext {
    /// Where resources and checkpoints go.
    pub store: Arc<dyn Store>,
    /// The clock (fixed in tests).
    pub clock: Arc<dyn Clock>,
    /// Progress reporting.
    pub progress: Arc<dyn Progress>,
}

/// One input the adapter refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The file or message (a path for file adapters).
    pub source: String,
    /// The reason, naming segment, field and line where possible.
    pub reason: String,
}

/// Warnings of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarningKind {
    /// The warning with its varying values (quoted text, line numbers) replaced by `…`.
    pub kind: String,
    /// How often it was found.
    pub count: u64,
    /// The first files (or messages) it was found in.
    pub first: Vec<String>,
}

/// How many verbatim warnings a report keeps (all are counted, by kind).
pub const KEPT_WARNINGS: usize = 50;

/// How many files a warning kind names.
pub const KEPT_SOURCES: usize = 3;

/// How many kinds a report tells apart; warnings of further kinds are counted under one last
/// kind, so a source that words every warning differently cannot grow the report without bound.
pub const KEPT_KINDS: usize = 100;

/// The kind further kinds are counted under once [`KEPT_KINDS`] are known.
pub const OTHER_KINDS: &str = "(warnings of further kinds)";

/// This node's name among the nodes on one database: `TSUNAGI_NODE` if set, else the host name.
/// It names who holds an outbox claim or a scheduled pull, and a node starting again takes back
/// the claims held under its name, so each node needs its own (a Kubernetes pod's host name is
/// its own; two nodes on one host set `TSUNAGI_NODE`).
pub fn node_name() -> String {
    if let Ok(name) = std::env::var("TSUNAGI_NODE")
        && !name.trim().is_empty()
    {
        return name.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        "node".to_owned()
    } else {
        host
    }
}

/// The kind of a warning: quoted values and line numbers replaced by `…`, so that the same
/// deviation in many files is one kind.
pub fn warning_kind(text: &str) -> String {
    let mut kind = String::with_capacity(text.len());
    let mut quoted = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            if !quoted {
                kind.push('…');
            }
            quoted = !quoted;
            rest = &rest[1..];
            continue;
        }
        if quoted {
            // Inside quotes, an escaped quote does not end the value.
            let skip = if rest.starts_with("\\\"") {
                2
            } else {
                c.len_utf8()
            };
            rest = &rest[skip..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("line ")
            && after.starts_with(|d: char| d.is_ascii_digit())
        {
            kind.push_str("line …");
            rest = after.trim_start_matches(|d: char| d.is_ascii_digit());
            continue;
        }
        kind.push(c);
        rest = &rest[c.len_utf8()..];
    }
    kind
}

/// The outcome of one pull.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PullReport {
    /// Adapter kind, e.g. `ssmix2`.
    pub adapter: String,
    /// Facility code.
    pub facility: String,
    /// Files (or messages) found.
    pub files_seen: u64,
    /// Files read and parsed in this run.
    pub files_read: u64,
    /// Files skipped because the checkpoint says they were already ingested.
    pub files_skipped_unchanged: u64,
    /// Refused inputs.
    pub rejected: Vec<Rejection>,
    /// HL7 messages mapped.
    pub messages: u64,
    /// Records deleted by the source (condition flag 0).
    pub records_deleted: u64,
    /// Tolerated deviations (see `warnings`).
    pub warning_count: u64,
    /// The first warnings verbatim (`file: text`), for the operator.
    pub warnings: Vec<String>,
    /// Every warning counted once per kind (its text without the values that differ from file
    /// to file), with the first files it was found in, in order of first appearance.
    pub warning_kinds: Vec<WarningKind>,
    /// Resources created per type.
    pub created: BTreeMap<String, u64>,
    /// Resources updated (new version) per type.
    pub updated: BTreeMap<String, u64>,
    /// Resources written identical to their current version, per type.
    pub unchanged: BTreeMap<String, u64>,
    /// Resources deleted per type.
    pub deleted: BTreeMap<String, u64>,
}

impl PullReport {
    /// Counts a warning found in `source`: verbatim among the first, and under its kind.
    pub fn warn(&mut self, source: &str, text: &str) {
        self.warning_count += 1;
        if self.warnings.len() < KEPT_WARNINGS {
            self.warnings.push(format!("{source}: {text}"));
        }
        let mut kind = warning_kind(text);
        if self.warning_kinds.len() >= KEPT_KINDS
            && !self.warning_kinds.iter().any(|known| known.kind == kind)
        {
            kind = OTHER_KINDS.to_owned();
        }
        match self
            .warning_kinds
            .iter_mut()
            .find(|known| known.kind == kind)
        {
            Some(known) => {
                known.count += 1;
                if known.first.len() < KEPT_SOURCES {
                    known.first.push(source.to_owned());
                }
            }
            None => self.warning_kinds.push(WarningKind {
                kind,
                count: 1,
                first: vec![source.to_owned()],
            }),
        }
    }

    /// Folds a store batch's statistics into the report.
    pub fn add_stats(&mut self, stats: &ApplyStats) {
        for (mine, theirs) in [
            (&mut self.created, &stats.created),
            (&mut self.updated, &stats.updated),
            (&mut self.unchanged, &stats.unchanged),
            (&mut self.deleted, &stats.deleted),
        ] {
            for (resource_type, count) in theirs {
                *mine.entry(resource_type.clone()).or_default() += count;
            }
        }
    }

    /// Resources created or updated.
    pub fn resources_written(&self) -> u64 {
        self.created.values().sum::<u64>() + self.updated.values().sum::<u64>()
    }
}

/// A pull that could not run at all (as opposed to single inputs being rejected), or a pushed
/// message a listen source could not commit (the sender resends).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The store failed; committed batches (and their checkpoints) stay.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source could not be read (missing root, permissions…).
    #[error("{0}")]
    Source(String),
    /// The adapter's configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A listen source's intake has stopped taking messages.
    #[error("the intake has stopped")]
    Stopped,
}

/// Static description of an adapter instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    /// Kind, e.g. `ssmix2`.
    pub kind: &'static str,
    /// The facility it serves.
    pub facility: String,
}

/// A source adapter that pulls on demand (from the CLI or a cron schedule).
#[async_trait::async_trait]
pub trait PullAdapter: Send + Sync {
    /// What this instance is.
    fn describe(&self) -> AdapterInfo;

    /// One pass over the source: read what is new since the checkpoint, write it, advance the
    /// checkpoint in the same transactions.
    async fn pull(&self, context: &AdapterContext) -> Result<PullReport, AdapterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_of_one_kind_differ_only_in_their_values() {
        assert_eq!(
            warning_kind(
                r#"PID-3 "10001" differs from the folder's patient id "00010001"; the folder id is used"#
            ),
            "PID-3 … differs from the folder's patient id …; the folder id is used"
        );
        assert_eq!(
            warning_kind("RXE-2 (line 12) has no drug code"),
            "RXE-2 (line …) has no drug code"
        );
        assert_eq!(
            warning_kind(r#"PID-7: "a \"quoted\" value" is not a date"#),
            "PID-7: … is not a date"
        );
        let mut report = PullReport::default();
        for file in ["a", "b", "c", "d"] {
            report.warn(file, &format!("PID-3 \"{file}\" differs"));
        }
        report.warn("e", "no SPM segment");
        assert_eq!(report.warning_count, 5);
        assert_eq!(report.warning_kinds.len(), 2);
        assert_eq!(report.warning_kinds[0].count, 4);
        assert_eq!(report.warning_kinds[0].first, ["a", "b", "c"]);
        assert_eq!(report.warnings[0], "a: PID-3 \"a\" differs");
        // Kinds are bounded: the rest are counted together.
        let mut flood = PullReport::default();
        for n in 0..(KEPT_KINDS + 50) {
            flood.warn("f", &format!("kind {n} of its own"));
        }
        assert_eq!(flood.warning_kinds.len(), KEPT_KINDS + 1);
        let other = flood.warning_kinds.last().unwrap();
        assert_eq!((other.kind.as_str(), other.count), (OTHER_KINDS, 50));
    }
}
