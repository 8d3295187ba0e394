//! The write endpoint (issue 5, item 4) over real sockets into SQLite: notes and standard
//! documents are created with 201, Location and ETag; a retry with the same identifier creates
//! nothing new; the document table's sender roles and recipient kinds are enforced; whatever is
//! addressed to the hospital holding the record is queued in the same transaction, with a Task
//! that shows the delivery, and the queued MDM^T02 is ISO-2022-JP with substitutions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::{FACILITY, NOW, fresh_store, replace, request, serve};
use tsunagi_hl7v2::{Message, charset::decode};
use tsunagi_server::{
    Settings,
    security::{Subject, issue_token, signing_keys},
};
use tsunagi_store::{
    DeliveryState, Governance, Outbox,
    governance::{Consent, Facility, Participant},
};
use tsunagi_store_sqlite::SqliteStore;

const CLINIC: &str = "0610999991";
const CARE_OFFICE: &str = "0610999992";
const SCOPE: &str = "user/*.rs user/Communication.c user/DocumentReference.c";

struct Region {
    addr: std::net::SocketAddr,
    store: std::sync::Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

async fn region() -> Region {
    let (store, dir) = fresh_store().await;
    for patient in ["shared", "private"] {
        replace(
            store.as_ref(),
            patient,
            vec![json!({
                "resourceType": "Patient", "id": patient,
                "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10610100010", "value": format!("00{patient}")}],
                "name": [{"family": "山田", "given": ["花子"]}],
                "gender": "female"
            })],
        )
        .await;
    }
    for (code, name, kind) in [
        (FACILITY, "荘内病院", "hospital"),
        (CLINIC, "診療所", "clinic"),
        (CARE_OFFICE, "居宅介護支援事業所", "care-manager-office"),
    ] {
        store
            .put_facility(&Facility {
                code: code.into(),
                name: name.into(),
                kind: kind.into(),
                active: true,
            })
            .await
            .unwrap();
    }
    for (id, facility, role) in [
        ("dr-clinic", CLINIC, "doctor"),
        ("cm-office", CARE_OFFICE, "care-manager"),
        ("lab-clinic", CLINIC, "lab-staff"),
    ] {
        store
            .put_participant(&Participant {
                id: id.into(),
                name: id.into(),
                facility: facility.into(),
                role: role.into(),
                active: true,
            })
            .await
            .unwrap();
    }
    for (id, viewing) in [("invite-1", CLINIC), ("invite-2", CARE_OFFICE)] {
        store
            .put_consent(&Consent {
                id: id.into(),
                patient: "shared".into(),
                disclosing: FACILITY.into(),
                viewing: viewing.into(),
                start: NOW - 1_000_000,
                end: NOW + 86_400_000_000,
                withdrawn_at: None,
                source: "invitation".into(),
                created_by: "test".into(),
                created_at: NOW,
            })
            .await
            .unwrap();
    }
    let addr = serve(store.clone(), Settings::default()).await;
    Region {
        addr,
        store,
        _dir: dir,
    }
}

async fn token(store: &SqliteStore, user: &str) -> String {
    let keys = signing_keys(store, NOW).await.unwrap();
    let token = issue_token(
        store,
        &keys[0],
        &Settings::default().tokens,
        Subject::User {
            user,
            via: "operator",
        },
        SCOPE,
        NOW / 1_000_000,
    )
    .await
    .unwrap()
    .0;
    format!("Bearer {token}")
}

async fn post(
    region: &Region,
    auth: &str,
    resource_type: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> support::Reply {
    let mut headers = vec![
        ("authorization", auth),
        ("content-type", "application/fhir+json"),
    ];
    headers.extend_from_slice(extra);
    request(
        region.addr,
        "POST",
        &format!("/fhir/{resource_type}"),
        &headers,
        &body.to_string(),
    )
    .await
}

fn note(identifier: &str, patient: &str, recipient: &str, text: &str) -> Value {
    json!({
        "resourceType": "Communication",
        "identifier": [{"system": "urn:clinic:notes", "value": identifier}],
        "status": "completed",
        "subject": {"reference": format!("Patient/{patient}")},
        "recipient": [{"reference": format!("Organization/{recipient}")}],
        "payload": [{"contentString": text}]
    })
}

fn document(code: &str, recipient: &str) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "identifier": [{"system": "urn:office:docs", "value": format!("doc-{code}")}],
        "status": "current",
        "type": {"coding": [{"system": tsunagi_fhir::documents::DOCUMENT_TYPE_SYSTEM, "code": code}]},
        "subject": {"reference": "Patient/shared"},
        "extension": [{"url": tsunagi_fhir::documents::INTENDED_RECIPIENT, "valueReference": {"reference": format!("Organization/{recipient}")}}],
        "content": [
            {"attachment": {"contentType": "text/plain", "data": "5YWl6Zmi5YmN44Gu54q25rOBCuKRoOacnemjn+W+jA=="}},
            {"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK", "title": "報告書"}}
        ]
    })
}

async fn queued(region: &Region) -> Vec<tsunagi_store::OutboundMessage> {
    region
        .store
        .outbound_list(&DeliveryState::ALL, 0, 100)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_note_to_the_hospital_is_created_once_and_queued_with_its_task() {
    let region = region().await;
    let doctor = token(&region.store, "dr-clinic").await;
    let body = note(
        "n-1",
        "shared",
        FACILITY,
        "血圧 140/90|要観察\n①朝食後に服用 ㈱テスト ｶﾞｰｾﾞ",
    );
    let created = post(
        &region,
        &doctor,
        "Communication",
        &body,
        &[("if-none-exist", "identifier=urn:clinic:notes|n-1")],
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let resource = created.json();
    let id = resource["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location").unwrap(),
        format!("http://{}/fhir/Communication/{id}/_history/1", region.addr)
    );
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    // The server asserts the sender and the category.
    assert_eq!(
        resource["sender"]["reference"],
        format!("Organization/{CLINIC}")
    );
    assert_eq!(resource["category"][0]["coding"][0]["code"], "note");
    assert_eq!(
        resource["meta"]["source"],
        format!("urn:tsunagi:api:{CLINIC}#dr-clinic")
    );

    // Queued in the same transaction, with a Task that shows the delivery.
    let rows = queued(&region).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.destination, FACILITY);
    assert_eq!(row.resource, format!("Communication/{id}"));
    assert_eq!(row.state, DeliveryState::Pending);
    let tasks = request(
        region.addr,
        "GET",
        &format!("/fhir/Task?focus=Communication/{id}"),
        &[("authorization", &doctor)],
        "",
    )
    .await
    .json();
    assert_eq!(tasks["total"], 1, "{tasks}");
    let task = &tasks["entry"][0]["resource"];
    assert_eq!(task["status"], "requested");
    assert_eq!(
        task["owner"]["reference"],
        format!("Organization/{FACILITY}")
    );
    assert_eq!(format!("Task/{}", task["id"].as_str().unwrap()), row.task);

    // The queued message: MDM^T02 in ISO-2022-JP, the hospital's patient id, the text with the
    // characters outside JIS X 0208 substituted and the delimiters escaped.
    assert!(row.payload.iter().all(|&b| b < 0x80));
    let (text, _) = decode(&row.payload).unwrap();
    let message = Message::parse(&text).unwrap();
    assert_eq!(message.message_type().unwrap().code, "MDM");
    assert_eq!(message.control_id(), row.control_id);
    assert_eq!(
        message.first("PID").unwrap().field(3).component(1).text(),
        "00shared"
    );
    let lines: Vec<String> = message
        .first("OBX")
        .unwrap()
        .field(5)
        .repetitions()
        .map(|line| line.text().into_owned())
        .collect();
    assert_eq!(
        lines,
        ["血圧 140/90|要観察", "(1)朝食後に服用 (株)テスト ガーゼ"]
    );

    // The same identifier again: 200 with what exists, nothing queued twice.
    for extra in [
        vec![("if-none-exist", "identifier=urn:clinic:notes|n-1")],
        vec![],
    ] {
        let again = post(&region, &doctor, "Communication", &body, &extra).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.json()["id"], id.as_str());
        assert_eq!(again.header("etag"), Some("W/\"1\""));
    }
    assert_eq!(queued(&region).await.len(), 1);

    // A reply in the thread names its parent in TXA-13.
    let mut reply = note("n-2", "shared", FACILITY, "了解しました");
    reply["inResponseTo"] = json!([{"reference": format!("Communication/{id}")}]);
    let answered = post(&region, &doctor, "Communication", &reply, &[]).await;
    assert_eq!(
        answered.status,
        201,
        "{}",
        String::from_utf8_lossy(&answered.body)
    );
    let rows = queued(&region).await;
    let (text, _) = decode(&rows[1].payload).unwrap();
    let message = Message::parse(&text).unwrap();
    assert_eq!(
        message.first("TXA").unwrap().field(13).component(1).text(),
        format!("Communication/{id}")
    );

    // A note only to the clinic stays in the network: created, nothing queued.
    let local = post(
        &region,
        &doctor,
        "Communication",
        &note("n-3", "shared", CLINIC, "院内メモ"),
        &[],
    )
    .await;
    assert_eq!(local.status, 201);
    assert_eq!(queued(&region).await.len(), 2);
}

#[tokio::test]
async fn bad_notes_are_refused_with_an_outcome_and_write_nothing() {
    let region = region().await;
    let doctor = token(&region.store, "dr-clinic").await;
    let lab = token(&region.store, "lab-clinic").await;
    // (token, body, extra headers, status, text the outcome names)
    type Case<'a> = (&'a str, Value, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        // Not invited to this patient: answered like an absent one.
        (
            &doctor,
            note("x1", "private", FACILITY, "x"),
            vec![],
            404,
            "not known",
        ),
        (
            &doctor,
            note("x2", "nobody", FACILITY, "x"),
            vec![],
            404,
            "not known",
        ),
        (
            &doctor,
            note("x3", "shared", "0699999999", "x"),
            vec![],
            422,
            "not a registered facility",
        ),
        (
            &doctor,
            {
                let mut body = note("x4", "shared", FACILITY, "x");
                body["recipient"] = json!([]);
                body
            },
            vec![],
            422,
            "recipient",
        ),
        (
            &doctor,
            {
                let mut body = note("x5", "shared", FACILITY, "x");
                body["payload"] = json!([]);
                body
            },
            vec![],
            422,
            "payload",
        ),
        (
            &doctor,
            {
                let mut body = note("x6", "shared", FACILITY, "x");
                body["inResponseTo"] = json!([{"reference": "Communication/nothing"}]);
                body
            },
            vec![],
            422,
            "inResponseTo",
        ),
        (
            &doctor,
            note("x7", "shared", FACILITY, "x"),
            vec![("if-none-exist", "identifier=urn:clinic:notes|other")],
            400,
            "If-None-Exist",
        ),
        (
            &doctor,
            note("x8", "shared", FACILITY, "x"),
            vec![("if-none-exist", "status=completed")],
            400,
            "If-None-Exist",
        ),
        (
            &doctor,
            {
                let mut body = note("x9", "shared", FACILITY, "x");
                body["payload"] = json!([{"contentAttachment": {"contentType": "image/png", "data": "iVBORw=="}}]);
                body
            },
            vec![],
            422,
            "contentType",
        ),
        (
            &doctor,
            {
                let mut body = note("x10", "shared", FACILITY, "x");
                body["payload"] = json!([{"contentAttachment": {"contentType": "application/pdf", "data": "not base64!"}}]);
                body
            },
            vec![],
            422,
            "base64",
        ),
        (
            &lab,
            note("x11", "shared", FACILITY, "x"),
            vec![],
            403,
            "lab-staff",
        ),
        (
            &doctor,
            json!({"resourceType": "Patient"}),
            vec![],
            400,
            "not a Communication",
        ),
        // Issue 17 §3: an element FHIR does not have, which would have broken every XML read
        // of the patient's record for everyone.
        (
            &doctor,
            {
                let mut body = note("x12", "shared", FACILITY, "x");
                body["probeUnknown"] = json!([[1, 2], {"a": null}]);
                body
            },
            vec![],
            422,
            "Communication.probeUnknown",
        ),
        (
            &doctor,
            {
                let mut body = note("x13", "shared", FACILITY, "x");
                body["text"] = json!({"status": "generated", "div": "<div>a</div></text><evil/>"});
                body
            },
            vec![],
            422,
            "Communication.text.div",
        ),
        (
            &doctor,
            {
                let mut body = note("x14", "shared", FACILITY, "x");
                body["payload"][0]["contentString"] = json!("bell \u{7}");
                body
            },
            vec![],
            422,
            "U+0007",
        ),
    ];
    for (auth, body, extra, status, expected) in cases {
        let reply = post(&region, auth, "Communication", &body, &extra).await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(reply.status, status, "{body}: {text}");
        assert!(text.contains(expected), "{body}: {text}");
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    let not_json = request(
        region.addr,
        "POST",
        "/fhir/Communication",
        &[("authorization", &doctor), ("content-type", "text/plain")],
        "hello",
    )
    .await;
    assert_eq!(not_json.status, 415);
    assert!(queued(&region).await.is_empty());
    let notes = request(
        region.addr,
        "GET",
        "/fhir/Communication?patient=shared",
        &[("authorization", &doctor)],
        "",
    )
    .await
    .json();
    assert_eq!(notes["total"], 0);
    // What was refused left nothing that could break a read in XML.
    let xml = request(
        region.addr,
        "GET",
        "/fhir/Patient/shared/$everything?_format=xml",
        &[("authorization", &doctor)],
        "",
    )
    .await;
    assert_eq!(xml.status, 200, "{}", String::from_utf8_lossy(&xml.body));
}

#[tokio::test]
async fn standard_documents_follow_the_networks_sender_and_recipient_rules() {
    let region = region().await;
    let care_manager = token(&region.store, "cm-office").await;
    let doctor = token(&region.store, "dr-clinic").await;

    // 入院前状況報告書: a care manager to the hospital.
    let created = post(
        &region,
        &care_manager,
        "DocumentReference",
        &document("pre-admission-status", FACILITY),
        &[],
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let resource = created.json();
    assert_eq!(
        resource["author"][0]["reference"],
        format!("Organization/{CARE_OFFICE}")
    );
    assert_eq!(
        resource["custodian"]["reference"],
        format!("Organization/{FACILITY}")
    );
    let rows = queued(&region).await;
    assert_eq!(rows.len(), 1);
    let (text, _) = decode(&rows[0].payload).unwrap();
    let message = Message::parse(&text).unwrap();
    let txa = message.first("TXA").unwrap();
    assert_eq!(txa.field(2).component(1).text(), "pre-admission-status");
    assert_eq!(txa.field(2).component(2).text(), "入院前状況報告書");
    let obx: Vec<_> = message.all("OBX").collect();
    assert_eq!(obx.len(), 2);
    let lines: Vec<String> = obx[0]
        .field(5)
        .repetitions()
        .map(|line| line.text().into_owned())
        .collect();
    assert_eq!(lines, ["入院前の状況", "(1)朝食後"]);
    assert_eq!(obx[1].field(2).text(), "ED");
    assert_eq!(obx[1].field(5).component(5).text(), "JVBERi0xLjQK");

    // The same document type from a doctor: the table says care managers send it.
    let refused = post(
        &region,
        &doctor,
        "DocumentReference",
        &document("pre-admission-status", FACILITY),
        &[],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(String::from_utf8_lossy(&refused.body).contains("care-manager"));
    // 介護保険利用者情報提供書 goes to a care-manager office, not a hospital.
    let wrong_recipient = post(
        &region,
        &doctor,
        "DocumentReference",
        &document("ltc-user-information", FACILITY),
        &[],
    )
    .await;
    assert_eq!(wrong_recipient.status, 422);
    let right_recipient = post(
        &region,
        &doctor,
        "DocumentReference",
        &document("ltc-user-information", CARE_OFFICE),
        &[],
    )
    .await;
    assert_eq!(right_recipient.status, 201);
    // An unknown type names the known ones.
    let unknown = post(
        &region,
        &care_manager,
        "DocumentReference",
        &document("no-such-document", FACILITY),
        &[],
    )
    .await;
    assert_eq!(unknown.status, 422);
    assert!(String::from_utf8_lossy(&unknown.body).contains("medical-nursing-liaison"));
    // Only the document to the hospital is queued.
    assert_eq!(queued(&region).await.len(), 1);
}

#[tokio::test]
async fn prefer_return_chooses_what_a_write_answers_with() {
    let region = region().await;
    let doctor = token(&region.store, "dr-clinic").await;
    // return=minimal: the headers only.
    let minimal = post(
        &region,
        &doctor,
        "Communication",
        &note("p-1", "shared", FACILITY, "最小"),
        &[("prefer", "return=minimal")],
    )
    .await;
    assert_eq!(minimal.status, 201);
    assert!(minimal.body.is_empty(), "{:?}", minimal.body);
    let location = minimal.header("location").unwrap().to_owned();
    assert!(location.contains("/fhir/Communication/"), "{location}");
    assert_eq!(minimal.header("etag"), Some("W/\"1\""));
    assert!(minimal.header("last-modified").is_some());
    // return=OperationOutcome: what was done, as an outcome.
    let outcome = post(
        &region,
        &doctor,
        "Communication",
        &note("p-2", "shared", FACILITY, "結果"),
        &[("prefer", "return=OperationOutcome")],
    )
    .await;
    assert_eq!(outcome.status, 201);
    let said = outcome.json();
    assert_eq!(said["resourceType"], "OperationOutcome");
    assert_eq!(said["issue"][0]["severity"], "information");
    assert!(
        said["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("created, version 1")
    );
    // return=representation (and no preference): the resource as stored; a resend of the
    // same identifier answers 200 the same way.
    for prefer in [&[("prefer", "return=representation")][..], &[]] {
        let resent = post(
            &region,
            &doctor,
            "Communication",
            &note("p-1", "shared", FACILITY, "最小"),
            prefer,
        )
        .await;
        assert_eq!(resent.status, 200);
        assert_eq!(resent.json()["resourceType"], "Communication");
        assert_eq!(resent.header("location"), Some(location.as_str()));
    }
}

/// `docs/documents.md` shows exactly the table the server enforces, and every worked example
/// in it is accepted from the role it names.
#[tokio::test]
async fn the_documents_page_shows_the_enforced_table_and_its_examples_are_accepted() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/documents.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = page.split_once("<!-- table: begin -->\n").unwrap();
    let (shown, tail) = rest.split_once("<!-- table: end -->").unwrap();
    let table = tsunagi_fhir::documents::markdown_table();
    if std::env::var_os("TSUNAGI_BLESS").is_some() {
        std::fs::write(
            &path,
            format!("{head}<!-- table: begin -->\n{table}<!-- table: end -->{tail}"),
        )
        .unwrap();
    } else {
        assert_eq!(
            shown, table,
            "docs/documents.md (TSUNAGI_BLESS=1 rewrites the table)"
        );
    }
    let region = region().await;
    let mut posted = 0;
    for example in page.split("<!-- example: ").skip(1) {
        let (marker, body) = example.split_once(" -->\n").unwrap();
        let (code, sender) = marker.split_once(" sender=").unwrap();
        let json = body
            .split_once("```json\n")
            .unwrap()
            .1
            .split_once("```")
            .unwrap()
            .0;
        // The page's ids are the README walkthrough's; this region's are the test's own.
        let json = json
            .replace("0610100010.1000003", "shared")
            .replace("0610500011", CARE_OFFICE);
        let resource: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(resource["type"]["coding"][0]["code"], code);
        let user = match sender {
            "care-manager" => "cm-office",
            "doctor" => "dr-clinic",
            other => panic!("no test user with role {other}"),
        };
        let auth = token(&region.store, user).await;
        let reply = post(&region, &auth, "DocumentReference", &resource, &[]).await;
        assert_eq!(
            reply.status,
            201,
            "{code} from {sender}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        posted += 1;
    }
    assert_eq!(posted, tsunagi_fhir::documents::DOCUMENT_TYPES.len());
}

/// Notes whose clients hang up 0–15 ms after sending them: whichever of them were written are
/// each queued once and audited (the request runs to its end with its audit record, whoever
/// still waits for it); one the server dropped before it began leaves nothing.
#[tokio::test]
async fn a_note_whose_client_hangs_up_is_written_and_audited_or_not_at_all() {
    use tokio::io::AsyncWriteExt;
    let region = region().await;
    let doctor = token(&region.store, "dr-clinic").await;
    let audited_before = region.store.audit_count().await.unwrap();
    for wait in 0..16u64 {
        let body = note(
            &format!("n-hang-{wait}"),
            "shared",
            FACILITY,
            "電話で連絡済み",
        )
        .to_string();
        let head = format!(
            "POST /fhir/Communication HTTP/1.1\r\nhost: tsunagi\r\nauthorization: {doctor}\r\n\
             content-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(region.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        drop(stream);
    }
    // Settled: nothing changed for half a second.
    let counts = || async {
        (
            queued(&region).await.len() as u64,
            region.store.audit_count().await.unwrap() - audited_before,
        )
    };
    let mut last = counts().await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = counts().await;
        if now == last {
            break;
        }
        last = now;
    }
    let (written, audited) = last;
    assert!(
        written > 0,
        "no note was written at all: the test shows nothing"
    );
    assert!(
        audited >= written,
        "{written} notes written, only {audited} audit records"
    );
}

/// The same note sent eight times at once (a client retrying before its first attempt was
/// answered): one is created, the others answer 200 with it, and it is queued once.
#[tokio::test]
async fn retries_racing_their_first_attempt_create_the_note_once() {
    let region = std::sync::Arc::new(region().await);
    let doctor = token(&region.store, "dr-clinic").await;
    let body = note("n-race", "shared", FACILITY, "同時に再送");
    let sends = (0..8).map(|_| {
        let (region, doctor, body) = (region.clone(), doctor.clone(), body.clone());
        tokio::spawn(async move { post(&region, &doctor, "Communication", &body, &[]).await })
    });
    let mut statuses = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        let reply = send.await.unwrap();
        assert_eq!(reply.json()["meta"]["versionId"], "1");
        statuses.push(reply.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
    assert_eq!(queued(&region).await.len(), 1);
}
