//! HL7 v2 acknowledgements: building the ACK a receiver owes (original mode AA/AE/AR, enhanced
//! mode CA/CE/CR) and reading MSA-1 of an ACK a peer returned.
//!
//! ACKs are written in ASCII only: diagnostic text is escaped (`| ^ ~ \ &`), line breaks become
//! spaces and any other character becomes `?`, so an ACK is valid whatever character set the
//! acknowledged message declared.

use std::fmt::Write as _;

use crate::{Message, ParseError};

/// What the receiver did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (and, in original mode, processed).
    Accepted,
    /// Stored, but processing failed (kept for the operator): AE / CE.
    Error,
    /// Refused, nothing will be done with it: AR / CR.
    Rejected,
}

/// The acknowledgement code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The code as written in MSA-1.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
            Self::CA => "CA",
            Self::CE => "CE",
            Self::CR => "CR",
        }
    }

    /// Reads MSA-1.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "AA" => Self::AA,
            "AE" => Self::AE,
            "AR" => Self::AR,
            "CA" => Self::CA,
            "CE" => Self::CE,
            "CR" => Self::CR,
            _ => return None,
        })
    }

    /// What the code says happened.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::AA | Self::CA => Outcome::Accepted,
            Self::AE | Self::CE => Outcome::Error,
            Self::AR | Self::CR => Outcome::Rejected,
        }
    }
}

/// HL7 table 0357 (message error condition codes) as far as a receiver of this kind uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCondition {
    /// 100: segment sequence error.
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error.
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEvent,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersion,
    /// 204: unknown key identifier (e.g. an unknown patient).
    UnknownKey,
    /// 205: duplicate key identifier (a control id reused with other content).
    DuplicateKey,
    /// 207: application internal error.
    Internal,
}

impl ErrorCondition {
    /// The code and its table text.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::SegmentSequence => ("100", "Segment sequence error"),
            Self::RequiredFieldMissing => ("101", "Required field missing"),
            Self::DataType => ("102", "Data type error"),
            Self::TableValueNotFound => ("103", "Table value not found"),
            Self::UnsupportedMessageType => ("200", "Unsupported message type"),
            Self::UnsupportedEvent => ("201", "Unsupported event code"),
            Self::UnsupportedProcessingId => ("202", "Unsupported processing id"),
            Self::UnsupportedVersion => ("203", "Unsupported version id"),
            Self::UnknownKey => ("204", "Unknown key identifier"),
            Self::DuplicateKey => ("205", "Duplicate key identifier"),
            Self::Internal => ("207", "Application internal error"),
        }
    }
}

/// An error reported in ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// The table 0357 condition.
    pub condition: ErrorCondition,
    /// Where: segment id and field number, when known.
    pub location: Option<(String, usize)>,
    /// Diagnostic text for the sender's operator.
    pub text: String,
}

/// Which acknowledgement rules the sender asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// No MSH-15/16: one application ACK (AA/AE/AR).
    Original,
    /// MSH-15 and/or MSH-16 present: an accept ACK (CA/CE/CR) once the message is safely
    /// stored, under the MSH-15 condition.
    Enhanced {
        /// MSH-15: `AL` (always, also when empty), `NE` (never), `ER` (on error only), `SU`
        /// (on success only).
        accept: AckCondition,
    },
}

/// HL7 table 0155.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    /// AL.
    Always,
    /// NE.
    Never,
    /// ER.
    OnError,
    /// SU.
    OnSuccess,
}

impl AckMode {
    /// The mode a message asks for.
    pub fn of(message: &Message<'_>) -> Self {
        let msh = message.msh();
        let accept = msh.field(15).text();
        let application = msh.field(16).text();
        if accept.trim().is_empty() && application.trim().is_empty() {
            return Self::Original;
        }
        let accept = match accept.trim() {
            "NE" => AckCondition::Never,
            "ER" => AckCondition::OnError,
            "SU" => AckCondition::OnSuccess,
            _ => AckCondition::Always,
        };
        Self::Enhanced { accept }
    }

    /// The code for an outcome, or `None` when the sender asked not to be answered.
    pub fn code(self, outcome: Outcome) -> Option<AckCode> {
        match self {
            Self::Original => Some(match outcome {
                Outcome::Accepted => AckCode::AA,
                Outcome::Error => AckCode::AE,
                Outcome::Rejected => AckCode::AR,
            }),
            Self::Enhanced { accept } => {
                let send = match accept {
                    AckCondition::Always => true,
                    AckCondition::Never => false,
                    AckCondition::OnError => outcome != Outcome::Accepted,
                    AckCondition::OnSuccess => outcome == Outcome::Accepted,
                };
                send.then_some(match outcome {
                    Outcome::Accepted => AckCode::CA,
                    Outcome::Error => AckCode::CE,
                    Outcome::Rejected => AckCode::CR,
                })
            }
        }
    }
}

/// The header fields of an acknowledged message that its ACK echoes, kept as received (already
/// in HL7's escaped form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-9.2, the trigger event.
    pub trigger: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.
    pub processing_id: String,
    /// MSH-12.
    pub version: String,
}

impl Header {
    /// The header of a parsed message.
    pub fn of(message: &Message<'_>) -> Self {
        let msh = message.msh();
        let raw = |n: usize| ascii(msh.field(n).raw());
        Self {
            sending_application: raw(3),
            sending_facility: raw(4),
            receiving_application: raw(5),
            receiving_facility: raw(6),
            trigger: ascii(msh.field(9).component(2).raw()),
            control_id: raw(10),
            processing_id: raw(11),
            version: raw(12),
        }
    }
}

/// Who answers and when: the ACK's own MSH-3/4, MSH-7 and MSH-10.
#[derive(Debug, Clone, Copy)]
pub struct Responder<'a> {
    /// MSH-3 of the ACK (the receiving application's name).
    pub application: &'a str,
    /// MSH-4 of the ACK; empty echoes the acknowledged MSH-6.
    pub facility: &'a str,
    /// MSH-7, `YYYYMMDDHHMMSS[.S…]±ZZZZ`.
    pub timestamp: &'a str,
    /// MSH-10 of the ACK.
    pub control_id: &'a str,
}

/// Writes the ACK of `header` with `code`, diagnostic `errors` in MSA-3 and ERR.
pub fn write_ack(
    header: &Header,
    responder: &Responder<'_>,
    code: AckCode,
    errors: &[AckError],
) -> String {
    let mut out = String::with_capacity(256);
    let facility = if responder.facility.is_empty() {
        header.receiving_facility.clone()
    } else {
        escape(responder.facility)
    };
    let version = if header.version.is_empty() {
        "2.5"
    } else {
        &header.version
    };
    let processing = if header.processing_id.is_empty() {
        "P"
    } else {
        &header.processing_id
    };
    let _ = write!(
        out,
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}\r",
        escape(responder.application),
        facility,
        header.sending_application,
        header.sending_facility,
        escape(responder.timestamp),
        header.trigger,
        escape(responder.control_id),
        processing,
        version,
    );
    let text = errors
        .first()
        .map(|error| escape(&error.text))
        .unwrap_or_default();
    let _ = write!(
        out,
        "MSA|{}|{}|{}\r",
        code.as_str(),
        header.control_id,
        text
    );
    for error in errors {
        let (number, name) = error.condition.code();
        let location = error
            .location
            .as_ref()
            .map(|(segment, field)| format!("{}^1^{field}", escape(segment)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "ERR||{location}|{number}^{name}^HL70357|E||||{}\r",
            escape(&error.text)
        );
    }
    out
}

/// What a peer's ACK says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAck {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2: the control id acknowledged.
    pub control_id: String,
    /// MSA-3 and the ERR texts, joined.
    pub text: String,
}

/// Reads an ACK: MSA-1 must be a table 0008 code.
pub fn read_ack(message: &Message<'_>) -> Result<ReceivedAck, ParseError> {
    let msa = message.first("MSA").ok_or_else(|| ParseError {
        line: 1,
        segment: None,
        field: None,
        reason: "an acknowledgement needs an MSA segment".to_owned(),
    })?;
    let code_text = msa.field(1).text();
    let code = AckCode::parse(code_text.trim())
        .ok_or_else(|| msa.error(1, format!("{code_text:?} is not an acknowledgement code")))?;
    let mut texts = vec![msa.field(3).text().into_owned()];
    for err in message.all("ERR") {
        texts.push(err.field(8).text().into_owned());
        texts.push(err.field(3).component(2).text().into_owned());
    }
    texts.retain(|text| !text.trim().is_empty());
    texts.dedup();
    Ok(ReceivedAck {
        code,
        control_id: msa.field(2).text().into_owned(),
        text: texts.join("; "),
    })
}

/// Escapes HL7 delimiters and keeps the text ASCII and on one line.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' | '\t' => out.push(' '),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// Keeps an already escaped field ASCII (echoed fields from the acknowledged MSH).
fn ascii(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ORIGINAL: &str = "MSH|^~\\&|HIS|SHONAI|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|MSG0001|P|2.5\rPID|||123\r";
    const ENHANCED: &str = "MSH|^~\\&|HIS|SHONAI|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|MSG0002|P|2.5|||ER|NE\rPID|||123\r";

    fn responder() -> Responder<'static> {
        Responder {
            application: "TSUNAGI",
            facility: "",
            timestamp: "20261124101501+0900",
            control_id: "ACK-1",
        }
    }

    #[test]
    fn original_mode_accept() {
        let message = Message::parse(ORIGINAL).unwrap();
        let mode = AckMode::of(&message);
        assert_eq!(mode, AckMode::Original);
        let ack = write_ack(
            &Header::of(&message),
            &responder(),
            mode.code(Outcome::Accepted).unwrap(),
            &[],
        );
        assert_eq!(
            ack,
            "MSH|^~\\&|TSUNAGI|NET|HIS|SHONAI|20261124101501+0900||ACK^A08^ACK|ACK-1|P|2.5\rMSA|AA|MSG0001|\r"
        );
        let read = read_ack(&Message::parse(&ack).unwrap()).unwrap();
        assert_eq!(read.code, AckCode::AA);
        assert_eq!(read.control_id, "MSG0001");
    }

    #[test]
    fn errors_are_escaped_ascii_and_located() {
        let message = Message::parse(ORIGINAL).unwrap();
        let error = AckError {
            condition: ErrorCondition::UnknownKey,
            location: Some(("PID".to_owned(), 3)),
            text: "患者 123 is unknown | not registered\r".to_owned(),
        };
        let ack = write_ack(&Header::of(&message), &responder(), AckCode::AE, &[error]);
        assert!(
            ack.contains("MSA|AE|MSG0001|?? 123 is unknown \\F\\ not registered \r"),
            "{ack}"
        );
        assert!(
            ack.contains("ERR||PID^1^3|204^Unknown key identifier^HL70357|E||||"),
            "{ack}"
        );
        assert!(ack.is_ascii());
        let read = read_ack(&Message::parse(&ack).unwrap()).unwrap();
        assert_eq!(read.code, AckCode::AE);
        assert!(
            read.text.contains("?? 123 is unknown | not registered"),
            "{}",
            read.text
        );
    }

    #[test]
    fn enhanced_mode_follows_msh_15() {
        let message = Message::parse(ENHANCED).unwrap();
        let mode = AckMode::of(&message);
        assert_eq!(
            mode,
            AckMode::Enhanced {
                accept: AckCondition::OnError
            }
        );
        assert_eq!(mode.code(Outcome::Accepted), None);
        assert_eq!(mode.code(Outcome::Error), Some(AckCode::CE));
        assert_eq!(mode.code(Outcome::Rejected), Some(AckCode::CR));
        let always = ENHANCED.replace("|ER|NE", "|AL|NE");
        let always = Message::parse(&always).unwrap();
        assert_eq!(
            AckMode::of(&always).code(Outcome::Accepted),
            Some(AckCode::CA)
        );
        let never = ENHANCED.replace("|ER|NE", "|NE|AL");
        let never = Message::parse(&never).unwrap();
        assert_eq!(AckMode::of(&never).code(Outcome::Rejected), None);
    }

    #[test]
    fn a_reply_without_a_valid_msa_is_not_an_ack() {
        let no_msa = Message::parse("MSH|^~\\&|A|B|C|D|20261124||ACK|1|P|2.5\r").unwrap();
        assert!(read_ack(&no_msa).is_err());
        let bad_code =
            Message::parse("MSH|^~\\&|A|B|C|D|20261124||ACK|1|P|2.5\rMSA|OK|1\r").unwrap();
        assert!(read_ack(&bad_code).is_err());
    }
}
