//! The audit trail's compact record and its FHIR form: the server stores the facts of each
//! access (who, which facility and role, what request, which outcome) in ~300 bytes and renders
//! the IHE BALP AuditEvent (~1.5 KB) only when the trail is read.
//!
//! Recording is on the answer path of every request and the trail grows by one record per
//! patient touched, so the facts are kept small and cheap to write; reading the trail is rare.
//! An operator's act is stored as its facts too ([`crate::operator`]). A record whose `event`
//! already is an AuditEvent (written by an earlier version) is returned as it is.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tsunagi_core::time::format_instant_jst;

use crate::governance::AuditRecord;

/// Marks compact facts (the first key of their JSON object).
const FACTS_VERSION: &str = "balp-1";

/// An AuditEvent id that sorts by time: the recording microsecond in hex, then `nonce` (a
/// random suffix that keeps ids of one microsecond apart). Ids that grow with time are appended
/// at the end of the trail's id index instead of at random places in it.
pub fn record_id(recorded: i64, nonce: &str) -> String {
    format!("{:013x}-{nonce}", recorded.max(0))
}

/// Who made the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AuditAgent {
    /// No valid access token.
    Unauthenticated,
    /// An authenticated request.
    Principal {
        /// The registered client the token was issued to.
        client: String,
        /// User or client id.
        subject: String,
        /// Whether the subject is a user (else a system client).
        user: bool,
        /// Role code.
        role: String,
        /// The token's `jti`.
        token: String,
        /// The facility code the principal acts for.
        facility: String,
    },
    /// An access token issued at the token endpoint (a login).
    Login {
        /// The client that authenticated.
        client: String,
        /// The user it acts for, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
}

/// The facts of one access, from which [`render`] builds the AuditEvent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFacts {
    /// Always [`FACTS_VERSION`].
    #[serde(rename = "v")]
    pub version: String,
    /// HTTP method.
    #[serde(rename = "m")]
    pub method: String,
    /// Request path.
    #[serde(rename = "p")]
    pub path: String,
    /// Query string.
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The request id (`X-Request-Id`).
    #[serde(rename = "r", default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// The client's network address.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP status of the answer.
    #[serde(rename = "s")]
    pub status: u16,
    /// Who asked.
    #[serde(rename = "a")]
    pub agent: AuditAgent,
}

impl AuditFacts {
    /// Facts of a request.
    pub fn new(
        method: &str,
        path: &str,
        query: Option<&str>,
        request_id: &str,
        address: Option<&str>,
        status: u16,
        agent: AuditAgent,
    ) -> Self {
        Self {
            version: FACTS_VERSION.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            request_id: request_id.to_owned(),
            address: address.map(str::to_owned),
            status,
            agent,
        }
    }

    /// The stored form: compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The AuditEvent of a stored record: rendered from its facts, or the stored AuditEvent itself.
/// A record that holds neither is shown by id and time with outcome 8, never dropped (an Audit
/// Record Repository shall not reject what it holds).
pub fn render(record: &AuditRecord) -> Value {
    // Accesses are most of the trail: their facts are tried first.
    if let Ok(facts) = serde_json::from_slice::<AuditFacts>(&record.event)
        && facts.version == FACTS_VERSION
    {
        return balp(record, &facts);
    }
    match serde_json::from_slice::<crate::operator::ActFacts>(&record.event) {
        Ok(facts) if facts.version == crate::operator::ACT_VERSION => {
            crate::operator::render(record, &facts)
        }
        _ => match serde_json::from_slice::<Value>(&record.event) {
            Ok(mut event @ Value::Object(_)) => {
                // Events written before empty values were refused are served valid.
                tsunagi_fhir::json::prune_empty(&mut event);
                event
            }
            _ => json!({
                "resourceType": "AuditEvent",
                "id": record.id,
                "recorded": format_instant_jst(record.recorded),
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
                "outcome": "8",
                "outcomeDesc": "the stored record could not be read",
                "agent": [{"who": {"display": "unknown"}, "requestor": false}],
                "source": {"observer": {"display": "tsunagi"}}
            }),
        },
    }
}

/// The FHIR restful interaction and AuditEvent action of a request path.
pub fn interaction_of(method: &str, path: &str) -> (&'static str, &'static str) {
    // DICOMweb: a search (QIDO-RS) ends in `studies`, `series` or `instances`; anything else
    // is a retrieval (WADO-RS).
    if let Some(dicomweb) = path.strip_prefix("/dicomweb/") {
        let last = dicomweb.trim_end_matches('/').rsplit('/').next();
        return match last {
            Some("studies" | "series" | "instances") => ("search-type", "E"),
            _ => ("read", "R"),
        };
    }
    let segments: Vec<&str> = path
        .trim_start_matches("/fhir")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let read = if method == "GET" { "R" } else { "E" };
    match (method, segments.as_slice()) {
        ("POST", [_]) => return ("create", "C"),
        ("PUT" | "PATCH", [_, _]) => return ("update", "U"),
        ("DELETE", [_, _]) => return ("delete", "D"),
        _ => {}
    }
    match segments.as_slice() {
        ["_history"] => ("history-system", "R"),
        [_, "_history"] => ("history-type", "R"),
        [_, "_search"] | [_] => ("search-type", "E"),
        // A compartment search: `Patient/{id}/Observation`.
        ["Patient", _, kind] if kind.starts_with(|c: char| c.is_ascii_uppercase()) => {
            ("search-type", "E")
        }
        [_, operation] | [_, _, operation] if operation.starts_with('$') => ("operation", "E"),
        [_, _, "_history"] => ("history-instance", "R"),
        [_, _, "_history", _] => ("vread", "R"),
        [_, _] => ("read", read),
        _ => ("operation", "E"),
    }
}

/// The Study Instance UID a DICOMweb path names (`/dicomweb/studies/{uid}/…`).
fn study_of(path: &str) -> Option<&str> {
    let uid = path.strip_prefix("/dicomweb/studies/")?.split('/').next()?;
    (!uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then_some(uid)
}

/// One BALP-shaped AuditEvent (Basic Audit Log Patterns: RESTful activity, patient variant when
/// a patient was touched; DICOM User Authentication / Login for a token issued).
fn balp(record: &AuditRecord, facts: &AuditFacts) -> Value {
    let (subtype, action) = interaction_of(&facts.method, &facts.path);
    let status = facts.status;
    let outcome = if (200..300).contains(&status) || status == 304 {
        "0"
    } else if status >= 500 {
        "8"
    } else {
        "4"
    };
    let dcm = "http://dicom.nema.org/resources/ontology/DCM";
    let mut agents = vec![json!({
        "type": {"coding": [{"system": dcm, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "tsunagi"},
        "requestor": false
    })];
    let mut client = json!({
        "type": {"coding": [{"system": dcm, "code": "110153", "display": "Source Role ID"}]},
        "requestor": false
    });
    if let Some(address) = &facts.address {
        client["network"] = json!({"address": address, "type": "2"});
    }
    match &facts.agent {
        AuditAgent::Principal {
            client: client_id,
            subject,
            user,
            role,
            token,
            facility,
        } => {
            client["who"] =
                json!({"identifier": {"system": "urn:tsunagi:client", "value": client_id}});
            agents.push(client);
            agents.push(json!({
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                "who": {"identifier": {"system": if *user { "urn:tsunagi:user" } else { "urn:tsunagi:client" }, "value": subject}},
                "requestor": true,
                "role": [{"coding": [{"system": "urn:tsunagi:role", "code": role}]}],
                "policy": [token],
                "extension": [{"url": "urn:tsunagi:facility", "valueIdentifier": {"system": tsunagi_fhir::systems::MEDICAL_ORGANIZATION_ID, "value": facility}}]
            }));
        }
        AuditAgent::Login {
            client: client_id,
            user,
        } => {
            client["who"] =
                json!({"identifier": {"system": "urn:tsunagi:client", "value": client_id}});
            if let Some(user) = user {
                client["altId"] = json!(user);
            }
            agents.push(client);
        }
        AuditAgent::Unauthenticated => {
            client["who"] = json!({"display": "unauthenticated"});
            agents.push(client);
        }
    }
    let (event_type, subtype) = match facts.agent {
        AuditAgent::Login { .. } => (
            json!({"system": dcm, "code": "110114", "display": "User Authentication"}),
            json!({"system": dcm, "code": "110122", "display": "Login"}),
        ),
        _ => (
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"}),
            json!({"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}),
        ),
    };
    let mut entities = Vec::new();
    if let Some(patient) = &record.patient {
        entities.push(json!({
            "what": {"reference": format!("Patient/{patient}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
        }));
    }
    let described = match &facts.query {
        Some(query) => format!("{} {}?{query}", facts.method, facts.path),
        None => format!("{} {}", facts.method, facts.path),
    };
    entities.push(json!({
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
        "description": described
    }));
    if let Some(uid) = study_of(&facts.path) {
        entities.push(json!({
            "what": {"identifier": {
                "type": {"coding": [{"system": dcm, "code": "110180", "display": "Study Instance UID"}]},
                "system": "urn:dicom:uid",
                "value": format!("urn:oid:{uid}")
            }},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3", "display": "Report"}
        }));
    }
    if !facts.request_id.is_empty() {
        entities.push(json!({
            "what": {"identifier": {"value": facts.request_id}},
            "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId"}
        }));
    }
    json!({
        "resourceType": "AuditEvent",
        "id": record.id,
        "meta": {"profile": [if record.patient.is_some() { "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead" } else { "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read" }]},
        "type": event_type,
        "subtype": [subtype],
        "action": action,
        "recorded": format_instant_jst(record.recorded),
        "outcome": outcome,
        "outcomeDesc": format!("HTTP {status}"),
        "agent": agents,
        "source": {
            "observer": {"display": "tsunagi"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]
        },
        "entity": entities
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn record(event: Vec<u8>, patient: Option<&str>) -> AuditRecord {
        AuditRecord {
            id: "a1".into(),
            recorded: 1_700_000_000_000_000,
            patient: patient.map(str::to_owned),
            facility: Some("0610100010".into()),
            event,
        }
    }

    #[test]
    fn facts_render_the_balp_patient_read() {
        let facts = AuditFacts::new(
            "GET",
            "/fhir/Observation",
            Some("patient=p1&code=x"),
            "req-1",
            Some("127.0.0.1"),
            200,
            AuditAgent::Principal {
                client: "portal".into(),
                subject: "dr-sato".into(),
                user: true,
                role: "doctor".into(),
                token: "jti-1".into(),
                facility: "0610100010".into(),
            },
        );
        let bytes = facts.to_bytes();
        assert!(bytes.len() < 400, "{} bytes", bytes.len());
        let event = render(&record(bytes, Some("p1")));
        assert_eq!(event["id"], "a1");
        assert_eq!(event["subtype"][0]["code"], "search-type");
        assert_eq!(event["action"], "E");
        assert_eq!(event["outcome"], "0");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(
            event["entity"][1]["description"],
            "GET /fhir/Observation?patient=p1&code=x"
        );
        assert_eq!(
            event["agent"][2]["who"]["identifier"]["system"],
            "urn:tsunagi:user"
        );
        assert_eq!(event["agent"][2]["role"][0]["coding"][0]["code"], "doctor");
        assert_eq!(event["agent"][1]["network"]["address"], "127.0.0.1");
        assert_eq!(
            event["meta"]["profile"][0],
            "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
        );
    }

    #[test]
    fn login_and_denial_render_their_types() {
        let login = AuditFacts::new(
            "POST",
            "/auth/token",
            None,
            "",
            None,
            200,
            AuditAgent::Login {
                client: "lab-1".into(),
                user: None,
            },
        );
        let event = render(&record(login.to_bytes(), None));
        assert_eq!(event["type"]["code"], "110114");
        assert_eq!(event["subtype"][0]["code"], "110122");
        let denied = AuditFacts::new(
            "GET",
            "/fhir/Patient/x",
            None,
            "",
            None,
            401,
            AuditAgent::Unauthenticated,
        );
        let event = render(&record(denied.to_bytes(), None));
        assert_eq!(event["outcome"], "4");
        assert_eq!(event["agent"][1]["who"]["display"], "unauthenticated");
    }

    #[test]
    fn stored_events_pass_through_and_garbage_is_still_shown() {
        let stored = br#"{"resourceType":"AuditEvent","id":"old"}"#.to_vec();
        assert_eq!(render(&record(stored, None))["id"], "old");
        let event = render(&record(b"not json".to_vec(), None));
        assert_eq!(event["id"], "a1");
        assert_eq!(event["outcome"], "8");
    }

    #[test]
    fn interactions_of_paths() {
        assert_eq!(interaction_of("GET", "/fhir/Patient/p1"), ("read", "R"));
        assert_eq!(
            interaction_of("GET", "/dicomweb/studies"),
            ("search-type", "E")
        );
        assert_eq!(
            interaction_of("GET", "/dicomweb/studies/1.2/series/1.2.3/instances"),
            ("search-type", "E")
        );
        assert_eq!(
            interaction_of(
                "GET",
                "/dicomweb/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1/rendered"
            ),
            ("read", "R")
        );
        assert_eq!(study_of("/dicomweb/studies/1.2.3/metadata"), Some("1.2.3"));
        assert_eq!(study_of("/dicomweb/studies"), None);
        assert_eq!(study_of("/dicomweb/studies/x'y/metadata"), None);
        assert_eq!(interaction_of("GET", "/fhir/Patient"), ("search-type", "E"));
        assert_eq!(
            interaction_of("POST", "/fhir/Patient/_search"),
            ("search-type", "E")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/Patient/p1/$everything"),
            ("operation", "E")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/Observation/$lastn"),
            ("operation", "E")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/_history"),
            ("history-system", "R")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/Patient/_history"),
            ("history-type", "R")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/Patient/p/_history"),
            ("history-instance", "R")
        );
        assert_eq!(
            interaction_of("GET", "/fhir/Patient/p/_history/2"),
            ("vread", "R")
        );
    }
}
