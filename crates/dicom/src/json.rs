//! The DICOM JSON model (PS3.18 §F.2): what QIDO-RS and WADO-RS metadata answer, one object
//! per data set, keyed by tag (`"0020000D": {"vr": "UI", "Value": ["1.2…"]}`).
//!
//! Text is read as the data set's `SpecificCharacterSet` says when a PACS passed it through
//! undecoded: a value holding ISO 2022 escape sequences (Debian's Orthanc 1.10 answers Japanese
//! names so, and splits them wherever a kanji byte is 0x5C) is turned back into its bytes, its
//! split values joined again, and decoded by [`crate::charset`].

use serde_json::{Map, Value};

use crate::{
    charset::{CharacterSets, CharsetError, PersonName},
    tags,
};

/// A data set that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not a JSON object.
    #[error("a DICOM JSON data set is an object, not {0}")]
    NotAnObject(&'static str),
    /// Its character set is not one this reader knows.
    #[error(transparent)]
    Charset(#[from] CharsetError),
}

/// One data set.
#[derive(Debug, Clone)]
pub struct Dataset<'a> {
    object: &'a Map<String, Value>,
    sets: CharacterSets,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Dataset<'a> {
    /// Reads a data set (its character sets from its own (0008,0005)).
    pub fn new(value: &'a Value) -> Result<Self, JsonError> {
        Self::within(value, &CharacterSets::default())
    }

    /// Reads a data set nested in another (a sequence item), which keeps its parent's
    /// character sets unless it names its own.
    fn within(value: &'a Value, parent: &CharacterSets) -> Result<Self, JsonError> {
        let object = value
            .as_object()
            .ok_or(JsonError::NotAnObject(kind(value)))?;
        let named: Vec<String> = values(object, tags::SPECIFIC_CHARACTER_SET)
            .iter()
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect();
        let sets = if named.is_empty() {
            parent.clone()
        } else {
            CharacterSets::parse(&named)?
        };
        Ok(Self { object, sets })
    }

    /// Every data set of an array (a QIDO-RS answer); the first that cannot be read is the
    /// error.
    pub fn all(answer: &'a Value) -> Result<Vec<Self>, JsonError> {
        answer
            .as_array()
            .ok_or(JsonError::NotAnObject(kind(answer)))?
            .iter()
            .map(Self::new)
            .collect()
    }

    /// The character sets its text is read with.
    pub fn character_sets(&self) -> &CharacterSets {
        &self.sets
    }

    /// Whether the attribute is present (with or without a value).
    pub fn has(&self, tag: u32) -> bool {
        self.object.contains_key(&tags::key(tag))
    }

    /// The values of a text or number attribute, as text.
    pub fn strings(&self, tag: u32) -> Vec<String> {
        let raw: Vec<String> = values(self.object, tag)
            .iter()
            .filter_map(|value| match value {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
            .collect();
        self.redecoded(raw)
    }

    /// The first value of a text or number attribute, trimmed, when not empty.
    pub fn string(&self, tag: u32) -> Option<String> {
        self.strings(tag)
            .into_iter()
            .map(|value| value.trim().to_owned())
            .find(|value| !value.is_empty())
    }

    /// The first value of an integer attribute (IS, US, UL, SL…).
    pub fn int(&self, tag: u32) -> Option<i64> {
        match values(self.object, tag).first()? {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    /// The first value of a person-name attribute, its groups decoded.
    pub fn person_name(&self, tag: u32) -> Option<PersonName> {
        let raw: Vec<String> = values(self.object, tag)
            .iter()
            .map(|value| match value {
                Value::Object(groups) => ["Alphabetic", "Ideographic", "Phonetic"]
                    .iter()
                    .map(|group| groups.get(*group).and_then(Value::as_str).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("=")
                    .trim_end_matches('=')
                    .to_owned(),
                Value::String(text) => text.clone(),
                _ => String::new(),
            })
            .collect();
        self.redecoded(raw)
            .into_iter()
            .find(|value| !value.is_empty())
            .map(|value| PersonName::parse(&value))
    }

    /// The items of a sequence attribute.
    pub fn sequence(&self, tag: u32) -> Vec<Dataset<'a>> {
        values(self.object, tag)
            .iter()
            .filter_map(|item| Self::within(item, &self.sets).ok())
            .collect()
    }

    /// Values passed through undecoded (they hold ESC, and no character above U+00FF) turned
    /// back into bytes, joined where a 0x5C split them, and decoded; others as they are.
    fn redecoded(&self, raw: Vec<String>) -> Vec<String> {
        let undecoded = self.sets.has_extensions()
            && raw.iter().any(|value| value.contains('\u{1b}'))
            && raw
                .iter()
                .all(|value| value.chars().all(|c| u32::from(c) <= 0xff));
        if !undecoded {
            return raw;
        }
        let mut bytes = Vec::new();
        for (index, value) in raw.iter().enumerate() {
            if index > 0 {
                bytes.push(b'\\');
            }
            bytes.extend(value.chars().map(|c| u32::from(c) as u8));
        }
        self.sets.decode_values(&bytes)
    }
}

fn values(object: &Map<String, Value>, tag: u32) -> &[Value] {
    object
        .get(&tags::key(tag))
        .and_then(|element| element.get("Value"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn a_qido_answer_is_read_by_tag() {
        let answer = json!([{
            "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
            "00080020": {"vr": "DA", "Value": ["20240501"]},
            "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00201206": {"vr": "IS", "Value": [2]},
            "00201208": {"vr": "IS", "Value": ["17"]},
            "00081030": {"vr": "LO"}
        }]);
        let studies = Dataset::all(&answer).unwrap();
        let study = &studies[0];
        assert_eq!(
            study.string(tags::STUDY_INSTANCE_UID).as_deref(),
            Some("1.2.3")
        );
        assert_eq!(study.strings(tags::MODALITIES_IN_STUDY), ["CT", "SR"]);
        assert_eq!(study.int(tags::NUMBER_OF_STUDY_RELATED_SERIES), Some(2));
        assert_eq!(study.int(tags::NUMBER_OF_STUDY_RELATED_INSTANCES), Some(17));
        assert_eq!(study.string(tags::STUDY_DESCRIPTION), None);
        assert!(study.has(tags::STUDY_DESCRIPTION));
        let name = study.person_name(tags::PATIENT_NAME).unwrap();
        assert_eq!(name.ideographic, "山田^太郎");
        assert!(Dataset::all(&json!({"a": 1})).is_err());
        assert!(Dataset::new(&json!([1])).is_err());
    }

    #[test]
    fn a_name_passed_through_undecoded_and_split_at_0x5c_is_read_whole() {
        // 閲 (as a surname here) is JIS X 0208 0x315C: its second byte is a backslash, where
        // Orthanc split the value.
        let answer = json!({
            "00080005": {"vr": "CS", "Value": ["", "ISO 2022 IR 87"]},
            "00100010": {"vr": "PN", "Value": [
                {"Alphabetic": "Etsu^Hanako", "Ideographic": "\u{1b}$B1"},
                {"Alphabetic": "\u{1b}(B^\u{1b}$B2V;R\u{1b}(B"}
            ]},
            "00081030": {"vr": "LO", "Value": ["\u{1b}$B6;It\u{1b}(B CT"]}
        });
        let study = Dataset::new(&answer).unwrap();
        let name = study.person_name(tags::PATIENT_NAME).unwrap();
        assert_eq!(name.alphabetic, "Etsu^Hanako");
        assert_eq!(name.ideographic, "閲^花子");
        assert_eq!(
            study.string(tags::STUDY_DESCRIPTION).as_deref(),
            Some("胸部 CT")
        );
        // An unknown character set is an error naming it.
        let unknown = json!({"00080005": {"vr": "CS", "Value": ["ISO_IR 144"]}});
        assert!(
            Dataset::new(&unknown)
                .unwrap_err()
                .to_string()
                .contains("ISO_IR 144")
        );
    }
}
