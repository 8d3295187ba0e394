//! `POST /hl7v2`: HL7 v2 over HTTP for senders that cannot open MLLP (lab companies posting
//! results). The body is one ER7 message (ISO-2022-JP or UTF-8); the answer is its ACK, 200 for
//! AA/AE/AR alike, as HL7 over HTTP does. The message goes through the same intake as MLLP —
//! duplicates, quarantine, commit before the ACK — and the sender is the system client the token
//! was issued to, matched against the feeds' `clients`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tsunagi_auth::Role;

use crate::{outcome::ApiError, security::Caller};

/// The media type of an ER7 message (HL7 over HTTP).
pub const ER7: &str = "x-application/hl7-v2+er7";

/// Where `POST /hl7v2` hands messages: the HL7 v2 feed adapter's intake, wired by the binary.
#[async_trait::async_trait]
pub trait MessageIntake: Send + Sync {
    /// Takes one message from the system client `client`; `Ok(ack)` once it is committed (or
    /// refused), `Err` when the store could not commit (the sender must resend).
    async fn submit(&self, raw: Vec<u8>, client: String) -> Result<Option<Vec<u8>>, String>;

    /// The lab company a system client posts results for, and the facilities it reports for
    /// (`POST /fhir` transactions); `None` when the client is no lab's.
    fn lab_scope(&self, _client: &str) -> Option<crate::transaction_api::LabScope> {
        None
    }
}

/// `POST /hl7v2`.
pub(crate) async fn post(
    intake: Option<&Arc<dyn MessageIntake>>,
    caller: &Caller,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if caller.principal.role != Role::System {
        return Err(ApiError::forbidden(
            "POST /hl7v2 is for registered system clients (lab companies, hospital adapters)",
        ));
    }
    let Some(intake) = intake else {
        return Err(ApiError::not_found(
            "this server takes no HL7 v2 over HTTP: no hl7v2 sources are configured",
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(media, ER7 | "application/hl7-v2" | "text/plain") {
        return Err(ApiError::unsupported_media(format!(
            "send one HL7 v2 message as {ER7} (got {content_type:?})"
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("required", "the body is empty"));
    }
    // MLLP framing bytes sent over HTTP by mistake are tolerated.
    let mut raw = body.to_vec();
    if raw.first() == Some(&0x0b) {
        raw.remove(0);
    }
    while matches!(raw.last(), Some(0x1c | 0x0d | 0x0a)) {
        raw.pop();
    }
    raw.push(b'\r');
    match intake.submit(raw, caller.principal.client_id.clone()).await {
        Ok(Some(ack)) => {
            let mut response = (StatusCode::OK, ack).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ER7));
            Ok(response)
        }
        Ok(None) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(reason) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "transient",
            message: format!("the message was not stored ({reason}); send it again"),
            findings: Vec::new(),
        }),
    }
}
