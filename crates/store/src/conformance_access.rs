//! The access conformance suite: the policy matrix of issue 4 at the store boundary. Every read
//! method, under every facility's [`Access`], must return exactly the permitted set, and a hidden
//! resource must look exactly like an absent one.
//!
//! The region: facilities H1, H2 (hospitals), C1, C2 (clinics), P (pharmacy), K (care-manager
//! office), L (lab company). Patients, each with two Observations and a Condition:
//! - `h1-none`: H1's, no consent;
//! - `h1-c1`: H1's, consent H1 → C1 in force;
//! - `h1-withdrawn`: H1's, consent H1 → C1 withdrawn;
//! - `h1-expired`: H1's, consent H1 → C1 that ended;
//! - `h1-linked`, `h2-linked`: one person at H1 and H2, linked under one regional id, with
//!   consents H1 → C1 and H2 → C1 (so C1 sees both), and H2 → H1 (so H1 sees H2's record too);
//! - `h2-only`: H2's, no consent.
//!
//! The expected sets come from a plain model of the rule (holder, or consent in force for the
//! viewer from the holder over a record linked with the consent's patient), not from the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;

use serde_json::json;
use tsunagi_fhir::query::SearchQuery;

use crate::{
    Access, Batch, Governance, Operation, ResourceWrite, Store,
    governance::{Consent, Facility},
};

/// The instant every check runs at (2023-11-14T22:13:20Z, the fixed clock of the tests).
pub const NOW: i64 = 1_700_000_000_000_000;
const DAY: i64 = 86_400_000_000;

pub const FACILITIES: [(&str, &str); 7] = [
    ("0000000011", "hospital"),
    ("0000000012", "hospital"),
    ("0000000021", "clinic"),
    ("0000000022", "clinic"),
    ("0000000031", "pharmacy"),
    ("0000000041", "care-manager-office"),
    ("0000000051", "lab-company"),
];
const H1: &str = "0000000011";
const H2: &str = "0000000012";
const C1: &str = "0000000021";

/// (patient, holder).
pub const PATIENTS: [(&str, &str); 7] = [
    ("h1-none", H1),
    ("h1-c1", H1),
    ("h1-withdrawn", H1),
    ("h1-expired", H1),
    ("h1-linked", H1),
    ("h2-linked", H2),
    ("h2-only", H2),
];

/// The consents: (patient, disclosing, viewing, start, end, withdrawn).
/// (patient, disclosing, viewing, start, end, withdrawn).
type ConsentRow = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
    Option<i64>,
);

fn consents() -> Vec<ConsentRow> {
    vec![
        ("h1-c1", H1, C1, NOW - 10 * DAY, NOW + 10 * DAY, None),
        (
            "h1-withdrawn",
            H1,
            C1,
            NOW - 10 * DAY,
            NOW + 10 * DAY,
            Some(NOW - DAY),
        ),
        ("h1-expired", H1, C1, NOW - 10 * DAY, NOW - DAY, None),
        // Recorded against either linked record, they cover the person.
        ("h1-linked", H1, C1, NOW - 10 * DAY, NOW + 10 * DAY, None),
        ("h1-linked", H2, C1, NOW - 10 * DAY, NOW + 10 * DAY, None),
        ("h2-linked", H2, H1, NOW - 10 * DAY, NOW + 10 * DAY, None),
    ]
}

/// The model: may `viewer` see patient `patient`'s record at [`NOW`]?
pub fn permitted(viewer: &str, patient: &str) -> bool {
    let holder = |p: &str| PATIENTS.iter().find(|(id, _)| *id == p).map(|(_, h)| *h);
    if holder(patient) == Some(viewer) {
        return true;
    }
    consents()
        .into_iter()
        .any(|(consented, disclosing, viewing, start, end, withdrawn)| {
            viewing == viewer
                && holder(patient) == Some(disclosing)
                && person(consented).contains(&patient)
                && start <= NOW
                && NOW < end.min(withdrawn.unwrap_or(end))
        })
}

/// The records of one person: both linked records, or the patient alone.
pub fn person(patient: &str) -> Vec<&str> {
    if patient.ends_with("-linked") {
        vec!["h1-linked", "h2-linked"]
    } else {
        vec![patient]
    }
}

fn record(patient: &str) -> Vec<ResourceWrite> {
    let mut resources = vec![
        ResourceWrite::from_json(
            "Patient",
            patient,
            &json!({"resourceType": "Patient", "id": patient, "name": [{"family": "ヤマダ"}], "gender": "female"}),
        )
        .unwrap(),
    ];
    for n in 1..=2 {
        let id = format!("{patient}-o{n}");
        resources.push(
            ResourceWrite::from_json(
                "Observation",
                &id,
                &json!({
                    "resourceType": "Observation", "id": id, "status": "final",
                    "code": {"coding": [{"system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "code": "3A010000002327101"}]},
                    "subject": {"reference": format!("Patient/{patient}")},
                    // The second one points at another patient's (h1-none's) Encounter: a
                    // reference that must not open that patient's data.
                    "encounter": {"reference": if n == 2 { "Encounter/h1-none-e".to_owned() } else { format!("Encounter/{patient}-e") }},
                    "effectiveDateTime": "2023-11-01T09:00:00+09:00"
                }),
            )
            .unwrap(),
        );
    }
    let id = format!("{patient}-e");
    resources.push(
        ResourceWrite::from_json(
            "Encounter",
            &id,
            &json!({"resourceType": "Encounter", "id": id, "status": "finished", "subject": {"reference": format!("Patient/{patient}")}}),
        )
        .unwrap(),
    );
    let id = format!("{patient}-c");
    resources.push(
        ResourceWrite::from_json(
            "Condition",
            &id,
            &json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")}}),
        )
        .unwrap(),
    );
    resources
}

/// A directory resource, outside every compartment.
fn organization() -> ResourceWrite {
    ResourceWrite::from_json(
        "Organization",
        "org-h1",
        &json!({"resourceType": "Organization", "id": "org-h1", "name": "H1"}),
    )
    .unwrap()
}

pub async fn load<S: Store + Governance>(store: &S) {
    for (code, kind) in FACILITIES {
        store
            .put_facility(&Facility {
                code: code.into(),
                name: format!("facility {code}"),
                kind: kind.into(),
                active: true,
            })
            .await
            .unwrap();
    }
    let mut operations: Vec<Operation> = PATIENTS
        .iter()
        .map(|(patient, holder)| Operation::ReplaceSource {
            source_key: format!("record:{patient}"),
            facility: (*holder).into(),
            resources: record(patient),
        })
        .collect();
    operations.push(Operation::ReplaceSource {
        source_key: "directory".into(),
        facility: H1.into(),
        resources: vec![organization()],
    });
    store.apply(Batch { operations }).await.unwrap();
    store
        .link("R-1", "h1-linked", "operator", NOW)
        .await
        .unwrap();
    store
        .link("R-1", "h2-linked", "operator", NOW)
        .await
        .unwrap();
    for (n, (patient, disclosing, viewing, start, end, withdrawn)) in
        consents().into_iter().enumerate()
    {
        store
            .put_consent(&Consent {
                id: format!("k{n}"),
                patient: patient.into(),
                disclosing: disclosing.into(),
                viewing: viewing.into(),
                start,
                end,
                withdrawn_at: None,
                source: "signed-consent".into(),
                created_by: "operator".into(),
                created_at: NOW - 20 * DAY,
            })
            .await
            .unwrap();
        if let Some(at) = withdrawn {
            assert!(store.withdraw_consent(&format!("k{n}"), at).await.unwrap());
        }
    }
}

fn ids_of(resources: &[crate::StoredResource]) -> BTreeSet<String> {
    resources
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect()
}

/// Everything stored in `patient`'s compartment: its record and the Consent resources of the
/// consents recorded against it (each consent's FHIR projection).
pub fn stored(patient: &str) -> Vec<String> {
    let mut tids: Vec<String> = record(patient).into_iter().map(|w| w.tid).collect();
    for (n, row) in consents().into_iter().enumerate() {
        if row.0 == patient {
            tids.push(format!("Consent/k{n}"));
        }
    }
    tids
}

pub fn expected(viewer: &str, types: &[&str]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for (patient, _) in PATIENTS {
        if !permitted(viewer, patient) {
            continue;
        }
        for tid in stored(patient) {
            if types.iter().any(|t| tid.starts_with(&format!("{t}/"))) {
                set.insert(tid);
            }
        }
    }
    set
}

async fn search_ids<S: Store>(
    store: &S,
    access: &Access,
    resource_type: &str,
    pairs: &[(&str, &str)],
) -> (BTreeSet<String>, u64) {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let query = SearchQuery::parse(resource_type, &pairs, NOW / 1_000_000, true).unwrap();
    let keys = store.search(access, &query).await.unwrap();
    let count = store.count(access, &query).await.unwrap();
    (ids_of(&store.fetch(access, &keys).await.unwrap()), count)
}

/// Every facility × every read method: the returned set is the permitted set.
pub async fn every_read_returns_exactly_the_permitted_set<S: Store + Governance>(store: &S) {
    load(store).await;
    for (viewer, _) in FACILITIES {
        let access = Access::facility(viewer, NOW);
        let context = |what: &str| format!("{what} by {viewer}");

        // Region-wide searches and their counts.
        for resource_type in ["Patient", "Observation", "Condition"] {
            let (found, count) = search_ids(store, &access, resource_type, &[]).await;
            let want = expected(viewer, &[resource_type]);
            assert_eq!(found, want, "{}", context(resource_type));
            assert_eq!(count, want.len() as u64, "{}", context("count"));
        }
        let (found, _) = search_ids(store, &access, "Patient", &[("family", "ヤマダ")]).await;
        assert_eq!(
            found,
            expected(viewer, &["Patient"]),
            "{}",
            context("name search")
        );
        // The directory is everyone's: the facilities' Organizations and one more.
        let (found, _) = search_ids(store, &access, "Organization", &[]).await;
        assert_eq!(
            found.len(),
            FACILITIES.len() + 1,
            "{}",
            context("directory")
        );
        // Consents are part of their patient's record.
        let (found, _) = search_ids(store, &access, "Consent", &[]).await;
        assert_eq!(
            found,
            expected(viewer, &["Consent"]),
            "{}",
            context("Consent")
        );

        for (patient, _) in PATIENTS {
            let visible = permitted(viewer, patient);
            // read and vread and instance history: hidden is absent.
            let read = store.read(&access, "Patient", patient).await.unwrap();
            assert_eq!(
                read.is_some(),
                visible,
                "{}",
                context(&format!("read {patient}"))
            );
            let vread = store
                .vread(&access, "Observation", &format!("{patient}-o1"), 1)
                .await
                .unwrap();
            assert_eq!(vread.is_some(), visible, "{}", context("vread"));
            let history = store
                .history(&access, "Observation", &format!("{patient}-o1"))
                .await
                .unwrap();
            assert_eq!(!history.is_empty(), visible, "{}", context("history"));
            if let Some(read) = read {
                assert_eq!(
                    read.patient.as_deref(),
                    Some(patient),
                    "the audit's patient"
                );
            }

            // A patient-scoped search answers with the patient's record and its permitted
            // linked records, or nothing.
            let (found, count) =
                search_ids(store, &access, "Observation", &[("patient", patient)]).await;
            let mut want = BTreeSet::new();
            if visible {
                for member in person(patient) {
                    if permitted(viewer, member) {
                        want.extend(
                            record(member)
                                .into_iter()
                                .filter(|w| w.resource_type == "Observation")
                                .map(|w| w.tid),
                        );
                    }
                }
            }
            assert_eq!(
                found,
                want,
                "{}",
                context(&format!("Observation?patient={patient}"))
            );
            assert_eq!(count, want.len() as u64, "{}", context("count"));

            // $everything's keys.
            let keys = store
                .compartment(&access, patient, &[], None)
                .await
                .unwrap();
            let everything = ids_of(&store.fetch(&access, &keys).await.unwrap());
            let mut want = BTreeSet::new();
            if visible {
                for member in person(patient) {
                    if permitted(viewer, member) {
                        want.extend(stored(member));
                    }
                }
            }
            assert_eq!(
                everything,
                want,
                "{}",
                context(&format!("$everything {patient}"))
            );

            // A chain through the patient, and one through an encounter to h1-none.
            let (found, _) = search_ids(
                store,
                &access,
                "Observation",
                &[("subject:Patient._id", patient)],
            )
            .await;
            assert_eq!(found.is_empty(), !visible, "{}", context("chain"));
            let (found, _) = search_ids(
                store,
                &access,
                "Observation",
                &[
                    ("_id", &format!("{patient}-o2")),
                    ("encounter:Encounter.status", "finished"),
                ],
            )
            .await;
            assert_eq!(
                !found.is_empty(),
                visible && permitted(viewer, "h1-none"),
                "{}",
                context("chain through an encounter to another patient")
            );

            // _include of the subject and _revinclude of the observations.
            let targets = vec![("Patient".to_owned(), patient.to_owned())];
            let included = store.keys_of(&access, &targets).await.unwrap();
            assert_eq!(
                included.len(),
                usize::from(visible),
                "{}",
                context("_include")
            );
            let subject = tsunagi_fhir::search::param("Observation", "subject").unwrap();
            let referencing = store
                .referencing(&access, subject.id, &targets, 100)
                .await
                .unwrap();
            assert_eq!(
                referencing.len(),
                if visible { 2 } else { 0 },
                "{}",
                context("_revinclude")
            );
        }

        // Type and system history.
        let history = store
            .history_all(&access, Some("Observation"), None, None, 1000)
            .await
            .unwrap();
        assert_eq!(
            ids_of(&history),
            expected(viewer, &["Observation"]),
            "{}",
            context("type history")
        );
        let history = store
            .history_all(&access, None, None, None, 1000)
            .await
            .unwrap();
        let mut want = expected(
            viewer,
            &[
                "Patient",
                "Observation",
                "Condition",
                "Encounter",
                "Consent",
            ],
        );
        want.insert("Organization/org-h1".into());
        for (code, _) in FACILITIES {
            want.insert(format!("Organization/{code}"));
        }
        assert_eq!(ids_of(&history), want, "{}", context("system history"));
    }
}

/// Withdrawing a consent hides the data from the next read on; unlinking removes what the link
/// opened.
pub async fn withdrawal_and_unlinking_take_effect_at_once<S: Store + Governance>(store: &S) {
    load(store).await;
    let c1 = Access::facility(C1, NOW);
    assert!(store.read(&c1, "Patient", "h1-c1").await.unwrap().is_some());
    assert!(store.withdraw_consent("k0", NOW - 1).await.unwrap());
    assert!(store.read(&c1, "Patient", "h1-c1").await.unwrap().is_none());
    assert!(
        !store
            .withdraw_consent("no-such-consent", NOW)
            .await
            .unwrap()
    );
    // Before the start of a consent nothing is visible, at its end neither.
    let early = Access::facility(C1, NOW - 11 * DAY);
    assert!(
        store
            .read(&early, "Patient", "h1-linked")
            .await
            .unwrap()
            .is_none()
    );
    let late = Access::facility(C1, NOW + 10 * DAY);
    assert!(
        store
            .read(&late, "Patient", "h1-linked")
            .await
            .unwrap()
            .is_none()
    );

    // H1 sees H2's linked record through the H2 → H1 consent; unlinking H2's record ends it
    // (the consent was recorded against h2-linked itself, so it still covers that record).
    let h1 = Access::facility(H1, NOW);
    let keys = store
        .compartment(&h1, "h1-linked", &[], None)
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        stored("h1-linked").len() + stored("h2-linked").len()
    );
    store.unlink("h2-linked").await.unwrap();
    let keys = store
        .compartment(&h1, "h1-linked", &[], None)
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        stored("h1-linked").len(),
        "only H1's own record once unlinked"
    );
    assert!(
        store
            .read(&h1, "Patient", "h2-linked")
            .await
            .unwrap()
            .is_some()
    );
    // C1's consent was recorded against h1-linked with H2 disclosing: without the link, H2 holds
    // no record of that person any more.
    let c1 = Access::facility(C1, NOW);
    assert!(
        store
            .read(&c1, "Patient", "h2-linked")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .read(&c1, "Patient", "h1-linked")
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.linked("h1-linked").await.unwrap().len() == 1);
}

/// Consents need an existing patient and registered facilities; the audit table only grows.
pub async fn governance_records_are_checked_and_audit_is_append_only<S: Store + Governance>(
    store: &S,
) {
    load(store).await;
    let consent = Consent {
        id: "bad".into(),
        patient: "no-such-patient".into(),
        disclosing: H1.into(),
        viewing: C1.into(),
        start: NOW,
        end: NOW + DAY,
        withdrawn_at: None,
        source: "invitation".into(),
        created_by: "x".into(),
        created_at: NOW,
    };
    assert!(store.put_consent(&consent).await.is_err());
    let unknown_facility = Consent {
        patient: "h1-none".into(),
        viewing: "9999999999".into(),
        ..consent.clone()
    };
    assert!(store.put_consent(&unknown_facility).await.is_err());
    let backwards = Consent {
        patient: "h1-none".into(),
        end: NOW - DAY,
        ..consent
    };
    assert!(store.put_consent(&backwards).await.is_err());
    assert_eq!(
        store.holder("h1-none").await.unwrap(),
        Some(Some(H1.into()))
    );
    assert_eq!(store.holder("nobody").await.unwrap(), None);

    use crate::governance::{AuditFilter, AuditRecord};
    let record = |id: &str, patient: &str, facility: Option<&str>| AuditRecord {
        id: id.into(),
        recorded: NOW,
        patient: Some(patient.into()),
        facility: facility.map(Into::into),
        event: b"{}".to_vec(),
    };
    store
        .append_audit(&[
            record("a1", "h1-none", Some(C1)),
            record("a2", "h1-none", Some(H2)),
            record("a3", "h2-only", Some(C1)),
            record("a4", "h2-only", None),
        ])
        .await
        .unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 4);
    let ids = |listed: Vec<crate::governance::ListedAudit>| {
        listed.into_iter().map(|l| l.record.id).collect::<Vec<_>>()
    };
    let all = AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    };
    let filtered = |change: &dyn Fn(&mut AuditFilter)| {
        let mut filter = all.clone();
        change(&mut filter);
        filter
    };
    // Newest first; by patient, by id, by time.
    assert_eq!(
        ids(store.audit(&all).await.unwrap()),
        ["a4", "a3", "a2", "a1"]
    );
    assert_eq!(
        ids(store
            .audit(&filtered(&|f| f.patient = Some("h1-none".into())))
            .await
            .unwrap()),
        ["a2", "a1"]
    );
    assert_eq!(
        ids(store
            .audit(&filtered(&|f| f.id = Some("a3".into())))
            .await
            .unwrap()),
        ["a3"]
    );
    assert!(
        store
            .audit(&filtered(&|f| f.from = Some(NOW + 1)))
            .await
            .unwrap()
            .is_empty()
    );
    // An administrator of H1 sees what happened to H1's patients; one of C1 what C1's people
    // did; H2 holds h2-only.
    for (facility, want) in [
        (H1, &["a2", "a1"][..]),
        (C1, &["a3", "a1"][..]),
        (H2, &["a4", "a3", "a2"][..]),
    ] {
        let found = store
            .audit(&filtered(&|f| f.facility = Some(facility.into())))
            .await
            .unwrap();
        assert_eq!(ids(found), want, "administrator of {facility}");
    }
    // Paging continues after a page's last position.
    let first = store.audit(&filtered(&|f| f.limit = 3)).await.unwrap();
    let next = store
        .audit(&filtered(&|f| f.before = Some(first[2].position)))
        .await
        .unwrap();
    assert_eq!(ids(next), ["a1"]);

    // Assertion ids are single-use until they expire.
    assert!(
        store
            .remember_assertion("lab", "j1", 1000, 900)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_assertion("lab", "j1", 1000, 950)
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_assertion("other", "j1", 1000, 950)
            .await
            .unwrap()
    );
}

/// Expands to one `#[tokio::test]` per access behaviour; `$make` yields a fresh, empty store.
#[macro_export]
macro_rules! store_access_suite {
    ($make:expr) => {
        $crate::store_access_suite!(@tests $make;
            every_read_returns_exactly_the_permitted_set,
            withdrawal_and_unlinking_take_effect_at_once,
            governance_records_are_checked_and_audit_is_append_only,
        );
        #[tokio::test]
        async fn token_standing_reads_clients_users_facilities_and_revocations() {
            let store = $make.await;
            $crate::conformance_standing::token_standing_reads_clients_users_facilities_and_revocations(&store).await;
        }
        #[tokio::test]
        async fn lab_reports_are_the_directorys_record() {
            let store = $make.await;
            $crate::conformance_standing::lab_reports_are_the_directorys_record(&store).await;
        }
        #[tokio::test]
        async fn a_scheduled_pull_is_claimed_once() {
            let store = $make.await;
            $crate::conformance_standing::a_scheduled_pull_is_claimed_once(&store).await;
        }
        #[tokio::test]
        async fn paging_snapshots_are_stored_cut_and_pruned() {
            let store = $make.await;
            $crate::conformance_standing::paging_snapshots_are_stored_cut_and_pruned(&store).await;
        }
        #[tokio::test]
        async fn one_first_signing_key_wins() {
            let store = $make.await;
            $crate::conformance_standing::one_first_signing_key_wins(&store).await;
        }
        #[tokio::test]
        async fn the_schema_is_this_builds() {
            let store = $make.await;
            $crate::conformance_standing::the_schema_is_this_builds(&store).await;
        }
        #[tokio::test]
        async fn the_served_origin_is_remembered() {
            let store = $make.await;
            $crate::conformance_standing::the_served_origin_is_remembered(&store).await;
        }
        #[tokio::test]
        async fn an_operators_change_commits_with_its_audit_record() {
            let store = $make.await;
            $crate::conformance_standing::an_operators_change_commits_with_its_audit_record(&store).await;
        }
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance_access::$name(&store).await;
            }
        )*
    };
}
