//! What stock FHIR clients (fhirpy, fhir-kit-client, the SMART JS client, fhirclient) send,
//! over real HTTP: operations by POST, the base URL with a trailing slash, batch Bundles, SMART
//! discovery under the base, `_summary`/`_elements` on read, honest self links, compartment
//! searches and `If-Modified-Since`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::{NOW, entry_ids, get, link, request, start};
use tsunagi_store::{Governance, governance::AuditFilter};

const FHIR_JSON: (&str, &str) = ("content-type", "application/fhir+json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn operations_that_change_nothing_take_post_with_parameters_or_a_form() {
    let (addr, _store, _dir) = start().await;
    let by_get = get(addr, "/fhir/Patient/p1/$everything?_count=5").await;
    assert_eq!(by_get.status, 200);
    let expected = entry_ids(&by_get.json());
    assert_eq!(expected.len(), 5);

    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_count", "valueInteger": 5}
    ]});
    let by_post = request(
        addr,
        "POST",
        "/fhir/Patient/p1/$everything",
        &[FHIR_JSON],
        &parameters.to_string(),
    )
    .await;
    assert_eq!(
        by_post.status,
        200,
        "{}",
        String::from_utf8_lossy(&by_post.body)
    );
    assert_eq!(entry_ids(&by_post.json()), expected);
    // fhir-kit-client posts an empty body; a form works too.
    let empty = request(addr, "POST", "/fhir/Patient/p1/$everything", &[], "").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["total"], by_get.json()["total"]);
    let form = request(
        addr,
        "POST",
        "/fhir/Patient/p1/$everything",
        &[FORM],
        "_count=5",
    )
    .await;
    assert_eq!(entry_ids(&form.json()), expected);

    // $lastn with the patient as a Reference value.
    let lastn_get = get(addr, "/fhir/Observation/$lastn?patient=Patient/p1&max=3").await;
    assert_eq!(lastn_get.status, 200);
    let lastn_post = request(
        addr,
        "POST",
        "/fhir/Observation/$lastn",
        &[FHIR_JSON],
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
            {"name": "max", "valueInteger": 3}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(lastn_post.status, 200);
    assert_eq!(entry_ids(&lastn_post.json()), entry_ids(&lastn_get.json()));
    assert_eq!(entry_ids(&lastn_post.json()).len(), 3);

    // $ihe-pix with an Identifier value answers as the GET with its token.
    let system = "urn:oid:1.2.392.100495.20.3.51.10610100010";
    let pix_get = get(
        addr,
        &format!("/fhir/Patient/$ihe-pix?sourceIdentifier={system}|1"),
    )
    .await;
    let pix_post = request(
        addr,
        "POST",
        "/fhir/Patient/$ihe-pix",
        &[FHIR_JSON],
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "sourceIdentifier", "valueIdentifier": {"system": system, "value": "1"}}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(pix_get.status, 200);
    assert_eq!(pix_post.status, pix_get.status);
    assert_eq!(pix_post.json()["parameter"], pix_get.json()["parameter"]);

    // What cannot be a parameter of these operations is refused with an outcome.
    for (body, said) in [
        (
            json!({"resourceType": "Parameters", "parameter": [{"name": "_count", "resource": {"resourceType": "Patient"}}]}),
            "only primitive values",
        ),
        (json!({"resourceType": "Patient"}), "takes a Parameters"),
        (
            json!({"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}),
            "has no name",
        ),
    ] {
        let reply = request(
            addr,
            "POST",
            "/fhir/Patient/p1/$everything",
            &[FHIR_JSON],
            &body.to_string(),
        )
        .await;
        assert_eq!(reply.status, 400, "{body}");
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains(said), "{text}");
    }
    let plain = request(
        addr,
        "POST",
        "/fhir/Patient/p1/$everything",
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(plain.status, 415);
    // $validate of a stored resource takes GET or POST, read as a read is.
    let stored = get(addr, "/fhir/Patient/p1/$validate").await;
    assert_eq!(stored.status, 200);
    let said = stored.json();
    assert_eq!(said["resourceType"], "OperationOutcome");
    assert_eq!(said["issue"][0]["severity"], "information");
    let unknown_profile = request(
        addr,
        "POST",
        "/fhir/Patient/p1/$validate",
        &[FHIR_JSON],
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "profile", "valueCanonical": "http://example.org/StructureDefinition/nothing"}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(unknown_profile.status, 400);
    assert_eq!(
        get(addr, "/fhir/Patient/nobody/$validate").await.status,
        404
    );
    // Type-level $validate needs the resource: GET says how to call it.
    let validate = get(addr, "/fhir/Patient/$validate").await;
    assert_eq!(validate.status, 400);
    assert!(
        validate.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("POST the resource")
    );
}

#[tokio::test]
async fn the_base_with_a_trailing_slash_is_the_base() {
    let (addr, _store, _dir) = start().await;
    let no_token = [("authorization", "")];
    for target in ["/fhir/", "/fhir", "/fhir/metadata"] {
        let reply = request(addr, "GET", target, &no_token, "").await;
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(reply.json()["resourceType"], "CapabilityStatement");
    }
    // POST to the base still needs a token, with or without the slash.
    let batch = json!({"resourceType": "Bundle", "type": "batch"}).to_string();
    for target in ["/fhir/", "/fhir"] {
        let refused = request(addr, "POST", target, &[no_token[0], FHIR_JSON], &batch).await;
        assert_eq!(refused.status, 401, "{target}");
        let answered = request(addr, "POST", target, &[FHIR_JSON], &batch).await;
        assert_eq!(answered.status, 200, "{target}");
        assert_eq!(answered.json()["type"], "batch-response");
    }
}

#[tokio::test]
async fn a_batch_answers_each_entry_as_if_sent_alone() {
    let (addr, store, _dir) = start().await;
    let before = store.audit_count().await.unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "Observation?patient=p1&_count=2&_total=accurate"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"request": {"method": "GET", "url": "Patient/p9"}},
        {"request": {"method": "GET", "url": "Patient/p1", "ifNoneMatch": "W/\"1\""}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "http://elsewhere.example/fhir/Patient/p1"}},
        {"request": {"method": "GET", "url": "Patient/../../metrics"}},
        {"request": {"method": "POST", "url": "/fhir/"}, "resource": {"resourceType": "Bundle", "type": "batch"}},
        {"request": {"method": "GET", "url": "Patient/p1", "ifModifiedSince": "2023-11-15T07:13:20+09:00"}},
        {"request": {"method": "GET", "url": "Patient/p1?_format=xml&_pretty=true"}}
    ]});
    let reply = request(addr, "POST", "/fhir/", &[FHIR_JSON], &bundle.to_string()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = reply.json();
    assert_eq!(answer["type"], "batch-response");
    let entries = answer["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 11);
    let status = |i: usize| {
        entries[i]["response"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(0), "200 OK");
    assert_eq!(entries[0]["resource"]["id"], "p1");
    assert_eq!(entries[0]["response"]["etag"], "W/\"1\"");
    assert_eq!(
        entries[0]["response"]["lastModified"],
        "2023-11-15T07:13:20.000+09:00"
    );
    assert_eq!(status(1), "200 OK");
    assert_eq!(entries[1]["resource"]["type"], "searchset");
    assert_eq!(entries[1]["resource"]["total"], 25);
    assert_eq!(entry_ids(&entries[1]["resource"]).len(), 2);
    assert_eq!(status(2), "404 Not Found");
    assert_eq!(
        entries[2]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(status(3), "410 Gone");
    assert_eq!(status(4), "304 Not Modified");
    assert!(entries[4].get("resource").is_none());
    assert_eq!(status(5), "405 Method Not Allowed");
    // ifModifiedSince is an instant in a Bundle: the same second answers 304.
    assert_eq!(status(9), "304 Not Modified");
    // The batch answers in JSON whatever an entry's URL asks.
    assert_eq!(status(10), "200 OK");
    assert_eq!(entries[10]["resource"]["id"], "p1");
    for (i, entry) in entries.iter().enumerate().skip(6).take(3) {
        assert_eq!(status(i), "400 Bad Request", "entry {i}: {entry}");
        assert_eq!(
            entry["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
    }
    // Each entry that reached the API was audited as a request of its own: the three that
    // touched p1 (read, search, conditional read) name it.
    let about_p1 = store
        .audit(&AuditFilter {
            patient: Some("p1".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let paths: Vec<String> = about_p1
        .iter()
        .map(|listed| {
            let event = tsunagi_store::audit::render(&listed.record);
            event["subtype"][0]["code"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        paths.iter().filter(|code| *code == "read").count() >= 1
            && paths.iter().any(|code| code == "search-type"),
        "{paths:?}"
    );
    assert!(store.audit_count().await.unwrap() >= before + 7);

    // Another facility's client gets each entry as it would alone: p1 is not visible to it.
    let keys = tsunagi_server::security::signing_keys(store.as_ref(), NOW)
        .await
        .unwrap();
    store
        .put_facility(&tsunagi_store::governance::Facility {
            code: "0610999991".into(),
            name: "診療所".into(),
            kind: "clinic".into(),
            active: true,
        })
        .await
        .unwrap();
    let other = support::system_client(
        &store,
        &tsunagi_server::Settings::default(),
        &keys,
        "clinic-system",
        "0610999991",
        r#"{"keys":[]}"#,
    )
    .await;
    let bearer = format!("Bearer {other}");
    let theirs = request(
        addr,
        "POST",
        "/fhir",
        &[("authorization", bearer.as_str()), FHIR_JSON],
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Observation?patient=p1&_total=accurate"}}
        ]})
        .to_string(),
    )
    .await
    .json();
    assert_eq!(theirs["entry"][0]["response"]["status"], "404 Not Found");
    assert_eq!(theirs["entry"][1]["resource"]["total"], 0);

    // A Bundle that is not valid FHIR is refused whole, naming the entry.
    let no_method = request(
        addr,
        "POST",
        "/fhir",
        &[FHIR_JSON],
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"request": {"url": "Patient/p1"}}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(no_method.status, 422);
    assert_eq!(
        no_method.json()["issue"][1]["expression"][0],
        "Bundle.entry[1].request.method"
    );

    // Too many entries for one batch: refused whole, nothing run.
    let many: Vec<Value> = (0..201)
        .map(|_| json!({"request": {"method": "GET", "url": "Patient/p1"}}))
        .collect();
    let too_many = request(
        addr,
        "POST",
        "/fhir",
        &[FHIR_JSON],
        &json!({"resourceType": "Bundle", "type": "batch", "entry": many}).to_string(),
    )
    .await;
    assert_eq!(too_many.status, 422);

    // Not a batch or a transaction: refused as a whole.
    let collection = request(
        addr,
        "POST",
        "/fhir",
        &[FHIR_JSON],
        &json!({"resourceType": "Bundle", "type": "collection"}).to_string(),
    )
    .await;
    assert_eq!(collection.status, 400);
}

#[tokio::test]
async fn smart_discovery_is_open_under_the_base_and_named_in_the_capability_statement() {
    let (addr, _store, _dir) = start().await;
    let no_token = [("authorization", "")];
    let under_base = request(
        addr,
        "GET",
        "/fhir/.well-known/smart-configuration",
        &no_token,
        "",
    )
    .await;
    assert_eq!(under_base.status, 200);
    let discovery = under_base.json();
    let token_url = discovery["token_endpoint"].as_str().unwrap().to_owned();
    assert!(token_url.ends_with("/auth/token"), "{token_url}");
    let at_root = request(
        addr,
        "GET",
        "/.well-known/smart-configuration",
        &no_token,
        "",
    )
    .await;
    assert_eq!(at_root.json(), discovery);
    let statement = request(addr, "GET", "/fhir/metadata", &no_token, "")
        .await
        .json();
    let security = &statement["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let oauth = security["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
        .expect("the oauth-uris extension");
    assert_eq!(oauth["extension"][0]["url"], "token");
    assert_eq!(oauth["extension"][0]["valueUri"], token_url.as_str());
    assert_eq!(
        statement["rest"][0]["compartment"][0],
        "http://hl7.org/fhir/CompartmentDefinition/patient"
    );
}

#[tokio::test]
async fn read_and_vread_take_summary_and_elements() {
    let (addr, _store, _dir) = start().await;
    for target in [
        "/fhir/Patient/p1?_elements=gender",
        "/fhir/Patient/p1/_history/1?_elements=gender",
    ] {
        let reduced = get(addr, target).await;
        assert_eq!(reduced.status, 200, "{target}");
        let patient = reduced.json();
        assert_eq!(patient["gender"], "male", "{target}");
        assert!(patient.get("name").is_none(), "{target}: {patient}");
        assert_eq!(patient["meta"]["tag"][0]["code"], "SUBSETTED", "{target}");
    }
    let summary = get(addr, "/fhir/Observation/o1?_summary=true").await.json();
    assert!(summary.get("code").is_some());
    assert!(summary.get("category").is_none(), "{summary}");
    assert_eq!(summary["meta"]["tag"][0]["code"], "SUBSETTED");
    let data = get(addr, "/fhir/Patient/p1?_summary=false").await.json();
    assert!(data.get("name").is_some());
    assert!(data["meta"].get("tag").is_none());
    for bad in ["count", "bogus"] {
        let reply = get(addr, &format!("/fhir/Patient/p1?_summary={bad}")).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn self_links_repeat_only_what_was_applied() {
    let (addr, _store, _dir) = start().await;
    let bundle = get(addr, "/fhir/Observation?colour=blue&patient=p1&_count=3")
        .await
        .json();
    let own = link(&bundle, "self").unwrap();
    assert!(!own.contains("colour"), "{own}");
    assert!(own.contains("patient=p1"), "{own}");
    let next = link(&bundle, "next").unwrap();
    assert!(!next.contains("colour"), "{next}");
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert!(
        outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let strict = request(
        addr,
        "GET",
        "/fhir/Observation?colour=blue",
        &[("prefer", "handling=strict")],
        "",
    )
    .await;
    assert_eq!(strict.status, 400);
}

#[tokio::test]
async fn compartment_searches_are_searches_by_patient() {
    let (addr, _store, _dir) = start().await;
    let plain = get(
        addr,
        "/fhir/Observation?patient=p1&_count=10&_total=accurate",
    )
    .await
    .json();
    let compartment = get(
        addr,
        "/fhir/Patient/p1/Observation?_count=10&_total=accurate",
    )
    .await;
    assert_eq!(compartment.status, 200);
    let compartment = compartment.json();
    assert_eq!(compartment["total"], plain["total"]);
    assert_eq!(entry_ids(&compartment), entry_ids(&plain));
    let own = link(&compartment, "self").unwrap();
    assert!(own.contains("/fhir/Patient/p1/Observation?"), "{own}");
    // Paging stays on the compartment's path, and its next page is the plain search's.
    let next = link(&compartment, "next").unwrap();
    assert!(next.contains("/fhir/Patient/p1/Observation?"), "{next}");
    let path = next.split_once("/fhir").unwrap().1;
    let page_two = get(addr, &format!("/fhir{path}")).await.json();
    assert_eq!(entry_ids(&page_two).len(), 10);
    // Another patient's compartment holds none of them; a type outside it is refused.
    let empty = get(addr, "/fhir/Patient/nobody/Observation?_total=accurate")
        .await
        .json();
    assert_eq!(empty["total"], 0);
    assert_eq!(get(addr, "/fhir/Patient/p1/Organization").await.status, 404);
    assert_eq!(get(addr, "/fhir/Patient/p1/notatype").await.status, 404);
}

#[tokio::test]
async fn if_modified_since_answers_304_when_nothing_changed() {
    let (addr, _store, _dir) = start().await;
    let read = get(addr, "/fhir/Patient/p1").await;
    let modified = read.header("last-modified").unwrap().to_owned();
    let same = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("if-modified-since", modified.as_str())],
        "",
    )
    .await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some("W/\"1\""));
    for (since, status) in [
        ("Tue, 14 Nov 2023 22:13:19 GMT", 200),
        ("Wed, 15 Nov 2023 00:00:00 GMT", 304),
        ("not a date", 200),
    ] {
        let reply = request(
            addr,
            "GET",
            "/fhir/Patient/p1",
            &[("if-modified-since", since)],
            "",
        )
        .await;
        assert_eq!(reply.status, status, "{since}");
    }
    // If-None-Match compares weakly: a strong spelling of the version matches too.
    let strong = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("if-none-match", "\"1\"")],
        "",
    )
    .await;
    assert_eq!(strong.status, 304);
    // If-None-Match wins when both are sent (RFC 7232 §6).
    let both = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[
            ("if-modified-since", modified.as_str()),
            ("if-none-match", "W/\"7\""),
        ],
        "",
    )
    .await;
    assert_eq!(both.status, 200);
    let _: Value = both.json();
}

#[tokio::test]
async fn nothing_served_holds_an_empty_value() {
    let (addr, _store, _dir) = start().await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "Observation?code=nothing"}}
    ]})
    .to_string();
    let empty_batch = json!({"resourceType": "Bundle", "type": "batch"}).to_string();
    let requests: Vec<(&str, &str, &str)> = vec![
        ("GET", "/fhir/metadata", ""),
        ("GET", "/fhir/.well-known/smart-configuration", ""),
        ("GET", "/fhir/Patient/p1", ""),
        ("GET", "/fhir/Patient/p1?_summary=true", ""),
        ("GET", "/fhir/Observation?patient=p1&_count=3", ""),
        // Searches that find nothing: no `entry: []`.
        ("GET", "/fhir/Observation?code=nothing", ""),
        ("GET", "/fhir/Patient/nobody/Observation", ""),
        ("GET", "/fhir/Observation?colour=blue&code=nothing", ""),
        ("GET", "/fhir/Patient/p1/$everything", ""),
        ("GET", "/fhir/Patient/p1/_history", ""),
        ("GET", "/fhir/Patient/_history?_since=2099-01-01", ""),
        ("GET", "/fhir/_history?_count=5", ""),
        ("GET", "/fhir/Observation/$lastn?patient=p1", ""),
        ("GET", "/fhir/Patient/nobody", ""),
        ("GET", "/fhir/Patient/p9", ""),
        ("POST", "/fhir", &batch),
        ("POST", "/fhir/", &empty_batch),
    ];
    for (method, target, body) in requests {
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[FHIR_JSON] };
        let reply = request(addr, method, target, headers, body).await;
        let value = reply.json();
        let found = tsunagi_fhir::json::empty_values(&value, "$");
        assert!(found.is_empty(), "{method} {target}: {found:?} in {value}");
    }
}
