//! Process-wide counters and histograms for `/metrics` (the Prometheus text format): what a node
//! does besides answering HTTP — the HL7 v2 intake, outbound delivery — is counted here, and the
//! server renders it beside its own. Every family is declared below (so `/metrics` names it
//! before its first event); label values come from small closed sets. Memory only, no IO.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex};

/// Upper bounds (seconds) of every histogram's buckets: from a commit's millisecond to a full
/// pull of a hospital's storage (up to an hour; longer ones count only in `+Inf`).
pub const BUCKETS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 120.0,
    300.0, 900.0, 1800.0, 3600.0,
];

/// Whether a family counts or times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A histogram of seconds over [`BUCKETS`].
    Histogram,
    /// A value set now and then.
    Gauge,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// Its name.
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Counter or histogram.
    pub kind: Kind,
    /// Whether every series carries labels (then no unlabeled series is shown before the
    /// first event).
    pub labeled: bool,
}

/// HL7 v2 messages answered by the intake, by outcome (`accepted`, `error`, `rejected`) and
/// whether it was a resend (`duplicate`).
pub static HL7V2_MESSAGES: Family = Family {
    name: "tsunagi_hl7v2_messages_total",
    help: "HL7 v2 messages answered, by outcome (accepted AA/CA, error AE/CE, rejected AR/CR) and resend.",
    kind: Kind::Counter,
    labeled: true,
};
/// Time to commit a group of HL7 v2 messages (before their ACKs are sent).
pub static HL7V2_COMMIT: Family = Family {
    name: "tsunagi_hl7v2_commit_seconds",
    help: "Time to commit a group of HL7 v2 messages, before their ACKs are sent.",
    kind: Kind::Histogram,
    labeled: false,
};
/// Delivery attempts of the outbox, by result (`delivered`, `retry`, `dead`, `lost`).
pub static OUTBOX_ATTEMPTS: Family = Family {
    name: "tsunagi_outbox_attempts_total",
    help: "Outbound delivery attempts, by result (delivered, retry, dead; lost: taken over by another node).",
    kind: Kind::Counter,
    labeled: true,
};
/// Time of one delivery attempt (connect, send, ACK).
pub static OUTBOX_ATTEMPT: Family = Family {
    name: "tsunagi_outbox_attempt_seconds",
    help: "Time of one outbound delivery attempt (connect, send, ACK read).",
    kind: Kind::Histogram,
    labeled: false,
};

/// Audit records moved from the journal into the database (the embedded store).
pub static AUDIT_IMPORTED: Family = Family {
    name: "tsunagi_audit_journal_imported_total",
    help: "Audit records imported from the journal into the database (embedded store).",
    kind: Kind::Counter,
    labeled: false,
};
/// When the audit journal was last imported completely (Unix seconds): the import lag is the
/// time since.
pub static AUDIT_IMPORTED_AT: Family = Family {
    name: "tsunagi_audit_journal_imported_timestamp_seconds",
    help: "When the audit journal was last imported completely (Unix time; the lag is time() minus this).",
    kind: Kind::Gauge,
    labeled: false,
};

/// Scheduled pulls (`tsunagi run`), by source (`kind:facility`) and result (`ok`, `failed`).
pub static PULLS: Family = Family {
    name: "tsunagi_pulls_total",
    help: "Scheduled pulls run by this process, by source (kind:facility) and result (ok, failed).",
    kind: Kind::Counter,
    labeled: true,
};
/// Time of one scheduled pull, by source.
pub static PULL_SECONDS: Family = Family {
    name: "tsunagi_pull_seconds",
    help: "Time of one scheduled pull, by source.",
    kind: Kind::Histogram,
    labeled: true,
};
/// Files (or messages) of scheduled pulls, by source and outcome (`read`, `skipped`: unchanged
/// since the last pull, `rejected`).
pub static PULL_FILES: Family = Family {
    name: "tsunagi_pull_files_total",
    help: "Files of scheduled pulls, by source and outcome (read, skipped unchanged, rejected).",
    kind: Kind::Counter,
    labeled: true,
};
/// Resources written by scheduled pulls, by source and change (`created`, `updated`,
/// `unchanged`, `deleted`).
pub static PULL_RESOURCES: Family = Family {
    name: "tsunagi_pull_resources_total",
    help: "Resources of scheduled pulls, by source and change (created, updated, unchanged, deleted).",
    kind: Kind::Counter,
    labeled: true,
};
/// When a source's last pull succeeded (Unix seconds): its ingest lag is the time since.
pub static PULL_SUCCEEDED_AT: Family = Family {
    name: "tsunagi_pull_last_success_timestamp_seconds",
    help: "When a source's last scheduled pull by this process succeeded (Unix time; the lag is time() minus this).",
    kind: Kind::Gauge,
    labeled: true,
};

/// Every family, in the order `/metrics` lists them.
pub static FAMILIES: [&Family; 11] = [
    &HL7V2_MESSAGES,
    &HL7V2_COMMIT,
    &OUTBOX_ATTEMPTS,
    &OUTBOX_ATTEMPT,
    &AUDIT_IMPORTED,
    &AUDIT_IMPORTED_AT,
    &PULLS,
    &PULL_SECONDS,
    &PULL_FILES,
    &PULL_RESOURCES,
    &PULL_SUCCEEDED_AT,
];

#[derive(Debug, Clone, Copy)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone, Copy)]
enum Series {
    Counter(u64),
    Histogram(Histogram),
    Gauge(f64),
}

/// (family name, label text) → series.
type Registry = BTreeMap<(&'static str, String), Series>;

static REGISTRY: Mutex<Registry> = Mutex::new(BTreeMap::new());

/// Labels in the text format: `name=\"value\"`, comma-separated, values escaped.
pub fn labels_text(labels: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (index, (name, value)) in labels.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(text, "{name}=\"{value}\"");
    }
    text
}

fn with_registry(change: impl FnOnce(&mut Registry)) {
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    change(&mut registry);
}

/// Adds `by` to a counter of `family` with `labels`.
pub fn count(family: &'static Family, labels: &[(&str, &str)], by: u64) {
    with_registry(|registry| {
        let series = registry
            .entry((family.name, labels_text(labels)))
            .or_insert(Series::Counter(0));
        if let Series::Counter(value) = series {
            *value = value.saturating_add(by);
        }
    });
}

/// Sets a gauge of `family` with `labels` to `value`.
pub fn set(family: &'static Family, labels: &[(&str, &str)], value: f64) {
    with_registry(|registry| {
        registry.insert((family.name, labels_text(labels)), Series::Gauge(value));
    });
}

/// Records `seconds` in a histogram of `family` with `labels`.
pub fn observe(family: &'static Family, labels: &[(&str, &str)], seconds: f64) {
    with_registry(|registry| {
        let series = registry
            .entry((family.name, labels_text(labels)))
            .or_insert(Series::Histogram(Histogram {
                buckets: [0; BUCKETS.len()],
                sum: 0.0,
                count: 0,
            }));
        if let Series::Histogram(histogram) = series {
            for (bucket, limit) in histogram.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= limit {
                    *bucket += 1;
                }
            }
            histogram.sum += seconds;
            histogram.count += 1;
        }
    });
}

/// Every family in the Prometheus text format.
pub fn render() -> String {
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // A histogram without labels is shown from the start, at zero (rates need a first sample).
    for family in FAMILIES {
        if family.kind == Kind::Histogram && !family.labeled {
            registry
                .entry((family.name, String::new()))
                .or_insert(Series::Histogram(Histogram {
                    buckets: [0; BUCKETS.len()],
                    sum: 0.0,
                    count: 0,
                }));
        }
    }
    let mut out = String::new();
    for family in FAMILIES {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for ((name, labels), series) in registry.range((family.name, String::new())..) {
            if *name != family.name {
                break;
            }
            match series {
                Series::Counter(value) if labels.is_empty() => {
                    let _ = writeln!(out, "{name} {value}");
                }
                Series::Counter(value) => {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
                Series::Gauge(value) if labels.is_empty() => {
                    let _ = writeln!(out, "{name} {value}");
                }
                Series::Gauge(value) => {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
                Series::Histogram(histogram) => {
                    let comma = if labels.is_empty() { "" } else { "," };
                    for (count, limit) in histogram.buckets.iter().zip(BUCKETS) {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{{labels}{comma}le=\"{limit}\"}} {count}"
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{comma}le=\"+Inf\"}} {}",
                        histogram.count
                    );
                    let braces = if labels.is_empty() {
                        String::new()
                    } else {
                        format!("{{{labels}}}")
                    };
                    let _ = writeln!(out, "{name}_sum{braces} {:.6}", histogram.sum);
                    let _ = writeln!(out, "{name}_count{braces} {}", histogram.count);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        count(
            &HL7V2_MESSAGES,
            &[("outcome", "accepted"), ("duplicate", "false")],
            2,
        );
        count(
            &HL7V2_MESSAGES,
            &[("outcome", "accepted"), ("duplicate", "false")],
            1,
        );
        observe(&HL7V2_COMMIT, &[], 0.003);
        observe(&HL7V2_COMMIT, &[], 2.0);
        let text = render();
        assert!(text.contains("# TYPE tsunagi_hl7v2_messages_total counter\n"));
        assert!(text.contains(
            "tsunagi_hl7v2_messages_total{outcome=\"accepted\",duplicate=\"false\"} 3\n"
        ));
        assert!(text.contains("tsunagi_hl7v2_commit_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("tsunagi_hl7v2_commit_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tsunagi_hl7v2_commit_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tsunagi_hl7v2_commit_seconds_count 2\n"));
        // Families without an event yet are still named; histograms show zeros.
        assert!(text.contains("# HELP tsunagi_outbox_attempts_total "));
        assert!(text.contains("tsunagi_outbox_attempt_seconds_count 0\n"));
        set(&AUDIT_IMPORTED_AT, &[], 1_700_000_000.5);
        assert!(
            render().contains("tsunagi_audit_journal_imported_timestamp_seconds 1700000000.5\n")
        );
        assert_eq!(labels_text(&[("a", "x\"y")]), "a=\"x\\\"y\"");
        // A pull of many minutes lands in a bucket of its own, not only in +Inf.
        observe(&PULL_SECONDS, &[("source", "ssmix2:0610100010")], 700.0);
        let text = render();
        let bucket = |le: &str| {
            format!("tsunagi_pull_seconds_bucket{{source=\"ssmix2:0610100010\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 0\n", bucket("300"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("900"))), "{text}");
    }
}
