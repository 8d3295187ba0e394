//! The write endpoint: carers (and clinic systems on their behalf) create notes
//! (`POST /fhir/Communication`) and the network's standard documents (`POST
//! /fhir/DocumentReference`) about a patient whose record they may see. Whatever is addressed to
//! the hospital holding the record is queued for delivery to its EHR in the **same transaction**
//! as the resource: an outbox row with the MDM^T02 already encoded, and a Task that shows where
//! the delivery stands.
//!
//! Retries are safe: a resource's id is derived from its author facility and its first
//! identifier, so a POST that repeats an identifier (with or without `If-None-Exist`) answers
//! 200 with what exists and queues nothing twice.

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{Value, json};
use tsunagi_auth::{Interaction, Role, token::random_id};
use tsunagi_core::{
    hash::content_hash,
    ids::logical_id,
    time::{format_hl7_jst, format_instant_jst},
};
use tsunagi_fhir::documents::{
    COMMUNICATION_CATEGORY_SYSTEM, DOCUMENT_TYPE_SYSTEM, INTENDED_RECIPIENT, NOTE, document_type,
};
use tsunagi_hl7v2::document::{Attachment, OutboundDocument};
use tsunagi_store::{
    Batch, DeliveryState, Operation, OutboundMessage, ResourceWrite, StoreError,
    governance::Facility,
};

use crate::{AppState, outcome::ApiError, security::Caller};

/// Largest attachment accepted, in base64 characters (about 7.5 MB of PDF).
const MAX_ATTACHMENT: usize = 10 * 1024 * 1024;

/// The JP Core patient-id system of a facility (`urn:oid:1.2.392.100495.20.3.51.1` + code).
fn patient_id_system(facility: &str) -> String {
    format!("urn:oid:1.2.392.100495.20.3.51.1{facility}")
}

/// The first identifier with both system and value, which names the resource for retries.
fn business_identifier(resource: &Value) -> Option<(String, String)> {
    resource["identifier"]
        .as_array()?
        .iter()
        .find_map(|identifier| {
            Some((
                identifier["system"].as_str()?.to_owned(),
                identifier["value"].as_str()?.to_owned(),
            ))
        })
}

/// `If-None-Exist`: only `identifier=system|value` is supported, and the body must carry it.
fn check_if_none_exist(
    headers: &HeaderMap,
    identifier: Option<&(String, String)>,
) -> Result<(), ApiError> {
    let Some(value) = headers.get("if-none-exist") else {
        return Ok(());
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid", "If-None-Exist is not ASCII"))?;
    let pairs = crate::decode_pairs(Some(text.trim_start_matches('?')));
    let [(name, wanted)] = pairs.as_slice() else {
        return Err(ApiError::bad_request(
            "not-supported",
            "If-None-Exist supports exactly one parameter: identifier=system|value",
        ));
    };
    if name != "identifier" {
        return Err(ApiError::bad_request(
            "not-supported",
            format!("If-None-Exist supports identifier=system|value, not {name}"),
        ));
    }
    match identifier {
        Some((system, value)) if *wanted == format!("{system}|{value}") => Ok(()),
        _ => Err(ApiError::bad_request(
            "invalid",
            format!(
                "If-None-Exist names identifier {wanted}; the body's first identifier must be the same"
            ),
        )),
    }
}

/// True when `text` is plausible base64 (alphabet, padding, length).
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// An attachment as the EHR receives it; text/plain data is returned as its lines instead.
fn attachment(value: &Value, what: &str) -> Result<Result<Attachment, Vec<String>>, ApiError> {
    let content_type = value["contentType"].as_str().unwrap_or("");
    let data = value["data"].as_str().ok_or_else(|| {
        ApiError::unprocessable(format!(
            "{what}: give the attachment's content inline as base64 data"
        ))
    })?;
    if data.len() > MAX_ATTACHMENT || !is_base64(data) {
        return Err(ApiError::unprocessable(format!(
            "{what}: data must be base64 of at most {MAX_ATTACHMENT} characters"
        )));
    }
    match content_type.split(';').next().unwrap_or("").trim() {
        "text/plain" => {
            let bytes = tsunagi_core::base64::decode(data);
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::unprocessable(format!("{what}: text/plain data must be UTF-8"))
            })?;
            Ok(Err(text.lines().map(str::to_owned).collect()))
        }
        "application/pdf" => Ok(Ok(Attachment {
            content_type: "application/pdf".to_owned(),
            base64: data.to_owned(),
            title: value["title"].as_str().unwrap_or("").to_owned(),
        })),
        other => Err(ApiError::unprocessable(format!(
            "{what}: contentType {other:?} is not accepted (text/plain or application/pdf)"
        ))),
    }
}

/// What a note or document says, as the EHR receives it.
struct Content {
    lines: Vec<String>,
    attachments: Vec<Attachment>,
}

fn communication_content(resource: &Value) -> Result<Content, ApiError> {
    let payload = resource["payload"].as_array().filter(|p| !p.is_empty());
    let payload = payload.ok_or_else(|| {
        ApiError::unprocessable("a Communication needs at least one payload (contentString)")
    })?;
    let mut content = Content {
        lines: Vec::new(),
        attachments: Vec::new(),
    };
    for (index, part) in payload.iter().enumerate() {
        if let Some(text) = part["contentString"].as_str() {
            content.lines.extend(text.lines().map(str::to_owned));
        } else if part.get("contentAttachment").is_some() {
            match attachment(&part["contentAttachment"], &format!("payload[{index}]"))? {
                Ok(file) => content.attachments.push(file),
                Err(lines) => content.lines.extend(lines),
            }
        } else if part.get("contentReference").is_none() {
            return Err(ApiError::unprocessable(format!(
                "payload[{index}] has no content[x]"
            )));
        }
    }
    Ok(content)
}

fn document_content(resource: &Value) -> Result<Content, ApiError> {
    let parts = resource["content"].as_array().filter(|p| !p.is_empty());
    let parts = parts.ok_or_else(|| {
        ApiError::unprocessable("a DocumentReference needs at least one content.attachment")
    })?;
    let mut content = Content {
        lines: Vec::new(),
        attachments: Vec::new(),
    };
    for (index, part) in parts.iter().enumerate() {
        match attachment(&part["attachment"], &format!("content[{index}]"))? {
            Ok(file) => content.attachments.push(file),
            Err(lines) => content.lines.extend(lines),
        }
    }
    Ok(content)
}

/// The registered facilities `references` name (`Organization/<code>`); an unknown one is an
/// error.
fn recipients<'a>(
    references: impl Iterator<Item = &'a Value>,
    facilities: &[Facility],
) -> Result<Vec<Facility>, ApiError> {
    let mut found: Vec<Facility> = Vec::new();
    for reference in references {
        let Some(code) = crate::consent_api::referenced_id(reference, "Organization") else {
            continue;
        };
        let facility = facilities
            .iter()
            .find(|facility| facility.code == code)
            .ok_or_else(|| {
                ApiError::unprocessable(format!("Organization/{code} is not a registered facility"))
            })?;
        if !found.contains(facility) {
            found.push(facility.clone());
        }
    }
    if found.is_empty() {
        return Err(ApiError::unprocessable(
            "name at least one recipient facility as Organization/<10-digit code>",
        ));
    }
    Ok(found)
}

/// `POST /fhir/Communication` and `POST /fhir/DocumentReference`.
pub(crate) async fn create(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    caller.require(resource_type, Interaction::Create)?;
    let mut resource = crate::request::resource_body(headers, body, resource_type)?;
    let patient = crate::consent_api::referenced_id(&resource["subject"], "Patient")
        .ok_or_else(|| ApiError::bad_request("required", "subject must be Patient/<id>"))?
        .to_owned();
    crate::valid_id(&patient)?;
    // One the caller may not see answers exactly like one that does not exist.
    let patient_resource = state
        .store
        .read(&caller.access, "Patient", &patient)
        .await?
        .filter(|p| !p.deleted)
        .ok_or_else(|| ApiError::not_found(format!("Patient/{patient} is not known")))?;
    caller.touch_patient(&patient);
    let principal = &caller.principal;
    let facility = principal.facility.clone();
    let identifier = business_identifier(&resource);
    check_if_none_exist(headers, identifier.as_ref())?;
    let id = match &identifier {
        Some((system, value)) => logical_id(&[&facility, system, value]),
        None => random_id(16),
    };
    // A repeated identifier is a retry: answer with what exists, write and queue nothing.
    if identifier.is_some()
        && let Some(existing) = state.store.read(&caller.access, resource_type, &id).await?
        && !existing.deleted
    {
        return respond(state, caller, headers, resource_type, &id, StatusCode::OK).await;
    }

    let facilities = state.governance.facilities().await?;
    let holder = state.governance.holder(&patient).await?.flatten();
    let now = state.clock.now_micros();
    let sent = format_instant_jst(now);
    let author = json!({"reference": format!("Organization/{facility}")});
    let (recipients, content, document) = if resource_type == "Communication" {
        if resource["status"].as_str().is_none() {
            return Err(ApiError::bad_request("required", "status is required"));
        }
        let recipients = recipients(
            resource["recipient"].as_array().into_iter().flatten(),
            &facilities,
        )?;
        if let Some(parent) = resource["inResponseTo"]
            .as_array()
            .into_iter()
            .flatten()
            .next()
        {
            let parent_id =
                crate::consent_api::referenced_id(parent, "Communication").ok_or_else(|| {
                    ApiError::unprocessable("inResponseTo must be Communication/<id>")
                })?;
            if state
                .store
                .read(&caller.access, "Communication", parent_id)
                .await?
                .is_none_or(|p| p.deleted)
            {
                return Err(ApiError::unprocessable(format!(
                    "inResponseTo: Communication/{parent_id} is not known"
                )));
            }
        }
        let content = communication_content(&resource)?;
        // The server asserts who sent it and when; a note is always in the category `note`.
        resource["sender"] = author.clone();
        if resource["sent"].as_str().is_none() {
            resource["sent"] = json!(sent);
        }
        let category = json!({"coding": [{"system": COMMUNICATION_CATEGORY_SYSTEM, "code": NOTE, "display": "連絡"}]});
        match resource["category"].as_array_mut() {
            Some(categories) if !categories.contains(&category) => categories.push(category),
            Some(_) => {}
            None => resource["category"] = json!([category]),
        }
        (recipients, content, (NOTE.to_owned(), "連絡".to_owned()))
    } else {
        if resource["status"] != "current" {
            return Err(ApiError::unprocessable(
                "a new DocumentReference must have status current",
            ));
        }
        let kind = resource["type"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|coding| coding["system"] == DOCUMENT_TYPE_SYSTEM)
            .find_map(|coding| coding["code"].as_str().and_then(document_type))
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "type must carry a code of {DOCUMENT_TYPE_SYSTEM} ({})",
                    tsunagi_fhir::documents::DOCUMENT_TYPES
                        .iter()
                        .map(|kind| kind.code)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        // A clinic system writes on behalf of people whose role it vouches for.
        if principal.role != Role::System && !kind.senders.contains(&principal.role.code()) {
            return Err(ApiError::forbidden(format!(
                "a {} ({}) is sent by {}, not by a {}",
                kind.display,
                kind.code,
                kind.senders.join(" or "),
                principal.role
            )));
        }
        let references: Vec<&Value> = resource["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|extension| extension["url"] == INTENDED_RECIPIENT)
            .map(|extension| &extension["valueReference"])
            .collect();
        let recipients = recipients(references.into_iter(), &facilities)?;
        if let Some(wrong) = recipients
            .iter()
            .find(|recipient| !kind.recipients.contains(&recipient.kind.as_str()))
        {
            return Err(ApiError::unprocessable(format!(
                "a {} goes to a {}, not to {} ({})",
                kind.display,
                kind.recipients.join(", "),
                wrong.code,
                wrong.kind
            )));
        }
        let content = document_content(&resource)?;
        resource["author"] = json!([author]);
        if let Some(holder) = &holder {
            resource["custodian"] = json!({"reference": format!("Organization/{holder}")});
        }
        if resource["date"].as_str().is_none() {
            resource["date"] = json!(sent);
        }
        (
            recipients,
            content,
            (kind.code.to_owned(), kind.display.to_owned()),
        )
    };
    resource["id"] = json!(id);
    resource["meta"] =
        json!({"source": format!("urn:tsunagi:api:{facility}#{}", principal.subject)});
    let tid = format!("{resource_type}/{id}");

    // Delivery to the hospital holding the record, when it is a recipient.
    let resources = vec![ResourceWrite::from_json(resource_type, &id, &resource)?];
    let mut operations = Vec::new();
    if let Some(holder) = holder.as_deref()
        && recipients.iter().any(|recipient| recipient.code == holder)
    {
        let control_id = format!("T{:016X}", content_hash(tid.as_bytes()));
        let patient_json = patient_resource.to_json()?.unwrap_or_default();
        let names = &patient_json["name"][0];
        let local_id = patient_json["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|identifier| identifier["system"] == patient_id_system(holder))
            .and_then(|identifier| identifier["value"].as_str())
            .unwrap_or(&patient)
            .to_owned();
        let message = OutboundDocument {
            sending_application: "TSUNAGI".to_owned(),
            sending_facility: facility.clone(),
            receiving_application: String::new(),
            receiving_facility: holder.to_owned(),
            timestamp: format_hl7_jst(now),
            control_id: control_id.clone(),
            patient_id: local_id,
            patient_name: (
                names["family"].as_str().unwrap_or("").to_owned(),
                names["given"][0].as_str().unwrap_or("").to_owned(),
            ),
            document_type: document.clone(),
            activity_time: format_hl7_jst(now),
            originator: (principal.subject.clone(), principal.role.code().to_owned()),
            unique_id: tid.clone(),
            parent_id: resource["inResponseTo"][0]["reference"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            lines: content.lines,
            attachments: content.attachments,
        };
        let (payload, substitutions) = message.encode();
        if !substitutions.is_empty() {
            tracing::info!(target: "tsunagi::outbox", resource = %tid, count = substitutions.len(), "characters outside JIS X 0208 substituted for the hospital");
        }
        let task_id = logical_id(&["delivery", resource_type, &id, holder]);
        let task = json!({
            "resourceType": "Task",
            "id": task_id,
            "meta": {"source": format!("urn:tsunagi:outbox#{control_id}")},
            "status": "requested",
            "businessStatus": {"text": "queued"},
            "intent": "order",
            "code": {"text": "deliver to the hospital's EHR (HL7 v2 MDM^T02)"},
            "focus": {"reference": tid},
            "for": {"reference": format!("Patient/{patient}")},
            "authoredOn": sent,
            "lastModified": sent,
            "requester": author,
            "owner": {"reference": format!("Organization/{holder}")},
            "identifier": [{"system": "urn:tsunagi:outbox", "value": control_id}]
        });
        // The Task is a source of its own: the delivery worker rewrites it as attempts go.
        operations.push(Operation::ReplaceSource {
            source_key: format!("outbox:Task/{task_id}"),
            facility: holder.to_owned(),
            resources: vec![ResourceWrite::from_json("Task", &task_id, &task)?],
        });
        operations.push(Operation::Enqueue(Box::new(OutboundMessage {
            seq: 0,
            destination: holder.to_owned(),
            resource: tid.clone(),
            task: format!("Task/{task_id}"),
            patient: patient.clone(),
            control_id,
            payload,
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt: now,
            last_error: String::new(),
            ack: Vec::new(),
            created: now,
            updated: now,
        })));
    }
    operations.insert(
        0,
        Operation::ReplaceSource {
            source_key: format!("api:{facility}:{tid}"),
            facility: holder.unwrap_or(facility),
            resources,
        },
    );
    // The check above read outside the write: the write checks again inside its transaction,
    // so a retry racing its first attempt (still waiting for the writer) answers like a retry.
    if identifier.is_some() {
        operations.insert(0, Operation::RequireNew { tid: tid.clone() });
    }
    let status = match state.store.apply(Batch { operations }).await {
        Ok(_) => StatusCode::CREATED,
        // Only when what the identifier names now exists: another conflict stays an error.
        Err(StoreError::Conflict(reason))
            if identifier.is_some()
                && state
                    .store
                    .read(&caller.access, resource_type, &id)
                    .await?
                    .is_some_and(|existing| !existing.deleted) =>
        {
            tracing::debug!(target: "tsunagi::notes", resource = %tid, %reason, "a retry raced its first attempt");
            StatusCode::OK
        }
        Err(error) => return Err(error.into()),
    };
    respond(state, caller, headers, resource_type, &id, status).await
}

/// The stored resource with `Location` and `ETag`.
async fn respond(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    resource_type: &str,
    id: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let resource = state.store.read(&caller.access, resource_type, id).await?;
    let resource = match resource {
        Some(resource) => resource,
        None => {
            return Err(ApiError::internal(format!(
                "{resource_type}/{id} was not stored"
            )));
        }
    };
    crate::write_answer::answer(
        state.settings.base_url.as_deref(),
        headers,
        &resource,
        status,
    )
}
