//! Outbound delivery over real sockets to the EHR stand-in, and into a real folder: a delivery is
//! done only on a valid ACK of the message; AE, a dropped connection, garbage and a slow answer are
//! retried with backoff under the same MSH-10; AR and exhausted attempts are dead letters; the
//! operator's retry replays a dead letter; each Task shows where its delivery stands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use tsunagi_adapter::delivery::{Deliverer, DeliveryOptions, Round, operator_act};
use tsunagi_adapter::outbound::Destination;
use tsunagi_adapter_outbound_folder::FolderDestination;
use tsunagi_adapter_outbound_mllp::MllpDestination;
use tsunagi_core::clock::Clock;
use tsunagi_hl7v2::document::OutboundDocument;
use tsunagi_mllp::standin::{Behaviour, StandIn};
use tsunagi_store::{
    Access, Batch, DeliveryState, Operation, OutboundMessage, Outbox, ResourceWrite, Store,
};
use tsunagi_store::{
    governance::{AuditFilter, Governance},
    operator::{Act, ActFacts},
};
use tsunagi_store_sqlite::SqliteStore;

const T0: i64 = 1_764_000_000_000_000;
const HOSPITAL: &str = "0610100010";
const FILE_HOSPITAL: &str = "0610100020";
const NO_ROUTE: &str = "0610100030";

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn payload(control_id: &str, text: &str) -> Vec<u8> {
    OutboundDocument {
        sending_application: "TSUNAGI".into(),
        sending_facility: "0610999991".into(),
        receiving_application: String::new(),
        receiving_facility: HOSPITAL.into(),
        timestamp: "20261124101500+0900".into(),
        control_id: control_id.into(),
        patient_id: "0000000001".into(),
        patient_name: ("山田".into(), "花子".into()),
        document_type: ("note".into(), "連絡".into()),
        activity_time: "20261124101500+0900".into(),
        originator: ("dr".into(), "doctor".into()),
        unique_id: format!("Communication/{control_id}"),
        parent_id: String::new(),
        lines: vec![text.into()],
        attachments: Vec::new(),
    }
    .encode()
    .0
}

async fn enqueue(store: &SqliteStore, control_id: &str, destination: &str) {
    let task = json!({
        "resourceType": "Task", "id": format!("task-{control_id}"), "status": "requested",
        "intent": "order", "focus": {"reference": format!("Communication/{control_id}")},
        "for": {"reference": "Patient/p1"}
    });
    store
        .apply(Batch {
            operations: vec![
                Operation::ReplaceSource {
                    source_key: format!("outbox:Task/task-{control_id}"),
                    facility: destination.into(),
                    resources: vec![
                        ResourceWrite::from_json("Task", &format!("task-{control_id}"), &task)
                            .unwrap(),
                    ],
                },
                Operation::Enqueue(Box::new(OutboundMessage {
                    seq: 0,
                    destination: destination.into(),
                    resource: format!("Communication/{control_id}"),
                    task: format!("Task/task-{control_id}"),
                    patient: "p1".into(),
                    control_id: control_id.into(),
                    payload: payload(control_id, "退院後の内服について"),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_attempt: T0,
                    last_error: String::new(),
                    ack: Vec::new(),
                    created: T0,
                    updated: T0,
                })),
            ],
        })
        .await
        .unwrap();
}

async fn state_of(store: &SqliteStore, control_id: &str) -> (DeliveryState, u32, String) {
    let row = store
        .outbound_list(&DeliveryState::ALL, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.control_id == control_id)
        .unwrap();
    (row.state, row.attempts, row.last_error)
}

async fn task_status(store: &SqliteStore, control_id: &str) -> String {
    let task = store
        .read(&Access::Unrestricted, "Task", &format!("task-{control_id}"))
        .await
        .unwrap()
        .unwrap()
        .to_json()
        .unwrap()
        .unwrap();
    task["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn deliveries_are_retried_until_acknowledged_and_refusals_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(T0)));
    let url = format!("sqlite://{}", dir.path().join("out.db").display());
    let store = Arc::new(SqliteStore::open(&url, clock.clone()).await.unwrap());
    let standin = StandIn::start("127.0.0.1:0").await.unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    for (control_id, destination) in [
        ("M1", HOSPITAL),
        ("M2", HOSPITAL),
        ("M3", HOSPITAL),
        ("M4", HOSPITAL),
        ("M5", FILE_HOSPITAL),
        ("M6", NO_ROUTE),
    ] {
        enqueue(&store, control_id, destination).await;
    }
    let destinations: Vec<Arc<dyn Destination>> = vec![
        Arc::new(MllpDestination::new(
            HOSPITAL,
            standin.address().to_string(),
        )),
        Arc::new(FolderDestination::new(FILE_HOSPITAL, inbox.clone())),
    ];
    let options = DeliveryOptions {
        max_attempts: 4,
        first_backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(60),
        timeout: Duration::from_millis(500),
        batch: 100,
        lease: Duration::from_secs(60),
    };
    let mut deliverer = Deliverer::new(store.clone(), destinations, clock.clone(), options);

    // Round 1: M1 accepted, M2 AE, M3 AR, M4's connection dropped, M5 written, M6 has no destination.
    standin.script([
        Behaviour::Accept,
        Behaviour::Error,
        Behaviour::Reject,
        Behaviour::Drop,
    ]);
    let round = deliverer.round().await.unwrap();
    assert_eq!(
        round,
        Round {
            delivered: 2,
            retrying: 3,
            dead: 1,
            lost: 0,
        }
    );
    assert_eq!(state_of(&store, "M1").await.0, DeliveryState::Delivered);
    assert_eq!(task_status(&store, "M1").await, "completed");
    let (state, attempts, error) = state_of(&store, "M2").await;
    assert_eq!((state, attempts), (DeliveryState::Pending, 1));
    assert!(error.starts_with("AE"), "{error}");
    let (state, _, error) = state_of(&store, "M3").await;
    assert_eq!(state, DeliveryState::Dead);
    assert!(error.starts_with("AR"), "{error}");
    assert_eq!(task_status(&store, "M3").await, "failed");
    assert!(state_of(&store, "M6").await.2.contains("no destination"));
    let written = std::fs::read(inbox.join("M5.hl7")).unwrap();
    assert_eq!(written, payload("M5", "退院後の内服について"));
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        1,
        "no partial file left"
    );
    // Nothing is due before the backoff has passed.
    assert_eq!(deliverer.round().await.unwrap(), Round::default());

    // Round 2 (+5 s): M2 accepted; M4 answered with garbage.
    clock.0.fetch_add(5_000_000, Ordering::SeqCst);
    standin.script([Behaviour::Accept, Behaviour::Garbage]);
    let round = deliverer.round().await.unwrap();
    assert_eq!((round.delivered, round.retrying), (1, 2));
    assert_eq!(state_of(&store, "M2").await.0, DeliveryState::Delivered);
    // Round 3 (+10 s): M4's answer comes too late.
    clock.0.fetch_add(10_000_000, Ordering::SeqCst);
    standin.script([Behaviour::Slow(Duration::from_millis(1500))]);
    let round = deliverer.round().await.unwrap();
    assert_eq!(round.retrying, 2);
    assert!(state_of(&store, "M4").await.2.contains("no reply"));
    // Round 4 (+20 s): M4 accepted; M6 is out of attempts.
    clock.0.fetch_add(20_000_000, Ordering::SeqCst);
    let round = deliverer.round().await.unwrap();
    assert_eq!((round.delivered, round.dead), (1, 1));
    assert_eq!(
        state_of(&store, "M4").await,
        (DeliveryState::Delivered, 4, String::new())
    );
    assert_eq!(state_of(&store, "M6").await.0, DeliveryState::Dead);
    assert_eq!(task_status(&store, "M6").await, "failed");

    // The operator replays the dead letter M3; the peer accepts it now.
    let seq = store
        .outbound_list(&[DeliveryState::Dead], 0, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.control_id == "M3")
        .unwrap()
        .seq;
    let now = clock.now_micros();
    let act = |message: &tsunagi_store::OutboundMessage| {
        ActFacts::new(Act::OutboxRetry, message.control_id.clone(), None).record(
            Some(&message.patient),
            now,
            "retry1",
        )
    };
    operator_act(store.as_ref(), seq, true, "patient re-registered", now, act)
        .await
        .unwrap();
    assert_eq!(task_status(&store, "M3").await, "requested");
    // The act is in the audit trail, committed with it.
    let filter = AuditFilter {
        limit: 10,
        ..Default::default()
    };
    let trail = store.audit(&filter).await.unwrap();
    let event = tsunagi_store::audit::render(&trail[0].record);
    assert_eq!(event["subtype"][0]["code"], "outbox-retry");
    assert_eq!(event["entity"][1]["what"]["display"], "M3");
    let round = deliverer.round().await.unwrap();
    assert_eq!(round.delivered, 1);
    assert_eq!(task_status(&store, "M3").await, "completed");
    // A delivered message cannot be retried or dropped.
    let refused = operator_act(store.as_ref(), seq, false, "x", now, |message| {
        ActFacts::new(Act::OutboxDrop, message.control_id.clone(), None).record(None, now, "d1")
    });
    assert!(refused.await.is_err());
    // Refused: nothing was done, and no act recorded.
    assert_eq!(store.audit(&filter).await.unwrap().len(), trail.len());

    // At least once, one per MSH-10: M4 was accepted twice (its first AA came after the
    // timeout), always under the same control id.
    let accepted = standin.accepted();
    assert_eq!(
        accepted.keys().map(String::as_str).collect::<Vec<_>>(),
        ["M1", "M2", "M3", "M4"]
    );
    assert_eq!(accepted["M4"], 2);
}
