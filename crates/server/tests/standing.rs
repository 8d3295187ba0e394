//! Issue 17 §1 and §7 over real sockets: a portal obtains tokens only for users of the
//! facilities it serves (the whole matrix of portal × user's facility × patient), and a
//! deactivated user, client or facility, or a revoked token or subject, is refused from the
//! next request on, whatever the token's expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use serde_json::json;
use support::{FACILITY, NOW, fresh_store, request, serve};
use tsunagi_server::{
    Settings,
    security::{Subject, issue_token, signing_keys},
};
use tsunagi_store::{
    Governance, Store,
    governance::{AuditFilter, Client, Consent, Facility, Participant, Revocation},
};
use tsunagi_store_sqlite::SqliteStore;

/// The hospital holding `pa` is the support module's FACILITY; a second hospital holds `pb`
/// and the clinic `pk`.
const HOSPITAL_B: &str = "0610200018";
const CLINIC: &str = "0610400014";

struct Region {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/keys")
}

async fn region() -> Region {
    let (store, dir) = fresh_store().await;
    for (patient, holder) in [("pa", FACILITY), ("pb", HOSPITAL_B), ("pk", CLINIC)] {
        // Each record is written under its holder, as an adapter would.
        store
            .apply(tsunagi_store::Batch {
                operations: vec![tsunagi_store::Operation::ReplaceSource {
                    source_key: format!("ssmix2:{holder}:{patient}"),
                    facility: holder.into(),
                    resources: vec![support::write(json!({
                        "resourceType": "Patient", "id": patient, "gender": "female"
                    }))],
                }],
            })
            .await
            .unwrap();
    }
    let addr = serve(store.clone(), Settings::default()).await;
    for (code, kind) in [(HOSPITAL_B, "hospital"), (CLINIC, "clinic")] {
        store
            .put_facility(&Facility {
                code: code.into(),
                name: code.into(),
                kind: kind.into(),
                active: true,
            })
            .await
            .unwrap();
    }
    for (id, facility) in [("dr-a", FACILITY), ("dr-b", HOSPITAL_B), ("dr-k", CLINIC)] {
        store
            .put_participant(&Participant {
                id: id.into(),
                name: id.into(),
                facility: facility.into(),
                role: "doctor".into(),
                active: true,
            })
            .await
            .unwrap();
    }
    let jwks = std::fs::read_to_string(keys().join("portal-es384.jwks.json")).unwrap();
    for (id, facility, serves) in [
        // The clinic's own portal.
        ("portal-k", CLINIC, vec![]),
        // A regional portal run at the clinic that also serves hospital A.
        ("portal-r", CLINIC, vec![FACILITY.to_owned()]),
    ] {
        store
            .put_client(&Client {
                id: id.into(),
                facility: facility.into(),
                kind: "portal".into(),
                jwks: jwks.clone(),
                scope: "user/*.rs".into(),
                active: true,
                serves,
            })
            .await
            .unwrap();
    }
    // Hospital A invited the clinic to pa; nobody invited anyone to pb.
    store
        .put_consent(&Consent {
            id: "invite-pa".into(),
            patient: "pa".into(),
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
    Region {
        addr,
        store,
        _dir: dir,
    }
}

/// Asks the token endpoint for `user` through `portal` (a fresh client assertion each time).
async fn portal_token(region: &Region, portal: &str, user: &str) -> (u16, serde_json::Value) {
    let token_url = Settings::default().tokens.token_url;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some("portal-1".into());
    let jti = tsunagi_auth::token::random_id(12);
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"iss": portal, "sub": portal, "aud": token_url, "exp": NOW / 1_000_000 + 60, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_ec_pem(
            &std::fs::read(keys().join("portal-es384.pem")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let body = format!(
        "grant_type=client_credentials&scope=user%2F*.rs&user={user}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    );
    let reply = request(
        region.addr,
        "POST",
        "/auth/token",
        &[("authorization", "")],
        &body,
    )
    .await;
    (reply.status, reply.json())
}

async fn read(region: &Region, token: &str, patient: &str) -> u16 {
    request(
        region.addr,
        "GET",
        &format!("/fhir/Patient/{patient}"),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
    .status
}

#[tokio::test]
async fn a_portal_acts_only_for_users_of_the_facilities_it_serves() {
    let region = region().await;
    // (portal, user, token granted?, what pa, pb, pk answer with it)
    let matrix: [(&str, &str, bool, [u16; 3]); 6] = [
        ("portal-k", "dr-k", true, [200, 404, 200]),
        ("portal-k", "dr-a", false, [0; 3]),
        ("portal-k", "dr-b", false, [0; 3]),
        ("portal-r", "dr-k", true, [200, 404, 200]),
        ("portal-r", "dr-a", true, [200, 404, 404]),
        ("portal-r", "dr-b", false, [0; 3]),
    ];
    for (portal, user, granted, answers) in matrix {
        let (status, body) = portal_token(&region, portal, user).await;
        if !granted {
            assert_eq!(status, 400, "{portal} for {user}: {body}");
            assert_eq!(body["error"], "invalid_grant", "{portal} for {user}");
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("does not serve facility"),
                "{body}"
            );
            continue;
        }
        assert_eq!(status, 200, "{portal} for {user}: {body}");
        let token = body["access_token"].as_str().unwrap();
        for (patient, expected) in ["pa", "pb", "pk"].iter().zip(answers) {
            assert_eq!(
                read(&region, token, patient).await,
                expected,
                "{portal} for {user} reading {patient}"
            );
        }
    }
    // Each refusal at the token endpoint is in the audit trail, as a login that failed.
    let trail = region
        .store
        .audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let refused_logins = trail
        .iter()
        .map(|listed| tsunagi_store::audit::render(&listed.record))
        .filter(|event| {
            event["outcome"] != "0"
                && event.to_string().contains("/auth/token")
                && event.to_string().contains("portal-")
        })
        .count();
    assert_eq!(refused_logins, 3, "one audited refusal per refused token");

    // A token obtained while the portal served hospital A stops working the moment the
    // registration no longer says so.
    let (_, body) = portal_token(&region, "portal-r", "dr-a").await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(read(&region, &token, "pa").await, 200);
    let mut registration = region.store.client("portal-r").await.unwrap().unwrap();
    registration.serves.clear();
    region.store.put_client(&registration).await.unwrap();
    assert_eq!(read(&region, &token, "pa").await, 401);
}

#[tokio::test]
async fn deactivation_and_revocation_hold_from_the_next_request() {
    let region = region().await;
    let keys = signing_keys(region.store.as_ref(), NOW).await.unwrap();
    let issue = |subject: Subject<'static>, at: i64| {
        let store = region.store.clone();
        let key = keys[0].clone();
        async move {
            issue_token(
                store.as_ref(),
                &key,
                &Settings::default().tokens,
                subject,
                "user/*.rs system/*.rs",
                at,
            )
            .await
            .map(|(token, _)| token)
        }
    };
    let now = NOW / 1_000_000;
    let dr_k = Subject::User {
        user: "dr-k",
        via: "operator",
    };

    // A user deactivated.
    let token = issue(dr_k, now).await.unwrap();
    assert_eq!(read(&region, &token, "pk").await, 200);
    let mut user = region.store.participant("dr-k").await.unwrap().unwrap();
    user.active = false;
    region.store.put_participant(&user).await.unwrap();
    assert_eq!(read(&region, &token, "pk").await, 401);
    assert!(issue(dr_k, now).await.is_err(), "no new token either");
    user.active = true;
    region.store.put_participant(&user).await.unwrap();
    assert_eq!(read(&region, &token, "pk").await, 200, "reactivated");

    // One token revoked by its jti; the user's other tokens still work.
    let claims = |token: &str| -> serde_json::Value {
        use base64_free::decode_segment;
        serde_json::from_slice(&decode_segment(token.split('.').nth(1).unwrap())).unwrap()
    };
    let second = issue(dr_k, now).await.unwrap();
    region
        .store
        .revoke(&Revocation::Token(
            claims(&token)["jti"].as_str().unwrap().into(),
        ))
        .await
        .unwrap();
    assert_eq!(read(&region, &token, "pk").await, 401);
    assert_eq!(read(&region, &second, "pk").await, 200);

    // The subject revoked: every token issued up to then; a later one works.
    let earlier = issue(dr_k, now - 10).await.unwrap();
    region
        .store
        .revoke(&Revocation::Subject {
            id: "dr-k".into(),
            at: now - 5,
        })
        .await
        .unwrap();
    assert_eq!(read(&region, &earlier, "pk").await, 401);
    assert_eq!(read(&region, &second, "pk").await, 200, "issued after");

    // A system client deactivated.
    let jwks = std::fs::read_to_string(keys_dir().join("lab-rs384.jwks.json")).unwrap();
    region
        .store
        .put_client(&Client {
            id: "clinic-system".into(),
            facility: CLINIC.into(),
            kind: "system".into(),
            jwks,
            scope: "system/*.rs".into(),
            active: true,
            serves: Vec::new(),
        })
        .await
        .unwrap();
    let system = issue(Subject::System("clinic-system"), now).await.unwrap();
    assert_eq!(read(&region, &system, "pk").await, 200);
    let mut client = region.store.client("clinic-system").await.unwrap().unwrap();
    client.active = false;
    region.store.put_client(&client).await.unwrap();
    let refused = request(
        region.addr,
        "GET",
        "/fhir/Patient/pk",
        &[("authorization", &format!("Bearer {system}"))],
        "",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("not an active system client")
    );

    // The clinic leaves the network: its people's tokens end with it.
    assert_eq!(read(&region, &second, "pk").await, 200);
    region
        .store
        .put_facility(&Facility {
            code: CLINIC.into(),
            name: CLINIC.into(),
            kind: "clinic".into(),
            active: false,
        })
        .await
        .unwrap();
    assert_eq!(read(&region, &second, "pk").await, 401);
}

fn keys_dir() -> PathBuf {
    keys()
}

/// Reads a JWT segment (base64url without padding) without a base64 crate.
mod base64_free {
    pub(crate) fn decode_segment(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'-' => 62,
                b'_' => 63,
                _ => panic!("not base64url: {c}"),
            }
        };
        let mut out = Vec::new();
        let (mut buffer, mut bits) = (0u32, 0);
        for &c in text.as_bytes() {
            buffer = (buffer << 6) | value(c);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        out
    }
}
