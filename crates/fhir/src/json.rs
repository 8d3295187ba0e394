//! Builders for FHIR data types as JSON values, and the writer that serializes a resource with
//! `resourceType`, `id` and `meta` first.
//!
//! Mapping code reads like the FHIR it produces: `Obj::resource("Patient").put("id", id)…`.
//! Empty strings, empty arrays and empty objects are never written, so an absent HL7 field
//! never becomes an invalid empty FHIR element.

use serde_json::{Map, Value};

/// A JSON object under construction; keys keep insertion order.
#[derive(Debug, Default, Clone)]
pub struct Obj(Map<String, Value>);

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

impl Obj {
    /// An empty object.
    pub fn new() -> Self {
        Self(Map::new())
    }

    /// A resource object starting with `resourceType`.
    pub fn resource(resource_type: &str) -> Self {
        Self::new().put("resourceType", resource_type)
    }

    /// Sets `key` unless the value is blank (null, "", [] or {}).
    pub fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if !is_blank(&value) {
            self.0.insert(key.to_owned(), value);
        }
        self
    }

    /// Sets `key` when `value` is `Some` and not blank.
    pub fn opt<V: Into<Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(value) => self.put(key, value),
            None => self,
        }
    }

    /// Sets `key` to an array of the non-blank items (nothing when none).
    pub fn list(self, key: &str, items: Vec<Value>) -> Self {
        let items: Vec<Value> = items.into_iter().filter(|item| !is_blank(item)).collect();
        self.put(key, Value::Array(items))
    }

    /// True when nothing has been set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The finished value.
    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

impl From<Obj> for Value {
    fn from(object: Obj) -> Self {
        object.build()
    }
}

/// The keys written first, in this order; the rest follow in sorted order.
const LEADING: [&str; 3] = ["resourceType", "id", "meta"];

/// Serializes a resource compactly with `resourceType`, `id` and `meta` first (serde_json maps
/// are sorted; FHIR examples lead with these three). The output is the JSON serde_json would
/// write for the same value, produced by a direct writer whose string escaping skips the
/// per-byte work for the common case of strings with nothing to escape.
pub fn write_resource(resource: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let Value::Object(map) = resource else {
        write_value(resource, out)?;
        return Ok(());
    };
    out.push(b'{');
    let mut first = true;
    for key in LEADING {
        if let Some(value) = map.get(key) {
            write_entry(out, &mut first, key, value)?;
        }
    }
    for (key, value) in map {
        if !LEADING.contains(&key.as_str()) {
            write_entry(out, &mut first, key, value)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_entry(
    out: &mut Vec<u8>,
    first: &mut bool,
    key: &str,
    value: &Value,
) -> Result<(), serde_json::Error> {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_string(key, out);
    out.push(b':');
    write_value(value, out)
}

/// Every empty string, array or object in `value`, by path from `root` (FHIR forbids all three:
/// an element is absent or has a value).
pub fn empty_values(value: &Value, root: &str) -> Vec<String> {
    fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::String(text) if text.is_empty() => found.push(path.to_owned()),
            Value::Array(items) if items.is_empty() => found.push(path.to_owned()),
            Value::Object(fields) if fields.is_empty() => found.push(path.to_owned()),
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{index}]"), found);
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    walk(item, &format!("{path}.{key}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(value, root, &mut found);
    found
}

/// Removes empty strings, arrays and objects, innermost first (FHIR: an element is absent or
/// has a value; `""`, `[]` and `{}` are never valid).
pub fn prune_empty(value: &mut Value) {
    let empty = |value: &Value| match value {
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    };
    match value {
        Value::Object(fields) => {
            for child in fields.values_mut() {
                prune_empty(child);
            }
            fields.retain(|_, child| !empty(child));
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune_empty(item);
            }
            items.retain(|item| !empty(item));
        }
        _ => {}
    }
}

/// Compact JSON for any value (sorted object keys, as serde_json's own maps).
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => serde_json::to_writer(&mut *out, number)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            for (key, item) in map {
                write_entry(out, &mut first, key, item)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// True when a byte needs escaping. Branch-free folds over fixed-size chunks, so the compiler
/// vectorizes the scan.
fn needs_escape(bytes: &[u8]) -> bool {
    let flag = |byte: u8| (byte < 0x20) | (byte == b'"') | (byte == b'\\');
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |found, &byte| found | flag(byte)) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .fold(false, |found, &byte| found | flag(byte))
}

/// A JSON string literal, escaped exactly as serde_json escapes (`"`, `\\`, control characters).
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        for &byte in bytes {
            match byte {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                control if control < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(control >> 4)]);
                    out.push(HEX[usize::from(control & 0xf)]);
                }
                other => out.push(other),
            }
        }
    }
    out.push(b'"');
}

/// Parses only the top-level properties of a JSON object that `keep` accepts; the rest is scanned
/// but not built (several times cheaper than a whole `Value` when a few references are all one
/// needs).
pub fn parse_fields(bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<Value, serde_json::Error> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Fields<'f>(&'f dyn Fn(&str) -> bool);

    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = Map<String, Value>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if (self.0)(key.as_ref()) {
                    out.insert(key.into_owned(), map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let map = deserializer.deserialize_map(Fields(keep))?;
    deserializer.end()?;
    Ok(Value::Object(map))
}

/// Like [`write_resource`], indented for people.
pub fn to_pretty_resource(resource: &Value) -> Result<String, serde_json::Error> {
    let Value::Object(map) = resource else {
        return serde_json::to_string_pretty(resource);
    };
    let mut keys: Vec<&str> = LEADING
        .iter()
        .copied()
        .filter(|key| map.contains_key(*key))
        .collect();
    keys.extend(
        map.keys()
            .map(String::as_str)
            .filter(|key| !LEADING.contains(key)),
    );
    let mut out = String::from("{\n");
    for (index, key) in keys.iter().enumerate() {
        let Some(value) = map.get(*key) else { continue };
        let rendered = serde_json::to_string_pretty(value)?.replace('\n', "\n  ");
        out.push_str(&format!("  {}: {rendered}", serde_json::to_string(key)?));
        out.push_str(if index + 1 < keys.len() { ",\n" } else { "\n" });
    }
    out.push('}');
    Ok(out)
}

/// A Coding; `None` when there is no code.
pub fn coding(system: &str, code: &str, display: &str) -> Option<Value> {
    if code.trim().is_empty() {
        return None;
    }
    Some(
        Obj::new()
            .put("system", system)
            .put("code", code.trim())
            .put("display", display.trim())
            .build(),
    )
}

/// A CodeableConcept from codings and a text; `None` when both are empty.
pub fn codeable(codings: Vec<Option<Value>>, text: &str) -> Option<Value> {
    let codings: Vec<Value> = codings.into_iter().flatten().collect();
    let object = Obj::new().list("coding", codings).put("text", text.trim());
    if object.is_empty() {
        None
    } else {
        Some(object.build())
    }
}

/// `{"reference": "Type/id"}`.
pub fn reference(resource_type: &str, id: &str) -> Value {
    let mut target = String::with_capacity(resource_type.len() + 1 + id.len());
    target.push_str(resource_type);
    target.push('/');
    target.push_str(id);
    Obj::new().put("reference", target).build()
}

/// An Identifier; `None` when the value is empty.
pub fn identifier(system: &str, value: &str) -> Option<Value> {
    if value.trim().is_empty() {
        return None;
    }
    Some(
        Obj::new()
            .put("system", system)
            .put("value", value.trim())
            .build(),
    )
}

/// An extension with one `value[x]`.
pub fn extension(url: &str, value_key: &str, value: impl Into<Value>) -> Value {
    Obj::new().put("url", url).put(value_key, value).build()
}

/// A JSON number from decimal text as HL7 sends it (`7.2`, `+7.2`, `.5`, `-14`), or `None`.
pub fn decimal(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let (negative, digits) = match unsigned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, unsigned),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.bytes().filter(|&b| b == b'.').count() > 1
        || digits == "."
    {
        return None;
    }
    let number: f64 = digits.parse().ok()?;
    let signed = if negative { -number } else { number };
    if !signed.is_finite() {
        return None;
    }
    if !digits.contains('.')
        && let Ok(integer) = digits.parse::<i64>()
    {
        return Some(Value::from(if negative { -integer } else { integer }));
    }
    serde_json::Number::from_f64(signed).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_fields_keeps_only_what_is_asked() {
        let text = br#"{"resourceType":"Observation","subject":{"reference":"Patient/p"},"code":{"text":"\u5c71"},"note":[{"text":"x"}]}"#;
        let parsed = parse_fields(text, &|key| key == "subject" || key == "resourceType").unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"resourceType": "Observation", "subject": {"reference": "Patient/p"}})
        );
        assert!(parse_fields(b"[1]", &|_| true).is_err());
        assert!(parse_fields(br#"{"a":1} trailing"#, &|_| true).is_err());
    }

    #[test]
    fn blanks_are_never_written() {
        let value = Obj::resource("Patient")
            .put("id", "x")
            .put("gender", "")
            .list("name", vec![Value::Null, json!({})])
            .opt("birthDate", None::<String>)
            .build();
        assert_eq!(value, json!({"resourceType": "Patient", "id": "x"}));
        assert!(coding("s", " ", "d").is_none());
        assert!(codeable(vec![None], "").is_none());
    }

    #[test]
    fn resources_lead_with_type_id_and_meta() {
        let resource = json!({"subject": {"reference": "Patient/1"}, "meta": {"source": "x"}, "id": "a", "resourceType": "Observation"});
        let mut bytes = Vec::new();
        write_resource(&resource, &mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("{\"resourceType\":\"Observation\",\"id\":\"a\",\"meta\":"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), resource);
        let pretty = to_pretty_resource(&resource).unwrap();
        assert!(
            pretty.starts_with("{\n  \"resourceType\": \"Observation\",\n  \"id\": \"a\""),
            "{pretty}"
        );
        assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), resource);
    }

    #[test]
    fn the_direct_writer_matches_serde_json() {
        let value = json!({
            "a": "plain 漢字", "b": "quote \" backslash \\ newline \n tab \t cr \r bell \u{7} nul \u{0} ff \u{c} bs \u{8}",
            "c": [1, -2, 3.5, 1e-7, 12345678901234567_i64, true, false, null], "d": {"z": {}, "y": []}, "e": "\u{7f}\u{2028}"
        });
        let mut ours = Vec::new();
        write_value(&value, &mut ours).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
    }

    #[test]
    fn decimals_from_hl7_text() {
        assert_eq!(decimal("7.2"), Some(json!(7.2)));
        assert_eq!(decimal("+7.2"), Some(json!(7.2)));
        assert_eq!(decimal(".5"), Some(json!(0.5)));
        assert_eq!(decimal("-14"), Some(json!(-14)));
        assert_eq!(decimal(" 67 "), Some(json!(67)));
        for bad in ["", "ccc", "1.2.3", "> 100", "1e5", ".", "-"] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }
}
