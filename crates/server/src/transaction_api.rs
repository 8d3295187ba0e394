//! `POST /fhir` with a transaction Bundle: how a lab company that speaks FHIR posts results —
//! DiagnosticReports, Observations and Specimens — for patients of the facilities it serves.
//!
//! The whole Bundle is validated first and written in **one batch** (all or nothing). Every
//! resource must carry an identifier; its id is derived from the lab and that identifier, so a
//! resent Bundle writes nothing new (each entry answers `200 OK` with the version that exists).
//! `urn:uuid:` references between entries are rewritten to the ids given. Each resource is
//! checked against the JP Core lab-result profile of its type and the profiles it claims, where
//! the operator loaded them ([`crate::validation`]); the stored `meta.profile` lists those checked.

use std::collections::HashMap;

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{Value, json};
use tsunagi_auth::Role;
use tsunagi_core::{ids::logical_id, time::format_instant_jst};
use tsunagi_store::{Access, Batch, Operation, ResourceWrite};

use crate::{
    AppState, etag, json_response,
    outcome::ApiError,
    security::Caller,
    validation,
    write_answer::{Return, write_outcome},
};

/// The types a lab posts.
const RESULT_TYPES: &[&str] = &["DiagnosticReport", "Observation", "Specimen"];

/// The codes of the required binding of `status` (FHIR R4B), which JP Core does not restate.
fn status_codes(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" => &[
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        "DiagnosticReport" => &[
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
        _ => &[
            "available",
            "unavailable",
            "unsatisfactory",
            "entered-in-error",
        ],
    }
}

/// Who a system client reports results for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabScope {
    /// The lab company's facility code.
    pub lab: String,
    /// The facilities whose patients it reports for.
    pub reports_for: Vec<String>,
}

/// Who the caller reports results for: the directory's record of its facility (`tsunagi admin
/// facility reports-for`), joined to an hl7v2 source's `reports_for` that names its client.
pub(crate) async fn lab_scope(
    state: &AppState,
    caller: &Caller,
) -> Result<Option<LabScope>, ApiError> {
    let configured = state
        .intake
        .get()
        .and_then(|intake| intake.lab_scope(&caller.principal.client_id));
    let listed = state
        .governance
        .lab_reports_for(&caller.principal.facility)
        .await?;
    Ok(match configured {
        Some(mut scope) => {
            if scope.lab == caller.principal.facility {
                for code in listed {
                    if !scope.reports_for.contains(&code) {
                        scope.reports_for.push(code);
                    }
                }
            }
            Some(scope)
        }
        None if listed.is_empty() => None,
        None => Some(LabScope {
            lab: caller.principal.facility.clone(),
            reports_for: listed,
        }),
    })
}

/// The identifier `system|value` of an entry: from `ifNoneExist`, a conditional PUT url, or the
/// resource's first identifier (they must agree).
fn entry_identifier(entry: &Value, index: usize) -> Result<(String, String), ApiError> {
    let resource = &entry["resource"];
    let own = resource["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|identifier| {
            Some((
                identifier["system"].as_str()?.to_owned(),
                identifier["value"].as_str()?.to_owned(),
            ))
        })
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "entry[{index}]: every resource needs an identifier (system and value), so a resend creates nothing new"
            ))
        })?;
    let request = &entry["request"];
    let condition = match request["method"].as_str() {
        Some("POST") => request["ifNoneExist"].as_str().map(str::to_owned),
        Some("PUT") => request["url"]
            .as_str()
            .and_then(|url| url.split_once('?'))
            .map(|(_, query)| query.to_owned()),
        other => {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: request.method {other:?}: only POST (with ifNoneExist) and conditional PUT are taken"
            )));
        }
    };
    if let Some(condition) = condition {
        let pairs = crate::decode_pairs(Some(&condition));
        let matches = matches!(pairs.as_slice(), [(name, value)]
            if name == "identifier" && *value == format!("{}|{}", own.0, own.1));
        if !matches {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: the condition {condition:?} must be identifier={}|{}, the resource's own",
                own.0, own.1
            )));
        }
    }
    Ok(own)
}

/// Rewrites every `reference` that names an entry's fullUrl.
fn rewrite_references(value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("reference")
                && let Some(target) = ids.get(reference.as_str())
            {
                reference.clone_from(target);
            }
            for child in map.values_mut() {
                rewrite_references(child, ids);
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_references(item, ids);
            }
        }
        _ => {}
    }
}

/// A `urn:uuid:` or `urn:oid:` reference left after rewriting: it names no entry (in a batch,
/// entries cannot name each other).
fn unresolved_reference(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("reference")
                && (reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:"))
            {
                return Some(reference.clone());
            }
            map.values().find_map(unresolved_reference)
        }
        Value::Array(items) => items.iter().find_map(unresolved_reference),
        _ => None,
    }
}

/// `POST /fhir`.
pub(crate) async fn post(
    state: &AppState,
    scope: Option<LabScope>,
    caller: &Caller,
    headers: &HeaderMap,
    bundle: &Value,
) -> Result<Response, ApiError> {
    if caller.principal.role != Role::System {
        return Err(ApiError::forbidden(
            "POST /fhir takes transactions from registered system clients (lab companies)",
        ));
    }
    let Some(scope) = scope else {
        return Err(ApiError::forbidden(format!(
            "client {} reports for no facility: its lab is listed for none (tsunagi admin facility reports-for)",
            caller.principal.client_id
        )));
    };
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return Err(ApiError::unprocessable("the transaction has no entries"));
    }
    // First pass: types, identifiers and ids; fullUrls to be rewritten.
    let mut planned = Vec::with_capacity(entries.len());
    let mut ids: HashMap<String, String> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let resource_type = entry["resource"]["resourceType"].as_str().unwrap_or("");
        if !RESULT_TYPES.contains(&resource_type) {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: {resource_type:?} is not taken here (DiagnosticReport, Observation, Specimen)"
            )));
        }
        // Writing results is a create of each type the lab's token must carry
        // (`system/Observation.c`, …), whatever a read scope allows.
        caller.require(resource_type, tsunagi_auth::Interaction::Create)?;
        // A conditional PUT replaces a result that exists: an update as well.
        if entry["request"]["method"] == "PUT" {
            caller.require(resource_type, tsunagi_auth::Interaction::Update)?;
        }
        let (system, value) = entry_identifier(entry, index)?;
        let id = logical_id(&[&scope.lab, resource_type, &system, &value]);
        if let Some(full_url) = entry["fullUrl"].as_str() {
            ids.insert(full_url.to_owned(), format!("{resource_type}/{id}"));
        }
        planned.push((resource_type.to_owned(), id));
    }
    // Second pass: references, the patient rule, the writes.
    let source = format!(
        "urn:tsunagi:fhir:{}#{}",
        scope.lab, caller.principal.client_id
    );
    let mut operations = Vec::with_capacity(entries.len());
    let mut answers = Vec::with_capacity(entries.len());
    let mut patients: HashMap<String, String> = HashMap::new();
    for (index, (entry, (resource_type, id))) in entries.iter().zip(&planned).enumerate() {
        let mut resource = entry["resource"].clone();
        rewrite_references(&mut resource, &ids);
        if let Some(dangling) = unresolved_reference(&resource) {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: the reference {dangling} names no entry of this Bundle"
            )));
        }
        if resource_type != "Specimen" && resource["status"].as_str().is_none() {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: {resource_type}.status is required"
            )));
        }
        if resource_type != "Specimen" && resource["code"].is_null() {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: {resource_type}.code is required"
            )));
        }
        if let Some(status) = resource["status"].as_str()
            && !status_codes(resource_type).contains(&status)
        {
            return Err(ApiError::unprocessable(format!(
                "entry[{index}]: {status:?} is not a {resource_type}.status ({})",
                status_codes(resource_type).join(", ")
            )));
        }
        let place = format!("entry[{index}]");
        let required = validation::lab_result_profile(resource_type);
        let checked = validation::check(
            &validation::applicable(&state.settings.profiles, &resource, required),
            &resource,
            Some(&place),
        )?;
        let patient = resource["subject"]["reference"]
            .as_str()
            .and_then(|reference| reference.strip_prefix("Patient/"))
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "entry[{index}]: subject must be Patient/<id> of a facility the lab reports for"
                ))
            })?
            .to_owned();
        crate::valid_id(&patient)?;
        let holder = match patients.get(&patient) {
            Some(holder) => holder.clone(),
            None => {
                let holder = state.governance.holder(&patient).await?.flatten();
                let Some(holder) = holder.filter(|holder| scope.reports_for.contains(holder))
                else {
                    // Unknown and not served answer alike.
                    return Err(ApiError::unprocessable(format!(
                        "entry[{index}]: Patient/{patient} is not a patient of a facility lab {} reports for",
                        scope.lab
                    )));
                };
                patients.insert(patient.clone(), holder.clone());
                caller.touch_patient(&patient);
                holder
            }
        };
        resource["id"] = json!(id);
        resource["meta"] = json!({"source": source});
        if !checked.is_empty() {
            resource["meta"]["profile"] = json!(checked);
        }
        let write = ResourceWrite::from_json(resource_type, id, &resource)?;
        // The lab does not hold the patient's record; its own results are looked up (version
        // only, never content) in the view of the facility that does.
        let holder_view = Access::facility(holder.clone(), state.clock.now_micros());
        let existing = state
            .store
            .read(&holder_view, resource_type, id)
            .await?
            .filter(|existing| !existing.deleted);
        answers.push((
            resource_type.clone(),
            id.clone(),
            existing.map(|e| e.version),
            holder_view,
        ));
        operations.push(Operation::ReplaceSource {
            source_key: format!("lab-fhir:{}:{resource_type}/{id}", scope.lab),
            facility: holder,
            resources: vec![write],
        });
    }
    state.store.apply(Batch { operations }).await?;
    // The response: each entry's outcome, read back after the commit.
    let mut response_entries = Vec::with_capacity(answers.len());
    for (resource_type, id, before, holder_view) in answers {
        let stored = state
            .store
            .read(&holder_view, &resource_type, &id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{resource_type}/{id} was not stored")))?;
        // A resource that existed answers 200, whether the resend changed it or not.
        let status = if before.is_none() {
            "201 Created"
        } else {
            "200 OK"
        };
        let mut entry = json!({
            "response": {
                "status": status,
                "location": format!("{resource_type}/{id}/_history/{}", stored.version),
                "etag": etag(stored.version),
                "lastModified": format_instant_jst(stored.last_updated),
            }
        });
        // `Prefer: return=` for each entry; without one, the response stays minimal.
        if crate::request::preference(headers, "return").is_some() {
            match Return::of(headers) {
                Return::Minimal => {}
                Return::Representation => {
                    entry["resource"] = stored.to_json()?.unwrap_or(Value::Null);
                }
                Return::Outcome => {
                    let code = if before.is_none() {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    entry["response"]["outcome"] = write_outcome(&stored, code);
                }
            }
        }
        response_entries.push(entry);
    }
    let body = json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": response_entries,
    });
    let mut out = Vec::new();
    tsunagi_fhir::json::write_resource(&body, &mut out)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(json_response(StatusCode::OK, out))
}
