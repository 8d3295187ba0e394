//! Security at the HTTP edge (issue 4): no token no data, hidden answers like absent, role and
//! scope refusals, snapshots bound to their principal, the token endpoint, and one audit record
//! per patient touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::{FACILITY, NOW, fresh_store, replace, request, serve};
use tsunagi_server::{
    Settings,
    security::{Subject, issue_token, signing_keys},
};
use tsunagi_store::{
    Governance, Store,
    governance::{AuditFilter, Client, Consent, Facility, Participant},
};

const CLINIC: &str = "0610999991";

async fn region() -> (
    std::net::SocketAddr,
    std::sync::Arc<tsunagi_store_sqlite::SqliteStore>,
    tempfile::TempDir,
) {
    let (store, dir) = fresh_store().await;
    for patient in ["shared", "private"] {
        replace(
            store.as_ref(),
            patient,
            vec![
                json!({"resourceType": "Patient", "id": patient, "gender": "female"}),
                support::observation(&format!("{patient}-o1"), patient, 1),
                support::observation(&format!("{patient}-o2"), patient, 2),
            ],
        )
        .await;
    }
    let addr = serve(store.clone(), Settings::default()).await;
    store
        .put_facility(&Facility {
            code: CLINIC.into(),
            name: "診療所".into(),
            kind: "clinic".into(),
            active: true,
        })
        .await
        .unwrap();
    for (id, role) in [("dr-clinic", "doctor"), ("cm-clinic", "care-manager")] {
        store
            .put_participant(&Participant {
                id: id.into(),
                name: id.into(),
                facility: CLINIC.into(),
                role: role.into(),
                active: true,
            })
            .await
            .unwrap();
    }
    store
        .put_consent(&Consent {
            id: "invite-1".into(),
            patient: "shared".into(),
            disclosing: FACILITY.into(),
            viewing: CLINIC.into(),
            start: NOW - 1_000_000,
            end: NOW + 86_400_000_000,
            withdrawn_at: None,
            source: "invitation".into(),
            created_by: "test".into(),
            created_at: NOW,
        })
        .await
        .unwrap();
    (addr, store, dir)
}

async fn user_token(store: &tsunagi_store_sqlite::SqliteStore, user: &str, scope: &str) -> String {
    let keys = signing_keys(store, NOW).await.unwrap();
    issue_token(
        store,
        &keys[0],
        &Settings::default().tokens,
        Subject::User {
            user,
            via: "operator",
        },
        scope,
        NOW / 1_000_000,
    )
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn without_a_valid_token_nothing_is_served_and_the_refusal_is_audited() {
    let (addr, store, _dir) = region().await;
    let before = store.audit_count().await.unwrap();
    for auth in [
        "",
        "Bearer",
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer e30.e30.e30",
    ] {
        let reply = request(
            addr,
            "GET",
            "/fhir/Patient/shared",
            &[("authorization", auth)],
            "",
        )
        .await;
        assert_eq!(reply.status, 401, "{auth:?}");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    assert_eq!(
        store.audit_count().await.unwrap(),
        before + 5,
        "every refusal is audited"
    );
    // The CapabilityStatement and SMART discovery stay public.
    let reply = request(addr, "GET", "/fhir/metadata", &[("authorization", "")], "").await;
    assert_eq!(reply.status, 200);
    let smart = request(
        addr,
        "GET",
        "/.well-known/smart-configuration",
        &[("authorization", "")],
        "",
    )
    .await
    .json();
    assert_eq!(
        smart["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    let jwks = request(
        addr,
        "GET",
        "/.well-known/jwks.json",
        &[("authorization", "")],
        "",
    )
    .await
    .json();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none());
}

#[tokio::test]
async fn a_hidden_patient_answers_exactly_like_an_absent_one() {
    let (addr, store, _dir) = region().await;
    let token = user_token(&store, "dr-clinic", "user/*.rs").await;
    let auth = format!("Bearer {token}");
    let get = |target: String| {
        let auth = auth.clone();
        async move { request(addr, "GET", &target, &[("authorization", &auth)], "").await }
    };
    // The invited clinic sees the shared patient.
    assert_eq!(get("/fhir/Patient/shared".into()).await.status, 200);
    let bundle = get("/fhir/Observation?patient=shared".into()).await.json();
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 2);
    // The private patient and a patient that does not exist: same status, same body shape,
    // same counts.
    let hidden = get("/fhir/Patient/private".into()).await;
    let absent = get("/fhir/Patient/nobody".into()).await;
    assert_eq!((hidden.status, absent.status), (404, 404));
    let text = |reply: &support::Reply| {
        reply.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("private", "X")
            .replace("nobody", "X")
    };
    assert_eq!(text(&hidden), text(&absent));
    for (one, other) in [
        (
            "/fhir/Observation?patient=private&_summary=count",
            "/fhir/Observation?patient=nobody&_summary=count",
        ),
        (
            "/fhir/Observation?patient=private&_total=accurate",
            "/fhir/Observation?patient=nobody&_total=accurate",
        ),
        (
            "/fhir/Observation?subject:Patient._id=private",
            "/fhir/Observation?subject:Patient._id=nobody",
        ),
        (
            "/fhir/Patient/private/$everything",
            "/fhir/Patient/nobody/$everything",
        ),
        (
            "/fhir/Patient/private/$everything?_summary=count",
            "/fhir/Patient/nobody/$everything?_summary=count",
        ),
        (
            "/fhir/Observation/private-o1/_history",
            "/fhir/Observation/nobody-o1/_history",
        ),
    ] {
        let (a, b) = (get(one.into()).await, get(other.into()).await);
        assert_eq!(a.status, b.status, "{one}");
        if a.status == 200 {
            assert_eq!(a.json()["total"], b.json()["total"], "{one}");
        }
    }
    // Region-wide searches and system history hold only what the clinic may see.
    let patients = get("/fhir/Patient".into()).await.json();
    assert_eq!(support::entry_ids(&patients), vec!["shared".to_owned()]);
    let history = get("/fhir/_history".into()).await.json();
    assert!(
        history["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["fullUrl"].as_str().unwrap().contains("private"))
    );
    // Withdrawal holds for the next request.
    store.withdraw_consent("invite-1", NOW - 1).await.unwrap();
    assert_eq!(get("/fhir/Patient/shared".into()).await.status, 404);
}

#[tokio::test]
async fn roles_and_scopes_narrow_and_snapshots_belong_to_their_principal() {
    let (addr, store, _dir) = region().await;
    let care_manager = format!(
        "Bearer {}",
        user_token(&store, "cm-clinic", "user/*.rs").await
    );
    let reply = request(
        addr,
        "GET",
        "/fhir/Observation?patient=shared",
        &[("authorization", &care_manager)],
        "",
    )
    .await;
    assert_eq!(reply.status, 403, "a care manager does not read lab values");
    let reply = request(
        addr,
        "GET",
        "/fhir/Patient/shared",
        &[("authorization", &care_manager)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    // $everything leaves out what the role may not read: the care manager gets the Patient and
    // the invitation's Consent, not the Observations.
    let everything = request(
        addr,
        "GET",
        "/fhir/Patient/shared/$everything",
        &[("authorization", &care_manager)],
        "",
    )
    .await
    .json();
    assert_eq!(everything["total"], 2);
    assert_eq!(support::entry_ids(&everything), ["shared", "invite-1"]);
    // A token scoped to Patient only.
    let narrow = format!(
        "Bearer {}",
        user_token(&store, "dr-clinic", "user/Patient.rs").await
    );
    let reply = request(
        addr,
        "GET",
        "/fhir/Observation?patient=shared",
        &[("authorization", &narrow)],
        "",
    )
    .await;
    assert_eq!(reply.status, 403);
    // Paging snapshots: the hospital's next link is useless to the clinic.
    let page = request(addr, "GET", "/fhir/Observation?_count=1", &[], "")
        .await
        .json();
    let next = support::link(&page, "next").unwrap();
    let target = next
        .split_once("/fhir")
        .map(|(_, rest)| format!("/fhir{rest}"))
        .unwrap();
    assert_eq!(request(addr, "GET", &target, &[], "").await.status, 200);
    let doctor = format!(
        "Bearer {}",
        user_token(&store, "dr-clinic", "user/*.rs").await
    );
    assert_eq!(
        request(addr, "GET", &target, &[("authorization", &doctor)], "")
            .await
            .status,
        410
    );
}

#[tokio::test]
async fn every_access_is_audited_once_per_patient_touched() {
    let (addr, store, _dir) = region().await;
    let before = store.audit_count().await.unwrap();
    // The hospital's system client reads both patients' observations in one search.
    let reply = request(addr, "GET", "/fhir/Observation", &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        store.audit_count().await.unwrap(),
        before + 2,
        "one per patient"
    );
    let shared = store
        .audit(&AuditFilter {
            patient: Some("shared".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(shared.len(), 1);
    let event: serde_json::Value = tsunagi_store::audit::render(&shared[0].record);
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["entity"][0]["what"]["reference"], "Patient/shared");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["subtype"][0]["code"], "search-type");
    // A search that touches nobody still leaves one record.
    request(addr, "GET", "/fhir/Observation?patient=nobody", &[], "").await;
    assert_eq!(store.audit_count().await.unwrap(), before + 3);
}

/// Administrators search the trail over FHIR: their own facility's patients and people only,
/// by patient, date and id, newest first and paged; nobody else may, and nothing can change it.
#[tokio::test]
async fn administrators_search_the_audit_trail_over_fhir() {
    let (addr, store, _dir) = region().await;
    for (id, facility) in [("admin-h", FACILITY), ("admin-c", CLINIC)] {
        store
            .put_participant(&Participant {
                id: id.into(),
                name: id.into(),
                facility: facility.into(),
                role: "administrator".into(),
                active: true,
            })
            .await
            .unwrap();
    }
    // The hospital reads both patients; the clinic doctor reads the shared one.
    request(addr, "GET", "/fhir/Observation", &[], "").await;
    let doctor = user_token(&store, "dr-clinic", "user/*.rs").await;
    let bearer = format!("Bearer {doctor}");
    let reply = request(
        addr,
        "GET",
        "/fhir/Patient/shared",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);

    let hospital_admin = format!(
        "Bearer {}",
        user_token(&store, "admin-h", "user/AuditEvent.rs").await
    );
    let as_admin = |target: &str, auth: &str| {
        let (target, auth) = (target.to_owned(), auth.to_owned());
        async move {
            request(
                addr,
                "GET",
                &target,
                &[("authorization", auth.as_str())],
                "",
            )
            .await
        }
    };
    // Who looked at the hospital's patient "shared": the hospital itself and the clinic doctor.
    let reply = as_admin("/fhir/AuditEvent?patient=Patient/shared", &hospital_admin).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let bundle = reply.json();
    let events = bundle["entry"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0]["resource"]["agent"][2]["who"]["identifier"]["value"], "dr-clinic",
        "newest first"
    );
    assert!(
        events
            .iter()
            .all(|e| e["resource"]["entity"][0]["what"]["reference"] == "Patient/shared")
    );
    // Read by id, and the same id through _id.
    let id = events[0]["resource"]["id"].as_str().unwrap().to_owned();
    let reply = as_admin(&format!("/fhir/AuditEvent/{id}"), &hospital_admin).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], id.as_str());
    let reply = as_admin(&format!("/fhir/AuditEvent?_id={id}"), &hospital_admin).await;
    assert_eq!(reply.json()["entry"].as_array().unwrap().len(), 1);
    // Dates: everything was recorded at NOW (2023-11-15 JST), nothing before.
    for (dates, found) in [
        ("date=lt2023-11-01", 0),
        ("date=ge2023-11-01&date=le2023-11-30", 1),
        ("date=2023-11-15", 1),
        ("date=gt2023-11-15", 0),
    ] {
        let reply = as_admin(
            &format!("/fhir/AuditEvent?_id={id}&{dates}"),
            &hospital_admin,
        )
        .await;
        // No match: no `entry` at all (FHIR has no empty arrays).
        assert_eq!(
            reply.json()["entry"].as_array().map_or(0, Vec::len),
            found,
            "{dates}"
        );
    }
    // Paging by cursor: one per page, then the next, and no more.
    let reply = as_admin("/fhir/AuditEvent?patient=shared&_count=1", &hospital_admin).await;
    let page = reply.json();
    let next = support::link(&page, "next").unwrap();
    let path = next[next.find("/fhir/").unwrap()..].to_owned();
    let page2 = as_admin(&path, &hospital_admin).await.json();
    assert_eq!(page2["entry"].as_array().unwrap().len(), 1);
    assert_ne!(
        page2["entry"][0]["resource"]["id"],
        page["entry"][0]["resource"]["id"]
    );
    // The clinic's administrator sees what the clinic's doctor did, not the hospital's own
    // reads, and nothing about the patient the clinic was never invited to.
    let clinic_admin = format!(
        "Bearer {}",
        user_token(&store, "admin-c", "user/AuditEvent.rs").await
    );
    let reply = as_admin("/fhir/AuditEvent?patient=shared", &clinic_admin).await;
    let events = reply.json()["entry"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["resource"]["agent"][2]["who"]["identifier"]["value"],
        "dr-clinic"
    );
    let reply = as_admin("/fhir/AuditEvent?patient=private", &clinic_admin).await;
    assert!(
        reply.json().get("entry").is_none(),
        "none, and no empty array"
    );
    let own = as_admin(&format!("/fhir/AuditEvent/{id}"), &clinic_admin).await;
    assert_eq!(own.status, 200, "the clinic doctor's own read");
    let hospital_read = as_admin("/fhir/AuditEvent?patient=private", &hospital_admin)
        .await
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hidden = as_admin(&format!("/fhir/AuditEvent/{hospital_read}"), &clinic_admin).await;
    let absent = as_admin("/fhir/AuditEvent/no-such-event", &clinic_admin).await;
    assert_eq!((hidden.status, absent.status), (404, 404));
    // Unknown parameters are refused rather than ignored; a doctor may not search the trail;
    // nobody may write it.
    let reply = as_admin("/fhir/AuditEvent?agent=x", &hospital_admin).await;
    assert_eq!(reply.status, 400);
    let reply = as_admin("/fhir/AuditEvent", &bearer).await;
    assert_eq!(reply.status, 403);
    for method in ["PUT", "DELETE"] {
        let reply = request(
            addr,
            method,
            &format!("/fhir/AuditEvent/{id}"),
            &[("authorization", hospital_admin.as_str())],
            "{}",
        )
        .await;
        assert!(
            reply.status == 405 || reply.status == 403,
            "{method}: {}",
            reply.status
        );
    }
    // Reading the trail is itself audited, per patient whose events were returned.
    let before = store.audit_count().await.unwrap();
    as_admin("/fhir/AuditEvent?patient=shared", &hospital_admin).await;
    assert_eq!(store.audit_count().await.unwrap(), before + 1);
}

/// The directory and consents are FHIR resources: everyone authenticated reads the directory;
/// the holding facility invites and withdraws over FHIR, and the next request sees the change.
#[tokio::test]
async fn the_directory_is_readable_and_consents_are_managed_over_fhir() {
    let (addr, store, _dir) = region().await;
    store
        .put_participant(&Participant {
            id: "dr-hosp".into(),
            name: "荘内 太郎".into(),
            facility: FACILITY.into(),
            role: "doctor".into(),
            active: true,
        })
        .await
        .unwrap();
    let bearer = |token: String| format!("Bearer {token}");
    let hospital = bearer(user_token(&store, "dr-hosp", "user/*.rs user/Consent.cu").await);
    let clinic = bearer(user_token(&store, "dr-clinic", "user/*.rs user/Consent.cu").await);
    let care = bearer(user_token(&store, "cm-clinic", "user/*.rs user/Consent.cu").await);
    let call = |method: &'static str, target: String, auth: String, body: String| async move {
        request(
            addr,
            method,
            &target,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/fhir+json"),
            ],
            &body,
        )
        .await
    };
    let get =
        |target: &str, auth: &str| call("GET", target.to_owned(), auth.to_owned(), String::new());

    // The directory.
    let reply = get(&format!("/fhir/Organization/{CLINIC}"), &clinic).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["type"][0]["coding"][0]["code"], "clinic");
    let roles = get(
        &format!("/fhir/PractitionerRole?organization=Organization/{CLINIC}&_include=PractitionerRole:practitioner"),
        &hospital,
    )
    .await
    .json();
    let mut ids: Vec<String> = roles["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "Practitioner/cm-clinic",
            "Practitioner/dr-clinic",
            "PractitionerRole/cm-clinic",
            "PractitionerRole/dr-clinic"
        ]
    );

    // An invitation from the hospital to the clinic, for the patient it holds.
    let invitation = |patient: &str, to: &str| {
        json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "provision": {
                "type": "permit",
                "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                           "reference": {"reference": format!("Organization/{to}")}}]
            }
        })
        .to_string()
    };
    assert_eq!(get("/fhir/Patient/private", &clinic).await.status, 404);
    let created = call(
        "POST",
        "/fhir/Consent".into(),
        hospital.clone(),
        invitation("private", CLINIC),
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let consent = created.json();
    let id = consent["id"].as_str().unwrap().to_owned();
    assert!(
        created
            .header("location")
            .unwrap()
            .ends_with(&format!("/fhir/Consent/{id}/_history/1"))
    );
    assert_eq!(consent["status"], "active");
    assert_eq!(
        consent["organization"][0]["reference"],
        format!("Organization/{FACILITY}")
    );
    // The very next request of the clinic sees the patient, and the consent itself.
    assert_eq!(get("/fhir/Patient/private", &clinic).await.status, 200);
    let listed = get("/fhir/Consent?patient=private&status=active", &clinic)
        .await
        .json();
    assert_eq!(support::entry_ids(&listed), [id.as_str()]);

    // Refusals: the clinic does not hold the record; a care manager's role may not invite;
    // a patient nobody has and one the caller may not see answer alike; bad bodies.
    let reply = call(
        "POST",
        "/fhir/Consent".into(),
        clinic.clone(),
        invitation("shared", FACILITY),
    )
    .await;
    assert_eq!(reply.status, 403);
    let reply = call(
        "POST",
        "/fhir/Consent".into(),
        care.clone(),
        invitation("shared", FACILITY),
    )
    .await;
    assert_eq!(reply.status, 403);
    let other = bearer(user_token(&store, "dr-clinic", "user/*.rs user/Consent.cu").await);
    store
        .put_facility(&Facility {
            code: "0610999992".into(),
            name: "他院".into(),
            kind: "clinic".into(),
            active: true,
        })
        .await
        .unwrap();
    let absent = call(
        "POST",
        "/fhir/Consent".into(),
        other.clone(),
        invitation("nobody", CLINIC),
    )
    .await;
    assert_eq!(absent.status, 404);
    for (body, status) in [
        (invitation("private", "0000000000"), 422),
        (invitation("private", FACILITY), 422),
        (
            invitation("private", CLINIC).replace("\"active\"", "\"draft\""),
            422,
        ),
        (invitation("private", CLINIC).replace("IRCP", "CST"), 422),
        ("{not json".to_owned(), 400),
        (json!({"resourceType": "Patient"}).to_string(), 400),
    ] {
        let reply = call(
            "POST",
            "/fhir/Consent".into(),
            hospital.clone(),
            body.clone(),
        )
        .await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    let reply = request(
        addr,
        "POST",
        "/fhir/Consent",
        &[
            ("authorization", hospital.as_str()),
            ("content-type", "text/plain"),
        ],
        &invitation("private", CLINIC),
    )
    .await;
    assert_eq!(reply.status, 415);

    // Withdrawal: only the disclosing facility, only to inactive; it holds for the next request.
    let with_status = |status: &str| {
        let mut body = consent.clone();
        body["status"] = json!(status);
        body.to_string()
    };
    // A withdrawal conditional on another version than the stored one changes nothing.
    let stale = request(
        addr,
        "PUT",
        &format!("/fhir/Consent/{id}"),
        &[
            ("authorization", hospital.as_str()),
            ("content-type", "application/fhir+json"),
            ("if-match", "W/\"7\""),
        ],
        &with_status("inactive"),
    )
    .await;
    assert_eq!(
        stale.status,
        412,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    assert_eq!(stale.json()["issue"][0]["code"], "conflict");
    let mut reply = None;
    for (who, status, expected) in [
        (&clinic, "inactive", 403),
        (&hospital, "rejected", 422),
        (&hospital, "inactive", 200),
    ] {
        let answer = call(
            "PUT",
            format!("/fhir/Consent/{id}"),
            who.clone(),
            with_status(status),
        )
        .await;
        assert_eq!(
            answer.status,
            expected,
            "{status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        reply = Some(answer);
    }
    let reply = reply.unwrap();
    assert_eq!(reply.json()["status"], "inactive");
    assert_eq!(reply.header("etag"), Some("W/\"2\""));
    assert_eq!(get("/fhir/Patient/private", &clinic).await.status, 404);
    assert_eq!(
        get(&format!("/fhir/Consent/{id}"), &clinic).await.status,
        404
    );

    // The invitation and the withdrawal are audited as create and update of the patient's data.
    let events = store
        .audit(&AuditFilter {
            patient: Some("private".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let subtypes: Vec<String> = events
        .iter()
        .map(|e| {
            let event: serde_json::Value = tsunagi_store::audit::render(&e.record);
            event["subtype"][0]["code"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(subtypes.contains(&"create".to_owned()), "{subtypes:?}");
    assert!(subtypes.contains(&"update".to_owned()), "{subtypes:?}");
}

/// IHE PIXm: a system client learns a person's identifiers at other facilities only through
/// links its own facility is party to; an unknown and a hidden identifier answer alike.
#[tokio::test]
async fn ihe_pix_cross_references_only_links_the_caller_is_party_to() {
    let (store, _dir) = fresh_store().await;
    const OTHER: &str = "0610999993";
    let mrn = |facility: &str| format!("urn:oid:1.2.392.100495.20.3.51.1{facility}");
    let patient = |id: &str, facility: &str, value: &str| json!({"resourceType": "Patient", "id": id, "identifier": [{"system": mrn(facility), "value": value}]});
    let addr = serve(store.clone(), Settings::default()).await;
    store
        .put_facility(&Facility {
            code: OTHER.into(),
            name: "日本海病院".into(),
            kind: "hospital".into(),
            active: true,
        })
        .await
        .unwrap();
    replace(store.as_ref(), "a", vec![patient("a-1", FACILITY, "100")]).await;
    replace(store.as_ref(), "a2", vec![patient("a-2", FACILITY, "200")]).await;
    for (source, id, value) in [("b", "b-1", "900"), ("b2", "b-2", "800")] {
        store
            .apply(tsunagi_store::Batch {
                operations: vec![tsunagi_store::Operation::ReplaceSource {
                    source_key: source.into(),
                    facility: OTHER.into(),
                    resources: vec![support::write(patient(id, OTHER, value))],
                }],
            })
            .await
            .unwrap();
    }
    // a-1 (ours) and b-1 (the other hospital's) are one person; b-2 is linked with nobody of ours.
    store.link("R-1", "a-1", "operator", NOW).await.unwrap();
    store.link("R-1", "b-1", "operator", NOW).await.unwrap();
    store.link("R-2", "b-2", "operator", NOW).await.unwrap();
    let pix = |query: String| async move {
        request(
            addr,
            "GET",
            &format!("/fhir/Patient/$ihe-pix?{query}"),
            &[],
            "",
        )
        .await
    };
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let reply = pix(format!(
        "sourceIdentifier={}",
        encode(&format!("{}|100", mrn(FACILITY)))
    ))
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = reply.json();
    assert_eq!(answer["resourceType"], "Parameters");
    let parameters = answer["parameter"].as_array().unwrap();
    let identifiers: Vec<&serde_json::Value> = parameters
        .iter()
        .filter(|p| p["name"] == "targetIdentifier")
        .map(|p| &p["valueIdentifier"])
        .collect();
    assert_eq!(
        identifiers.len(),
        1,
        "the other hospital's id, not the source itself"
    );
    assert_eq!(identifiers[0]["system"], mrn(OTHER));
    assert_eq!(identifiers[0]["value"], "900");
    let references: Vec<&str> = parameters
        .iter()
        .filter(|p| p["name"] == "targetId")
        .map(|p| p["valueReference"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(references, ["Patient/a-1", "Patient/b-1"]);
    // targetSystem narrows: our own domain has nothing but the source.
    let reply = pix(format!(
        "sourceIdentifier={}&targetSystem={}",
        encode(&format!("{}|100", mrn(FACILITY))),
        encode(&mrn(FACILITY))
    ))
    .await;
    assert!(
        !reply.json()["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "targetIdentifier")
    );
    // Our unlinked patient: no cross-references. The other hospital's patients (linked among
    // themselves or not) are not ours to see: 404, exactly like an identifier nobody has.
    let reply = pix(format!(
        "sourceIdentifier={}",
        encode(&format!("{}|200", mrn(FACILITY)))
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["parameter"].as_array().unwrap().len(), 0);
    let hidden = pix(format!(
        "sourceIdentifier={}",
        encode(&format!("{}|800", mrn(OTHER)))
    ))
    .await;
    let absent = pix(format!(
        "sourceIdentifier={}",
        encode(&format!("{}|777", mrn(OTHER)))
    ))
    .await;
    assert_eq!((hidden.status, absent.status), (404, 404));
    assert_eq!(
        hidden.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("800", "#"),
        absent.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("777", "#")
    );
    // Malformed requests, and users (not system clients), are refused.
    assert_eq!(pix("sourceIdentifier=nobar".into()).await.status, 400);
    assert_eq!(pix(String::new()).await.status, 400);
    assert_eq!(
        pix("sourceIdentifier=a|b&patient=x".into()).await.status,
        400
    );
    store
        .put_participant(&Participant {
            id: "dr".into(),
            name: "dr".into(),
            facility: FACILITY.into(),
            role: "doctor".into(),
            active: true,
        })
        .await
        .unwrap();
    let doctor = format!("Bearer {}", user_token(&store, "dr", "user/*.rs").await);
    let reply = request(
        addr,
        "GET",
        &format!(
            "/fhir/Patient/$ihe-pix?sourceIdentifier={}",
            encode(&format!("{}|100", mrn(FACILITY)))
        ),
        &[("authorization", doctor.as_str())],
        "",
    )
    .await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn the_token_endpoint_takes_client_assertions_once() {
    let (addr, store, _dir) = region().await;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/keys");
    store
        .put_client(&Client {
            id: "lab".into(),
            facility: FACILITY.into(),
            kind: "system".into(),
            jwks: std::fs::read_to_string(keys.join("lab-rs384.jwks.json")).unwrap(),
            scope: "system/Observation.rs system/Patient.rs".into(),
            active: true,
            serves: Vec::new(),
        })
        .await
        .unwrap();
    let token_url = Settings::default().tokens.token_url;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
    header.kid = Some("lab-1".into());
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"iss": "lab", "sub": "lab", "aud": token_url, "exp": NOW / 1_000_000 + 60, "jti": "once"}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(keys.join("lab-rs384.pem")).unwrap()).unwrap(),
    )
    .unwrap();
    let body = format!(
        "grant_type=client_credentials&scope=system%2F*.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    );
    let reply = request(addr, "POST", "/auth/token", &[("authorization", "")], &body).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let granted = reply.json();
    assert_eq!(
        granted["scope"], "system/Observation.rs system/Patient.rs",
        "narrowed to the registration"
    );
    assert_eq!(granted["expires_in"], 300);
    let token = format!("Bearer {}", granted["access_token"].as_str().unwrap());
    let read = request(
        addr,
        "GET",
        "/fhir/Patient/shared",
        &[("authorization", &token)],
        "",
    )
    .await;
    assert_eq!(read.status, 200);
    // The same assertion again is a replay.
    let again = request(addr, "POST", "/auth/token", &[("authorization", "")], &body).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.json()["error"], "invalid_client");
    let wrong = request(
        addr,
        "POST",
        "/auth/token",
        &[("authorization", "")],
        "grant_type=password",
    )
    .await;
    assert_eq!(wrong.status, 400);
}
