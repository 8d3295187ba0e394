//! The store conformance suite, the queues: the inbound message log and the outbound queue
//! commit with the data they concern, refuse a duplicate key, and name an unknown row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::{
    Operation, Store,
    conformance::{ALL, FACILITY, batch, patient, replace},
};

fn logged(control_id: &str, content: &[u8], state: crate::MessageState) -> Operation {
    Operation::LogMessage(Box::new(crate::InboundMessage {
        seq: 0,
        channel: "mllp".to_owned(),
        sender: "HIS|SHONAI".to_owned(),
        control_id: control_id.to_owned(),
        hash: content.iter().rev().copied().collect(),
        received: 1_700_000_000_000_000,
        facility: FACILITY.to_owned(),
        message_type: "ADT^A08".to_owned(),
        patient: "p1".to_owned(),
        state,
        reason: String::new(),
        ack: b"MSH|^~\\&|ack".to_vec(),
        raw: content.to_vec(),
    }))
}

/// The inbound message log commits with the data a message maps to, keeps one message per
/// duplicate key (a conflicting resend beside it), lists what is not applied in arrival order
/// and changes state only for messages it holds.
pub async fn the_message_log_commits_with_the_data<S: Store + crate::MessageLog>(store: &S) {
    use crate::MessageState::{Applied, Conflict, Dropped, Quarantined};
    store
        .apply(batch(vec![
            logged("M1", b"first", Applied),
            replace("feed:p1", vec![patient("p1", "山田")]),
        ]))
        .await
        .unwrap();
    let first = store
        .logged_message("HIS|SHONAI", "M1")
        .await
        .unwrap()
        .unwrap();
    assert!(first.seq > 0);
    assert_eq!(
        (first.raw.as_slice(), first.state),
        (&b"first"[..], Applied)
    );
    assert_eq!(first.ack, b"MSH|^~\\&|ack".to_vec());
    assert_eq!(store.message(first.seq).await.unwrap().unwrap(), first);
    assert!(
        store
            .logged_message("HIS|SHONAI", "M2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .logged_message("HIS|OTHER", "M1")
            .await
            .unwrap()
            .is_none()
    );

    // The same key again fails the whole batch: the resources it carried are not written.
    let again = store
        .apply(batch(vec![
            replace("feed:p2", vec![patient("p2", "佐藤")]),
            logged("M1", b"first", Applied),
        ]))
        .await;
    assert!(
        matches!(again, Err(crate::StoreError::Invalid(ref reason)) if reason.contains("already logged")),
        "{again:?}"
    );
    assert!(store.read(&ALL, "Patient", "p2").await.unwrap().is_none());

    // A conflicting resend is kept beside the original; the key still finds the original.
    store
        .apply(batch(vec![
            logged("M1", b"other content", Conflict),
            logged("M2", b"unknown type", Quarantined),
            logged("M3", b"unknown patient", Quarantined),
        ]))
        .await
        .unwrap();
    assert_eq!(
        store
            .logged_message("HIS|SHONAI", "M1")
            .await
            .unwrap()
            .unwrap()
            .seq,
        first.seq
    );
    // A group's keys are looked up at once; the conflict beside M1 is not a logged message.
    let key = |control_id: &str| ("HIS|SHONAI".to_owned(), control_id.to_owned());
    let mut found: Vec<(String, i64)> = store
        .logged_messages(&[
            key("M1"),
            key("M2"),
            key("nothing"),
            ("HIS|OTHER".into(), "M3".into()),
        ])
        .await
        .unwrap()
        .into_iter()
        .map(|message| (message.control_id, message.seq))
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], ("M1".to_owned(), first.seq));
    assert_eq!(found[1].0, "M2");
    let open = store
        .messages(&[Quarantined, Conflict], 0, 10)
        .await
        .unwrap();
    let listed: Vec<(&str, crate::MessageState)> = open
        .iter()
        .map(|message| (message.control_id.as_str(), message.state))
        .collect();
    assert_eq!(
        listed,
        vec![("M1", Conflict), ("M2", Quarantined), ("M3", Quarantined)]
    );
    assert!(open.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let after_first = store
        .messages(&[Quarantined, Conflict], open[0].seq, 1)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].control_id, "M2");

    // The operator drops one and applies the other after a fix.
    store
        .apply(batch(vec![Operation::SetMessageState {
            seq: open[1].seq,
            state: Dropped,
            reason: "dropped by operator".to_owned(),
        }]))
        .await
        .unwrap();
    store
        .apply(batch(vec![
            replace("feed:p3", vec![patient("p3", "鈴木")]),
            Operation::SetMessageState {
                seq: open[2].seq,
                state: Applied,
                reason: String::new(),
            },
        ]))
        .await
        .unwrap();
    let quarantined = store.messages(&[Quarantined], 0, 10).await.unwrap();
    assert!(quarantined.is_empty(), "{quarantined:?}");
    let dropped = store.message(open[1].seq).await.unwrap().unwrap();
    assert_eq!(
        (dropped.state, dropped.reason.as_str()),
        (Dropped, "dropped by operator")
    );
    assert!(store.read(&ALL, "Patient", "p3").await.unwrap().is_some());
    // A state change for a message the log does not hold fails its batch.
    let unknown = store
        .apply(batch(vec![
            replace("feed:p4", vec![patient("p4", "高橋")]),
            Operation::SetMessageState {
                seq: 999_999,
                state: Dropped,
                reason: String::new(),
            },
        ]))
        .await;
    assert!(
        matches!(unknown, Err(crate::StoreError::NotFound(_))),
        "{unknown:?}"
    );
    assert!(store.read(&ALL, "Patient", "p4").await.unwrap().is_none());
}

fn queued(resource: &str, destination: &str, next_attempt: i64) -> Operation {
    Operation::Enqueue(Box::new(crate::OutboundMessage {
        seq: 0,
        destination: destination.to_owned(),
        resource: resource.to_owned(),
        task: format!("Task/{}", resource.replace('/', "-")),
        patient: "p1".to_owned(),
        control_id: format!("OUT-{resource}"),
        payload: b"MSH|^~\\&|TSUNAGI".to_vec(),
        state: crate::DeliveryState::Pending,
        attempts: 0,
        next_attempt,
        last_error: String::new(),
        ack: Vec::new(),
        created: next_attempt,
        updated: next_attempt,
    }))
}

/// The outbound queue commits with the resource it carries, lists what is due in due order,
/// holds one delivery of a resource per destination, and records attempts only for rows it holds.
pub async fn the_outbox_commits_with_the_resource<S: Store + crate::Outbox>(store: &S) {
    use crate::DeliveryState::{Dead, Delivered, Pending};
    store
        .apply(batch(vec![
            replace("api:c1", vec![patient("p1", "山田")]),
            queued("Communication/c1", "0610100010", 200),
            queued("Communication/c2", "0610100010", 100),
            queued("Communication/c3", "0610100020", 300),
        ]))
        .await
        .unwrap();
    let claims = store.claim_due("a", 250, 1_000, 10).await.unwrap();
    let fences: Vec<i64> = claims.iter().map(|claim| claim.fence).collect();
    let due: Vec<crate::OutboundMessage> = claims.into_iter().map(|claim| claim.message).collect();
    let listed: Vec<&str> = due.iter().map(|row| row.resource.as_str()).collect();
    assert_eq!(listed, vec!["Communication/c2", "Communication/c1"]);
    assert_eq!(fences, vec![1, 1]);
    // Held until 1000: nobody else claims them; the worker wakes for c3, due at 300.
    assert!(store.claim_due("b", 250, 270, 10).await.unwrap().is_empty());
    assert_eq!(store.outbound_next_due().await.unwrap(), Some(300));
    let first = store.outbound(due[1].seq).await.unwrap().unwrap();
    assert_eq!(first, due[1]);
    assert_eq!(first.payload, b"MSH|^~\\&|TSUNAGI".to_vec());
    assert_eq!((first.state, first.attempts), (Pending, 0));

    // The same resource to the same destination again fails its batch, resource and all.
    let again = store
        .apply(batch(vec![
            replace("api:p2", vec![patient("p2", "佐藤")]),
            queued("Communication/c1", "0610100010", 500),
        ]))
        .await;
    assert!(
        matches!(again, Err(crate::StoreError::Invalid(ref reason)) if reason.contains("already queued")),
        "{again:?}"
    );
    assert!(store.read(&ALL, "Patient", "p2").await.unwrap().is_none());

    // Attempts: one delivered, one retried later, one dead.
    let update = |seq, state, attempts, next_attempt, error: &str| {
        Operation::SetDelivery(Box::new(crate::DeliveryUpdate {
            seq,
            state,
            attempts,
            next_attempt,
            last_error: error.to_owned(),
            ack: b"MSA|AA".to_vec(),
            updated: 400,
            fence: (seq != 999_999).then_some(1),
        }))
    };
    let third = store
        .outbound_list(&[Pending], 0, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.resource == "Communication/c3")
        .unwrap();
    assert_eq!(
        store.claim_due("a", 300, 310, 10).await.unwrap()[0].message,
        third
    );
    store
        .apply(batch(vec![
            update(due[0].seq, Delivered, 1, 100, ""),
            update(due[1].seq, Pending, 1, 1_000, "AE: try later"),
            update(third.seq, Dead, 1, 300, "AR: unknown patient"),
        ]))
        .await
        .unwrap();
    assert!(
        store
            .claim_due("a", 999, 1_009, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbound_next_due().await.unwrap(), Some(1_000));
    let dead = store.outbound_list(&[Dead], 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].last_error.as_str(),
            dead[0].attempts,
            dead[0].updated
        ),
        ("AR: unknown patient", 1, 400)
    );
    let delivered = store.outbound(due[0].seq).await.unwrap().unwrap();
    assert_eq!(
        (delivered.state, delivered.ack.as_slice()),
        (Delivered, &b"MSA|AA"[..])
    );
    let all = store
        .outbound_list(&crate::DeliveryState::ALL, 0, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|pair| pair[0].seq < pair[1].seq));

    // An update of a row the queue does not hold fails its batch.
    let unknown = store
        .apply(batch(vec![
            replace("api:p4", vec![patient("p4", "高橋")]),
            update(999_999, Dead, 1, 0, "x"),
        ]))
        .await;
    assert!(
        matches!(unknown, Err(crate::StoreError::NotFound(_))),
        "{unknown:?}"
    );
    assert!(store.read(&ALL, "Patient", "p4").await.unwrap().is_none());
}

/// Claims: a due message is held by one node at a time; a claim that ran out is taken over
/// under a new fence, and the old holder can neither renew it nor record its attempt (its whole
/// batch fails); the operator's act ends any claim.
pub async fn outbox_claims_are_exclusive_and_fenced<S: Store + crate::Outbox>(store: &S) {
    use crate::DeliveryState::{Delivered, Pending};
    let mut rows = vec![replace("api:c1", vec![patient("p1", "山田")])];
    for index in 0..40 {
        rows.push(queued(
            &format!("Communication/n{index}"),
            "0610100010",
            100,
        ));
    }
    store.apply(batch(rows)).await.unwrap();
    // Four claimers at once: every row claimed exactly once.
    let (a, b, c, d) = tokio::join!(
        store.claim_due("a", 200, 1_000, 15),
        store.claim_due("b", 200, 1_000, 15),
        store.claim_due("c", 200, 1_000, 15),
        store.claim_due("d", 200, 1_000, 15),
    );
    let mut seqs: Vec<i64> = [a, b, c, d]
        .into_iter()
        .flat_map(|claims| claims.unwrap())
        .map(|claim| claim.message.seq)
        .collect();
    assert_eq!(seqs.len(), 40);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 40, "a row was claimed twice");
    // After the claims end (1000), another node takes one over under a new fence.
    let taken = store.claim_due("e", 1_000, 2_000, 1).await.unwrap();
    let taken = &taken[0];
    assert_eq!(taken.fence, 2);
    assert!(
        !store
            .renew_claim(taken.message.seq, 1, 3_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .renew_claim(taken.message.seq, 2, 3_000)
            .await
            .unwrap()
    );
    let outcome = |fence: Option<i64>, state| {
        Operation::SetDelivery(Box::new(crate::DeliveryUpdate {
            seq: taken.message.seq,
            state,
            attempts: 1,
            next_attempt: 5_000,
            last_error: String::new(),
            ack: Vec::new(),
            updated: 1_500,
            fence,
        }))
    };
    // The old holder's outcome fails its batch, resource and all.
    let stale = store
        .apply(batch(vec![
            replace("api:p9", vec![patient("p9", "古川")]),
            outcome(Some(1), Delivered),
        ]))
        .await;
    assert!(
        matches!(stale, Err(crate::StoreError::ClaimLost(_))),
        "{stale:?}"
    );
    assert!(store.read(&ALL, "Patient", "p9").await.unwrap().is_none());
    // The holder's outcome counts and ends the claim.
    store
        .apply(batch(vec![outcome(Some(2), Pending)]))
        .await
        .unwrap();
    let row = store.outbound(taken.message.seq).await.unwrap().unwrap();
    assert_eq!((row.state, row.next_attempt), (Pending, 5_000));
    // The operator's act moves the fence past the holder's (it cannot record or renew), but
    // its lease stands: nobody sends the message again while that attempt may be in flight.
    let again = store.claim_due("f", 5_000, 9_000, 50).await.unwrap();
    let held = again
        .iter()
        .find(|claim| claim.message.seq == taken.message.seq)
        .unwrap();
    store
        .apply(batch(vec![outcome(None, Pending)]))
        .await
        .unwrap();
    assert!(
        !store
            .renew_claim(held.message.seq, held.fence, 9_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due("g", 5_000, 9_500, 50)
            .await
            .unwrap()
            .is_empty()
    );
    let retaken = store.claim_due("g", 9_000, 12_000, 50).await.unwrap();
    assert!(
        retaken
            .iter()
            .any(|claim| claim.message.seq == taken.message.seq)
    );
    // Node "g" starts again: what it held is free at once, under new fences.
    assert_eq!(store.release_claims("h").await.unwrap(), 0);
    assert_eq!(
        store.release_claims("g").await.unwrap(),
        retaken.len() as u64
    );
    let after = store.claim_due("g", 9_000, 12_000, 50).await.unwrap();
    assert_eq!(after.len(), retaken.len());
    assert!(
        after
            .iter()
            .zip(&retaken)
            .all(|(now, before)| now.fence == before.fence + 2)
    );
}

/// A node name is held by one live process at a time: a second hold of it fails until the
/// first is dropped; another name is free.
pub async fn a_node_name_is_held_once<S: Store + crate::Outbox>(store: &S) {
    let mut first = store.hold_node("gw-1").await.unwrap();
    assert!(first.is_some());
    assert!(first.as_mut().unwrap().still_held().await);
    assert!(store.hold_node("gw-1").await.unwrap().is_none());
    assert!(store.hold_node("gw-2").await.unwrap().is_some());
    drop(first);
    // The database lets the name go once the holder's session has ended (a moment on
    // PostgreSQL).
    let mut again = None;
    for _ in 0..100 {
        again = store.hold_node("gw-1").await.unwrap();
        if again.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(again.is_some());
}

/// A batch that requires a resource to be new fails whole, with a conflict, when the resource
/// is current (stored before, or written earlier in the same batch); a deleted one may be made
/// again.
pub async fn a_create_required_new_happens_once<S: Store>(store: &S) {
    let require = |id: &str| Operation::RequireNew {
        tid: format!("Patient/{id}"),
    };
    let once = || {
        batch(vec![
            require("once"),
            replace("once", vec![patient("once", "山田")]),
        ])
    };
    store.apply(once()).await.unwrap();
    let again = store.apply(once()).await;
    assert!(
        matches!(again, Err(crate::StoreError::Conflict(_))),
        "{again:?}"
    );
    let beside = store
        .apply(batch(vec![
            require("once"),
            replace("beside", vec![patient("beside", "佐藤")]),
        ]))
        .await;
    assert!(
        matches!(beside, Err(crate::StoreError::Conflict(_))),
        "{beside:?}"
    );
    assert!(
        store
            .read(&ALL, "Patient", "beside")
            .await
            .unwrap()
            .is_none()
    );

    let in_batch = store
        .apply(batch(vec![
            replace("fresh", vec![patient("fresh", "鈴木")]),
            require("fresh"),
        ]))
        .await;
    assert!(
        matches!(in_batch, Err(crate::StoreError::Conflict(_))),
        "{in_batch:?}"
    );
    assert!(
        store
            .read(&ALL, "Patient", "fresh")
            .await
            .unwrap()
            .is_none()
    );

    store
        .apply(batch(vec![Operation::DeleteSource {
            source_key: "once".to_owned(),
        }]))
        .await
        .unwrap();
    store.apply(once()).await.unwrap();
    let read = store.read(&ALL, "Patient", "once").await.unwrap().unwrap();
    assert!(!read.deleted);
    assert_eq!(read.version, 3);
}
