//! Orders: OML-01 (lab), OMG-01/02/03 (radiology, endoscopy, physiology) → ServiceRequest;
//! OMD (diet) → NutritionOrder.
//!
//! One ServiceRequest per distinct placer order number (ORC-2). Child orders (`ORC-1 CH`, with
//! the parent number in ORC-8) point to their parent through `basedOn`. OBX segments of an order
//! are clinical information for the performer and become `note`s (or, for the test items of a
//! lab order, `orderDetail`).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, reference},
    profiles,
};
use tsunagi_hl7v2::Segment;

use crate::{
    DataType, MapError,
    common::{Builder, groups},
};

fn category(data_type: DataType) -> Value {
    let (system, code, display) = match data_type {
        DataType::Oml01 => (
            "http://snomed.info/sct",
            "108252007",
            "Laboratory procedure",
        ),
        DataType::Omg01 => ("http://snomed.info/sct", "363679005", "Imaging"),
        DataType::Omg02 => ("http://snomed.info/sct", "423827005", "Endoscopy"),
        _ => (
            "http://snomed.info/sct",
            "386053000",
            "Evaluation procedure",
        ),
    };
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn status(order_control: &str, order_status: &str) -> &'static str {
    match (order_control.trim(), order_status.trim()) {
        ("CA" | "OC" | "CR", _) => "revoked",
        ("DC" | "OD", _) => "revoked",
        ("HD" | "OH", _) => "on-hold",
        (_, "CM") => "completed",
        (_, "CA" | "DC") => "revoked",
        _ => "active",
    }
}

fn priority(code: &str) -> Option<&'static str> {
    match code.trim() {
        "S" => Some("stat"),
        "A" => Some("asap"),
        "R" => Some("routine"),
        _ => None,
    }
}

struct Order {
    placer: String,
    parent: String,
    orc_line: usize,
    control: String,
    order_status: String,
    code: Option<Value>,
    authored: Option<String>,
    requester: Option<Value>,
    occurrence: Option<String>,
    priority: Option<&'static str>,
    details: Vec<Value>,
    notes: Vec<Value>,
    specimen_text: Vec<String>,
}

/// Maps OML-01 and OMG-01/02/03.
pub(crate) fn service_requests(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let data_type = builder.context.data_type;
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let mut order_sequence: Vec<String> = Vec::new();
    let mut pending_specimen: Option<String> = None;
    let segment_groups = groups(builder.message, "ORC");
    if segment_groups.is_empty() {
        return Err(MapError::MissingSegment { segment: "ORC" });
    }
    for group in segment_groups {
        let orc = group[0];
        let placer = {
            let own = orc.field(2).component(1).text().trim().to_owned();
            if own.is_empty() {
                builder.context.order_number.to_owned()
            } else {
                own
            }
        };
        let obr = group.iter().copied().find(|s| s.id() == "OBR");
        let tq1 = group.iter().copied().find(|s| s.id() == "TQ1");
        let authored = builder.datetime(orc, 9);
        let occurrence = match tq1 {
            Some(tq1) => builder.datetime(tq1, 7),
            None => None,
        };
        let entry = orders.entry(placer.clone()).or_insert_with(|| {
            order_sequence.push(placer.clone());
            Order {
                placer: placer.clone(),
                parent: orc.field(8).component(1).text().trim().to_owned(),
                orc_line: orc.line(),
                control: orc.field(1).component(1).text().trim().to_owned(),
                order_status: orc.field(5).component(1).text().trim().to_owned(),
                code: None,
                authored: None,
                requester: None,
                occurrence: None,
                priority: None,
                details: Vec::new(),
                notes: Vec::new(),
                specimen_text: Vec::new(),
            }
        });
        if entry.code.is_none() {
            entry.code = obr.and_then(|obr| builder.concept_of(obr.field(4)));
        }
        if entry.authored.is_none() {
            entry.authored = authored;
        }
        if entry.requester.is_none() {
            entry.requester = builder.person(&orc.field(12).first());
        }
        if entry.occurrence.is_none() {
            entry.occurrence = occurrence;
        }
        if entry.priority.is_none() {
            entry.priority = tq1.and_then(|tq1| priority(&tq1.field(9).component(1).text()));
        }
        if let Some(specimen) = pending_specimen.take() {
            entry.specimen_text.push(specimen);
        }
        for segment in &group[1..] {
            match segment.id() {
                "OBX" => {
                    let code = segment.field(3).first();
                    if data_type == DataType::Oml01 && segment.field(5).is_empty() {
                        // A lab order lists its test items as OBX without values.
                        if let Some(concept) = builder.concept(&code) {
                            entry.details.push(concept);
                        }
                    } else {
                        let label = code.component(2).text().trim().to_owned();
                        let value = note_value(segment);
                        if !value.is_empty() {
                            let text = if label.is_empty() {
                                value
                            } else {
                                format!("{label}: {value}")
                            };
                            entry.notes.push(json!({"text": text}));
                        }
                    }
                }
                "SPM" => {
                    let kind = segment.field(4).first();
                    let text = kind.component(2).text().trim().to_owned();
                    if !text.is_empty() {
                        pending_specimen = Some(text);
                    }
                }
                _ => {}
            }
        }
    }
    // An SPM at the very start of an OML-01 message belongs to the first order.
    let leading_specimen: Vec<String> = builder
        .message
        .segments()
        .iter()
        .take_while(|segment| segment.id() != "ORC")
        .filter(|segment| segment.id() == "SPM")
        .map(|spm| spm.field(4).component(2).text().trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect();
    if let Some(first) = order_sequence
        .first()
        .and_then(|placer| orders.get_mut(placer))
    {
        for text in leading_specimen.into_iter().rev() {
            first.specimen_text.insert(0, text);
        }
    }

    for placer in order_sequence {
        let Some(order) = orders.remove(&placer) else {
            continue;
        };
        emit_service_request(builder, order);
    }
    Ok(())
}

fn note_value(obx: &Segment<'_>) -> String {
    obx.field(5)
        .repetitions()
        .map(|rep| {
            (1..=rep.component_count().max(1))
                .map(|n| rep.component(n).text().trim().to_owned())
                .filter(|part| !part.is_empty())
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn emit_service_request(builder: &mut Builder<'_, '_>, order: Order) {
    let id = builder.record_id(&[&order.placer]);
    let based_on = if !order.parent.is_empty() && order.parent != order.placer {
        vec![reference(
            "ServiceRequest",
            &builder.record_id(&[&order.parent]),
        )]
    } else {
        Vec::new()
    };
    let code = match order.code {
        Some(code) => code,
        None => {
            builder.warn(format!(
                "order {:?} (ORC line {}) has no OBR-4 procedure code",
                order.placer, order.orc_line
            ));
            json!({"text": "不明"})
        }
    };
    let mut notes = order.notes;
    if !order.specimen_text.is_empty() {
        notes.insert(
            0,
            json!({"text": format!("検体: {}", order.specimen_text.join(", "))}),
        );
    }
    let resource = Obj::resource("ServiceRequest")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::SERVICE_REQUEST_COMMON)))
        .list(
            "identifier",
            vec![
                builder
                    .order_identifier(&order.placer)
                    .unwrap_or(Value::Null),
            ],
        )
        .list("basedOn", based_on)
        .put("status", status(&order.control, &order.order_status))
        .put("intent", "order")
        .put("category", json!([category(builder.context.data_type)]))
        .opt("priority", order.priority)
        .put("code", code)
        .list("orderDetail", order.details)
        .put("subject", builder.patient_ref())
        .opt("occurrenceDateTime", order.occurrence)
        .opt("authoredOn", order.authored.or_else(|| builder.care_date()))
        .opt("requester", order.requester)
        .list("note", notes);
    builder.push("ServiceRequest", id, resource.build());
}

/// OMD (OMD^O03) → NutritionOrder: ODS diet codes and instructions, TQ1 schedule.
pub(crate) fn nutrition_order(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let orc = builder.required("ORC")?;
    let placer = {
        let own = orc.field(2).component(1).text().trim().to_owned();
        if own.is_empty() {
            builder.context.order_number.to_owned()
        } else {
            own
        }
    };
    let id = builder.record_id(&[]);
    let tq1 = builder.message.first("TQ1");
    let mut diet_types = Vec::new();
    let mut instructions = Vec::new();
    let mut supplements = Vec::new();
    for ods in builder.message.all("ODS").collect::<Vec<_>>() {
        let kind = ods.text(1).trim().to_owned();
        let concept = ods
            .field(3)
            .repetitions()
            .find_map(|rep| builder.concept(&rep));
        let instruction = ods.text(4).trim().to_owned();
        match kind.as_str() {
            "S" => {
                if let Some(concept) = concept {
                    supplements.push(json!({"type": concept}));
                }
            }
            _ => {
                diet_types.extend(concept);
            }
        }
        if !instruction.is_empty() {
            instructions.push(instruction);
        }
    }
    let mut schedule = Obj::new();
    if let Some(tq1) = tq1 {
        if let Some(code) = builder.concept_from_subcomponents(tq1.field(3).component(1)) {
            schedule = schedule.put("code", code);
        }
        if let Some(start) = builder.datetime(tq1, 7) {
            schedule = schedule.put("repeat", json!({"boundsPeriod": {"start": start}}));
        }
    }
    let oral_diet = Obj::new()
        .list("type", diet_types)
        .list("schedule", vec![schedule.build()])
        .put("instruction", instructions.join("\n"));
    let date_time = builder.datetime(orc, 9).or_else(|| builder.care_date());
    let status = match orc.field(1).component(1).text().trim() {
        "CA" | "OC" | "DC" => "revoked",
        _ => "active",
    };
    let resource = Obj::resource("NutritionOrder")
        .put("id", id.as_str())
        .put("meta", builder.meta(None))
        .list(
            "identifier",
            vec![builder.order_identifier(&placer).unwrap_or(Value::Null)],
        )
        .put("status", status)
        .put("intent", "order")
        .put("patient", builder.patient_ref())
        .opt("dateTime", date_time)
        .opt("orderer", builder.person(&orc.field(12).first()))
        .put("oralDiet", oral_diet.build())
        .list("supplement", supplements);
    let resource = resource.build();
    if resource.get("dateTime").is_none() {
        builder.warn("OMD has neither ORC-9 nor a care date; NutritionOrder.dateTime is required, so the order is left out");
        return Ok(());
    }
    builder.push("NutritionOrder", id, resource);
    Ok(())
}
