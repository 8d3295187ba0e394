//! The policy matrix of issue 4 over HTTP: the region of the store's access suite
//! (`tsunagi_store::conformance_access`: H1, H2, C1, C2, a pharmacy, a care-manager office and a
//! lab; patients with no consent, H1→C1, withdrawn, expired, and two linked hospital records),
//! one system client per facility, and every read interaction of the API — search with paging,
//! `_total`, `_summary=count`, `_include`, `_revinclude`, chains, read, vread, history at every
//! level, `$everything` (also counted), `$lastn`. The returned set must be the permitted set,
//! a hidden patient must answer exactly like an absent one, and every request must leave audit
//! records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{NOW, Reply, fresh_store, request, serve, system_client};
use tsunagi_server::{Settings, security::signing_keys};
use tsunagi_store::{
    Governance,
    conformance_access::{FACILITIES, PATIENTS, expected, load, permitted, person, stored},
};

/// One viewer's client: the server's address and a token of a system client of `facility`.
struct Viewer {
    addr: std::net::SocketAddr,
    facility: &'static str,
    token: String,
}

impl Viewer {
    async fn get(&self, target: &str) -> Reply {
        let bearer = format!("Bearer {}", self.token);
        request(self.addr, "GET", target, &[("authorization", &bearer)], "").await
    }

    /// The `match` and `include` entries of a search, following `next` links to the end, and
    /// the total of the first page.
    async fn search(&self, target: &str) -> (BTreeSet<String>, BTreeSet<String>, Option<u64>) {
        let mut matched = BTreeSet::new();
        let mut included = BTreeSet::new();
        let mut next = Some(target.to_owned());
        let mut total = None;
        let mut first = true;
        while let Some(target) = next.take() {
            let reply = self.get(&target).await;
            assert_eq!(reply.status, 200, "{} {target}", self.facility);
            let bundle = reply.json();
            if first {
                total = bundle["total"].as_u64();
                first = false;
            }
            for entry in bundle["entry"].as_array().into_iter().flatten() {
                let tid = format!(
                    "{}/{}",
                    entry["resource"]["resourceType"].as_str().unwrap(),
                    entry["resource"]["id"].as_str().unwrap()
                );
                if entry["search"]["mode"] == "include" {
                    included.insert(tid);
                } else {
                    matched.insert(tid);
                }
            }
            next = support::link(&bundle, "next").map(|url| {
                let path = url.split_once("/fhir/").unwrap().1;
                format!("/fhir/{path}")
            });
        }
        (matched, included, total)
    }
}

fn tids(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let resource = &entry["resource"];
            match resource["resourceType"].as_str() {
                Some(kind) => format!("{kind}/{}", resource["id"].as_str().unwrap()),
                // A deletion in a history Bundle.
                None => entry["request"]["url"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// The Observations of `patient`'s person that `viewer` may see, when the patient itself is
/// visible (patient-scoped searches expand to linked records only then).
fn observations(viewer: &str, patient: &str) -> BTreeSet<String> {
    if !permitted(viewer, patient) {
        return BTreeSet::new();
    }
    person(patient)
        .into_iter()
        .filter(|member| permitted(viewer, member))
        .flat_map(|member| {
            [
                format!("Observation/{member}-o1"),
                format!("Observation/{member}-o2"),
            ]
        })
        .collect()
}

#[tokio::test]
async fn every_interaction_returns_exactly_the_permitted_set_over_http() {
    let (store, _dir) = fresh_store().await;
    load(store.as_ref()).await;
    let addr = serve(store.clone(), Settings::default()).await;
    let keys = signing_keys(store.as_ref(), NOW).await.unwrap();
    let mut viewers = Vec::new();
    for (facility, _) in FACILITIES {
        let id = format!("system-{facility}");
        let token = system_client(
            &store,
            &Settings::default(),
            &keys,
            &id,
            facility,
            r#"{"keys":[]}"#,
        )
        .await;
        viewers.push(Viewer {
            addr,
            facility,
            token,
        });
    }
    let mut requests = 0u64;
    let audited_before = store.audit_count().await.unwrap();
    for viewer in &viewers {
        let who = viewer.facility;
        let context = |what: &str| format!("{what} by {who}");

        // Region-wide searches, paged two at a time, with their totals and counts.
        for kind in [
            "Patient",
            "Observation",
            "Condition",
            "Encounter",
            "Consent",
        ] {
            let want = expected(who, &[kind]);
            let (found, _, total) = viewer
                .search(&format!("/fhir/{kind}?_count=2&_total=accurate"))
                .await;
            requests += want.len().div_ceil(2).max(1) as u64;
            assert_eq!(found, want, "{}", context(kind));
            assert_eq!(total, Some(want.len() as u64), "{}", context("_total"));
            let counted = viewer.get(&format!("/fhir/{kind}?_summary=count")).await;
            requests += 1;
            assert_eq!(
                counted.json()["total"],
                want.len(),
                "{}",
                context("_summary=count")
            );
        }
        // The directory is everyone's: the facilities, org-h1, and the test server's own
        // facility (registered by support::serve).
        let (found, _, _) = viewer.search("/fhir/Organization?_count=100").await;
        requests += 1;
        assert_eq!(
            found.len(),
            FACILITIES.len() + 2,
            "{}",
            context("directory")
        );

        for (patient, _) in PATIENTS {
            let visible = permitted(who, patient);
            let context = |what: &str| format!("{what} {patient} by {who}");
            // read, vread and instance history: a hidden resource is an absent one.
            for (target, absent) in [
                (
                    format!("/fhir/Patient/{patient}"),
                    "/fhir/Patient/nobody".to_owned(),
                ),
                (
                    format!("/fhir/Observation/{patient}-o1/_history/1"),
                    "/fhir/Observation/nobody/_history/1".to_owned(),
                ),
                (
                    format!("/fhir/Observation/{patient}-o1/_history"),
                    "/fhir/Observation/nobody/_history".to_owned(),
                ),
                (
                    format!("/fhir/Patient/{patient}/$everything?_summary=count"),
                    "/fhir/Patient/nobody/$everything?_summary=count".to_owned(),
                ),
            ] {
                let (reply, missing) = (viewer.get(&target).await, viewer.get(&absent).await);
                requests += 2;
                assert_eq!(reply.status == 200, visible, "{}", context(&target));
                if !visible {
                    assert_eq!(reply.status, missing.status, "{}", context(&target));
                    let (a, b) = (reply.json(), missing.json());
                    assert_eq!(a["resourceType"], b["resourceType"]);
                    assert_eq!(a["issue"][0]["code"], b["issue"][0]["code"]);
                }
            }

            // Patient-scoped search: the patient's visible person, or nothing, with the same total.
            let want = observations(who, patient);
            let (found, _, total) = viewer
                .search(&format!(
                    "/fhir/Observation?patient={patient}&_total=accurate"
                ))
                .await;
            requests += 1;
            assert_eq!(found, want, "{}", context("Observation?patient="));
            assert_eq!(total, Some(want.len() as u64), "{}", context("total"));

            // $everything, whole and counted.
            let reply = viewer
                .get(&format!("/fhir/Patient/{patient}/$everything?_count=100"))
                .await;
            requests += 1;
            if visible {
                let mut want = BTreeSet::new();
                for member in person(patient) {
                    if permitted(who, member) {
                        want.extend(stored(member));
                    }
                }
                let bundle = reply.json();
                assert_eq!(tids(&bundle), want, "{}", context("$everything"));
                assert_eq!(
                    bundle["total"],
                    want.len(),
                    "{}",
                    context("$everything total")
                );
                let counted = viewer
                    .get(&format!(
                        "/fhir/Patient/{patient}/$everything?_summary=count"
                    ))
                    .await;
                requests += 1;
                assert_eq!(counted.json()["total"], want.len());
            } else {
                assert_eq!(reply.status, 404, "{}", context("$everything"));
            }

            // Chains through the patient and through an encounter to h1-none.
            let (found, _, _) = viewer
                .search(&format!("/fhir/Observation?subject:Patient._id={patient}"))
                .await;
            requests += 1;
            assert_eq!(found.is_empty(), !visible, "{}", context("chain"));
            let (found, _, _) = viewer
                .search(&format!(
                    "/fhir/Observation?_id={patient}-o2&encounter:Encounter.status=finished"
                ))
                .await;
            requests += 1;
            assert_eq!(
                !found.is_empty(),
                visible && permitted(who, "h1-none"),
                "{}",
                context("chain to another patient's encounter")
            );

            // _include follows a reference to h1-none's Encounter only if that is visible too.
            let (found, included, _) = viewer
                .search(&format!(
                    "/fhir/Observation?_id={patient}-o2&_include=Observation:encounter"
                ))
                .await;
            requests += 1;
            assert_eq!(!found.is_empty(), visible, "{}", context("_include match"));
            let want: BTreeSet<String> = if visible && permitted(who, "h1-none") {
                ["Encounter/h1-none-e".to_owned()].into()
            } else {
                BTreeSet::new()
            };
            assert_eq!(included, want, "{}", context("_include"));

            // _revinclude brings the patient's own Observations, only when visible.
            let (found, included, _) = viewer
                .search(&format!(
                    "/fhir/Patient?_id={patient}&_revinclude=Observation:subject"
                ))
                .await;
            requests += 1;
            assert_eq!(
                !found.is_empty(),
                visible,
                "{}",
                context("_revinclude match")
            );
            let want: BTreeSet<String> = if visible {
                [
                    format!("Observation/{patient}-o1"),
                    format!("Observation/{patient}-o2"),
                ]
                .into()
            } else {
                BTreeSet::new()
            };
            assert_eq!(included, want, "{}", context("_revinclude"));

            // $lastn answers from visible Observations only.
            let reply = viewer
                .get(&format!("/fhir/Observation/$lastn?patient={patient}"))
                .await;
            requests += 1;
            let lastn = tids(&reply.json());
            assert!(
                lastn.is_subset(&observations(who, patient)) && lastn.is_empty() != visible,
                "{}: {lastn:?}",
                context("$lastn")
            );
        }

        // Type and system history.
        let history = viewer.get("/fhir/Observation/_history?_count=1000").await;
        requests += 1;
        assert_eq!(
            tids(&history.json()),
            expected(who, &["Observation"]),
            "{}",
            context("type history")
        );
        let history = viewer.get("/fhir/_history?_count=1000").await.json();
        requests += 1;
        let mut want = expected(
            who,
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
        // The test server's own facility, registered by support::serve.
        want.insert(format!("Organization/{}", support::FACILITY));
        assert_eq!(tids(&history), want, "{}", context("system history"));
    }
    // Every request left at least one audit record (one per patient touched).
    let audited = store.audit_count().await.unwrap() - audited_before;
    assert!(
        audited >= requests,
        "{audited} audit records for at least {requests} requests"
    );
}
