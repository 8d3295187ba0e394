//! One version of a document of SS-MIX2 extended storage → a `DocumentReference` (IHE MHD's
//! shape; JP Core 1.x has no profile of its own for it).
//!
//! - `identifier`: the content folder's name (one per version), and the CDA's own id;
//! - `status`: `current`, `superseded` once a later version exists, `entered-in-error` for a
//!   withdrawn one (flag 0); `relatesTo` `replaces` the version before it;
//! - `type`: the standard code (LOINC, or JMIX for a 診療情報提供書 as its CDA says), the
//!   hospital's local code as a second coding; `category` from the standard code;
//! - `date` = 発生日時; `author`, `custodian`, `context.period` (the service event: a stay's
//!   admission and discharge for a discharge summary), `context.encounter` by visit number;
//! - `content[0]`: the original file as `Binary/<id>`, with its size and SHA-256; for a CDA,
//!   `content[1]`: the narrative as XHTML, also the resource's `text`.
//!
//! The bytes themselves are not here: the adapter stores them as the Binary this names.

use serde_json::{Value, json};
use tsunagi_core::{FacilityId, ids::logical_id, time::hl7_to_fhir_datetime};
use tsunagi_document::{
    cda::{Body, CdaDocument, InstanceId},
    layout::{Condition, ContentFolder, DataTypeFolder},
    narrative,
};
use tsunagi_fhir::{json::reference, systems};

use crate::{
    MapError, Mapped, MappedResource,
    common::{hex, percent_encode},
};

/// JMIX, the code system of a 診療情報提供書's CDA `code`.
const JMIX_OID: &str = "1.2.392.200119.5.3.1";
const LOINC_OID: &str = "2.16.840.1.113883.6.1";
const LOINC: &str = "http://loinc.org";

/// The largest narrative kept in the DocumentReference (as `text` and as an attachment).
const MAX_NARRATIVE_BYTES: usize = 1 << 20;

/// One version of one document, as the adapter found it.
#[derive(Debug, Clone, Copy)]
pub struct DocumentSource<'a> {
    /// The hospital.
    pub facility: &'a FacilityId,
    /// Its data-type folder.
    pub data_type: &'a DataTypeFolder,
    /// Its content folder (this version).
    pub content: &'a ContentFolder,
    /// The main file's name in the content folder.
    pub file_name: &'a str,
    /// The main file's size in bytes.
    pub size: u64,
    /// The main file's SHA-256.
    pub sha256: &'a [u8; 32],
    /// Its media type, told from its content.
    pub content_type: &'a str,
    /// The CDA read from it, when it is one.
    pub cda: Option<&'a CdaDocument>,
    /// The version this one replaces, if any.
    pub replaces: Option<&'a ContentFolder>,
    /// Whether a later version of the same document exists.
    pub superseded: bool,
}

/// The key parts of a version: facility, patient, 診療日, the data type's code, 特定キー and
/// 発生日時 (readable, and short enough for an id in the common case).
fn version_parts<'a>(
    facility: &'a str,
    data_type: &'a DataTypeFolder,
    content: &'a ContentFolder,
) -> [&'a str; 6] {
    let code = match (&data_type.local.code, &data_type.standard) {
        (local, _) if !local.is_empty() => local.as_str(),
        (_, Some(standard)) => standard.code.as_str(),
        _ => data_type.folder.as_str(),
    };
    [
        facility,
        &content.patient_id,
        &content.care_date,
        code,
        &content.key,
        &content.occurred,
    ]
}

/// The logical id of the DocumentReference of one version of a document.
pub fn document_id(facility: &str, data_type: &DataTypeFolder, content: &ContentFolder) -> String {
    logical_id(&version_parts(facility, data_type, content))
}

/// The logical id of the Binary holding one version's original file.
pub fn binary_id(facility: &str, data_type: &DataTypeFolder, content: &ContentFolder) -> String {
    let parts = version_parts(facility, data_type, content);
    let mut all = vec!["b"];
    all.extend_from_slice(&parts);
    logical_id(&all)
}

/// The Binary naming a document's stored bytes: by SHA-256 (tag `urn:tsunagi:sha256`), in the
/// compartment of Patient `patient` (tag `urn:tsunagi:compartment`: a Binary has no element
/// that could say so, and a reindex recomputes compartments from content), read where the
/// DocumentReference `security_context` is.
pub fn binary_resource(
    id: &str,
    patient: &str,
    sha256: &[u8; 32],
    content_type: &str,
    security_context: Option<&str>,
) -> Value {
    let mut binary = json!({
        "resourceType": "Binary",
        "id": id,
        "meta": {"tag": [
            {"system": systems::STORED_BYTES, "code": hex(sha256)},
            {"system": tsunagi_fhir::search::BINARY_PATIENT_TAG, "code": format!("Patient/{patient}")}
        ]},
        "contentType": content_type
    });
    if let Some(document) = security_context {
        binary["securityContext"] = json!({"reference": format!("DocumentReference/{document}")});
    }
    binary
}

/// The category of a standard document code.
fn category(code: &str) -> (&'static str, &'static str) {
    match code {
        "11506-3" | "34108-1" | "34112-3" => ("progress-note", "経過記録"),
        "18842-5" => ("discharge-summary", "退院時サマリー"),
        "57133-1" | "MD0020730" => ("referral", "診療情報提供書"),
        "18748-4" | "18782-3" => ("imaging-report", "画像診断報告書"),
        _ => ("other", "その他の文書"),
    }
}

/// An HL7 time stamp as FHIR `dateTime`, or nothing when it is not one.
fn datetime(text: Option<&str>, warnings: &mut Vec<String>, what: &str) -> Option<String> {
    let text = text?;
    match hl7_to_fhir_datetime(text) {
        Ok(value) => Some(value),
        Err(error) => {
            warnings.push(format!("{what} {text:?} is not a time: {error}"));
            None
        }
    }
}

/// 発生日時 (`YYYYMMDDHHMMSS` + fraction digits) as an HL7 time stamp.
fn occurred(content: &ContentFolder) -> String {
    let (seconds, fraction) = content.occurred.split_at(14.min(content.occurred.len()));
    if fraction.is_empty() {
        seconds.to_owned()
    } else {
        format!("{seconds}.{fraction}")
    }
}

fn identifier_of(id: &InstanceId) -> Value {
    match &id.extension {
        Some(extension) => json!({"system": format!("urn:oid:{}", id.root), "value": extension}),
        None => json!({"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{}", id.root)}),
    }
}

/// Maps one version of a document.
pub fn map_document(source: &DocumentSource<'_>) -> Result<Mapped, MapError> {
    let facility = source.facility.as_str();
    let content = source.content;
    let mut warnings = Vec::new();
    let id = document_id(facility, source.data_type, content);
    let patient = logical_id(&[facility, &content.patient_id]);
    let cda = source.cda;
    if let Some(cda) = cda
        && !cda.names_patient(&content.patient_id, facility)
    {
        return Err(MapError::Invalid(format!(
            "the CDA's patient ({}) is not the folder's patient {}",
            cda.patient
                .ids
                .iter()
                .filter_map(|id| id.extension.as_deref())
                .collect::<Vec<_>>()
                .join(", "),
            content.patient_id
        )));
    }
    // The type: the standard code (as the CDA says it when it says JMIX), then the local one.
    let mut codings = Vec::new();
    let standard = source.data_type.standard.as_ref();
    let cda_code = cda.and_then(|cda| cda.code.as_ref());
    match cda_code {
        Some(code) if code.system.as_deref() == Some(JMIX_OID) => codings.push(
            json!({"system": format!("urn:oid:{JMIX_OID}"), "code": code.code, "display": code.display}),
        ),
        _ => {}
    }
    if let Some(standard) = standard {
        let system = if standard.system == "LN" {
            LOINC.to_owned()
        } else {
            systems::local(facility, &format!("document-{}", standard.system))
        };
        codings.push(json!({"system": system, "code": standard.code, "display": standard.name}));
    } else if let Some(code) = cda_code
        && code.system.as_deref() == Some(LOINC_OID)
    {
        codings.push(json!({"system": LOINC, "code": code.code, "display": code.display}));
    }
    let local = &source.data_type.local;
    if !local.code.is_empty() {
        codings.push(json!({
            "system": systems::local(facility, "document-type"),
            "code": local.code,
            "display": local.name
        }));
    }
    let standard_code = codings
        .first()
        .and_then(|coding| coding["code"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (category_code, category_name) = category(&standard_code);
    let status = match (content.condition, source.superseded) {
        (Condition::Withdrawn, _) => "entered-in-error",
        (_, true) | (Condition::Earlier, _) => "superseded",
        (Condition::Current, false) => "current",
    };
    let mut identifiers = vec![json!({
        "system": systems::local(facility, "ssmix2-extended"),
        "value": content.folder
    })];
    if let Some(cda_id) = cda.and_then(|cda| cda.id.as_ref()) {
        identifiers.push(identifier_of(cda_id));
    }
    let mut document = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            document.insert(key.to_owned(), value);
        }
    };
    put("resourceType", json!("DocumentReference"));
    put("id", json!(id));
    put(
        "meta",
        json!({"source": format!("urn:tsunagi:ssmix2-extended:{facility}:{}/{}", percent_encode(&content.folder), percent_encode(source.file_name))}),
    );
    let mut rendered = match cda.map(|cda| &cda.body) {
        Some(Body::Structured(body)) => narrative::render(body),
        _ => None,
    };
    // Escaping can grow a narrative well past its document: a large one stays in the original.
    if rendered
        .as_ref()
        .is_some_and(|div| div.len() > MAX_NARRATIVE_BYTES)
    {
        warnings.push(format!(
            "the narrative is over {MAX_NARRATIVE_BYTES} bytes as XHTML: read it in the original"
        ));
        rendered = None;
    }
    if let Some(div) = &rendered {
        put("text", json!({"status": "generated", "div": div}));
    }
    put("identifier", json!(identifiers));
    put("status", json!(status));
    put("docStatus", json!("final"));
    put(
        "type",
        json!({"coding": codings, "text": standard.map_or(local.name.as_str(), |s| s.name.as_str())}),
    );
    put(
        "category",
        json!([{"coding": [{"system": format!("{}/document-class", systems::LOCAL_BASE), "code": category_code, "display": category_name}]}]),
    );
    put("subject", reference("Patient", &patient));
    let date = datetime(Some(&occurred(content)), &mut warnings, "発生日時");
    put("date", json!(date));
    let authors: Vec<Value> = cda
        .map(|cda| cda.authors.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|author| {
            let identifier = author.id.as_ref().and_then(|id| id.extension.as_deref());
            let mut person = serde_json::Map::new();
            if let Some(value) = identifier {
                person.insert(
                    "identifier".into(),
                    json!({"system": systems::local(facility, "staff"), "value": value}),
                );
            }
            if let Some(name) = &author.name {
                person.insert("display".into(), json!(name));
            }
            (!person.is_empty()).then_some(Value::Object(person))
        })
        .collect();
    if !authors.is_empty() {
        put("author", json!(authors));
    }
    put(
        "custodian",
        json!({"reference": format!("Organization/{facility}"), "identifier": {"system": systems::MEDICAL_ORGANIZATION_ID, "value": facility}}),
    );
    if let Some(previous) = source.replaces {
        put(
            "relatesTo",
            json!([{"code": "replaces", "target": reference("DocumentReference", &document_id(facility, source.data_type, previous))}]),
        );
    }
    put("description", json!(cda.and_then(|cda| cda.title.clone())));
    let mut attachment = json!({
        "contentType": source.content_type,
        "size": source.size,
        "title": source.file_name,
        "extension": [{"url": systems::STORED_BYTES, "valueString": hex(source.sha256)}],
    });
    // A withdrawn version's bytes are not served: its attachment describes them, names none.
    if content.condition != Condition::Withdrawn {
        attachment["url"] = json!(format!(
            "Binary/{}",
            binary_id(facility, source.data_type, content)
        ));
    }
    if let Some(created) = datetime(
        cda.and_then(|cda| cda.effective_time.as_deref()),
        &mut warnings,
        "effectiveTime",
    ) {
        attachment["creation"] = json!(created);
    }
    let mut contents = vec![json!({"attachment": attachment})];
    if let Some(div) = &rendered {
        contents.push(json!({"attachment": {
            "contentType": "application/xhtml+xml",
            "data": tsunagi_core::base64::encode(div.as_bytes()),
            "title": "narrative"
        }}));
    }
    put("content", json!(contents));
    let mut context = serde_json::Map::new();
    if let Some(visit) = cda
        .and_then(|cda| cda.encounter.as_ref())
        .and_then(|encounter| encounter.id.as_ref())
        .and_then(|id| id.extension.as_deref())
    {
        context.insert(
            "encounter".into(),
            json!([reference(
                "Encounter",
                &logical_id(&[facility, &content.patient_id, "visit", visit])
            )]),
        );
    }
    if let Some(event) = cda.and_then(CdaDocument::service_event) {
        let start = datetime(event.time.low.as_deref(), &mut warnings, "serviceEvent low");
        let end = datetime(
            event.time.high.as_deref(),
            &mut warnings,
            "serviceEvent high",
        );
        let mut period = serde_json::Map::new();
        if let Some(start) = start {
            period.insert("start".into(), json!(start));
        }
        if let Some(end) = end {
            period.insert("end".into(), json!(end));
        }
        if !period.is_empty() {
            context.insert("period".into(), Value::Object(period));
        }
    }
    if let Some(department) = &content.department {
        context.insert(
            "practiceSetting".into(),
            json!({"coding": [{"system": systems::DEPARTMENT, "code": department}]}),
        );
    }
    if !context.is_empty() {
        put("context", Value::Object(context));
    }
    // An imaging report is also a DiagnosticReport, which the document's context names.
    let report = crate::report::radiology_report(source, &standard_code, &document);
    if let Some(report) = &report {
        let context = document.entry("context").or_insert_with(|| json!({}));
        context["related"] = json!([reference("DiagnosticReport", &report.id)]);
    }
    let mut resources = vec![MappedResource {
        resource_type: "DocumentReference",
        id,
        json: Value::Object(document),
    }];
    resources.extend(report);
    Ok(Mapped {
        resources,
        warnings,
        ..Mapped::default()
    })
}
