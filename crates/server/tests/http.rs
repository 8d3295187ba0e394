//! The FHIR API over real HTTP on a loopback socket, against a real SQLite store: interactions,
//! status codes, headers, paging links and their stability while data is being written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::{entry_ids, get, link, observation, replace, request, start};

#[tokio::test]
async fn read_vread_and_status_codes() {
    let (addr, _store, _dir) = start().await;
    let read = get(addr, "/fhir/Patient/p1").await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.header("content-type"),
        Some("application/fhir+json; charset=utf-8")
    );
    assert_eq!(read.header("etag"), Some("W/\"1\""));
    assert_eq!(
        read.header("last-modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    let patient = read.json();
    assert_eq!(patient["meta"]["versionId"], "1");
    assert_eq!(
        patient["meta"]["lastUpdated"],
        "2023-11-15T07:13:20.000+09:00"
    );
    let cached = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("If-None-Match", "W/\"1\"")],
        "",
    )
    .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(get(addr, "/fhir/Patient/p1/_history/1").await.status, 200);
    assert_eq!(get(addr, "/fhir/Patient/p1/_history/7").await.status, 404);
    let unknown = get(addr, "/fhir/Patient/nobody").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["resourceType"], "OperationOutcome");
    assert_eq!(get(addr, "/fhir/Patient/p9").await.status, 410);
    let history = get(addr, "/fhir/Patient/p9/_history").await.json();
    assert_eq!(history["type"], "history");
    assert_eq!(history["entry"][0]["request"]["method"], "DELETE");
    for (method, target) in [
        ("DELETE", "/fhir/Patient/p1"),
        ("PUT", "/fhir/Patient/p1"),
        ("POST", "/fhir/Patient"),
        ("PATCH", "/fhir/Observation/o1"),
    ] {
        let reply = request(addr, method, target, &[], "").await;
        assert_eq!(reply.status, 405, "{method} {target}");
        assert_eq!(reply.json()["issue"][0]["code"], "not-supported");
    }
    let xml = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("Accept", "application/fhir+xml")],
        "",
    )
    .await;
    assert_eq!(xml.status, 200);
    assert_eq!(
        xml.header("content-type"),
        Some("application/fhir+xml; charset=utf-8")
    );
    assert_eq!(xml.header("etag"), Some("W/\"1\""));
    assert_eq!(tsunagi_fhir_xml::from_xml(&xml.body).unwrap(), patient);
    let missing_xml = get(addr, "/fhir/Patient/nobody?_format=xml").await;
    assert_eq!(missing_xml.status, 404);
    assert_eq!(
        tsunagi_fhir_xml::from_xml(&missing_xml.body).unwrap()["issue"][0]["code"],
        "not-found"
    );
    let search_json = get(addr, "/fhir/Observation?patient=p1&_count=5")
        .await
        .json();
    let search_xml = get(
        addr,
        "/fhir/Observation?patient=p1&_count=5&_format=xml&_pretty=true",
    )
    .await;
    let search_xml = tsunagi_fhir_xml::from_xml(&search_xml.body).unwrap();
    assert_eq!(search_xml["total"], 25);
    assert_eq!(search_xml["entry"], search_json["entry"]);
    assert_eq!(get(addr, "/fhir/Patient/p1?_format=ttl").await.status, 406);
    let other_version = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("Accept", "application/fhir+json; fhirVersion=5.0")],
        "",
    )
    .await;
    assert_eq!(other_version.status, 406);
    assert_eq!(
        get(addr, "/fhir/metadata").await.json()["fhirVersion"],
        "4.3.0"
    );
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/readyz").await.status, 200);
    assert_eq!(get(addr, "/health/live").await.status, 200);
    assert_eq!(get(addr, "/health/ready").await.status, 200);
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    assert!(metrics.contains("tsunagi_http_requests_total"));
    // By route (ids never in it) and status, and how long answers took.
    assert!(
        metrics.contains(
            "tsunagi_http_route_requests_total{method=\"GET\",route=\"/fhir/Patient/{id}\",status=\"406\"} 2"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("p1"), "an id in the metrics");
    assert!(metrics.contains("tsunagi_http_request_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(metrics.contains("tsunagi_http_request_duration_seconds_count"));
    // The database's queues, read at the scrape.
    assert!(metrics.contains("tsunagi_queues_up 1\n"), "{metrics}");
    assert!(metrics.contains("tsunagi_outbox_messages{state=\"pending\"} 0\n"));
    assert!(metrics.contains("tsunagi_hl7v2_quarantined_messages 0\n"));
    assert!(metrics.contains("# TYPE tsunagi_hl7v2_messages_total counter\n"));
    // Every series the sample Grafana dashboard queries is one the server exposes.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/grafana/tsunagi-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let queried: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("tsunagi_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!queried.is_empty());
    for series in queried {
        // A histogram's series are its family's name and a suffix; a family whose series all
        // carry labels (the scheduled pulls', counted by `tsunagi run --metrics`) is declared
        // before its first event.
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| series.strip_suffix(suffix))
            .unwrap_or(&series);
        assert!(
            metrics.contains(&series) || metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {series}, which /metrics lacks"
        );
    }
}

#[tokio::test]
async fn pages_are_stable_while_data_changes() {
    let (addr, store, _dir) = start().await;
    let first = get(addr, "/fhir/Observation?patient=p1&_count=10&_sort=date")
        .await
        .json();
    assert_eq!(first["total"], 25);
    let mut seen = entry_ids(&first);
    assert_eq!(seen[0], "o1");
    assert!(link(&first, "previous").is_none());
    let mut next = link(&first, "next").unwrap();
    assert!(
        next.starts_with(&format!("http://{addr}/fhir/Observation?")),
        "{next}"
    );
    // New observations arrive, and the last one of the snapshot is deleted, between pages.
    replace(
        store.as_ref(),
        "late",
        vec![observation("o0", "p1", 1), observation("o99", "p1", 30)],
    )
    .await;
    let mut kept =
        vec![json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "山田"}]})];
    kept.extend((1..=24).map(|day| observation(&format!("o{day}"), "p1", day)));
    replace(store.as_ref(), "p1", kept).await;
    loop {
        let target = next
            .strip_prefix(&format!("http://{addr}"))
            .unwrap()
            .to_owned();
        let page = get(addr, &target).await.json();
        assert_eq!(page["total"], 25, "the total is the snapshot's");
        seen.extend(entry_ids(&page));
        match link(&page, "next") {
            Some(url) => next = url,
            None => break,
        }
    }
    let expected: Vec<String> = (1..=24).map(|day| format!("o{day}")).collect();
    assert_eq!(
        seen, expected,
        "no repeats, no skips, no late arrivals; the deleted one is left out"
    );
    // An unknown snapshot is gone, not silently re-run.
    assert_eq!(
        get(addr, "/fhir/Observation?_snapshot=00&_offset=10")
            .await
            .status,
        410
    );
}

#[tokio::test]
async fn links_follow_the_address_the_client_used() {
    let (addr, _store, _dir) = start().await;
    let via_proxy = request(
        addr,
        "GET",
        "/fhir/Observation?patient=Patient/p1&_count=5",
        &[
            ("Host", "internal:9000"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "portal.example.jp"),
        ],
        "",
    )
    .await
    .json();
    let next = link(&via_proxy, "next").unwrap();
    assert!(
        next.starts_with("https://portal.example.jp/fhir/Observation?"),
        "{next}"
    );
    assert!(
        via_proxy["entry"][0]["fullUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://portal.example.jp/fhir/Observation/")
    );
    let direct = request(
        addr,
        "GET",
        "/fhir/Observation?patient=p1&_count=5",
        &[("Host", "gw.local:8443")],
        "",
    )
    .await
    .json();
    assert!(
        link(&direct, "self")
            .unwrap()
            .starts_with("http://gw.local:8443/fhir/")
    );
}

#[tokio::test]
async fn search_forms_includes_and_everything() {
    let (addr, _store, _dir) = start().await;
    let posted = request(
        addr,
        "POST",
        "/fhir/Observation/_search",
        &[],
        "patient=p1&date=ge2024-05-20&_count=100",
    )
    .await
    .json();
    assert_eq!(posted["total"], 6);
    let included = get(
        addr,
        "/fhir/Observation?patient=p1&_count=2&_include=Observation:patient",
    )
    .await
    .json();
    let modes: Vec<&str> = included["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["search"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, vec!["match", "match", "include"]);
    let count = get(addr, "/fhir/Observation?patient=p1&_summary=count")
        .await
        .json();
    assert_eq!(count["total"], 25);
    assert!(count.get("entry").is_none());
    let unknown = get(addr, "/fhir/Observation?colour=blue&_count=1")
        .await
        .json();
    let last = unknown["entry"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["search"]["mode"], "outcome");
    let strict = request(
        addr,
        "GET",
        "/fhir/Observation?colour=blue",
        &[("Prefer", "handling=strict")],
        "",
    )
    .await;
    assert_eq!(strict.status, 400);
    assert_eq!(
        get(addr, "/fhir/Observation?date=yesterday").await.status,
        400
    );
    let everything = get(addr, "/fhir/Patient/p1/$everything?_count=100")
        .await
        .json();
    assert_eq!(everything["total"], 26);
    assert_eq!(
        everything["entry"][0]["resource"]["resourceType"],
        "Patient"
    );
    let only = get(addr, "/fhir/Patient/p1/$everything?_type=Patient")
        .await
        .json();
    assert_eq!(only["total"], 1);
    // _summary=count and _count=0: the total of the same set, no entries, no paging snapshot.
    for target in [
        "/fhir/Patient/p1/$everything?_summary=count",
        "/fhir/Patient/p1/$everything?_count=0",
    ] {
        let counted = get(addr, target).await.json();
        assert_eq!(counted["total"], 26, "{target}");
        assert!(counted.get("entry").is_none(), "{target}: {counted}");
        assert!(link(&counted, "next").is_none(), "{target}");
    }
    // _summary=true reduces each entry and marks it SUBSETTED.
    let summarised = get(
        addr,
        "/fhir/Patient/p1/$everything?_summary=true&_type=Patient",
    )
    .await
    .json();
    assert_eq!(
        summarised["entry"][0]["resource"]["meta"]["tag"][0]["code"],
        "SUBSETTED"
    );
    assert_eq!(
        get(addr, "/fhir/Patient/p1/$everything?_summary=maybe")
            .await
            .status,
        400
    );
    assert_eq!(get(addr, "/fhir/Patient/zz/$everything").await.status, 404);
    assert_eq!(
        get(addr, "/fhir/Patient/zz/$everything?_summary=count")
            .await
            .status,
        404
    );
    let elements = get(addr, "/fhir/Patient?_id=p1&_elements=gender")
        .await
        .json();
    let patient = &elements["entry"][0]["resource"];
    assert_eq!(patient["gender"], "male");
    assert!(patient.get("name").is_none());
    assert_eq!(patient["meta"]["tag"][0]["code"], "SUBSETTED");
    let history = get(addr, "/fhir/Observation/_history?_count=3")
        .await
        .json();
    assert_eq!(history["entry"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn compression_request_ids_and_an_access_log_without_patient_data() {
    use std::io::Read;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (addr, _store, _dir) = start().await;
    let target = "/fhir/Observation?patient=p1&code=3A010000002327101";
    let plain = get(addr, target).await;
    let gzip = request(addr, "GET", target, &[("Accept-Encoding", "gzip")], "").await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(gzip.body.as_slice())
        .read_to_end(&mut unzipped)
        .unwrap();
    let (a, b): (Value, Value) = (serde_json::from_slice(&unzipped).unwrap(), plain.json());
    assert_eq!(a["entry"], b["entry"]);
    assert!(
        gzip.body.len() < plain.body.len() / 3,
        "{} vs {}",
        gzip.body.len(),
        plain.body.len()
    );
    let br = request(addr, "GET", target, &[("Accept-Encoding", "br")], "").await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(br.body.len() < plain.body.len() / 3);

    let generated = plain.header("x-request-id").unwrap().to_owned();
    assert_ne!(generated, gzip.header("x-request-id").unwrap());
    let echoed = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("X-Request-Id", "portal-42")],
        "",
    )
    .await;
    assert_eq!(echoed.header("x-request-id"), Some("portal-42"));
    let hostile = request(
        addr,
        "GET",
        "/fhir/Patient/p1",
        &[("X-Request-Id", "a b<script>")],
        "",
    )
    .await;
    assert_ne!(hostile.header("x-request-id"), Some("a b<script>"));

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &Value| line["target"] == "tsunagi::access")
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert_eq!(lines[0]["fields"]["route"], "/fhir/Observation");
    assert_eq!(lines[0]["fields"]["status"], 200);
    assert_eq!(lines[0]["fields"]["request_id"], generated.as_str());
    assert_eq!(lines[3]["fields"]["route"], "/fhir/Patient/{id}");
    assert_eq!(lines[3]["fields"]["request_id"], "portal-42");
    for forbidden in ["p1", "3A010000002327101", "patient="] {
        assert!(!log.contains(forbidden), "the log names {forbidden}: {log}");
    }
}

#[tokio::test]
async fn lastn_returns_the_newest_of_each_code_for_one_patient() {
    let (addr, store, _dir) = start().await;
    let hba1c = |id: &str, patient: &str, day: u32| {
        let mut o = observation(id, patient, day);
        o["code"] = json!({"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3D046000001920402"}], "text": "HbA1c"});
        o
    };
    replace(
        store.as_ref(),
        "more",
        vec![
            hba1c("h3", "p1", 3),
            hba1c("h10", "p1", 10),
            hba1c("h7", "p1", 7),
            hba1c("x20", "p2", 20),
        ],
    )
    .await;
    let ids = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let newest = get(addr, "/fhir/Observation/$lastn?patient=p1")
        .await
        .json();
    assert_eq!(ids(&newest), ["o25", "h10"]);
    let two = get(
        addr,
        "/fhir/Observation/$lastn?patient=Patient/p1&max=2&category=laboratory",
    )
    .await
    .json();
    assert_eq!(ids(&two), ["o25", "o24", "h10", "h7"]);
    let one_code = get(
        addr,
        "/fhir/Observation/$lastn?subject=Patient/p1&max=5&code=3D046000001920402",
    )
    .await
    .json();
    assert_eq!(ids(&one_code), ["h10", "h7", "h3"]);
    // Paged: the links keep max and walk one snapshot.
    let mut page = get(addr, "/fhir/Observation/$lastn?patient=p1&max=3&_count=2")
        .await
        .json();
    let mut walked = ids(&page);
    while let Some(next) = link(&page, "next") {
        assert!(next.contains("max=3"), "{next}");
        let target = next.split_once(&addr.to_string()).unwrap().1.to_owned();
        page = get(addr, &target).await.json();
        walked.extend(ids(&page));
    }
    assert_eq!(walked, ["o25", "o24", "o23", "h10", "h7", "h3"]);
    let counted = get(
        addr,
        "/fhir/Observation/$lastn?patient=p1&max=2&_summary=count",
    )
    .await
    .json();
    assert_eq!(counted["total"], 4);
    assert!(counted.get("entry").is_none(), "{counted}");
    let posted = request(addr, "POST", "/fhir/Observation/$lastn", &[], "patient=p2")
        .await
        .json();
    assert_eq!(ids(&posted), ["x20"]);
    for bad in [
        "/fhir/Observation/$lastn",
        "/fhir/Observation/$lastn?code=3D046000001920402",
        "/fhir/Observation/$lastn?patient=p1&max=0",
        "/fhir/Observation/$lastn?patient=p1&max=many",
    ] {
        let reply = get(addr, bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    assert_eq!(
        get(addr, "/fhir/Observation/$stats?patient=p1")
            .await
            .status,
        404
    );
    let statement = get(addr, "/fhir/metadata").await.json();
    let observation = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap()
        .clone();
    assert_eq!(observation["operation"][0]["name"], "lastn");
}

#[tokio::test]
async fn history_pages_by_cursor_and_never_repeats_or_skips() {
    let (addr, store, _dir) = start().await;
    let key = |entry: &Value| {
        format!(
            "{}/{}/{}",
            entry["resource"]["resourceType"]
                .as_str()
                .or(entry["request"]["url"].as_str())
                .unwrap_or_default(),
            entry["fullUrl"].as_str().unwrap_or_default(),
            entry["response"]["etag"].as_str().unwrap_or_default()
        )
    };
    let keys = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .map(|entries| entries.iter().map(key).collect())
            .unwrap_or_default()
    };
    let all = keys(&get(addr, "/fhir/_history?_count=1000").await.json());
    assert_eq!(
        all.len(),
        29,
        "25 observations, p1, p9 created and deleted, the test facility's Organization"
    );
    let mut page = get(addr, "/fhir/_history?_count=4").await.json();
    let mut walked = keys(&page);
    let mut pages = 1;
    while let Some(next) = link(&page, "next") {
        assert!(next.contains("_cursor="), "{next}");
        if pages == 2 {
            // A write between pages is newer than every cursor: later pages do not show it.
            replace(store.as_ref(), "late", vec![observation("late", "p1", 30)]).await;
        }
        let target = next.split_once(&addr.to_string()).unwrap().1.to_owned();
        page = get(addr, &target).await.json();
        walked.extend(keys(&page));
        pages += 1;
    }
    assert_eq!(pages, 8);
    assert_eq!(walked, all);
    let typed = get(addr, "/fhir/Patient/_history?_count=2").await.json();
    assert_eq!(typed["entry"].as_array().unwrap().len(), 2);
    assert!(link(&typed, "next").is_some());
    assert_eq!(
        get(addr, "/fhir/_history?_cursor=garbage").await.status,
        400
    );
}
