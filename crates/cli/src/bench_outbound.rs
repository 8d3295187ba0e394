//! `tsunagi bench outbound`: outbound delivery throughput to the local EHR stand-in (the issue's
//! target: ≥ 1,000 deliveries/s). Notes are queued as the write endpoint queues them (resource,
//! Task and outbox row in one transaction, MDM^T02 encoded), then the deliverer sends them over
//! MLLP, reads and checks each ACK and commits the outcomes with their Tasks. Use a release build.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::json;
use tsunagi_adapter::delivery::{Deliverer, DeliveryOptions};
use tsunagi_adapter_outbound_mllp::MllpDestination;
use tsunagi_core::clock::{Clock, SystemClock};
use tsunagi_hl7v2::document::OutboundDocument;
use tsunagi_mllp::standin::StandIn;
use tsunagi_store::{Batch, DeliveryState, Operation, OutboundMessage, ResourceWrite};

use crate::open;

const TARGET_DELIVERIES_PER_SECOND: f64 = 1_000.0;
const HOSPITAL: &str = "0610100010";

/// The operations the write endpoint commits for one note to the hospital.
fn queued_note(number: usize, now: i64) -> anyhow::Result<Vec<Operation>> {
    let id = format!("bench-note-{number}");
    let task_id = format!("bench-task-{number}");
    let control_id = format!("B{number:016}");
    let note = json!({
        "resourceType": "Communication", "id": id, "status": "completed",
        "subject": {"reference": "Patient/bench"},
        "recipient": [{"reference": format!("Organization/{HOSPITAL}")}],
        "payload": [{"contentString": "退院後の内服について。①朝食後 ②夕食後"}]
    });
    let task = json!({
        "resourceType": "Task", "id": task_id, "status": "requested", "intent": "order",
        "focus": {"reference": format!("Communication/{id}")}, "for": {"reference": "Patient/bench"}
    });
    let payload = OutboundDocument {
        sending_application: "TSUNAGI".into(),
        sending_facility: "0610400014".into(),
        receiving_application: String::new(),
        receiving_facility: HOSPITAL.into(),
        timestamp: "20261124101500+0900".into(),
        control_id: control_id.clone(),
        patient_id: "0000000001".into(),
        patient_name: ("山田".into(), "花子".into()),
        document_type: ("note".into(), "連絡".into()),
        activity_time: "20261124101500+0900".into(),
        originator: ("dr-bench".into(), "doctor".into()),
        unique_id: format!("Communication/{id}"),
        parent_id: String::new(),
        lines: vec!["退院後の内服について。".into(), "①朝食後 ②夕食後".into()],
        attachments: Vec::new(),
    }
    .encode()
    .0;
    Ok(vec![
        Operation::ReplaceSource {
            source_key: format!("api:bench:{id}"),
            facility: HOSPITAL.into(),
            resources: vec![ResourceWrite::from_json("Communication", &id, &note)?],
        },
        Operation::ReplaceSource {
            source_key: format!("outbox:Task/{task_id}"),
            facility: HOSPITAL.into(),
            resources: vec![ResourceWrite::from_json("Task", &task_id, &task)?],
        },
        Operation::Enqueue(Box::new(OutboundMessage {
            seq: 0,
            destination: HOSPITAL.into(),
            resource: format!("Communication/{id}"),
            task: format!("Task/{task_id}"),
            patient: "bench".into(),
            control_id,
            payload,
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt: now,
            last_error: String::new(),
            ack: Vec::new(),
            created: now,
            updated: now,
        })),
    ])
}

/// Runs the benchmark and prints its figures.
pub(crate) async fn run(notes: usize) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        println!("warning: a debug build; measure with `cargo run --release -- bench outbound`");
    }
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = open::open_store(&url).await?;
    let now = SystemClock.now_micros();
    let patient = json!({"resourceType": "Patient", "id": "bench", "name": [{"family": "山田"}]});
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: "bench:patient".into(),
                facility: HOSPITAL.into(),
                resources: vec![ResourceWrite::from_json("Patient", "bench", &patient)?],
            }],
        })
        .await?;
    let queue_started = Instant::now();
    for chunk in (0..notes).collect::<Vec<_>>().chunks(500) {
        let mut operations = Vec::new();
        for &number in chunk {
            operations.extend(queued_note(number, now)?);
        }
        store.apply(Batch { operations }).await?;
    }
    let queue_seconds = queue_started.elapsed().as_secs_f64();

    let standin = StandIn::start("127.0.0.1:0").await?;
    let destination = MllpDestination::new(HOSPITAL, standin.address().to_string());
    let mut deliverer = Deliverer::new(
        store.clone(),
        vec![Arc::new(destination)],
        Arc::new(SystemClock),
        DeliveryOptions {
            timeout: Duration::from_secs(10),
            ..DeliveryOptions::default()
        },
    );
    let started = Instant::now();
    let mut delivered = 0;
    let mut rounds = 0;
    while delivered < notes {
        let round = deliverer.round().await?;
        rounds += 1;
        if round.retrying + round.dead > 0 {
            bail!("{round:?}: every note should be accepted by the stand-in");
        }
        if round.delivered == 0 {
            bail!("nothing left to deliver after {delivered} of {notes}");
        }
        delivered += round.delivered;
    }
    let seconds = started.elapsed().as_secs_f64();
    let accepted = standin.accepted();
    let once = accepted.values().all(|&count| count == 1);
    let pending = store
        .outbound_list(&[DeliveryState::Pending, DeliveryState::Dead], 0, 10)
        .await?;
    let rate = delivered as f64 / seconds;
    println!(
        "tsunagi bench outbound — {notes} notes to the EHR stand-in over MLLP (SQLite, one writer)"
    );
    println!(
        "  queued (resource + Task + outbox row per note):   {:>8.0} notes/s",
        notes as f64 / queue_seconds
    );
    println!(
        "  delivered (send, read ACK, check MSA, commit):    {rate:>8.0} deliveries/s in {seconds:.2} s, {rounds} rounds"
    );
    println!(
        "  target ≥ {TARGET_DELIVERIES_PER_SECOND:.0}/s: {:.2}×",
        rate / TARGET_DELIVERIES_PER_SECOND
    );
    println!(
        "  stand-in accepted {} distinct MSH-10, each once: {once}; left pending or dead: {}",
        accepted.len(),
        pending.len()
    );
    Ok(())
}
