//! FHIR primitives in JSON: which JSON type each R4B primitive takes, the lexical forms of the
//! date and time types, `id` and `code`, and the characters a string may hold (those XML 1.0
//! can carry). Shared by the structural check ([`crate::structure`]) and the profile validator
//! of `tsunagi-fhir`, so both say the same of one value.

use serde_json::Value;

/// The R4B primitive types.
const PRIMITIVES: &[&str] = &[
    "boolean",
    "integer",
    "integer64",
    "unsignedInt",
    "positiveInt",
    "decimal",
    "string",
    "code",
    "id",
    "uri",
    "url",
    "canonical",
    "oid",
    "uuid",
    "markdown",
    "base64Binary",
    "date",
    "dateTime",
    "instant",
    "time",
    "xhtml",
];

/// Whether `code` names an R4B primitive type.
pub fn is_primitive(code: &str) -> bool {
    PRIMITIVES.contains(&code)
}

/// What is wrong with `value` as a JSON value of the primitive type `code`, if anything: its
/// JSON type, an empty string, a character XML cannot carry, or its lexical form.
pub fn problem(code: &str, value: &Value) -> Option<String> {
    let expect = |ok: bool, what: &str| (!ok).then(|| format!("must be {what} ({code})"));
    match code {
        "boolean" => expect(value.is_boolean(), "true or false"),
        "integer" => expect(
            value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "a 32-bit integer",
        ),
        "integer64" => expect(value.is_i64(), "a 64-bit integer"),
        "unsignedInt" => expect(
            value.as_u64().is_some_and(|n| n <= i32::MAX as u64),
            "an integer from 0 to 2147483647",
        ),
        "positiveInt" => expect(
            value
                .as_u64()
                .is_some_and(|n| (1..=i32::MAX as u64).contains(&n)),
            "an integer from 1 to 2147483647",
        ),
        "decimal" => expect(value.is_number(), "a number"),
        _ => {
            let Some(text) = value.as_str() else {
                return Some(format!("must be a JSON string ({code})"));
            };
            if text.is_empty() {
                return Some("an empty string is not allowed".to_owned());
            }
            if let Some(bad) = text.chars().find(|&c| !crate::xml_char(c)) {
                return Some(format!(
                    "holds U+{:04X}, a character FHIR strings cannot carry",
                    u32::from(bad)
                ));
            }
            lexical_problem(code, text)
        }
    }
}

fn digits(text: &str, range: std::ops::Range<usize>) -> Option<u32> {
    let part = text.get(range)?;
    if part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`; returns the length it used.
fn date_part(text: &str) -> Option<usize> {
    digits(text, 0..4)?;
    if text.len() == 4 {
        return Some(4);
    }
    if text.as_bytes().get(4) != Some(&b'-') || !(1..=12).contains(&digits(text, 5..7)?) {
        return None;
    }
    if text.len() == 7 {
        return Some(7);
    }
    if text.as_bytes().get(7) != Some(&b'-') || !(1..=31).contains(&digits(text, 8..10)?) {
        return None;
    }
    Some(10)
}

/// `hh:mm:ss(.f+)?`; returns the length it used.
fn time_part(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if digits(text, 0..2)? > 23
        || bytes.get(2) != Some(&b':')
        || digits(text, 3..5)? > 59
        || bytes.get(5) != Some(&b':')
        || digits(text, 6..8)? > 60
    {
        return None;
    }
    let mut end = 8;
    if bytes.get(8) == Some(&b'.') {
        end = 9;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == 9 {
            return None;
        }
    }
    Some(end)
}

fn zone_ok(zone: &str) -> bool {
    zone == "Z"
        || (zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && digits(zone, 1..3).is_some_and(|h| h <= 14)
            && zone.as_bytes()[3] == b':'
            && digits(zone, 4..6).is_some_and(|m| m <= 59))
}

/// What is wrong with the lexical form of `text` as a `code` primitive, if anything.
pub fn lexical_problem(code: &str, text: &str) -> Option<String> {
    let ok = match code {
        "date" => date_part(text) == Some(text.len()),
        "dateTime" | "instant" => match date_part(text) {
            Some(used) if used == text.len() => code == "dateTime",
            Some(10) if text.as_bytes().get(10) == Some(&b'T') => {
                let rest = &text[11..];
                time_part(rest).is_some_and(|used| zone_ok(&rest[used..]))
            }
            _ => false,
        },
        "time" => time_part(text) == Some(text.len()),
        "id" => {
            text.len() <= 64
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
        "code" => text.trim() == text && !text.contains("  "),
        _ => true,
    };
    (!ok).then(|| format!("{text:?} is not a valid {code}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn dates_and_times_have_their_lexical_forms() {
        for good in [
            "2011",
            "2011-12",
            "2011-12-19",
            "2011-12-19T15:00:00+09:00",
            "2011-12-19T15:00:00.123Z",
        ] {
            assert_eq!(lexical_problem("dateTime", good), None, "{good}");
        }
        for bad in [
            "2011-13",
            "2011-12-19T15:00",
            "2011-12-19T15:00:00",
            "20111219",
            "2011-12-19 15:00:00+09:00",
            "2011-12-19T25:00:00Z",
        ] {
            assert!(lexical_problem("dateTime", bad).is_some(), "{bad}");
        }
        assert!(lexical_problem("instant", "2011-12-19").is_some());
        assert_eq!(lexical_problem("instant", "2011-12-19T15:00:00Z"), None);
        assert_eq!(lexical_problem("date", "2011-12-19"), None);
        assert!(lexical_problem("date", "2011-12-19T15:00:00Z").is_some());
        assert_eq!(lexical_problem("time", "15:00:00"), None);
        assert!(lexical_problem("id", "a b").is_some());
        assert!(lexical_problem("code", " final").is_some());
    }

    #[test]
    fn json_types_empty_strings_and_control_characters() {
        assert_eq!(problem("boolean", &json!(true)), None);
        assert!(problem("boolean", &json!("true")).is_some());
        assert!(problem("positiveInt", &json!(0)).is_some());
        assert!(problem("integer", &json!(1.5)).is_some());
        assert!(
            problem("integer", &json!(2_147_483_648_i64)).is_some(),
            "R4B integers are 32-bit"
        );
        assert_eq!(problem("integer64", &json!(2_147_483_648_i64)), None);
        assert!(problem("unsignedInt", &json!(4_000_000_000_u64)).is_some());
        assert_eq!(problem("decimal", &json!(1.5)), None);
        assert!(problem("string", &json!("")).is_some());
        assert!(problem("string", &json!(["a"])).is_some());
        assert!(
            problem("string", &json!("a\u{1}b"))
                .unwrap()
                .contains("U+0001")
        );
        assert_eq!(problem("string", &json!("改行\nあり")), None);
        assert!(is_primitive("dateTime") && !is_primitive("Coding"));
    }
}
