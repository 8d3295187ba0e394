//! Profile validation checked against hand-written profiles and resources.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;

/// A small profile in the shape JP Core snapshots have.
fn lab_profile() -> Profile {
    let element = |id: &str, min: u64, max: &str, types: &[&str]| {
        let path = id.split(':').next().unwrap();
        json!({"id": id, "path": path, "min": min, "max": max,
               "base": {"path": path, "min": 0, "max": max},
               "type": types.iter().map(|t| json!({"code": t})).collect::<Vec<_>>()})
    };
    let mut category_slice = element("Obs.category:lab", 1, "1", &["CodeableConcept"]);
    category_slice["patternCodeableConcept"] =
        json!({"coding": [{"system": "http://cat", "code": "laboratory"}]});
    let mut id_slice = element("Obs.identifier:order", 1, "1", &["Identifier"]);
    id_slice["path"] = json!("Obs.identifier");
    let mut id_slice_system = element("Obs.identifier:order.system", 1, "1", &["uri"]);
    id_slice_system["path"] = json!("Obs.identifier.system");
    id_slice_system["fixedUri"] = json!("urn:oid:1.2.392.200119.4.504");
    let mut status = element("Obs.status", 1, "1", &["code"]);
    status["base"]["max"] = json!("1");
    Profile::from_structure_definition(&json!({
        "resourceType": "StructureDefinition",
        "url": "http://example/Lab",
        "type": "Obs",
        "kind": "resource",
        "snapshot": {"element": [
            {"id": "Obs", "path": "Obs", "min": 0, "max": "*"},
            element("Obs.id", 0, "1", &["http://hl7.org/fhirpath/System.String"]),
            element("Obs.extension", 0, "*", &["Extension"]),
            element("Obs.identifier", 1, "*", &["Identifier"]),
            id_slice, id_slice_system,
            status,
            element("Obs.category", 1, "*", &["CodeableConcept"]),
            category_slice,
            element("Obs.code", 1, "1", &["CodeableConcept"]),
            element("Obs.code.coding", 1, "*", &["Coding"]),
            element("Obs.code.text", 1, "1", &["string"]),
            element("Obs.effective[x]", 1, "1", &["dateTime", "Period"]),
            element("Obs.value[x]", 0, "1", &["Quantity", "string", "boolean"]),
            element("Obs.component", 0, "*", &["BackboneElement"]),
            element("Obs.component.code", 1, "1", &["CodeableConcept"]),
            element("Obs.component.count", 0, "1", &["positiveInt"]),
        ]}
    }))
    .unwrap()
}

fn good() -> Value {
    json!({
        "resourceType": "Obs",
        "id": "a-1",
        "identifier": [{"system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "value": "1"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://cat", "code": "laboratory"}], "text": "検体検査"}],
        "code": {"coding": [{"code": "x"}], "text": "総蛋白"},
        "effectiveDateTime": "2011-12-19T15:00:00+09:00",
        "valueQuantity": {"value": 7.1, "unit": "g/dL"},
        "component": [{"code": {"text": "c"}, "count": 2}]
    })
}

fn messages(resource: &Value) -> Vec<String> {
    lab_profile()
        .check(resource)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn expect(resource: Value, needle: &str) {
    let found = messages(&resource);
    assert!(
        found.iter().any(|m| m.contains(needle)),
        "{needle:?} not in {found:?}"
    );
}

#[test]
fn a_conforming_resource_has_no_findings() {
    assert_eq!(messages(&good()), Vec::<String>::new());
}

#[test]
fn cardinality_slices_and_patterns_are_checked() {
    let mut r = good();
    r.as_object_mut().unwrap().remove("effectiveDateTime");
    expect(r, "Obs.effective[x]: minimum cardinality 1");
    let mut r = good();
    r["code"].as_object_mut().unwrap().remove("text");
    expect(r, "Obs.code.text: minimum cardinality 1");
    let mut r = good();
    r["category"][0]["coding"][0]["code"] = json!("exam");
    expect(r, "required slice Obs.category:lab missing");
    let mut r = good();
    r["category"] = json!([r["category"][0].clone(), r["category"][0].clone()]);
    expect(r, "slice Obs.category:lab: at most 1");
    // The OID form of the fixed system is the same system.
    let mut r = good();
    r["identifier"][0]["system"] = json!("urn:oid:1.2.392.200119.4.504");
    assert!(messages(&r).is_empty());
    r["identifier"][0]["system"] = json!("http://other");
    expect(r, "required slice Obs.identifier:order missing");
    let mut r = good();
    r["component"][0].as_object_mut().unwrap().remove("code");
    expect(r, "Obs.component[0].code: minimum cardinality 1");
}

#[test]
fn json_forms_and_types_are_checked() {
    let mut r = good();
    r["status"] = json!(["final"]);
    expect(r, "Obs.status: a single element, not an array");
    let mut r = good();
    r["category"] = r["category"][0].clone();
    expect(r, "Obs.category: a repeating element must be an array");
    let mut r = good();
    r["code"]["text"] = json!(12);
    expect(r, "Obs.code.text: must be a JSON string");
    let mut r = good();
    r["code"]["text"] = json!("");
    expect(r, "an empty string is not allowed");
    let mut r = good();
    r["valueBoolean"] = json!(true);
    expect(r, "only one type of a choice element");
    let mut r = good();
    r["component"][0]["count"] = json!(0);
    expect(
        r,
        "Obs.component[0].count: must be an integer from 1 to 2147483647 (positiveInt)",
    );
    let mut r = good();
    r["code"] = Value::Null;
    expect(r, "null is not allowed");
    let mut r = good();
    r["extension"] = json!([{"valueString": "x"}]);
    expect(r, "an extension needs a url");
}

#[test]
fn unknown_elements_and_choice_types_are_reported() {
    let mut r = good();
    r["valueQuantiy"] = json!({"value": 1});
    expect(r, "Obs.valueQuantiy: valueQuantiy is not an element of Obs");
    let mut r = good();
    r.as_object_mut().unwrap().remove("valueQuantity");
    r["valueCodeableConcept"] = json!({"text": "+"});
    expect(r, "valueCodeableConcept is not an element");
    let mut r = good();
    r["component"][0]["colour"] = json!("red");
    expect(r, "Obs.component[0].colour");
    // Inside data types the snapshot does not unroll, nothing is known.
    let mut r = good();
    r["valueQuantity"]["anything"] = json!("x");
    assert!(messages(&r).is_empty());
    // A primitive's extension (`_status`) is allowed.
    let mut r = good();
    r["_status"] = json!({"extension": [{"url": "http://x", "valueString": "y"}]});
    assert!(messages(&r).is_empty());
    let wrong_type = json!({"resourceType": "Patient"});
    expect(wrong_type, "is for Obs");
}

#[test]
fn findings_carry_an_issue_type() {
    let kinds = |resource: &Value| -> Vec<&'static str> {
        lab_profile()
            .check(resource)
            .iter()
            .map(|finding| finding.kind.issue_code())
            .collect()
    };
    let mut r = good();
    r.as_object_mut().unwrap().remove("status");
    assert_eq!(kinds(&r), ["required"]);
    let mut r = good();
    r["colour"] = json!("red");
    assert_eq!(kinds(&r), ["structure"]);
    let mut r = good();
    r["effectiveDateTime"] = json!("yesterday");
    assert_eq!(kinds(&r), ["value"]);
}

#[test]
fn profiles_skip_non_resource_definitions_and_ignore_versions() {
    let mut profiles = Profiles::new();
    assert!(
        !profiles
            .add(&json!({"resourceType": "StructureDefinition", "kind": "complex-type"}))
            .unwrap()
    );
    assert!(
        profiles
            .add(&json!({"resourceType": "StructureDefinition", "kind": "resource"}))
            .is_err()
    );
    let definition = json!({
        "resourceType": "StructureDefinition", "kind": "resource", "url": "http://p",
        "type": "Obs", "snapshot": {"element": [{"id": "Obs", "path": "Obs"}]}
    });
    assert!(profiles.add(&definition).unwrap());
    assert_eq!(
        profiles.get("http://p|1.1.1").unwrap().resource_type(),
        "Obs"
    );
    assert_eq!(profiles.len(), 1);
}
