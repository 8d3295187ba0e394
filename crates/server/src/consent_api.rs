//! Consent over FHIR (IHE PCF style): the facility holding a patient's record invites another
//! facility by `POST /fhir/Consent`, and withdraws by `PUT /fhir/Consent/{id}` with status
//! `inactive`. The governance record is the truth; the Consent resource is its projection,
//! written in the same transaction, so the next request already sees the new permitted set.

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::Value;
use tsunagi_auth::{Interaction, token::random_id};
use tsunagi_core::time::fhir_date_range;
use tsunagi_store::governance::Consent;

use crate::{AppState, outcome::ApiError, security::Caller};

use tsunagi_store::projection::OPEN_END;

/// The logical id of a `Type/id` reference (or of an identifier of the 医療機関コード system
/// for organizations).
pub(crate) fn referenced_id<'a>(reference: &'a Value, resource_type: &str) -> Option<&'a str> {
    if let Some(text) = reference["reference"].as_str() {
        return text.strip_prefix(resource_type)?.strip_prefix('/');
    }
    if resource_type == "Organization"
        && reference["identifier"]["system"] == tsunagi_fhir::systems::MEDICAL_ORGANIZATION_ID
    {
        return reference["identifier"]["value"].as_str();
    }
    None
}

/// Microseconds of a FHIR date or dateTime: the start of its range, or its end.
fn instant(text: &str, end: bool) -> Result<i64, ApiError> {
    let (start, stop) = fhir_date_range(text).ok_or_else(|| {
        ApiError::bad_request("invalid", format!("{text} is not a FHIR date or dateTime"))
    })?;
    Ok(if end { stop } else { start }.saturating_mul(1_000_000))
}

/// `POST /fhir/Consent`: an invitation from the caller's facility, which must hold the patient's
/// record, to the one facility named as information recipient (`provision.actor` with role
/// `IRCP`), for `provision.period` (from now and open-ended when absent).
pub(crate) async fn create(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    caller.require("Consent", Interaction::Create)?;
    let resource = crate::request::resource_body(headers, body, "Consent")?;
    if resource["status"] != "active" {
        return Err(ApiError::unprocessable(
            "a new Consent must have status active",
        ));
    }
    let patient = referenced_id(&resource["patient"], "Patient")
        .ok_or_else(|| ApiError::bad_request("required", "Consent.patient must be Patient/<id>"))?
        .to_owned();
    crate::valid_id(&patient)?;
    // One the caller may not see answers exactly like one that does not exist.
    if state
        .store
        .read(&caller.access, "Patient", &patient)
        .await?
        .is_none_or(|p| p.deleted)
    {
        return Err(ApiError::not_found(format!(
            "Patient/{patient} is not known"
        )));
    }
    caller.touch_patient(&patient);
    let facility = &caller.principal.facility;
    if state
        .governance
        .holder(&patient)
        .await?
        .flatten()
        .as_deref()
        != Some(facility.as_str())
    {
        return Err(ApiError::forbidden(format!(
            "only the facility holding Patient/{patient}'s record may invite another facility to it"
        )));
    }
    let recipients: Vec<&str> = resource["provision"]["actor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|actor| {
            actor["role"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|coding| coding["code"] == "IRCP")
        })
        .filter_map(|actor| referenced_id(&actor["reference"], "Organization"))
        .collect();
    let [viewing] = recipients.as_slice() else {
        return Err(ApiError::unprocessable(
            "name exactly one information recipient: provision.actor with role IRCP and reference Organization/<10-digit code>",
        ));
    };
    if viewing == facility {
        return Err(ApiError::unprocessable(
            "a facility cannot invite itself: it already holds the record",
        ));
    }
    if !state
        .governance
        .facilities()
        .await?
        .iter()
        .any(|known| known.code == *viewing)
    {
        return Err(ApiError::unprocessable(format!(
            "Organization/{viewing} is not a registered facility"
        )));
    }
    let now = state.clock.now_micros();
    let period = &resource["provision"]["period"];
    let start = match period["start"].as_str() {
        Some(text) => instant(text, false)?,
        None => now,
    };
    let end = match period["end"].as_str() {
        Some(text) => instant(text, true)?,
        None => OPEN_END,
    };
    if end <= start {
        return Err(ApiError::unprocessable(
            "provision.period.end must be after its start",
        ));
    }
    let id = random_id(16);
    state
        .governance
        .put_consent(&Consent {
            id: id.clone(),
            patient,
            disclosing: facility.clone(),
            viewing: (*viewing).to_owned(),
            start,
            end,
            withdrawn_at: None,
            source: "invitation".to_owned(),
            created_by: caller.principal.subject.clone(),
            created_at: now,
        })
        .await?;
    stored(state, caller, headers, &id, StatusCode::CREATED).await
}

/// `PUT /fhir/Consent/{id}` with status `inactive`: withdrawal, by the disclosing facility. The
/// terms of a consent never change: any other update is refused.
pub(crate) async fn update(
    state: &AppState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    crate::valid_id(id)?;
    caller.require("Consent", Interaction::Update)?;
    let resource = crate::request::resource_body(headers, body, "Consent")?;
    if resource["id"] != id {
        return Err(ApiError::bad_request(
            "invalid",
            format!("the body's id must be {id}"),
        ));
    }
    let Some(current) = state.store.read(&caller.access, "Consent", id).await? else {
        return Err(ApiError::not_found(format!("Consent/{id} is not known")));
    };
    caller.touch([&current]);
    // `If-Match`: the update applies only to the version the client read (weak comparison).
    if let Some(condition) = headers
        .get(axum::http::header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
    {
        let tag = crate::etag(current.version);
        let matches = condition.split(',').any(|candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/") == tag.trim_start_matches("W/")
        });
        if !matches {
            return Err(ApiError::precondition_failed(format!(
                "Consent/{id} is at version {} ({tag}), not {condition}",
                current.version
            )));
        }
    }
    let patient = current.patient.clone().unwrap_or_default();
    let record = state
        .governance
        .consents(Some(&patient))
        .await?
        .into_iter()
        .find(|consent| consent.id == id)
        .ok_or_else(|| ApiError::not_found(format!("Consent/{id} is not known")))?;
    if record.disclosing != caller.principal.facility {
        return Err(ApiError::forbidden(
            "only the disclosing facility may withdraw its consent",
        ));
    }
    match resource["status"].as_str() {
        Some("inactive") => {
            if record.withdrawn_at.is_none() {
                state
                    .governance
                    .withdraw_consent(id, state.clock.now_micros())
                    .await?;
            }
            stored(state, caller, headers, id, StatusCode::OK).await
        }
        Some("active") if record.withdrawn_at.is_none() => {
            stored(state, caller, headers, id, StatusCode::OK).await
        }
        _ => Err(ApiError::unprocessable(
            "a consent's terms never change: withdraw it (status inactive) and record a new one",
        )),
    }
}

/// The Consent as stored, with `Location` and `ETag`.
async fn stored(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let resource = state
        .store
        .read(&caller.access, "Consent", id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("Consent/{id} was not stored")))?;
    crate::write_answer::answer(
        state.settings.base_url.as_deref(),
        headers,
        &resource,
        status,
    )
}
