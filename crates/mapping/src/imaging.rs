//! OMG-11/12 (OMI^Z23, "performed" notices) → ImagingStudy; OMG-13 (ORU^R01 physiology
//! results such as ECG measurements) → Observation.
//!
//! Reports and images are not in standardized storage: an ImagingStudy here carries what the
//! notice has (Study Instance UID, accession number, modality, JJ1017/LENDO procedure codes,
//! findings text), not series or instances. It is the notice's part of the study
//! ([`crate::study`]), folded with the PACS's view and any other notice naming the study.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, identifier},
    profiles, systems,
};

use crate::{
    DataType, MapError,
    adt::{add_value, observation_status, observation_value},
    common::{Builder, groups},
};

struct Study {
    uid: String,
    accession: String,
    modality: Option<Value>,
    procedures: Vec<Value>,
    description: String,
    started: Option<String>,
    placer: String,
    notes: Vec<Value>,
}

/// The logical id of the ImagingStudy of one study of a hospital's patient, keyed by its Study
/// Instance UID (or, without one, its accession number): the same whichever record names it
/// (the OMG-11 notice, an imaging report), so a study is one resource.
pub fn study_id(facility: &str, patient_id: &str, key: &str) -> String {
    tsunagi_core::ids::logical_id(&[facility, patient_id, "study", key])
}

/// Maps OMG-11 and OMG-12: one ImagingStudy per Study Instance UID (IPC-3).
pub(crate) fn studies(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let mut studies: BTreeMap<String, Study> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let orc_groups = groups(builder.message, "ORC");
    if orc_groups.is_empty() {
        return Err(MapError::MissingSegment { segment: "ORC" });
    }
    for group in orc_groups {
        let orc = group[0];
        let obr = group.iter().copied().find(|s| s.id() == "OBR");
        let Some(ipc) = group.iter().copied().find(|s| s.id() == "IPC") else {
            continue;
        };
        let uid = ipc.text(3).trim().to_owned();
        let accession = ipc.text(1).trim().to_owned();
        let key = if uid.is_empty() {
            accession.clone()
        } else {
            uid.clone()
        };
        if key.is_empty() {
            builder.warn(format!(
                "IPC (line {}) has neither a Study Instance UID nor an accession number",
                ipc.line()
            ));
            continue;
        }
        let started = match obr {
            Some(obr) => builder.datetime(obr, 7),
            None => None,
        }
        .or_else(|| builder.datetime(orc, 9));
        let study = studies.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Study {
                uid: uid.clone(),
                accession: accession.clone(),
                modality: None,
                procedures: Vec::new(),
                description: String::new(),
                started: None,
                placer: orc.field(2).component(1).text().trim().to_owned(),
                notes: Vec::new(),
            }
        });
        if study.started.is_none() {
            study.started = started;
        }
        if study.modality.is_none() {
            let modality = ipc.field(5).first();
            let code = modality.component(1).text().trim().to_owned();
            if !code.is_empty() {
                study.modality = Some(json!({"system": systems::DICOM_DCM, "code": code}));
            }
        }
        if let Some(obr) = obr
            && let Some(procedure) = builder.concept_of(obr.field(4))
        {
            if study.description.is_empty() {
                study.description = obr.field(4).component(2).text().trim().to_owned();
            }
            if !study.procedures.contains(&procedure) {
                study.procedures.push(procedure);
            }
        }
        for obx in group.iter().copied().filter(|s| s.id() == "OBX") {
            let label = obx.field(3).component(2).text().trim().to_owned();
            let value: Vec<String> = obx
                .field(5)
                .repetitions()
                .map(|rep| {
                    (1..=rep.component_count().max(1))
                        .map(|n| rep.component(n).text().trim().to_owned())
                        .filter(|part| !part.is_empty())
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let value = value.join(", ");
            if !value.is_empty() {
                let note = json!({"text": if label.is_empty() { value } else { format!("{label}: {value}") }});
                if !study.notes.contains(&note) {
                    study.notes.push(note);
                }
            }
        }
    }
    let profile = if builder.context.data_type == DataType::Omg12 {
        profiles::IMAGING_STUDY_ENDOSCOPY
    } else {
        profiles::IMAGING_STUDY_RADIOLOGY
    };
    for key in order {
        let Some(study) = studies.remove(&key) else {
            continue;
        };
        let id = study_id(builder.facility(), builder.context.patient_id, &key);
        let mut identifiers = Vec::new();
        if !study.uid.is_empty() {
            identifiers.push(
                json!({"system": "urn:dicom:uid", "value": format!("urn:oid:{}", study.uid)}),
            );
        }
        if let Some(accession) = identifier(
            &format!(
                "http://tsunagi.example.jp/fhir/IdSystem/{}/accession-number",
                builder.facility()
            ),
            &study.accession,
        ) {
            let mut accession = accession;
            accession["type"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]});
            identifiers.push(accession);
        }
        identifiers.extend(builder.order_identifier(&study.placer));
        let resource = Obj::resource("ImagingStudy")
            .put("id", id.as_str())
            .put("meta", builder.meta(Some(profile)))
            .list("identifier", identifiers)
            .put("status", "available")
            .list("modality", study.modality.into_iter().collect())
            .put("subject", builder.patient_ref())
            .opt("started", study.started)
            .list("procedureCode", study.procedures)
            .put("description", study.description)
            .list("note", study.notes);
        // The study is also the PACS's (and another notice's, when procedures are grouped):
        // this notice's part of it (see [`crate::study`]).
        builder.contribute(
            "ImagingStudy",
            id,
            json!({"kind": "order", "study": resource.build()}),
        );
    }
    Ok(())
}

/// Maps OMG-13: one Observation per OBX.
pub(crate) fn physiology_results(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let obr = builder.required("OBR")?;
    let effective = builder.datetime(obr, 7).or_else(|| builder.care_date());
    let issued = builder.instant(obr, 22);
    let exam = obr.field(4).first();
    let exam_code = exam.component(1).text().trim().to_owned();
    for obx in builder.message.all("OBX").collect::<Vec<_>>() {
        let code_rep = obx.field(3).first();
        let code = code_rep.component(1).text().trim().to_owned();
        let sub_id = obx.text(4).trim().to_owned();
        let id = builder.record_id(&["OBX", &exam_code, &code, &sub_id]);
        let value = observation_value(builder, obx);
        let observation = Obj::resource("Observation")
            .put("id", id.as_str())
            .put("meta", builder.meta(Some(profiles::OBSERVATION_COMMON)))
            .put("status", observation_status(&obx.text(11)))
            .put(
                "category",
                json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "procedure", "display": "Procedure"}]}]),
            )
            .put("code", builder.concept(&code_rep).unwrap_or_else(|| json!({"text": "不明"})))
            .put("subject", builder.patient_ref())
            .opt("effectiveDateTime", builder.datetime(obx, 14).or_else(|| effective.clone()))
            .opt("issued", issued.clone());
        let observation = add_value(observation, value).list(
            "note",
            builder
                .concept(&exam)
                .and_then(|concept| {
                    concept
                        .get("text")
                        .and_then(Value::as_str)
                        .map(|text| json!({"text": format!("検査: {text}")}))
                })
                .into_iter()
                .collect(),
        );
        builder.push("Observation", id, observation.build());
    }
    Ok(())
}
