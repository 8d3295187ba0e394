//! An imaging report of extended storage (LOINC 18748-4 / 18782-3, a CDA or a PDF) → also a
//! `DiagnosticReport` (JP Core `JP_DiagnosticReport_Radiology`): category RAD, the report's
//! conclusion, the original file as `presentedForm`, linked to the `ImagingStudy` the OMG-11
//! notice made (by Study Instance UID, `documentationOf/serviceEvent/id`, else by accession
//! number, `inFulfillmentOf/order/id`) and to the order (by placer order number).
//!
//! A report that is not a CDA (a PDF) is a DiagnosticReport too, with its file as
//! `presentedForm` and no conclusion or study link (nothing in the file says them); a CDA
//! documenting several studies (one `documentationOf` each) links each.
//!
//! One DiagnosticReport per document, not per version: its id leaves 発生日時 out, the newest
//! version writes it (`amended` once it replaces another; `entered-in-error` when the newest
//! version is withdrawn, as its DocumentReference is), and an older version writes none.

use serde_json::{Value, json};
use tsunagi_core::ids::logical_id;
use tsunagi_document::{
    cda::{Body, CdaDocument},
    layout::{Condition, ContentFolder},
    xml::Element,
};
use tsunagi_fhir::{json::reference, profiles, systems};

use crate::{MappedResource, document::DocumentSource, imaging::study_id};

/// LOINC codes of imaging reports.
pub const IMAGING_REPORT_CODES: &[&str] = &["18748-4", "18782-3"];

/// Section codes and titles that hold a report's conclusion (impression, diagnosis).
const CONCLUSION_CODES: &[&str] = &["19005-8", "121072"];
const CONCLUSION_TITLES: &[&str] = &[
    "診断",
    "画像診断",
    "結論",
    "所見のまとめ",
    "インプレッション",
    "Impression",
];

/// The longest conclusion kept (characters); the whole report stays in `presentedForm`.
const MAX_CONCLUSION_CHARS: usize = 4000;

/// The DiagnosticReport of the newest version of an imaging report, or `None` for another
/// document or an
/// older version.
pub(crate) fn radiology_report(
    source: &DocumentSource<'_>,
    standard_code: &str,
    document: &serde_json::Map<String, Value>,
) -> Option<MappedResource> {
    let cda = source.cda;
    let content = source.content;
    if !IMAGING_REPORT_CODES.contains(&standard_code)
        || source.superseded
        || content.condition == Condition::Earlier
    {
        return None;
    }
    let withdrawn = content.condition == Condition::Withdrawn;
    let facility = source.facility.as_str();
    let id = report_id(facility, &document_code(document), content);
    let patient = logical_id(&[facility, &content.patient_id]);
    // Each documentationOf names one study by its UID (an id with no extension); a report of
    // several studies links each.
    let mut study_uids: Vec<String> = Vec::new();
    for event in cda.iter().flat_map(|cda| &cda.service_events) {
        if let Some(uid) = event.ids.iter().find(|id| id.extension.is_none())
            && !study_uids.contains(&uid.root)
        {
            study_uids.push(uid.root.clone());
        }
    }
    // DICOM PS3.20: the order's first id is the accession number; further ones are the
    // placer's order numbers.
    let order_ids: Vec<&str> = cda
        .iter()
        .flat_map(|cda| &cda.orders)
        .filter_map(|id| id.extension.as_deref())
        .collect();
    let (accession, placer_numbers) = match order_ids.split_first() {
        Some((accession, rest)) => (Some(*accession), rest),
        None => (None, &[][..]),
    };
    // The ImagingStudy of the OMG-11 notice: keyed by UID when it had one, else by accession.
    // The reference also names the study by its UID (or accession number), so that it can be
    // resolved where the two sides keyed it differently.
    let studies: Vec<Value> = if study_uids.is_empty() {
        accession
            .map(|key| {
                let mut link =
                    reference("ImagingStudy", &study_id(facility, &content.patient_id, key));
                link["identifier"] = json!({
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                    "system": format!("http://tsunagi.example.jp/fhir/IdSystem/{facility}/accession-number"),
                    "value": key
                });
                link
            })
            .into_iter()
            .collect()
    } else {
        study_uids
            .iter()
            .map(|uid| {
                let mut link = reference(
                    "ImagingStudy",
                    &study_id(facility, &content.patient_id, uid),
                );
                link["identifier"] =
                    json!({"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")});
                link
            })
            .collect()
    };
    // The order, by its number: a logical reference (the ServiceRequest's id depends on the
    // record that made it, which this document does not know).
    let based_on: Vec<Value> = placer_numbers
        .iter()
        .map(|number| {
            json!({"type": "ServiceRequest", "identifier": {
                "system": format!("http://tsunagi.example.jp/fhir/IdSystem/{facility}/order-number"),
                "value": number
            }})
        })
        .collect();
    let mut report = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() && value != json!([]) {
            report.insert(key.to_owned(), value);
        }
    };
    put("resourceType", json!("DiagnosticReport"));
    put("id", json!(id));
    let mut meta = document.get("meta").cloned().unwrap_or_else(|| json!({}));
    meta["profile"] = json!([profiles::DIAGNOSTIC_REPORT_RADIOLOGY]);
    put("meta", meta);
    let mut identifiers = vec![
        json!({"system": systems::local(facility, "imaging-report"), "value": report_key(&document_code(document), content)}),
    ];
    if let Some(accession) = accession {
        identifiers.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "system": format!("http://tsunagi.example.jp/fhir/IdSystem/{facility}/accession-number"),
            "value": accession
        }));
    }
    put("identifier", json!(identifiers));
    put("basedOn", json!(based_on));
    put(
        "status",
        json!(if withdrawn {
            "entered-in-error"
        } else if source.replaces.is_some() {
            "amended"
        } else {
            "final"
        }),
    );
    put(
        "category",
        json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}]),
    );
    put("code", document.get("type").cloned().unwrap_or(Value::Null));
    put("subject", reference("Patient", &patient));
    if let Some(encounter) = document
        .get("context")
        .and_then(|context| context.get("encounter"))
        .and_then(|encounters| encounters.get(0))
    {
        put("encounter", encounter.clone());
    }
    let effective = document
        .get("context")
        .and_then(|context| context["period"]["start"].as_str())
        .or_else(|| document.get("date").and_then(Value::as_str));
    put("effectiveDateTime", json!(effective));
    put(
        "issued",
        document.get("date").cloned().unwrap_or(Value::Null),
    );
    put(
        "resultsInterpreter",
        document.get("author").cloned().unwrap_or(Value::Null),
    );
    put("imagingStudy", json!(studies));
    put("conclusion", json!(cda.and_then(conclusion)));
    if let Some(original) = document
        .get("content")
        .and_then(|contents| contents.get(0))
        .map(|content| content["attachment"].clone())
    {
        put("presentedForm", json!([original]));
    }
    Some(MappedResource {
        resource_type: "DiagnosticReport",
        id,
        json: Value::Object(report),
    })
}

/// The local (or standard) code a DocumentReference's type carries last: the part of the
/// document's key that names its kind.
fn document_code(document: &serde_json::Map<String, Value>) -> String {
    document
        .get("type")
        .and_then(|kind| kind["coding"].as_array())
        .and_then(|codings| codings.last())
        .and_then(|coding| coding["code"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn report_key(code: &str, content: &ContentFolder) -> String {
    format!(
        "{}_{}_{}_{}",
        content.patient_id, content.care_date, code, content.key
    )
}

/// The logical id of the DiagnosticReport of a document (any version).
fn report_id(facility: &str, code: &str, content: &ContentFolder) -> String {
    logical_id(&[
        "report",
        facility,
        &content.patient_id,
        &content.care_date,
        code,
        &content.key,
    ])
}

/// Narrative blocks whose text starts a new line.
const BLOCKS: &[&str] = &["paragraph", "item", "tr", "br", "caption", "list", "table"];

/// The text of a narrative block, a line per paragraph, list item and table row.
fn block_text(element: &Element, out: &mut String) {
    for node in &element.children {
        match node {
            tsunagi_document::xml::Node::Text(text) => out.push_str(text),
            tsunagi_document::xml::Node::Element(child) => {
                let block = BLOCKS.contains(&child.name.as_str());
                if block {
                    out.push('\n');
                }
                block_text(child, out);
                if block {
                    out.push('\n');
                } else if child.name == "td" || child.name == "th" {
                    out.push(' ');
                }
            }
        }
    }
}

/// The text of the report's impression section: the one coded so (LOINC 19005-8, DICOM
/// 121072), else the one titled exactly so; none when no section is (the whole report stays in
/// `presentedForm` and in the DocumentReference's text).
fn conclusion(cda: &CdaDocument) -> Option<String> {
    let Body::Structured(body) = &cda.body else {
        return None;
    };
    let sections: Vec<&Element> = body
        .children_named("component")
        .filter_map(|component| component.child("section"))
        .collect();
    let coded = |section: &&Element| {
        section
            .child("code")
            .and_then(|code| code.attr("code"))
            .is_some_and(|code| CONCLUSION_CODES.contains(&code.trim()))
    };
    let titled = |section: &&Element| {
        section
            .child("title")
            .is_some_and(|title| CONCLUSION_TITLES.contains(&title.text().trim()))
    };
    let chosen: Vec<&Element> = sections
        .iter()
        .copied()
        .find(coded)
        .or_else(|| sections.iter().copied().find(titled))
        .into_iter()
        .collect();
    let mut text = String::new();
    for section in chosen {
        if let Some(body) = section.child("text") {
            block_text(body, &mut text);
        }
    }
    let text = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(MAX_CONCLUSION_CHARS).collect())
}
