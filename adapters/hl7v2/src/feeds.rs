//! Which registered facility a message speaks for: the feeds configured by the operator, found by
//! the connection's client certificate or by the message's MSH-3/MSH-4.

use std::sync::Arc;

use tsunagi_core::FacilityId;
use tsunagi_mapping::{CodeTables, pushed::IdentifyRules};

/// One configured sender.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The registered facility whose records the feed carries.
    pub facility: FacilityId,
    /// Display name.
    pub name: Option<String>,
    /// MSH-4 (sending facility) the sender writes; compared with HD's first component.
    pub sending_facility: String,
    /// MSH-3 (sending application), when the feed is one application of several.
    pub sending_application: Option<String>,
    /// Client ids whose certificates speak for this feed on a mutual-TLS listener.
    pub clients: Vec<String>,
    /// Code tables of the facility.
    pub tables: Arc<CodeTables>,
    /// How identifiers are normalised.
    pub rules: IdentifyRules,
    /// For a lab company: the facilities whose patients it reports results for (MSH-6 names
    /// the one a message is for). Empty for a hospital, whose feed carries its own records.
    pub reports_for: Vec<FacilityId>,
}

/// The configured senders.
#[derive(Debug, Clone, Default)]
pub struct Feeds {
    feeds: Vec<FeedConfig>,
}

/// Why a sender is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// No feed is configured for this MSH-3/MSH-4 (or client).
    #[error("sender {0} is not registered with this gateway")]
    Unknown(String),
    /// The connection's certificate names a feed, but the message claims another sender.
    #[error("the client certificate of {client} does not speak for sender {sender}")]
    NotYours {
        /// The certificate's client id.
        client: String,
        /// What MSH-3/MSH-4 claim.
        sender: String,
    },
}

fn first_component(hd: &str) -> &str {
    hd.split('^').next().unwrap_or_default().trim()
}

impl Feeds {
    /// The feeds.
    pub fn new(feeds: Vec<FeedConfig>) -> Self {
        Self { feeds }
    }

    /// The configured feeds.
    pub fn all(&self) -> &[FeedConfig] {
        &self.feeds
    }

    /// The feed a message from `application`/`facility` (MSH-3/MSH-4 as received) speaks for,
    /// on a connection authenticated as `client` (if any).
    pub fn find(
        &self,
        application: &str,
        facility: &str,
        client: Option<&str>,
    ) -> Result<&FeedConfig, SenderError> {
        let application = first_component(application);
        let facility = first_component(facility);
        let matches = |feed: &&FeedConfig| {
            feed.sending_facility == facility
                && feed
                    .sending_application
                    .as_deref()
                    .is_none_or(|expected| expected == application)
        };
        let sender = format!("{application}|{facility}");
        match client {
            Some(client) => {
                let mine: Vec<&FeedConfig> = self
                    .feeds
                    .iter()
                    .filter(|feed| feed.clients.iter().any(|id| id == client))
                    .collect();
                if mine.is_empty() {
                    return Err(SenderError::Unknown(format!("client {client}")));
                }
                mine.into_iter()
                    .find(matches)
                    .ok_or_else(|| SenderError::NotYours {
                        client: client.to_owned(),
                        sender,
                    })
            }
            None => self
                .feeds
                .iter()
                .find(matches)
                .ok_or(SenderError::Unknown(sender)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn feed(code: &str, msh4: &str, msh3: Option<&str>, clients: &[&str]) -> FeedConfig {
        FeedConfig {
            facility: FacilityId::parse(code).unwrap(),
            name: None,
            sending_facility: msh4.to_owned(),
            sending_application: msh3.map(str::to_owned),
            clients: clients.iter().map(|c| (*c).to_owned()).collect(),
            tables: Arc::default(),
            rules: IdentifyRules::default(),
            reports_for: Vec::new(),
        }
    }

    #[test]
    fn senders_are_found_by_msh4_msh3_or_certificate() {
        let feeds = Feeds::new(vec![
            feed("0610100010", "SHONAI", None, &["shonai-ehr"]),
            feed("0610200018", "NIHONKAI", Some("HIS"), &[]),
        ]);
        let found = feeds.find("ANY", "SHONAI^1.2.3^ISO", None).unwrap();
        assert_eq!(found.facility.as_str(), "0610100010");
        assert!(feeds.find("HIS", "NIHONKAI", None).is_ok());
        assert_eq!(
            feeds.find("LAB", "NIHONKAI", None).unwrap_err(),
            SenderError::Unknown("LAB|NIHONKAI".to_owned())
        );
        assert!(feeds.find("X", "SHONAI", Some("shonai-ehr")).is_ok());
        assert!(matches!(
            feeds.find("HIS", "NIHONKAI", Some("shonai-ehr")),
            Err(SenderError::NotYours { .. })
        ));
        assert!(matches!(
            feeds.find("X", "SHONAI", Some("stranger")),
            Err(SenderError::Unknown(_))
        ));
    }
}
