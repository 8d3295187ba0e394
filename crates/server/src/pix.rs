//! `Patient/$ihe-pix` (IHE PIXm, ITI-83): the identifiers a person has at the other facilities of
//! the network, from the regional links (紐付け). Only system clients ask, and only about links
//! their facility is party to: a caller whose facility holds none of the person's records learns
//! nothing beyond what it may already read.

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};
use tsunagi_auth::{Interaction, SubjectKind};
use tsunagi_fhir::query::SearchQuery;
use tsunagi_store::governance::Access;

use crate::{AppState, json_response, outcome::ApiError, param, security::Caller};

/// `GET /fhir/Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=…]`.
pub(crate) async fn ihe_pix(
    state: &AppState,
    caller: &Caller,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    if caller.principal.kind != SubjectKind::System {
        return Err(ApiError::forbidden(
            "$ihe-pix is for system clients (IHE PIXm Patient Identifier Cross-reference Consumer)",
        ));
    }
    caller.require("Patient", Interaction::Read)?;
    for (name, _) in pairs {
        if !matches!(
            name.as_str(),
            "sourceIdentifier" | "targetSystem" | "_format" | "_pretty"
        ) {
            return Err(ApiError::bad_request(
                "not-supported",
                format!("$ihe-pix takes sourceIdentifier and targetSystem, not {name}"),
            ));
        }
    }
    let source = param(pairs, "sourceIdentifier").ok_or_else(|| {
        ApiError::bad_request("required", "sourceIdentifier=<system>|<value> is required")
    })?;
    let Some(source @ (system, value)) = source
        .split_once('|')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
    else {
        return Err(ApiError::bad_request(
            "invalid",
            format!("sourceIdentifier={source}: give both system and value (system|value)"),
        ));
    };
    let targets: Vec<&str> = pairs
        .iter()
        .filter(|(name, _)| name == "targetSystem")
        .flat_map(|(_, value)| value.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    let now = state.clock.now_micros();
    let query = SearchQuery::parse(
        "Patient",
        &[("identifier".to_owned(), format!("{system}|{value}"))],
        now.div_euclid(1_000_000),
        true,
    )
    .map_err(|error| ApiError::bad_request("invalid", error.to_string()))?;
    let keys = state.store.search(&caller.access, &query).await?;
    let sources = state.store.fetch(&caller.access, &keys).await?;
    let Some(source_patient) = sources.iter().find(|p| !p.deleted) else {
        // PIXm: an identifier that is not known (or not visible, which looks the same) is 404.
        return Err(ApiError::not_found(format!(
            "no patient with identifier {system}|{value}"
        )));
    };
    caller.touch([source_patient]);
    let linked = state.governance.linked(&source_patient.id).await?;
    let facility = caller.principal.facility.as_str();
    let mut parameters = Vec::new();
    if linked
        .iter()
        .any(|record| record.facility.as_deref() == Some(facility))
    {
        for record in &linked {
            let Some(holder) = &record.facility else {
                continue;
            };
            // Each record is read as its holding facility sees it: only its identifiers leave.
            let holder_view = Access::facility(holder.clone(), now);
            let Some(patient) = state
                .store
                .read(&holder_view, "Patient", &record.patient)
                .await?
                .filter(|p| !p.deleted)
            else {
                continue;
            };
            caller.touch_patient(&patient.id);
            let json = patient.to_json()?.unwrap_or(Value::Null);
            let mut any = false;
            for identifier in json["identifier"].as_array().into_iter().flatten() {
                let system = identifier["system"].as_str().unwrap_or_default();
                let is_source = patient.id == source_patient.id
                    && system == source.0
                    && identifier["value"] == source.1;
                if is_source || (!targets.is_empty() && !targets.contains(&system)) {
                    continue;
                }
                any = true;
                parameters.push(json!({
                    "name": "targetIdentifier",
                    "valueIdentifier": {"system": system, "value": identifier["value"]}
                }));
            }
            if any || targets.is_empty() {
                parameters.push(json!({
                    "name": "targetId",
                    "valueReference": {"reference": format!("Patient/{}", patient.id)}
                }));
            }
        }
    }
    let body = json!({"resourceType": "Parameters", "parameter": parameters});
    let mut out = Vec::new();
    tsunagi_fhir::json::write_resource(&body, &mut out)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(json_response(StatusCode::OK, out))
}
