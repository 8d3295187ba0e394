//! The only crate that depends on fhir-sdk (its generated R4B models take minutes to compile,
//! so everything else stays independent of them).
//!
//! [`check_r4b`] deserializes a resource into the typed R4B model and serializes it back: an
//! element name the model does not know, a wrong type or a wrong cardinality shows up as an error
//! or as a difference between the input and the round-tripped value.

use fhir_sdk::r4b::resources::Resource;

/// fhir-sdk itself (its REST client and R4B models), for tests that talk to the server as any
/// standard FHIR client does. Feature `client`; only tests enable it.
#[cfg(feature = "client")]
pub use fhir_sdk;
use serde_json::Value;

/// Round-trips `resource` through the fhir-sdk R4B model; returns the differences (empty when
/// the resource is valid R4B and nothing was lost).
pub fn check_r4b(resource: &Value) -> Result<(), Vec<String>> {
    let typed: Resource = serde_json::from_value(resource.clone())
        .map_err(|error| vec![format!("not a valid R4B resource: {error}")])?;
    let back = serde_json::to_value(&typed)
        .map_err(|error| vec![format!("cannot serialize back: {error}")])?;
    let mut differences = Vec::new();
    compare("", resource, &back, &mut differences);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences)
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(1.0),
        _ => a == b,
    }
}

/// `2025-11-25T01:00:00.000+09:00` and `2025-11-25T01:00:00+09:00` are the same instant: the
/// models drop zero fractions.
fn same_time(a: &str, b: &str) -> bool {
    fn trimmed(text: &str) -> Option<String> {
        let (main, rest) = text.split_once('.')?;
        if main.len() != 19 || main.as_bytes().get(10).is_none_or(|c| *c != b'T') {
            return None;
        }
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let zone = &rest[digits.len()..];
        let kept = digits.trim_end_matches('0');
        Some(if kept.is_empty() {
            format!("{main}{zone}")
        } else {
            format!("{main}.{kept}{zone}")
        })
    }
    let a = trimmed(a).unwrap_or_else(|| a.to_owned());
    let b = trimmed(b).unwrap_or_else(|| b.to_owned());
    a == b
}

fn compare(path: &str, original: &Value, round_tripped: &Value, differences: &mut Vec<String>) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => compare(&child, value, other, differences),
                    None => differences.push(format!("{child} was dropped (unknown element?)")),
                }
            }
            for key in b.keys() {
                if !a.contains_key(key) {
                    differences.push(format!("{path}.{key} appeared"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                differences.push(format!("{path}: {} items became {}", a.len(), b.len()));
                return;
            }
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{index}]"), x, y, differences);
            }
        }
        (Value::Number(a), Value::Number(b)) if numbers_equal(a, b) => {}
        (Value::String(a), Value::String(b)) if same_time(a, b) => {}
        (a, b) if a == b => {}
        (a, b) => differences.push(format!("{path}: {a} became {b}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_r4b;

    #[test]
    fn valid_resources_pass_and_invented_elements_fail() {
        let patient = json!({"resourceType": "Patient", "id": "x", "gender": "male", "birthDate": "1948-04-05"});
        assert!(check_r4b(&patient).is_ok());
        let invented =
            json!({"resourceType": "Patient", "id": "x", "hospitalization": {"text": "no"}});
        assert!(check_r4b(&invented).is_err());
        let wrong_code = json!({"resourceType": "Patient", "id": "x", "gender": "man"});
        assert!(check_r4b(&wrong_code).is_err());
    }
}
