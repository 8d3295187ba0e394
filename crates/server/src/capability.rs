//! The CapabilityStatement, derived from the same registry the search code uses, so it states
//! exactly what works: a parameter listed here is a parameter the store can search.

use serde_json::{Value, json};
use tsunagi_fhir::{
    profiles,
    query::{parameter_codes, searchable_types},
    search::{PARAMS, ParamType},
};

fn type_name(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Token => "token",
        ParamType::String => "string",
        ParamType::Date => "date",
        ParamType::Reference => "reference",
        ParamType::Quantity => "quantity",
        ParamType::Text => "string",
    }
}

fn supported_profiles(resource_type: &str) -> Vec<&'static str> {
    let prefix = format!(
        "http://jpfhir.jp/fhir/core/StructureDefinition/JP_{}",
        resource_type
    );
    profiles::ALL
        .iter()
        .copied()
        .filter(|profile| {
            profile
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        })
        .collect()
}

/// How `_content` and `_text` match, for the CapabilityStatement.
const TEXT_SEARCH: &str = "Full text, for Japanese without word breaks: every white-space-separated term must occur as a substring (full/half width, hiragana/katakana and ASCII case folded); commas separate alternatives. _text searches the narrative (a document's rendered body), _content also titles, descriptions, displays and notes. Terms of 1 or 2 characters are matched by scanning the resources other filters select, so they need a patient (patient= or subject=); longer terms use a trigram index (SQLite FTS5, PostgreSQL pg_trgm).";

/// The server's CapabilityStatement.
/// `token_url` is the token endpoint, announced in `rest.security` (SMART `oauth-uris`).
pub fn capability_statement(base_url: &str, date: &str, token_url: &str) -> Value {
    let mut resources = Vec::new();
    for &resource_type in searchable_types() {
        let mut params: Vec<Value> = vec![
            json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
            json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}),
        ];
        for (code, kind) in parameter_codes(resource_type) {
            if kind == ParamType::Text {
                params.push(json!({
                    "name": code,
                    "type": type_name(kind),
                    "definition": if code == "_text" {
                        "http://hl7.org/fhir/SearchParameter/DomainResource-text"
                    } else {
                        "http://hl7.org/fhir/SearchParameter/Resource-content"
                    },
                    "documentation": TEXT_SEARCH,
                }));
            } else {
                params.push(json!({"name": code, "type": type_name(kind)}));
            }
        }
        let includes: Vec<String> = PARAMS
            .iter()
            .filter(|param| param.resource == resource_type && param.kind == ParamType::Reference)
            .map(|param| format!("{}:{}", param.resource, param.code))
            .collect();
        let revincludes: Vec<String> = PARAMS
            .iter()
            .filter(|param| param.kind == ParamType::Reference)
            .map(|param| format!("{}:{}", param.resource, param.code))
            .collect();
        let mut resource = json!({
            "type": resource_type,
            "interaction": [
                {"code": "read"}, {"code": "vread"}, {"code": "search-type"},
                {"code": "history-instance"}, {"code": "history-type"}
            ],
            "versioning": "versioned",
            "readHistory": true,
            "updateCreate": false,
            "conditionalRead": "not-match",
            "searchRevInclude": revincludes,
            "searchParam": params
        });
        // FHIR has no empty arrays: a type with nothing to include says nothing.
        if !includes.is_empty() {
            resource["searchInclude"] = json!(includes);
        }
        let supported = supported_profiles(resource_type);
        if !supported.is_empty() {
            resource["supportedProfile"] = json!(supported);
        }
        if resource_type == "Patient" {
            resource["operation"] = json!([{
                "name": "everything",
                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
            }, {
                "name": "ihe-pix",
                "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
                "documentation": "For system clients: the person's identifiers at other facilities, through regional links the caller's facility is party to."
            }]);
        }
        if resource_type == "Consent" {
            resource["interaction"] = json!([
                {"code": "read"}, {"code": "vread"}, {"code": "search-type"},
                {"code": "history-instance"}, {"code": "history-type"},
                {"code": "create", "documentation": "An invitation by the facility holding the patient's record: one provision.actor with role IRCP names the invited facility."},
                {"code": "update", "documentation": "Withdrawal only: status inactive, by the disclosing facility."}
            ]);
        }
        if matches!(resource_type, "Communication" | "DocumentReference") {
            resource["interaction"] = json!([
                {"code": "read"}, {"code": "vread"}, {"code": "search-type"},
                {"code": "history-instance"}, {"code": "history-type"},
                {"code": "create", "documentation": "A note (Communication, recipients as Organization references) or one of the network's standard documents (DocumentReference typed with http://tsunagi.example.jp/fhir/CodeSystem/network-document, recipients in the ihe-intendedRecipient extension), about a patient the caller may see. The sender role and recipient kinds of the document table are enforced. Whatever is addressed to the hospital holding the record is queued for delivery to its EHR in the same transaction; a Task with focus = the resource shows the delivery. A repeated identifier answers 200 with what exists."}
            ]);
            resource["conditionalCreate"] = json!(true);
        }
        if resource_type == "Observation" {
            resource["operation"] = json!([{
                "name": "lastn",
                "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
                "documentation": "Needs patient or subject; groups by the first coding of Observation.code; max 1–1000 (default 1)."
            }]);
        }
        resources.push(resource);
    }
    resources.push(json!({
        "type": "Binary",
        "documentation": "A document's bytes (extended storage's CDA and PDF files), readable by whoever may read the patient it belongs to. Served in their own Content-Type (with ETag and one byte Range) unless Accept names a FHIR format first or _format is given, then as the Binary resource with base64 data.",
        "interaction": [{"code": "read"}],
        "versioning": "versioned",
        "conditionalRead": "not-match"
    }));
    if !resources.iter().any(|r| r["type"] == "AuditEvent") {
        resources.push(json!({
            "type": "AuditEvent",
            "documentation": "The append-only audit trail (IHE BALP), for administrators: events about the patients their facility holds and events of their facility's own people.",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": "patient", "type": "reference"},
                {"name": "date", "type": "date", "documentation": "eq, ge, gt, le, lt"},
                {"name": "_id", "type": "token"}
            ]
        }));
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "Tsunagi",
        "kind": "instance",
        "software": {"name": "Tsunagi", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Tsunagi regional health-information gateway (read API)", "url": base_url},
        "fhirVersion": "4.3.0",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "instantiates": ["http://jpfhir.jp/fhir/core/CapabilityStatement/jp-core-server"],
        "rest": [{
            "mode": "server",
            "documentation": "Clinical resources are read-only on this API: they arrive through the adapters. Consents (invitation and withdrawal), notes (Communication) and the network's standard documents (DocumentReference) are written here.",
            "security": {
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": token_url}]
                }],
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "Every request but this statement needs a bearer token from the token endpoint (SMART Backend Services, private_key_jwt); see /.well-known/smart-configuration. Each patient's data is visible only to the facility that holds it and the facilities a consent names."
            },
            "resource": resources,
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            "interaction": [
                {"code": "history-system"},
                {"code": "batch", "documentation": "Each entry is answered as if sent alone (authorised and audited alike), with its own response.status: reads and searches (GET), and for lab companies' system clients the POSTs a transaction takes."},
                {"code": "transaction", "documentation": "For lab companies' system clients: DiagnosticReport, Observation and Specimen for patients of the facilities the lab reports for; every resource carries an identifier (POST with ifNoneExist or conditional PUT on it), so a resent Bundle writes nothing new; each resource must conform to the JP Core lab-result profile of its type and to the profiles it claims, where loaded; all or nothing."}
            ],
            "searchParam": [
                {"name": "_count", "type": "number"},
                {"name": "_sort", "type": "string"},
                {"name": "_total", "type": "token"},
                {"name": "_summary", "type": "token"},
                {"name": "_elements", "type": "string"}
            ],
            "operation": [{
                "name": "validate",
                "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                "documentation": "POST /fhir/<Type>/$validate with the resource (or Parameters with resource and profile; or ?profile=), or GET/POST /fhir/<Type>/<id>/$validate for a stored resource the caller may read: checked against the profiles the operator loaded (profile_packages), by default those it claims, else the type's JP Core base profile. Answers an OperationOutcome, one issue per finding."
            }]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_what_the_registry_searches() {
        let statement = capability_statement(
            "http://localhost/fhir",
            "2026-11-24",
            "http://localhost/auth/token",
        );
        assert_eq!(statement["fhirVersion"], "4.3.0");
        let resources = statement["rest"][0]["resource"].as_array().unwrap();
        let observation = resources
            .iter()
            .find(|r| r["type"] == "Observation")
            .unwrap();
        let names: Vec<&str> = observation["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for expected in [
            "_id",
            "patient",
            "subject",
            "code",
            "category",
            "date",
            "value-quantity",
        ] {
            assert!(names.contains(&expected), "{expected}");
        }
        assert!(
            observation["supportedProfile"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == profiles::OBSERVATION_LAB_RESULT)
        );
        let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
        assert_eq!(patient["operation"][0]["name"], "everything");
        // MedicationRequest must not claim the injection profile of MedicationAdministration.
        let request = resources
            .iter()
            .find(|r| r["type"] == "MedicationRequest")
            .unwrap();
        assert!(
            request["supportedProfile"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p.as_str().unwrap().contains("JP_MedicationRequest"))
        );
    }
}
