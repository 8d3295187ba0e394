//! A study as a hospital's PACS describes it over QIDO-RS (study, series and instance data
//! sets of the DICOM JSON model) → the PACS's part of its ImagingStudy (JP Core
//! `JP_ImagingStudy_Radiology`), keyed as the OMG-11 notice keys it
//! ([`crate::imaging::study_id`]: facility, patient, Study Instance UID), folded with the
//! notices' parts by [`crate::study::fold`].
//!
//! Identifiers are the Study Instance UID and the accession number; `started` is Study Date +
//! Time (at the PACS's Timezone Offset From UTC, Japan time when it gives none); each series carries its modality, number,
//! description, body part and instances (SOP class and number). The patient is the PACS's
//! Patient ID at that hospital — never its name.

use serde_json::{Value, json};
use tsunagi_core::{ids::logical_id, time::hl7_to_fhir_datetime};
use tsunagi_dicom::{json::Dataset, tags};
use tsunagi_fhir::{endpoint::dicomweb_endpoint_id, json::reference, profiles, systems};

use crate::{Contribution, imaging::study_id};

/// Why a study cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StudyError {
    /// A required attribute is missing.
    #[error("the study has no {0}")]
    Missing(&'static str),
}

/// What a PACS says of one study.
#[derive(Debug, Clone)]
pub struct PacsStudy<'a> {
    /// The hospital whose PACS it is.
    pub facility: &'a str,
    /// The study's data set (QIDO-RS `studies`).
    pub study: &'a Dataset<'a>,
    /// Its series (QIDO-RS `studies/{uid}/series`).
    pub series: &'a [Dataset<'a>],
    /// Its instances (QIDO-RS `studies/{uid}/instances`, with their series UID).
    pub instances: &'a [Dataset<'a>],
    /// `meta.source`: the study in the PACS (`urn:tsunagi:dicomweb:<facility>:<uid>`; never
    /// the PACS's URL, which the network is not to know).
    pub source: &'a str,
}

impl PacsStudy<'_> {
    /// The study's patient id at the hospital.
    pub fn patient_id(&self) -> Result<String, StudyError> {
        self.study
            .string(tags::PATIENT_ID)
            .ok_or(StudyError::Missing("Patient ID (0010,0020)"))
    }

    /// Its Study Instance UID.
    pub fn uid(&self) -> Result<String, StudyError> {
        self.study
            .string(tags::STUDY_INSTANCE_UID)
            .ok_or(StudyError::Missing("Study Instance UID (0020,000D)"))
    }
}

/// The PACS's part of the study's ImagingStudy.
pub fn pacs_part(pacs: &PacsStudy<'_>) -> Result<Contribution, StudyError> {
    let facility = pacs.facility;
    let patient_id = pacs.patient_id()?;
    let uid = pacs.uid()?;
    let id = study_id(facility, &patient_id, &uid);
    let study = pacs.study;
    let mut identifiers =
        vec![json!({"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")})];
    if let Some(accession) = study.string(tags::ACCESSION_NUMBER) {
        identifiers.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "system": format!("http://tsunagi.example.jp/fhir/IdSystem/{facility}/accession-number"),
            "value": accession
        }));
    }
    let mut series: Vec<Value> = pacs
        .series
        .iter()
        .filter_map(|series| series_of(series, pacs.instances))
        .collect();
    series.sort_by_key(|series| {
        (
            series["number"].as_i64().unwrap_or(i64::MAX),
            series["uid"].as_str().unwrap_or("").to_owned(),
        )
    });
    let mut modalities: Vec<String> = study.strings(tags::MODALITIES_IN_STUDY);
    for series in &series {
        if let Some(code) = series["modality"]["code"].as_str()
            && !modalities.iter().any(|known| known == code)
        {
            modalities.push(code.to_owned());
        }
    }
    let instances_counted: usize = series
        .iter()
        .map(|series| series["instance"].as_array().map_or(0, Vec::len))
        .sum();
    let mut resource = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() && value != json!([]) && value != json!("") {
            resource.insert(key.to_owned(), value);
        }
    };
    put("resourceType", json!("ImagingStudy"));
    put("id", json!(id));
    put(
        "meta",
        json!({"profile": [profiles::IMAGING_STUDY_RADIOLOGY], "source": pacs.source}),
    );
    put("identifier", json!(identifiers));
    put("status", json!("available"));
    put(
        "modality",
        json!(
            modalities
                .iter()
                .filter(|code| !code.trim().is_empty())
                .map(|code| json!({"system": systems::DICOM_DCM, "code": code.trim()}))
                .collect::<Vec<_>>()
        ),
    );
    put(
        "subject",
        reference("Patient", &logical_id(&[facility, &patient_id])),
    );
    put("started", json!(started(study)));
    put(
        "numberOfSeries",
        json!(
            study
                .int(tags::NUMBER_OF_STUDY_RELATED_SERIES)
                .unwrap_or(series.len() as i64)
        ),
    );
    put(
        "numberOfInstances",
        json!(
            study
                .int(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
                .unwrap_or(instances_counted as i64)
        ),
    );
    put(
        "description",
        json!(study.string(tags::STUDY_DESCRIPTION).unwrap_or_default()),
    );
    put("series", json!(series));
    // Its images are opened through the gateway's proxy of this hospital's PACS.
    put(
        "endpoint",
        json!([reference("Endpoint", &dicomweb_endpoint_id(facility))]),
    );
    Ok(Contribution {
        resource_type: "ImagingStudy",
        id,
        part: json!({"kind": "pacs", "study": Value::Object(resource)}),
    })
}

/// Study Date + Time as a FHIR dateTime (Japan time unless the PACS says otherwise).
fn started(study: &Dataset<'_>) -> Option<String> {
    let date = study.string(tags::STUDY_DATE)?;
    let time = study.string(tags::STUDY_TIME).unwrap_or_default();
    // The PACS's Timezone Offset From UTC (`+0900`), when it gives a well-formed one.
    let offset = study
        .string(tags::TIMEZONE_OFFSET_FROM_UTC)
        .map(|offset| offset.trim().to_owned())
        .filter(|offset| {
            offset.len() == 5
                && offset.starts_with(['+', '-'])
                && offset[1..].bytes().all(|b| b.is_ascii_digit())
        })
        .filter(|_| !time.is_empty())
        .unwrap_or_default();
    hl7_to_fhir_datetime(&format!("{date}{time}{offset}"))
        .or_else(|_| hl7_to_fhir_datetime(&format!("{date}{time}")))
        .or_else(|_| hl7_to_fhir_datetime(&date))
        .ok()
}

/// One series with its instances.
fn series_of(series: &Dataset<'_>, instances: &[Dataset<'_>]) -> Option<Value> {
    let uid = series.string(tags::SERIES_INSTANCE_UID)?;
    let mut members: Vec<Value> = instances
        .iter()
        .filter(|instance| {
            instance.string(tags::SERIES_INSTANCE_UID).as_deref() == Some(uid.as_str())
        })
        .filter_map(|instance| {
            let sop = instance.string(tags::SOP_INSTANCE_UID)?;
            let class = instance.string(tags::SOP_CLASS_UID).unwrap_or_default();
            let mut entry = json!({
                "uid": sop,
                "sopClass": {"system": "urn:ietf:rfc:3986", "code": format!("urn:oid:{class}")}
            });
            if let Some(number) = instance.int(tags::INSTANCE_NUMBER)
                && number >= 0
            {
                entry["number"] = json!(number);
            }
            Some(entry)
        })
        .collect();
    members.sort_by_key(|instance| {
        (
            instance["number"].as_i64().unwrap_or(i64::MAX),
            instance["uid"].as_str().unwrap_or("").to_owned(),
        )
    });
    let mut out = json!({
        "uid": uid,
        "modality": {"system": systems::DICOM_DCM, "code": series.string(tags::MODALITY).unwrap_or_else(|| "OT".to_owned())},
    });
    if let Some(number) = series.int(tags::SERIES_NUMBER)
        && number >= 0
    {
        out["number"] = json!(number);
    }
    if let Some(description) = series.string(tags::SERIES_DESCRIPTION) {
        out["description"] = json!(description);
    }
    let count = series
        .int(tags::NUMBER_OF_SERIES_RELATED_INSTANCES)
        .unwrap_or(members.len() as i64);
    out["numberOfInstances"] = json!(count);
    if let Some(body_part) = series.string(tags::BODY_PART_EXAMINED) {
        // DICOM's Body Part Examined is a defined term, not a SNOMED code: kept as text.
        out["bodySite"] = json!({"display": body_part});
    }
    if !members.is_empty() {
        out["instance"] = json!(members);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_qido_study_becomes_the_pacs_part_of_its_imaging_study() {
        let study = json!({
            "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
            "00080020": {"vr": "DA", "Value": ["20240501"]},
            "00080030": {"vr": "TM", "Value": ["101500"]},
            "00080050": {"vr": "SH", "Value": ["A2024000052"]},
            "00080061": {"vr": "CS", "Value": ["CR"]},
            "00081030": {"vr": "LO", "Value": ["胸部X線"]},
            "00100020": {"vr": "LO", "Value": ["0001000052"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.392.1"]},
            "00201206": {"vr": "IS", "Value": [1]},
            "00201208": {"vr": "IS", "Value": [2]}
        });
        let series = json!([{
            "00080060": {"vr": "CS", "Value": ["CR"]},
            "0008103E": {"vr": "LO", "Value": ["胸部正面"]},
            "00180015": {"vr": "CS", "Value": ["CHEST"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.392.1.1"]},
            "00200011": {"vr": "IS", "Value": [1]},
            "00201209": {"vr": "IS", "Value": [2]}
        }]);
        let instances = json!([
            {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1"]}, "00080018": {"vr": "UI", "Value": ["1.2.392.1.1.2"]}, "0020000E": {"vr": "UI", "Value": ["1.2.392.1.1"]}, "00200013": {"vr": "IS", "Value": [2]}},
            {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1"]}, "00080018": {"vr": "UI", "Value": ["1.2.392.1.1.1"]}, "0020000E": {"vr": "UI", "Value": ["1.2.392.1.1"]}, "00200013": {"vr": "IS", "Value": [1]}}
        ]);
        let study_json = study;
        let study = Dataset::new(&study_json).unwrap();
        let series = Dataset::all(&series).unwrap();
        let instances = Dataset::all(&instances).unwrap();
        let part = pacs_part(&PacsStudy {
            facility: "0610100010",
            study: &study,
            series: &series,
            instances: &instances,
            source: "http://pacs/dicom-web",
        })
        .unwrap();
        assert_eq!(
            part.id,
            study_id("0610100010", "0001000052", "1.2.392.1"),
            "the OMG-11 notice's key"
        );
        let imaging = &part.part["study"];
        assert_eq!(imaging["started"], "2024-05-01T10:15:00+09:00");
        // A PACS that states its offset is taken at its word.
        let mut elsewhere = study_json.clone();
        elsewhere["00080201"] = json!({"vr": "SH", "Value": ["-0500"]});
        let elsewhere = Dataset::new(&elsewhere).unwrap();
        assert_eq!(
            started(&elsewhere).as_deref(),
            Some("2024-05-01T10:15:00-05:00")
        );
        assert_eq!(imaging["numberOfInstances"], 2);
        assert_eq!(
            imaging["subject"]["reference"],
            "Patient/0610100010.0001000052"
        );
        assert_eq!(imaging["identifier"][1]["value"], "A2024000052");
        let series = &imaging["series"][0];
        assert_eq!(series["modality"]["code"], "CR");
        assert_eq!(series["description"], "胸部正面");
        assert_eq!(series["instance"][0]["uid"], "1.2.392.1.1.1", "by number");
        assert_eq!(
            series["instance"][0]["sopClass"]["code"],
            "urn:oid:1.2.840.10008.5.1.4.1.1.1"
        );
        let problems = tsunagi_fhir_xml::structure::check(imaging).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // No UID, no study.
        let bare = json!({"00100020": {"vr": "LO", "Value": ["1"]}});
        let bare = Dataset::new(&bare).unwrap();
        assert!(
            pacs_part(&PacsStudy {
                facility: "0610100010",
                study: &bare,
                series: &[],
                instances: &[],
                source: "x",
            })
            .is_err()
        );
    }
}
