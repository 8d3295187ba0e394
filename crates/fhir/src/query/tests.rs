//! Tests of search parsing: types, prefixes, modifiers, chains, result parameters, limits.

use tsunagi_core::time::fhir_date_range;

use super::*;

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(resource_type: &str, items: &[(&str, &str)]) -> Result<SearchQuery, QueryError> {
    SearchQuery::parse(resource_type, &pairs(items), 1_700_000_000, false)
}

#[test]
fn tokens_in_every_form() {
    let query = parse(
        "Observation",
        &[
            (
                "code",
                "http://jpfhir.jp/fhir/core/CodeSystem/JLAC10|3A010,|x,y",
            ),
            ("category:not", "laboratory"),
        ],
    )
    .unwrap();
    let Predicate::Token { system, code, .. } = &query.filters[0].any_of[0] else {
        panic!("not a token");
    };
    assert_eq!(
        system,
        &SystemMatch::Is("http://jpfhir.jp/fhir/core/CodeSystem/JLAC10".into())
    );
    assert_eq!(code.as_deref(), Some("3A010"));
    assert!(
        matches!(&query.filters[0].any_of[1], Predicate::Token { system: SystemMatch::None, code: Some(c), .. } if c == "x")
    );
    assert!(
        matches!(&query.filters[0].any_of[2], Predicate::Token { system: SystemMatch::Any, code: Some(c), .. } if c == "y")
    );
    assert!(query.filters[1].negated);
    let system_only = parse("Observation", &[("code", "urn:oid:1.2.392.200119.4.504|")]).unwrap();
    assert!(
        matches!(&system_only.filters[0].any_of[0], Predicate::Token { code: None, system: SystemMatch::Is(s), .. } if s == crate::systems::JLAC10)
    );
}

#[test]
fn escaped_commas_and_bars() {
    assert_eq!(split_or("a\\,b,c"), vec!["a,b", "c"]);
    let query = parse("Patient", &[("identifier", "sys\\|x|v")]).unwrap();
    assert!(
        matches!(&query.filters[0].any_of[0], Predicate::Token { system: SystemMatch::Is(s), code: Some(c), .. } if s == "sys|x" && c == "v")
    );
}

#[test]
fn strings_are_normalised() {
    let query = parse(
        "Patient",
        &[("name:contains", "ﾔﾏﾀﾞ"), ("family:exact", "山田")],
    )
    .unwrap();
    assert!(
        matches!(&query.filters[0].any_of[0], Predicate::String { mode: StringMode::Contains, value, .. } if value == "ヤマダ")
    );
    assert!(matches!(
        &query.filters[1].any_of[0],
        Predicate::String {
            mode: StringMode::Exact,
            ..
        }
    ));
}

#[test]
fn date_prefixes_follow_range_semantics() {
    let day = |value: &str| parse_date("date", value, 1_700_000_000).unwrap();
    let (start, end) = fhir_date_range("2024-05-01").unwrap();
    let inside = (start + 3600, start + 3601);
    let before = (start - 10, start - 5);
    let after = (end + 5, end + 10);
    let spanning = (start - 10, end + 10);
    assert!(day("2024-05-01").matches(inside.0, inside.1));
    assert!(!day("2024-05-01").matches(spanning.0, spanning.1));
    assert!(day("ne2024-05-01").matches(before.0, before.1));
    assert!(day("gt2024-05-01").matches(after.0, after.1));
    assert!(!day("gt2024-05-01").matches(inside.0, inside.1));
    assert!(day("ge2024-05-01").matches(inside.0, inside.1));
    assert!(day("lt2024-05-01").matches(before.0, before.1));
    assert!(day("le2024-05-01").matches(inside.0, inside.1));
    assert!(!day("le2024-05-01").matches(after.0, after.1));
    assert!(day("sa2024-05-01").matches(after.0, after.1));
    assert!(!day("sa2024-05-01").matches(spanning.0, spanning.1));
    assert!(day("eb2024-05-01").matches(before.0, before.1));
    assert!(day("ap2024-05-01").matches(after.0, after.1));
    // Partial dates are ranges.
    assert!(day("2024").matches(inside.0, inside.1));
    assert!(day("2024-05").matches(inside.0, inside.1));
    // Minutes precision.
    let minute = day("2024-05-01T10:30");
    assert_eq!(minute.end - minute.start, 60);
    assert!(parse_date("date", "yesterday", 0).is_err());
}

#[test]
fn quantities_carry_their_precision() {
    let query = parse(
        "Observation",
        &[("value-quantity", "gt5.4|http://unitsofmeasure.org|mg")],
    )
    .unwrap();
    let Predicate::Quantity {
        prefix,
        value,
        low,
        high,
        system,
        code,
        ..
    } = &query.filters[0].any_of[0]
    else {
        panic!("not a quantity");
    };
    assert_eq!(*prefix, Prefix::Gt);
    assert_eq!(*value, 5.4);
    assert!((low - 5.35).abs() < 1e-9 && (high - 5.45).abs() < 1e-9);
    assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
    assert_eq!(code.as_deref(), Some("mg"));
    assert!(parse("Observation", &[("value-quantity", "lots")]).is_err());
}

#[test]
fn references_bare_typed_and_chained() {
    let query = parse(
        "Observation",
        &[
            ("subject", "Patient/p1"),
            ("patient", "p2"),
            ("subject:Patient.identifier", "sys|42"),
            ("patient.birthdate", "1950"),
        ],
    )
    .unwrap();
    assert!(
        matches!(&query.filters[0].any_of[0], Predicate::Reference { target_type: Some(t), id, .. } if t == "Patient" && id == "p1")
    );
    assert!(
        matches!(&query.filters[1].any_of[0], Predicate::Reference { target_type: Some(t), id, .. } if t == "Patient" && id == "p2")
    );
    assert!(
        matches!(&query.filters[2].any_of[0], Predicate::Chain { target_type, inner, .. } if target_type == "Patient" && matches!(**inner, Predicate::Token { .. }))
    );
    assert!(
        matches!(&query.filters[3].any_of[0], Predicate::Chain { inner, .. } if matches!(**inner, Predicate::Date { .. }))
    );
    assert!(parse("Observation", &[("subject:Patient.organization.name", "x")]).is_err());
}

#[test]
fn result_parameters() {
    let query = parse(
        "Observation",
        &[
            ("_count", "1000"),
            ("_sort", "-date,_id"),
            ("_total", "none"),
            ("_summary", "count"),
            ("_elements", "code,Observation.status"),
            ("_include", "Observation:patient"),
            ("_revinclude:iterate", "DiagnosticReport:result"),
        ],
    )
    .unwrap();
    assert_eq!(query.count, MAX_COUNT);
    assert_eq!(query.sort.len(), 2);
    assert!(query.sort[0].descending);
    assert_eq!(query.total, Total::None);
    assert_eq!(query.summary, Summary::Count);
    assert_eq!(
        query.elements,
        Some(vec!["code".to_owned(), "status".to_owned()])
    );
    assert_eq!(query.include[0].param.code, "patient");
    assert!(query.revinclude[0].iterate);
    assert!(parse("Observation", &[("_include", "Observation:code")]).is_err());
    assert!(parse("Observation", &[("_count", "many")]).is_err());
}

#[test]
fn a_date_cut_inside_a_character_is_refused_not_a_panic() {
    // Found by fuzz/run search_parameters: the minute form was split at byte 16.
    assert!(parse_date("date", "2026-12-01T10:0あ", 0).is_err());
    assert!(parse_date("_lastUpdated", "le20:6-12-01T10:0\u{fffd}+09:00", 0).is_err());
    assert!(parse_date("date", "2026-12-01T10:00あ", 0).is_err());
}

#[test]
fn limits_are_refused_by_name_before_anything_runs() {
    let refused = |pairs: Vec<(String, String)>, limit: &str| {
        let error = SearchQuery::parse("Observation", &pairs, 0, false).unwrap_err();
        assert!(error.reason.contains(limit), "{error} should name {limit}");
    };
    let codes: Vec<(String, String)> = (0..=limits::MAX_PARAMETERS)
        .map(|i| ("code".to_owned(), format!("c{i}")))
        .collect();
    refused(codes.clone(), "max_parameters");
    assert!(SearchQuery::parse("Observation", &codes[1..], 0, false).is_ok());
    // Transport parameters do not count.
    let mut with_format = codes[1..].to_vec();
    with_format.push(("_format".to_owned(), "xml".to_owned()));
    assert!(SearchQuery::parse("Observation", &with_format, 0, false).is_ok());
    let many = (0..=limits::MAX_VALUES)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    refused(vec![("code".to_owned(), many)], "max_values");
    let values = |n: usize| {
        (0..n)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let spread: Vec<(String, String)> = (0..3)
        .map(|_| ("code".to_owned(), values(limits::MAX_VALUES)))
        .collect();
    refused(spread, "max_alternatives");
    refused(
        vec![("code".to_owned(), "x".repeat(limits::MAX_VALUE_BYTES + 1))],
        "max_value_bytes",
    );
    // A NUL no stored value holds (and PostgreSQL's text cannot take), in a value or a name.
    refused(vec![("code".to_owned(), "3A\u{0}010".to_owned())], "NUL");
    refused(vec![("co\u{0}de".to_owned(), "3A010".to_owned())], "NUL");
    refused(
        vec![("_count".to_owned(), (MAX_COUNT + 1).to_string())],
        "_count",
    );
    refused(
        (0..=limits::MAX_INCLUDES)
            .map(|_| ("_include".to_owned(), "Observation:patient".to_owned()))
            .collect(),
        "max_includes",
    );
    refused(
        vec![(
            "_sort".to_owned(),
            ["date"; limits::MAX_SORT_KEYS + 1].join(","),
        )],
        "max_sort_keys",
    );
    refused(
        vec![(
            "subject:Patient.organization.name".to_owned(),
            "x".to_owned(),
        )],
        "max_chain_depth",
    );
    // Words of full-text values: each is a substring test over a text.
    let words = vec!["褥"; limits::MAX_TEXT_TERMS + 1].join(" ");
    refused(
        vec![("_content".to_owned(), words.clone())],
        "max_text_terms",
    );
    let half = vec!["褥"; limits::MAX_TEXT_TERMS / 2 + 1].join("\u{3000}");
    refused(
        vec![
            ("_text".to_owned(), half.clone()),
            ("_content".to_owned(), half),
        ],
        "max_text_terms",
    );
    let refused_doc = |pairs: Vec<(String, String)>, limit: &str| {
        let error = SearchQuery::parse("DocumentReference", &pairs, 0, false).unwrap_err();
        assert!(error.reason.contains(limit), "{error} should name {limit}");
    };
    // Text alternatives count among all alternatives.
    refused_doc(
        (0..3)
            .map(|_| ("_content".to_owned(), values(limits::MAX_VALUES)))
            .collect(),
        "max_",
    );
    // Repeated words are one test.
    let query = SearchQuery::parse(
        "DocumentReference",
        &[("_content".to_owned(), "褥瘡 褥瘡 ｶﾞｰｾﾞ".to_owned())],
        0,
        true,
    )
    .unwrap();
    match &query.filters[0].any_of[0] {
        Predicate::Text { terms, .. } => assert_eq!(terms, &["褥瘡", "ガーゼ"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_parameters_are_ignored_or_refused() {
    let query = parse("Observation", &[("colour", "blue"), ("_format", "json")]).unwrap();
    assert_eq!(query.ignored, vec!["colour".to_owned()]);
    assert!(SearchQuery::parse("Observation", &pairs(&[("colour", "blue")]), 0, true).is_err());
}

#[test]
fn missing_and_bad_modifiers() {
    let query = parse("Observation", &[("value-quantity:missing", "true")]).unwrap();
    assert!(matches!(
        query.filters[0].any_of[0],
        Predicate::Missing { missing: true, .. }
    ));
    assert!(parse("Observation", &[("code:below", "x")]).is_err());
    assert!(parse("Observation", &[("date:exact", "2020")]).is_err());
}
