//! One imaging study made of what several records say of it (issue 21): the OMG-11/OMG-12
//! notices that reported it performed (`kind: "order"`; two records may name one study when
//! procedures are grouped) and the hospital's PACS (`kind: "pacs"`: series, instances, counts).
//! Each is a [`crate::Contribution`] to `ImagingStudy/<study_id>` whose part is
//! `{"kind": …, "study": <an ImagingStudy>}`; [`fold`] merges them:
//! - the PACS's view is the base when there is one (it has the images: `series`, counts,
//!   `endpoint`, `started`, description), else the first notice's;
//! - every notice adds what only an order knows — `basedOn`, `procedureCode`, `note`,
//!   `reasonCode`, `referrer`, `encounter` — and its identifiers and modalities, each once;
//! - its profile is the notice's (radiology or endoscopy), else the PACS's.
//!
//! Deterministic whatever order the parts come in: notices are taken by `meta.source`.

use serde_json::{Value, json};

/// The parts that make one study.
pub fn fold(parts: &[Value]) -> Option<Value> {
    let of = |kind: &str| -> Vec<&Value> {
        let mut found: Vec<&Value> = parts
            .iter()
            .filter(|part| part["kind"] == kind && part["study"].is_object())
            .map(|part| &part["study"])
            .collect();
        found.sort_by(|a, b| {
            let source = |study: &Value| study["meta"]["source"].as_str().unwrap_or("").to_owned();
            source(a)
                .cmp(&source(b))
                .then_with(|| a.to_string().cmp(&b.to_string()))
        });
        found
    };
    let orders = of("order");
    let pacs = of("pacs");
    let mut study = pacs.first().or(orders.first()).copied()?.clone();
    for order in &orders {
        for list in [
            "identifier",
            "modality",
            "basedOn",
            "procedureCode",
            "note",
            "reasonCode",
        ] {
            union(&mut study, order, list);
        }
        for single in ["referrer", "encounter", "started", "description"] {
            let missing = study
                .get(single)
                .is_none_or(|value| value.is_null() || value == "");
            if missing && let Some(value) = order.get(single) {
                study[single] = value.clone();
            }
        }
    }
    if let Some(profile) = orders
        .first()
        .and_then(|order| order["meta"].get("profile"))
    {
        study["meta"]["profile"] = profile.clone();
    }
    if !pacs.is_empty() {
        study["status"] = json!("available");
    }
    Some(study)
}

/// Appends to `study[list]` the elements of `other[list]` it lacks.
fn union(study: &mut Value, other: &Value, list: &str) {
    let Some(extra) = other[list].as_array() else {
        return;
    };
    let mut merged: Vec<Value> = study[list].as_array().cloned().unwrap_or_default();
    for element in extra {
        // A modality or an identifier is the same when its code or system + value is.
        let same = |existing: &Value| {
            existing == element
                || (list == "modality" && existing["code"] == element["code"])
                || (list == "identifier"
                    && existing["system"] == element["system"]
                    && existing["value"] == element["value"])
        };
        if !merged.iter().any(same) {
            merged.push(element.clone());
        }
    }
    if !merged.is_empty() {
        study[list] = Value::Array(merged);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn order(source: &str, procedure: &str) -> Value {
        json!({"kind": "order", "study": {
            "resourceType": "ImagingStudy", "id": "s",
            "meta": {"profile": ["radiology"], "source": source},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}, {"system": "acc", "value": "A1"}],
            "status": "available", "modality": [{"system": "dcm", "code": "CR"}],
            "subject": {"reference": "Patient/p"}, "started": "2024-05-01T10:00:00+09:00",
            "procedureCode": [{"text": procedure}], "description": procedure
        }})
    }

    fn pacs() -> Value {
        json!({"kind": "pacs", "study": {
            "resourceType": "ImagingStudy", "id": "s",
            "meta": {"profile": ["pacs"], "source": "dicomweb"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}, {"system": "acc", "value": "A1"}],
            "status": "available", "modality": [{"system": "dcm", "code": "CR"}, {"system": "dcm", "code": "SR"}],
            "subject": {"reference": "Patient/p"}, "started": "2024-05-01T10:02:11+09:00",
            "numberOfSeries": 2, "numberOfInstances": 3, "series": [{"uid": "1.2.3.1"}], "description": ""
        }})
    }

    #[test]
    fn a_notice_and_the_pacs_make_one_study() {
        let folded = fold(&[order("omg-a", "胸部X線"), pacs()]).unwrap();
        assert_eq!(folded["numberOfInstances"], 3);
        assert_eq!(folded["series"][0]["uid"], "1.2.3.1");
        assert_eq!(folded["started"], "2024-05-01T10:02:11+09:00", "the PACS's");
        assert_eq!(folded["description"], "胸部X線", "the PACS had none");
        assert_eq!(folded["procedureCode"][0]["text"], "胸部X線");
        assert_eq!(folded["identifier"].as_array().unwrap().len(), 2);
        assert_eq!(folded["modality"].as_array().unwrap().len(), 2);
        assert_eq!(folded["meta"]["profile"][0], "radiology");
        // Any order of parts, the same study.
        assert_eq!(fold(&[pacs(), order("omg-a", "胸部X線")]).unwrap(), folded);
    }

    #[test]
    fn two_notices_of_one_study_add_up_and_one_withdrawn_leaves_the_other() {
        let both = fold(&[order("omg-b", "側面"), order("omg-a", "正面")]).unwrap();
        let procedures: Vec<&str> = both["procedureCode"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap())
            .collect();
        assert_eq!(procedures, ["正面", "側面"]);
        let one = fold(&[order("omg-b", "側面")]).unwrap();
        assert_eq!(one["procedureCode"][0]["text"], "側面");
        assert_eq!(fold(&[]), None);
        assert_eq!(fold(&[json!({"kind": "order"})]), None);
    }
}
