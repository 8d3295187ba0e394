//! The encounter events ADT-12/21/22/31/32/41/42/51/52 and their cancels.
//!
//! An event that names its visit (PV1-19, the visit number) is one record's part of that visit's
//! one Encounter — identified by facility, patient and visit number — and is handed on as a
//! [`crate::Contribution`], folded with the other records' parts by [`crate::stay::fold`]. An
//! event without a visit number cannot be joined to the others and stays an Encounter of its
//! own, as it was read.

use serde_json::{Value, json};
use tsunagi_core::ids::logical_id;
use tsunagi_fhir::{
    json::{Obj, codeable, coding},
    profiles, systems,
};
use tsunagi_hl7v2::Repetition;

use crate::{DataType, MapError, common::Builder};

/// The status one event gives its encounter on its own (FHIR R4B Encounter.status).
fn event_status(trigger: &str) -> &'static str {
    match trigger {
        // Admitted, or an outpatient visit that took place (ADT-12): it happened.
        "A01" => "in-progress",
        "A04" | "A03" => "finished",
        "A14" => "planned",
        "A21" => "onleave",
        "A11" | "A27" | "A52" | "A53" | "A26" | "A12" | "A25" | "A13" => "cancelled",
        _ => "in-progress",
    }
}

/// Whether a trigger cancels its folder's event (A11 cancels the admission of ADT-22, …).
pub(crate) fn is_cancel(trigger: &str) -> bool {
    matches!(
        trigger,
        "A11" | "A27" | "A52" | "A53" | "A26" | "A12" | "A25" | "A13"
    )
}

/// ADT-12…52 → the record's Encounter, or its part in the visit's Encounter.
pub(crate) fn encounter(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    let pv1 = builder.required("PV1")?;
    let pv2 = builder.message.first("PV2");
    let evn = builder.message.first("EVN");
    let trigger = builder.trigger.clone();
    let status = event_status(&trigger);
    let class = match pv1.text(2).trim() {
        "I" => ("IMP", "inpatient encounter"),
        "E" => ("EMER", "emergency"),
        _ => ("AMB", "ambulatory"),
    };
    let event_time = match trigger.as_str() {
        "A14" | "A15" | "A27" | "A26" => pv2.and_then(|pv2| builder.datetime(pv2, 8)),
        "A16" | "A25" => pv2.and_then(|pv2| builder.datetime(pv2, 9)),
        "A21" | "A22" | "A02" | "A52" | "A12" => evn.and_then(|evn| builder.datetime(evn, 6)),
        "A53" => pv2.and_then(|pv2| builder.datetime(pv2, 47)),
        _ => None,
    };
    let admit = builder.datetime(pv1, 44);
    let discharge = builder.datetime(pv1, 45);
    let start = admit.clone().or_else(|| {
        if trigger == "A16" || trigger == "A25" {
            None
        } else {
            event_time.clone()
        }
    });
    // A discharge ends the stay; other events do not (PV1-45 of a planned discharge is a plan).
    let end = match trigger.as_str() {
        "A03" => discharge.clone(),
        _ => None,
    };
    let period = Obj::new().opt("start", start).opt("end", end);
    let current_location = location(&pv1.field(3).first());
    let prior = location(&pv1.field(6).first());
    let mut locations = Vec::new();
    if let Some(prior) = &prior {
        locations.push(json!({"location": {"display": prior}, "status": "completed"}));
    }
    if let Some(current) = &current_location {
        let location_status = if status == "planned" {
            "planned"
        } else {
            "active"
        };
        locations.push(json!({"location": {"display": current}, "status": location_status}));
    }
    let department = pv1.field(10).first();
    let department_code = department.component(1).text().trim().to_owned();
    let service_type =
        department_concept(builder, &department_code, &department.component(2).text());
    let participant: Vec<Value> = [7usize, 17]
        .iter()
        .filter_map(|field| builder.person(&pv1.field(*field).first()))
        .map(|person| json!({"individual": person}))
        .take(1)
        .collect();
    let disposition = pv1.field(36).first();
    let hospitalization = Obj::new().opt("dischargeDisposition", builder.concept(&disposition));
    let visit = pv1.field(19).first().component(1).text().trim().to_owned();
    let id = if visit.is_empty() {
        builder.record_id(&[])
    } else {
        logical_id(&[
            builder.facility(),
            builder.context.patient_id,
            "visit",
            &visit,
        ])
    };
    let visit_identifier = (!visit.is_empty()).then(
        || json!({"system": systems::local(builder.facility(), "visit-number"), "value": visit}),
    );
    let encounter = Obj::resource("Encounter")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::ENCOUNTER)))
        .list("identifier", visit_identifier.into_iter().collect())
        .put("status", status)
        .put(
            "class",
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class.0, "display": class.1}),
        )
        .list(
            "type",
            vec![json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": trigger}]})],
        )
        .opt("serviceType", service_type)
        .put("subject", builder.patient_ref())
        .list("participant", participant)
        .put("period", period.build())
        .put("hospitalization", hospitalization.build())
        .list("location", locations)
        .build();
    if visit.is_empty() {
        builder.push("Encounter", id, encounter);
        return Ok(());
    }
    // When the event happened, for ordering a visit's events: the event's own time, else the
    // admission or discharge it records, else when it was recorded.
    let recorded = evn.and_then(|evn| builder.datetime(evn, 2));
    let at = match trigger.as_str() {
        // A plan happens when it is made; PV2-8 is when the admission is expected.
        "A14" | "A27" => recorded.clone().or(event_time),
        "A01" | "A11" | "A04" => admit.clone().or(event_time).or(recorded.clone()),
        "A03" | "A13" => discharge.clone().or(event_time).or(recorded.clone()),
        _ => event_time.or(recorded.clone()).or_else(|| admit.clone()),
    }
    .unwrap_or_default();
    let part = Obj::new()
        .put("kind", builder.context.data_type.code())
        .put("trigger", trigger.as_str())
        .put("cancel", is_cancel(&trigger))
        .put("at", at)
        .opt("location", current_location)
        .opt("prior", prior)
        .put("encounter", encounter)
        .build();
    builder.contribute("Encounter", id, part);
    Ok(())
}

/// The phase of a stay an event belongs to, for ordering a visit's events.
pub(crate) fn phase(kind: &str) -> u8 {
    match DataType::parse(kind) {
        Some(DataType::Adt21) => 0,
        Some(DataType::Adt12 | DataType::Adt22) => 1,
        Some(DataType::Adt31 | DataType::Adt32 | DataType::Adt41 | DataType::Adt42) => 2,
        Some(DataType::Adt51) => 3,
        Some(DataType::Adt52) => 4,
        _ => 2,
    }
}

/// PL: point of care (ward / department), room, bed → a display such as `32-302-1`.
fn location(pl: &Repetition<'_>) -> Option<String> {
    let parts: Vec<String> = (1..=3)
        .map(|n| pl.component(n).text().trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("-"))
    }
}

/// A department code as a CodeableConcept: the SS-MIX2 code (from the facility table when the
/// facility uses its own codes) and the facility's own code.
pub(crate) fn department_concept(
    builder: &Builder<'_, '_>,
    code: &str,
    display: &str,
) -> Option<Value> {
    if code.is_empty() {
        return None;
    }
    let (standard, standard_display) = match builder.context.tables.department(code) {
        Some((standard, name)) => (standard.to_owned(), name.to_owned()),
        None => (code.to_owned(), display.trim().to_owned()),
    };
    let local = if standard != code {
        coding(
            &systems::local(builder.facility(), "department"),
            code,
            display,
        )
    } else {
        None
    };
    codeable(
        vec![
            coding(systems::DEPARTMENT, &standard, &standard_display),
            local,
        ],
        if display.trim().is_empty() {
            &standard_display
        } else {
            display.trim()
        },
    )
}
