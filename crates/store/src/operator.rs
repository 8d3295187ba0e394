//! The operator's acts (`tsunagi admin …`: the directory, links, consents, lab reporting,
//! revocations, the quarantine and the outbox) as facts of the audit trail: stored compact like
//! the facts of an access ([`crate::audit`]), rendered as an AuditEvent when the trail is read,
//! and committed in the same transaction as the act they record ([`crate::governance::Change`],
//! [`crate::Operation::Audit`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tsunagi_core::time::format_instant_jst;

use crate::{audit::record_id, governance::AuditRecord};

/// Marks an operator act's facts (the first key of their JSON object).
pub(crate) const ACT_VERSION: &str = "act-1";

/// What the operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Act {
    /// A facility registered or changed.
    FacilityAdd,
    /// A facility deactivated.
    FacilityDeactivate,
    /// The facilities a lab reports for, set.
    FacilityReportsFor,
    /// A user registered or changed.
    UserAdd,
    /// A user deactivated.
    UserDeactivate,
    /// A system client registered or changed.
    ClientAdd,
    /// A system client deactivated.
    ClientDeactivate,
    /// A token, a client's tokens or a user's tokens revoked.
    TokenRevoke,
    /// A consent recorded.
    ConsentAdd,
    /// A consent withdrawn.
    ConsentWithdraw,
    /// A facility's patient record linked under a regional id.
    Link,
    /// A patient record unlinked.
    Unlink,
    /// A quarantined message applied again, and applied.
    QuarantineRetry,
    /// A quarantined message applied again, and still quarantined.
    QuarantineRetryFailed,
    /// A quarantined or conflicting message dropped.
    QuarantineDrop,
    /// A delivery queued again.
    OutboxRetry,
    /// A delivery dropped.
    OutboxDrop,
}

impl Act {
    /// The AuditEvent subtype code (`urn:tsunagi:admin`).
    pub fn code(self) -> &'static str {
        match self {
            Self::FacilityAdd => "facility-add",
            Self::FacilityDeactivate => "facility-deactivate",
            Self::FacilityReportsFor => "facility-reports-for",
            Self::UserAdd => "user-add",
            Self::UserDeactivate => "user-deactivate",
            Self::ClientAdd => "client-add",
            Self::ClientDeactivate => "client-deactivate",
            Self::TokenRevoke => "token-revoke",
            Self::ConsentAdd => "consent-add",
            Self::ConsentWithdraw => "consent-withdraw",
            Self::Link => "link",
            Self::Unlink => "unlink",
            Self::QuarantineRetry => "quarantine-retry",
            Self::QuarantineRetryFailed => "quarantine-retry-failed",
            Self::QuarantineDrop => "quarantine-drop",
            Self::OutboxRetry => "outbox-retry",
            Self::OutboxDrop => "outbox-drop",
        }
    }

    /// The AuditEvent action: C, U or D.
    pub fn action(self) -> &'static str {
        match self {
            Self::FacilityDeactivate
            | Self::UserDeactivate
            | Self::ClientDeactivate
            | Self::TokenRevoke
            | Self::ConsentWithdraw
            | Self::Unlink
            | Self::QuarantineDrop
            | Self::OutboxDrop => "D",
            Self::QuarantineRetry | Self::QuarantineRetryFailed | Self::OutboxRetry => "U",
            Self::FacilityAdd
            | Self::FacilityReportsFor
            | Self::UserAdd
            | Self::ClientAdd
            | Self::ConsentAdd
            | Self::Link => "C",
        }
    }
}

/// The facts of one operator act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActFacts {
    /// Always [`ACT_VERSION`].
    #[serde(rename = "v")]
    pub version: String,
    /// What was done.
    #[serde(rename = "act")]
    pub act: Act,
    /// To what, in words (a consent id, `outbound … of … to …: reason`).
    #[serde(rename = "w")]
    pub what: String,
    /// The operator's login name on the machine, when known.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

impl ActFacts {
    /// The facts of `act` on `what`, by `operator`.
    pub fn new(act: Act, what: impl Into<String>, operator: Option<String>) -> Self {
        Self {
            version: ACT_VERSION.to_owned(),
            act,
            what: what.into(),
            operator,
        }
    }

    /// The audit record of the act on `patient` (if it concerns one) at `recorded`; `nonce`
    /// keeps ids of one microsecond apart.
    pub fn record(&self, patient: Option<&str>, recorded: i64, nonce: &str) -> AuditRecord {
        AuditRecord {
            id: record_id(recorded, nonce),
            recorded,
            patient: patient.map(str::to_owned),
            facility: None,
            // Serializing plain strings cannot fail.
            event: serde_json::to_vec(self).unwrap_or_default(),
        }
    }
}

/// The AuditEvent of an operator act.
pub(crate) fn render(record: &AuditRecord, facts: &ActFacts) -> Value {
    let mut entity = Vec::new();
    if let Some(patient) = &record.patient {
        entity.push(json!({
            "what": {"reference": format!("Patient/{patient}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
        }));
    }
    entity.push(json!({
        "what": {"display": facts.what},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}
    }));
    let mut agent = json!({"who": {"display": "operator (tsunagi admin)"}, "requestor": true});
    if let Some(operator) = &facts.operator {
        agent["altId"] = json!(operator);
    }
    json!({
        "resourceType": "AuditEvent",
        "id": record.id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "urn:tsunagi:admin", "code": facts.act.code()}],
        "action": facts.act.action(),
        "recorded": format_instant_jst(record.recorded),
        "outcome": "0",
        "agent": [agent],
        "source": {"observer": {"display": "tsunagi admin"}},
        "entity": entity
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_act_is_stored_compact_and_read_as_an_audit_event() {
        let facts = ActFacts::new(Act::ConsentWithdraw, "consent c1", Some("ops".into()));
        let record = facts.record(Some("p1"), 1_700_000_000_000_000, "n1");
        assert!(record.event.len() < 100, "{}", record.event.len());
        let event = crate::audit::render(&record);
        assert_eq!(event["subtype"][0]["code"], "consent-withdraw");
        assert_eq!(event["action"], "D");
        assert_eq!(event["agent"][0]["altId"], "ops");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(event["entity"][1]["what"]["display"], "consent c1");
        assert_eq!(event["id"], record.id);
        for (act, action) in [
            (Act::Link, "C"),
            (Act::OutboxRetry, "U"),
            (Act::QuarantineDrop, "D"),
        ] {
            assert_eq!(act.action(), action);
            let code = serde_json::to_value(act).unwrap();
            assert_eq!(code, act.code(), "the stored spelling is the subtype code");
        }
    }
}
