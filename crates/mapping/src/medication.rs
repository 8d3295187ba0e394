//! OMP-01/02 (RDE^O11) → MedicationRequest, one per RXE; OMP-11/12 (RAS^O17) →
//! MedicationAdministration, one per RXA.
//!
//! OMP-01 RXE-2 is the drug (HOT9 usually). OMP-02 RXE-2 is an *injection type*; the drugs are
//! the RXC segments, which become a contained JP_Medication with one ingredient each, as
//! JP_MedicationRequest_Injection requires `medicationReference`.

use std::collections::HashMap;

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, codeable, coding, decimal, extension, identifier},
    profiles,
    search::PERIOD_OF_USE,
    systems,
};
use tsunagi_hl7v2::{Repetition, Segment};

use crate::{
    DataType, MapError,
    common::{Builder, groups},
};

const USAGE_DURATION: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_MedicationDosage_UsageDuration";
const DRUG_NO: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Medication_Ingredient_DrugNo";
const MERIT9_CATEGORY: &str =
    "http://jpfhir.jp/fhir/core/CodeSystem/JP_MedicationCategoryMERIT9_CS";

/// ORC-4: the Rp number, without zero padding when numeric ("01" → "1").
fn rp_number(orc: &Segment<'_>) -> String {
    let raw = orc.field(4).component(1).text().trim().to_owned();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let stripped = raw.trim_start_matches('0');
        if stripped.is_empty() {
            "0".to_owned()
        } else {
            stripped.to_owned()
        }
    } else if raw.is_empty() {
        "1".to_owned()
    } else {
        raw
    }
}

fn request_status(order_control: &str) -> &'static str {
    match order_control.trim() {
        "CA" | "OC" | "CR" => "cancelled",
        "DC" | "OD" => "stopped",
        "HD" | "OH" => "on-hold",
        _ => "active",
    }
}

/// The day count of TQ1-6 (`5^d`) as a Duration in days.
fn days(builder: &mut Builder<'_, '_>, tq1: &Segment<'_>) -> Option<Value> {
    let quantity = tq1.field(6).first();
    let value = quantity.component(1).text();
    if value.trim().is_empty() {
        return None;
    }
    let unit = quantity.component(2).text().trim().to_owned();
    if !(unit.is_empty() || unit == "d" || unit == "D") {
        builder.warn(format!(
            "TQ1-6 (line {}): duration unit {unit:?} is not days; left out",
            tq1.line()
        ));
        return None;
    }
    let number = decimal(&value)?;
    Some(json!({"value": number, "unit": "日", "system": systems::UCUM, "code": "d"}))
}

/// Maps OMP-01 and OMP-02.
pub(crate) fn requests(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let injection = builder.context.data_type == DataType::Omp02;
    let mut order_in_rp: HashMap<String, usize> = HashMap::new();
    let orc_groups = groups(builder.message, "ORC");
    if orc_groups.is_empty() {
        return Err(MapError::MissingSegment { segment: "ORC" });
    }
    for group in orc_groups {
        let orc = group[0];
        let rxes: Vec<usize> = group
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id() == "RXE")
            .map(|(i, _)| i)
            .collect();
        if rxes.is_empty() {
            builder.warn(format!(
                "ORC (line {}) has no RXE; nothing to map",
                orc.line()
            ));
        }
        for (position, &rxe_index) in rxes.iter().enumerate() {
            let end = rxes.get(position + 1).copied().unwrap_or(group.len());
            let rxe = group[rxe_index];
            let followers: Vec<&Segment<'_>> = group[rxe_index + 1..end].to_vec();
            let rp = rp_number(orc);
            let counter = order_in_rp.entry(rp.clone()).or_insert(0);
            *counter += 1;
            let order = counter.to_string();
            medication_request(builder, orc, rxe, &followers, &rp, &order, injection);
        }
    }
    Ok(())
}

fn medication_request(
    builder: &mut Builder<'_, '_>,
    orc: &Segment<'_>,
    rxe: &Segment<'_>,
    followers: &[&Segment<'_>],
    rp: &str,
    order_in_rp: &str,
    injection: bool,
) {
    let id = builder.record_id(&[rp, order_in_rp]);
    let placer = orc.field(2).component(1).text().trim().to_owned();
    let instance = builder.order_line_instance(&placer, rp, order_in_rp);
    let identifiers = vec![
        identifier(systems::RP_NUMBER, rp),
        identifier(systems::ORDER_IN_RP, order_in_rp),
        builder.instance_identifier(&instance),
        builder.order_identifier(&placer),
    ];
    let authored = builder.datetime(orc, 9).or_else(|| {
        let fallback = builder.care_date();
        if fallback.is_some() {
            builder.warn(format!(
                "ORC-9 (line {}) is empty; authoredOn is the care date",
                orc.line()
            ));
        }
        fallback
    });

    // Categories: ORC-29 (inpatient/outpatient), RXE-21 prescription categories, and for
    // injections the RXE-2 injection type.
    let mut categories = Vec::new();
    let order_type = orc.field(29).first();
    let order_type_code = order_type.component(1).text().trim().to_owned();
    if !order_type_code.is_empty() {
        categories.extend(codeable(
            vec![coding(
                "http://terminology.hl7.org/CodeSystem/v2-0482",
                &order_type_code,
                &order_type.component(2).text(),
            )],
            "",
        ));
    }
    for category in rxe.field(21).repetitions() {
        let system_name = category.component(3).text();
        let system = if system_name.trim() == "MR9P" {
            MERIT9_CATEGORY.to_owned()
        } else {
            builder.system(&system_name)
        };
        categories.extend(codeable(
            vec![coding(
                &system,
                &category.component(1).text(),
                &category.component(2).text(),
            )],
            "",
        ));
    }
    let give = rxe.field(2).first();
    if injection {
        categories.extend(builder.concept(&give));
    }

    let tq1s: Vec<&Segment<'_>> = followers
        .iter()
        .copied()
        .filter(|s| s.id() == "TQ1")
        .collect();
    let rxr = followers.iter().copied().find(|s| s.id() == "RXR");
    let rxcs: Vec<&Segment<'_>> = followers
        .iter()
        .copied()
        .filter(|s| s.id() == "RXC")
        .collect();

    // Dosage.
    let mut dosage = Obj::new();
    let mut dosage_extensions = Vec::new();
    let mut timing = Obj::new();
    let mut supply_duration = None;
    if let Some(tq1) = tq1s.first() {
        let usage = tq1.field(3).component(1);
        if let Some(code) = builder.concept_from_subcomponents(usage) {
            timing = timing.put("code", code);
        }
        let start = builder.datetime(tq1, 7);
        let end = builder.datetime(tq1, 8);
        if start.is_some() || end.is_some() {
            let period = Obj::new().opt("start", start).opt("end", end).build();
            dosage_extensions.push(extension(PERIOD_OF_USE, "valuePeriod", period.clone()));
            if injection {
                timing = timing.put("repeat", json!({"boundsPeriod": period}));
            }
        }
        if let Some(duration) = days(builder, tq1) {
            dosage_extensions.push(extension(USAGE_DURATION, "valueDuration", duration.clone()));
            supply_duration = Some(duration);
        }
    }
    let route = rxr.and_then(|rxr| builder.concept_of(rxr.field(1)));
    let method = rxr.and_then(|rxr| builder.concept_of(rxr.field(3)));
    let dose_value = rxe.field(3);
    let dose_unit = rxe.field(5).first();
    let mut dose_and_rate = Obj::new();
    if !dose_value.is_null() {
        let label = format!("RXE-3 (line {})", rxe.line());
        if let Some(quantity) =
            builder.quantity_from_text(&label, &dose_value.text(), Some(&dose_unit))
        {
            dose_and_rate = dose_and_rate.put("doseQuantity", quantity);
        }
    }
    // RXE-19 total daily dose (`3^TAB&錠&MR9P`) → rateRatio per day.
    let daily = rxe.field(19).first();
    if !daily.component(1).is_empty()
        && let Some(value) = decimal(&daily.component(1).text())
    {
        let unit = daily.component(2);
        let numerator = Obj::new()
            .put("value", value)
            .put(
                "unit",
                if unit.sub(2).text().trim().is_empty() {
                    unit.sub(1).text().trim().to_owned()
                } else {
                    unit.sub(2).text().trim().to_owned()
                },
            )
            .put(
                "system",
                if unit.sub(1).text().trim().is_empty() {
                    String::new()
                } else {
                    builder.system(&unit.sub(3).text())
                },
            )
            .put("code", unit.sub(1).text().trim());
        dose_and_rate = dose_and_rate.put(
                "rateRatio",
                json!({"numerator": numerator.build(), "denominator": {"value": 1, "unit": "日", "system": systems::UCUM, "code": "d"}}),
            );
    }
    // RXE-23/24 infusion rate (`102` + `ml/hr^…^ISO+`).
    let rate = rxe.field(23);
    if !rate.is_empty() {
        let unit = rxe.field(24).first();
        let label = format!("RXE-23 (line {})", rxe.line());
        if let Some(quantity) = builder.quantity_from_text(&label, &rate.text(), Some(&unit)) {
            dose_and_rate = dose_and_rate.put("rateQuantity", quantity);
        }
    }
    let instruction = rxe.field(7).first();
    let instruction_text = [2usize, 1]
        .iter()
        .map(|n| instruction.component(*n).text().trim().to_owned())
        .find(|text| !text.is_empty());
    let timing = timing.build();
    dosage = dosage
        .list("extension", dosage_extensions)
        .list(
            "additionalInstruction",
            instruction_text
                .map(|text| vec![json!({"text": text})])
                .unwrap_or_default(),
        )
        .put("timing", timing)
        .opt("route", route)
        .opt("method", method)
        .list("doseAndRate", vec![dose_and_rate.build()]);

    // Dispense request.
    let dispense_value = rxe.field(10);
    let dispense_unit = rxe.field(11).first();
    let label = format!("RXE-10 (line {})", rxe.line());
    let dispense_quantity = if dispense_value.is_null() {
        None
    } else {
        builder.quantity_from_text(&label, &dispense_value.text(), Some(&dispense_unit))
    };
    let dispense = Obj::new()
        .opt("quantity", dispense_quantity)
        .opt("expectedSupplyDuration", supply_duration);

    let mut request = Obj::resource("MedicationRequest")
        .put("id", id.as_str())
        .put(
            "meta",
            builder.meta(Some(if injection {
                profiles::MEDICATION_REQUEST_INJECTION
            } else {
                profiles::MEDICATION_REQUEST
            })),
        );
    let medication = if injection {
        let medication = contained_medication(builder, &rxcs);
        request = request.put("contained", json!([medication]));
        None
    } else {
        builder.concept(&give)
    };
    request = request
        .list(
            "identifier",
            identifiers
                .into_iter()
                .map(|i| i.unwrap_or(Value::Null))
                .collect(),
        )
        .put("status", request_status(&orc.field(1).component(1).text()))
        .put("intent", "order")
        .list("category", categories);
    request = if injection {
        request.put("medicationReference", json!({"reference": "#medication"}))
    } else {
        match medication {
            Some(concept) => request.put("medicationCodeableConcept", concept),
            None => {
                builder.warn(format!("RXE-2 (line {}) has no drug code", rxe.line()));
                request.put("medicationCodeableConcept", json!({"text": "不明"}))
            }
        }
    };
    request = request
        .put("subject", builder.patient_ref())
        .opt("authoredOn", authored)
        .opt("requester", builder.person(&orc.field(12).first()))
        .opt("recorder", builder.person(&orc.field(10).first()))
        .list("dosageInstruction", vec![dosage.build()])
        .put("dispenseRequest", dispense.build());
    builder.push("MedicationRequest", id, request.build());
}

/// The RXC segments of an injection as a contained JP_Medication.
fn contained_medication(builder: &Builder<'_, '_>, rxcs: &[&Segment<'_>]) -> Value {
    let ingredients: Vec<Value> = rxcs
        .iter()
        .enumerate()
        .map(|(index, rxc)| {
            let component = rxc.field(2).first();
            let unit = rxc.field(4).first();
            let amount = decimal(&rxc.text(3));
            let strength = amount.map(|value| {
                json!({
                    "numerator": builder.quantity(value, Some(&unit)),
                    "denominator": {"value": 1, "unit": "回"}
                })
            });
            Obj::new()
                .put(
                    "extension",
                    json!([extension(DRUG_NO, "valueInteger", index as i64 + 1)]),
                )
                .opt("itemCodeableConcept", builder.concept(&component))
                .put("isActive", rxc.text(1).trim() != "B")
                .opt("strength", strength)
                .build()
        })
        .collect();
    Obj::resource("Medication")
        .put("id", "medication")
        .put("meta", json!({"profile": [profiles::MEDICATION]}))
        .put("status", "active")
        .list("ingredient", ingredients)
        .build()
}

fn administration_status(code: &str) -> &'static str {
    match code.trim() {
        "RE" | "NA" => "not-done",
        "PA" => "in-progress",
        _ => "completed",
    }
}

/// Maps OMP-11 and OMP-12: one MedicationAdministration per RXA.
pub(crate) fn administrations(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let injection = builder.context.data_type == DataType::Omp12;
    let orc_groups = groups(builder.message, "ORC");
    if orc_groups.is_empty() {
        return Err(MapError::MissingSegment { segment: "ORC" });
    }
    let mut order_in_rp: HashMap<String, usize> = HashMap::new();
    for group in orc_groups {
        let orc = group[0];
        let rxr = group.iter().copied().find(|s| s.id() == "RXR");
        for rxa in group.iter().copied().filter(|s| s.id() == "RXA") {
            let rp = rp_number(orc);
            let counter = order_in_rp.entry(rp.clone()).or_insert(0);
            *counter += 1;
            let order = counter.to_string();
            administration(builder, orc, rxa, rxr, &rp, &order, injection);
        }
    }
    Ok(())
}

fn administration(
    builder: &mut Builder<'_, '_>,
    orc: &Segment<'_>,
    rxa: &Segment<'_>,
    rxr: Option<&Segment<'_>>,
    rp: &str,
    order_in_rp: &str,
    injection: bool,
) {
    let id = builder.record_id(&[rp, order_in_rp]);
    let placer = orc.field(2).component(1).text().trim().to_owned();
    let instance = builder.order_line_instance(&placer, rp, order_in_rp);
    let start = builder.datetime(rxa, 3);
    let end = builder.datetime(rxa, 4);
    let drug = rxa.field(5).first();
    let unit = rxa.field(7).first();
    let label = format!("RXA-6 (line {})", rxa.line());
    let dose = builder.quantity_from_text(&label, &rxa.text(6), Some(&unit));
    let notes: Vec<Value> = rxa
        .field(9)
        .repetitions()
        .filter_map(|note: Repetition<'_>| {
            let text = [2usize, 1]
                .iter()
                .map(|n| note.component(*n).text().trim().to_owned())
                .find(|t| !t.is_empty())?;
            Some(json!({"text": text}))
        })
        .collect();
    let dosage = Obj::new()
        .opt(
            "route",
            rxr.and_then(|rxr| builder.concept_of(rxr.field(1))),
        )
        .opt(
            "method",
            rxr.and_then(|rxr| builder.concept_of(rxr.field(3))),
        )
        .opt("dose", dose);
    let mut resource = Obj::resource("MedicationAdministration")
        .put("id", id.as_str())
        .put(
            "meta",
            builder.meta(Some(if injection {
                profiles::MEDICATION_ADMINISTRATION_INJECTION
            } else {
                profiles::MEDICATION_ADMINISTRATION
            })),
        );
    if injection {
        let medication = Obj::resource("Medication")
            .put("id", "medication")
            .put("meta", json!({"profile": [profiles::MEDICATION]}))
            .opt("code", builder.concept(&drug))
            .put("status", "active")
            .build();
        resource = resource.put("contained", json!([medication]));
    }
    resource = resource
        .list(
            "identifier",
            vec![
                identifier(systems::RP_NUMBER, rp).unwrap_or(Value::Null),
                identifier(systems::ORDER_IN_RP, order_in_rp).unwrap_or(Value::Null),
                builder
                    .instance_identifier(&instance)
                    .unwrap_or(Value::Null),
                builder.order_identifier(&placer).unwrap_or(Value::Null),
            ],
        )
        .put("status", administration_status(&rxa.text(20)));
    resource = if injection {
        resource.put("medicationReference", json!({"reference": "#medication"}))
    } else {
        resource.put(
            "medicationCodeableConcept",
            builder
                .concept(&drug)
                .unwrap_or_else(|| json!({"text": "不明"})),
        )
    };
    resource = resource.put("subject", builder.patient_ref());
    resource = match (start, end) {
        (Some(start), Some(end)) if start != end => {
            resource.put("effectivePeriod", json!({"start": start, "end": end}))
        }
        (Some(start), _) => resource.put("effectiveDateTime", start),
        (None, Some(end)) => resource.put("effectiveDateTime", end),
        (None, None) => match builder.care_date() {
            Some(date) => {
                builder.warn(format!(
                    "RXA-3 (line {}) is empty; effective is the care date",
                    rxa.line()
                ));
                resource.put("effectiveDateTime", date)
            }
            None => resource,
        },
    };
    let performer: Vec<Value> = builder
        .person(&rxa.field(10).first())
        .map(|actor| vec![json!({"actor": actor})])
        .unwrap_or_default();
    let resource = resource
        .list("performer", performer)
        .list("note", notes)
        .put("dosage", dosage.build());
    builder.push("MedicationAdministration", id, resource.build());
}
