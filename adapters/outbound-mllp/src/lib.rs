//! An outbound destination over MLLP: the hospital's EHR listens for HL7 v2, and a message is
//! delivered when the peer's ACK names it (MSA-2 = its MSH-10) with AA or CA. AE/CE, a
//! timeout, a dropped connection or an unreadable answer are retried; AR/CR is a refusal. The
//! connection is kept between messages, and dropped after anything but a valid ACK of the
//! message just sent (a late ACK could otherwise be read as the next message's).

use std::time::Duration;

use tokio::sync::Mutex;
use tsunagi_adapter::outbound::{Attempt, Destination, DestinationInfo};
use tsunagi_hl7v2::{
    Message,
    ack::{AckCode, read_ack},
    charset,
};
use tsunagi_mllp::client::Connection;
use tsunagi_store::OutboundMessage;

/// `[[destination]] kind = "mllp"`: a facility's MLLP listener.
pub struct MllpDestination {
    facility: String,
    address: String,
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for MllpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpDestination")
            .field("facility", &self.facility)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl MllpDestination {
    /// Delivers to facility `facility` at `address` (`host:port`).
    pub fn new(facility: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            facility: facility.into(),
            address: address.into(),
            connection: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Destination for MllpDestination {
    fn describe(&self) -> DestinationInfo {
        DestinationInfo {
            kind: "mllp",
            facility: self.facility.clone(),
            address: self.address.clone(),
        }
    }

    async fn deliver(&self, message: &OutboundMessage, timeout: Duration) -> Attempt {
        let address = &self.address;
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            match tokio::time::timeout(timeout, Connection::connect(address)).await {
                Ok(Ok(connection)) => *slot = Some(connection),
                Ok(Err(error)) => {
                    return Attempt::Retry {
                        ack: Vec::new(),
                        error: format!("cannot connect to {address}: {error}"),
                    };
                }
                Err(_) => {
                    return Attempt::Retry {
                        ack: Vec::new(),
                        error: format!("no connection to {address} within {timeout:?}"),
                    };
                }
            }
        }
        let Some(connection) = slot.as_mut() else {
            return Attempt::Retry {
                ack: Vec::new(),
                error: "no connection".to_owned(),
            };
        };
        let (attempt, clean) = match connection.request(&message.payload, timeout).await {
            Err(error) => (
                Attempt::Retry {
                    ack: Vec::new(),
                    error: format!("{address}: {error}"),
                },
                false,
            ),
            Ok(reply) => judge(&reply, &message.control_id),
        };
        if !clean {
            *slot = None;
        }
        attempt
    }
}

/// What a reply says about `control_id`, and whether it was a valid ACK of it.
fn judge(reply: &[u8], control_id: &str) -> (Attempt, bool) {
    let unreadable = |why: String| {
        (
            Attempt::Retry {
                ack: reply.to_vec(),
                error: why,
            },
            false,
        )
    };
    let Ok((text, _)) = charset::decode(reply) else {
        return unreadable("the answer is not HL7 (undecodable)".to_owned());
    };
    let Ok(parsed) = Message::parse(&text) else {
        return unreadable("the answer is not an HL7 message".to_owned());
    };
    let Ok(ack) = read_ack(&parsed) else {
        return unreadable("the answer has no valid MSA-1".to_owned());
    };
    if ack.control_id != control_id {
        return unreadable(format!(
            "the ACK acknowledges {:?}, not {control_id:?}",
            ack.control_id
        ));
    }
    let text = if ack.text.is_empty() {
        ack.code.as_str().to_owned()
    } else {
        format!("{}: {}", ack.code.as_str(), ack.text)
    };
    let attempt = match ack.code {
        AckCode::AA | AckCode::CA => Attempt::Delivered {
            ack: reply.to_vec(),
            note: String::new(),
        },
        AckCode::AE | AckCode::CE => Attempt::Retry {
            ack: reply.to_vec(),
            error: text,
        },
        AckCode::AR | AckCode::CR => Attempt::Refused {
            ack: reply.to_vec(),
            error: text,
        },
    };
    (attempt, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_counts_only_for_the_message_it_names() {
        let ack = |code: &str, id: &str| {
            format!("MSH|^~\\&|EHR|H|TSUNAGI|T|20261124||ACK^T02^ACK|A1|P|2.5\rMSA|{code}|{id}\r")
        };
        let judged = |code: &str, id: &str| judge(ack(code, id).as_bytes(), "T1");
        assert!(matches!(
            judged("AA", "T1"),
            (Attempt::Delivered { .. }, true)
        ));
        assert!(matches!(
            judged("CA", "T1"),
            (Attempt::Delivered { .. }, true)
        ));
        assert!(matches!(judged("AE", "T1"), (Attempt::Retry { .. }, true)));
        assert!(matches!(
            judged("AR", "T1"),
            (Attempt::Refused { .. }, true)
        ));
        assert!(matches!(judged("AA", "T2"), (Attempt::Retry { .. }, false)));
        assert!(matches!(judged("XX", "T1"), (Attempt::Retry { .. }, false)));
        assert!(matches!(
            judge(b"garbage", "T1"),
            (Attempt::Retry { .. }, false)
        ));
    }
}
