//! The store conformance suite: one set of behaviours every backend must show.
//!
//! A backend's test file calls [`store_conformance_suite!`](crate::store_conformance_suite) with
//! an async expression that yields a fresh, empty store; the macro expands to one `#[tokio::test]`
//! per behaviour. Compiled only with the `conformance` feature (a dev-dependency feature).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};

use crate::{Access, Batch, Operation, ResourceWrite, Store};

/// The suites check storage semantics; what each facility may see is `conformance_access`.
pub(crate) const ALL: Access = Access::Unrestricted;

/// The facility every record of these suites belongs to.
pub const FACILITY: &str = "0000000001";

pub(crate) fn observation(id: &str, code: &str, patient: &str) -> ResourceWrite {
    let resource = json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "code": code}], "text": code},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2011-12-19T15:00:00+09:00"
    });
    ResourceWrite::from_json("Observation", id, &resource).unwrap()
}

pub(crate) fn patient(id: &str, family: &str) -> ResourceWrite {
    let resource = json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10610100010", "value": id}],
        "name": [{"family": family}]
    });
    ResourceWrite::from_json("Patient", id, &resource).unwrap()
}

pub(crate) fn replace(source: &str, resources: Vec<ResourceWrite>) -> Operation {
    Operation::ReplaceSource {
        source_key: source.to_owned(),
        facility: FACILITY.to_owned(),
        resources,
    }
}

pub(crate) fn batch(operations: Vec<Operation>) -> Batch {
    Batch { operations }
}

pub(crate) fn content(store_resource: &crate::StoredResource) -> Value {
    serde_json::from_slice(store_resource.content.as_ref().unwrap()).unwrap()
}

pub async fn create_and_read(store: &dyn Store) {
    let stats = store
        .apply(batch(vec![replace(
            "s1",
            vec![patient("p1", "山田"), observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    assert_eq!(stats.created.get("Patient"), Some(&1));
    assert_eq!(stats.created.get("Observation"), Some(&1));
    let read = store.read(&ALL, "Patient", "p1").await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    assert!(!read.deleted);
    assert_eq!(content(&read)["name"][0]["family"], "山田");
    let with_meta = read.to_json().unwrap().unwrap();
    let mut spliced = Vec::new();
    assert!(read.write_json(&mut spliced).unwrap());
    assert_eq!(
        serde_json::from_slice::<Value>(&spliced).unwrap(),
        with_meta,
        "the spliced serialization says what to_json says"
    );
    assert_eq!(with_meta["meta"]["versionId"], "1");
    assert!(
        with_meta["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .ends_with("+09:00")
    );
    assert!(store.read(&ALL, "Patient", "nope").await.unwrap().is_none());
    assert!(
        store
            .read(&ALL, "Observation", "p1")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn reapplying_is_a_no_op(store: &dyn Store) {
    let write = || {
        batch(vec![replace(
            "s1",
            vec![patient("p1", "山田"), observation("o1", "A", "p1")],
        )])
    };
    store.apply(write()).await.unwrap();
    let second = store.apply(write()).await.unwrap();
    assert_eq!(second.written(), 0);
    assert_eq!(second.unchanged.values().sum::<u64>(), 2);
    assert_eq!(
        store
            .read(&ALL, "Patient", "p1")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(store.history(&ALL, "Patient", "p1").await.unwrap().len(), 1);
}

pub async fn changes_make_versions_and_keep_history(store: &dyn Store) {
    store
        .apply(batch(vec![replace("s1", vec![patient("p1", "山田")])]))
        .await
        .unwrap();
    let stats = store
        .apply(batch(vec![replace("s1", vec![patient("p1", "佐藤")])]))
        .await
        .unwrap();
    assert_eq!(stats.updated.get("Patient"), Some(&1));
    let current = store.read(&ALL, "Patient", "p1").await.unwrap().unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(content(&current)["name"][0]["family"], "佐藤");
    let first = store
        .vread(&ALL, "Patient", "p1", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(content(&first)["name"][0]["family"], "山田");
    assert!(
        store
            .vread(&ALL, "Patient", "p1", 3)
            .await
            .unwrap()
            .is_none()
    );
    let history = store.history(&ALL, "Patient", "p1").await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
}

pub async fn replace_source_deletes_what_it_no_longer_holds(store: &dyn Store) {
    store
        .apply(batch(vec![replace(
            "rx",
            vec![observation("o1", "A", "p1"), observation("o2", "B", "p1")],
        )]))
        .await
        .unwrap();
    let stats = store
        .apply(batch(vec![replace(
            "rx",
            vec![observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    assert_eq!(stats.deleted.get("Observation"), Some(&1));
    let gone = store
        .read(&ALL, "Observation", "o2")
        .await
        .unwrap()
        .unwrap();
    assert!(gone.deleted);
    assert_eq!(gone.version, 2);
    assert!(gone.to_json().unwrap().is_none());
    assert_eq!(
        store
            .history(&ALL, "Observation", "o2")
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.count_current().await.unwrap().get("Observation"),
        Some(&1)
    );
    // Replacing with nothing at all empties the source.
    store
        .apply(batch(vec![replace("rx", vec![])]))
        .await
        .unwrap();
    assert_eq!(
        store.count_current().await.unwrap().get("Observation"),
        None
    );
}

pub async fn delete_then_recreate(store: &dyn Store) {
    store
        .apply(batch(vec![replace(
            "s",
            vec![observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    let stats = store
        .apply(batch(vec![Operation::DeleteSource {
            source_key: "s".to_owned(),
        }]))
        .await
        .unwrap();
    assert_eq!(stats.deleted.get("Observation"), Some(&1));
    // Deleting again changes nothing.
    let again = store
        .apply(batch(vec![Operation::DeleteSource {
            source_key: "s".to_owned(),
        }]))
        .await
        .unwrap();
    assert!(again.deleted.is_empty());
    store
        .apply(batch(vec![replace(
            "s",
            vec![observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    let current = store
        .read(&ALL, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version, 3);
    assert!(!current.deleted);
}

pub async fn index_rows_follow_the_current_version(store: &dyn Store) {
    store
        .apply(batch(vec![replace(
            "s",
            vec![observation("o1", "A", "p1"), observation("o2", "B", "p2")],
        )]))
        .await
        .unwrap();
    let jlac = "http://medis.or.jp/CodeSystem/master-JLAC10-17digits";
    assert_eq!(
        store
            .find_by_token("Observation", "code", Some(jlac), "A")
            .await
            .unwrap(),
        vec!["o1"]
    );
    // The OID form of the system finds the same rows.
    assert_eq!(
        store
            .find_by_token(
                "Observation",
                "code",
                Some("urn:oid:1.2.392.200119.4.504"),
                "A"
            )
            .await
            .unwrap(),
        vec!["o1"]
    );
    assert_eq!(
        store
            .find_by_token("Observation", "code", None, "B")
            .await
            .unwrap(),
        vec!["o2"]
    );
    assert_eq!(
        store
            .find_by_reference("Observation", "patient", "Patient/p1")
            .await
            .unwrap(),
        vec!["o1"]
    );
    store
        .apply(batch(vec![replace(
            "s",
            vec![observation("o1", "C", "p1"), observation("o2", "B", "p2")],
        )]))
        .await
        .unwrap();
    assert!(
        store
            .find_by_token("Observation", "code", None, "A")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .find_by_token("Observation", "code", None, "C")
            .await
            .unwrap(),
        vec!["o1"]
    );
    store
        .apply(batch(vec![replace(
            "s",
            vec![observation("o1", "C", "p1")],
        )]))
        .await
        .unwrap();
    assert!(
        store
            .find_by_token("Observation", "code", None, "B")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find_by_reference("Observation", "patient", "Patient/p2")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn checkpoints_commit_with_the_data(store: &dyn Store) {
    store
        .apply(batch(vec![
            replace("s", vec![patient("p1", "山田")]),
            Operation::PutCheckpoint {
                scope: "x".to_owned(),
                key: "b".to_owned(),
                value: b"2".to_vec(),
            },
            Operation::PutCheckpoint {
                scope: "x".to_owned(),
                key: "a".to_owned(),
                value: b"1".to_vec(),
            },
            Operation::PutCheckpoint {
                scope: "y".to_owned(),
                key: "a".to_owned(),
                value: b"9".to_vec(),
            },
        ]))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint("x", "a").await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(store.checkpoint("x", "zz").await.unwrap(), None);
    let all = store.checkpoints("x").await.unwrap();
    assert_eq!(
        all,
        vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec())
        ]
    );
    let many = store
        .checkpoints_in(&["y".to_owned(), "x".to_owned(), "none".to_owned()])
        .await
        .unwrap();
    let row =
        |scope: &str, key: &str, value: &[u8]| (scope.to_owned(), key.to_owned(), value.to_vec());
    assert_eq!(
        many,
        vec![
            row("x", "a", b"1"),
            row("x", "b", b"2"),
            row("y", "a", b"9")
        ]
    );
    store
        .apply(batch(vec![Operation::PutCheckpoint {
            scope: "x".to_owned(),
            key: "a".to_owned(),
            value: b"3".to_vec(),
        }]))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint("x", "a").await.unwrap(),
        Some(b"3".to_vec())
    );
}

pub async fn a_failing_batch_leaves_nothing(store: &dyn Store) {
    let result = store
        .apply(batch(vec![
            Operation::PutCheckpoint {
                scope: "x".to_owned(),
                key: "a".to_owned(),
                value: b"1".to_vec(),
            },
            replace("s", vec![patient("p1", "山田")]),
            // The same resource twice in one source record is refused.
            replace(
                "t",
                vec![observation("o1", "A", "p1"), observation("o1", "B", "p1")],
            ),
        ]))
        .await;
    assert!(result.is_err());
    assert_eq!(store.checkpoint("x", "a").await.unwrap(), None);
    assert!(store.read(&ALL, "Patient", "p1").await.unwrap().is_none());
}

pub async fn blobs_commit_with_the_batch_once_per_content(store: &dyn Store) {
    let pdf = b"%PDF-1.7\n\x00\xff binary".to_vec();
    let sha = [3u8; 32];
    store
        .apply(batch(vec![
            Operation::PutBlob {
                sha256: sha,
                bytes: pdf.clone(),
            },
            replace("d1", vec![patient("p1", "山田")]),
        ]))
        .await
        .unwrap();
    assert_eq!(store.blob(&sha).await.unwrap(), Some(pdf.clone()));
    // The same content again (another version naming it) is no error and changes nothing.
    store
        .apply(batch(vec![Operation::PutBlob {
            sha256: sha,
            bytes: pdf.clone(),
        }]))
        .await
        .unwrap();
    assert_eq!(store.blob(&sha).await.unwrap(), Some(pdf));
    assert_eq!(store.blob(&[4u8; 32]).await.unwrap(), None);
    // A failing batch leaves no blob behind.
    let other = [5u8; 32];
    let failed = store
        .apply(batch(vec![
            Operation::PutBlob {
                sha256: other,
                bytes: b"x".to_vec(),
            },
            replace(
                "t",
                vec![observation("o1", "A", "p1"), observation("o1", "B", "p1")],
            ),
        ]))
        .await;
    assert!(failed.is_err());
    assert_eq!(store.blob(&other).await.unwrap(), None);
    assert_eq!(store.blob_size(&other).await.unwrap(), None);

    // A content larger than a part is kept in parts that follow each other without gaps, and
    // a part is found from any byte it holds.
    let part = crate::BLOB_PART_BYTES;
    let large: Vec<u8> = (0..part * 2 + part / 2)
        .map(|n| (n % 251) as u8 ^ (n / part) as u8)
        .collect();
    let big = [6u8; 32];
    store
        .apply(batch(vec![Operation::PutBlob {
            sha256: big,
            bytes: large.clone(),
        }]))
        .await
        .unwrap();
    assert_eq!(
        store.blob_size(&big).await.unwrap(),
        Some(large.len() as u64)
    );
    let mut at = 0u64;
    let mut parts = Vec::new();
    while at < large.len() as u64 {
        let (first, bytes) = store.blob_part(&big, at).await.unwrap().unwrap();
        assert_eq!(first, at, "parts follow each other");
        assert!(!bytes.is_empty() && bytes.len() <= part);
        assert_eq!(bytes, large[at as usize..at as usize + bytes.len()]);
        at += bytes.len() as u64;
        parts.push(first);
    }
    assert_eq!(parts.len(), 3);
    let middle = (part + part / 2) as u64;
    assert_eq!(
        store.blob_part(&big, middle).await.unwrap().unwrap().0,
        part as u64
    );
    assert_eq!(store.blob(&big).await.unwrap(), Some(large));
    // An empty content is stored and read back empty.
    let empty = [7u8; 32];
    store
        .apply(batch(vec![Operation::PutBlob {
            sha256: empty,
            bytes: Vec::new(),
        }]))
        .await
        .unwrap();
    assert_eq!(store.blob_size(&empty).await.unwrap(), Some(0));
    assert_eq!(store.blob(&empty).await.unwrap(), Some(Vec::new()));
}

pub async fn one_batch_may_touch_a_resource_twice(store: &dyn Store) {
    let stats = store
        .apply(batch(vec![
            replace("k", vec![observation("o1", "A", "p1")]),
            replace("k", vec![observation("o1", "B", "p1")]),
        ]))
        .await
        .unwrap();
    assert_eq!(stats.created.get("Observation"), Some(&1));
    assert_eq!(stats.updated.get("Observation"), Some(&1));
    let current = store
        .read(&ALL, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(
        store
            .find_by_token("Observation", "code", None, "B")
            .await
            .unwrap(),
        vec!["o1"]
    );
    assert!(
        store
            .find_by_token("Observation", "code", None, "A")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn an_existing_resource_updated_twice_in_one_batch(store: &dyn Store) {
    store
        .apply(batch(vec![replace(
            "k",
            vec![observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    store
        .apply(batch(vec![
            replace("k", vec![observation("o1", "B", "p1")]),
            replace("k", vec![observation("o1", "C", "p1")]),
        ]))
        .await
        .unwrap();
    assert_eq!(
        store
            .read(&ALL, "Observation", "o1")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    assert_eq!(
        store
            .history(&ALL, "Observation", "o1")
            .await
            .unwrap()
            .len(),
        3
    );
    for stale in ["A", "B"] {
        assert!(
            store
                .find_by_token("Observation", "code", None, stale)
                .await
                .unwrap()
                .is_empty(),
            "{stale}"
        );
    }
    assert_eq!(
        store
            .find_by_token("Observation", "code", None, "C")
            .await
            .unwrap(),
        vec!["o1"]
    );
    // Created, changed and deleted within one batch: history keeps all three versions.
    store
        .apply(batch(vec![
            replace("m", vec![observation("o9", "X", "p1")]),
            replace("m", vec![observation("o9", "Y", "p1")]),
            Operation::DeleteSource {
                source_key: "m".to_owned(),
            },
        ]))
        .await
        .unwrap();
    let history = store.history(&ALL, "Observation", "o9").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| (h.version, h.deleted))
            .collect::<Vec<_>>(),
        vec![(3, true), (2, false), (1, false)]
    );
    assert!(
        store
            .find_by_token("Observation", "code", None, "Y")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn export_order_and_counts(store: &dyn Store) {
    store
        .apply(batch(vec![
            replace("a", vec![patient("p2", "b"), patient("p1", "a")]),
            replace(
                "b",
                vec![observation("o1", "A", "p1"), observation("o2", "A", "p1")],
            ),
        ]))
        .await
        .unwrap();
    store
        .apply(batch(vec![replace(
            "b",
            vec![observation("o1", "A", "p1")],
        )]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let visited = store
        .for_each_current(&mut |resource| {
            seen.push(format!("{}/{}", resource.resource_type, resource.id));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(visited, 3);
    assert_eq!(seen, vec!["Observation/o1", "Patient/p1", "Patient/p2"]);
    let counts = store.count_current().await.unwrap();
    assert_eq!(counts.get("Patient"), Some(&2));
    assert_eq!(counts.get("Observation"), Some(&1));
}

/// A write whose caller stops waiting, at any point of it, still commits whole (it runs to its
/// end in a task of its own), and the connections it used answer the next reads with their own
/// rows, not with an answer left over from the write.
pub async fn a_write_whose_caller_stops_waiting_still_commits(store: &dyn Store) {
    const ROUNDS: u64 = 16;
    let id = |round: u64, i: u64| format!("cut{round}-{i}");
    for round in 0..ROUNDS {
        let resources = (0..150).map(|i| patient(&id(round, i), "山田")).collect();
        let write = store.apply(batch(vec![replace(&format!("cut{round}"), resources)]));
        // The caller gives up after 0, 0.4, 0.8 … ms: at a different point of each write.
        let waited = std::time::Duration::from_micros(round * 400);
        let _ = tokio::time::timeout(waited, write).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for round in 0..ROUNDS {
        loop {
            if store
                .read(&ALL, "Patient", &id(round, 149))
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "write {round}, abandoned by its caller, never committed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    for round in 0..ROUNDS {
        for i in [0, 75, 149] {
            let read = store.read(&ALL, "Patient", &id(round, i)).await.unwrap();
            assert_eq!(read.map(|read| read.id), Some(id(round, i)));
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance behaviour; `$make` is an async expression
/// yielding a fresh, empty store.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@tests $make;
            create_and_read,
            reapplying_is_a_no_op,
            changes_make_versions_and_keep_history,
            replace_source_deletes_what_it_no_longer_holds,
            delete_then_recreate,
            index_rows_follow_the_current_version,
            checkpoints_commit_with_the_data,
            a_failing_batch_leaves_nothing,
            blobs_commit_with_the_batch_once_per_content,
            one_batch_may_touch_a_resource_twice,
            an_existing_resource_updated_twice_in_one_batch,
            export_order_and_counts,
            a_write_whose_caller_stops_waiting_still_commits,
        );
        $crate::store_conformance_suite!(@log $make;
            the_message_log_commits_with_the_data,
            the_outbox_commits_with_the_resource,
            outbox_claims_are_exclusive_and_fenced,
            a_node_name_is_held_once,
            a_create_required_new_happens_once,
        );
        $crate::store_conformance_suite!(@search $make;
            search_tokens_strings_and_references,
            search_dates_quantities_and_sorting,
            search_includes_compartments_and_history,
            search_at_the_query_limits,
            repeated_values_in_one_resource_index_once,
            a_nul_in_a_string_is_stored_and_indexed_without_it,
        );
        $crate::store_conformance_suite!(@text $make;
            full_text_search_in_japanese,
        );
    };
    (@text $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance_text::$name(&store).await;
            }
        )*
    };
    (@log $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance_queues::$name(&store).await;
            }
        )*
    };
    (@search $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance_search::$name(&store).await;
            }
        )*
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}
