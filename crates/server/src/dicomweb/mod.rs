//! DICOMweb through the gateway (`/dicomweb`): a hospital's images opened under the same token,
//! consent and audit as the rest of the record, its PACS never exposed.
//!
//! - **Search (QIDO-RS)** — `studies`, `studies/{study}/series`, `…/instances` — is answered
//!   from what the gateway knows ([`qido`]: the ImagingStudy resources the caller may see), not
//!   forwarded: a search can never reach a patient the caller may not see.
//! - **Retrieval (WADO-RS)** — a study, series or instance; `metadata`; `frames/{n}`; `rendered`
//!   (JPEG or PNG, for viewers without DICOM); `bulk/{tag}` — is forwarded to the PACS of the
//!   hospital whose study it is ([`proxy`]) only after the study was found among the
//!   ImagingStudy resources the caller may see, by its Study Instance UID, under the caller's
//!   access (the store's one consent rule); a series or instance must be one the gateway knows
//!   in that study. Hidden is 404, as absent, and audited like every request ([`crate::security::guard`]:
//!   one AuditEvent per patient, the study UID in its path).
//! - SMART scopes as for FHIR: search needs `ImagingStudy.s`, retrieval `ImagingStudy.r`.
//!
//! Which PACS: the ImagingStudy's `endpoint` names `Endpoint/dicomweb-<facility>`
//! ([`tsunagi_fhir::endpoint`]), and the proxy holds that facility's PACS.

mod proxy;
mod qido;
mod relay;

use std::sync::Arc;

use axum::{
    Extension,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, Uri, header},
    response::Response,
};
use serde_json::Value;
use tsunagi_auth::Interaction;
use tsunagi_store::SearchQuery;

pub use proxy::{DicomWebSettings, Pacs};
pub(crate) use proxy::{Forward, Proxy};

use crate::{
    AppState, Who,
    outcome::ApiError,
    request::{base_url, decode_pairs},
    security::Caller,
};

/// `GET /dicomweb/studies`: QIDO-RS, from what the gateway knows.
pub(crate) async fn search_studies(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = decode_pairs(raw.as_deref());
    qido::studies(&state, &caller, &pairs, &dicomweb_base(&state, &headers)).await
}

/// `GET /dicomweb/studies/{study}` and everything below it: the path read whole (see [`at`]).
pub(crate) async fn study(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    at(&state, &caller, &uri, &headers).await
}

/// An answer about a patient: kept by no shared cache, never sniffed into a page of this origin.
pub(crate) fn private(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The gateway's DICOMweb base the client used (`…/dicomweb`, beside `…/fhir`).
fn dicomweb_base(state: &AppState, headers: &HeaderMap) -> String {
    let base = base_url(state.settings.base_url.as_deref(), headers);
    format!(
        "{}/dicomweb",
        base.strip_suffix("/fhir").unwrap_or(base.as_str())
    )
}

/// What a path below a study names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    Study,
    Series(&'a str),
    Instance(&'a str, &'a str),
}

/// What is asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The DICOM objects (multipart).
    Retrieve,
    Metadata,
    Rendered,
    Frames,
    FramesRendered,
    Bulk,
    /// QIDO-RS of the study's series, or of its (or a series') instances.
    SearchSeries,
    SearchInstances,
}

/// A DICOM UID: digits in dot-separated components, at most 64 characters.
fn is_uid(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// A frame list (`1`, `1,3,5`).
fn is_frame_list(text: &str) -> bool {
    (1..=256).contains(&text.len())
        && text.split(',').all(|n| {
            !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) && n != "0"
        })
}

/// The level and the ask of the path below a study, `None` for any other shape.
fn parse(rest: &str) -> Option<(Level<'_>, Ask)> {
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let ask = |tail: &[&str]| -> Option<Ask> {
        match tail {
            [] => Some(Ask::Retrieve),
            ["metadata"] => Some(Ask::Metadata),
            ["rendered"] => Some(Ask::Rendered),
            _ => None,
        }
    };
    Some(match segments.as_slice() {
        ["series"] => (Level::Study, Ask::SearchSeries),
        ["instances"] => (Level::Study, Ask::SearchInstances),
        ["series", series, "instances"] if is_uid(series) => {
            (Level::Series(series), Ask::SearchInstances)
        }
        ["series", series, "instances", instance, tail @ ..]
            if is_uid(series) && is_uid(instance) =>
        {
            let level = Level::Instance(series, instance);
            match tail {
                ["frames", list] if is_frame_list(list) => (level, Ask::Frames),
                ["frames", list, "rendered"] if is_frame_list(list) => (level, Ask::FramesRendered),
                ["bulk", tag] if tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    (level, Ask::Bulk)
                }
                other => (level, ask(other)?),
            }
        }
        ["series", series, tail @ ..] if is_uid(series) => (Level::Series(series), ask(tail)?),
        other => (Level::Study, ask(other)?),
    })
}

/// A study the caller may see, with the hospital whose PACS holds it.
pub(crate) struct Located {
    /// The ImagingStudy.
    pub(crate) study: Value,
    /// The hospital.
    pub(crate) facility: String,
}

impl Located {
    /// The series of `uid` the gateway knows in this study.
    fn series(&self, uid: &str) -> Option<&Value> {
        self.study["series"]
            .as_array()?
            .iter()
            .find(|series| series["uid"] == uid)
    }

    /// Whether the gateway knows `level` in this study.
    fn holds(&self, level: Level<'_>) -> bool {
        match level {
            Level::Study => true,
            Level::Series(series) => self.series(series).is_some(),
            Level::Instance(series, instance) => self
                .series(series)
                .and_then(|series| series["instance"].as_array())
                .is_some_and(|instances| instances.iter().any(|i| i["uid"] == instance)),
        }
    }
}

/// The ImagingStudy of Study Instance UID `uid` among those the caller may see whose images
/// the proxy can open and which holds `level`; its patient noted for the audit. Absent and hidden
/// alike are 404; a UID two hospitals' studies share, both holding `level`, is 409 (which
/// images are whose is never a guess).
async fn locate(
    state: &AppState,
    caller: &Caller,
    uid: &str,
    level: Level<'_>,
) -> Result<Located, ApiError> {
    let unknown = || ApiError::not_found(format!("study {uid} is not known"));
    if !is_uid(uid) {
        return Err(unknown());
    }
    let now = state.clock.now_micros();
    let pairs = [(
        "identifier".to_owned(),
        format!("urn:dicom:uid|urn:oid:{uid}"),
    )];
    let query = SearchQuery::parse("ImagingStudy", &pairs, now.div_euclid(1_000_000), false)?;
    let keys = state.store.search(&caller.access, &query).await?;
    let keys = &keys[..keys.len().min(16)];
    let mut found: Vec<(tsunagi_store::StoredResource, Located)> = Vec::new();
    for resource in state.store.fetch(&caller.access, keys).await? {
        let Some(study) = resource
            .content
            .as_deref()
            .and_then(|content| serde_json::from_slice::<Value>(content).ok())
        else {
            continue;
        };
        let facility = pacs_facilities(&study)
            .find(|facility| state.dicomweb.knows(facility))
            .map(str::to_owned);
        if let Some(facility) = facility {
            let located = Located { study, facility };
            if located.holds(level) {
                found.push((resource, located));
            }
        }
    }
    match found.len() {
        0 => {
            // Hidden, absent, or not this study's: the caller learns nothing more.
            Err(unknown())
        }
        1 => {
            let (resource, located) = found.remove(0);
            caller.touch(std::iter::once(&resource));
            Ok(located)
        }
        _ => {
            for (resource, _) in &found {
                caller.touch(std::iter::once(resource));
            }
            Err(ApiError::conflict(format!(
                "study {uid} is held by more than one hospital; its images cannot be told apart"
            )))
        }
    }
}

/// The hospital's Patient ID of the study's patient (the facility's JP Core patient-id system).
async fn patient_id(
    state: &AppState,
    caller: &Caller,
    located: &Located,
) -> Result<Option<String>, ApiError> {
    let Some(id) = located.study["subject"]["reference"]
        .as_str()
        .and_then(|reference| reference.strip_prefix("Patient/"))
    else {
        return Ok(None);
    };
    let Some(patient) = state.store.read(&caller.access, "Patient", id).await? else {
        return Ok(None);
    };
    let json: Value = patient
        .content
        .as_deref()
        .and_then(|content| serde_json::from_slice(content).ok())
        .unwrap_or(Value::Null);
    let system = tsunagi_core::FacilityId::parse(&located.facility)
        .ok()
        .map(|facility| facility.patient_id_system());
    Ok(json["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|identifier| system.as_deref().is_some_and(|s| identifier["system"] == s))
        .and_then(|identifier| identifier["value"].as_str())
        .map(str::to_owned))
}

/// The facilities whose PACS an ImagingStudy's `endpoint`s name.
pub(crate) fn pacs_facilities(study: &Value) -> impl Iterator<Item = &str> {
    study["endpoint"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|endpoint| {
            tsunagi_fhir::endpoint::facility_of_endpoint(endpoint["reference"].as_str()?)
        })
}

/// Query parameters a rendered image takes, passed on when well-formed.
const RENDERING: &[&str] = &["quality", "viewport", "window"];

async fn at(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let no_such = || ApiError::not_found(format!("{path}: no such DICOMweb resource"));
    // UIDs are digits and dots: a path spelled with escapes is refused, so that what is served
    // is what the audit records (it reads the path as sent).
    if path.contains('%') {
        return Err(no_such());
    }
    let below = path
        .strip_prefix("/dicomweb/studies/")
        .ok_or_else(no_such)?
        .trim_end_matches('/');
    let (uid, rest) = below.split_once('/').unwrap_or((below, ""));
    let Some((level, ask)) = parse(rest) else {
        return Err(no_such());
    };
    let searching = matches!(ask, Ask::SearchSeries | Ask::SearchInstances);
    caller.require(
        "ImagingStudy",
        if searching {
            Interaction::Search
        } else {
            Interaction::Read
        },
    )?;
    let located = locate(state, caller, uid, level).await?;
    let base = dicomweb_base(state, headers);
    let ignored = qido::unfollowed(&decode_pairs(uri.query()));
    match (ask, level) {
        (Ask::SearchSeries, _) => return Ok(qido::series(&located, &base, &ignored)),
        (Ask::SearchInstances, Level::Series(series)) => {
            return Ok(qido::instances(&located, Some(series), &base, &ignored));
        }
        (Ask::SearchInstances, _) => {
            return Ok(qido::instances(&located, None, &base, &ignored));
        }
        _ => {}
    }
    let principal = &caller.principal;
    let who = format!(
        "{}|{}|{}",
        principal.facility, principal.subject, principal.client_id
    );
    // The PACS still files the study under the patient the gateway knows it by.
    let subject = located.study["subject"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let filed = state.dicomweb.verified(&located.facility, uid, &subject)
        || match patient_id(state, caller, &located).await? {
            Some(patient) => {
                state
                    .dicomweb
                    .verify(&located.facility, &who, uid, (&patient, &subject))
                    .await?
            }
            None => false,
        };
    if !filed {
        return Err(ApiError::not_found(format!(
            "study {uid} is not known (the image archive files it otherwise)"
        )));
    }
    let query: Vec<String> = if matches!(ask, Ask::Rendered | Ask::FramesRendered) {
        decode_pairs(uri.query())
            .into_iter()
            .filter(|(name, value)| {
                RENDERING.contains(&name.as_str())
                    && (1..=64).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".,-".contains(&b))
            })
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    } else {
        Vec::new()
    };
    let forwarded = if rest.is_empty() {
        format!("studies/{uid}")
    } else {
        format!("studies/{uid}/{rest}")
    };
    let forwarded = if query.is_empty() {
        forwarded
    } else {
        format!("{forwarded}?{}", query.join("&"))
    };
    let expect: &[&str] = match ask {
        Ask::Metadata => &["application/dicom+json", "application/json"],
        Ask::Rendered | Ask::FramesRendered => &["image/"],
        _ => &["multipart/related"],
    };
    let accept = headers
        .get(header::ACCEPT)
        .filter(|value| value.len() <= 1024)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| HeaderValue::from_str(value).ok());
    state
        .dicomweb
        .forward(Forward {
            facility: &located.facility,
            caller: who,
            path: forwarded,
            accept,
            expect,
            metadata_base: (ask == Ask::Metadata).then_some(base),
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dicomweb_shapes_below_a_study_are_taken() {
        assert_eq!(parse(""), Some((Level::Study, Ask::Retrieve)));
        assert_eq!(parse("metadata"), Some((Level::Study, Ask::Metadata)));
        assert_eq!(parse("series"), Some((Level::Study, Ask::SearchSeries)));
        assert_eq!(
            parse("series/1.2/instances/1.2.3/frames/1,2/rendered"),
            Some((Level::Instance("1.2", "1.2.3"), Ask::FramesRendered))
        );
        assert_eq!(
            parse("series/1.2/instances/1.2.3/bulk/7fe00010"),
            Some((Level::Instance("1.2", "1.2.3"), Ask::Bulk))
        );
        assert_eq!(
            parse("series/1.2/rendered"),
            Some((Level::Series("1.2"), Ask::Rendered))
        );
        assert_eq!(
            parse("series/1.2/instances"),
            Some((Level::Series("1.2"), Ask::SearchInstances))
        );
        for refused in [
            "series/1.2/../../other",
            "series/a.b",
            "series/1.2/instances/1.2.3/frames/0",
            "series/1.2/instances/1.2.3/frames/1;x",
            "series/1.2/instances/1.2.3/bulk/7fe0",
            "metadata/more",
            "thumbnail?x",
            "series/1..2",
        ] {
            assert_eq!(parse(refused), None, "{refused}");
        }
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.2"));
        assert!(!is_uid(&"1".repeat(65)));
    }
}
