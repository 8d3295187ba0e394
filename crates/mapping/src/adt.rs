//! ADT data types: ADT-00 (Patient, Coverage, body measurements, AL1 allergies) and ADT-61
//! allergies (IAM). The encounter events ADT-12…52 are in [`crate::encounter`].

use serde_json::{Value, json};
use tsunagi_fhir::{
    json::{Obj, codeable, coding, extension, identifier},
    profiles, systems,
};
use tsunagi_hl7v2::{Repetition, Segment};

use crate::{MapError, common::Builder};

/// ADT-00: the patient's basic record. `ADT^A23` (delete) yields nothing: the record is gone.
pub(crate) fn patient_record(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    if builder.trigger == "A23" {
        return Ok(());
    }
    let pid = builder.required("PID")?;
    let patient_id = builder.patient_id().to_owned();
    let names = names(builder, pid);
    let mut patient = Obj::resource("Patient")
        .put("id", patient_id.as_str())
        .put("meta", builder.meta(Some(profiles::PATIENT)))
        .list(
            "identifier",
            vec![
                identifier(
                    &builder.context.facility.patient_id_system(),
                    builder.context.patient_id,
                )
                .unwrap_or(Value::Null),
            ],
        )
        .list("name", names)
        .list("telecom", telecoms(builder, pid))
        .opt("gender", gender(&pid.text(8)));
    let birth = pid.text(7);
    if !birth.trim().is_empty() {
        match tsunagi_core::time::Hl7Time::parse(birth.trim()) {
            Ok(time) => patient = patient.put("birthDate", time.to_fhir_date()),
            Err(error) => builder.warn(format!("PID-7 (line {}): {error}; left out", pid.line())),
        }
    }
    patient = patient.list("address", addresses(pid.field(11).repetitions().collect()));
    let contacts: Vec<Value> = builder
        .message
        .all("NK1")
        .filter_map(|nk1| contact(builder, nk1))
        .collect();
    patient = patient.list("contact", contacts);
    builder.push("Patient", patient_id, patient.build());

    for in1 in builder.message.all("IN1").collect::<Vec<_>>() {
        coverage(builder, in1);
    }
    for obx in builder.message.all("OBX").collect::<Vec<_>>() {
        body_observation(builder, obx);
    }
    for al1 in builder.message.all("AL1").collect::<Vec<_>>() {
        al1_allergy(builder, al1);
    }
    Ok(())
}

/// PID-5 / NK1-2 names: representation `I` → IDE, `P` → SYL; tolerant of the off-by-one
/// component layout some generators write (`姓^名^^^^L^I`).
fn names(builder: &Builder<'_, '_>, segment: &Segment<'_>) -> Vec<Value> {
    let field = if segment.id() == "NK1" { 2 } else { 5 };
    segment
        .field(field)
        .repetitions()
        .filter_map(|xpn| human_name(builder, &xpn))
        .collect()
}

fn human_name(_builder: &Builder<'_, '_>, xpn: &Repetition<'_>) -> Option<Value> {
    let family = xpn.component(1).text().trim().to_owned();
    let given = xpn.component(2).text().trim().to_owned();
    if family.is_empty() && given.is_empty() {
        return None;
    }
    let representation = {
        let eighth = xpn.component(8).text();
        let seventh = xpn.component(7).text();
        if matches!(eighth.trim(), "I" | "P" | "A") {
            eighth.trim().to_owned()
        } else if matches!(seventh.trim(), "I" | "P" | "A") && xpn.component(6).text().trim() == "L"
        {
            seventh.trim().to_owned()
        } else {
            String::new()
        }
    };
    let code = match representation.as_str() {
        "I" => Some("IDE"),
        "P" => Some("SYL"),
        "A" => Some("ABC"),
        _ => None,
    };
    let text = match (family.is_empty(), given.is_empty()) {
        (false, false) => format!("{family} {given}"),
        (false, true) => family.clone(),
        _ => given.clone(),
    };
    let mut name = Obj::new();
    if let Some(code) = code {
        name = name.put(
            "extension",
            json!([extension(systems::EN_REPRESENTATION, "valueCode", code)]),
        );
    }
    Some(
        name.put("use", "usual")
            .put("text", text)
            .put("family", family)
            .put(
                "given",
                if given.is_empty() {
                    json!([])
                } else {
                    json!([given])
                },
            )
            .build(),
    )
}

fn gender(code: &str) -> Option<&'static str> {
    match code.trim() {
        "M" => Some("male"),
        "F" => Some("female"),
        "O" | "A" => Some("other"),
        "U" | "N" => Some("unknown"),
        _ => None,
    }
}

/// XAD: postal code in component 5, the whole address as free text in component 8 (その他地理表示),
/// type in component 7 (H home, B business).
fn addresses(reps: Vec<Repetition<'_>>) -> Vec<Value> {
    reps.iter()
        .filter_map(|xad| {
            let street = xad.component(1).text().trim().to_owned();
            let city = xad.component(3).text().trim().to_owned();
            let state = xad.component(4).text().trim().to_owned();
            let postal = xad.component(5).text().trim().to_owned();
            let country = xad.component(6).text().trim().to_owned();
            let kind = xad.component(7).text().trim().to_owned();
            let other = xad.component(8).text().trim().to_owned();
            let text = if !other.is_empty() {
                other
            } else {
                [state.as_str(), city.as_str(), street.as_str()].concat()
            };
            let address = Obj::new()
                .opt(
                    "use",
                    match kind.as_str() {
                        "H" => Some("home"),
                        "B" | "O" => Some("work"),
                        _ => None,
                    },
                )
                .put("text", text)
                .list(
                    "line",
                    if street.is_empty() {
                        vec![]
                    } else {
                        vec![json!(street)]
                    },
                )
                .put("city", city)
                .put("state", state)
                .put("postalCode", postal)
                .put(
                    "country",
                    if country == "JPN" {
                        "JP".to_owned()
                    } else {
                        country
                    },
                );
            if address.is_empty() {
                None
            } else {
                Some(address.build())
            }
        })
        .collect()
}

/// PID-13/PID-14 XTN: number in component 12 (or 1 in older data), use in 2, equipment in 3.
fn telecoms(_builder: &Builder<'_, '_>, pid: &Segment<'_>) -> Vec<Value> {
    let mut result = Vec::new();
    for (field, default_use) in [(13, "home"), (14, "work")] {
        for xtn in pid.field(field).repetitions() {
            if let Some(value) = telecom(&xtn, default_use) {
                result.push(value);
            }
        }
    }
    result
}

fn telecom(xtn: &Repetition<'_>, default_use: &str) -> Option<Value> {
    let number = [12usize, 1]
        .iter()
        .map(|n| xtn.component(*n).text().trim().to_owned())
        .find(|text| !text.is_empty());
    let email = xtn.component(4).text().trim().to_owned();
    let equipment = xtn.component(3).text().trim().to_owned();
    let (system, value) = match (number, email.is_empty()) {
        (Some(number), _) => (
            match equipment.as_str() {
                "FX" => "fax",
                "Internet" | "X.400" => "email",
                _ => "phone",
            },
            number,
        ),
        (None, false) => ("email", email),
        (None, true) => return None,
    };
    let use_code = match xtn.component(2).text().trim() {
        "PRN" | "ORN" | "VHN" => default_use.to_owned(),
        "WPN" => "work".to_owned(),
        "EMR" => "temp".to_owned(),
        "NET" => "home".to_owned(),
        _ => default_use.to_owned(),
    };
    let use_code = if equipment == "CP" {
        "mobile".to_owned()
    } else {
        use_code
    };
    Some(
        Obj::new()
            .put("system", system)
            .put("value", value)
            .put("use", use_code)
            .build(),
    )
}

/// NK1 → Patient.contact, except the patient him/herself (relationship SEL).
fn contact(builder: &Builder<'_, '_>, nk1: &Segment<'_>) -> Option<Value> {
    let relationship = nk1.field(3).first();
    if relationship.component(1).text().trim() == "SEL" {
        return None;
    }
    let name = names(builder, nk1).into_iter().next();
    let telecom: Vec<Value> = [(5usize, "home"), (6, "work")]
        .iter()
        .flat_map(|(field, default_use)| {
            nk1.field(*field)
                .repetitions()
                .filter_map(|xtn| telecom(&xtn, default_use))
                .collect::<Vec<_>>()
        })
        .collect();
    let address = addresses(nk1.field(4).repetitions().collect())
        .into_iter()
        .next();
    let contact = Obj::new()
        .list(
            "relationship",
            builder.concept(&relationship).into_iter().collect(),
        )
        .opt("name", name)
        .list("telecom", telecom)
        .opt("address", address);
    if contact.is_empty() {
        None
    } else {
        Some(contact.build())
    }
}

/// IN1 → Coverage (insurer number IN1-3, plan IN1-2, validity IN1-12/13, 記号/番号/枝番 from the
/// IN1-10 repetitions or IN1-10/IN1-11, relationship IN1-17).
fn coverage(builder: &mut Builder<'_, '_>, in1: &Segment<'_>) {
    let plan = in1.field(2).first();
    let insurer_number = in1.text(3).trim().to_owned();
    let key = if insurer_number.is_empty() {
        plan.component(1).text().trim().to_owned()
    } else {
        insurer_number.clone()
    };
    let id = builder.patient_scoped_id(&["coverage", &key]);
    let insurer_name = in1.text(4).trim().to_owned();
    let payor = Obj::new()
        .opt(
            "identifier",
            identifier(systems::INSURER_NUMBER, &insurer_number),
        )
        .put(
            "display",
            if insurer_name.is_empty() {
                plan.component(2).text().trim().to_owned()
            } else {
                insurer_name
            },
        );
    let payor = if payor.is_empty() {
        Obj::new().put("display", "不明").build()
    } else {
        payor.build()
    };
    let mut symbol_number: Vec<String> = in1
        .field(10)
        .repetitions()
        .map(|r| r.text().trim().to_owned())
        .collect();
    if symbol_number.len() == 1 && !in1.text(11).trim().is_empty() {
        symbol_number.push(in1.text(11).trim().to_owned());
    }
    let mut extensions = Vec::new();
    for (index, url) in [
        "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSymbol",
        "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonNumber",
        "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSubNumber",
    ]
    .iter()
    .enumerate()
    {
        if let Some(value) = symbol_number.get(index).filter(|v| !v.is_empty()) {
            extensions.push(extension(url, "valueString", value.as_str()));
        }
    }
    let start = builder.datetime(in1, 12);
    let end = builder.datetime(in1, 13);
    let period = Obj::new().opt("start", start).opt("end", end);
    let relationship = in1.field(17).first();
    let relationship_code = match relationship.component(1).text().trim() {
        "SEL" => Some("self"),
        "SPO" => Some("spouse"),
        "CHD" => Some("child"),
        "" => None,
        _ => Some("other"),
    };
    let relationship_value = relationship_code.map(|code| {
        codeable(
            vec![
                coding(
                    "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                    code,
                    "",
                ),
                builder.codings(&relationship).into_iter().next(),
            ],
            &relationship.component(2).text(),
        )
    });
    let coverage = Obj::resource("Coverage")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profiles::COVERAGE)))
        .list("extension", extensions)
        .put("status", "active")
        .opt("type", builder.concept(&plan))
        .put("beneficiary", builder.patient_ref())
        .opt("relationship", relationship_value.flatten())
        .put("period", period.build())
        .put("payor", json!([payor]));
    builder.push("Coverage", id, coverage.build());
}

/// ADT-00 OBX: height and weight → JP_Observation_BodyMeasurement; other items (blood type) →
/// JP_Observation_Common.
fn body_observation(builder: &mut Builder<'_, '_>, obx: &Segment<'_>) {
    let code_rep = obx.field(3).first();
    let code = code_rep.component(1).text().trim().to_owned();
    if code.is_empty() {
        builder.warn(format!(
            "OBX-3 (line {}) has no code; the observation is left out",
            obx.line()
        ));
        return;
    }
    let body_category = if code.starts_with("9N001") {
        Some(("height", "身長"))
    } else if code.starts_with("9N006") {
        Some(("weight", "体重"))
    } else if code.starts_with("9N011") {
        Some(("body-mass-index", "肥満度"))
    } else {
        None
    };
    let (profile, category) = match body_category {
        Some((code, display)) => (
            profiles::OBSERVATION_BODY_MEASUREMENT,
            json!({"coding": [{"system": "http://jpfhir.jp/fhir/core/CodeSystem/JP_ObservationBodyMeasurementCategory_CS", "code": code, "display": display}]}),
        ),
        None => (
            profiles::OBSERVATION_COMMON,
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"}]}),
        ),
    };
    let id = builder.patient_scoped_id(&["ADT-00", "OBX", &code]);
    let value = observation_value(builder, obx);
    let status = observation_status(&obx.text(11));
    let effective = builder.datetime(obx, 14);
    let observation = Obj::resource("Observation")
        .put("id", id.as_str())
        .put("meta", builder.meta(Some(profile)))
        .put("status", status)
        .put("category", json!([category]))
        .opt("code", builder.concept(&code_rep))
        .put("subject", builder.patient_ref())
        .opt("effectiveDateTime", effective);
    let observation = add_value(observation, value);
    builder.push("Observation", id, observation.build());
}

/// The `value[x]` of an OBX by its value type.
pub(crate) enum ObservationValue {
    /// No value.
    None,
    /// `valueQuantity`.
    Quantity(Value),
    /// `valueCodeableConcept`.
    Concept(Value),
    /// `valueString`.
    Text(String),
    /// `valueDateTime`.
    DateTime(String),
}

pub(crate) fn add_value(observation: Obj, value: ObservationValue) -> Obj {
    match value {
        ObservationValue::None => observation,
        ObservationValue::Quantity(quantity) => observation.put("valueQuantity", quantity),
        ObservationValue::Concept(concept) => observation.put("valueCodeableConcept", concept),
        ObservationValue::Text(text) => observation.put("valueString", text),
        ObservationValue::DateTime(time) => observation.put("valueDateTime", time),
    }
}

/// OBX-11 → Observation.status.
pub(crate) fn observation_status(code: &str) -> &'static str {
    match code.trim() {
        "P" | "S" => "preliminary",
        "C" => "corrected",
        "X" => "cancelled",
        "D" | "W" => "entered-in-error",
        "I" | "R" | "O" => "registered",
        "A" => "amended",
        _ => "final",
    }
}

/// Parses an inequality such as `> 100`, `>=1`, `< 0.5` into (comparator, number text).
pub(crate) fn inequality(text: &str) -> Option<(&'static str, &str)> {
    let trimmed = text.trim();
    for (prefix, comparator) in [
        (">=", ">="),
        ("<=", "<="),
        ("＞＝", ">="),
        ("＜＝", "<="),
        (">", ">"),
        ("<", "<"),
        ("＞", ">"),
        ("＜", "<"),
    ] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            let number = rest.trim();
            if tsunagi_fhir::json::decimal(number).is_some() {
                return Some((comparator, number));
            }
        }
    }
    None
}

/// OBX-2/OBX-5/OBX-6 → value. NM → Quantity (an unparsable NM is kept as text with a warning);
/// ST with an inequality → Quantity with comparator; other ST/TX/FT → string; CWE/CE → concept;
/// TS/DT → dateTime.
pub(crate) fn observation_value(
    builder: &mut Builder<'_, '_>,
    obx: &Segment<'_>,
) -> ObservationValue {
    let value_type = obx.text(2).trim().to_owned();
    let field = obx.field(5);
    if field.is_empty() || field.is_null() {
        return ObservationValue::None;
    }
    let unit = obx.field(6).first();
    match value_type.as_str() {
        "NM" | "SN" => {
            let text = field.text();
            if let Some(number) = tsunagi_fhir::json::decimal(&text) {
                return ObservationValue::Quantity(builder.quantity(number, Some(&unit)));
            }
            if let Some(quantity) = comparator_quantity(builder, &text, Some(&unit)) {
                return ObservationValue::Quantity(quantity);
            }
            builder.warn(format!(
                "OBX-5 (line {}): {:?} is not a number for value type NM; kept as text",
                obx.line(),
                text.trim()
            ));
            ObservationValue::Text(text.trim().to_owned())
        }
        "CWE" | "CE" | "CNE" => match builder.concept_of(field) {
            Some(concept) => ObservationValue::Concept(concept),
            None => ObservationValue::None,
        },
        "TS" | "DT" | "DTM" => match builder.datetime_text(
            &format!("OBX-5 (line {})", obx.line()),
            &field.component(1).text(),
        ) {
            Some(time) => ObservationValue::DateTime(time),
            None => ObservationValue::None,
        },
        "ST" => {
            let text = field.text();
            if let Some(quantity) = comparator_quantity(builder, &text, Some(&unit)) {
                return ObservationValue::Quantity(quantity);
            }
            ObservationValue::Text(text.trim().to_owned())
        }
        _ => {
            // TX, FT, XCN, ZRD… : the readable text, components joined by spaces.
            let text: Vec<String> = field
                .repetitions()
                .map(|rep| {
                    (1..=rep.component_count())
                        .map(|n| rep.component(n).text().trim().to_owned())
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|text| !text.is_empty())
                .collect();
            if text.is_empty() {
                ObservationValue::None
            } else {
                ObservationValue::Text(text.join("\n"))
            }
        }
    }
}

fn comparator_quantity(
    builder: &Builder<'_, '_>,
    text: &str,
    unit: Option<&Repetition<'_>>,
) -> Option<Value> {
    let (comparator, number) = inequality(text)?;
    let value = tsunagi_fhir::json::decimal(number)?;
    let mut quantity = builder.quantity(value, unit);
    if let Value::Object(map) = &mut quantity {
        // FHIR orders `value` before `comparator`; key order is cosmetic but keep it readable.
        let value = map.remove("value");
        let rest = std::mem::take(map);
        if let Some(value) = value {
            map.insert("value".to_owned(), value);
        }
        map.insert("comparator".to_owned(), json!(comparator));
        map.extend(rest);
    }
    Some(quantity)
}

/// AL1 (ADT-00) → AllergyIntolerance.
fn al1_allergy(builder: &mut Builder<'_, '_>, al1: &Segment<'_>) {
    let allergen = al1.field(3).first();
    let allergen_code = allergen.component(1).text().trim().to_owned();
    let key = if allergen_code.is_empty() {
        al1.text(1).trim().to_owned()
    } else {
        allergen_code
    };
    let id = builder.patient_scoped_id(&["AL1", &key]);
    let reaction_text = al1.text(5).trim().to_owned();
    let severity = severity(&al1.field(4).component(1).text());
    let onset = builder.datetime(al1, 6);
    let allergy = allergy_resource(
        builder,
        &id,
        category(&al1.field(2).component(1).text()),
        builder.concept(&allergen),
        severity,
        &reaction_text,
        onset.map(Onset::DateTime),
    );
    builder.push("AllergyIntolerance", id, allergy);
}

/// ADT-61: each IAM → AllergyIntolerance (IAM-6 action `D` removes the entry).
pub(crate) fn allergies(builder: &mut Builder<'_, '_>) -> Result<(), MapError> {
    for iam in builder.message.all("IAM").collect::<Vec<_>>() {
        let action = iam.field(6).component(1).text().trim().to_owned();
        if action == "D" {
            continue;
        }
        let allergen = iam.field(3).first();
        let unique = iam.text(7).trim().to_owned();
        let allergen_code = allergen.component(1).text().trim().to_owned();
        let category_code = iam.field(2).component(1).text().trim().to_owned();
        let id = if !unique.is_empty() {
            builder.patient_scoped_id(&["IAM", &unique])
        } else {
            builder.patient_scoped_id(&["IAM", &category_code, &allergen_code])
        };
        let onset_text = iam.text(11);
        let onset = if !onset_text.trim().is_empty() {
            builder
                .datetime_text(&format!("IAM-11 (line {})", iam.line()), &onset_text)
                .map(Onset::DateTime)
        } else if !iam.text(12).trim().is_empty() {
            Some(Onset::Text(iam.text(12).trim().to_owned()))
        } else {
            None
        };
        let allergy = allergy_resource(
            builder,
            &id,
            category(&category_code),
            builder.concept(&allergen),
            severity(&iam.field(4).component(1).text()),
            iam.text(5).trim(),
            onset,
        );
        builder.push("AllergyIntolerance", id, allergy);
    }
    Ok(())
}

enum Onset {
    DateTime(String),
    Text(String),
}

fn category(code: &str) -> Option<&'static str> {
    match code.trim() {
        "DA" => Some("medication"),
        "FA" => Some("food"),
        "EA" | "LA" | "AA" | "PA" => Some("environment"),
        "MA" | "MC" => None,
        _ => None,
    }
}

fn severity(code: &str) -> Option<&'static str> {
    match code.trim() {
        "MI" => Some("mild"),
        "MO" => Some("moderate"),
        "SV" => Some("severe"),
        _ => None,
    }
}

fn allergy_resource(
    builder: &Builder<'_, '_>,
    id: &str,
    category: Option<&str>,
    code: Option<Value>,
    severity: Option<&str>,
    reaction: &str,
    onset: Option<Onset>,
) -> Value {
    let mut reaction_object = Obj::new();
    if !reaction.is_empty() || severity.is_some() {
        let manifestation_text = if reaction.is_empty() {
            "記載なし"
        } else {
            reaction
        };
        reaction_object = reaction_object
            .put("manifestation", json!([{"text": manifestation_text}]))
            .opt("severity", severity);
    }
    let mut allergy = Obj::resource("AllergyIntolerance")
        .put("id", id)
        .put("meta", builder.meta(Some(profiles::ALLERGY_INTOLERANCE)))
        .put(
            "clinicalStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}),
        )
        .put(
            "verificationStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]}),
        )
        .list("category", category.map(|c| vec![json!(c)]).unwrap_or_default())
        .opt("code", code)
        .put("patient", builder.patient_ref());
    allergy = match onset {
        Some(Onset::DateTime(time)) => allergy.put("onsetDateTime", time),
        Some(Onset::Text(text)) => allergy.put("onsetString", text),
        None => allergy,
    };
    allergy
        .list("reaction", vec![reaction_object.build()])
        .build()
}
