//! PPR-01: the patient's whole problem list (one PRB per diagnosis) → Conditions.
//!
//! A PPR-01 file is a complete snapshot: the adapter replaces everything the previous snapshot
//! produced with what this one produces. A Condition's id comes from the patient and PRB-4
//! (problem instance id), so a diagnosis that stays on the list keeps its id across snapshots.

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, codeable, coding, extension},
    profiles, systems,
};
use tsunagi_hl7v2::Segment;

use crate::{MapError, common::Builder};

/// JP Core 1.2 prefix-modifier extension.
const PREFIX_MODIFIER: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Condition_DiseasePrefixModifier";
/// JP Core 1.2 postfix-modifier extension.
const POSTFIX_MODIFIER: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Condition_DiseasePostfixModifier";
/// JP Core 1.2 outcome extension.
const OUTCOME: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Condition_DiseaseOutcome";
/// PRB-18 diagnosis rank (主診断/副診断); FHIR has no Condition element for it outside Encounter.
pub const RANK: &str = "http://tsunagi.example.jp/fhir/StructureDefinition/condition-rank";

/// Maps every PRB (with the ZPR that follows it) to a Condition.
pub(crate) fn conditions(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let segments: Vec<&Segment<'_>> = builder.message.segments().iter().collect();
    for (index, prb) in segments.iter().enumerate() {
        if prb.id() != "PRB" {
            continue;
        }
        let zpr = segments[index + 1..]
            .iter()
            .take_while(|segment| segment.id() != "PRB")
            .find(|segment| segment.id() == "ZPR")
            .copied();
        condition(builder, prb, zpr);
    }
    Ok(())
}

fn condition(builder: &mut Builder<'_, '_>, prb: &Segment<'_>, zpr: Option<&Segment<'_>>) {
    let disease = prb.field(3).first();
    let instance = prb.text(4).trim().to_owned();
    let onset = builder.datetime(prb, 16);
    let key = if instance.is_empty() {
        format!(
            "{}-{}",
            disease.component(1).text().trim(),
            onset.as_deref().unwrap_or("")
        )
    } else {
        instance.clone()
    };
    let id = builder.patient_scoped_id(&["PRB", &key]);

    // Code: MEDIS 病名管理番号 (PRB-3) + ICD-10 (PRB-10 first triplet).
    let mut codings = builder.codings(&disease);
    let icd = prb.field(10).first();
    let icd_code = icd.component(1).text().trim().to_owned();
    if !icd_code.is_empty() {
        let system_name = icd.component(3).text();
        let system = if system_name.trim().is_empty() {
            systems::ICD10.to_owned()
        } else {
            builder.system(&system_name)
        };
        codings.extend(coding(&system, &icd_code, &icd.component(2).text()));
    }
    let text = [
        disease.component(2).text().trim().to_owned(),
        prb.text(17).trim().to_owned(),
    ]
    .into_iter()
    .find(|text| !text.is_empty())
    .unwrap_or_else(|| icd_code.clone());
    let code = codeable(codings.into_iter().map(Some).collect(), &text);

    // Category: encounter diagnosis, with JAHIS 診断種別 (PRB-10 alternate triplet) alongside.
    let kind = coding(
        &builder.system(&icd.component(6).text()),
        &icd.component(4).text(),
        &icd.component(5).text(),
    );
    let category = codeable(
        vec![
            coding(
                "http://terminology.hl7.org/CodeSystem/condition-category",
                "encounter-diagnosis",
                "Encounter Diagnosis",
            ),
            kind,
        ],
        "",
    );

    let abatement = builder.datetime(prb, 9);
    let clinical = if abatement.is_some() {
        "resolved"
    } else {
        "active"
    };
    let action = prb.field(1).component(1).text().trim().to_owned();
    let suspected = prb.field(13).component(1).text().trim().to_owned();
    let verification = if action == "DE" {
        "entered-in-error"
    } else if !suspected.is_empty() && !matches!(suspected.as_str(), "N" | "0" | "F") {
        "provisional"
    } else {
        "confirmed"
    };

    let mut extensions: Vec<Value> = Vec::new();
    if let Some(zpr) = zpr {
        for (field, url) in [(1usize, PREFIX_MODIFIER), (3, POSTFIX_MODIFIER)] {
            for modifier in zpr.field(field).repetitions() {
                if let Some(concept) = builder.concept(&modifier) {
                    extensions.push(extension(url, "valueCodeableConcept", concept));
                }
            }
        }
    }
    let outcome = prb.field(14).first();
    if let Some(concept) = builder.concept(&outcome) {
        extensions.push(extension(OUTCOME, "valueCodeableConcept", concept));
    }
    let rank = prb.field(18).first();
    if let Some(concept) = builder.concept(&rank) {
        extensions.push(extension(RANK, "valueCodeableConcept", concept));
    }

    let mut resource = Obj::resource("Condition")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::CONDITION)))
        .list("extension", extensions)
        .list("identifier", vec![builder.instance_identifier(&instance).unwrap_or(Value::Null)])
        .put(
            "clinicalStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]}),
        )
        .put(
            "verificationStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]}),
        )
        .list("category", category.into_iter().collect())
        .opt("code", code)
        .put("subject", builder.patient_ref());
    if let Some(onset) = onset {
        resource = resource.put("onsetDateTime", onset);
    }
    resource = resource
        .opt("abatementDateTime", abatement)
        .opt("recordedDate", builder.datetime(prb, 7));
    if let Some(orc) = builder.message.first("ORC") {
        resource = resource.opt("recorder", builder.person(&orc.field(12).first()));
    }
    builder.push("Condition", id, resource.build());
}
