//! Content negotiation at the edge: handlers always write compact FHIR JSON; this middleware
//! answers in what the client asked for (`_format`, `Accept`, `_pretty`): FHIR XML, or indented
//! JSON. One place, so errors, Bundles and resources are all converted alike.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::outcome::{ApiError, FHIR_JSON, outcome};

/// `application/fhir+xml; charset=utf-8`.
pub const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";

/// The wire format of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `application/fhir+json` (the default).
    Json,
    /// `application/fhir+xml`.
    Xml,
}

/// The FHIR version this server speaks, as `fhirVersion` media-type parameters name it.
fn supported_version(version: &str) -> bool {
    matches!(version.trim().trim_matches('"'), "4.3" | "4.3.0")
}

/// One media type (without parameters) or `_format` shorthand → a wire format.
fn wire_of(media: &str) -> Option<Wire> {
    match media.trim().to_ascii_lowercase().as_str() {
        "json"
        | "application/json"
        | "application/fhir+json"
        | "application/json+fhir"
        | "*/*"
        | "application/*" => Some(Wire::Json),
        "xml"
        | "text/xml"
        | "application/xml"
        | "application/fhir+xml"
        | "application/xml+fhir" => Some(Wire::Xml),
        _ => None,
    }
}

/// Splits `type/sub; a=b; q=0.5` into the media type and its `q` and `fhirVersion` parameters.
fn media_range(range: &str) -> (&str, f32, Option<&str>) {
    let mut parts = range.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let (mut q, mut version) = (1.0_f32, None);
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.trim().parse().unwrap_or(0.0),
            "fhirversion" => version = Some(value),
            _ => {}
        }
    }
    (media, q, version)
}

/// Chooses the response format: `_format` wins over `Accept`; an `Accept` naming nothing we
/// produce gets the default JSON (as HAPI does), but a `fhirVersion` we do not speak is refused.
pub fn negotiate(format: Option<&str>, accept: Option<&str>) -> Result<Wire, ApiError> {
    if let Some(format) = format {
        let (media, _, version) = media_range(format);
        if version.is_some_and(|v| !supported_version(v)) {
            return Err(ApiError::not_acceptable(
                "this server speaks FHIR 4.3 (R4B) only",
            ));
        }
        return wire_of(media).ok_or_else(|| {
            ApiError::not_acceptable(format!(
                "_format={media} is not produced; use json or xml (application/fhir+json, application/fhir+xml)"
            ))
        });
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Wire::Json);
    };
    let mut ranges: Vec<(&str, f32, Option<&str>)> = accept.split(',').map(media_range).collect();
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut refused_version = false;
    for (media, q, version) in ranges {
        if q <= 0.0 {
            continue;
        }
        if version.is_some_and(|v| !supported_version(v)) {
            refused_version = true;
            continue;
        }
        if let Some(wire) = wire_of(media) {
            return Ok(wire);
        }
    }
    if refused_version {
        return Err(ApiError::not_acceptable(
            "this server speaks FHIR 4.3 (R4B) only",
        ));
    }
    Ok(Wire::Json)
}

/// The last value of a query parameter, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(key, _)| key == name)
        .last()
        .map(|(_, value)| value.into_owned())
}

/// Middleware: negotiates, runs the handler, converts its FHIR JSON body.
pub async fn convert(request: Request, next: Next) -> Response {
    let query = request.uri().query();
    let format = query_param(query, "_format");
    let pretty = query_param(query, "_pretty").as_deref() == Some("true");
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wire = match negotiate(format.as_deref(), accept.as_deref()) {
        Ok(wire) => wire,
        Err(error) => return error.into_response(),
    };
    let response = next.run(request).await;
    let is_fhir_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == FHIR_JSON.as_bytes());
    if !is_fhir_json || (wire == Wire::Json && !pretty) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let converted = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => render(&bytes, wire, pretty),
        Err(_) => Err(String::from("the response body could not be read")),
    };
    let (bytes, content_type) = match converted {
        Ok(done) => done,
        Err(reason) => {
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            let failure = outcome("fatal", "exception", &reason);
            match render(failure.to_string().as_bytes(), wire, pretty) {
                Ok(done) => done,
                Err(_) => (failure.to_string().into_bytes(), FHIR_JSON),
            }
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, Body::from(bytes))
}

/// Re-renders a compact FHIR JSON body.
fn render(json: &[u8], wire: Wire, pretty: bool) -> Result<(Vec<u8>, &'static str), String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| format!("response JSON: {e}"))?;
    match wire {
        Wire::Xml => tsunagi_fhir_xml::to_xml(&value, pretty)
            .map(|xml| (xml, FHIR_XML))
            .map_err(|e| match failing_entry(&value) {
                Some(entry) => format!("{entry} cannot be written as FHIR XML: {e}"),
                None => format!("the resource cannot be written as FHIR XML: {e}"),
            }),
        Wire::Json => tsunagi_fhir::json::to_pretty_resource(&value)
            .map(|text| (text.into_bytes(), FHIR_JSON))
            .map_err(|e| e.to_string()),
    }
}

/// The first entry of a Bundle that cannot be written as XML, named by index and reference,
/// so that one bad resource is found rather than a whole page failing without a clue.
fn failing_entry(bundle: &Value) -> Option<String> {
    let entries = bundle.get("entry")?.as_array()?;
    entries.iter().enumerate().find_map(|(index, entry)| {
        let resource = entry.get("resource")?;
        tsunagi_fhir_xml::to_xml(resource, false).err()?;
        tracing::warn!(target: "tsunagi::format", index, "a Bundle entry cannot be written as FHIR XML");
        Some(format!(
            "Bundle.entry[{index}] ({}/{})",
            resource["resourceType"].as_str().unwrap_or("?"),
            resource["id"].as_str().unwrap_or("?")
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bundle_that_cannot_be_xml_names_its_entry() {
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok"}},
            {"resource": {"resourceType": "Communication", "id": "bad", "status": "completed",
                          "probeUnknown": [[1, 2]]}}
        ]});
        let reason = render(bundle.to_string().as_bytes(), Wire::Xml, false).unwrap_err();
        assert!(
            reason.contains("Bundle.entry[1] (Communication/bad)"),
            "{reason}"
        );
        assert!(reason.contains("probeUnknown"), "{reason}");
    }

    #[test]
    fn format_parameter_wins_and_names_what_it_refuses() {
        assert_eq!(
            negotiate(Some("xml"), Some("application/fhir+json")).unwrap(),
            Wire::Xml
        );
        assert_eq!(
            negotiate(Some("application/fhir+json"), None).unwrap(),
            Wire::Json
        );
        assert_eq!(
            negotiate(Some("application/fhir+xml;fhirVersion=4.3"), None).unwrap(),
            Wire::Xml
        );
        let refused = negotiate(Some("ttl"), None).unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        assert!(refused.message.contains("ttl"));
        assert!(negotiate(Some("json; fhirVersion=4.0"), None).is_err());
    }

    #[test]
    fn accept_header_by_quality_with_json_by_default() {
        assert_eq!(negotiate(None, None).unwrap(), Wire::Json);
        assert_eq!(
            negotiate(None, Some("application/fhir+xml")).unwrap(),
            Wire::Xml
        );
        assert_eq!(
            negotiate(None, Some("text/xml, application/json")).unwrap(),
            Wire::Xml
        );
        assert_eq!(
            negotiate(
                None,
                Some("application/fhir+xml;q=0.5, application/fhir+json")
            )
            .unwrap(),
            Wire::Json
        );
        assert_eq!(
            negotiate(None, Some("text/html,application/xhtml+xml,*/*;q=0.8")).unwrap(),
            Wire::Json
        );
        assert_eq!(negotiate(None, Some("image/png")).unwrap(), Wire::Json);
        assert_eq!(
            negotiate(None, Some("application/fhir+json; fhirVersion=4.3")).unwrap(),
            Wire::Json
        );
        assert!(negotiate(None, Some("application/fhir+json; fhirVersion=5.0")).is_err());
        assert_eq!(
            negotiate(
                None,
                Some("application/fhir+json; fhirVersion=5.0, application/fhir+xml")
            )
            .unwrap(),
            Wire::Xml
        );
    }
}
