//! Search behaviours of the store conformance suite: every parameter type and prefix, patient
//! scope, chains, sorting, includes and compartments, on a small fixed data set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use tsunagi_fhir::query::SearchQuery;

use crate::{Access, Batch, Operation, ResourceWrite, Store};

/// The suites check storage semantics; what each facility may see is `conformance_access`.
const ALL: Access = Access::Unrestricted;

const JLAC10: &str = "urn:oid:1.2.392.200119.4.504";

fn write(resource: Value) -> ResourceWrite {
    let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
    let id = resource["id"].as_str().unwrap().to_owned();
    ResourceWrite::from_json(&resource_type, &id, &resource).unwrap()
}

fn patient(id: &str, kana: &str, birth: &str, gender: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10610100010", "value": id}],
        "name": [
            {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE"}], "use": "official", "text": "山田 太郎", "family": "山田", "given": ["太郎"]},
            {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL"}], "use": "usual", "text": kana, "family": kana.split(' ').next().unwrap(), "given": [kana.split(' ').nth(1).unwrap()]}
        ],
        "gender": gender,
        "birthDate": birth
    })
}

fn lab(id: &str, patient: &str, code: &str, text: &str, when: &str, value: Option<f64>) -> Value {
    let mut resource = json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": JLAC10, "code": code, "display": text}], "text": text},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": when
    });
    if let Some(value) = value {
        resource["valueQuantity"] = json!({"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"});
    }
    resource
}

async fn load(store: &dyn Store) {
    let resources = vec![
        write(patient("p1", "ヤマダ タロウ", "1950-04-01", "male")),
        write(patient("p2", "ヤマモト ハナコ", "1962-11-30", "female")),
        write(patient("p3", "タナカ ジロウ", "1950-04-01", "male")),
        write(lab(
            "o1",
            "p1",
            "3A010",
            "総蛋白",
            "2024-05-01T09:00:00+09:00",
            Some(7.2),
        )),
        write(lab(
            "o2",
            "p1",
            "3D010",
            "血糖",
            "2024-05-02T09:00:00+09:00",
            Some(110.0),
        )),
        write(lab(
            "o3",
            "p1",
            "3A010",
            "総蛋白",
            "2024-06-01T09:00:00+09:00",
            Some(6.5),
        )),
        write(lab(
            "o4",
            "p2",
            "3A010",
            "総蛋白",
            "2024-05-01T10:00:00+09:00",
            Some(8.0),
        )),
        write(lab("o5", "p3", "5C070", "CRP定性", "2023", None)),
        write(json!({
            "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
            "code": {"text": "検体検査"},
            "subject": {"reference": "Patient/p1"},
            "result": [{"reference": "Observation/o1"}, {"reference": "Observation/o2"}]
        })),
    ];
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: "search".into(),
                facility: crate::conformance::FACILITY.to_owned(),
                resources,
            }],
        })
        .await
        .unwrap();
}

async fn ids(store: &dyn Store, resource_type: &str, params: &[(&str, &str)]) -> Vec<String> {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let query = SearchQuery::parse(resource_type, &pairs, 1_800_000_000, true)
        .unwrap_or_else(|error| panic!("{params:?}: {error}"));
    let keys = store.search(&ALL, &query).await.unwrap();
    let count = store.count(&ALL, &query).await.unwrap();
    assert_eq!(
        count as usize,
        keys.len(),
        "count agrees with search for {params:?}"
    );
    store
        .fetch(&ALL, &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|resource| resource.id)
        .collect()
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

pub async fn search_tokens_strings_and_references(store: &dyn Store) {
    load(store).await;
    let s = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sorted(ids(store, "Observation", &[("code", "3A010")]).await),
        s(&["o1", "o3", "o4"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("code", &format!("{JLAC10}|3A010"))]
            )
            .await
        ),
        s(&["o1", "o3", "o4"])
    );
    // Stored under the OID, found by the URL form too (both sides are canonicalised).
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[(
                    "code",
                    "http://medis.or.jp/CodeSystem/master-JLAC10-17digits|3A010"
                )]
            )
            .await
        )
        .len(),
        3
    );
    assert!(
        ids(store, "Observation", &[("code", "|3A010")])
            .await
            .is_empty()
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("code", "3A010,3D010"), ("patient", "p1")]
            )
            .await
        ),
        s(&["o1", "o2", "o3"])
    );
    assert_eq!(
        sorted(ids(store, "Observation", &[("code:not", "3A010")]).await),
        s(&["o2", "o5"])
    );
    assert_eq!(
        sorted(ids(store, "Observation", &[("code:text", "蛋白")]).await),
        s(&["o1", "o3", "o4"])
    );
    // Patient given bare, typed, as subject; unknown patients match nothing.
    assert_eq!(
        sorted(ids(store, "Observation", &[("patient", "p1")]).await),
        s(&["o1", "o2", "o3"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("subject", "Patient/p1"), ("code", "3A010")]
            )
            .await
        ),
        s(&["o1", "o3"])
    );
    assert!(
        ids(store, "Observation", &[("patient", "nobody")])
            .await
            .is_empty()
    );
    // A second patient filter mixing target types is tested on its own values, not the scope's.
    assert!(
        ids(
            store,
            "Observation",
            &[("patient", "p1"), ("subject", "Patient/p3,Group/g")]
        )
        .await
        .is_empty()
    );
    // Strings: starts-with, width-insensitive, exact, contains.

    assert_eq!(
        sorted(ids(store, "Patient", &[("jp-kana-sort", "ﾔﾏ")]).await),
        s(&["p1", "p2"])
    );
    assert_eq!(
        sorted(ids(store, "Patient", &[("name", "やまだ")]).await),
        s(&["p1"])
    );
    assert!(
        ids(store, "Patient", &[("family:exact", "ヤマ")])
            .await
            .is_empty()
    );
    assert_eq!(
        sorted(ids(store, "Patient", &[("name:contains", "ハナ")]).await),
        s(&["p2"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Patient",
                &[("jp-kana-sort", "ヤマダ"), ("birthdate", "1950-04-01")]
            )
            .await
        ),
        s(&["p1"])
    );
    assert_eq!(
        sorted(ids(store, "Patient", &[("gender", "male"), ("_id", "p1,p2")]).await),
        s(&["p1"])
    );
    // Chains and references between clinical resources.
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[(
                    "subject:Patient.identifier",
                    "urn:oid:1.2.392.100495.20.3.51.10610100010|p2"
                )]
            )
            .await
        ),
        s(&["o4"])
    );
    assert_eq!(
        sorted(ids(store, "Observation", &[("patient.birthdate", "1950")]).await),
        s(&["o1", "o2", "o3", "o5"])
    );
    // A chain through the patient narrows like a patient filter, also with other filters.
    assert!(
        ids(
            store,
            "Observation",
            &[(
                "subject:Patient.identifier",
                "urn:oid:1.2.392.100495.20.3.51.10610100010|nobody"
            )]
        )
        .await
        .is_empty()
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("patient.birthdate", "1950"), ("date", "2024-05")]
            )
            .await
        ),
        sorted(
            ids(
                store,
                "Observation",
                &[("patient", "p1"), ("date", "2024-05")]
            )
            .await
        )
    );
    assert_eq!(
        ids(store, "DiagnosticReport", &[("result", "Observation/o2")]).await,
        s(&["r1"])
    );
    // :missing.
    assert_eq!(
        ids(store, "Observation", &[("value-quantity:missing", "true")]).await,
        s(&["o5"])
    );
    assert_eq!(
        ids(store, "Observation", &[("value-quantity:missing", "false")])
            .await
            .len(),
        4
    );
}

pub async fn search_dates_quantities_and_sorting(store: &dyn Store) {
    load(store).await;
    let s = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sorted(ids(store, "Observation", &[("date", "2024-05")]).await),
        s(&["o1", "o2", "o4"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("patient", "p1"), ("date", "ge2024-05-02")]
            )
            .await
        ),
        s(&["o2", "o3"])
    );
    assert_eq!(
        sorted(ids(store, "Observation", &[("date", "lt2024-05-01")]).await),
        s(&["o5"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("date", "ge2024-05-01"), ("date", "le2024-05-31")]
            )
            .await
        ),
        s(&["o1", "o2", "o4"])
    );
    // A year-precision value is inside 2023 but not inside one day of it.
    assert_eq!(
        ids(store, "Observation", &[("date", "2023")]).await,
        s(&["o5"])
    );
    assert!(
        ids(store, "Observation", &[("date", "2023-06-01")])
            .await
            .is_empty()
    );
    assert_eq!(
        ids(
            store,
            "Observation",
            &[("date", "sa2023-12-31"), ("patient", "p2")]
        )
        .await,
        s(&["o4"])
    );
    assert_eq!(
        ids(store, "Observation", &[("date", "eb2024-01-01")]).await,
        s(&["o5"])
    );
    assert_eq!(
        ids(store, "Observation", &[("date", "ne2023")]).await.len(),
        4
    );
    // Quantities: precision ranges and prefixes, with and without units.
    assert_eq!(
        ids(store, "Observation", &[("value-quantity", "7.2")]).await,
        s(&["o1"])
    );
    // "7" stands for [6.5, 7.5).
    assert_eq!(
        sorted(ids(store, "Observation", &[("value-quantity", "7")]).await),
        s(&["o1", "o3"])
    );
    assert_eq!(
        sorted(ids(store, "Observation", &[("value-quantity", "gt7.5")]).await),
        s(&["o2", "o4"])
    );
    assert_eq!(
        sorted(
            ids(
                store,
                "Observation",
                &[("value-quantity", "le7.2|http://unitsofmeasure.org|mg/dL")]
            )
            .await
        ),
        s(&["o1", "o3"])
    );
    assert!(
        ids(store, "Observation", &[("value-quantity", "7.2||g")])
            .await
            .is_empty()
    );
    // Sorting: by date both ways, missing values last, several keys.
    assert_eq!(
        ids(store, "Observation", &[("_sort", "date")]).await,
        s(&["o5", "o1", "o4", "o2", "o3"])
    );
    assert_eq!(
        ids(store, "Observation", &[("_sort", "-date")]).await,
        s(&["o3", "o2", "o4", "o1", "o5"])
    );
    assert_eq!(
        ids(store, "Observation", &[("_sort", "-value-quantity")]).await,
        s(&["o2", "o4", "o1", "o3", "o5"])
    );
    assert_eq!(
        ids(store, "Patient", &[("_sort", "birthdate,-_id")]).await,
        s(&["p3", "p1", "p2"])
    );
    assert_eq!(
        ids(store, "Patient", &[("_sort", "-_id")]).await,
        s(&["p3", "p2", "p1"])
    );
    assert_eq!(
        ids(store, "Patient", &[("_lastUpdated", "gt2000-01-01")])
            .await
            .len(),
        3
    );
    assert!(
        ids(store, "Patient", &[("_lastUpdated", "lt2000-01-01")])
            .await
            .is_empty()
    );
}

pub async fn search_includes_compartments_and_history(store: &dyn Store) {
    load(store).await;
    let keys = store
        .keys_of(
            &ALL,
            &[
                ("Patient".into(), "p1".into()),
                ("Patient".into(), "zz".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let result_param = tsunagi_fhir::search::param("DiagnosticReport", "result")
        .unwrap()
        .id;
    let referencing = store
        .referencing(
            &ALL,
            result_param,
            &[("Observation".into(), "o1".into())],
            100,
        )
        .await
        .unwrap();
    let fetched = store.fetch(&ALL, &referencing).await.unwrap();
    assert_eq!(
        fetched.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["r1"]
    );
    let everything = store.compartment(&ALL, "p1", &[], None).await.unwrap();
    let fetched = store.fetch(&ALL, &everything).await.unwrap();
    let listed: Vec<String> = fetched
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    assert_eq!(listed[0], "Patient/p1", "the Patient comes first");
    assert_eq!(
        sorted(listed),
        vec![
            "DiagnosticReport/r1",
            "Observation/o1",
            "Observation/o2",
            "Observation/o3",
            "Patient/p1"
        ]
    );
    let only = store
        .compartment(&ALL, "p1", &["DiagnosticReport".into()], None)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert!(
        store
            .compartment(&ALL, "p1", &[], Some(i64::MAX))
            .await
            .unwrap()
            .is_empty()
    );
    let history = store
        .history_all(&ALL, Some("Patient"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    // Paging by cursor walks the whole listing once, in order, whatever the page size.
    let key = |e: &crate::HistoryEntry| (e.resource_type.clone(), e.id.clone(), e.version);
    for resource_type in [None, Some("Observation"), Some("Patient")] {
        let everything = store
            .history_all(&ALL, resource_type, None, None, 1000)
            .await
            .unwrap();
        assert!(!everything.is_empty());
        assert!(
            everything
                .iter()
                .all(|e| resource_type.is_none_or(|t| e.resource_type == t))
        );
        for size in [1, 2, 3, 5] {
            let mut walked = Vec::new();
            let mut cursor: Option<crate::HistoryCursor> = None;
            loop {
                let page = store
                    .history_all(&ALL, resource_type, None, cursor.as_ref(), size)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                let token = crate::HistoryCursor::after(last).token();
                cursor = Some(crate::HistoryCursor::parse(&token).unwrap());
                walked.extend(page.iter().map(key));
            }
            let expected: Vec<_> = everything.iter().map(key).collect();
            assert_eq!(walked, expected, "{resource_type:?}, page size {size}");
        }
        assert!(
            everything
                .windows(2)
                .all(|w| w[0].last_updated >= w[1].last_updated)
        );
    }
}

/// The most a search may ask for ([`tsunagi_fhir::query::limits`]) is answered, not failed by
/// the database (issue 17: 501 filters once broke SQLite's compound-statement limit): the most
/// parameters, the most values of one, and the most values in all, for tokens, strings,
/// references and chains.
pub async fn search_at_the_query_limits(store: &dyn Store) {
    use tsunagi_fhir::query::limits::{MAX_ALTERNATIVES, MAX_PARAMETERS, MAX_VALUES};
    load(store).await;
    let list = |count: usize, real: &str, fake: &dyn Fn(usize) -> String| {
        let mut values: Vec<String> = (1..count).map(fake).collect();
        values.push(real.to_owned());
        values.join(",")
    };
    let per_param = MAX_ALTERNATIVES / MAX_PARAMETERS;
    let real = format!("{JLAC10}|3A010");
    let codes = list(per_param, &real, &|i| format!("{JLAC10}|X{i}"));
    let expected = sorted(ids(store, "Observation", &[("code", &real)]).await);
    let params: Vec<(&str, &str)> = (0..MAX_PARAMETERS)
        .map(|_| ("code", codes.as_str()))
        .collect();
    assert_eq!(sorted(ids(store, "Observation", &params).await), expected);
    let widest = list(MAX_VALUES, &real, &|i| format!("{JLAC10}|X{i}"));
    assert_eq!(
        sorted(ids(store, "Observation", &[("code", &widest)]).await),
        expected
    );
    let subjects = list(per_param, "Patient/p1", &|i| format!("Patient/x{i}"));
    let chained = list(per_param, "p1", &|i| format!("x{i}"));
    let mixed: Vec<(&str, &str)> = (0..MAX_PARAMETERS)
        .map(|i| match i % 3 {
            0 => ("code", codes.as_str()),
            1 => ("subject", subjects.as_str()),
            _ => ("subject:Patient.identifier", chained.as_str()),
        })
        .collect();
    assert_eq!(
        sorted(ids(store, "Observation", &mixed).await),
        sorted(ids(store, "Observation", &[("code", &real), ("patient", "p1")]).await)
    );
    let names = list(per_param, "ヤマ", &|i| format!("ナマエ{i}"));
    let people: Vec<(&str, &str)> = (0..MAX_PARAMETERS)
        .map(|_| ("name", names.as_str()))
        .collect();
    assert_eq!(
        sorted(ids(store, "Patient", &people).await),
        vec!["p1".to_owned(), "p2".to_owned()]
    );
}

/// A value an element repeats inside one resource (the same identifier twice, a code in two
/// codings, a name twice) is one index row: the resource is found once, written in a batch,
/// rewritten in the same batch, and changed in a later one.
pub async fn repeated_values_in_one_resource_index_once(store: &dyn Store) {
    let twice = |gender: &str, birth: &str| {
        let mut resource = patient("p9", "ヤマダ タロウ", birth, gender);
        let identifier = resource["identifier"][0].clone();
        resource["identifier"] = json!([identifier.clone(), identifier]);
        let name = resource["name"][1].clone();
        resource["name"] = json!([resource["name"][0].clone(), name.clone(), name]);
        resource
    };
    let observation = |when: &str| {
        let mut observation = lab("o9", "p9", "3A010", "総蛋白", when, Some(0.0));
        let coding = observation["code"]["coding"][0].clone();
        observation["code"]["coding"] = json!([coding.clone(), coding]);
        observation
    };
    let replace = |source: &str, resources: Vec<ResourceWrite>| Operation::ReplaceSource {
        source_key: source.into(),
        facility: crate::conformance::FACILITY.to_owned(),
        resources,
    };
    store
        .apply(Batch {
            operations: vec![
                replace(
                    "a",
                    vec![
                        write(twice("male", "1950-04-01")),
                        write(observation("2024-05-01T09:00:00+09:00")),
                    ],
                ),
                replace("b", vec![write(twice("female", "1950-04-01"))]),
            ],
        })
        .await
        .unwrap();
    let one = |id: &str| vec![id.to_owned()];
    let expected = [one("p9"), one("p9"), one("p9"), one("o9"), one("o9")];
    assert_eq!(found_once(store).await, expected);
    // Changed content: both stored rows get new versions, their index rows replaced.
    let stats = store
        .apply(Batch {
            operations: vec![replace(
                "a",
                vec![
                    write(twice("female", "1950-04-02")),
                    write(observation("2024-05-02T09:00:00+09:00")),
                ],
            )],
        })
        .await
        .unwrap();
    let updated: u64 = stats.updated.values().sum();
    assert_eq!(updated, 2, "both stored rows changed: {stats:?}");
    assert_eq!(found_once(store).await, expected);
}

/// A NUL (U+0000) inside a resource's strings — an identifier, a name, a code — is kept in
/// the resource as sent and left out of its index rows, on both stores alike (PostgreSQL's text
/// cannot hold it): the batch commits and the values are found without it.
pub async fn a_nul_in_a_string_is_stored_and_indexed_without_it(store: &dyn Store) {
    let mut resource = patient("p\u{0}8", "ヤマ\u{0}ダ ハナコ", "1960-01-01", "female");
    resource["id"] = json!("p8");
    let mut observation = lab(
        "o8",
        "p8",
        "3A\u{0}010",
        "総蛋白",
        "2024-05-01T09:00:00+09:00",
        None,
    );
    observation["id"] = json!("o8");
    let replace = Operation::ReplaceSource {
        source_key: "nul".into(),
        facility: crate::conformance::FACILITY.to_owned(),
        resources: vec![write(resource), write(observation)],
    };
    store
        .apply(Batch {
            operations: vec![replace],
        })
        .await
        .unwrap();
    let stored = store.read(&ALL, "Patient", "p8").await.unwrap().unwrap();
    let content: Value = serde_json::from_slice(stored.content.as_ref().unwrap()).unwrap();
    assert_eq!(content["identifier"][0]["value"], "p\u{0}8", "kept as sent");
    assert_eq!(ids(store, "Patient", &[("identifier", "p8")]).await, ["p8"]);
    assert_eq!(ids(store, "Patient", &[("name", "ヤマダ")]).await, ["p8"]);
    let code = format!("{JLAC10}|3A010");
    assert_eq!(ids(store, "Observation", &[("code", &code)]).await, ["o8"]);
}

/// What [`repeated_values_in_one_resource_index_once`] searches for.
async fn found_once(store: &dyn Store) -> [Vec<String>; 5] {
    [
        ids(store, "Patient", &[("identifier", "p9")]).await,
        ids(store, "Patient", &[("name", "ヤマダ")]).await,
        ids(store, "Patient", &[("gender", "female")]).await,
        ids(
            store,
            "Observation",
            &[("code", &format!("{JLAC10}|3A010"))],
        )
        .await,
        ids(store, "Observation", &[("value-quantity", "0")]).await,
    ]
}
