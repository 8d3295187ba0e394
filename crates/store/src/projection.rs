//! The network's own records as FHIR resources: a facility is an Organization, a participant a
//! Practitioner with a PractitionerRole, a consent an IHE PCF-style Consent. Stores write these
//! in the same transaction as the record, so the FHIR API reads the directory and consents
//! through the same search, paging, history and access rules as clinical data.

use serde_json::{Value, json};
use tsunagi_core::time::format_instant_jst;
use tsunagi_fhir::systems::MEDICAL_ORGANIZATION_ID;

use crate::{
    Operation, ResourceWrite, StoreError,
    governance::{Consent, Facility, Participant},
};

/// Code system of facility kinds (`governance::FACILITY_KINDS`).
pub const FACILITY_KIND_SYSTEM: &str = "urn:tsunagi:facility-kind";
/// Code system of participant roles (`tsunagi_auth::Role`).
pub const ROLE_SYSTEM: &str = "urn:tsunagi:role";
/// Identifier system of participants' user ids.
pub const USER_SYSTEM: &str = "urn:tsunagi:user";
/// Identifier system of consent ids.
pub const CONSENT_SYSTEM: &str = "urn:tsunagi:consent";
/// Code system saying how a consent came about (`invitation`, `signed-consent`).
pub const CONSENT_SOURCE_SYSTEM: &str = "urn:tsunagi:consent-source";

/// A consent ending at or after this instant (9999-12-31T23:59:59Z) lasts until withdrawn: its
/// Consent has no `provision.period.end`.
pub const OPEN_END: i64 = 253_402_300_799_000_000;

/// The source key under which a facility's Organization is stored.
pub fn facility_source(code: &str) -> String {
    format!("directory:facility:{code}")
}

/// The source key under which a participant's Practitioner and PractitionerRole are stored.
pub fn participant_source(id: &str) -> String {
    format!("directory:participant:{id}")
}

/// The source key under which a consent's Consent is stored.
pub fn consent_source(id: &str) -> String {
    format!("consent:{id}")
}

fn organization_reference(code: &str) -> Value {
    json!({
        "reference": format!("Organization/{code}"),
        "identifier": {"system": MEDICAL_ORGANIZATION_ID, "value": code}
    })
}

/// `Organization/<code>`.
pub fn facility(facility: &Facility) -> Result<Operation, StoreError> {
    let organization = json!({
        "resourceType": "Organization",
        "id": facility.code,
        "identifier": [{"system": MEDICAL_ORGANIZATION_ID, "value": facility.code}],
        "active": true,
        "type": [{"coding": [{"system": FACILITY_KIND_SYSTEM, "code": facility.kind}]}],
        "name": facility.name
    });
    Ok(Operation::ReplaceSource {
        source_key: facility_source(&facility.code),
        facility: facility.code.clone(),
        resources: vec![ResourceWrite::from_json(
            "Organization",
            &facility.code,
            &organization,
        )?],
    })
}

/// `Practitioner/<id>` and `PractitionerRole/<id>` (one role per participant).
pub fn participant(participant: &Participant) -> Result<Operation, StoreError> {
    let identifier = json!([{"system": USER_SYSTEM, "value": participant.id}]);
    let practitioner = json!({
        "resourceType": "Practitioner",
        "id": participant.id,
        "identifier": identifier,
        "active": participant.active,
        "name": [{"text": participant.name}]
    });
    let role = json!({
        "resourceType": "PractitionerRole",
        "id": participant.id,
        "identifier": identifier,
        "active": participant.active,
        "practitioner": {"reference": format!("Practitioner/{}", participant.id)},
        "organization": organization_reference(&participant.facility),
        "code": [{"coding": [{"system": ROLE_SYSTEM, "code": participant.role}]}]
    });
    Ok(Operation::ReplaceSource {
        source_key: participant_source(&participant.id),
        facility: participant.facility.clone(),
        resources: vec![
            ResourceWrite::from_json("Practitioner", &participant.id, &practitioner)?,
            ResourceWrite::from_json("PractitionerRole", &participant.id, &role)?,
        ],
    })
}

/// `Consent/<id>`: IHE PCF-style (scope patient-privacy, a permit provision for the period,
/// the viewing facility as information recipient, the disclosing one as custodian); `inactive`
/// once withdrawn.
pub fn consent(consent: &Consent) -> Result<Operation, StoreError> {
    let role = |code: &str, display: &str| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code, "display": display}]});
    let mut resource = json!({
        "resourceType": "Consent",
        "id": consent.id,
        "identifier": [{"system": CONSENT_SYSTEM, "value": consent.id}],
        "status": if consent.withdrawn_at.is_some() { "inactive" } else { "active" },
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]},
            {"coding": [{"system": CONSENT_SOURCE_SYSTEM, "code": consent.source}]}
        ],
        "patient": {"reference": format!("Patient/{}", consent.patient)},
        "dateTime": format_instant_jst(consent.created_at),
        "organization": [organization_reference(&consent.disclosing)],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": format_instant_jst(consent.start), "end": format_instant_jst(consent.end)},
            "actor": [
                {"role": role("IRCP", "information recipient"), "reference": organization_reference(&consent.viewing)},
                {"role": role("CST", "custodian"), "reference": organization_reference(&consent.disclosing)}
            ]
        }
    });
    if consent.end >= OPEN_END
        && let Some(period) = resource["provision"]["period"].as_object_mut()
    {
        period.remove("end");
    }
    if let Some(withdrawn) = consent.withdrawn_at {
        resource["extension"] = json!([{
            "url": "urn:tsunagi:consent-withdrawn",
            "valueDateTime": format_instant_jst(withdrawn)
        }]);
    }
    Ok(Operation::ReplaceSource {
        source_key: consent_source(&consent.id),
        facility: consent.disclosing.clone(),
        resources: vec![ResourceWrite::from_json("Consent", &consent.id, &resource)?],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_consent_lands_in_its_patients_compartment() {
        let record = Consent {
            id: "c1".into(),
            patient: "p1".into(),
            disclosing: "0610100010".into(),
            viewing: "0610400014".into(),
            start: 0,
            end: 86_400_000_000,
            withdrawn_at: Some(3_600_000_000),
            source: "invitation".into(),
            created_by: "dr".into(),
            created_at: 0,
        };
        let Operation::ReplaceSource {
            resources,
            facility,
            ..
        } = consent(&record).unwrap()
        else {
            panic!("a replace");
        };
        assert_eq!(facility, "0610100010");
        assert_eq!(resources[0].compartment.as_deref(), Some("p1"));
        let json: Value = serde_json::from_slice(&resources[0].content).unwrap();
        assert_eq!(json["status"], "inactive");
        assert_eq!(
            json["provision"]["actor"][0]["reference"]["reference"],
            "Organization/0610400014"
        );
    }
}
