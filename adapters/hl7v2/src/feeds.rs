//! Which registered facility a message speaks for: the feeds configured by the operator, found by
//! the connection's verified client (TLS client certificate, or a system client's token over
//! HTTP), or by the message's MSH-3/MSH-4 — and then only from an address the sender is
//! registered to connect from (issue 17 §6: without TLS, a sender is otherwise identified by
//! what it writes about itself).

use std::{net::IpAddr, sync::Arc};

use tsunagi_core::FacilityId;
use tsunagi_mapping::{CodeTables, pushed::IdentifyRules};
use tsunagi_net::Cidr;

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
    /// Where the sender connects from when no client identity comes with the connection; empty:
    /// loopback only.
    pub addresses: Vec<Cidr>,
    /// Code tables of the facility.
    pub tables: Arc<CodeTables>,
    /// How identifiers are normalised.
    pub rules: IdentifyRules,
    /// For a lab company: the facilities whose patients it reports results for (MSH-6 names
    /// the one a message is for). Empty for a hospital, whose feed carries its own records.
    pub reports_for: Vec<FacilityId>,
}

impl FeedConfig {
    /// Whether a connection without client identity from `address` may speak for this feed.
    pub fn allows(&self, address: IpAddr) -> bool {
        if self.addresses.is_empty() {
            address.to_canonical().is_loopback()
        } else {
            self.addresses.iter().any(|range| range.contains(address))
        }
    }
}

/// How the connection a message came on identifies its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A verified client: a TLS client certificate's common name, or the system client whose
    /// token posted the message over HTTP. It names the sender, whatever MSH-3/MSH-4 claim.
    Client(String),
    /// No client identity, from this address: MSH-3/MSH-4 name the sender, which must be
    /// registered to connect from the address.
    Address(IpAddr),
    /// A message accepted from its sender once already: the operator's retry of a quarantined
    /// message.
    Logged,
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
    /// A sender named by MSH-3/MSH-4 over a connection from an address it is not registered to
    /// connect from.
    #[error(
        "sender {sender} does not connect from {address}; use its registered address, or TLS with its client certificate"
    )]
    WrongAddress {
        /// What MSH-3/MSH-4 claim.
        sender: String,
        /// Where the connection came from.
        address: IpAddr,
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

    /// Adds to feed `facility`'s lab reporting the facilities the directory lists for it.
    pub fn add_reports_for(&mut self, facility: &str, codes: &[FacilityId]) {
        for feed in self
            .feeds
            .iter_mut()
            .filter(|feed| feed.facility.as_str() == facility)
        {
            for code in codes {
                if !feed.reports_for.contains(code) {
                    feed.reports_for.push(code.clone());
                }
            }
        }
    }

    /// Whether a connection without client identity from `address` could speak for any feed
    /// (an MLLP listener closes the others at once).
    pub fn admits(&self, address: IpAddr) -> bool {
        self.feeds.iter().any(|feed| feed.allows(address))
    }

    /// The feed a message from `application`/`facility` (MSH-3/MSH-4 as received) speaks for,
    /// coming from `origin`.
    pub fn find(
        &self,
        application: &str,
        facility: &str,
        origin: &Peer,
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
        match origin {
            Peer::Client(client) => {
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
            Peer::Address(address) => {
                let feed = self
                    .feeds
                    .iter()
                    .find(matches)
                    .ok_or_else(|| SenderError::Unknown(sender.clone()))?;
                if feed.allows(*address) {
                    Ok(feed)
                } else {
                    Err(SenderError::WrongAddress {
                        sender,
                        address: *address,
                    })
                }
            }
            Peer::Logged => self
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
            addresses: Vec::new(),
            tables: Arc::default(),
            rules: IdentifyRules::default(),
            reports_for: Vec::new(),
        }
    }

    #[test]
    fn senders_are_found_by_msh4_msh3_or_certificate() {
        let here = Peer::Address("127.0.0.1".parse().unwrap());
        let feeds = Feeds::new(vec![
            feed("0610100010", "SHONAI", None, &["shonai-ehr"]),
            feed("0610200018", "NIHONKAI", Some("HIS"), &[]),
        ]);
        let found = feeds.find("ANY", "SHONAI^1.2.3^ISO", &here).unwrap();
        assert_eq!(found.facility.as_str(), "0610100010");
        assert!(feeds.find("HIS", "NIHONKAI", &here).is_ok());
        assert_eq!(
            feeds.find("LAB", "NIHONKAI", &here).unwrap_err(),
            SenderError::Unknown("LAB|NIHONKAI".to_owned())
        );
        let client = |id: &str| Peer::Client(id.to_owned());
        assert!(feeds.find("X", "SHONAI", &client("shonai-ehr")).is_ok());
        assert!(matches!(
            feeds.find("HIS", "NIHONKAI", &client("shonai-ehr")),
            Err(SenderError::NotYours { .. })
        ));
        assert!(matches!(
            feeds.find("X", "SHONAI", &client("stranger")),
            Err(SenderError::Unknown(_))
        ));
    }

    #[test]
    fn without_a_certificate_a_sender_is_held_to_its_addresses() {
        let mut shonai = feed("0610100010", "SHONAI", None, &[]);
        shonai.addresses = vec!["10.1.2.0/24".parse().unwrap()];
        let nihonkai = feed("0610200018", "NIHONKAI", None, &[]);
        let feeds = Feeds::new(vec![shonai, nihonkai]);
        let from = |ip: &str| Peer::Address(ip.parse().unwrap());
        assert!(feeds.find("HIS", "SHONAI", &from("10.1.2.9")).is_ok());
        assert!(matches!(
            feeds.find("HIS", "SHONAI", &from("10.9.9.9")),
            Err(SenderError::WrongAddress { .. })
        ));
        // A sender listing no addresses is taken from loopback only.
        assert!(feeds.find("HIS", "NIHONKAI", &from("127.0.0.1")).is_ok());
        assert!(matches!(
            feeds.find("HIS", "NIHONKAI", &from("10.1.2.9")),
            Err(SenderError::WrongAddress { .. })
        ));
        // Where MSH-4 names another hospital, its address decides, not the message.
        assert!(feeds.find("HIS", "SHONAI", &from("127.0.0.1")).is_err());
        assert!(feeds.find("HIS", "SHONAI", &Peer::Logged).is_ok());
        assert!(feeds.admits("10.1.2.200".parse().unwrap()));
        assert!(feeds.admits("127.0.0.1".parse().unwrap()));
        assert!(!feeds.admits("192.0.2.1".parse().unwrap()));
    }
}
