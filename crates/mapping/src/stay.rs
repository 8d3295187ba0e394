//! One Encounter per visit, folded from the parts its records contribute
//! ([`crate::encounter`]): a planned admission (ADT-21), the admission (ADT-22), leaves and
//! returns (ADT-31/32), planned and done transfers (ADT-41/42), the planned and done discharge
//! (ADT-51/52), or an outpatient visit (ADT-12).
//!
//! The fold is a pure function of the set of parts, whatever order they arrived in: parts are
//! ordered by the phase of the stay their event belongs to, then by event time, then by content.
//! A cancel undoes the latest earlier event of its own folder (A11 the admission, A13 the
//! discharge, A12 the transfer, …); a record whose newest version is a cancel contributes only
//! that cancel, so its event is gone. With every event cancelled, the Encounter is `cancelled`.
//! Nothing contributed: no Encounter.
//!
//! - `status`: `finished` once discharged (or for an outpatient visit); `onleave` while the
//!   latest leave (ADT-31) has no later return (ADT-32); `in-progress` once admitted (or when
//!   any in-stay event shows the stay happened); `planned` with only a planned admission.
//! - `period.start` from the admission (else the outpatient visit, else the plan);
//!   `period.end` from the discharge.
//! - `location`: the wards and rooms in order; the current one `active` (all `completed` once
//!   discharged), planned transfers `planned` until they take place.
//! - `statusHistory`: each earlier status with the period it held.
//! - The other elements (class, service type, participant, subject, meta, identifier) from the
//!   latest event that carries them; `hospitalization.dischargeDisposition` from the discharge.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use crate::encounter::phase;

/// Folds the parts of one visit into its Encounter; `None` when no part is left.
pub fn fold(parts: &[Value]) -> Option<Value> {
    let mut ordered: Vec<&Value> = parts
        .iter()
        .filter(|part| part["encounter"].is_object())
        .collect();
    ordered.sort_by(|a, b| order(a, b));
    let mut effective: Vec<&Value> = Vec::new();
    let mut last_cancel: Option<&Value> = None;
    for part in ordered {
        if part["cancel"].as_bool().unwrap_or(false) {
            // A cancel written as its event's record's new version has replaced the event
            // already; one in a record of its own undoes only the event it names: same folder,
            // same time. Never another event of that kind.
            if let Some(position) = effective
                .iter()
                .rposition(|earlier| earlier["kind"] == part["kind"] && earlier["at"] == part["at"])
            {
                effective.remove(position);
            }
            last_cancel = Some(part);
        } else {
            effective.push(part);
        }
    }
    let Some(latest) = effective.last() else {
        // Every event was cancelled: the visit is cancelled, as its last cancel said.
        let mut encounter = last_cancel?["encounter"].clone();
        encounter["status"] = json!("cancelled");
        return Some(encounter);
    };
    let mut encounter = latest["encounter"].clone();
    let Value::Object(fields) = &mut encounter else {
        return None;
    };
    let of_kind = |kinds: &[&str]| -> Option<&Value> {
        effective
            .iter()
            .rev()
            .find(|part| kinds.iter().any(|kind| part["kind"] == *kind))
            .copied()
    };
    // Elements the latest event that carries them gives.
    for key in ["class", "serviceType", "participant"] {
        match effective
            .iter()
            .rev()
            .find_map(|part| part["encounter"].get(key))
        {
            Some(value) => {
                fields.insert(key.to_owned(), value.clone());
            }
            None => {
                fields.remove(key);
            }
        }
    }
    if let Some(admission) = of_kind(&["ADT-22"]) {
        // The admission says what kind of stay it is (a discharge message may say otherwise).
        if let Some(class) = admission["encounter"].get("class") {
            fields.insert("class".to_owned(), class.clone());
        }
    }
    let status = status(&effective);
    fields.insert("status".to_owned(), json!(status));
    let mut period = Map::new();
    let start = of_kind(&["ADT-22"])
        .or_else(|| of_kind(&["ADT-12"]))
        .or_else(|| of_kind(&["ADT-21"]))
        .and_then(|part| part["encounter"]["period"].get("start"))
        .or_else(|| {
            effective
                .iter()
                .find_map(|part| part["encounter"]["period"].get("start"))
        });
    if let Some(start) = start {
        period.insert("start".to_owned(), start.clone());
    }
    let discharge = of_kind(&["ADT-52"]);
    if let Some(end) = discharge.and_then(|part| part["encounter"]["period"].get("end")) {
        period.insert("end".to_owned(), end.clone());
    }
    if period.is_empty() {
        fields.remove("period");
    } else {
        fields.insert("period".to_owned(), Value::Object(period));
    }
    match discharge
        .and_then(|part| part["encounter"]["hospitalization"].get("dischargeDisposition"))
    {
        Some(disposition) => {
            fields.insert(
                "hospitalization".to_owned(),
                json!({"dischargeDisposition": disposition}),
            );
        }
        None => {
            fields.remove("hospitalization");
        }
    }
    let locations = locations(&effective, status == "finished");
    if locations.is_empty() {
        fields.remove("location");
    } else {
        fields.insert("location".to_owned(), Value::Array(locations));
    }
    let history = status_history(&effective);
    if !history.is_empty() {
        fields.insert("statusHistory".to_owned(), Value::Array(history));
    }
    Some(encounter)
}

/// Phase of the stay, then event time, then the parts' content: a total order.
fn order(a: &Value, b: &Value) -> Ordering {
    let kind = |part: &Value| part["kind"].as_str().unwrap_or("").to_owned();
    let at = |part: &Value| part["at"].as_str().unwrap_or("").to_owned();
    phase(&kind(a))
        .cmp(&phase(&kind(b)))
        .then_with(|| at(a).cmp(&at(b)))
        .then_with(|| kind(a).cmp(&kind(b)))
        // A cancel comes after what it cancels when both carry the same time.
        .then_with(|| a["cancel"].as_bool().cmp(&b["cancel"].as_bool()))
        .then_with(|| a.to_string().cmp(&b.to_string()))
}

/// The status the events say, by the rules in the module documentation.
fn status(effective: &[&Value]) -> &'static str {
    let has = |kind: &str| effective.iter().any(|part| part["kind"] == kind);
    // An outpatient visit that took place is over, unless the same visit became a stay.
    if has("ADT-52") || (has("ADT-12") && !has("ADT-21") && !has("ADT-22")) {
        return "finished";
    }
    let leave = effective
        .iter()
        .rev()
        .find(|part| part["kind"] == "ADT-31" || part["kind"] == "ADT-32");
    if leave.is_some_and(|part| part["kind"] == "ADT-31") {
        return "onleave";
    }
    if effective.iter().all(|part| part["kind"] == "ADT-21") {
        "planned"
    } else {
        "in-progress"
    }
}

/// The status each event starts, for the history.
fn started_status(kind: &str) -> Option<&'static str> {
    match kind {
        "ADT-21" => Some("planned"),
        "ADT-22" | "ADT-32" => Some("in-progress"),
        "ADT-31" => Some("onleave"),
        "ADT-52" => Some("finished"),
        "ADT-12" => Some("in-progress"),
        _ => None,
    }
}

/// Each earlier status with the period it held (the current one is `status`).
fn status_history(effective: &[&Value]) -> Vec<Value> {
    let mut changes: Vec<(&str, &str)> = Vec::new();
    for part in effective {
        let Some(started) = started_status(part["kind"].as_str().unwrap_or("")) else {
            continue;
        };
        let at = part["at"].as_str().unwrap_or("");
        if changes.last().is_some_and(|(status, _)| *status == started) || at.is_empty() {
            continue;
        }
        changes.push((started, at));
    }
    // Only periods that go forward (FHIR per-1: start before end); a plan's time can lie after
    // the admission that came early.
    changes
        .windows(2)
        .filter(|pair| pair[0].1 < pair[1].1)
        .map(|pair| json!({"status": pair[0].0, "period": {"start": pair[0].1, "end": pair[1].1}}))
        .collect()
}

/// The wards and rooms in the order the events name them.
fn locations(effective: &[&Value], finished: bool) -> Vec<Value> {
    let mut list: Vec<(String, &'static str)> = Vec::new();
    let set = |list: &mut Vec<(String, &'static str)>, place: &str, status: &'static str| match list
        .iter_mut()
        .find(|(known, _)| known == place)
    {
        Some(entry) => entry.1 = status,
        None => list.push((place.to_owned(), status)),
    };
    for part in effective {
        let kind = part["kind"].as_str().unwrap_or("");
        let Some(place) = part["location"].as_str() else {
            continue;
        };
        if matches!(kind, "ADT-21" | "ADT-41") {
            if !list.iter().any(|(known, _)| known == place) {
                list.push((place.to_owned(), "planned"));
            }
            continue;
        }
        if let Some(prior) = part["prior"].as_str() {
            set(&mut list, prior, "completed");
        }
        // The patient is here now: wherever they were before is behind them.
        for entry in list.iter_mut() {
            if entry.1 == "active" && entry.0 != place {
                entry.1 = "completed";
            }
        }
        set(&mut list, place, "active");
    }
    list.into_iter()
        // A planned transfer that never took place is no place the patient was.
        .filter(|(_, status)| !(finished && *status == "planned"))
        .map(|(place, status)| {
            let status = if finished && status == "active" {
                "completed"
            } else {
                status
            };
            json!({"location": {"display": place}, "status": status})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part as `encounter` makes it: folder, time, ward (and the ward before), cancel or not.
    fn part(kind: &str, at: &str, ward: &str, prior: Option<&str>, cancel: bool) -> Value {
        let mut encounter = json!({
            "resourceType": "Encounter", "id": "stay",
            "status": "in-progress",
            "class": {"code": if kind == "ADT-12" { "AMB" } else { "IMP" }},
            "subject": {"reference": "Patient/p"},
            "period": {"start": at}
        });
        if kind == "ADT-52" {
            encounter["period"]["end"] = json!(at);
        }
        let mut part = json!({"kind": kind, "at": at, "cancel": cancel, "location": ward,
            "trigger": "A00", "encounter": encounter});
        if let Some(prior) = prior {
            part["prior"] = json!(prior);
        }
        part
    }

    fn wards(encounter: &Value) -> Vec<String> {
        encounter["location"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|l| {
                        format!(
                            "{}:{}",
                            l["location"]["display"].as_str().unwrap_or(""),
                            l["status"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stay() -> Vec<Value> {
        vec![
            part(
                "ADT-21",
                "2024-04-07T09:00:00+09:00",
                "31-301-1",
                None,
                false,
            ),
            part(
                "ADT-22",
                "2024-04-10T09:30:00+09:00",
                "31-301-1",
                None,
                false,
            ),
            part(
                "ADT-42",
                "2024-04-12T10:00:00+09:00",
                "41-410-2",
                Some("31-301-1"),
                false,
            ),
            part(
                "ADT-42",
                "2024-04-15T10:00:00+09:00",
                "51-510-1",
                Some("41-410-2"),
                false,
            ),
            part(
                "ADT-31",
                "2024-04-16T10:00:00+09:00",
                "51-510-1",
                None,
                false,
            ),
            part(
                "ADT-32",
                "2024-04-17T10:00:00+09:00",
                "51-510-1",
                None,
                false,
            ),
            part(
                "ADT-52",
                "2024-04-20T11:00:00+09:00",
                "51-510-1",
                None,
                false,
            ),
        ]
    }

    #[test]
    fn the_fold_does_not_depend_on_arrival_order() {
        let parts = stay();
        let expected = fold(&parts);
        // Every rotation and the reverse: the same Encounter.
        for shift in 0..parts.len() {
            let mut rotated = parts.clone();
            rotated.rotate_left(shift);
            assert_eq!(fold(&rotated), expected, "rotated by {shift}");
            rotated.reverse();
            assert_eq!(fold(&rotated), expected, "reversed after {shift}");
        }
        let encounter = expected.unwrap();
        assert_eq!(encounter["status"], "finished");
        assert_eq!(
            wards(&encounter),
            [
                "31-301-1:completed",
                "41-410-2:completed",
                "51-510-1:completed"
            ]
        );
        let history: Vec<&str> = encounter["statusHistory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            history,
            ["planned", "in-progress", "onleave", "in-progress"]
        );
        for entry in encounter["statusHistory"].as_array().unwrap() {
            assert!(entry["period"]["start"].as_str() < entry["period"]["end"].as_str());
        }
    }

    #[test]
    fn a_cancel_undoes_only_the_event_it_names() {
        // The second transfer is cancelled by a message of its own (same folder, same time):
        // the first transfer stays.
        let mut parts = stay();
        parts.truncate(4);
        parts.push(part(
            "ADT-42",
            "2024-04-15T10:00:00+09:00",
            "51-510-1",
            Some("41-410-2"),
            true,
        ));
        let encounter = fold(&parts).unwrap();
        assert_eq!(encounter["status"], "in-progress");
        assert_eq!(wards(&encounter), ["31-301-1:completed", "41-410-2:active"]);
        // Only cancels left: the visit is cancelled.
        let cancelled = fold(&[part(
            "ADT-22",
            "2024-04-10T09:30:00+09:00",
            "31-301-1",
            None,
            true,
        )])
        .unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn an_outpatient_visit_that_became_a_stay_is_not_finished() {
        let visit = part("ADT-12", "2024-04-10T09:00:00+09:00", "01", None, false);
        assert_eq!(
            fold(std::slice::from_ref(&visit)).unwrap()["status"],
            "finished"
        );
        let admitted = part(
            "ADT-22",
            "2024-04-10T11:00:00+09:00",
            "31-301-1",
            None,
            false,
        );
        let encounter = fold(&[visit, admitted]).unwrap();
        assert_eq!(encounter["status"], "in-progress");
        assert_eq!(encounter["class"]["code"], "IMP");
    }

    #[test]
    fn a_plan_later_than_the_admission_makes_no_backward_period() {
        // Planned for the 12th, admitted early on the 10th: no period ends before it starts.
        let parts = [
            part(
                "ADT-21",
                "2024-04-12T09:00:00+09:00",
                "31-301-1",
                None,
                false,
            ),
            part(
                "ADT-22",
                "2024-04-10T09:30:00+09:00",
                "31-301-1",
                None,
                false,
            ),
        ];
        let encounter = fold(&parts).unwrap();
        assert_eq!(encounter["status"], "in-progress");
        assert!(encounter.get("statusHistory").is_none(), "{encounter}");
    }
}
