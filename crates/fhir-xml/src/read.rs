//! FHIR XML → JSON: reads a document with quick-xml's namespace-aware reader and builds the JSON
//! form the store keeps, using the element table to know repetitions and primitive kinds.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use serde_json::{Map, Number, Value};

use crate::model::{Element, Holds, JsonKind, Model, TypeDef};
use crate::{FHIR_NS, XmlError};

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Reads one FHIR XML document (a resource as root element) into FHIR JSON.
pub fn from_xml(input: &[u8]) -> Result<Value, XmlError> {
    let mut reader = NsReader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut xml_in = XmlIn {
        model: Model::get()?,
        reader,
        input,
    };
    let mut root = None;
    loop {
        let (ns, event) = xml_in.next()?;
        let (start, empty) = match event {
            Event::Start(start) => (start, false),
            Event::Empty(start) => (start, true),
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => continue,
            Event::Text(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
            _ => return Err(xml_in.error("text outside the root element")),
        };
        if root.is_some() {
            return Err(xml_in.error("a second root element"));
        }
        xml_in.expect_ns(&ns, Ns::Fhir)?;
        root = Some(Value::Object(xml_in.resource(&start, empty)?));
    }
    let root = root.ok_or_else(|| xml_in.error("no root element"))?;
    // A character reference can name a character XML 1.0 cannot carry (`&#16;`): such a
    // document is not XML, and what it would read could not be written back.
    characters(&root)?;
    Ok(root)
}

/// Refuses a string holding a character outside XML 1.0's `Char`.
fn characters(value: &Value) -> Result<(), XmlError> {
    match value {
        Value::String(text) => match text.chars().find(|&c| !crate::xml_char(c)) {
            Some(bad) => Err(XmlError::Character(u32::from(bad))),
            None => Ok(()),
        },
        Value::Array(items) => items.iter().try_for_each(characters),
        Value::Object(map) => map.values().try_for_each(characters),
        _ => Ok(()),
    }
}

/// The namespace of an element, as far as FHIR XML cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Fhir,
    Xhtml,
    Other,
}

struct XmlIn<'i> {
    model: &'static Model,
    reader: NsReader<&'i [u8]>,
    input: &'i [u8],
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|e| XmlError::Syntax {
        position: 0,
        reason: e.to_string(),
    })
}

impl<'i> XmlIn<'i> {
    fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn error(&self, reason: impl Into<String>) -> XmlError {
        XmlError::Syntax {
            position: self.position(),
            reason: reason.into(),
        }
    }

    fn syntax(&self, e: impl std::fmt::Display) -> XmlError {
        self.error(e.to_string())
    }

    /// The next event, with the namespace of an element classified (the resolved namespace
    /// borrows the reader, the event only the input).
    fn next(&mut self) -> Result<(Ns, Event<'i>), XmlError> {
        match self.reader.read_resolved_event() {
            Ok((ns, event)) => {
                let ns = match ns {
                    ResolveResult::Bound(Namespace(bound)) if bound == FHIR_NS.as_bytes() => {
                        Ns::Fhir
                    }
                    ResolveResult::Bound(Namespace(bound)) if bound == XHTML_NS.as_bytes() => {
                        Ns::Xhtml
                    }
                    _ => Ns::Other,
                };
                Ok((ns, event))
            }
            Err(e) => Err(self.syntax(e)),
        }
    }

    /// The next child element of the current one, or `None` at its end tag. Comments,
    /// processing instructions and whitespace are skipped; other content is an error naming
    /// `owner`.
    fn next_child(
        &mut self,
        owner: &dyn Fn() -> String,
    ) -> Result<Option<(Ns, BytesStart<'i>, bool)>, XmlError> {
        loop {
            let (ns, event) = self.next()?;
            return match event {
                Event::Start(start) => Ok(Some((ns, start, false))),
                Event::Empty(start) => Ok(Some((ns, start, true))),
                Event::End(_) => Ok(None),
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Text(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
                Event::Eof => Err(self.error(format!("{} is not closed", owner()))),
                _ => Err(self.error(format!("unexpected content in {}", owner()))),
            };
        }
    }

    fn expect_ns(&self, ns: &Ns, expected: Ns) -> Result<(), XmlError> {
        if *ns == expected {
            Ok(())
        } else {
            let uri = if expected == Ns::Fhir {
                FHIR_NS
            } else {
                XHTML_NS
            };
            Err(self.error(format!("element outside the namespace {uri}")))
        }
    }

    /// A resource whose root element is `start`.
    fn resource(
        &mut self,
        start: &BytesStart<'_>,
        empty: bool,
    ) -> Result<Map<String, Value>, XmlError> {
        let name = utf8(start.local_name().into_inner())?;
        let def = self
            .model
            .resource(name)
            .ok_or_else(|| XmlError::UnknownResourceType(name.to_string()))?;
        let mut object = self.object(def, start, empty)?;
        object.insert(
            String::from("resourceType"),
            Value::String(name.to_string()),
        );
        Ok(object)
    }

    /// A datatype, backbone element or resource: attribute elements, then the children.
    fn object(
        &mut self,
        def: &TypeDef,
        start: &BytesStart<'_>,
        empty: bool,
    ) -> Result<Map<String, Value>, XmlError> {
        let mut object = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| self.syntax(e))?;
            let key = utf8(attribute.key.as_ref())?;
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            match def.element(key) {
                Some(e) if e.attr => {
                    let value = attribute.unescape_value().map_err(|e| self.syntax(e))?;
                    object.insert(e.name.clone(), Value::String(value.into_owned()));
                }
                _ => {
                    return Err(XmlError::UnknownElement {
                        type_name: def.name.to_string(),
                        element: format!("@{key}"),
                    });
                }
            }
        }
        if empty {
            return Ok(object);
        }
        let owner = || def.name.to_string();
        while let Some((ns, child, child_empty)) = self.next_child(&owner)? {
            let name = utf8(child.local_name().into_inner())?;
            let element =
                def.element(name)
                    .filter(|e| !e.attr)
                    .ok_or_else(|| XmlError::UnknownElement {
                        type_name: def.name.to_string(),
                        element: name.to_string(),
                    })?;
            if element.holds == Holds::Xhtml {
                self.expect_ns(&ns, Ns::Xhtml)?;
            } else {
                self.expect_ns(&ns, Ns::Fhir)?;
            }
            self.element(def, element, &child, child_empty, &mut object)?;
        }
        Ok(object)
    }

    /// Reads one occurrence of `element` into `object`.
    fn element(
        &mut self,
        def: &TypeDef,
        element: &Element,
        start: &BytesStart<'_>,
        empty: bool,
        object: &mut Map<String, Value>,
    ) -> Result<(), XmlError> {
        let value = match element.holds {
            Holds::Primitive(kind) => {
                return self.primitive(def, element, kind, start, empty, object);
            }
            Holds::Complex => {
                let child = self.model.type_def(element.type_name).ok_or_else(|| {
                    XmlError::invalid(def.name, &element.name, "type missing from the table")
                })?;
                Value::Object(self.object(child, start, empty)?)
            }
            Holds::Resource => Value::Object(self.wrapped_resource(def, element, empty)?),
            Holds::Xhtml => Value::String(self.xhtml(start, empty)?),
        };
        add(def, element, object, value)
    }

    /// `<contained><Patient>…</Patient></contained>`.
    fn wrapped_resource(
        &mut self,
        def: &TypeDef,
        element: &Element,
        empty: bool,
    ) -> Result<Map<String, Value>, XmlError> {
        if empty {
            return Err(XmlError::invalid(
                def.name,
                &element.name,
                "holds no resource",
            ));
        }
        let mut resource = None;
        let owner = || format!("{}.{}", def.name, element.name);
        while let Some((ns, start, inner_empty)) = self.next_child(&owner)? {
            if resource.is_some() {
                return Err(XmlError::invalid(
                    def.name,
                    &element.name,
                    "holds more than one resource",
                ));
            }
            self.expect_ns(&ns, Ns::Fhir)?;
            resource = Some(self.resource(&start, inner_empty)?);
        }
        resource.ok_or_else(|| XmlError::invalid(def.name, &element.name, "holds no resource"))
    }

    /// The narrative `div`, kept verbatim as the JSON string.
    fn xhtml(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<String, XmlError> {
        let tag = utf8(start)?;
        if empty {
            return Ok(format!("<{tag}/>"));
        }
        let qname = utf8(start.name().into_inner())?.to_string();
        let span = self
            .reader
            .read_to_end(start.name())
            .map_err(|e| self.syntax(e))?;
        let range = usize::try_from(span.start).unwrap_or(usize::MAX)
            ..usize::try_from(span.end).unwrap_or(usize::MAX);
        let inner = self
            .input
            .get(range.clone())
            .ok_or_else(|| self.error("narrative out of range"))?;
        // The end tag as written (`</div >` is XML too), so the narrative reads back verbatim.
        let end_tag = self
            .input
            .get(range.end..)
            .and_then(|rest| {
                rest.iter()
                    .position(|&byte| byte == b'>')
                    .map(|at| &rest[..=at])
            })
            .ok_or_else(|| self.error(format!("narrative </{qname}> out of range")))?;
        Ok(format!("<{tag}>{}{}", utf8(inner)?, utf8(end_tag)?))
    }

    /// A primitive: `value` and `id` attributes, `extension` children; JSON `name` and `_name`.
    fn primitive(
        &mut self,
        def: &TypeDef,
        element: &Element,
        kind: JsonKind,
        start: &BytesStart<'_>,
        empty: bool,
        object: &mut Map<String, Value>,
    ) -> Result<(), XmlError> {
        let mut value = None;
        let mut extra = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| self.syntax(e))?;
            let key = utf8(attribute.key.as_ref())?;
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            let text = attribute.unescape_value().map_err(|e| self.syntax(e))?;
            match key {
                "value" => value = Some(typed(def, element, kind, &text)?),
                "id" => {
                    extra.insert(String::from("id"), Value::String(text.into_owned()));
                }
                _ => {
                    return Err(XmlError::UnknownElement {
                        type_name: format!("{}.{}", def.name, element.name),
                        element: format!("@{key}"),
                    });
                }
            }
        }
        if !empty {
            let extension = self
                .model
                .type_def("Extension")
                .ok_or_else(|| XmlError::Model(String::from("no Extension type")))?;
            let mut extensions = Vec::new();
            let owner = || format!("{}.{}", def.name, element.name);
            while let Some((ns, child, child_empty)) = self.next_child(&owner)? {
                self.expect_ns(&ns, Ns::Fhir)?;
                if child.local_name().into_inner() != b"extension" {
                    return Err(XmlError::UnknownElement {
                        type_name: format!("{}.{}", def.name, element.name),
                        element: utf8(child.local_name().into_inner())?.to_string(),
                    });
                }
                extensions.push(Value::Object(self.object(
                    extension,
                    &child,
                    child_empty,
                )?));
            }
            if !extensions.is_empty() {
                extra.insert(String::from("extension"), Value::Array(extensions));
            }
        }
        let extra = (!extra.is_empty()).then_some(Value::Object(extra));
        if value.is_none() && extra.is_none() {
            return Err(XmlError::invalid(
                def.name,
                &element.name,
                "neither a value nor an extension",
            ));
        }
        if !element.many {
            if object.contains_key(&element.name) || object.contains_key(&element.underscore) {
                return Err(XmlError::invalid(
                    def.name,
                    &element.name,
                    "does not repeat",
                ));
            }
            if let Some(v) = value {
                object.insert(element.name.clone(), v);
            }
            if let Some(x) = extra {
                object.insert(element.underscore.clone(), x);
            }
            return Ok(());
        }
        // Repeated primitives: `name` and `_name` are parallel arrays, `null` where one side is absent.
        let seen = [&element.name, &element.underscore]
            .iter()
            .filter_map(|k| object.get(*k).and_then(Value::as_array).map(Vec::len))
            .max()
            .unwrap_or(0);
        for (key, item) in [(&element.name, value), (&element.underscore, extra)] {
            if item.is_none() && !object.contains_key(key) {
                continue;
            }
            let list = object
                .entry(key.clone())
                .or_insert_with(|| Value::Array(vec![Value::Null; seen]));
            if let Value::Array(list) = list {
                list.push(item.unwrap_or(Value::Null));
            }
        }
        Ok(())
    }
}

/// Puts one non-primitive occurrence into `object` (appending when the element repeats).
fn add(
    def: &TypeDef,
    element: &Element,
    object: &mut Map<String, Value>,
    value: Value,
) -> Result<(), XmlError> {
    if element.many {
        if let Value::Array(list) = object
            .entry(element.name.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(value);
        }
        return Ok(());
    }
    if object.insert(element.name.clone(), value).is_some() {
        return Err(XmlError::invalid(
            def.name,
            &element.name,
            "does not repeat",
        ));
    }
    Ok(())
}

/// A primitive's lexical form as the JSON value its kind calls for.
fn typed(def: &TypeDef, element: &Element, kind: JsonKind, text: &str) -> Result<Value, XmlError> {
    let bad = || {
        XmlError::invalid(
            def.name,
            &element.name,
            format!("{text:?} is not a valid {kind:?}"),
        )
    };
    match kind {
        JsonKind::String => Ok(Value::String(text.to_string())),
        JsonKind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        JsonKind::Number => {
            if !is_json_number(text) {
                return Err(bad());
            }
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Value::Number(u.into()));
            }
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(bad)
        }
    }
}

/// The JSON number grammar, which FHIR's decimal and integer types follow.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    let whole_from = i;
    let whole = digits(&mut i);
    if whole == 0 || (whole > 1 && bytes[whole_from] == b'0') {
        return false;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}
