//! The profile checker and the R4B round-trip catch what they are meant to catch (so the
//! conformance test of every produced resource is not vacuous).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tsunagi_e2e::{check_against_profile, jp_core_profiles};

#[test]
fn missing_required_elements_and_slices_are_reported() {
    let package = jp_core_profiles();
    let lab = &package["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_LabResult"];
    let good = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "code": "3A010000002327101"}], "text": "総蛋白"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2011-12-19T15:00:00+09:00",
        "specimen": {"reference": "Specimen/s"}
    });
    assert!(
        check_against_profile(&good, lab).is_empty(),
        "{:?}",
        check_against_profile(&good, lab)
    );
    let mut no_specimen = good.clone();
    no_specimen.as_object_mut().unwrap().remove("specimen");
    assert!(
        check_against_profile(&no_specimen, lab)
            .iter()
            .any(|p| p.contains("Observation.specimen"))
    );
    let mut no_text = good.clone();
    no_text["code"].as_object_mut().unwrap().remove("text");
    assert!(
        check_against_profile(&no_text, lab)
            .iter()
            .any(|p| p.contains("Observation.code.text"))
    );
    let mut wrong_category = good.clone();
    wrong_category["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "exam"}]}]);
    assert!(
        check_against_profile(&wrong_category, lab)
            .iter()
            .any(|p| p.contains("category:laboratory"))
    );

    // The JSON form, lexical forms and unknown elements, against the real snapshot.
    for (change, needle) in [
        (
            json!({"specimen": [{"reference": "Specimen/s"}]}),
            "Observation.specimen: a single element, not an array",
        ),
        (
            json!({"effectiveDateTime": "2011-12-19 15:00"}),
            "is not a valid dateTime",
        ),
        (
            json!({"valueQuantiy": {"value": 1}}),
            "valueQuantiy is not an element of Observation",
        ),
        (
            json!({"referenceRange": [{"lowValue": 1}]}),
            "lowValue is not an element of Observation.referenceRange",
        ),
        (json!({"status": ""}), "an empty string is not allowed"),
    ] {
        let mut changed = good.clone();
        for (key, value) in change.as_object().unwrap() {
            changed[key] = value.clone();
        }
        let problems = check_against_profile(&changed, lab);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:?}"
        );
    }

    let request = &package["http://jpfhir.jp/fhir/core/StructureDefinition/JP_MedicationRequest"];
    let prescription = json!({
        "resourceType": "MedicationRequest",
        "identifier": [
            {"system": "http://jpfhir.jp/fhir/core/mhlw/IdSystem/Medication-RPGroupNumber", "value": "1"},
            {"system": "urn:oid:1.2.392.100495.20.3.82", "value": "1"}
        ],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/p"},
        "authoredOn": "2011-07-01"
    });
    assert!(
        check_against_profile(&prescription, request).is_empty(),
        "{:?}",
        check_against_profile(&prescription, request)
    );
    let mut no_order_in_rp = prescription.clone();
    no_order_in_rp["identifier"].as_array_mut().unwrap().pop();
    let problems = check_against_profile(&no_order_in_rp, request);
    assert!(
        problems.iter().any(|p| p.contains("orderInRp")),
        "{problems:?}"
    );
    let mut no_authored = prescription.clone();
    no_authored.as_object_mut().unwrap().remove("authoredOn");
    assert!(
        check_against_profile(&no_authored, request)
            .iter()
            .any(|p| p.contains("authoredOn"))
    );
}

#[test]
fn the_r4b_round_trip_rejects_invented_elements() {
    let condition = json!({"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "hospitalization": {"text": "x"}});
    assert!(tsunagi_fhir_model::check_r4b(&condition).is_err());
}

/// The checker agrees with JP Core about JP Core's own examples: each conforms to every profile
/// of the package it claims.
#[test]
fn jp_cores_examples_conform_to_the_profiles_they_claim() {
    let package = jp_core_profiles();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, example) in tsunagi_e2e::jp_core_files() {
        for profile in example["meta"]["profile"].as_array().into_iter().flatten() {
            let Some(definition) = profile.as_str().and_then(|url| package.get(url)) else {
                continue;
            };
            checked += 1;
            for problem in check_against_profile(&example, definition) {
                problems.push(format!("{path}: {problem}"));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} examples claim a profile of the package"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The structural check (what the API refuses before storing) agrees with JP Core about its
/// examples: every example resource of the package is valid R4B.
#[test]
fn jp_cores_examples_are_structurally_valid() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, example) in tsunagi_e2e::jp_core_files() {
        let Some(kind) = example["resourceType"].as_str() else {
            continue;
        };
        if matches!(
            kind,
            "StructureDefinition" | "CodeSystem" | "ValueSet" | "ImplementationGuide"
        ) {
            continue;
        }
        checked += 1;
        for problem in tsunagi_fhir_xml::structure::check(&example).unwrap() {
            problems.push(format!("{path}: {}: {}", problem.location, problem.message));
        }
    }
    assert!(checked >= 20, "only {checked} examples");
    assert!(problems.is_empty(), "{problems:#?}");
}
