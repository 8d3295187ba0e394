//! The records behind a token (`Governance::token_standing`), read the same on every backend:
//! clients with the facilities a portal serves, users, deactivated facilities, revocations of
//! a token and of a subject.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::governance::{
    Client, Facility, Governance, Participant, Revocation, Standing, TokenFacts,
};

const HOSPITAL: &str = "0610100010";
const CLINIC: &str = "0610400014";

fn token(subject: &str, client: &str, facility: &str, user: bool, issued_at: i64) -> TokenFacts {
    TokenFacts {
        token_id: format!("jti-{subject}-{issued_at}"),
        subject: subject.into(),
        client: client.into(),
        facility: facility.into(),
        user,
        issued_at,
    }
}

pub async fn token_standing_reads_clients_users_facilities_and_revocations<S: Governance>(
    store: &S,
) {
    for (code, kind) in [(HOSPITAL, "hospital"), (CLINIC, "clinic")] {
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
    store
        .put_participant(&Participant {
            id: "dr-a".into(),
            name: "医師 A".into(),
            facility: HOSPITAL.into(),
            role: "doctor".into(),
            active: true,
        })
        .await
        .unwrap();
    let portal = Client {
        id: "portal-k".into(),
        facility: CLINIC.into(),
        kind: "portal".into(),
        jwks: "{\"keys\": []}".into(),
        scope: "user/*.rs".into(),
        active: true,
        serves: vec![HOSPITAL.into()],
    };
    store.put_client(&portal).await.unwrap();
    assert_eq!(
        store.client("portal-k").await.unwrap().unwrap().serves,
        vec![HOSPITAL.to_owned()]
    );

    let as_user = token("dr-a", "portal-k", HOSPITAL, true, 1_000);
    let found = store.token_standing(&as_user).await.unwrap();
    let client = found.client.clone().unwrap();
    assert_eq!(
        (
            client.kind.as_str(),
            client.facility.as_str(),
            client.active
        ),
        ("portal", CLINIC, true)
    );
    assert_eq!(client.serves, vec![HOSPITAL.to_owned()]);
    let user = found.user.clone().unwrap();
    assert_eq!(
        (user.facility.as_str(), user.role.as_str(), user.active),
        (HOSPITAL, "doctor", true)
    );
    assert!(found.facility_active && found.client_facility_active && !found.revoked);

    // A system token names no user; unknown names come back as absent.
    let system = store
        .token_standing(&token("portal-k", "portal-k", CLINIC, false, 1_000))
        .await
        .unwrap();
    assert!(system.user.is_none() && system.client.is_some());
    let unknown = store
        .token_standing(&token("nobody", "no-client", "0699999999", true, 1_000))
        .await
        .unwrap();
    assert_eq!(unknown, Standing::default());

    // Revoking one token names only it.
    store
        .revoke(&Revocation::Token(as_user.token_id.clone()))
        .await
        .unwrap();
    assert!(store.token_standing(&as_user).await.unwrap().revoked);
    let other = token("dr-a", "portal-k", HOSPITAL, true, 1_001);
    assert!(!store.token_standing(&other).await.unwrap().revoked);

    // Revoking a subject names what it was issued up to then, as subject or as client; a
    // later revocation moves the instant on, an earlier one does not move it back.
    store
        .revoke(&Revocation::Subject {
            id: "portal-k".into(),
            at: 2_000,
        })
        .await
        .unwrap();
    store
        .revoke(&Revocation::Subject {
            id: "portal-k".into(),
            at: 1_500,
        })
        .await
        .unwrap();
    assert!(store.token_standing(&other).await.unwrap().revoked);
    assert!(
        store
            .token_standing(&token("dr-a", "portal-k", HOSPITAL, true, 2_000))
            .await
            .unwrap()
            .revoked
    );
    assert!(
        !store
            .token_standing(&token("dr-a", "portal-k", HOSPITAL, true, 2_001))
            .await
            .unwrap()
            .revoked
    );

    // Deactivations are seen at once.
    store
        .put_client(&Client {
            active: false,
            ..portal
        })
        .await
        .unwrap();
    store
        .put_facility(&Facility {
            code: HOSPITAL.into(),
            name: HOSPITAL.into(),
            kind: "hospital".into(),
            active: false,
        })
        .await
        .unwrap();
    let later = token("dr-a", "portal-k", HOSPITAL, true, 3_000);
    let now = store.token_standing(&later).await.unwrap();
    assert!(!now.client.unwrap().active);
    assert!(!now.facility_active);
    assert!(
        now.client_facility_active,
        "the portal's own facility, the clinic, is active"
    );
    assert!(
        !store
            .facilities()
            .await
            .unwrap()
            .iter()
            .find(|f| f.code == HOSPITAL)
            .unwrap()
            .active
    );
}

/// Of two nodes claiming one scheduled pull, one gets it; while its pull runs (its hold
/// renewed), no node claims a later tick of that source; once done (or its hold ran out), the
/// next tick is claimable again.
pub async fn a_scheduled_pull_is_claimed_once<S: Governance>(store: &S) {
    let now = 1_700_000_000_000_000;
    let source = "ssmix2:0610100010";
    let hold = now + 60_000_000;
    assert!(store.claim_run(source, 100, "a", now, hold).await.unwrap());
    assert!(!store.claim_run(source, 100, "b", now, hold).await.unwrap());
    assert!(!store.claim_run(source, 100, "a", now, hold).await.unwrap());
    // a's pull of tick 100 runs on: b may not start tick 101 beside it.
    assert!(
        !store
            .claim_run(source, 101, "b", now + 1, hold)
            .await
            .unwrap()
    );
    // Another source is free.
    assert!(
        store
            .claim_run("mml:0610300016", 100, "b", now, hold)
            .await
            .unwrap()
    );
    // a renews its hold past the first one; a later tick stays refused.
    assert!(
        store
            .renew_run(source, 100, hold + 60_000_000)
            .await
            .unwrap()
    );
    assert!(!store.renew_run(source, 99, hold).await.unwrap());
    assert!(
        !store
            .claim_run(source, 102, "b", hold + 1, hold + 2)
            .await
            .unwrap()
    );
    // Not even a itself (a second life of it) while the hold stands.
    assert!(
        !store
            .claim_run(source, 103, "a", hold + 1, hold + 2)
            .await
            .unwrap()
    );
    store.finish_run(source, 100).await.unwrap();
    assert!(
        !store.renew_run(source, 100, hold + 5).await.unwrap(),
        "a finished hold is over"
    );
    // An earlier tick than the last claimed is never pulled (a node whose clock lags).
    assert!(
        !store
            .claim_run(source, 99, "b", hold + 3, hold + 4)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_run(source, 104, "b", hold + 3, hold + 4)
            .await
            .unwrap()
    );
    // b died without finishing: once its hold ran out, a takes the source over.
    assert!(
        !store
            .claim_run(source, 105, "a", hold + 3, hold + 9)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_run(source, 106, "a", hold + 5, hold + 9)
            .await
            .unwrap()
    );
    // The mml source leaves the configuration: its claim is forgotten once its hold is over,
    // never the claim of a source still configured, nor one being pulled.
    let configured = [source.to_owned()];
    assert_eq!(store.forget_runs(&configured, hold - 1).await.unwrap(), 0);
    assert_eq!(store.forget_runs(&configured, hold).await.unwrap(), 1);
    assert_eq!(store.queue_depths().await.unwrap().pulls.len(), 1);
    assert_eq!(store.forget_runs(&[], hold + 5).await.unwrap(), 0);
    assert!(
        !store
            .claim_run(source, 106, "b", hold + 10, hold + 12)
            .await
            .unwrap(),
        "a claimed tick stays claimed"
    );
}

/// A store just opened holds exactly this build's schema (what `/health/ready` asks).
pub async fn the_schema_is_this_builds<S: Governance>(store: &S) {
    assert_eq!(store.schema_status().await.unwrap(), None);
}

/// `tsunagi serve` records its origin; the last one recorded is read back.
pub async fn the_served_origin_is_remembered<S: Governance>(store: &S) {
    assert_eq!(store.served_origin().await.unwrap(), None);
    store
        .record_served_origin("http://127.0.0.1:8080")
        .await
        .unwrap();
    store
        .record_served_origin("https://gw.example.jp:9443")
        .await
        .unwrap();
    assert_eq!(
        store.served_origin().await.unwrap().as_deref(),
        Some("https://gw.example.jp:9443")
    );
}

/// Which facilities a lab reports for: replaced as a whole, only registered facilities.
pub async fn lab_reports_are_the_directorys_record<S: Governance>(store: &S) {
    const LAB: &str = "0610900001";
    for (code, kind) in [
        (HOSPITAL, "hospital"),
        (CLINIC, "clinic"),
        (LAB, "lab-company"),
    ] {
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
    assert!(store.lab_reports_for(LAB).await.unwrap().is_empty());
    store
        .set_lab_reports_for(LAB, &[HOSPITAL.to_owned(), CLINIC.to_owned()])
        .await
        .unwrap();
    assert_eq!(
        store.lab_reports_for(LAB).await.unwrap(),
        [HOSPITAL.min(CLINIC), HOSPITAL.max(CLINIC)]
    );
    store
        .set_lab_reports_for(LAB, &[CLINIC.to_owned()])
        .await
        .unwrap();
    assert_eq!(store.lab_reports_for(LAB).await.unwrap(), [CLINIC]);
    let unknown = store
        .set_lab_reports_for(LAB, &["0619999999".to_owned()])
        .await;
    assert!(unknown.is_err());
    assert_eq!(store.lab_reports_for(LAB).await.unwrap(), [CLINIC]);
    // Only a lab reports for others; a lab that stops being one lists none.
    assert!(
        store
            .set_lab_reports_for(HOSPITAL, &[CLINIC.to_owned()])
            .await
            .is_err()
    );
    store.set_lab_reports_for(LAB, &[]).await.unwrap();
    assert!(store.lab_reports_for(LAB).await.unwrap().is_empty());
    store
        .set_lab_reports_for(LAB, &[HOSPITAL.to_owned()])
        .await
        .unwrap();
    store
        .put_facility(&Facility {
            code: LAB.into(),
            name: LAB.into(),
            kind: "clinic".into(),
            active: true,
        })
        .await
        .unwrap();
    assert!(store.lab_reports_for(LAB).await.unwrap().is_empty());
}

/// An operator's change and the audit record of the act commit together, or neither does.
pub async fn an_operators_change_commits_with_its_audit_record<S: Governance>(store: &S) {
    use crate::{
        governance::{AuditFilter, Change},
        operator::{Act, ActFacts},
    };
    let act = |act: Act, what: &str, nonce: &str| {
        ActFacts::new(act, what, Some("ops".into())).record(None, 1_000, nonce)
    };
    let trail = || async {
        let filter = AuditFilter {
            limit: 10,
            ..Default::default()
        };
        store
            .audit(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|listed| crate::audit::render(&listed.record)["subtype"][0]["code"].clone())
            .collect::<Vec<_>>()
    };
    let hospital = Facility {
        code: HOSPITAL.into(),
        name: "Shonai".into(),
        kind: "hospital".into(),
        active: true,
    };
    let changed = store
        .change(
            Change::Facility(hospital),
            Some(&act(Act::FacilityAdd, HOSPITAL, "n1")),
        )
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(trail().await, ["facility-add"]);
    assert_eq!(store.facilities().await.unwrap().len(), 1);
    // A change the store refuses leaves no act behind.
    let user = Participant {
        id: "u1".into(),
        name: "Dr. A".into(),
        facility: "9999999999".into(),
        role: "physician".into(),
        active: true,
    };
    let refused = store
        .change(
            Change::Participant(user),
            Some(&act(Act::UserAdd, "u1", "n2")),
        )
        .await;
    assert!(refused.is_err());
    // A change that finds nothing to change records no act either.
    let withdrawal = Change::WithdrawConsent {
        id: "no-such-consent".into(),
        at: 2_000,
    };
    let record = act(Act::ConsentWithdraw, "no-such-consent", "n3");
    assert!(!store.change(withdrawal, Some(&record)).await.unwrap());
    assert_eq!(trail().await, ["facility-add"]);
    assert!(store.participant("u1").await.unwrap().is_none());
}

/// Paging snapshots: a page is cut from the stored list across chunk boundaries; an expired or
/// unknown snapshot is gone; pruning drops the expired and then the oldest beyond the bound.
pub async fn paging_snapshots_are_stored_cut_and_pruned<S: Governance>(store: &S) {
    use crate::paging::{NewSnapshot, SNAPSHOT_CHUNK};
    let now = 1_700_000_000_000_000;
    let keys: Vec<i64> = (0..2500).map(|key| key * 7 + 3).collect();
    store
        .put_snapshot(NewSnapshot {
            id: "s1",
            scope: "alice Observation",
            keys: &keys,
            created: now,
        })
        .await
        .unwrap();
    let page = store
        .snapshot_page("s1", now, SNAPSHOT_CHUNK - 2, 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.scope, "alice Observation");
    assert_eq!(page.total, 2500);
    assert_eq!(page.keys, keys[SNAPSHOT_CHUNK - 2..SNAPSHOT_CHUNK + 3]);
    // Every page of 100, once each, in order.
    let mut seen = Vec::new();
    let mut offset = 0;
    while offset < 2500 {
        let page = store
            .snapshot_page("s1", now, offset, 100)
            .await
            .unwrap()
            .unwrap();
        seen.extend(page.keys);
        offset += 100;
    }
    assert_eq!(seen, keys);
    // Past the end: no keys, the total still known.
    let past = store
        .snapshot_page("s1", now, 2500, 100)
        .await
        .unwrap()
        .unwrap();
    assert!(past.keys.is_empty());
    assert_eq!(past.total, 2500);
    // Too old for `not_before`, or unknown: gone.
    assert_eq!(
        store.snapshot_page("s1", now + 1, 0, 10).await.unwrap(),
        None
    );
    assert_eq!(store.snapshot_page("s9", now, 0, 10).await.unwrap(), None);
    // An empty list is a snapshot too.
    store
        .put_snapshot(NewSnapshot {
            id: "s2",
            scope: "bob Patient",
            keys: &[],
            created: now + 10,
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .snapshot_page("s2", now, 0, 10)
            .await
            .unwrap()
            .map(|p| p.total),
        Some(0)
    );
    store
        .put_snapshot(NewSnapshot {
            id: "s3",
            scope: "bob Patient",
            keys: &keys[..600],
            created: now + 20,
        })
        .await
        .unwrap();
    // A duplicate id is refused (ids are unguessable; a collision must not merge lists).
    assert!(
        store
            .put_snapshot(NewSnapshot {
                id: "s3",
                scope: "eve Patient",
                keys: &keys[..3],
                created: now + 30,
            })
            .await
            .is_err()
    );
    // Nothing expired, 3100 keys kept: a bound of 3100 keeps all.
    assert_eq!(store.prune_snapshots(now, 3100).await.unwrap(), 0);
    // A bound of 1000 keeps the newest that fit: s3 (600) and s2 (0); s1 goes.
    assert_eq!(store.prune_snapshots(now, 1000).await.unwrap(), 1);
    assert_eq!(store.snapshot_page("s1", now, 0, 10).await.unwrap(), None);
    assert!(
        store
            .snapshot_page("s3", now, 0, 10)
            .await
            .unwrap()
            .is_some()
    );
    // Expiry: made before `now + 15` → s2 goes.
    assert_eq!(store.prune_snapshots(now + 15, 1000).await.unwrap(), 1);
    assert_eq!(store.snapshot_page("s2", now, 0, 10).await.unwrap(), None);
    assert_eq!(
        store
            .snapshot_page("s3", now, 590, 100)
            .await
            .unwrap()
            .map(|page| page.keys),
        Some(keys[590..600].to_vec())
    );
}

/// Of two nodes storing a first signing key at once, one wins; the other reads the winner's.
pub async fn one_first_signing_key_wins<S: Governance>(store: &S) {
    use crate::governance::StoredKey;
    let key = |kid: &str| StoredKey {
        kid: kid.to_owned(),
        pem: format!("pem of {kid}"),
        created_at: 1,
    };
    let (ka, kb) = (key("ka"), key("kb"));
    let (a, b) = tokio::join!(
        store.put_first_signing_key(&ka),
        store.put_first_signing_key(&kb)
    );
    assert_ne!(a.unwrap(), b.unwrap(), "exactly one first key");
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!store.put_first_signing_key(&key("kc")).await.unwrap());
    assert_eq!(store.signing_keys().await.unwrap(), stored);
}
