//! Structural validation of FHIR JSON against the R4B element table: every property an element
//! of its type, the right JSON shape (arrays exactly where an element repeats, objects for
//! data types, the JSON type of each primitive and its lexical form), no `null`, `""`, `{}` or
//! `[]`, mandatory elements present, one type of a choice, `_name` twins only on primitives,
//! and narrative XHTML that is well-formed with one `div` root.
//!
//! What passes is what [`crate::to_xml`] can write: the server checks every resource others
//! post before storing it, so stored content can never make a read fail. Profiles (JP Core)
//! are checked on top of this by `tsunagi_fhir::validate`.

use serde_json::{Map, Value};

use crate::{
    XmlError,
    model::{Element, Holds, Model, TypeDef},
    primitive,
};

/// Problems reported at most; the check stops looking after that many.
pub const MAX_PROBLEMS: usize = 20;

/// One thing wrong with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a path of JSON properties with indexes: `Communication.payload[0].contentString`.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// Which kind of problem.
    pub kind: ProblemKind,
}

/// What kind of problem (OperationOutcome issue codes `structure`, `required`, `value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// An element the type does not define, or the wrong JSON shape.
    Structure,
    /// A mandatory element is missing.
    Required,
    /// A primitive's JSON type, lexical form or characters.
    Value,
}

/// Checks a resource (FHIR JSON with `resourceType`); an empty list means it is structurally
/// valid R4B.
pub fn check(resource: &Value) -> Result<Vec<Problem>, XmlError> {
    let mut checker = Checker {
        model: Model::get()?,
        problems: Vec::new(),
    };
    let name = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("(resource)");
    checker.resource(resource, name);
    Ok(checker.problems)
}

struct Checker {
    model: &'static Model,
    problems: Vec<Problem>,
}

fn at(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn indexed(path: &str, index: usize, many: bool) -> String {
    if many {
        format!("{path}[{index}]")
    } else {
        path.to_owned()
    }
}

/// `null`, `""`, `{}` or `[]`, which FHIR JSON never holds.
fn empty_kind(value: &Value) -> Option<&'static str> {
    match value {
        Value::Null => Some("null is not allowed in FHIR JSON"),
        Value::String(text) if text.is_empty() => Some("an empty string is not allowed"),
        Value::Object(map) if map.is_empty() => Some("an empty object is not allowed"),
        Value::Array(list) if list.is_empty() => Some("an empty array is not allowed"),
        _ => None,
    }
}

impl Checker {
    fn full(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }

    fn problem(&mut self, location: String, message: impl Into<String>) {
        self.report(ProblemKind::Structure, location, message);
    }

    fn report(&mut self, kind: ProblemKind, location: String, message: impl Into<String>) {
        if !self.full() {
            self.problems.push(Problem {
                location,
                message: message.into(),
                kind,
            });
        }
    }

    fn resource(&mut self, value: &Value, path: &str) {
        let Some(object) = value.as_object() else {
            return self.problem(path.to_owned(), "a resource must be a JSON object");
        };
        let type_name = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.model.resource(type_name) {
            Some(def) => self.complex(def, object, path),
            None if type_name.is_empty() => {
                self.problem(path.to_owned(), "a resource needs a resourceType")
            }
            None => self.problem(
                at(path, "resourceType"),
                format!("{type_name:?} is not an R4B resource type"),
            ),
        }
    }

    /// A resource, data type or backbone element of type `def`.
    fn complex(&mut self, def: &TypeDef, object: &Map<String, Value>, path: &str) {
        if object.is_empty() {
            return self.problem(path.to_owned(), "an empty object is not allowed");
        }
        let mut choices: Vec<(&'static str, &str)> = Vec::new();
        for key in object.keys() {
            if def.is_resource && key == "resourceType" {
                continue;
            }
            let name = key.strip_prefix('_').unwrap_or(key);
            match def.element(name) {
                None => self.problem(
                    at(path, key),
                    format!("{} has no element {key:?}", def.name),
                ),
                Some(e) if key.starts_with('_') && !matches!(e.holds, Holds::Primitive(_)) => {
                    self.problem(at(path, key), "only primitives have a `_` property")
                }
                Some(e) => {
                    // A `_name` twin counts as its element: `valueString` with `_valueBoolean`
                    // is two types of one choice.
                    if let Some(base) = e.choice {
                        match choices.iter().find(|(b, _)| *b == base) {
                            Some((_, first)) if *first != name => self.problem(
                                at(path, key),
                                format!("{base}[x] has two types: {first} and {name}"),
                            ),
                            Some(_) => {}
                            None => choices.push((base, name)),
                        }
                    }
                }
            }
        }
        let mut required_choices: Vec<&'static str> = Vec::new();
        for e in &def.elements {
            let value = object.get(&e.name);
            let extra = object.get(&e.underscore);
            if e.required && value.is_none() && extra.is_none() {
                match e.choice {
                    Some(base) => {
                        let present = def.elements.iter().any(|other| {
                            other.choice == Some(base)
                                && (object.contains_key(&other.name)
                                    || object.contains_key(&other.underscore))
                        });
                        if !present && !required_choices.contains(&base) {
                            required_choices.push(base);
                            self.report(
                                ProblemKind::Required,
                                at(path, &format!("{base}[x]")),
                                format!("{}.{base}[x] is required", def.name),
                            );
                        }
                    }
                    None => self.report(
                        ProblemKind::Required,
                        at(path, &e.name),
                        format!("{}.{} is required", def.name, e.name),
                    ),
                }
            }
            if value.is_none() && extra.is_none() {
                continue;
            }
            if self.full() {
                return;
            }
            let here = at(path, &e.name);
            match e.holds {
                Holds::Primitive(_) => self.primitives(e, value, extra, &here),
                Holds::Xhtml => match value.and_then(Value::as_str) {
                    Some(div) => {
                        if let Some(reason) = crate::narrative::problem(div) {
                            self.report(ProblemKind::Value, here, reason);
                        }
                    }
                    None => self.problem(here, "the narrative must be XHTML in a JSON string"),
                },
                Holds::Resource => {
                    for (index, item) in self.items(e, value, &here) {
                        self.resource(item, &indexed(&here, index, e.many));
                    }
                }
                Holds::Complex => {
                    let Some(child) = self.model.type_def(e.type_name) else {
                        self.problem(here, format!("type {} is not in the table", e.type_name));
                        continue;
                    };
                    for (index, item) in self.items(e, value, &here) {
                        let location = indexed(&here, index, e.many);
                        match item.as_object() {
                            Some(object) => self.complex(child, object, &location),
                            None => self.problem(
                                location,
                                format!("must be a JSON object ({})", e.type_name),
                            ),
                        }
                    }
                }
            }
        }
    }

    /// The repetitions of a complex or resource element: an array exactly when it repeats,
    /// none of them empty.
    fn items<'v>(
        &mut self,
        e: &Element,
        value: Option<&'v Value>,
        path: &str,
    ) -> Vec<(usize, &'v Value)> {
        let Some(value) = value else {
            return Vec::new();
        };
        if let Some(reason) = empty_kind(value) {
            self.problem(path.to_owned(), reason);
            return Vec::new();
        }
        match (e.many, value) {
            (true, Value::Array(list)) => {
                let mut items = Vec::with_capacity(list.len());
                for (index, item) in list.iter().enumerate() {
                    match empty_kind(item) {
                        Some(reason) => self.problem(format!("{path}[{index}]"), reason),
                        None => items.push((index, item)),
                    }
                }
                items
            }
            (true, _) => {
                self.problem(path.to_owned(), "repeats, so it must be a JSON array");
                Vec::new()
            }
            (false, Value::Array(_)) => {
                self.problem(
                    path.to_owned(),
                    "does not repeat, so it must not be an array",
                );
                Vec::new()
            }
            (false, value) => vec![(0, value)],
        }
    }

    /// A primitive element: its values and their `_name` twins (id and extensions), parallel
    /// arrays with `null` where one side has nothing when it repeats.
    fn primitives(
        &mut self,
        e: &Element,
        value: Option<&Value>,
        extra: Option<&Value>,
        path: &str,
    ) {
        let twin = format!(
            "{}._{}",
            path.rsplit_once('.').map_or(path, |(p, _)| p),
            e.name
        );
        if !e.many {
            if let Some(value) = value {
                match value {
                    value if empty_kind(value).is_some() => {
                        let reason = empty_kind(value).unwrap_or_default();
                        self.problem(path.to_owned(), reason)
                    }
                    Value::Array(_) => self.problem(
                        path.to_owned(),
                        "does not repeat, so it must not be an array",
                    ),
                    value => {
                        if let Some(reason) = primitive::problem(e.type_name, value) {
                            self.report(ProblemKind::Value, path.to_owned(), reason);
                        }
                    }
                }
            }
            if let Some(extra) = extra {
                self.element_extra(extra, &twin);
            }
            return;
        }
        let list = |checker: &mut Self, side: Option<&Value>, location: &str| match side {
            None => Some(Vec::new()),
            Some(Value::Array(list)) if !list.is_empty() => Some(list.clone()),
            Some(Value::Array(_)) => {
                checker.problem(location.to_owned(), "an empty array is not allowed");
                None
            }
            Some(_) => {
                checker.problem(location.to_owned(), "repeats, so it must be a JSON array");
                None
            }
        };
        let (Some(values), Some(extras)) = (list(self, value, path), list(self, extra, &twin))
        else {
            return;
        };
        if !values.is_empty() && !extras.is_empty() && values.len() != extras.len() {
            return self.problem(
                twin,
                format!("{} and its `_` twin differ in length", e.name),
            );
        }
        for index in 0..values.len().max(extras.len()) {
            let value = values.get(index).filter(|v| !v.is_null());
            let extra = extras.get(index).filter(|v| !v.is_null());
            match (value, extra) {
                (None, None) => self.problem(
                    format!("{path}[{index}]"),
                    "a repetition with neither a value nor an extension",
                ),
                (value, extra) => {
                    if let Some(value) = value {
                        if let Some(reason) = empty_kind(value) {
                            self.problem(format!("{path}[{index}]"), reason);
                        } else if let Some(reason) = primitive::problem(e.type_name, value) {
                            self.report(ProblemKind::Value, format!("{path}[{index}]"), reason);
                        }
                    }
                    if let Some(extra) = extra {
                        self.element_extra(extra, &format!("{twin}[{index}]"));
                    }
                }
            }
        }
    }

    /// A primitive's `_name` object: `id` and `extension` only.
    fn element_extra(&mut self, extra: &Value, path: &str) {
        let Some(object) = extra.as_object().filter(|object| !object.is_empty()) else {
            return self.problem(
                path.to_owned(),
                "must be a JSON object with id or extension",
            );
        };
        for (key, value) in object {
            match key.as_str() {
                "id" => {
                    if let Some(reason) = primitive::problem("string", value) {
                        self.report(ProblemKind::Value, at(path, key), reason);
                    }
                }
                "extension" => {
                    let Some(extension) = self.model.type_def("Extension") else {
                        return self.problem(path.to_owned(), "Extension is not in the table");
                    };
                    match value {
                        Value::Array(list) if !list.is_empty() => {
                            for (index, item) in list.iter().enumerate() {
                                let location = format!("{path}.extension[{index}]");
                                match item.as_object() {
                                    Some(object) => self.complex(extension, object, &location),
                                    None => self.problem(location, "must be a JSON object"),
                                }
                            }
                        }
                        _ => self.problem(
                            at(path, key),
                            "must be a non-empty JSON array of extensions",
                        ),
                    }
                }
                other => self.problem(
                    at(path, other),
                    format!("a primitive's `_` property has no element {other:?}"),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use serde_json::json;

    use super::*;

    fn problems(resource: Value) -> Vec<Problem> {
        check(&resource).unwrap()
    }

    fn one(resource: Value, location: &str, says: &str) {
        let found = problems(resource);
        assert!(
            found
                .iter()
                .any(|p| p.location == location && p.message.contains(says)),
            "expected {location}: {says}, got {found:?}"
        );
    }

    fn note() -> Value {
        json!({
            "resourceType": "Communication", "id": "n1", "status": "completed",
            "identifier": [{"system": "urn:clinic:notes", "value": "1"}],
            "subject": {"reference": "Patient/p1"},
            "payload": [{"contentString": "経過良好"}],
            "text": {"status": "generated",
                     "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a &amp; b</p></div>"},
            "_status": {"extension": [{"url": "http://example/x", "valueBoolean": true}]}
        })
    }

    #[test]
    fn a_valid_note_passes_and_can_be_written_as_xml() {
        assert_eq!(problems(note()), vec![]);
        assert!(crate::to_xml(&note(), false).is_ok());
    }

    #[test]
    fn unknown_elements_are_named_where_they_are() {
        let mut probe = note();
        probe["probeUnknown"] = json!([[1, 2], {"a": null}]);
        one(probe, "Communication.probeUnknown", "no element");
        let mut nested = note();
        nested["payload"][0]["contentStrin"] = json!("x");
        one(
            nested,
            "Communication.payload[0].contentStrin",
            "no element",
        );
    }

    #[test]
    fn json_shapes_and_empty_values_are_refused() {
        let mut shape = note();
        shape["subject"] = json!([{"reference": "Patient/p1"}]);
        one(shape, "Communication.subject", "must not be an array");
        let mut single = note();
        single["identifier"] = json!({"value": "1"});
        one(single, "Communication.identifier", "must be a JSON array");
        for (value, says) in [
            (json!(null), "null"),
            (json!(""), "empty string"),
            (json!({}), "empty object"),
            (json!([]), "empty array"),
        ] {
            let mut empty = note();
            empty["payload"][0]["contentString"] = value.clone();
            one(empty, "Communication.payload[0].contentString", says);
            let mut element = note();
            element["identifier"] = json!([value]);
            assert!(!problems(element).is_empty());
        }
        let mut number = note();
        number["status"] = json!(1);
        one(number, "Communication.status", "JSON string");
        let mut control = note();
        control["payload"][0]["contentString"] = json!("a\u{7}b");
        one(control, "Communication.payload[0].contentString", "U+0007");
    }

    #[test]
    fn required_elements_and_choices() {
        let mut missing = note();
        missing.as_object_mut().unwrap().remove("status");
        missing.as_object_mut().unwrap().remove("_status");
        one(missing, "Communication.status", "required");
        let mut no_content = note();
        no_content["payload"][0] = json!({"extension": [{"url": "http://x", "valueString": "y"}]});
        one(
            no_content,
            "Communication.payload[0].content[x]",
            "required",
        );
        let mut two = note();
        two["payload"][0]["contentReference"] = json!({"reference": "Binary/b"});
        one(two, "Communication.payload[0].contentString", "two types");
        let mut twin = note();
        twin["payload"][0] =
            json!({"contentReference": {"reference": "Binary/b"}, "_contentString": {"id": "x"}});
        assert!(
            problems(twin)
                .iter()
                .any(|p| p.message.contains("two types")),
            "a twin of another type is a second type"
        );
        // A primitive's extension alone satisfies a mandatory element.
        let mut extension_only = note();
        extension_only.as_object_mut().unwrap().remove("status");
        assert!(
            !problems(extension_only.clone())
                .iter()
                .any(|p| p.message.contains("status is required"))
        );
    }

    #[test]
    fn twins_and_repeated_primitives() {
        let mut twin = note();
        twin["_subject"] = json!({"id": "x"});
        one(twin, "Communication._subject", "only primitives");
        let mut bad_twin = note();
        bad_twin["_status"] = json!({"colour": "red"});
        one(bad_twin, "Communication._status.colour", "no element");
        let mut lists = note();
        lists["instantiatesUri"] = json!(["http://a", null]);
        lists["_instantiatesUri"] = json!([null, {"id": "u2"}]);
        assert_eq!(problems(lists.clone()), vec![]);
        assert!(crate::to_xml(&lists, false).is_ok());
        lists["_instantiatesUri"] = json!([null, null]);
        one(lists, "Communication.instantiatesUri[1]", "neither");
    }

    #[test]
    fn contained_resources_and_bundles_are_checked_inside() {
        let mut contained = note();
        contained["contained"] = json!([{"resourceType": "Patient", "id": "c", "gender": 1}]);
        one(
            contained,
            "Communication.contained[0].gender",
            "JSON string",
        );
        let bundle = json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Nothing"}}]});
        one(
            bundle,
            "Bundle.entry[0].resource.resourceType",
            "not an R4B resource type",
        );
    }

    #[test]
    fn the_problem_list_is_bounded() {
        let mut many = note();
        for i in 0..100 {
            many[format!("unknown{i}")] = json!(1);
        }
        assert_eq!(problems(many).len(), MAX_PROBLEMS);
    }
}
