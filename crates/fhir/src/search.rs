//! The search-parameter registry and index extraction.
//!
//! Every stored resource version gets index rows computed here, from its JSON, by the same
//! code whatever the resource's origin (an adapter, the write endpoint, a bulk load). Stores
//! persist the rows in the same transaction as the resource. Each parameter has a stable
//! numeric id: ids are never reused, and changing what a parameter indexes changes
//! [`REGISTRY_VERSION`], which tells a store to re-index.

use serde_json::Value;
use tsunagi_core::{normalize::search_key, time::fhir_date_range};

use crate::systems::canonical;

/// Bumped whenever the registry or extraction rules change. (Communication, DocumentReference
/// and Task were added without a bump: no stored resource of those types predates them, since
/// they are written only through the API that came with them.)
/// 5: full text (`_content`) of documents, reports, procedures and notes; Procedure;
/// DocumentReference `encounter`, `related`, `relatesto`, `event`, `facility`; DiagnosticReport
/// `imaging-study` (not a FHIR parameter: the link from an imaging report to its study).
/// 6: ImagingStudy `endpoint`; Endpoint (the gateway's DICOMweb proxy per hospital PACS).
/// 7: index values leave U+0000 out (SQLite finds a resource's old rows by extracting them
/// again, so rows written with a NUL must be rewritten once).
pub const REGISTRY_VERSION: u32 = 7;

/// FHIR search-parameter types that are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `system|code` pairs from code, Coding, CodeableConcept, Identifier, ContactPoint, boolean.
    Token,
    /// Normalised text (see `tsunagi_core::normalize`).
    String,
    /// Half-open instant ranges.
    Date,
    /// `Type/id` targets.
    Reference,
    /// Value with system and code.
    Quantity,
    /// The words of a resource (`_content`, and `_text` for its narrative): see [`text`].
    Text,
}

/// One search parameter.
#[derive(Debug, Clone, Copy)]
pub struct SearchParam {
    /// Stable numeric id stored in index rows.
    pub id: u16,
    /// Resource type it applies to.
    pub resource: &'static str,
    /// Parameter code as used in URLs.
    pub code: &'static str,
    /// Parameter type.
    pub kind: ParamType,
    /// Element paths, dot-separated; `x[x]` matches any `xType` choice element.
    pub paths: &'static [&'static str],
}

/// Parameters are equal when their stable ids are.
impl PartialEq for SearchParam {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

macro_rules! params {
    ($($id:literal $resource:literal $code:literal $kind:ident [$($path:literal),*];)*) => {
        /// Every indexed search parameter.
        pub const PARAMS: &[SearchParam] = &[
            $(SearchParam { id: $id, resource: $resource, code: $code, kind: ParamType::$kind, paths: &[$($path),*] },)*
        ];
    };
}

params! {
    1 "Patient" "identifier" Token ["identifier"];
    2 "Patient" "name" String ["name"];
    3 "Patient" "family" String ["name.family"];
    4 "Patient" "given" String ["name.given"];
    5 "Patient" "birthdate" Date ["birthDate"];
    6 "Patient" "gender" Token ["gender"];
    7 "Patient" "phone" Token ["telecom"];
    8 "Patient" "address-postalcode" String ["address.postalCode"];
    9 "Patient" "address" String ["address"];
    10 "Patient" "jp-kana-sort" String [];
    20 "Observation" "identifier" Token ["identifier"];
    21 "Observation" "patient" Reference ["subject"];
    23 "Observation" "code" Token ["code"];
    24 "Observation" "category" Token ["category"];
    25 "Observation" "date" Date ["effective[x]"];
    26 "Observation" "value-quantity" Quantity ["valueQuantity"];
    27 "Observation" "value-concept" Token ["valueCodeableConcept"];
    28 "Observation" "status" Token ["status"];
    29 "Observation" "specimen" Reference ["specimen"];
    30 "Observation" "encounter" Reference ["encounter"];
    31 "Observation" "based-on" Reference ["basedOn"];
    32 "Observation" "value-string" String ["valueString"];
    40 "DiagnosticReport" "identifier" Token ["identifier"];
    41 "DiagnosticReport" "patient" Reference ["subject"];
    43 "DiagnosticReport" "code" Token ["code"];
    44 "DiagnosticReport" "category" Token ["category"];
    45 "DiagnosticReport" "date" Date ["effective[x]"];
    46 "DiagnosticReport" "issued" Date ["issued"];
    47 "DiagnosticReport" "status" Token ["status"];
    48 "DiagnosticReport" "result" Reference ["result"];
    49 "DiagnosticReport" "performer" Reference ["performer"];
    50 "DiagnosticReport" "specimen" Reference ["specimen"];
    51 "DiagnosticReport" "based-on" Reference ["basedOn"];
    52 "DiagnosticReport" "conclusion" Token ["conclusionCode"];
    53 "DiagnosticReport" "encounter" Reference ["encounter"];
    54 "DiagnosticReport" "media" Reference ["media.link"];
    55 "DiagnosticReport" "results-interpreter" Reference ["resultsInterpreter"];
    56 "DiagnosticReport" "_content" Text [];
    57 "DiagnosticReport" "imaging-study" Reference ["imagingStudy"];
    60 "MedicationRequest" "identifier" Token ["identifier"];
    61 "MedicationRequest" "patient" Reference ["subject"];
    63 "MedicationRequest" "code" Token ["medicationCodeableConcept"];
    64 "MedicationRequest" "authoredon" Date ["authoredOn"];
    65 "MedicationRequest" "status" Token ["status"];
    66 "MedicationRequest" "intent" Token ["intent"];
    67 "MedicationRequest" "category" Token ["category"];
    68 "MedicationRequest" "requester" Reference ["requester"];
    69 "MedicationRequest" "date" Date ["dosageInstruction.timing.event"];
    70 "MedicationRequest" "jp-medication-start" Date [];
    71 "MedicationRequest" "encounter" Reference ["encounter"];
    80 "MedicationAdministration" "identifier" Token ["identifier"];
    81 "MedicationAdministration" "patient" Reference ["subject"];
    83 "MedicationAdministration" "code" Token ["medicationCodeableConcept"];
    84 "MedicationAdministration" "effective-time" Date ["effective[x]"];
    85 "MedicationAdministration" "status" Token ["status"];
    86 "MedicationAdministration" "request" Reference ["request"];
    87 "MedicationAdministration" "performer" Reference ["performer.actor"];
    100 "Condition" "identifier" Token ["identifier"];
    101 "Condition" "patient" Reference ["subject"];
    103 "Condition" "code" Token ["code"];
    104 "Condition" "clinical-status" Token ["clinicalStatus"];
    105 "Condition" "verification-status" Token ["verificationStatus"];
    106 "Condition" "category" Token ["category"];
    107 "Condition" "onset-date" Date ["onset[x]"];
    108 "Condition" "recorded-date" Date ["recordedDate"];
    109 "Condition" "abatement-date" Date ["abatement[x]"];
    120 "AllergyIntolerance" "identifier" Token ["identifier"];
    121 "AllergyIntolerance" "patient" Reference ["patient"];
    122 "AllergyIntolerance" "code" Token ["code"];
    123 "AllergyIntolerance" "category" Token ["category"];
    124 "AllergyIntolerance" "clinical-status" Token ["clinicalStatus"];
    125 "AllergyIntolerance" "verification-status" Token ["verificationStatus"];
    126 "AllergyIntolerance" "criticality" Token ["criticality"];
    127 "AllergyIntolerance" "onset" Date ["onset[x]"];
    128 "AllergyIntolerance" "date" Date ["recordedDate"];
    129 "AllergyIntolerance" "type" Token ["type"];
    140 "Encounter" "identifier" Token ["identifier"];
    141 "Encounter" "patient" Reference ["subject"];
    143 "Encounter" "class" Token ["class"];
    144 "Encounter" "type" Token ["type"];
    145 "Encounter" "status" Token ["status"];
    146 "Encounter" "date" Date ["period"];
    147 "Encounter" "location" Reference ["location.location"];
    160 "ImagingStudy" "identifier" Token ["identifier"];
    161 "ImagingStudy" "patient" Reference ["subject"];
    163 "ImagingStudy" "modality" Token ["series.modality", "modality"];
    164 "ImagingStudy" "started" Date ["started"];
    165 "ImagingStudy" "status" Token ["status"];
    166 "ImagingStudy" "basedon" Reference ["basedOn"];
    167 "ImagingStudy" "encounter" Reference ["encounter"];
    168 "ImagingStudy" "bodysite" Token ["series.bodySite"];
    169 "ImagingStudy" "endpoint" Reference ["endpoint"];
    180 "Specimen" "identifier" Token ["identifier"];
    181 "Specimen" "patient" Reference ["subject"];
    183 "Specimen" "type" Token ["type"];
    184 "Specimen" "collected" Date ["collection.collected[x]"];
    185 "Specimen" "accession" Token ["accessionIdentifier"];
    200 "ServiceRequest" "identifier" Token ["identifier"];
    201 "ServiceRequest" "patient" Reference ["subject"];
    203 "ServiceRequest" "code" Token ["code"];
    204 "ServiceRequest" "category" Token ["category"];
    205 "ServiceRequest" "authored" Date ["authoredOn"];
    206 "ServiceRequest" "status" Token ["status"];
    207 "ServiceRequest" "intent" Token ["intent"];
    208 "ServiceRequest" "requester" Reference ["requester"];
    209 "ServiceRequest" "occurrence" Date ["occurrence[x]"];
    210 "ServiceRequest" "based-on" Reference ["basedOn"];
    220 "Coverage" "identifier" Token ["identifier"];
    221 "Coverage" "beneficiary" Reference ["beneficiary"];
    223 "Coverage" "type" Token ["type"];
    224 "Coverage" "status" Token ["status"];
    225 "Coverage" "payor" Reference ["payor"];
    226 "Coverage" "class-type" Token ["class.type"];
    227 "Coverage" "class-value" String ["class.value"];
    228 "Coverage" "dependent" String ["dependent"];
    229 "Coverage" "policy-holder" Reference ["policyHolder"];
    230 "Coverage" "subscriber" Reference ["subscriber"];
    240 "NutritionOrder" "identifier" Token ["identifier"];
    241 "NutritionOrder" "patient" Reference ["patient"];
    242 "NutritionOrder" "datetime" Date ["dateTime"];
    243 "NutritionOrder" "status" Token ["status"];
    244 "NutritionOrder" "encounter" Reference ["encounter"];
    260 "Organization" "identifier" Token ["identifier"];
    261 "Organization" "name" String ["name", "alias"];
    262 "Organization" "type" Token ["type"];
    263 "Organization" "active" Token ["active"];
    280 "Practitioner" "identifier" Token ["identifier"];
    281 "Practitioner" "name" String ["name"];
    282 "Practitioner" "active" Token ["active"];
    300 "PractitionerRole" "identifier" Token ["identifier"];
    301 "PractitionerRole" "practitioner" Reference ["practitioner"];
    302 "PractitionerRole" "organization" Reference ["organization"];
    303 "PractitionerRole" "role" Token ["code"];
    304 "PractitionerRole" "active" Token ["active"];
    320 "Consent" "identifier" Token ["identifier"];
    321 "Consent" "patient" Reference ["patient"];
    322 "Consent" "status" Token ["status"];
    323 "Consent" "scope" Token ["scope"];
    324 "Consent" "category" Token ["category"];
    325 "Consent" "period" Date ["provision.period"];
    326 "Consent" "actor" Reference ["provision.actor.reference"];
    327 "Consent" "organization" Reference ["organization"];
    328 "Consent" "date" Date ["dateTime"];
    340 "Communication" "identifier" Token ["identifier"];
    341 "Communication" "patient" Reference ["subject"];
    342 "Communication" "status" Token ["status"];
    343 "Communication" "category" Token ["category"];
    344 "Communication" "sent" Date ["sent"];
    345 "Communication" "received" Date ["received"];
    346 "Communication" "recipient" Reference ["recipient"];
    347 "Communication" "sender" Reference ["sender"];
    348 "Communication" "part-of" Reference ["partOf"];
    349 "Communication" "based-on" Reference ["basedOn"];
    350 "Communication" "_content" Text [];
    360 "DocumentReference" "identifier" Token ["identifier", "masterIdentifier"];
    361 "DocumentReference" "patient" Reference ["subject"];
    362 "DocumentReference" "type" Token ["type"];
    363 "DocumentReference" "category" Token ["category"];
    364 "DocumentReference" "date" Date ["date"];
    365 "DocumentReference" "status" Token ["status"];
    366 "DocumentReference" "author" Reference ["author"];
    367 "DocumentReference" "custodian" Reference ["custodian"];
    368 "DocumentReference" "period" Date ["context.period"];
    369 "DocumentReference" "contenttype" Token ["content.attachment.contentType"];
    370 "DocumentReference" "_content" Text [];
    371 "DocumentReference" "encounter" Reference ["context.encounter"];
    372 "DocumentReference" "related" Reference ["context.related"];
    373 "DocumentReference" "relatesto" Reference ["relatesTo.target"];
    374 "DocumentReference" "event" Token ["context.event"];
    375 "DocumentReference" "facility" Token ["context.facilityType"];
    380 "Task" "identifier" Token ["identifier"];
    381 "Task" "patient" Reference ["for"];
    382 "Task" "status" Token ["status"];
    383 "Task" "focus" Reference ["focus"];
    384 "Task" "owner" Reference ["owner"];
    385 "Task" "requester" Reference ["requester"];
    386 "Task" "modified" Date ["lastModified"];
    387 "Task" "business-status" Token ["businessStatus"];
    388 "Task" "authored-on" Date ["authoredOn"];
    389 "Task" "code" Token ["code"];
    400 "Procedure" "identifier" Token ["identifier"];
    401 "Procedure" "patient" Reference ["subject"];
    402 "Procedure" "code" Token ["code"];
    403 "Procedure" "date" Date ["performed[x]"];
    404 "Procedure" "status" Token ["status"];
    405 "Procedure" "category" Token ["category"];
    406 "Procedure" "encounter" Reference ["encounter"];
    407 "Procedure" "performer" Reference ["performer.actor"];
    408 "Procedure" "based-on" Reference ["basedOn"];
    409 "Procedure" "part-of" Reference ["partOf"];
    410 "Procedure" "reason-reference" Reference ["reasonReference"];
    411 "Procedure" "location" Reference ["location"];
    412 "Procedure" "_content" Text [];
    420 "Endpoint" "identifier" Token ["identifier"];
    421 "Endpoint" "connection-type" Token ["connectionType"];
    422 "Endpoint" "organization" Reference ["managingOrganization"];
    423 "Endpoint" "status" Token ["status"];
    424 "Endpoint" "name" String ["name"];
}

/// Parameters that search exactly the rows of another parameter of the same resource (same
/// element, same type), so their rows are stored once: (resource, alias, parameter).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("Observation", "subject", "patient"),
    ("DiagnosticReport", "subject", "patient"),
    ("MedicationRequest", "subject", "patient"),
    ("MedicationAdministration", "subject", "patient"),
    ("Condition", "subject", "patient"),
    ("Encounter", "subject", "patient"),
    ("ImagingStudy", "subject", "patient"),
    ("Specimen", "subject", "patient"),
    ("ServiceRequest", "subject", "patient"),
    ("Coverage", "patient", "beneficiary"),
    ("Communication", "subject", "patient"),
    ("DocumentReference", "subject", "patient"),
    ("Procedure", "subject", "patient"),
];

/// The reference parameter that places a resource of each type in a patient's compartment
/// (the "patient" parameter of the FHIR Patient compartment definition, for the types stored).
pub const COMPARTMENT_PARAMS: &[(&str, &str)] = &[
    ("Observation", "patient"),
    ("DiagnosticReport", "patient"),
    ("MedicationRequest", "patient"),
    ("MedicationAdministration", "patient"),
    ("Condition", "patient"),
    ("AllergyIntolerance", "patient"),
    ("Encounter", "patient"),
    ("ImagingStudy", "patient"),
    ("Specimen", "patient"),
    ("ServiceRequest", "patient"),
    ("Coverage", "beneficiary"),
    ("NutritionOrder", "patient"),
    ("Consent", "patient"),
    ("Communication", "patient"),
    ("DocumentReference", "patient"),
    ("Task", "patient"),
    ("Procedure", "patient"),
];

/// The code of the parameter that places `resource_type` in a patient's compartment.
pub fn compartment_param(resource_type: &str) -> Option<&'static str> {
    COMPARTMENT_PARAMS
        .iter()
        .find(|(resource, _)| *resource == resource_type)
        .map(|(_, code)| *code)
}

/// The tag that names the patient whose record a Binary belongs to (`Patient/<id>`): a Binary
/// has no element that could, and its compartment must be recoverable from its content alone
/// (a reindex recomputes every compartment from content).
pub const BINARY_PATIENT_TAG: &str = "urn:tsunagi:compartment";

/// The logical id of the patient whose record `resource` belongs to: its own id for a Patient,
/// the patient its compartment tag names for a Binary, the first `Patient/…` target of the
/// type's compartment parameter otherwise.
pub fn compartment_patient(resource_type: &str, resource: &Value) -> Option<String> {
    if resource_type == "Patient" {
        return text_of(resource.get("id")).map(str::to_owned);
    }
    if resource_type == "Binary" {
        return resource["meta"]["tag"]
            .as_array()?
            .iter()
            .find(|tag| tag["system"] == BINARY_PATIENT_TAG)
            .and_then(|tag| text_of(tag.get("code")))
            .and_then(split_reference)
            .filter(|(kind, _)| *kind == "Patient")
            .map(|(_, id)| id.to_owned());
    }
    let definition = param(resource_type, compartment_param(resource_type)?)?;
    for path in definition.paths {
        let mut nodes = Vec::new();
        collect(resource, path, &mut nodes);
        for node in nodes {
            if let Some(("Patient", id)) = text_of(node.get("reference")).and_then(split_reference)
            {
                return Some(id.to_owned());
            }
        }
    }
    None
}

/// The parameters of one resource type.
pub fn params_for(resource_type: &str) -> impl Iterator<Item = &'static SearchParam> + '_ {
    type ByType = std::collections::HashMap<&'static str, Vec<&'static SearchParam>>;
    static BY_TYPE: std::sync::OnceLock<ByType> = std::sync::OnceLock::new();
    let by_type = BY_TYPE.get_or_init(|| {
        let mut map = ByType::new();
        for param in PARAMS {
            map.entry(param.resource).or_default().push(param);
        }
        map
    });
    by_type.get(resource_type).into_iter().flatten().copied()
}

/// Looks a parameter up by resource type and code (aliases resolve to the parameter whose
/// rows they share).
pub fn param(resource_type: &str, code: &str) -> Option<&'static SearchParam> {
    let code = ALIASES
        .iter()
        .find(|(resource, alias, _)| *resource == resource_type && *alias == code)
        .map(|(_, _, target)| *target)
        .unwrap_or(code);
    PARAMS
        .iter()
        .find(|param| param.resource == resource_type && param.code == code)
}

/// One extracted index value.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// A token; `system` is empty when the element has none.
    Token {
        /// Canonical (URL-form) system.
        system: String,
        /// Code or identifier value.
        code: String,
    },
    /// A normalised string.
    String(String),
    /// A half-open range in UTC seconds.
    Date {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// A reference target.
    Reference {
        /// Target resource type.
        target_type: String,
        /// Target logical id.
        target_id: String,
    },
    /// The words of a resource, normalised (see [`text`]); one per resource.
    Text {
        /// The narrative's text.
        narrative: String,
        /// Every other human-readable string.
        other: String,
    },
    /// A quantity.
    Quantity {
        /// The value.
        value: f64,
        /// Unit system (may be empty).
        system: String,
        /// Unit code, or the unit text when no code was sent.
        code: String,
    },
}

impl IndexValue {
    /// Drops U+0000 from the value's text: no search names it, and PostgreSQL's `text` cannot
    /// hold it, so both stores index the same value (the resource itself is kept as sent).
    fn drop_nul(&mut self) {
        fn strip(text: &mut String) {
            if text.contains('\0') {
                text.retain(|c| c != '\0');
            }
        }
        match self {
            Self::Token { system, code } | Self::Quantity { system, code, .. } => {
                strip(system);
                strip(code);
            }
            Self::String(value) => strip(value),
            Self::Reference {
                target_type,
                target_id,
            } => {
                strip(target_type);
                strip(target_id);
            }
            Self::Text { narrative, other } => {
                strip(narrative);
                strip(other);
            }
            Self::Date { .. } => {}
        }
    }
}

/// One index row: parameter id and value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// [`SearchParam::id`].
    pub param: u16,
    /// The value.
    pub value: IndexValue,
}

/// Extracts every index row of a resource. Duplicate rows are removed.
pub fn extract(resource_type: &str, resource: &Value) -> Vec<IndexEntry> {
    let mut entries = Vec::new();
    for param in params_for(resource_type) {
        entries.extend(
            extract_param(resource, param)
                .into_iter()
                .map(|value| IndexEntry {
                    param: param.id,
                    value,
                }),
        );
    }
    entries
}

/// The distinct index values of one parameter of `resource` (what [`extract`] writes for it),
/// without evaluating the others: `_include` needs only the references of one parameter.
pub fn extract_param(resource: &Value, param: &SearchParam) -> Vec<IndexValue> {
    let mut values = Vec::new();
    match (param.resource, param.code) {
        ("Patient", "jp-kana-sort") => kana_sort_values(resource, &mut values),
        ("MedicationRequest", "jp-medication-start") => {
            medication_start_values(resource, &mut values)
        }
        _ if param.kind == ParamType::Text => {
            if let Some((narrative, other)) = text::text_value(resource) {
                values.push(IndexValue::Text { narrative, other });
            }
        }
        _ => {
            for path in param.paths {
                let mut nodes = Vec::new();
                collect(resource, path, &mut nodes);
                for node in nodes {
                    convert(param.kind, node, &mut values);
                }
            }
        }
    }
    // Duplicates can only occur within one parameter (rows carry the parameter id).
    let mut kept: Vec<IndexValue> = Vec::with_capacity(values.len());
    for mut value in values {
        value.drop_nul();
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    kept
}

/// Collects the nodes at a dot path, flattening arrays at every step.
fn collect<'v>(node: &'v Value, path: &str, out: &mut Vec<&'v Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let Value::Object(map) = node else {
        if let Value::Array(items) = node {
            for item in items {
                collect(item, path, out);
            }
        }
        return;
    };
    let mut matched = Vec::new();
    if let Some(prefix) = head.strip_suffix("[x]") {
        for (key, value) in map {
            if key.len() > prefix.len()
                && key.starts_with(prefix)
                && key.as_bytes()[prefix.len()].is_ascii_uppercase()
            {
                matched.push(value);
            }
        }
    } else if let Some(value) = map.get(head) {
        matched.push(value);
    }
    for value in matched {
        match (value, rest) {
            (Value::Array(items), None) => out.extend(items.iter()),
            (Value::Array(items), Some(rest)) => {
                for item in items {
                    collect(item, rest, out);
                }
            }
            (value, None) => out.push(value),
            (value, Some(rest)) => collect(value, rest, out),
        }
    }
}

fn text_of(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

fn convert(kind: ParamType, node: &Value, out: &mut Vec<IndexValue>) {
    match kind {
        ParamType::Token => token_values(node, out),
        ParamType::String => string_values(node, out),
        ParamType::Date => {
            if let Some(range) = date_range(node) {
                out.push(IndexValue::Date {
                    start: range.0,
                    end: range.1,
                });
            }
        }
        ParamType::Reference => {
            if let Some((target_type, target_id)) =
                text_of(node.get("reference")).and_then(split_reference)
            {
                out.push(IndexValue::Reference {
                    target_type: target_type.to_owned(),
                    target_id: target_id.to_owned(),
                });
            }
        }
        // Text has no paths: `extract_param` computes it from the whole resource.
        ParamType::Text => {}
        ParamType::Quantity => {
            if let Some(value) = node.get("value").and_then(Value::as_f64) {
                let code = text_of(node.get("code")).or_else(|| text_of(node.get("unit")));
                out.push(IndexValue::Quantity {
                    value,
                    system: text_of(node.get("system"))
                        .map(canonical)
                        .unwrap_or("")
                        .to_owned(),
                    code: code.unwrap_or("").to_owned(),
                });
            }
        }
    }
}

fn token_values(node: &Value, out: &mut Vec<IndexValue>) {
    let push = |out: &mut Vec<IndexValue>, system: Option<&str>, code: &str| {
        out.push(IndexValue::Token {
            system: system.map(canonical).unwrap_or("").to_owned(),
            code: code.to_owned(),
        });
    };
    match node {
        Value::String(code) if !code.is_empty() => push(out, None, code),
        Value::Bool(flag) => push(out, None, if *flag { "true" } else { "false" }),
        Value::Object(map) => {
            if let Some(Value::Array(codings)) = map.get("coding") {
                for coding in codings {
                    token_values(coding, out);
                }
            } else if let Some(code) = text_of(map.get("code")) {
                push(out, text_of(map.get("system")), code);
            } else if let Some(value) = text_of(map.get("value")) {
                // Identifier or ContactPoint.
                push(out, text_of(map.get("system")), value);
            }
        }
        _ => {}
    }
}

fn string_values(node: &Value, out: &mut Vec<IndexValue>) {
    let mut push = |text: &str| {
        let key = search_key(text);
        if !key.is_empty() {
            out.push(IndexValue::String(key));
        }
    };
    match node {
        Value::String(text) => push(text),
        Value::Object(map) => {
            for key in [
                "text",
                "family",
                "given",
                "prefix",
                "suffix",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                match map.get(key) {
                    Some(Value::String(text)) => push(text),
                    Some(Value::Array(items)) => {
                        for item in items.iter().filter_map(Value::as_str) {
                            push(item);
                        }
                    }
                    _ => {}
                }
            }
            // "姓 名" and "姓名" should both match a name given as text.
            if let (Some(family), Some(Value::Array(given))) =
                (text_of(map.get("family")), map.get("given"))
            {
                let given: String = given.iter().filter_map(Value::as_str).collect();
                if !given.is_empty() {
                    push(&format!("{family}{given}"));
                }
            }
        }
        _ => {}
    }
}

fn date_range(node: &Value) -> Option<(i64, i64)> {
    match node {
        Value::String(text) => fhir_date_range(text),
        Value::Object(map) => {
            let start = text_of(map.get("start"))
                .and_then(fhir_date_range)
                .map(|r| r.0);
            let end = text_of(map.get("end"))
                .and_then(fhir_date_range)
                .map(|r| r.1);
            if start.is_none() && end.is_none() {
                return None;
            }
            Some((start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX)))
        }
        _ => None,
    }
}

/// Splits `Type/id` (or an absolute URL ending in `Type/id`, optionally `/_history/n`).
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let trimmed = match reference.find("/_history/") {
        Some(position) => &reference[..position],
        None => reference,
    };
    let mut parts = trimmed.rsplitn(3, '/');
    let id = parts.next()?;
    let resource_type = parts.next()?;
    if id.is_empty() || !resource_type.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    Some((resource_type, id))
}

fn kana_sort_values(resource: &Value, out: &mut Vec<IndexValue>) {
    let Some(Value::Array(names)) = resource.get("name") else {
        return;
    };
    for name in names {
        let is_syllabic =
            name.get("extension")
                .and_then(Value::as_array)
                .is_some_and(|extensions| {
                    extensions.iter().any(|extension| {
                        text_of(extension.get("url")) == Some(crate::systems::EN_REPRESENTATION)
                            && text_of(extension.get("valueCode")) == Some("SYL")
                    })
                });
        if is_syllabic && text_of(name.get("use")) == Some("usual") {
            string_values(name, out);
        }
    }
}

/// Whether any text of a token parameter's values (`CodeableConcept.text`, `Coding.display`)
/// contains `needle` after normalisation (`needle` is already normalised). Implements `:text`.
pub fn token_text_matches(resource: &Value, param: &SearchParam, needle: &str) -> bool {
    let mut found = false;
    for path in param.paths {
        let mut nodes = Vec::new();
        collect(resource, path, &mut nodes);
        for node in nodes {
            let mut texts: Vec<&str> = Vec::new();
            texts.extend(text_of(node.get("text")));
            texts.extend(text_of(node.get("display")));
            if let Some(Value::Array(codings)) = node.get("coding") {
                texts.extend(
                    codings
                        .iter()
                        .filter_map(|coding| text_of(coding.get("display"))),
                );
            }
            found |= texts.iter().any(|text| search_key(text).contains(needle));
        }
    }
    found
}

/// `dosageInstruction.extension(JP_MedicationDosage_PeriodOfUse).valuePeriod.start`.
pub const PERIOD_OF_USE: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_MedicationDosage_PeriodOfUse";

fn medication_start_values(resource: &Value, out: &mut Vec<IndexValue>) {
    let mut extensions = Vec::new();
    collect(resource, "dosageInstruction.extension", &mut extensions);
    for extension in extensions {
        if text_of(extension.get("url")) == Some(PERIOD_OF_USE)
            && let Some(range) = extension
                .get("valuePeriod")
                .and_then(|period| text_of(period.get("start")))
                .and_then(fhir_date_range)
        {
            out.push(IndexValue::Date {
                start: range.0,
                end: range.1,
            });
        }
    }
}

pub mod text;

#[cfg(test)]
mod tests;
