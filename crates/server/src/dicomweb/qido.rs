//! QIDO-RS answered from what the gateway knows: the ImagingStudy resources the caller may see
//! (the store's consent rule applies inside the search, as for any FHIR search), written as
//! DICOM JSON data sets in UTF-8 (`ISO_IR 192`), each with its `RetrieveURL` on the gateway.
//!
//! Matching keys (by keyword or tag): `PatientID` (the hospital's patient id, or the FHIR
//! Patient id), `StudyInstanceUID` (a list), `AccessionNumber`, `StudyDate` (a date or a range),
//! `ModalitiesInStudy`; `limit` (default 100, at most 1000) and `offset`. `includefield` is
//! accepted (every attribute the gateway has is returned); any other key is ignored and named in
//! a `Warning: 299` header, as PS3.18 asks. Only studies whose PACS the gateway is configured
//! with are listed (those it can open). The patient's attributes (name, id, birth date, sex) are
//! given only to a caller who may read Patient. A study's series and instances are listed whole
//! (matching keys there are ignored, with the same warning).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tsunagi_auth::Interaction;
use tsunagi_fhir::{endpoint::dicomweb_endpoint_id, systems::EN_REPRESENTATION};
use tsunagi_store::{SearchQuery, StoredResource};

use super::Located;
use crate::{AppState, outcome::ApiError, security::Caller};

/// Studies answered when the client sets no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most studies one answer holds.
const MAX_LIMIT: usize = 1000;
/// Patients one `PatientID` may name (a hospital id is unique there; several hospitals may
/// share a number).
const MAX_PATIENTS: usize = 100;

/// The keyword of a query key given by keyword or by tag.
fn keyword(key: &str) -> &str {
    match key.to_ascii_uppercase().as_str() {
        "00100020" => "PatientID",
        "0020000D" => "StudyInstanceUID",
        "00080050" => "AccessionNumber",
        "00080020" => "StudyDate",
        "00080061" => "ModalitiesInStudy",
        _ => key,
    }
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid", message)
}

/// A DICOM date `YYYYMMDD` as FHIR's `YYYY-MM-DD`.
fn fhir_date(text: &str) -> Option<String> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{}-{}-{}", &text[..4], &text[4..6], &text[6..]))
}

/// `GET /dicomweb/studies?…`.
pub(crate) async fn studies(
    state: &AppState,
    caller: &Caller,
    pairs: &[(String, String)],
    base: &str,
) -> Result<Response, ApiError> {
    caller.require("ImagingStudy", Interaction::Search)?;
    let now = state.clock.now_micros().div_euclid(1_000_000);
    let mut ignored: Vec<String> = Vec::new();
    // Only studies whose images this gateway can open: those naming a configured PACS.
    let endpoints: Vec<String> = state
        .dicomweb
        .facilities()
        .into_iter()
        .map(|facility| format!("Endpoint/{}", dicomweb_endpoint_id(facility)))
        .collect();
    if endpoints.is_empty() {
        return Ok(answer(Vec::new(), &ignored));
    }
    let mut search: Vec<(String, String)> = vec![
        ("endpoint".to_owned(), endpoints.join(",")),
        ("_sort".to_owned(), "-started".to_owned()),
    ];
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0usize);
    for (key, value) in pairs {
        let value = value.trim();
        let key = keyword(key);
        match key {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit={value}: 1 to {MAX_LIMIT}")))?;
            }
            "offset" => {
                offset = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 1_000_000)
                    .ok_or_else(|| bad(format!("offset={value}: 0 to 1000000")))?;
            }
            "includefield" | "fuzzymatching" => {}
            // An empty value asks for the attribute back; it matches everything.
            _ if value.is_empty() => {}
            "PatientID" => {
                let patients = patients_of(state, caller, value, now).await?;
                if patients.is_empty() {
                    return Ok(answer(Vec::new(), &ignored));
                }
                search.push(("patient".to_owned(), patients.join(",")));
            }
            "StudyInstanceUID" => {
                let uids: Vec<String> = value
                    .split(['\\', ','])
                    .filter(|uid| !uid.trim().is_empty())
                    .map(|uid| format!("urn:dicom:uid|urn:oid:{}", uid.trim()))
                    .collect();
                search.push(("identifier".to_owned(), uids.join(",")));
            }
            "AccessionNumber" => search.push(("identifier".to_owned(), escape(value))),
            "ModalitiesInStudy" => search.push((
                "modality".to_owned(),
                value.split('\\').collect::<Vec<_>>().join(","),
            )),
            "StudyDate" => {
                let (from, to) = value.split_once('-').unwrap_or((value, value));
                let date = |text: &str| {
                    fhir_date(text.trim()).ok_or_else(|| {
                        bad(format!("StudyDate={value}: YYYYMMDD or YYYYMMDD-YYYYMMDD"))
                    })
                };
                if !from.trim().is_empty() {
                    search.push(("started".to_owned(), format!("ge{}", date(from)?)));
                }
                if !to.trim().is_empty() {
                    search.push(("started".to_owned(), format!("le{}", date(to)?)));
                }
            }
            other => ignored.push(other.to_owned()),
        }
    }
    let query = SearchQuery::parse("ImagingStudy", &search, now, false)?;
    let keys = state.store.search(&caller.access, &query).await?;
    let page: Vec<i64> = keys.into_iter().skip(offset).take(limit).collect();
    let studies = state.store.fetch(&caller.access, &page).await?;
    // Their patients, for the patient attributes.
    let mut references: Vec<(String, String)> = Vec::new();
    let parsed: Vec<Value> = studies.iter().map(parse).collect();
    for study in &parsed {
        if let Some(id) = study["subject"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("Patient/"))
            && !references.iter().any(|(_, known)| known == id)
        {
            references.push(("Patient".to_owned(), id.to_owned()));
        }
    }
    let patient_keys = state.store.keys_of(&caller.access, &references).await?;
    let patients: Vec<Value> = state
        .store
        .fetch(&caller.access, &patient_keys)
        .await?
        .iter()
        .map(parse)
        .collect();
    caller.touch(&studies);
    // The patient's attributes only to whom may read Patient (as `_include` would drop it).
    let with_patients = caller.may_see("Patient");
    let data_sets = parsed
        .iter()
        .map(|study| {
            let patient = study["subject"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .and_then(|id| patients.iter().find(|p| p["id"] == id))
                .filter(|_| with_patients);
            study_data_set(study, patient, base)
        })
        .collect();
    Ok(answer(data_sets, &ignored))
}

/// The ids (`Patient/<id>`) of the Patients the caller may see whose identifier value, or
/// logical id, is `value`.
async fn patients_of(
    state: &AppState,
    caller: &Caller,
    value: &str,
    now: i64,
) -> Result<Vec<String>, ApiError> {
    if !caller.may_see("Patient") {
        return Err(ApiError::forbidden(
            "PatientID needs the right to read Patient".to_owned(),
        ));
    }
    let mut found: Vec<String> = Vec::new();
    let escaped = escape(value);
    for pairs in [
        [("identifier".to_owned(), escaped.clone())],
        [("_id".to_owned(), escaped)],
    ] {
        let Ok(query) = SearchQuery::parse("Patient", &pairs, now, false) else {
            continue;
        };
        let keys = state.store.search(&caller.access, &query).await?;
        for patient in state
            .store
            .fetch(&caller.access, &keys[..keys.len().min(MAX_PATIENTS)])
            .await?
        {
            let reference = format!("Patient/{}", patient.id);
            if !found.contains(&reference) {
                found.push(reference);
            }
        }
    }
    Ok(found)
}

/// A value as one FHIR search value (its `\`, `,`, `|` and `$` escaped).
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn parse(resource: &StoredResource) -> Value {
    resource
        .content
        .as_deref()
        .and_then(|content| serde_json::from_slice(content).ok())
        .unwrap_or(Value::Null)
}

/// An `application/dicom+json` answer.
fn answer(data_sets: Vec<Value>, ignored: &[String]) -> Response {
    let body = Value::Array(data_sets).to_string();
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    super::private(headers);
    if !ignored.is_empty() {
        let names: Vec<String> = ignored
            .iter()
            .map(|name| {
                name.chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(64)
                    .collect()
            })
            .collect();
        let text = format!(
            "299 tsunagi \"the query keys {} are not supported and were ignored\"",
            names.join(", ")
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(header::WARNING, value);
        }
    }
    response
}

/// One attribute of a data set, left out when it has no value.
fn put(set: &mut Map<String, Value>, tag: &str, vr: &str, values: Vec<Value>) {
    let values: Vec<Value> = values
        .into_iter()
        .filter(|value| !value.is_null() && value != "")
        .collect();
    if !values.is_empty() {
        set.insert(tag.to_owned(), json!({"vr": vr, "Value": values}));
    }
}

fn text(value: &Value) -> Value {
    value.as_str().map_or(Value::Null, |text| json!(text))
}

/// A FHIR dateTime as DICOM DA and TM (the wall-clock time as written).
fn date_time(started: &str) -> (Value, Value) {
    let date: String = started.chars().take(10).filter(|c| *c != '-').collect();
    let time: String = started
        .get(11..19)
        .map(|t| t.chars().filter(|c| *c != ':').collect())
        .unwrap_or_default();
    (
        if date.len() == 8 {
            json!(date)
        } else {
            Value::Null
        },
        if time.len() == 6 {
            json!(time)
        } else {
            Value::Null
        },
    )
}

/// The Patient's name as a DICOM PN: alphabetic, ideographic (漢字) and phonetic (カナ) groups.
fn person_name(patient: &Value) -> Value {
    let mut groups = Map::new();
    for name in patient["name"].as_array().into_iter().flatten() {
        let family = name["family"].as_str().unwrap_or_default();
        let given: Vec<&str> = name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let written = format!("{family}^{}", given.join(" "));
        if written == "^" {
            continue;
        }
        let representation = name["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["url"] == EN_REPRESENTATION)
            .and_then(|e| e["valueCode"].as_str());
        let group = match representation {
            Some("IDE") => "Ideographic",
            Some("SYL") => "Phonetic",
            Some(_) => "Alphabetic",
            None if written.is_ascii() => "Alphabetic",
            None => "Ideographic",
        };
        groups.entry(group).or_insert(json!(written));
    }
    if groups.is_empty() {
        Value::Null
    } else {
        Value::Object(groups)
    }
}

/// The hospital's id of the patient (the facility's JP Core patient-id system), else the first.
fn patient_id(patient: &Value, facility: Option<&str>) -> Value {
    let identifiers = patient["identifier"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let system = facility
        .and_then(|f| tsunagi_core::FacilityId::parse(f).ok())
        .map(|f| f.patient_id_system());
    identifiers
        .iter()
        .find(|i| system.as_deref().is_some_and(|s| i["system"] == s))
        .or(identifiers.first())
        .map_or(Value::Null, |i| text(&i["value"]))
}

fn study_uid(study: &Value) -> Option<String> {
    study["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"] == "urn:dicom:uid")?["value"]
        .as_str()?
        .strip_prefix("urn:oid:")
        .map(str::to_owned)
}

/// One study's data set.
fn study_data_set(study: &Value, patient: Option<&Value>, base: &str) -> Value {
    let mut set = Map::new();
    let uid = study_uid(study).unwrap_or_default();
    put(&mut set, "00080005", "CS", vec![json!("ISO_IR 192")]);
    let (date, time) = date_time(study["started"].as_str().unwrap_or_default());
    put(&mut set, "00080020", "DA", vec![date]);
    put(&mut set, "00080030", "TM", vec![time]);
    let accession = study["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["type"]["coding"][0]["code"] == "ACSN")
        .map_or(Value::Null, |i| text(&i["value"]));
    put(&mut set, "00080050", "SH", vec![accession]);
    let modalities: Vec<Value> = study["modality"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| text(&m["code"]))
        .collect();
    put(&mut set, "00080061", "CS", modalities);
    put(
        &mut set,
        "00081030",
        "LO",
        vec![text(&study["description"])],
    );
    if let Some(patient) = patient {
        put(&mut set, "00100010", "PN", vec![person_name(patient)]);
        put(
            &mut set,
            "00100020",
            "LO",
            vec![patient_id(patient, super::pacs_facilities(study).next())],
        );
        let birth: String = patient["birthDate"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != '-')
            .collect();
        put(
            &mut set,
            "00100030",
            "DA",
            vec![if birth.len() == 8 {
                json!(birth)
            } else {
                Value::Null
            }],
        );
        let sex = match patient["gender"].as_str() {
            Some("male") => json!("M"),
            Some("female") => json!("F"),
            Some("other") => json!("O"),
            _ => Value::Null,
        };
        put(&mut set, "00100040", "CS", vec![sex]);
    }
    put(&mut set, "0020000D", "UI", vec![json!(uid)]);
    put(
        &mut set,
        "00201206",
        "IS",
        vec![study["numberOfSeries"].clone()],
    );
    put(
        &mut set,
        "00201208",
        "IS",
        vec![study["numberOfInstances"].clone()],
    );
    put(
        &mut set,
        "00081190",
        "UR",
        vec![json!(format!("{base}/studies/{uid}"))],
    );
    Value::Object(set)
}

/// The keys of a series or instance search that are not followed (all but `includefield`).
pub(crate) fn unfollowed(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(key, value)| key != "includefield" && !value.trim().is_empty())
        .map(|(key, _)| key.clone())
        .collect()
}

/// `GET …/studies/{study}/series`: the series the gateway knows in the study.
pub(crate) fn series(located: &Located, base: &str, ignored: &[String]) -> Response {
    let uid = study_uid(&located.study).unwrap_or_default();
    let data_sets = located.study["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let series_uid = series["uid"].as_str().unwrap_or_default();
            let mut set = Map::new();
            put(&mut set, "00080005", "CS", vec![json!("ISO_IR 192")]);
            put(
                &mut set,
                "00080060",
                "CS",
                vec![text(&series["modality"]["code"])],
            );
            put(
                &mut set,
                "0008103E",
                "LO",
                vec![text(&series["description"])],
            );
            put(&mut set, "0020000D", "UI", vec![json!(uid)]);
            put(&mut set, "0020000E", "UI", vec![json!(series_uid)]);
            put(&mut set, "00200011", "IS", vec![series["number"].clone()]);
            put(
                &mut set,
                "00201209",
                "IS",
                vec![json!(series["instance"].as_array().map_or(0, Vec::len))],
            );
            put(
                &mut set,
                "00081190",
                "UR",
                vec![json!(format!("{base}/studies/{uid}/series/{series_uid}"))],
            );
            Value::Object(set)
        })
        .collect();
    answer(data_sets, ignored)
}

/// `GET …/studies/{study}/instances` and `…/series/{series}/instances`.
pub(crate) fn instances(
    located: &Located,
    only: Option<&str>,
    base: &str,
    ignored: &[String],
) -> Response {
    let uid = study_uid(&located.study).unwrap_or_default();
    let mut data_sets = Vec::new();
    for series in located.study["series"].as_array().into_iter().flatten() {
        let series_uid = series["uid"].as_str().unwrap_or_default();
        if only.is_some_and(|only| only != series_uid) {
            continue;
        }
        for instance in series["instance"].as_array().into_iter().flatten() {
            let instance_uid = instance["uid"].as_str().unwrap_or_default();
            let class = instance["sopClass"]["code"]
                .as_str()
                .map(|code| code.trim_start_matches("urn:oid:"))
                .filter(|class| !class.is_empty());
            let mut set = Map::new();
            put(
                &mut set,
                "00080016",
                "UI",
                vec![class.map_or(Value::Null, |c| json!(c))],
            );
            put(&mut set, "00080018", "UI", vec![json!(instance_uid)]);
            put(
                &mut set,
                "00080060",
                "CS",
                vec![text(&series["modality"]["code"])],
            );
            put(&mut set, "0020000D", "UI", vec![json!(uid)]);
            put(&mut set, "0020000E", "UI", vec![json!(series_uid)]);
            put(&mut set, "00200013", "IS", vec![instance["number"].clone()]);
            put(
                &mut set,
                "00081190",
                "UR",
                vec![json!(format!(
                    "{base}/studies/{uid}/series/{series_uid}/instances/{instance_uid}"
                ))],
            );
            data_sets.push(Value::Object(set));
        }
    }
    answer(data_sets, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dates_and_keys_become_dicom() {
        let patient = json!({"name": [
            {"extension": [{"url": EN_REPRESENTATION, "valueCode": "IDE"}], "family": "山田", "given": ["太郎"]},
            {"extension": [{"url": EN_REPRESENTATION, "valueCode": "SYL"}], "family": "ヤマダ", "given": ["タロウ"]}
        ]});
        assert_eq!(
            person_name(&patient),
            json!({"Ideographic": "山田^太郎", "Phonetic": "ヤマダ^タロウ"})
        );
        assert_eq!(
            date_time("2024-05-01T10:02:11+09:00"),
            (json!("20240501"), json!("100211"))
        );
        assert_eq!(date_time("2024-05"), (Value::Null, Value::Null));
        assert_eq!(keyword("0020000d"), "StudyInstanceUID");
        assert_eq!(keyword("PatientName"), "PatientName");
        assert_eq!(fhir_date("20240501").as_deref(), Some("2024-05-01"));
        assert_eq!(fhir_date("2024-05-01"), None);
    }
}
