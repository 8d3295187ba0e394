//! Reading a request: query pairs, the base URL the client used, ids and types, FHIR JSON
//! bodies (every endpoint that takes a resource reads it with `resource_body`), and the FHIR JSON
//! response.

use axum::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::outcome::ApiError;
use crate::outcome::FHIR_JSON;

/// Decoded query parameters, in order.
pub(crate) fn decode_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|raw| {
        form_urlencoded::parse(raw.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A FHIR JSON response; [`format::convert`] turns it into XML or indents it when the client asked.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// The base URL (ending in `/fhir`) the client used.
pub(crate) fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_owned();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let host_ok = |host: &&str| {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let scheme = match first("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let mut host = first("x-forwarded-host")
        .filter(host_ok)
        .or_else(|| first("host").filter(host_ok))
        .unwrap_or("localhost")
        .to_owned();
    if let Some(port) = first("x-forwarded-port").filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && !host.contains(':')
        && !matches!((scheme, port), ("http", "80") | ("https", "443"))
    {
        host = format!("{host}:{port}");
    }
    let prefix = first("x-forwarded-prefix")
        .filter(|p| {
            p.starts_with('/')
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        })
        .unwrap_or("")
        .trim_end_matches('/');
    format!("{scheme}://{host}{prefix}/fhir")
}

pub(crate) fn valid_type(resource_type: &str) -> Result<(), ApiError> {
    let ok = resource_type.starts_with(|c: char| c.is_ascii_uppercase())
        && resource_type.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{resource_type} is not a resource type"
        )))
    }
}

pub(crate) fn valid_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("{id} is not a FHIR id")))
    }
}

pub(crate) fn strict_handling(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(';')
                .any(|part| part.trim() == "handling=strict")
        })
}

/// A token of the `Prefer` header (RFC 7240), e.g. `return` → `minimal`.
pub(crate) fn preference<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .find_map(|part| {
            let (key, value) = part.split_once('=')?;
            (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"'))
        })
}

/// The parameters of an operation invoked by POST: a `Parameters` body or a form
/// (FHIR: an operation that changes nothing may be invoked by GET or POST). Only primitive
/// values, as the read-only operations here take: an Identifier, Coding or Reference value
/// becomes the token or reference text a URL would carry. Empty for GET.
pub(crate) fn operation_parameters(
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    operation: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    if *method != Method::POST || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" {
        let form = std::str::from_utf8(body).map_err(|_| {
            ApiError::bad_request("invalid", format!("the {operation} form is not UTF-8"))
        })?;
        return Ok(decode_pairs(Some(form)));
    }
    let posted = json_body(headers, body, "Parameters")?;
    if posted["resourceType"] != "Parameters" {
        return Err(ApiError::bad_request(
            "invalid",
            format!("{operation} takes a Parameters resource or a form, not this body"),
        ));
    }
    let mut pairs = Vec::new();
    let parameters = posted["parameter"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (index, parameter) in parameters.iter().enumerate() {
        let place = format!("Parameters.parameter[{index}]");
        let name = parameter["name"]
            .as_str()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ApiError::bad_request("required", format!("{place} has no name")))?;
        let value = parameter
            .as_object()
            .and_then(|fields| fields.iter().find(|(key, _)| key.starts_with("value")));
        let text = match value {
            Some((_, Value::String(text))) => text.clone(),
            Some((_, Value::Bool(flag))) => flag.to_string(),
            Some((_, Value::Number(number))) => number.to_string(),
            Some((key, Value::Object(fields))) => match key.as_str() {
                "valueIdentifier" | "valueCoding" => {
                    let system = fields["system"].as_str().unwrap_or("");
                    let code = fields
                        .get("value")
                        .or_else(|| fields.get("code"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if system.is_empty() {
                        code.to_owned()
                    } else {
                        format!("{system}|{code}")
                    }
                }
                "valueReference" => fields["reference"].as_str().unwrap_or("").to_owned(),
                _ => {
                    return Err(ApiError::bad_request(
                        "not-supported",
                        format!("{place} ({name}): a {key} is not taken by {operation}"),
                    ));
                }
            },
            _ => {
                return Err(ApiError::bad_request(
                    "not-supported",
                    format!("{place} ({name}): {operation} takes only primitive values"),
                ));
            }
        };
        pairs.push((name.to_owned(), text));
    }
    Ok(pairs)
}

/// The body, which must be FHIR JSON of `resource_type` (every write endpoint reads its body
/// this way).
pub(crate) fn resource_body(
    headers: &HeaderMap,
    body: &[u8],
    resource_type: &str,
) -> Result<Value, ApiError> {
    let resource = json_body(headers, body, resource_type)?;
    if resource["resourceType"] != resource_type {
        return Err(ApiError::bad_request(
            "invalid",
            format!("the body is not a {resource_type} resource"),
        ));
    }
    crate::validation::structure(&resource)?;
    Ok(resource)
}

/// A FHIR JSON object body (`what` names it in the error).
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8], what: &str) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(media, "application/fhir+json" | "application/json") {
        return Err(ApiError::unsupported_media(format!(
            "send the {what} as application/fhir+json (got {content_type:?})"
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request("invalid", format!("the body is not JSON: {error}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid",
            "the body is not an object",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn base_url_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.jp:8080"));
        assert_eq!(base_url(None, &headers), "http://example.jp:8080/fhir");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("portal.example.jp"),
        );
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/gw"));
        assert_eq!(
            base_url(None, &headers),
            "https://portal.example.jp/gw/fhir"
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil\"host"));
        assert_eq!(base_url(None, &headers), "https://example.jp:8080/gw/fhir");
    }
}
