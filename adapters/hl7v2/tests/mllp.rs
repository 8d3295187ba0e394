//! The HL7 v2 feed over real MLLP sockets into a real SQLite store: acknowledgements after commit,
//! duplicates and conflicting duplicates, unknown senders, quarantine and retry, enhanced mode,
//! ISO-2022-JP messages and the framing edge cases a TCP stream produces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use tsunagi_adapter::listen::MllpIntake;
use tsunagi_adapter_hl7v2::{FeedConfig, Feeds, Intake, IntakeOptions, retry};
use tsunagi_core::{FacilityId, clock::FixedClock, ids::logical_id};
use tsunagi_hl7v2::{
    Message,
    ack::{AckCode, read_ack},
    charset,
};
use tsunagi_mapping::{CodeTables, pushed::IdentifyRules};
use tsunagi_mllp::{ServerOptions, client::Connection};
use tsunagi_store::{
    Access, MessageLog, MessageState, Store,
    governance::{AuditFilter, Governance},
    operator::{Act, ActFacts},
};
use tsunagi_store_sqlite::SqliteStore;

const FACILITY: &str = "0610100010";
const TIMEOUT: Duration = Duration::from_secs(10);

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/ssmix2-guideline-samples/sampleData/999/901/9999013")
}

/// A guideline sample's bytes (ISO-2022-JP), as an EHR would push them.
fn sample(relative: &str) -> Vec<u8> {
    let dir = samples().join(relative);
    let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    let mut bytes = std::fs::read(entry.path()).unwrap();
    // Some sample files end with the MLLP end block they were captured with.
    while bytes.last().is_some_and(|&byte| byte == 0x1c) {
        bytes.pop();
    }
    bytes
}

struct Gateway {
    store: Arc<SqliteStore>,
    feeds: Arc<Feeds>,
    address: String,
    _dir: tempfile::TempDir,
}

async fn gateway(options: ServerOptions) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("feed.db").display());
    let clock = Arc::new(FixedClock(1_764_000_000_000_000));
    let store = Arc::new(SqliteStore::open(&url, clock.clone()).await.unwrap());
    let feeds = Arc::new(Feeds::new(vec![FeedConfig {
        facility: FacilityId::parse(FACILITY).unwrap(),
        name: Some("荘内病院".to_owned()),
        sending_facility: "SEND".to_owned(),
        sending_application: Some("HIS123".to_owned()),
        clients: Vec::new(),
        addresses: Vec::new(),
        tables: Arc::new(CodeTables::default()),
        rules: IdentifyRules::default(),
        reports_for: Vec::new(),
    }]));
    let intake = Intake::start(
        store.clone(),
        feeds.clone(),
        clock,
        IntakeOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(tsunagi_mllp::serve(
        listener,
        None,
        options,
        Arc::new(MllpIntake(Arc::new(intake))),
    ));
    Gateway {
        store,
        feeds,
        address,
        _dir: dir,
    }
}

fn ack_of(reply: &[u8]) -> (AckCode, String, String) {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    let message = Message::parse(&text).unwrap();
    let ack = read_ack(&message).unwrap();
    (ack.code, ack.control_id, ack.text)
}

/// ADT^A08 of a synthetic patient, ASCII.
fn a08(control_id: &str, patient: &str, family: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS123|SEND|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{control_id}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{patient}^^^^PI||{family}^Taro^^^^^L||19600101|M\r\
         PV1||O\r"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_message_is_acknowledged_after_it_is_stored_and_a_resend_changes_nothing() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let adt = sample("-/ADT-00");
    let first = connection.request(&adt, TIMEOUT).await.unwrap();
    let (code, acknowledged, _) = ack_of(&first);
    assert_eq!(code, AckCode::AA);
    let (text, _) = charset::decode(&adt).unwrap();
    let control_id = Message::parse(&text).unwrap().control_id().into_owned();
    assert_eq!(acknowledged, control_id);

    // Stored before the ACK: the patient is readable now, with its provenance.
    let patient_id = logical_id(&[FACILITY, "9999013"]);
    let patient = gateway
        .store
        .read(&Access::Unrestricted, "Patient", &patient_id)
        .await
        .unwrap()
        .expect("the acknowledged patient is stored");
    let json = patient.to_json().unwrap().unwrap();
    assert_eq!(
        json["meta"]["source"],
        format!("urn:tsunagi:mllp:{FACILITY}#{control_id}")
    );
    // Kanji survived ISO-2022-JP: the name is not mojibake.
    assert!(
        json["name"].to_string().contains('患')
            || json["name"]
                .to_string()
                .chars()
                .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "{}",
        json["name"]
    );

    // The same message again: the same ACK, byte for byte, and no new version.
    let again = connection.request(&adt, TIMEOUT).await.unwrap();
    assert!(again == first, "a resend gets the same ACK");
    let history = gateway
        .store
        .history(&Access::Unrestricted, "Patient", &patient_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    let logged = gateway
        .store
        .logged_message("HIS123|SEND", &control_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.state, MessageState::Applied);
    assert!(logged.raw == adt, "the raw message is logged as received");
    assert!(logged.ack == first, "the ACK is logged");
}

#[tokio::test]
async fn a_resend_differing_only_in_segment_terminators_is_the_same_message() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    // hl7.client.MLLPClient keeps the final CR; python-hl7's mllp_send strips it; some
    // senders end segments with LF or CRLF.
    let kept = a08("T1", "300", "Yamada");
    let first = connection.request(&kept, TIMEOUT).await.unwrap();
    assert_eq!(ack_of(&first).0, AckCode::AA);
    let stripped = kept[..kept.len() - 1].to_vec();
    let crlf = String::from_utf8(kept.clone())
        .unwrap()
        .replace('\r', "\r\n")
        .into_bytes();
    for resend in [stripped.clone(), crlf] {
        let again = connection.request(&resend, TIMEOUT).await.unwrap();
        assert_eq!(ack_of(&again).0, AckCode::AA);
        assert!(again == first, "a resend gets the same ACK");
    }
    let history = gateway
        .store
        .history(
            &Access::Unrestricted,
            "Patient",
            &logical_id(&[FACILITY, "300"]),
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(
        gateway
            .store
            .messages(&[MessageState::Conflict], 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The log keeps the first message's bytes as received.
    let logged = gateway
        .store
        .logged_message("HIS123|SEND", "T1")
        .await
        .unwrap()
        .unwrap();
    assert!(logged.raw == kept);

    // Sent first without its final CR, the message is logged as sent, and the full form is
    // its resend too.
    let bare = a08("T2", "301", "Sato");
    let bare = bare[..bare.len() - 1].to_vec();
    let first = connection.request(&bare, TIMEOUT).await.unwrap();
    assert_eq!(ack_of(&first).0, AckCode::AA);
    let again = connection
        .request(&a08("T2", "301", "Sato"), TIMEOUT)
        .await
        .unwrap();
    assert!(again == first);
    let logged = gateway
        .store
        .logged_message("HIS123|SEND", "T2")
        .await
        .unwrap()
        .unwrap();
    assert!(logged.raw == bare);
}

#[tokio::test]
async fn a_control_id_reused_with_other_content_is_rejected_and_kept() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let reply = connection
        .request(&a08("C1", "100", "Yamada"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(ack_of(&reply).0, AckCode::AA);
    let reply = connection
        .request(&a08("C1", "100", "Sato"), TIMEOUT)
        .await
        .unwrap();
    let (code, _, text) = ack_of(&reply);
    assert_eq!(code, AckCode::AR);
    assert!(
        text.contains("already received with other content"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&reply).contains("205^Duplicate key identifier"));
    // The stored patient is the first one; the conflicting message is kept as evidence.
    let patient = gateway
        .store
        .read(
            &Access::Unrestricted,
            "Patient",
            &logical_id(&[FACILITY, "100"]),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        patient.to_json().unwrap().unwrap()["name"]
            .to_string()
            .contains("Yamada")
    );
    let conflicts = gateway
        .store
        .messages(&[MessageState::Conflict], 0, 10)
        .await
        .unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].raw, a08("C1", "100", "Sato"));
}

#[tokio::test]
async fn unknown_senders_and_unreadable_messages_are_rejected_and_nothing_is_stored() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let stranger = String::from_utf8(a08("S1", "200", "Stranger"))
        .unwrap()
        .replace("HIS123|SEND", "HIS123|ELSEWHERE");
    let (code, _, text) = ack_of(
        &connection
            .request(stranger.as_bytes(), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AR);
    assert!(text.contains("not registered"), "{text}");
    let no_control_id = String::from_utf8(a08("", "201", "Nobody")).unwrap();
    let (code, _, text) = ack_of(
        &connection
            .request(no_control_id.as_bytes(), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AR);
    assert!(text.contains("MSH-10"), "{text}");
    let training = String::from_utf8(a08("T1", "202", "Training"))
        .unwrap()
        .replace("|T1|P|", "|T1|T|");
    let (code, _, text) = ack_of(
        &connection
            .request(training.as_bytes(), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AR);
    assert!(text.contains("MSH-11"), "{text}");
    // A control character in a key the message log holds (a NUL: PostgreSQL's text cannot
    // hold it) is refused by field, not left to fail the group it came in.
    for (message, field) in [
        (a08("N\u{0}1", "203", "Nul"), "MSH-10"),
        (a08("N2", "2\u{0}04", "Nul"), "PID-3"),
    ] {
        let (code, _, text) = ack_of(&connection.request(&message, TIMEOUT).await.unwrap());
        assert_eq!(code, AckCode::AR);
        assert!(
            text.contains(field) && text.contains("control character"),
            "{text}"
        );
    }
    let (code, _, _) = ack_of(
        &connection
            .request(b"MSHH0\rPID|||1\r", TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AR);
    let every_state = MessageState::ALL;
    assert!(
        gateway
            .store
            .messages(&every_state, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(gateway.store.count_current().await.unwrap().len(), 0);
}

#[tokio::test]
async fn results_for_unknown_patients_wait_in_quarantine_until_retried() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let lab = sample("20111220/OML-11");
    let (code, _, text) = ack_of(&connection.request(&lab, TIMEOUT).await.unwrap());
    assert_eq!(code, AckCode::AE);
    assert!(text.contains("not registered"), "{text}");
    let unknown_type = String::from_utf8(a08("Z1", "9999013", "X"))
        .unwrap()
        .replace("ADT^A08^ADT_A01", "ADT^Z99");
    let (code, _, text) = ack_of(
        &connection
            .request(unknown_type.as_bytes(), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AE);
    assert!(text.contains("ADT^Z99"), "{text}");
    let quarantined = gateway
        .store
        .messages(&[MessageState::Quarantined], 0, 10)
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 2);
    let counts = gateway.store.count_current().await.unwrap();
    assert!(!counts.contains_key("Observation"), "{counts:?}");

    // Retrying before the patient exists changes nothing; after registration it applies.
    let clock = Arc::new(FixedClock(1_764_000_000_000_000));
    let seq = quarantined[0].seq;
    // The operator's act is recorded with what the retry did, in the same transaction.
    let act = |nonce: &'static str| {
        move |outcome: &tsunagi_adapter_hl7v2::RetryOutcome| {
            let done = match outcome {
                tsunagi_adapter_hl7v2::RetryOutcome::Applied => Act::QuarantineRetry,
                tsunagi_adapter_hl7v2::RetryOutcome::StillQuarantined(_) => {
                    Act::QuarantineRetryFailed
                }
            };
            ActFacts::new(done, format!("message {seq}"), None).record(None, 1, nonce)
        }
    };
    let outcome = retry(
        gateway.store.clone(),
        gateway.feeds.clone(),
        clock.clone(),
        seq,
        act("r1"),
    )
    .await
    .unwrap();
    assert!(matches!(
        outcome,
        tsunagi_adapter_hl7v2::RetryOutcome::StillQuarantined(_)
    ));
    // The sample's PID-3 (0001000052) differs from its folder's patient id.
    let (code, _, _) = ack_of(
        &connection
            .request(&a08("R1", "0001000052", "Kensa"), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AA);
    let outcome = retry(
        gateway.store.clone(),
        gateway.feeds.clone(),
        clock,
        seq,
        act("r2"),
    )
    .await
    .unwrap();
    assert_eq!(outcome, tsunagi_adapter_hl7v2::RetryOutcome::Applied);
    let filter = AuditFilter {
        limit: 10,
        ..Default::default()
    };
    let acts: Vec<_> = gateway
        .store
        .audit(&filter)
        .await
        .unwrap()
        .iter()
        .map(|listed| tsunagi_store::audit::render(&listed.record)["subtype"][0]["code"].clone())
        .collect();
    assert_eq!(acts, ["quarantine-retry", "quarantine-retry-failed"]);
    assert_eq!(
        gateway.store.message(seq).await.unwrap().unwrap().state,
        MessageState::Applied
    );
    let counts = gateway.store.count_current().await.unwrap();
    assert!(
        counts.get("Observation").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    // The same lab message sent again is a duplicate now answered as before (AE), not applied
    // twice.
    let (code, _, _) = ack_of(&connection.request(&lab, TIMEOUT).await.unwrap());
    assert_eq!(code, AckCode::AE);
    assert_eq!(gateway.store.count_current().await.unwrap(), counts);
}

#[tokio::test]
async fn enhanced_mode_answers_commit_acknowledgements() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let enhanced = String::from_utf8(a08("E1", "300", "Enhanced"))
        .unwrap()
        .replace("|E1|P|2.5\r", "|E1|P|2.5|||AL|NE\r");
    let (code, _, _) = ack_of(
        &connection
            .request(enhanced.as_bytes(), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::CA);
    // MSH-15 NE: stored, not answered; the next message's ACK is the next frame.
    let silent = String::from_utf8(a08("E2", "301", "Silent"))
        .unwrap()
        .replace("|E2|P|2.5\r", "|E2|P|2.5|||NE|NE\r");
    connection.send(silent.as_bytes()).await.unwrap();
    let (code, acknowledged, _) = ack_of(
        &connection
            .request(&a08("E3", "302", "After"), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!((code, acknowledged.as_str()), (AckCode::AA, "E3"));
    assert!(
        gateway
            .store
            .read(
                &Access::Unrestricted,
                "Patient",
                &logical_id(&[FACILITY, "301"])
            )
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn frames_split_packed_or_sloppy_are_read_in_order() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    // Two frames in one write, with garbage before the first and no CR after the second.
    let mut stream = b"garbage\r\n".to_vec();
    stream.extend(tsunagi_hl7v2::mllp::frame(&a08("F1", "400", "One")));
    stream.push(0x0b);
    stream.extend(a08("F2", "401", "Two"));
    stream.push(0x1c);
    connection.write_raw(&stream).await.unwrap();
    let first = ack_of(&connection.reply(TIMEOUT).await.unwrap());
    let second = ack_of(&connection.reply(TIMEOUT).await.unwrap());
    assert_eq!((first.0, first.1.as_str()), (AckCode::AA, "F1"));
    assert_eq!((second.0, second.1.as_str()), (AckCode::AA, "F2"));
    // One frame written a byte at a time.
    for byte in tsunagi_hl7v2::mllp::frame(&a08("F3", "402", "Three")) {
        connection.write_raw(&[byte]).await.unwrap();
    }
    let third = ack_of(&connection.reply(TIMEOUT).await.unwrap());
    assert_eq!((third.0, third.1.as_str()), (AckCode::AA, "F3"));
}

#[tokio::test]
async fn an_oversized_or_unfinished_frame_stores_nothing() {
    let gateway = gateway(ServerOptions {
        max_frame: 1024,
        idle_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    })
    .await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let mut huge = a08("O1", "500", "Huge");
    huge.extend(std::iter::repeat_n(b'x', 4096));
    let closed = connection.request(&huge, TIMEOUT).await;
    assert!(closed.is_err(), "{closed:?}");
    // A frame that never ends: the idle timeout closes the connection, nothing is stored.
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let mut unfinished = vec![0x0b];
    unfinished.extend(a08("U1", "501", "Unfinished"));
    connection.write_raw(&unfinished).await.unwrap();
    let closed = connection.reply(TIMEOUT).await;
    assert!(closed.is_err(), "{closed:?}");
    assert!(
        gateway
            .store
            .messages(&MessageState::ALL, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The listener still serves.
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let (code, _, _) = ack_of(
        &connection
            .request(&a08("O2", "502", "Fine"), TIMEOUT)
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::AA);
}

#[tokio::test]
async fn a_pipelining_sender_gets_every_ack_in_order_after_its_commit() {
    let gateway = gateway(ServerOptions {
        pipeline: 8,
        ..ServerOptions::default()
    })
    .await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    // Thirty messages in one write: more than the pipeline takes at once.
    let mut bytes = Vec::new();
    for number in 0..30 {
        let message = a08(
            &format!("P{number:02}"),
            &format!("{:07}", 5000 + number),
            "Pipe",
        );
        bytes.extend_from_slice(&tsunagi_hl7v2::mllp::frame(&message));
    }
    connection.write_raw(&bytes).await.unwrap();
    for number in 0..30 {
        let (code, acknowledged, _) = ack_of(&connection.reply(TIMEOUT).await.unwrap());
        assert_eq!((code, acknowledged), (AckCode::AA, format!("P{number:02}")));
        // Acknowledged means stored.
        let id = logical_id(&[FACILITY, &format!("{:07}", 5000 + number)]);
        assert!(
            gateway
                .store
                .read(&Access::Unrestricted, "Patient", &id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// A lab company's ORU^R01 for a patient of the ordering facility `ordering` (MSH-6).
fn oru(control_id: &str, ordering: &str, patient: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LIS|LABCO|EHR|{ordering}|20261124120000||ORU^R01^ORU_R01|{control_id}|P|2.5\r\
         PID|||{patient}^^^^PI||Kensa^Taro^^^^^L||19600101|M\r\
         ORC|RE|ORD-{control_id}|F-{control_id}||CM\r\
         OBR|1|ORD-{control_id}|F-{control_id}|3A010000002327101^総蛋白^JC10|||20261124083000|||||||||||||||20261124115500|||F\r\
         OBX|1|NM|3A010000002327101^総蛋白^JC10||7.1|g/dL|6.5-8.2||||F|||20261124083000\r\
         OBX|2|NM|3D010000001926101^グルコース^JC10||132|mg/dL|70-109|H|||F|||20261124083000\r"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_lab_company_reports_results_for_the_patients_of_the_facilities_it_serves() {
    const LAB: &str = "0610900001";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lab.db").display());
    let clock = Arc::new(FixedClock(1_764_000_000_000_000));
    let store = Arc::new(SqliteStore::open(&url, clock.clone()).await.unwrap());
    let feed = |facility: &str, sender: &str, reports_for: Vec<FacilityId>| FeedConfig {
        facility: FacilityId::parse(facility).unwrap(),
        name: None,
        sending_facility: sender.to_owned(),
        sending_application: None,
        clients: Vec::new(),
        addresses: Vec::new(),
        tables: Arc::new(CodeTables::default()),
        rules: IdentifyRules::default(),
        reports_for,
    };
    let feeds = Arc::new(Feeds::new(vec![
        feed(FACILITY, "SEND", Vec::new()),
        feed(LAB, "LABCO", vec![FacilityId::parse(FACILITY).unwrap()]),
    ]));
    let intake = Intake::start(store.clone(), feeds, clock, IntakeOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(tsunagi_mllp::serve(
        listener,
        None,
        ServerOptions::default(),
        Arc::new(MllpIntake(Arc::new(intake))),
    ));
    let mut connection = Connection::connect(&address).await.unwrap();
    let mut send =
        async |message: Vec<u8>| ack_of(&connection.request(&message, TIMEOUT).await.unwrap());

    // The hospital registers its patient; the lab reports for it.
    assert_eq!(send(a08("H1", "0000000077", "Lab")).await.0, AckCode::AA);
    let (code, _, text) = send(oru("L1", FACILITY, "0000000077")).await;
    assert_eq!(code, AckCode::AA, "{text}");
    let patient = format!("Patient/{}", logical_id(&[FACILITY, "0000000077"]));
    let observations = store
        .find_by_reference("Observation", "patient", &patient)
        .await
        .unwrap();
    assert_eq!(observations.len(), 2);
    let reports = store
        .find_by_reference("DiagnosticReport", "patient", &patient)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    let observation = store
        .read(&Access::Unrestricted, "Observation", &observations[0])
        .await
        .unwrap()
        .unwrap()
        .to_json()
        .unwrap()
        .unwrap();
    assert_eq!(
        observation["category"][0]["coding"][0]["code"],
        "laboratory"
    );
    assert!(
        observation["meta"]["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("urn:tsunagi:mllp:{LAB}#L1")),
        "{observation}"
    );

    // A facility the lab does not serve: refused, nothing stored.
    let (code, _, text) = send(oru("L2", "0610100099", "0000000077")).await;
    assert_eq!(code, AckCode::AR);
    assert!(text.contains("reports_for"), "{text}");
    // A patient the ordering facility never registered: kept for the operator.
    let (code, _, text) = send(oru("L3", FACILITY, "0000000078")).await;
    assert_eq!(code, AckCode::AE);
    assert!(text.contains("not registered"), "{text}");
    // A lab does not register patients.
    let (code, _, text) = send(
        String::from_utf8(a08("L4", "0000000079", "Lab"))
            .unwrap()
            .replace("HIS123|SEND", "LIS|LABCO")
            .into_bytes(),
    )
    .await;
    assert_eq!(code, AckCode::AE);
    assert!(text.contains("ORU^R01 or OUL^R22"), "{text}");
    let quarantined = store
        .messages(&[MessageState::Quarantined], 0, 10)
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 2);
    assert!(quarantined.iter().all(|message| message.facility == LAB));
}

/// ADT^A01 or ADT^A03 of patient 400's visit `visit`, ASCII.
fn stay_event(control_id: &str, kind: &str, visit: &str, discharge: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS123|SEND|TSUNAGI|NET|20261124101500||{kind}|{control_id}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||400^^^^PI||Yamada^Taro^^^^^L||19600101|M\r\
         PV1||I|31^301^1||||D1^Ishi||||||||||||{visit}|||||||||||||||||||||||||202611200930|{discharge}\r"
    )
    .into_bytes()
}

#[tokio::test]
async fn pushed_admission_and_discharge_converge_on_one_encounter() {
    let gateway = gateway(ServerOptions::default()).await;
    let mut connection = Connection::connect(&gateway.address).await.unwrap();
    let registered = connection
        .request(&a08("E0", "400", "Yamada"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(ack_of(&registered).0, AckCode::AA);
    for (control, kind, discharge) in [
        ("E1", "ADT^A01^ADT_A01", ""),
        ("E2", "ADT^A03^ADT_A03", "202611241000"),
    ] {
        let reply = connection
            .request(&stay_event(control, kind, "V77", discharge), TIMEOUT)
            .await
            .unwrap();
        let (code, _, text) = ack_of(&reply);
        assert_eq!(code, AckCode::AA, "{kind}: {text}");
    }
    let mut encounters = Vec::new();
    gateway
        .store
        .for_each_current(&mut |resource| {
            if resource.resource_type == "Encounter" {
                encounters.push(resource.to_json().unwrap().unwrap());
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(encounters.len(), 1, "{encounters:#?}");
    let stay = &encounters[0];
    assert_eq!(
        stay["id"],
        logical_id(&[FACILITY, "400", "visit", "V77"]).as_str()
    );
    assert_eq!(stay["status"], "finished");
    assert_eq!(stay["period"]["start"], "2026-11-20T09:30:00+09:00");
    assert_eq!(stay["period"]["end"], "2026-11-24T10:00:00+09:00");
    assert_eq!(stay["identifier"][0]["value"], "V77");
}
