//! Whether a token stands: the one rule, applied when a token is issued and again on every
//! request that carries one (issue 17 §1, §7). A valid signature is not enough: the records
//! behind the token, read fresh from the store on each request, must still allow it.
//!
//! - No revocation names it: its `jti`, or its subject or client revoked after it was issued
//!   (`tsunagi admin token revoke`).
//! - Its facility is an active member of the network.
//! - A system client's token: the client is registered, active, a system client, and of the
//!   token's facility.
//! - A user's token: the user is registered, active, of the token's facility and role; the
//!   portal that obtained it is registered, active, a portal, and serves the user's facility —
//!   its own, or one it is registered to serve (`admin client add --kind portal --serves …`).
//!   A token the operator issued from the command line (`tsunagi token issue`) has no portal.
//!
//! [`Remembered`]: a token found standing is remembered while the store's standing epoch
//! (`Governance::standing_epoch`) stays where it was; any change to those records, in any
//! process, moves the epoch and forgets them all, so the next request reads the records again.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use tsunagi_auth::{Principal, token::SubjectKind};
use tsunagi_store::governance::{OPERATOR_CLIENT, Standing, TokenFacts};

/// Tokens remembered at most; more empties the memory (they are read again).
const REMEMBERED: usize = 100_000;

/// Tokens found standing, by `jti`, with their expiry (seconds), valid for one epoch.
#[derive(Debug, Default)]
pub(crate) struct Remembered {
    inner: Mutex<(Option<u64>, HashMap<String, i64>)>,
}

impl Remembered {
    /// Whether `token_id` was found standing in this `epoch` and has not expired at `now`.
    pub(crate) fn holds(&self, token_id: &str, epoch: u64, now: i64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 == Some(epoch) && inner.1.get(token_id).is_some_and(|expiry| *expiry > now)
    }

    /// Remembers that `token_id` stands in `epoch`, until `expiry`.
    pub(crate) fn remember(&self, token_id: &str, epoch: u64, expiry: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0 != Some(epoch) || inner.1.len() >= REMEMBERED {
            inner.1.clear();
            inner.0 = Some(epoch);
        }
        inner.1.insert(token_id.to_owned(), expiry);
    }
}

/// What a principal's token names, to look its standing up.
pub(crate) fn facts_of(principal: &Principal) -> TokenFacts {
    TokenFacts {
        token_id: principal.token_id.clone(),
        subject: principal.subject.clone(),
        client: principal.client_id.clone(),
        facility: principal.facility.clone(),
        user: principal.kind == SubjectKind::User,
        issued_at: principal.issued_at,
    }
}

/// `Ok` when a token with these facts stands on these records; else why not (said to the
/// client, so it names only what the client sent).
pub(crate) fn judge(token: &TokenFacts, role: &str, standing: &Standing) -> Result<(), String> {
    if standing.revoked {
        return Err("the token was revoked".to_owned());
    }
    if !standing.facility_active {
        return Err(format!(
            "facility {} is not an active member of the network",
            token.facility
        ));
    }
    if token.user {
        let user = standing
            .user
            .as_ref()
            .filter(|user| user.active)
            .ok_or_else(|| format!("user {} is not active", token.subject))?;
        if user.facility != token.facility || user.role != role {
            return Err(format!(
                "user {} no longer has the facility or role the token names",
                token.subject
            ));
        }
        if token.client == OPERATOR_CLIENT {
            return Ok(());
        }
        let portal = standing
            .client
            .as_ref()
            .filter(|client| client.active && client.kind == "portal")
            .ok_or_else(|| format!("{} is not an active portal", token.client))?;
        if !standing.client_facility_active {
            return Err(format!(
                "the facility of portal {} is not an active member of the network",
                portal.id
            ));
        }
        if portal.facility != user.facility && !portal.serves.contains(&user.facility) {
            return Err(format!(
                "portal {} does not serve facility {}",
                portal.id, user.facility
            ));
        }
        return Ok(());
    }
    let client = standing
        .client
        .as_ref()
        .filter(|client| client.active && client.kind == "system")
        .ok_or_else(|| format!("{} is not an active system client", token.client))?;
    if client.facility != token.facility {
        return Err(format!(
            "client {} no longer acts for facility {}",
            client.id, token.facility
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tsunagi_store::governance::{Client, Participant};

    use super::*;

    #[test]
    fn standings_are_remembered_for_one_epoch_until_expiry() {
        let remembered = Remembered::default();
        assert!(!remembered.holds("t1", 0, 100));
        remembered.remember("t1", 0, 200);
        assert!(remembered.holds("t1", 0, 100));
        assert!(!remembered.holds("t1", 0, 200), "expired");
        assert!(!remembered.holds("t1", 1, 100), "another epoch");
        remembered.remember("t2", 1, 200);
        assert!(
            !remembered.holds("t1", 1, 100),
            "a new epoch forgets the old"
        );
        assert!(remembered.holds("t2", 1, 100));
    }

    const CLINIC: &str = "0610400014";
    const HOSPITAL: &str = "0610100010";

    fn user_token(client: &str) -> TokenFacts {
        TokenFacts {
            token_id: "t1".into(),
            subject: "dr-a".into(),
            client: client.into(),
            facility: HOSPITAL.into(),
            user: true,
            issued_at: 100,
        }
    }

    fn portal(facility: &str, serves: &[&str]) -> Client {
        Client {
            id: "portal-k".into(),
            facility: facility.into(),
            kind: "portal".into(),
            jwks: String::new(),
            scope: "user/*.rs".into(),
            active: true,
            serves: serves.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn standing(client: Option<Client>) -> Standing {
        Standing {
            client,
            user: Some(Participant {
                id: "dr-a".into(),
                name: String::new(),
                facility: HOSPITAL.into(),
                role: "doctor".into(),
                active: true,
            }),
            facility_active: true,
            client_facility_active: true,
            revoked: false,
        }
    }

    #[test]
    fn a_portal_acts_only_for_the_facilities_it_serves() {
        let token = user_token("portal-k");
        let refused = judge(&token, "doctor", &standing(Some(portal(CLINIC, &[])))).unwrap_err();
        assert!(
            refused.contains("does not serve facility 0610100010"),
            "{refused}"
        );
        assert!(judge(&token, "doctor", &standing(Some(portal(HOSPITAL, &[])))).is_ok());
        assert!(
            judge(
                &token,
                "doctor",
                &standing(Some(portal(CLINIC, &[HOSPITAL])))
            )
            .is_ok()
        );
        let mut system = portal(HOSPITAL, &[]);
        system.kind = "system".into();
        assert!(judge(&token, "doctor", &standing(Some(system))).is_err());
        assert!(judge(&token, "doctor", &standing(None)).is_err());
        assert!(judge(&user_token(OPERATOR_CLIENT), "doctor", &standing(None)).is_ok());
    }

    #[test]
    fn deactivation_revocation_and_changes_end_a_token() {
        let token = user_token("portal-k");
        let good = standing(Some(portal(HOSPITAL, &[])));
        assert!(judge(&token, "doctor", &good).is_ok());
        assert!(judge(&token, "nurse", &good).is_err(), "role changed");
        let mut revoked = good.clone();
        revoked.revoked = true;
        assert!(judge(&token, "doctor", &revoked).is_err());
        let mut closed = good.clone();
        closed.facility_active = false;
        assert!(judge(&token, "doctor", &closed).is_err());
        let mut left = good.clone();
        left.user.as_mut().unwrap().active = false;
        assert!(judge(&token, "doctor", &left).is_err());
        let mut moved = good.clone();
        moved.user.as_mut().unwrap().facility = CLINIC.into();
        assert!(judge(&token, "doctor", &moved).is_err());
        let mut portal_gone = good.clone();
        portal_gone.client_facility_active = false;
        assert!(
            judge(&token, "doctor", &portal_gone).is_err(),
            "the portal's facility left"
        );
        let mut portal_off = good;
        portal_off.client.as_mut().unwrap().active = false;
        assert!(judge(&token, "doctor", &portal_off).is_err());
    }

    #[test]
    fn a_system_token_needs_its_active_system_client_of_its_facility() {
        let token = TokenFacts {
            user: false,
            subject: "lab-a".into(),
            client: "lab-a".into(),
            ..user_token("lab-a")
        };
        let mut client = portal(HOSPITAL, &[]);
        client.kind = "system".into();
        client.id = "lab-a".into();
        let records = Standing {
            client: Some(client),
            user: None,
            facility_active: true,
            client_facility_active: true,
            revoked: false,
        };
        assert!(judge(&token, "system", &records).is_ok());
        let mut elsewhere = records.clone();
        elsewhere.client.as_mut().unwrap().facility = CLINIC.into();
        assert!(judge(&token, "system", &elsewhere).is_err());
        let mut off = records;
        off.client.as_mut().unwrap().active = false;
        assert!(judge(&token, "system", &off).is_err());
    }
}
