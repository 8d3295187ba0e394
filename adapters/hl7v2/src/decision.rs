//! The decisions the intake makes about one message (reject, duplicate, conflict, quarantine,
//! apply), the facts a log row keeps, and what can be read of a message before it is decoded.

use tsunagi_hl7v2::{
    Message,
    ack::{AckError, AckMode, ErrorCondition, Header, Outcome},
};
use tsunagi_store::{MessageState, Operation};

/// The log row's facts about a message.
#[derive(Clone)]
pub(crate) struct Facts {
    pub(crate) sender: String,
    pub(crate) control_id: String,
    pub(crate) facility: String,
    pub(crate) message_type: String,
    pub(crate) patient: String,
}

/// What the rules decide for one message.
pub(crate) enum Decision {
    /// Refused; nothing is stored.
    Reject { header: Header, error: AckError },
    /// The same message again: answered with what it was answered before.
    Duplicate { ack: Vec<u8>, outcome: Outcome },
    /// A control id reused with other content: refused, kept as evidence.
    Conflict {
        header: Header,
        mode: AckMode,
        facts: Facts,
        error: AckError,
    },
    /// Stored for the operator, not applied.
    Quarantine {
        header: Header,
        mode: AckMode,
        facts: Facts,
        error: AckError,
    },
    /// Applied.
    Apply {
        header: Header,
        mode: AckMode,
        facts: Facts,
        operations: Vec<Operation>,
    },
}

pub(crate) fn error(
    condition: ErrorCondition,
    location: Option<(&str, usize)>,
    text: String,
) -> AckError {
    AckError {
        condition,
        location: location.map(|(segment, field)| (segment.to_owned(), field)),
        text,
    }
}

/// Best effort at the header of a message that cannot be decoded or parsed: MSH is ASCII.
pub(crate) fn header_of_unreadable(raw: &[u8]) -> Header {
    let first_line = raw
        .split(|&byte| byte == b'\r' || byte == b'\n')
        .next()
        .unwrap_or_default();
    let text = String::from_utf8_lossy(first_line);
    Message::parse(&text)
        .map(|message| Header::of(&message))
        .unwrap_or_default()
}

/// What the group knows of a duplicate key it logged: content hash, ACK, outcome.
pub(crate) type Logged = (Vec<u8>, Vec<u8>, Outcome);

/// The outcome a logged message was answered with.
pub(crate) fn outcome_of(state: MessageState) -> Outcome {
    match state {
        MessageState::Applied => Outcome::Accepted,
        MessageState::Quarantined | MessageState::Dropped => Outcome::Error,
        MessageState::Conflict => Outcome::Rejected,
    }
}

/// MSH-3|MSH-4 and MSH-10 read from the raw bytes (MSH is ASCII), as the duplicate key is
/// spelled once the message is parsed; `None` when MSH is not plain.
pub(crate) fn raw_key(raw: &[u8]) -> Option<(String, String)> {
    let line = raw.split(|&b| b == b'\r' || b == b'\n').next()?;
    // Printable ASCII only: a control character in a key is refused once the message is parsed.
    if !line.starts_with(b"MSH")
        || line.len() < 8
        || !line
            .iter()
            .all(|b| b.is_ascii() && (!b.is_ascii_control() || *b == b'\t'))
    {
        return None;
    }
    let separator = line[3];
    let fields: Vec<&[u8]> = line.split(|&b| b == separator).collect();
    // fields[0] = "MSH", fields[1] = encoding characters (MSH-2), fields[n - 1] = MSH-n.
    let text = |n: usize| std::str::from_utf8(fields.get(n - 1).copied().unwrap_or_default()).ok();
    let control_id = text(10)?.trim();
    if control_id.is_empty() {
        return None;
    }
    Some((format!("{}|{}", text(3)?, text(4)?), control_id.to_owned()))
}
