//! Checks a resource against a StructureDefinition snapshot (a JP Core profile): what the server
//! applies to resources posted by others, and what the tests apply to everything Tsunagi writes.
//!
//! A [`Profile`] is compiled once from a snapshot; [`Profile::check`] walks the resource along
//! the snapshot's element tree and reports, as [`Finding`]s:
//!
//! - the resource type the profile constrains;
//! - minimum and maximum cardinality of every element whose parent is present;
//! - the JSON form: repeating elements are arrays, single ones are not; no `null`, no empty
//!   string, object or array;
//! - primitive types (`boolean`, `integer`…, strings) and the lexical forms of `date`,
//!   `dateTime`, `instant`, `time`, `id` and `code`;
//! - elements the snapshot does not define, wherever the snapshot lists the children of a node
//!   (the resource itself, backbone elements, and data types the profile unrolled);
//! - `fixed[x]` and `pattern[x]` values;
//! - required slices discriminated by a fixed `system` (OID and URL forms are equivalent, as
//!   JP Core 1.2 says, see [`crate::systems::canonical`]), by a pattern, or by type
//!   (`medication[x]:medicationCodeableConcept`), and their maximum.
//!
//! Not checked: terminology bindings (the value sets are not in the package), invariants
//! (FHIRPath), the insides of data types the snapshot does not unroll, extensions' contents, and
//! contained resources. Pure: the caller reads the package.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::systems::canonical;

/// Why a StructureDefinition cannot be used as a profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// Not a StructureDefinition, or one without `url`, `type` or a snapshot.
    #[error("not a usable StructureDefinition: {0}")]
    Unusable(String),
}

/// One thing wrong with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where, as a FHIRPath-like location (`Observation.code.coding[0].system`).
    pub location: String,
    /// What.
    pub message: String,
    /// Which kind of problem.
    pub kind: FindingKind,
}

/// What kind of problem a finding is; [`FindingKind::issue_code`] names it for an
/// OperationOutcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A missing element or slice.
    Required,
    /// An element where none may be, too many, or the wrong JSON shape.
    Structure,
    /// A value of the wrong type, form or content.
    Value,
}

impl FindingKind {
    /// The OperationOutcome `issue.code`.
    pub fn issue_code(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Structure => "structure",
            Self::Value => "value",
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// How a slice recognises its members.
#[derive(Debug, Clone)]
enum SliceRule {
    /// `identifier:rpNumber` — a fixed `system`.
    System(String),
    /// `category:laboratory` — a pattern the member contains.
    Pattern(Value),
    /// `medication[x]:medicationCodeableConcept` — a choice of type.
    Type(String),
}

#[derive(Debug, Clone)]
struct Slice {
    id: String,
    min: usize,
    max: Option<usize>,
    rule: SliceRule,
}

#[derive(Debug, Clone)]
struct Element {
    /// Last path segment (`value[x]`, `code`).
    name: String,
    min: usize,
    /// `None` is `*`.
    max: Option<usize>,
    /// Whether the base element repeats (its JSON form is an array).
    repeats: bool,
    /// Type codes (`CodeableConcept`, `dateTime`, `http://hl7.org/fhirpath/System.String`).
    types: Vec<String>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    slices: Vec<Slice>,
}

impl Element {
    fn is_choice(&self) -> bool {
        self.name.ends_with("[x]")
    }
}

/// A slice while the snapshot is read: element path, slice id, min, max, and the rule found so
/// far (a fixed `system` is read from a later element).
type PendingSlice = (String, String, usize, Option<usize>, Option<SliceRule>);

/// A JSON key of a node, its value and, for a choice element, the type the key names.
type KeyedValue<'v> = (&'v String, &'v Value, Option<String>);

/// A compiled StructureDefinition snapshot.
#[derive(Debug, Clone)]
pub struct Profile {
    url: String,
    resource_type: String,
    /// Element by path (slices folded into their element).
    elements: HashMap<String, Element>,
    /// Child paths by parent path, in snapshot order.
    children: HashMap<String, Vec<String>>,
}

fn cardinality_max(value: Option<&Value>) -> Option<usize> {
    match value.and_then(Value::as_str) {
        None | Some("*") => None,
        Some(number) => number.parse().ok(),
    }
}

/// The first `fixed…` or `pattern…` value of an element definition.
fn prefixed<'v>(element: &'v Map<String, Value>, prefix: &str) -> Option<&'v Value> {
    element
        .iter()
        .find(|(key, _)| {
            key.len() > prefix.len()
                && key.starts_with(prefix)
                && key.as_bytes()[prefix.len()].is_ascii_uppercase()
        })
        .map(|(_, value)| value)
}

impl Profile {
    /// Compiles a StructureDefinition with a snapshot.
    pub fn from_structure_definition(definition: &Value) -> Result<Self, ProfileError> {
        let unusable = |what: &str| ProfileError::Unusable(what.to_owned());
        if definition["resourceType"] != "StructureDefinition" {
            return Err(unusable("resourceType is not StructureDefinition"));
        }
        let url = definition["url"]
            .as_str()
            .ok_or_else(|| unusable("no url"))?
            .to_owned();
        let resource_type = definition["type"]
            .as_str()
            .ok_or_else(|| unusable(&format!("{url}: no type")))?
            .to_owned();
        let snapshot = definition["snapshot"]["element"]
            .as_array()
            .ok_or_else(|| unusable(&format!("{url}: no snapshot")))?;
        let mut elements: HashMap<String, Element> = HashMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        let mut pending_slices: Vec<PendingSlice> = Vec::new();
        let mut fixed_systems: HashMap<String, String> = HashMap::new();
        for element in snapshot {
            let Some(map) = element.as_object() else {
                continue;
            };
            let id = map.get("id").and_then(Value::as_str).unwrap_or_default();
            let Some(path) = map.get("path").and_then(Value::as_str) else {
                continue;
            };
            let min = map.get("min").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = cardinality_max(map.get("max"));
            if let Some((before, slice)) = id.rsplit_once(':') {
                // `X.identifier:rpNumber.system` fixes the system of slice rpNumber.
                if let Some((slice_name, rest)) = slice.split_once('.') {
                    if rest == "system"
                        && let Some(uri) = map.get("fixedUri").and_then(Value::as_str)
                    {
                        fixed_systems.insert(format!("{before}:{slice_name}"), uri.to_owned());
                    }
                    continue;
                }
                if before.contains(':') {
                    continue;
                }
                let rule = prefixed(map, "pattern")
                    .or_else(|| prefixed(map, "fixed"))
                    .map(|pattern| SliceRule::Pattern(pattern.clone()));
                let type_slice = path
                    .ends_with("[x]")
                    .then(|| SliceRule::Type(slice.to_owned()));
                pending_slices.push((
                    path.to_owned(),
                    id.to_owned(),
                    min,
                    max,
                    rule.or(type_slice),
                ));
                continue;
            }
            let Some((parent, name)) = path.rsplit_once('.') else {
                continue;
            };
            let base_max = cardinality_max(map.get("base").and_then(|base| base.get("max")));
            let repeats = match map.get("base").and_then(|base| base.get("max")) {
                Some(_) => base_max.is_none_or(|max| max > 1),
                None => max.is_none_or(|max| max > 1),
            };
            let types = map
                .get("type")
                .and_then(Value::as_array)
                .map(|types| {
                    types
                        .iter()
                        .filter_map(|t| t["code"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if !elements.contains_key(path) {
                children
                    .entry(parent.to_owned())
                    .or_default()
                    .push(path.to_owned());
            }
            elements.insert(
                path.to_owned(),
                Element {
                    name: name.to_owned(),
                    min,
                    max,
                    repeats,
                    types,
                    fixed: prefixed(map, "fixed").cloned(),
                    pattern: prefixed(map, "pattern").cloned(),
                    slices: Vec::new(),
                },
            );
        }
        for (path, id, min, max, rule) in pending_slices {
            let rule = fixed_systems
                .get(&id)
                .map(|system| SliceRule::System(system.clone()))
                .or(rule);
            // A slice with no rule of ours (discriminated some other way) is not checked.
            let Some(rule) = rule else {
                continue;
            };
            if let Some(element) = elements.get_mut(&path) {
                element.slices.push(Slice { id, min, max, rule });
            }
        }
        Ok(Self {
            url,
            resource_type,
            elements,
            children,
        })
    }

    /// The canonical URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The resource type it constrains.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// Everything wrong with `resource` under this profile; empty when it conforms.
    pub fn check(&self, resource: &Value) -> Vec<Finding> {
        let mut findings = Vec::new();
        let actual = resource["resourceType"].as_str().unwrap_or("");
        if actual != self.resource_type {
            findings.push(Finding {
                kind: FindingKind::Structure,
                location: actual.to_owned(),
                message: format!(
                    "the profile {} is for {}, not {actual:?}",
                    self.url, self.resource_type
                ),
            });
            return findings;
        }
        if let Value::Object(map) = resource {
            self.check_node(map, &self.resource_type, &self.resource_type, &mut findings);
        }
        findings
    }

    /// Which child element (its path) a JSON key of a node at `path` is, and for a choice the type
    /// the key names.
    fn element_for_key(&self, path: &str, key: &str) -> Option<(&str, Option<String>)> {
        let children = self.children.get(path)?;
        for child in children {
            let element = self.elements.get(child)?;
            if element.name == key && !element.is_choice() {
                return Some((child, None));
            }
            if let Some(prefix) = element.name.strip_suffix("[x]")
                && let Some(suffix) = key.strip_prefix(prefix)
                && let Some(type_code) = choice_type(&element.types, suffix)
            {
                return Some((child, Some(type_code)));
            }
        }
        None
    }

    fn check_node(
        &self,
        node: &Map<String, Value>,
        path: &str,
        location: &str,
        findings: &mut Vec<Finding>,
    ) {
        let Some(children) = self.children.get(path) else {
            // A data type the snapshot does not unroll: nothing known about its insides.
            return;
        };
        let mut at = |kind: FindingKind, location: String, message: String| {
            findings.push(Finding {
                location,
                message,
                kind,
            })
        };
        // Each key resolved once: to the child element it is, or reported as unknown.
        let mut by_child: HashMap<&str, Vec<KeyedValue<'_>>> = HashMap::new();
        for (key, value) in node {
            if path == self.resource_type && key == "resourceType" {
                continue;
            }
            if let Some(name) = key.strip_prefix('_') {
                // A primitive's id and extensions (`_status`).
                if self.element_for_key(path, name).is_none() {
                    at(
                        FindingKind::Structure,
                        format!("{location}.{key}"),
                        format!("{name} is not an element of {path} in {}", self.url),
                    );
                }
                continue;
            }
            match self.element_for_key(path, key) {
                Some((child, type_code)) => {
                    by_child
                        .entry(child)
                        .or_default()
                        .push((key, value, type_code));
                }
                None => at(
                    FindingKind::Structure,
                    format!("{location}.{key}"),
                    format!("{key} is not an element of {path} in {}", self.url),
                ),
            }
        }
        let mut nested = Vec::new();
        for child in children {
            let Some(element) = self.elements.get(child) else {
                continue;
            };
            let present = by_child.remove(child.as_str()).unwrap_or_default();
            if element.is_choice() && present.len() > 1 {
                at(
                    FindingKind::Structure,
                    format!("{location}.{}", element.name),
                    "only one type of a choice element may be present".to_owned(),
                );
            }
            let mut count = 0;
            let mut items_of_element = Vec::new();
            for (key, value, type_code) in present {
                let here = format!("{location}.{key}");
                let items: Vec<(String, &Value)> = match value {
                    Value::Array(items) => {
                        if !element.repeats {
                            at(
                                FindingKind::Structure,
                                here.clone(),
                                "a single element, not an array".to_owned(),
                            );
                        }
                        if items.is_empty() {
                            at(
                                FindingKind::Structure,
                                here.clone(),
                                "an empty array is not allowed".to_owned(),
                            );
                        }
                        items
                            .iter()
                            .enumerate()
                            .map(|(index, item)| (format!("{here}[{index}]"), item))
                            .collect()
                    }
                    other => {
                        if element.repeats {
                            at(
                                FindingKind::Structure,
                                here.clone(),
                                "a repeating element must be an array".to_owned(),
                            );
                        }
                        vec![(here.clone(), other)]
                    }
                };
                count += items.len();
                for (item_location, item) in items {
                    let type_code = type_code
                        .clone()
                        .or_else(|| (element.types.len() == 1).then(|| element.types[0].clone()));
                    if let Some(problem) = form_problem(type_code.as_deref(), item) {
                        at(FindingKind::Value, item_location.clone(), problem);
                        continue;
                    }
                    if let Some(fixed) = &element.fixed
                        && item != fixed
                    {
                        at(
                            FindingKind::Value,
                            item_location.clone(),
                            format!("must be exactly {fixed}"),
                        );
                    }
                    if let Some(pattern) = &element.pattern
                        && !contains_pattern(item, pattern)
                    {
                        at(
                            FindingKind::Value,
                            item_location.clone(),
                            format!("must contain {pattern}"),
                        );
                    }
                    items_of_element.push((key.clone(), item));
                    if let Value::Object(map) = item {
                        let recurse = match type_code.as_deref() {
                            Some("Extension") => {
                                if map.get("url").and_then(Value::as_str).is_none() {
                                    at(
                                        FindingKind::Value,
                                        item_location.clone(),
                                        "an extension needs a url".to_owned(),
                                    );
                                }
                                false
                            }
                            Some("Resource") => false,
                            _ => true,
                        };
                        if recurse {
                            nested.push((map, child.clone(), item_location));
                        }
                    }
                }
            }
            let full = format!("{location}.{}", element.name);
            if count < element.min {
                at(
                    FindingKind::Required,
                    full.clone(),
                    format!(
                        "minimum cardinality {} not met ({count} present)",
                        element.min
                    ),
                );
            }
            if let Some(max) = element.max
                && count > max
            {
                at(
                    FindingKind::Structure,
                    full.clone(),
                    format!("maximum cardinality {max} exceeded ({count} present)"),
                );
            }
            {
                for slice in &element.slices {
                    let matching = items_of_element
                        .iter()
                        .filter(|(key, item)| slice_matches(&slice.rule, &element.name, key, item))
                        .count();
                    if matching < slice.min {
                        at(
                            FindingKind::Required,
                            full.clone(),
                            format!(
                                "required slice {} missing ({matching} < {})",
                                slice.id, slice.min
                            ),
                        );
                    }
                    if let Some(max) = slice.max
                        && matching > max
                    {
                        at(
                            FindingKind::Structure,
                            full.clone(),
                            format!("slice {}: at most {max} ({matching} present)", slice.id),
                        );
                    }
                }
            }
        }
        for (map, child, item_location) in nested {
            self.check_node(map, &child, &item_location, findings);
        }
    }
}

/// The type a choice key's suffix names (`Quantity`, `DateTime` → `dateTime`), if allowed.
fn choice_type(types: &[String], suffix: &str) -> Option<String> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    types
        .iter()
        .find(|code| {
            let mut code_chars = code.chars();
            code_chars
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(&first))
                && code_chars.as_str() == chars.as_str()
        })
        .cloned()
}

fn slice_matches(rule: &SliceRule, element_name: &str, key: &str, item: &Value) -> bool {
    match rule {
        SliceRule::System(system) => item["system"]
            .as_str()
            .is_some_and(|actual| canonical(actual) == canonical(system)),
        SliceRule::Pattern(pattern) => contains_pattern(item, pattern),
        SliceRule::Type(slice_name) => {
            // `medication[x]:medicationCodeableConcept` matches key `medicationCodeableConcept`.
            element_name.strip_suffix("[x]").is_some() && key == slice_name
        }
    }
}

/// Whether `value` contains everything in `pattern` (arrays: each pattern item matched by some
/// item); systems compare through [`canonical`].
pub fn contains_pattern(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(map), Value::Object(pattern_map)) => {
            pattern_map.iter().all(|(key, expected)| {
                map.get(key).is_some_and(|actual| {
                    if key == "system" {
                        matches!((actual, expected), (Value::String(a), Value::String(b))
                            if canonical(a) == canonical(b))
                    } else {
                        contains_pattern(actual, expected)
                    }
                })
            })
        }
        (Value::Array(items), Value::Array(patterns)) => patterns
            .iter()
            .all(|p| items.iter().any(|item| contains_pattern(item, p))),
        (actual, expected) => actual == expected,
    }
}

/// What is wrong with the JSON form of one value of type `type_code`, if anything.
fn form_problem(type_code: Option<&str>, value: &Value) -> Option<String> {
    let code = type_code.unwrap_or("");
    let code = code
        .strip_prefix("http://hl7.org/fhirpath/System.")
        .map(|system| match system {
            "Boolean" => "boolean",
            "Integer" => "integer",
            "Decimal" => "decimal",
            _ => "string",
        })
        .unwrap_or(code);
    match value {
        Value::Null => return Some("null is not allowed in FHIR JSON".to_owned()),
        Value::String(text) if text.is_empty() => {
            return Some("an empty string is not allowed".to_owned());
        }
        Value::Object(map) if map.is_empty() => {
            return Some("an empty object is not allowed".to_owned());
        }
        _ => {}
    }
    match code {
        "" => None,
        code if tsunagi_fhir_xml::primitive::is_primitive(code) => {
            tsunagi_fhir_xml::primitive::problem(code, value)
        }
        _ => (!value.is_object()).then(|| format!("must be a JSON object ({code})")),
    }
}

/// Profiles by canonical URL.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_url: HashMap<String, Profile>,
}

impl Profiles {
    /// No profiles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a StructureDefinition if it constrains a resource (data-type and extension
    /// definitions are skipped); returns whether it was added.
    pub fn add(&mut self, definition: &Value) -> Result<bool, ProfileError> {
        if definition["kind"] != "resource" {
            return Ok(false);
        }
        let profile = Profile::from_structure_definition(definition)?;
        self.by_url.insert(profile.url.clone(), profile);
        Ok(true)
    }

    /// The profile with this canonical URL (a `|version` suffix is ignored).
    pub fn get(&self, url: &str) -> Option<&Profile> {
        let url = url.split_once('|').map_or(url, |(url, _)| url);
        self.by_url.get(url)
    }

    /// How many profiles are loaded.
    pub fn len(&self) -> usize {
        self.by_url.len()
    }

    /// Whether none are loaded.
    pub fn is_empty(&self) -> bool {
        self.by_url.is_empty()
    }
}

#[cfg(test)]
mod tests;
