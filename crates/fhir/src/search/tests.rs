//! Tests of the search registry: index extraction, compartments, parameter lookup.

use super::*;
use serde_json::json;

#[test]
fn a_binarys_compartment_is_read_from_its_tag() {
    let binary = serde_json::json!({
        "resourceType": "Binary", "id": "b1",
        "meta": {"tag": [
            {"system": "urn:tsunagi:sha256", "code": "00"},
            {"system": super::BINARY_PATIENT_TAG, "code": "Patient/0610100010.1"}
        ]},
        "securityContext": {"reference": "DocumentReference/d1"}
    });
    assert_eq!(
        super::compartment_patient("Binary", &binary).as_deref(),
        Some("0610100010.1")
    );
    let untagged = serde_json::json!({"resourceType": "Binary", "id": "b2"});
    assert_eq!(super::compartment_patient("Binary", &untagged), None);
}

#[test]
fn ids_and_codes_are_unique() {
    for (index, a) in PARAMS.iter().enumerate() {
        for b in &PARAMS[index + 1..] {
            assert_ne!(a.id, b.id, "{} {}", a.code, b.code);
            assert!(
                !(a.resource == b.resource && a.code == b.code),
                "{}",
                a.code
            );
        }
    }
}

#[test]
fn patient_rows() {
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10612345678", "value": "9999013"}],
        "name": [
            {"extension": [{"url": crate::systems::EN_REPRESENTATION, "valueCode": "IDE"}], "use": "official", "text": "患者 太郎", "family": "患者", "given": ["太郎"]},
            {"extension": [{"url": crate::systems::EN_REPRESENTATION, "valueCode": "SYL"}], "use": "usual", "text": "カンジャ タロウ", "family": "カンジャ", "given": ["タロウ"]}
        ],
        "gender": "male",
        "birthDate": "1948-04-05",
        "address": [{"postalCode": "422-8033", "text": "静岡県静岡市登呂１−３−５"}]
    });
    let rows = extract("Patient", &patient);
    let has = |code: &str, value: IndexValue| {
        let id = param("Patient", code).unwrap().id;
        rows.contains(&IndexEntry { param: id, value })
    };
    assert!(has(
        "identifier",
        IndexValue::Token {
            system: "urn:oid:1.2.392.100495.20.3.51.10612345678".into(),
            code: "9999013".into()
        }
    ));
    assert!(has("name", IndexValue::String("患者 太郎".into())));
    assert!(has("name", IndexValue::String("患者太郎".into())));
    assert!(has(
        "jp-kana-sort",
        IndexValue::String("カンジャ タロウ".into())
    ));
    assert!(!has("jp-kana-sort", IndexValue::String("患者 太郎".into())));
    assert!(has(
        "gender",
        IndexValue::Token {
            system: String::new(),
            code: "male".into()
        }
    ));
    assert!(has(
        "address",
        IndexValue::String("静岡県静岡市登呂1-3-5".into())
    ));
    let birth = fhir_date_range("1948-04-05").unwrap();
    assert!(has(
        "birthdate",
        IndexValue::Date {
            start: birth.0,
            end: birth.1
        }
    ));
}

#[test]
fn observation_rows_and_choice_types() {
    let observation = json!({
        "resourceType": "Observation",
        "subject": {"reference": "Patient/0612345678.9999013"},
        "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}], "text": "総蛋白"},
        "effectiveDateTime": "2011-12-19T15:00:00+09:00",
        "valueQuantity": {"value": 7.2, "unit": "g/dl"}
    });
    let rows = extract("Observation", &observation);
    assert!(rows.contains(&IndexEntry {
        param: 21,
        value: IndexValue::Reference {
            target_type: "Patient".into(),
            target_id: "0612345678.9999013".into()
        }
    }));
    assert!(rows.contains(&IndexEntry {
        param: 23,
        value: IndexValue::Token {
            system: crate::systems::JLAC10.into(),
            code: "3A010000002327101".into()
        }
    }));
    assert!(rows.iter().any(|row| row.param == 25));
    assert!(rows.contains(&IndexEntry {
        param: 26,
        value: IndexValue::Quantity {
            value: 7.2,
            system: String::new(),
            code: "g/dl".into()
        }
    }));
}

#[test]
fn references_split() {
    assert_eq!(split_reference("Patient/1.2"), Some(("Patient", "1.2")));
    assert_eq!(
        split_reference("http://x/fhir/Patient/9/_history/2"),
        Some(("Patient", "9"))
    );
    assert_eq!(split_reference("#contained"), None);
}

#[test]
fn a_nul_is_left_out_of_index_values() {
    let patient = json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10610100010", "value": "1\u{0}2"}],
        "name": [{"family": "山\u{0}田"}]
    });
    let observation = json!({
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A\u{0}010"}]},
        "subject": {"reference": "Patient/p\u{0}1"}
    });
    let values: Vec<IndexValue> = extract("Patient", &patient)
        .into_iter()
        .chain(extract("Observation", &observation))
        .map(|entry| entry.value)
        .collect();
    assert!(values.contains(&IndexValue::Token {
        system: "urn:oid:1.2.392.100495.20.3.51.10610100010".to_owned(),
        code: "12".to_owned()
    }));
    assert!(values.contains(&IndexValue::String("山田".to_owned())));
    assert!(values.contains(&IndexValue::Reference {
        target_type: "Patient".to_owned(),
        target_id: "p1".to_owned()
    }));
    assert!(values.iter().any(|value| matches!(
        value,
        IndexValue::Token { code, .. } if code == "3A010"
    )));
    let text = format!("{values:?}");
    assert!(!text.contains('\0'), "{text}");
}
