//! Profile validation at the API's edge: which loaded profiles a posted resource is checked
//! against, and the `$validate` operation that lets a lab or a clinic-system developer check a
//! resource before sending it.
//!
//! The profiles are whatever the operator loaded ([`crate::Settings::profiles`], from FHIR
//! packages such as JP Core); the checks are [`tsunagi_fhir::validate`]'s. A resource is checked
//! against every profile it claims in `meta.profile` that is loaded, and against the profile the
//! endpoint requires (a lab's Observation is a `JP_Observation_LabResult`) when that is loaded.
//! A claimed profile that is not loaded cannot be checked: it is not an error, and it is not
//! kept in the stored `meta.profile`, which lists only the profiles the server checked.
//!
//! Before any profile, every resource body the API takes is checked structurally against R4B
//! ([`structure`], `tsunagi_fhir_xml::structure`), loaded packages or not: what is stored can
//! always be served, in JSON and in XML.

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{Value, json};
use tsunagi_fhir::{
    profiles,
    validate::{Finding, FindingKind, Profile, Profiles},
};

use tsunagi_fhir_xml::structure::ProblemKind;

use crate::{json_response, outcome::ApiError};

/// The profile a lab company's result of this type must meet.
pub(crate) fn lab_result_profile(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "Observation" => Some(profiles::OBSERVATION_LAB_RESULT),
        "DiagnosticReport" => Some(profiles::DIAGNOSTIC_REPORT_LAB_RESULT),
        "Specimen" => Some(profiles::SPECIMEN_COMMON),
        _ => None,
    }
}

/// The JP Core profile of a type when nothing more specific is asked: `JP_<Type>`, else
/// `JP_<Type>_Common`, if loaded.
fn base_profile<'p>(loaded: &'p Profiles, resource_type: &str) -> Option<&'p Profile> {
    let stem = format!("http://jpfhir.jp/fhir/core/StructureDefinition/JP_{resource_type}");
    loaded
        .get(&stem)
        .or_else(|| loaded.get(&format!("{stem}_Common")))
}

/// The loaded profiles `resource` is to be checked against: its claims, then `required`.
pub(crate) fn applicable<'p>(
    loaded: &'p Profiles,
    resource: &Value,
    required: Option<&str>,
) -> Vec<&'p Profile> {
    let mut out: Vec<&Profile> = Vec::new();
    let claims = resource["meta"]["profile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for url in claims.chain(required) {
        if let Some(profile) = loaded.get(url)
            && !out.iter().any(|p| p.url() == profile.url())
        {
            out.push(profile);
        }
    }
    out
}

/// The structural problems of a posted resource (see `tsunagi_fhir_xml::structure`) as
/// findings.
fn structural_findings(resource: &Value) -> Result<Vec<Finding>, ApiError> {
    let problems = tsunagi_fhir_xml::structure::check(resource)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(problems
        .into_iter()
        .map(|problem| Finding {
            kind: match problem.kind {
                ProblemKind::Required => FindingKind::Required,
                ProblemKind::Structure => FindingKind::Structure,
                ProblemKind::Value => FindingKind::Value,
            },
            location: problem.location,
            message: problem.message,
        })
        .collect())
}

/// Refuses (422, one issue per problem, each with its location) a resource body that is not
/// valid FHIR R4B for its type: an element the type does not define, the wrong JSON type, an
/// empty value, a missing mandatory element, narrative that is not one well-formed `div`.
pub(crate) fn structure(resource: &Value) -> Result<(), ApiError> {
    let findings = structural_findings(resource)?;
    let Some(first) = findings.first() else {
        return Ok(());
    };
    Err(ApiError::nonconformant(
        format!(
            "the {} is not valid FHIR R4B: {} problem(s), the first: {first}",
            resource["resourceType"].as_str().unwrap_or("body"),
            findings.len()
        ),
        findings,
    ))
}

/// Checks `resource` against `profiles`; every finding is prefixed with its place (`entry[2]`)
/// when one is given. Returns the URLs checked.
pub(crate) fn check(
    profiles: &[&Profile],
    resource: &Value,
    place: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let mut findings: Vec<Finding> = Vec::new();
    for profile in profiles {
        findings.extend(profile.check(resource).into_iter().map(|mut finding| {
            finding.message = format!("{} ({})", finding.message, profile.url());
            if let Some(place) = place {
                finding.location = format!("Bundle.{place}.resource.{}", finding.location);
            }
            finding
        }));
    }
    if findings.is_empty() {
        return Ok(profiles.iter().map(|p| p.url().to_owned()).collect());
    }
    let what = place.map_or_else(String::new, |place| format!("{place}: "));
    let first = &findings[0];
    Err(ApiError::nonconformant(
        format!(
            "{what}the {} does not conform to its profile: {} finding(s), the first: {first}",
            resource["resourceType"].as_str().unwrap_or("resource"),
            findings.len()
        ),
        findings,
    ))
}

/// `POST /fhir/{type}/$validate`: the body is the resource, or a Parameters resource with a
/// `resource` (and optionally a `profile`) parameter; `?profile=` names a profile too. Answers
/// 200 with an OperationOutcome either way (errors are issues, as the operation defines).
pub(crate) fn validate_operation(
    loaded: &Profiles,
    resource_type: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let posted = crate::request::json_body(headers, body, resource_type)?;
    let (resource, mut asked) = if posted["resourceType"] == "Parameters" {
        let parameters = posted["parameter"].as_array().cloned().unwrap_or_default();
        let resource = parameters
            .iter()
            .find(|p| p["name"] == "resource")
            .map(|p| p["resource"].clone())
            .ok_or_else(|| {
                ApiError::bad_request("invalid", "Parameters without a `resource` parameter")
            })?;
        let asked: Vec<String> = parameters
            .iter()
            .filter(|p| p["name"] == "profile")
            .filter_map(|p| p["valueUri"].as_str().or(p["valueCanonical"].as_str()))
            .map(str::to_owned)
            .collect();
        (resource, asked)
    } else {
        (posted, Vec::new())
    };
    asked.extend(
        pairs
            .iter()
            .filter(|(name, _)| name == "profile")
            .map(|(_, value)| value.clone()),
    );
    if resource["resourceType"] != resource_type {
        return Err(ApiError::bad_request(
            "invalid",
            format!(
                "{resource_type}/$validate was given a {}",
                resource["resourceType"]
                    .as_str()
                    .unwrap_or("body without resourceType")
            ),
        ));
    }
    outcome_of(loaded, resource_type, &resource, &asked)
}

/// `GET` or `POST [type]/[id]/$validate`: the stored resource (as the caller may read it),
/// checked against `?profile=` or the profiles it claims, else its type's JP Core base profile.
pub(crate) fn validate_stored(
    loaded: &Profiles,
    resource: &tsunagi_store::StoredResource,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    let value = resource
        .to_json()?
        .ok_or_else(|| ApiError::internal("a stored resource without content"))?;
    let asked: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == "profile")
        .map(|(_, value)| value.clone())
        .collect();
    outcome_of(loaded, &resource.resource_type, &value, &asked)
}

/// The OperationOutcome of checking `resource` against the profiles `asked` (or, with none, those
/// it claims, else its type's base profile).
fn outcome_of(
    loaded: &Profiles,
    resource_type: &str,
    resource: &Value,
    asked: &[String],
) -> Result<Response, ApiError> {
    let resource = resource.clone();
    let mut chosen: Vec<&Profile> = Vec::new();
    for url in asked {
        let profile = loaded.get(url).ok_or_else(|| {
            ApiError::bad_request(
                "not-supported",
                format!("the profile {url} is not loaded on this server"),
            )
        })?;
        chosen.push(profile);
    }
    if asked.is_empty() {
        chosen = applicable(loaded, &resource, None);
        if chosen.is_empty()
            && let Some(profile) = base_profile(loaded, resource_type)
        {
            chosen.push(profile);
        }
    }
    // R4B's own rules first; a profile's finding at a place already named is left out.
    let mut issues: Vec<Value> = structural_findings(&resource)?
        .iter()
        .map(crate::outcome::finding_issue)
        .collect();
    let named = |issues: &[Value], location: &str| {
        issues
            .iter()
            .any(|issue| issue["expression"][0].as_str() == Some(location))
    };
    if chosen.is_empty() && issues.is_empty() {
        issues.push(json!({
            "severity": "information",
            "code": "informational",
            "diagnostics": format!(
                "valid R4B; no profile of {resource_type} is loaded on this server ({} loaded), nothing was checked against a profile",
                loaded.len()
            ),
        }));
    } else if !chosen.is_empty() {
        match check(&chosen, &resource, None) {
            Ok(urls) if issues.is_empty() => issues.push(json!({
                "severity": "information",
                "code": "informational",
                "diagnostics": format!("no issues: conforms to {}", urls.join(", ")),
            })),
            Ok(_) => {}
            Err(error) => {
                for finding in &error.findings {
                    if !named(&issues, &finding.location) {
                        issues.push(crate::outcome::finding_issue(finding));
                    }
                }
            }
        }
    }
    let body = json!({"resourceType": "OperationOutcome", "issue": issues});
    let mut out = Vec::new();
    tsunagi_fhir::json::write_resource(&body, &mut out)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(json_response(StatusCode::OK, out))
}
