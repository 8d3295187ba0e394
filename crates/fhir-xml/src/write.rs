//! JSON → FHIR XML: walks a resource's JSON in the element order of its type definition and
//! writes it with quick-xml.

use std::borrow::Cow;

use quick_xml::Writer;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::name::QName;
use serde_json::{Map, Value};

use crate::model::{Holds, JsonKind, Model, TypeDef};
use crate::{FHIR_NS, XmlError, xml_char};

/// Writes `resource` (FHIR JSON with `resourceType`) as a FHIR XML document, indented when
/// `pretty`.
pub fn to_xml(resource: &Value, pretty: bool) -> Result<Vec<u8>, XmlError> {
    let model = Model::get()?;
    let out = Vec::with_capacity(4096);
    let mut writer = if pretty {
        Writer::new_with_indent(out, b' ', 2)
    } else {
        Writer::new(out)
    };
    let object = resource
        .as_object()
        .ok_or_else(|| XmlError::UnknownResourceType(String::from("(not an object)")))?;
    XmlOut {
        model,
        writer: &mut writer,
    }
    .resource(object, true)?;
    let mut bytes = writer.into_inner();
    if pretty {
        bytes.push(b'\n');
    }
    Ok(bytes)
}

struct XmlOut<'w> {
    model: &'static Model,
    writer: &'w mut Writer<Vec<u8>>,
}

fn io(e: std::io::Error) -> XmlError {
    XmlError::Syntax {
        position: 0,
        reason: e.to_string(),
    }
}

/// Escapes an attribute value so that every parser reads back exactly `value` (newlines and tabs
/// as character references: attribute-value normalisation would otherwise turn them into spaces).
fn escape_attribute(value: &str) -> Result<Cow<'_, str>, XmlError> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\n' | '\r' | '\t') || !xml_char(c);
    if !value.chars().any(needs) {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if !xml_char(c) => return Err(XmlError::Character(u32::from(c))),
            c => out.push(c),
        }
    }
    Ok(Cow::Owned(out))
}

fn push_attribute(
    start: &mut BytesStart<'_>,
    key: &'static str,
    value: &str,
) -> Result<(), XmlError> {
    let escaped = escape_attribute(value)?;
    start.push_attribute(Attribute {
        key: QName(key.as_bytes()),
        value: Cow::Owned(escaped.into_owned().into_bytes()),
    });
    Ok(())
}

/// The lexical form of a primitive's JSON value, checked against the kind the type expects.
fn lexical(
    value: &Value,
    kind: JsonKind,
    def: &TypeDef,
    element: &str,
) -> Result<String, XmlError> {
    match (kind, value) {
        (JsonKind::String, Value::String(s)) => Ok(s.clone()),
        (JsonKind::Bool, Value::Bool(b)) => Ok(b.to_string()),
        (JsonKind::Number, Value::Number(n)) => Ok(n.to_string()),
        (kind, other) => Err(XmlError::invalid(
            def.name,
            element,
            format!("expected a JSON {kind:?}, found {other}"),
        )),
    }
}

impl XmlOut<'_> {
    fn write(&mut self, event: Event<'_>) -> Result<(), XmlError> {
        self.writer.write_event(event).map_err(io)
    }

    fn resource(&mut self, object: &Map<String, Value>, root: bool) -> Result<(), XmlError> {
        let type_name = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let def = self
            .model
            .resource(type_name)
            .ok_or_else(|| XmlError::UnknownResourceType(type_name.to_string()))?;
        let mut start = BytesStart::new(def.name);
        if root {
            push_attribute(&mut start, "xmlns", FHIR_NS)?;
        }
        self.complex(def, object, start)
    }

    /// Writes one datatype, backbone element or resource: `start` gets the attribute elements,
    /// then the children in definition order.
    fn complex(
        &mut self,
        def: &TypeDef,
        object: &Map<String, Value>,
        mut start: BytesStart<'_>,
    ) -> Result<(), XmlError> {
        for key in object.keys() {
            let name = key.strip_prefix('_').unwrap_or(key);
            if def.is_resource && key == "resourceType" {
                continue;
            }
            match def.element(name) {
                Some(e) if key.starts_with('_') && !matches!(e.holds, Holds::Primitive(_)) => {
                    return Err(XmlError::invalid(
                        def.name,
                        key,
                        "only primitives have a `_` property",
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(XmlError::UnknownElement {
                        type_name: def.name.to_string(),
                        element: key.clone(),
                    });
                }
            }
        }
        for e in def.elements.iter().filter(|e| e.attr) {
            if let Some(value) = object.get(&e.name) {
                let text = value
                    .as_str()
                    .ok_or_else(|| XmlError::invalid(def.name, &e.name, "expected a string"))?;
                push_attribute(&mut start, attribute_name(&e.name), text)?;
            }
        }
        let has_children = def.elements.iter().any(|e| {
            !e.attr && (object.contains_key(&e.name) || object.contains_key(&e.underscore))
        });
        if !has_children {
            return self.write(Event::Empty(start));
        }
        let end = start.to_end().into_owned();
        self.write(Event::Start(start))?;
        for e in def.elements.iter().filter(|e| !e.attr) {
            let value = object.get(&e.name);
            let extra = object.get(&e.underscore);
            if value.is_none() && extra.is_none() {
                continue;
            }
            match e.holds {
                Holds::Primitive(kind) => {
                    self.primitives(def, &e.name, kind, e.many, value, extra)?
                }
                Holds::Xhtml => {
                    let div = value.and_then(Value::as_str).ok_or_else(|| {
                        XmlError::invalid(def.name, &e.name, "expected XHTML as a string")
                    })?;
                    // Verbatim: the narrative is already XHTML. On a line of its own when indenting.
                    self.writer.write_indent().map_err(io)?;
                    self.writer.get_mut().extend_from_slice(div.as_bytes());
                }
                Holds::Resource => {
                    for item in items(def, &e.name, e.many, value)? {
                        let object = item.as_object().ok_or_else(|| {
                            XmlError::invalid(def.name, &e.name, "expected a resource")
                        })?;
                        self.write(Event::Start(BytesStart::new(e.name.as_str())))?;
                        self.resource(object, false)?;
                        self.write(Event::End(BytesEnd::new(e.name.as_str())))?;
                    }
                }
                Holds::Complex => {
                    let child = self.model.type_def(e.type_name).ok_or_else(|| {
                        XmlError::invalid(def.name, &e.name, "type missing from the table")
                    })?;
                    for item in items(def, &e.name, e.many, value)? {
                        let object = item.as_object().ok_or_else(|| {
                            XmlError::invalid(def.name, &e.name, "expected an object")
                        })?;
                        self.complex(child, object, BytesStart::new(e.name.as_str()))?;
                    }
                }
            }
        }
        self.write(Event::End(end))
    }

    /// Writes a primitive element (or each repetition): `value` from the JSON property, `id` and
    /// extensions from its `_` twin.
    fn primitives(
        &mut self,
        def: &TypeDef,
        name: &str,
        kind: JsonKind,
        many: bool,
        value: Option<&Value>,
        extra: Option<&Value>,
    ) -> Result<(), XmlError> {
        let values = items(def, name, many, value)?;
        let extras = items(def, name, many, extra)?;
        if !values.is_empty() && !extras.is_empty() && values.len() != extras.len() {
            return Err(XmlError::invalid(
                def.name,
                name,
                "value and `_` arrays differ in length",
            ));
        }
        for i in 0..values.len().max(extras.len()) {
            let value = values.get(i).copied().filter(|v| !v.is_null());
            let extra = extras.get(i).copied().filter(|v| !v.is_null());
            if value.is_none() && extra.is_none() {
                return Err(XmlError::invalid(
                    def.name,
                    name,
                    "a repetition with neither value nor extension",
                ));
            }
            let mut start = BytesStart::new(name);
            let extra =
                match extra {
                    Some(x) => Some(x.as_object().ok_or_else(|| {
                        XmlError::invalid(def.name, name, "`_` must be an object")
                    })?),
                    None => None,
                };
            if let Some(x) = extra {
                for key in x.keys() {
                    if key != "id" && key != "extension" {
                        return Err(XmlError::UnknownElement {
                            type_name: format!("{}._{name}", def.name),
                            element: key.clone(),
                        });
                    }
                }
                if let Some(id) = x.get("id") {
                    let id = id.as_str().ok_or_else(|| {
                        XmlError::invalid(def.name, name, "`id` must be a string")
                    })?;
                    push_attribute(&mut start, "id", id)?;
                }
            }
            if let Some(v) = value {
                push_attribute(&mut start, "value", &lexical(v, kind, def, name)?)?;
            }
            let extensions = extra.and_then(|x| x.get("extension"));
            match extensions {
                None => self.write(Event::Empty(start))?,
                Some(list) => {
                    let extension = self
                        .model
                        .type_def("Extension")
                        .ok_or_else(|| XmlError::Model(String::from("no Extension type")))?;
                    let end = start.to_end().into_owned();
                    self.write(Event::Start(start))?;
                    for item in items(def, name, true, Some(list))? {
                        let object = item.as_object().ok_or_else(|| {
                            XmlError::invalid(def.name, name, "expected an extension object")
                        })?;
                        self.complex(extension, object, BytesStart::new("extension"))?;
                    }
                    self.write(Event::End(end))?;
                }
            }
        }
        Ok(())
    }
}

/// `id` and `url` are the only attribute elements of R4B.
fn attribute_name(name: &str) -> &'static str {
    if name == "url" { "url" } else { "id" }
}

/// The repetitions of an element: an array when the element repeats, one value otherwise.
fn items<'v>(
    def: &TypeDef,
    name: &str,
    many: bool,
    value: Option<&'v Value>,
) -> Result<Vec<&'v Value>, XmlError> {
    match (many, value) {
        (_, None) => Ok(Vec::new()),
        (true, Some(Value::Array(list))) => Ok(list.iter().collect()),
        (false, Some(Value::Array(_))) => Err(XmlError::invalid(
            def.name,
            name,
            "does not repeat but is an array",
        )),
        (true, Some(_)) => Err(XmlError::invalid(
            def.name,
            name,
            "repeats and must be an array",
        )),
        (false, Some(v)) => Ok(vec![v]),
    }
}
