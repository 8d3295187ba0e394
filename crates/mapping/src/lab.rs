//! OML-11 (OUL^R22): SPM → Specimen, OBR (+ORC) → DiagnosticReport, OBX → Observation.
//!
//! In OUL^R22 the order is `SPM → OBR → ORC → OBX…`, possibly repeated. Each Observation gets
//! the JP Core composite identifier `[ORC-2]_[OBR-4]_[SPM-4]_[OBX-3](_[OBX-4])`, `code.text`
//! (the display, else the code), `effectiveDateTime` (specimen collection time: SPM-17, else
//! OBR-7, else OBX-14, else the care date) and a reference to its Specimen.

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, coding, reference},
    profiles, systems,
};
use tsunagi_hl7v2::Segment;

use crate::{
    MapError,
    adt::{add_value, observation_status, observation_value},
    common::Builder,
};

/// The OBX-8 abnormal flag as a v3 ObservationInterpretation.
pub(crate) fn interpretation(flag: &str) -> Option<Value> {
    let (code, display) = match flag.trim() {
        "H" => ("H", "High"),
        "L" => ("L", "Low"),
        "HH" => ("HH", "Critical high"),
        "LL" => ("LL", "Critical low"),
        "A" => ("A", "Abnormal"),
        "AA" => ("AA", "Critical abnormal"),
        "N" => ("N", "Normal"),
        _ => return None,
    };
    Some(
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": code, "display": display}]}),
    )
}

/// OBX-7 as a reference range: `1.2-2.0` → low/high, `<85` → high, `>40` → low; the text as
/// sent is always kept.
pub(crate) fn reference_range(
    builder: &Builder<'_, '_>,
    text: &str,
    unit: Option<&tsunagi_hl7v2::Repetition<'_>>,
) -> Option<Value> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let decimal = tsunagi_fhir::json::decimal;
    let mut range = Obj::new();
    if let Some((comparator, number)) = crate::adt::inequality(trimmed) {
        if let Some(value) = decimal(number) {
            let quantity = builder.quantity(value, unit);
            range = if comparator.starts_with('<') {
                range.put("high", quantity)
            } else {
                range.put("low", quantity)
            };
        }
    } else if let Some((low, high)) = split_range(trimmed)
        && let (Some(low), Some(high)) = (decimal(low), decimal(high))
    {
        range = range
            .put("low", builder.quantity(low, unit))
            .put("high", builder.quantity(high, unit));
    }
    Some(range.put("text", trimmed).build())
}

fn split_range(text: &str) -> Option<(&str, &str)> {
    // Skip a leading minus so "-1.0-2.0" splits after the first number.
    let start = usize::from(text.starts_with('-'));
    for separator in ['-', '～', '~', '〜', '－'] {
        if let Some(position) = text[start..].find(separator) {
            let split = start + position;
            return Some((&text[..split], &text[split + separator.len_utf8()..]));
        }
    }
    None
}

/// Maps an OML-11 message.
pub(crate) fn results(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let segments: Vec<&Segment<'_>> = builder.message.segments().iter().collect();
    let mut specimen: Option<(String, String, Option<String>)> = None; // (id, SPM-4 code, collected)
    let mut report: Option<Report> = None;
    let mut specimen_count = 0usize;
    for segment in segments {
        match segment.id() {
            "SPM" => {
                if let Some(done) = report.take() {
                    finish_report(builder, done);
                }
                specimen_count += 1;
                specimen = Some(map_specimen(builder, segment, specimen_count));
            }
            "OBR" => {
                if let Some(done) = report.take() {
                    finish_report(builder, done);
                }
                report = Some(Report::new(builder, segment, specimen.as_ref()));
            }
            "ORC" => {
                if let Some(current) = report.as_mut() {
                    current.orc_placer = segment.field(2).component(1).text().trim().to_owned();
                    current.order_status = segment.field(5).component(1).text().trim().to_owned();
                }
            }
            "OBX" => {
                if let Some(current) = report.as_mut() {
                    let observation_id =
                        map_observation(builder, segment, current, specimen.as_ref());
                    current.results.push(observation_id);
                } else {
                    builder.warn(format!(
                        "OBX (line {}) before any OBR; left out",
                        segment.line()
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(done) = report.take() {
        finish_report(builder, done);
    }
    if specimen_count == 0 {
        builder.warn("no SPM segment: observations have no specimen (JP Core 1.1.1 requires one)");
    }
    Ok(())
}

struct Report {
    obr_index: usize,
    obr_code: String,
    code: Option<Value>,
    effective: Option<String>,
    issued: Option<String>,
    result_status: String,
    order_status: String,
    orc_placer: String,
    filler: String,
    specimen_id: Option<String>,
    results: Vec<String>,
}

impl Report {
    fn new(
        builder: &mut Builder<'_, '_>,
        obr: &Segment<'_>,
        specimen: Option<&(String, String, Option<String>)>,
    ) -> Self {
        let code_rep = obr.field(4).first();
        let effective = specimen
            .and_then(|s| s.2.clone())
            .or_else(|| builder.datetime(obr, 7));
        Self {
            obr_index: obr.index(),
            obr_code: code_rep.component(1).text().trim().to_owned(),
            code: builder.concept(&code_rep),
            effective,
            issued: builder.instant(obr, 22),
            result_status: obr.field(25).component(1).text().trim().to_owned(),
            order_status: String::new(),
            orc_placer: obr.field(2).component(1).text().trim().to_owned(),
            filler: obr.field(3).component(1).text().trim().to_owned(),
            specimen_id: specimen.map(|s| s.0.clone()),
            results: Vec::new(),
        }
    }
}

fn map_specimen(
    builder: &mut Builder<'_, '_>,
    spm: &Segment<'_>,
    position: usize,
) -> (String, String, Option<String>) {
    let specimen_number = spm.field(2).component(1).text().trim().to_owned();
    let key = if specimen_number.is_empty() {
        format!("SPM{position}")
    } else {
        specimen_number.clone()
    };
    let id = builder.record_id(&["SPM", &key]);
    let kind = spm.field(4).first();
    let kind_code = kind.component(1).text().trim().to_owned();
    let collected = builder.datetime(spm, 17);
    let kind_concept = builder.concept(&kind).map(|mut concept| {
        // SPM-4 JC10 is the 3-digit JLAC10 *material* code, not a 17-digit analyte code.
        if let Some(Value::Array(codings)) = concept.get_mut("coding") {
            for coding_value in codings.iter_mut() {
                if coding_value.get("system").and_then(Value::as_str) == Some(systems::JLAC10) {
                    coding_value["system"] =
                        json!(format!("{}/JLAC10-material", systems::NATIONAL_BASE));
                }
            }
        }
        concept
    });
    let resource = Obj::resource("Specimen")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::SPECIMEN_COMMON)))
        .list(
            "identifier",
            vec![
                builder
                    .instance_identifier(&specimen_number)
                    .unwrap_or(Value::Null),
            ],
        )
        .opt(
            "accessionIdentifier",
            tsunagi_fhir::json::identifier(
                &format!(
                    "http://tsunagi.example.jp/fhir/IdSystem/{}/specimen-number",
                    builder.facility()
                ),
                &specimen_number,
            ),
        )
        .put("status", "available")
        .opt("type", kind_concept)
        .put("subject", builder.patient_ref())
        .put(
            "collection",
            Obj::new()
                .opt("collectedDateTime", collected.clone())
                .build(),
        );
    builder.push("Specimen", id.clone(), resource.build());
    (id, kind_code, collected)
}

fn map_observation(
    builder: &mut Builder<'_, '_>,
    obx: &Segment<'_>,
    report: &Report,
    specimen: Option<&(String, String, Option<String>)>,
) -> String {
    let code_rep = obx.field(3).first();
    let code = code_rep.component(1).text().trim().to_owned();
    let sub_id = obx.text(4).trim().to_owned();
    let specimen_code = specimen.map(|s| s.1.as_str()).unwrap_or("");
    let mut composite = format!(
        "{}_{}_{}_{}",
        report.orc_placer, report.obr_code, specimen_code, code
    );
    if !sub_id.is_empty() {
        composite.push('_');
        composite.push_str(&sub_id);
    }
    let position = obx.index().to_string();
    let id = if code.is_empty() {
        builder.record_id(&["OBX", &report.obr_index.to_string(), &position])
    } else {
        builder.record_id(&["OBX", &report.obr_code, specimen_code, &code, &sub_id])
    };
    let mut concept = builder
        .concept(&code_rep)
        .unwrap_or_else(|| json!({"text": "不明"}));
    if concept.get("text").is_none() {
        concept["text"] = json!(if code.is_empty() {
            "不明".to_owned()
        } else {
            code.clone()
        });
    }
    let effective = specimen
        .and_then(|s| s.2.clone())
        .or_else(|| report.effective.clone())
        .or_else(|| builder.datetime(obx, 14))
        .or_else(|| builder.care_date());
    let value = observation_value(builder, obx);
    let unit = obx.field(6).first();
    let range = reference_range(builder, &obx.text(7), Some(&unit));
    let observation = Obj::resource("Observation")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::OBSERVATION_LAB_RESULT)))
        .list("identifier", vec![builder.instance_identifier(&composite).unwrap_or(Value::Null)])
        .put("status", observation_status(&obx.text(11)))
        .put(
            "category",
            json!([{"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"},
                {"system": "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS", "code": "laboratory"}
            ]}]),
        )
        .put("code", concept)
        .put("subject", builder.patient_ref())
        .opt("effectiveDateTime", effective)
        .opt("issued", report.issued.clone());
    let observation = add_value(observation, value)
        .list(
            "interpretation",
            crate::lab::interpretation(&obx.field(8).component(1).text())
                .into_iter()
                .collect(),
        )
        .opt("specimen", specimen.map(|s| reference("Specimen", &s.0)))
        .list("referenceRange", range.into_iter().collect());
    builder.push("Observation", id.clone(), observation.build());
    id
}

fn finish_report(builder: &mut Builder<'_, '_>, report: Report) {
    let id = builder.record_id(&["OBR", &report.obr_index.to_string(), &report.obr_code]);
    let status = match (report.result_status.as_str(), report.order_status.as_str()) {
        ("P", _) => "preliminary",
        ("C", _) => "corrected",
        ("X", _) => "cancelled",
        ("F", _) | (_, "CM") => "final",
        ("I" | "S" | "R" | "O", _) => "registered",
        _ => "final",
    };
    let mut code = report.code.clone().unwrap_or_else(|| json!({}));
    let loinc = coding("http://loinc.org", "11502-2", "Laboratory report");
    if let Some(Value::Array(codings)) = code.get_mut("coding") {
        codings.insert(0, loinc.unwrap_or(Value::Null));
    } else {
        code["coding"] = json!([loinc]);
    }
    let identifiers = vec![
        builder
            .order_identifier(&report.orc_placer)
            .unwrap_or(Value::Null),
        tsunagi_fhir::json::identifier(
            &format!(
                "http://tsunagi.example.jp/fhir/IdSystem/{}/filler-order-number",
                builder.facility()
            ),
            &report.filler,
        )
        .unwrap_or(Value::Null),
    ];
    let resource = Obj::resource("DiagnosticReport")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::DIAGNOSTIC_REPORT_LAB_RESULT)))
        .list("identifier", identifiers)
        .put("status", status)
        .put(
            "category",
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB", "display": "Laboratory"}]}]),
        )
        .put("code", code)
        .put("subject", builder.patient_ref())
        .opt("effectiveDateTime", report.effective.clone().or_else(|| builder.care_date()))
        .opt("issued", report.issued.clone())
        .list("specimen", report.specimen_id.iter().map(|s| reference("Specimen", s)).collect())
        .list("result", report.results.iter().map(|r| reference("Observation", r)).collect());
    builder.push("DiagnosticReport", id, resource.build());
}
