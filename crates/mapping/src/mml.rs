//! One MML 4.0 export file of a hospital's EHR (Homma's) → what SS-MIX2 standardized storage
//! does not carry, in the same chart: the file's bytes as a `Binary`; each progress course as a
//! progress-note `DocumentReference` (LOINC 11506-3) and each referral as a referral
//! `DocumentReference` (LOINC 57133-1), their text rendered as XHTML; each procedure of a
//! surgery as a `Procedure` (JP Core `JP_Procedure`).
//!
//! Identities are the SS-MIX2 data's: the patient is `Patient/<facility>.<masterId>` (the id
//! the hospital's standardized storage uses), the custodian `Organization/<facility>`, people by
//! their staff id under the facility's `staff` system (as extended storage's authors). Ids come
//! from the module's `docId/uid`, so a module re-exported in another file is the same resource.

use serde_json::{Value, json};
use tsunagi_core::{FacilityId, ids::logical_id};
use tsunagi_document::mml::{Content, MmlDocument, Module, Person, Section, Surgery};
use tsunagi_document::narrative::escape;
use tsunagi_fhir::{json::reference, profiles, systems};

use crate::{
    MapError, Mapped, MappedResource,
    common::{hex, percent_encode},
};

const LOINC: &str = "http://loinc.org";

/// One MML file, as the adapter read it.
#[derive(Clone, Copy)]
pub struct MmlSource<'a> {
    /// The hospital.
    pub facility: &'a FacilityId,
    /// The file's path below its export folder (its identity in the source).
    pub file: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: &'a [u8; 32],
    /// The instance read from it.
    pub document: &'a MmlDocument,
    /// Whether a later edition (in any file) revises the module of this uid: its
    /// DocumentReference is `superseded`, its surgery's Procedures are not written.
    pub revised: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for MmlSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmlSource")
            .field("facility", &self.facility)
            .field("file", &self.file)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The logical id of the Binary holding an export file's bytes: by content (a file renamed or
/// moved keeps it; another content is another Binary).
pub fn binary_id(facility: &str, patient_id: &str, sha256: &[u8; 32]) -> String {
    logical_id(&["b", facility, patient_id, "mml", &hex(&sha256[..8])])
}

/// The largest narrative kept in a DocumentReference (as `text` and as an attachment).
const MAX_NARRATIVE_BYTES: usize = 1 << 20;

/// The longest surgery believed (a longer duration is a typo: the end is left out).
const MAX_DURATION_MINUTES: i64 = 7 * 24 * 60;

/// The identifier system of MML modules (`docId/uid`, `uid#item-procedure` for a Procedure):
/// also how the adapter tells which module a resource came from.
pub fn module_system(facility: &str) -> String {
    systems::local(facility, "mml-document")
}

/// The logical id of a module's DocumentReference.
pub fn document_id(facility: &str, patient_id: &str, uid: &str) -> String {
    logical_id(&[facility, patient_id, "mml", uid])
}

/// An MML date or date-time as FHIR `dateTime` (Japan's zone when none is given), or `None`
/// when it is neither `YYYY-MM-DD` nor `YYYY-MM-DDThh:mm:ss[.fff][zone]`.
fn datetime(text: &str) -> Option<String> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let at = |index: usize, byte: u8| bytes.get(index) == Some(&byte);
    let date = digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10);
    if text.len() == 10 && date {
        return Some(text.to_owned());
    }
    let time = at(10, b'T') && digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':');
    if date && time && digits(17..19) {
        let rest = &text[19..];
        let (fraction, zone) = match rest.strip_prefix('.') {
            Some(after) => {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                (&rest[..digits + 1], &after[digits..])
            }
            None => ("", rest),
        };
        let zone_ok = zone.is_empty()
            || zone == "Z"
            || (zone.len() == 6
                && matches!(zone.as_bytes()[0], b'+' | b'-')
                && zone.as_bytes()[3] == b':');
        if !zone_ok || fraction == "." {
            return None;
        }
        return Some(if zone.is_empty() {
            format!("{text}+09:00")
        } else {
            text.to_owned()
        });
    }
    None
}

/// A person as a Reference by their staff id (the SS-MIX2 data names staff so).
fn person_reference(facility: &str, person: &Person) -> Option<Value> {
    let mut reference = serde_json::Map::new();
    if let Some(id) = &person.id {
        reference.insert(
            "identifier".into(),
            json!({"system": systems::local(facility, "staff"), "value": id}),
        );
    }
    if let Some(name) = &person.name {
        reference.insert("display".into(), json!(name));
    }
    (!reference.is_empty()).then_some(Value::Object(reference))
}

/// The sections as an XHTML narrative: a heading and a paragraph per line.
fn narrative(sections: &[Section]) -> String {
    let mut div = String::from("<div xmlns=\"http://www.w3.org/1999/xhtml\">");
    for section in sections {
        div.push_str("<h2>");
        escape(&section.title, &mut div);
        div.push_str("</h2>");
        for line in &section.lines {
            div.push_str("<p>");
            escape(line, &mut div);
            div.push_str("</p>");
        }
    }
    div.push_str("</div>");
    div
}

struct Chart<'a> {
    source: &'a MmlSource<'a>,
    facility: &'a str,
    patient: String,
    warnings: Vec<String>,
}

impl Chart<'_> {
    fn attachment(&self) -> Value {
        json!({
            "contentType": "application/xml",
            "url": format!("Binary/{}", binary_id(self.facility, &self.source.document.patient_id, self.source.sha256)),
            "size": self.source.size,
            "title": self.source.file.rsplit('/').next().unwrap_or(self.source.file),
            "extension": [{"url": systems::STORED_BYTES, "valueString": hex(self.source.sha256)}]
        })
    }

    fn meta(&self, profile: Option<&str>) -> Value {
        let mut meta = json!({"source": format!("urn:tsunagi:mml:{}:{}", self.facility, self.source.file.split('/').map(percent_encode).collect::<Vec<_>>().join("/"))});
        if let Some(profile) = profile {
            meta["profile"] = json!([profile]);
        }
        meta
    }

    fn when(&mut self, module: &Module) -> Option<String> {
        let confirmed = module.confirmed.as_deref()?;
        let value = datetime(confirmed);
        if value.is_none() {
            self.warnings.push(format!(
                "{} module {}: confirmDate {confirmed:?} is not a date",
                module.kind, module.uid
            ));
        }
        value
    }

    /// A progress course or referral as a DocumentReference.
    fn document(
        &mut self,
        module: &Module,
        sections: &[Section],
        (code, name, category, category_name): (&str, &str, &str, &str),
    ) -> MappedResource {
        let id = document_id(self.facility, &self.source.document.patient_id, &module.uid);
        let mut div = (!sections.is_empty()).then(|| narrative(sections));
        if div
            .as_ref()
            .is_some_and(|div| div.len() > MAX_NARRATIVE_BYTES)
        {
            self.warnings.push(format!(
                "{} module {}: the text is over {MAX_NARRATIVE_BYTES} bytes as XHTML: read it in the original",
                module.kind, module.uid
            ));
            div = None;
        }
        // `date` is an instant: a date alone is not one.
        let date = self.when(module).filter(|date| date.len() > 10);
        let mut document = json!({
            "resourceType": "DocumentReference",
            "id": id,
            "meta": self.meta(None),
            "identifier": [{"system": module_system(self.facility), "value": module.uid}],
            "status": if (self.source.revised)(&module.uid) { "superseded" } else { "current" },
            "docStatus": "final",
            "type": {"coding": [
                {"system": LOINC, "code": code, "display": name},
                {"system": systems::local(self.facility, "mml-module"), "code": module.kind}
            ], "text": name},
            "category": [{"coding": [{"system": format!("{}/document-class", systems::LOCAL_BASE), "code": category, "display": category_name}]}],
            "subject": reference("Patient", &self.patient),
            "custodian": {"reference": format!("Organization/{}", self.facility), "identifier": {"system": systems::MEDICAL_ORGANIZATION_ID, "value": self.facility}},
            "content": [{"attachment": self.attachment()}]
        });
        if let Some(div) = div {
            if let Some(contents) = document["content"].as_array_mut() {
                contents.push(json!({"attachment": {"contentType": "application/xhtml+xml", "data": tsunagi_core::base64::encode(div.as_bytes()), "title": "narrative"}}));
            }
            document["text"] = json!({"status": "generated", "div": div});
        }
        if let Some(date) = date {
            document["date"] = json!(date);
        }
        if let Some(author) = module
            .creator
            .as_ref()
            .and_then(|person| person_reference(self.facility, person))
        {
            document["author"] = json!([author]);
        }
        if let Some(title) = &module.title {
            document["description"] = json!(title);
        }
        if let Some(previous) = &module.replaces {
            document["relatesTo"] = json!([{"code": "replaces", "target": reference(
                "DocumentReference",
                &document_id(self.facility, &self.source.document.patient_id, previous)
            )}]);
        }
        MappedResource {
            resource_type: "DocumentReference",
            id,
            json: document,
        }
    }

    /// Each procedure of a surgery as a Procedure.
    fn procedures(&mut self, module: &Module, surgeries: &[Surgery]) -> Vec<MappedResource> {
        let mut out = Vec::new();
        for (item, surgery) in surgeries.iter().enumerate() {
            let start = match (&surgery.date, &surgery.start) {
                // xs:time is `HH:MM:SS`; some exports write `HH:MM`.
                (Some(date), Some(time)) if time.len() == 5 => {
                    datetime(&format!("{date}T{time}:00"))
                }
                (Some(date), Some(time)) => datetime(&format!("{date}T{time}")),
                (Some(date), None) => datetime(date),
                _ => None,
            };
            if start.is_none() {
                self.warnings.push(format!(
                    "surgery module {}: item {} has no usable date",
                    module.uid,
                    item + 1
                ));
            }
            let mut notes: Vec<Value> = surgery
                .anaesthesia
                .iter()
                .map(|name| json!({"text": format!("麻酔: {name}")}))
                .collect();
            notes.extend(surgery.notes.iter().map(|note| json!({"text": note})));
            let performers: Vec<Value> = surgery
                .staff
                .iter()
                .filter_map(|(person, role)| {
                    let actor = person_reference(self.facility, person)?;
                    let mut performer = json!({"actor": actor});
                    if let Some(role) = role {
                        performer["function"] = json!({"text": role});
                    }
                    Some(performer)
                })
                .collect();
            for (index, operation) in surgery.operations.iter().enumerate() {
                let id = logical_id(&[
                    self.facility,
                    &self.source.document.patient_id,
                    "mml",
                    &module.uid,
                    &format!("{}-{}", item + 1, index + 1),
                ]);
                let mut code = json!({"text": operation.name});
                if let Some(value) = &operation.code {
                    let table = operation.system.as_deref().unwrap_or("procedure");
                    code["coding"] = json!([{
                        "system": systems::local(self.facility, &format!("mml-{table}")),
                        "code": value,
                        "display": operation.name
                    }]);
                }
                let mut procedure = json!({
                    "resourceType": "Procedure",
                    "id": id,
                    "meta": self.meta(Some(profiles::PROCEDURE)),
                    "identifier": [{"system": module_system(self.facility), "value": format!("{}#{}-{}", module.uid, item + 1, index + 1)}],
                    "status": "completed",
                    "category": {"coding": [{"system": "http://snomed.info/sct", "code": "387713003", "display": "Surgical procedure"}]},
                    "code": code,
                    "subject": reference("Patient", &self.patient),
                });
                if let Some(start) = &start {
                    match surgery.duration.as_deref().and_then(|d| end_of(start, d)) {
                        Some(end) => {
                            procedure["performedPeriod"] = json!({"start": start, "end": end})
                        }
                        None => procedure["performedDateTime"] = json!(start),
                    }
                }
                if !performers.is_empty() {
                    procedure["performer"] = json!(performers);
                }
                if let Some(recorder) = module
                    .creator
                    .as_ref()
                    .and_then(|person| person_reference(self.facility, person))
                {
                    procedure["recorder"] = recorder;
                }
                if !surgery.diagnoses.is_empty() {
                    let reasons: Vec<Value> = surgery
                        .diagnoses
                        .iter()
                        .map(|diagnosis| {
                            let mut reason = json!({"text": diagnosis.name});
                            if let Some(code) = &diagnosis.code {
                                let table = diagnosis.system.as_deref().unwrap_or("diagnosis");
                                reason["coding"] = json!([{
                                    "system": systems::local(self.facility, &format!("mml-{table}")),
                                    "code": code,
                                    "display": diagnosis.name
                                }]);
                            }
                            reason
                        })
                        .collect();
                    procedure["reasonCode"] = json!(reasons);
                }
                let mut all_notes = notes.clone();
                all_notes.extend(operation.notes.iter().map(|note| json!({"text": note})));
                if !all_notes.is_empty() {
                    procedure["note"] = json!(all_notes);
                }
                if let Some(department) = &surgery.department {
                    procedure["extension"] = json!([{
                        "url": "urn:tsunagi:mml:surgical-department",
                        "valueString": department
                    }]);
                }
                out.push(MappedResource {
                    resource_type: "Procedure",
                    id,
                    json: procedure,
                });
            }
            if surgery.operations.is_empty() {
                self.warnings.push(format!(
                    "surgery module {}: item {} names no procedure",
                    module.uid,
                    item + 1
                ));
            }
        }
        out
    }
}

/// `start` plus an ISO 8601 duration of hours and minutes (`PT3H40M`), or `None`.
fn end_of(start: &str, duration: &str) -> Option<String> {
    let rest = duration.trim().strip_prefix("PT")?;
    let (mut minutes, mut number) = (0i64, String::new());
    for ch in rest.chars() {
        match ch {
            '0'..='9' if number.len() < 6 => number.push(ch),
            'H' => minutes = minutes.checked_add(number.parse::<i64>().ok()?.checked_mul(60)?)?,
            'M' => minutes = minutes.checked_add(number.parse::<i64>().ok()?)?,
            // Seconds do not move the end by a minute.
            'S' => {}
            _ => return None,
        }
        if !ch.is_ascii_digit() {
            number.clear();
        }
    }
    if minutes > MAX_DURATION_MINUTES {
        return None;
    }
    // start is `YYYY-MM-DDTHH:MM:SS+09:00`: add minutes on the civil clock.
    let (date, clock) = start.split_once('T')?;
    let hour: i64 = clock.get(0..2)?.parse().ok()?;
    let minute: i64 = clock.get(3..5)?.parse().ok()?;
    let total = hour * 60 + minute + minutes;
    let year: i32 = date.get(0..4)?.parse().ok()?;
    let month: u8 = date.get(5..7)?.parse().ok()?;
    let day: u8 = date.get(8..10)?.parse().ok()?;
    let days = tsunagi_core::time::days_from_civil(year, month, day) + total.div_euclid(1440);
    let (year, month, day) = tsunagi_core::time::civil_from_days(days);
    let total = total.rem_euclid(1440);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{}",
        total / 60,
        total % 60,
        clock.get(6..)?
    ))
}

/// Maps one MML file.
pub fn map_mml(source: &MmlSource<'_>) -> Result<Mapped, MapError> {
    let facility = source.facility.as_str();
    let document = source.document;
    if document.patient_id.trim().is_empty() {
        return Err(MapError::Invalid("the MML names no patient".into()));
    }
    // A referral carries its patient's module: it must be the header's patient.
    for module in &document.modules {
        if let Content::Referral {
            patient: Some(patient),
            ..
        } = &module.content
            && patient != &document.patient_id
        {
            return Err(MapError::Invalid(format!(
                "referral {}: its PatientModule names patient {patient}, the header {}",
                module.uid, document.patient_id
            )));
        }
    }
    let mut chart = Chart {
        source,
        facility,
        patient: logical_id(&[facility, &document.patient_id]),
        warnings: Vec::new(),
    };
    let mut resources = Vec::new();
    for module in &document.modules {
        match &module.content {
            Content::ProgressCourse(sections) => resources.push(chart.document(
                module,
                sections,
                ("11506-3", "経過記録", "progress-note", "経過記録"),
            )),
            Content::Referral { sections, to, .. } => {
                let mut all = Vec::with_capacity(sections.len() + 1);
                if let Some(to) = to {
                    all.push(Section {
                        title: "紹介先".into(),
                        lines: vec![to.clone()],
                    });
                }
                all.extend(sections.iter().cloned());
                resources.push(chart.document(
                    module,
                    &all,
                    ("57133-1", "紹介状", "referral", "診療情報提供書"),
                ));
            }
            // A revised surgery's procedures are its later edition's.
            Content::Surgery(_) if (source.revised)(&module.uid) => {}
            Content::Surgery(surgeries) => {
                let procedures = chart.procedures(module, surgeries);
                resources.extend(procedures);
            }
            Content::Other => chart.warnings.push(format!(
                "a {:?} module ({}) is kept in the file but not read",
                module.kind, module.uid
            )),
        }
    }
    Ok(Mapped {
        resources,
        warnings: chart.warnings,
        ..Mapped::default()
    })
}
