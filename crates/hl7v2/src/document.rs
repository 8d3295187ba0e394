//! MDM^T02 (original document notification and content): how a note or a standard document written
//! in the network is delivered to a hospital's EHR. Pure text building; the bytes are ISO-2022-JP
//! as SS-MIX2 receivers read them (MSH-18 `~ISO IR87`, MSH-20 `ISO 2022-1994`), with characters
//! outside JIS X 0208 substituted ([`crate::charset::substitute`]).

use std::fmt::Write;

use crate::charset::{Iso2022JpEncoder, Substitution};

/// One attachment (OBX of type ED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// Base64 data.
    pub base64: String,
    /// Title, if any.
    pub title: String,
}

/// What an MDM^T02 carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundDocument {
    /// MSH-3, MSH-4: the gateway and the facility of the author.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5: the hospital's application (empty when unknown).
    pub receiving_application: String,
    /// MSH-6: the hospital's facility code.
    pub receiving_facility: String,
    /// MSH-7, HL7 TS.
    pub timestamp: String,
    /// MSH-10, the same on every attempt.
    pub control_id: String,
    /// PID-3: the patient's id at the receiving hospital.
    pub patient_id: String,
    /// PID-5: family and given name.
    pub patient_name: (String, String),
    /// TXA-2: document type code and name.
    pub document_type: (String, String),
    /// TXA-4 and TXA-6: when it was written, HL7 TS.
    pub activity_time: String,
    /// TXA-9: the author's id and name.
    pub originator: (String, String),
    /// TXA-12: the document's unique id (`Type/id` in the network).
    pub unique_id: String,
    /// TXA-13: the document it answers, if any.
    pub parent_id: String,
    /// OBX-5 (TX) lines of the text.
    pub lines: Vec<String>,
    /// OBX-5 (ED) attachments.
    pub attachments: Vec<Attachment>,
}

/// Escapes HL7 delimiters in text; control characters become spaces.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl OutboundDocument {
    /// The message as text, segments ended by CR.
    pub fn to_er7(&self) -> String {
        let e = escape_text;
        let mut out =
            String::with_capacity(512 + self.lines.iter().map(String::len).sum::<usize>());
        let _ = write!(
            out,
            "MSH|^~\\&|{}|{}|{}|{}|{}||MDM^T02^MDM_T02|{}|P|2.5||||||~ISO IR87||ISO 2022-1994\r",
            e(&self.sending_application),
            e(&self.sending_facility),
            e(&self.receiving_application),
            e(&self.receiving_facility),
            e(&self.timestamp),
            e(&self.control_id),
        );
        let _ = write!(out, "EVN|T02|{}\r", e(&self.timestamp));
        let _ = write!(
            out,
            "PID|||{}^^^^PI||{}^{}^^^^^L^I\r",
            e(&self.patient_id),
            e(&self.patient_name.0),
            e(&self.patient_name.1),
        );
        out.push_str("PV1||O\r");
        let presentation = if self.attachments.is_empty() {
            "TX"
        } else {
            "AP"
        };
        let _ = write!(
            out,
            "TXA|1|{}^{}^99TSUNAGI|{presentation}|{}||{}|||{}^{}|||{}^TSUNAGI|{}||||AU||AV\r",
            e(&self.document_type.0),
            e(&self.document_type.1),
            e(&self.activity_time),
            e(&self.activity_time),
            e(&self.originator.0),
            e(&self.originator.1),
            e(&self.unique_id),
            if self.parent_id.is_empty() {
                String::new()
            } else {
                format!("{}^TSUNAGI", e(&self.parent_id))
            },
        );
        let mut set_id = 0;
        if !self.lines.is_empty() {
            set_id += 1;
            let text: Vec<String> = self.lines.iter().map(|line| e(line)).collect();
            let _ = write!(
                out,
                "OBX|{set_id}|TX|{}^{}^99TSUNAGI||{}||||||F\r",
                e(&self.document_type.0),
                e(&self.document_type.1),
                text.join("~"),
            );
        }
        for attachment in &self.attachments {
            set_id += 1;
            let (major, minor) = attachment
                .content_type
                .split_once('/')
                .unwrap_or((attachment.content_type.as_str(), ""));
            let _ = write!(
                out,
                "OBX|{set_id}|ED|ATTACHMENT^{}^99TSUNAGI||^{}^{}^Base64^{}||||||F\r",
                e(&attachment.title),
                e(major),
                e(minor),
                e(&attachment.base64),
            );
        }
        out
    }

    /// The message as sent: ISO-2022-JP, with what had to be substituted.
    pub fn encode(&self) -> (Vec<u8>, Vec<Substitution>) {
        Iso2022JpEncoder::default().encode_substituting(&self.to_er7())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, charset::decode};

    fn note() -> OutboundDocument {
        OutboundDocument {
            sending_application: "TSUNAGI".into(),
            sending_facility: "0612345678".into(),
            receiving_application: String::new(),
            receiving_facility: "0610100010".into(),
            timestamp: "20261124101500+0900".into(),
            control_id: "T0001".into(),
            patient_id: "0000123456".into(),
            patient_name: ("山田".into(), "太郎".into()),
            document_type: ("note".into(), "連絡".into()),
            activity_time: "20261124101500+0900".into(),
            originator: ("dr-sato".into(), "佐藤 医師".into()),
            unique_id: "Communication/abc".into(),
            parent_id: String::new(),
            lines: vec!["血圧 140/90|要観察^".into(), "①朝食後 ㈱テスト ﾃｽﾄ".into()],
            attachments: vec![Attachment {
                content_type: "application/pdf".into(),
                base64: "JVBERi0=".into(),
                title: "紹介状".into(),
            }],
        }
    }

    #[test]
    fn a_note_is_an_mdm_t02_in_iso_2022_jp_that_parses_back() {
        let (bytes, substitutions) = note().encode();
        assert!(bytes.windows(3).any(|w| w == b"\x1b$B"));
        assert!(bytes.iter().all(|&b| b < 0x80), "7-bit only");
        assert_eq!(
            substitutions.len(),
            2,
            "① and ㈱; the half-width kana are widened"
        );
        let (text, _) = decode(&bytes).unwrap();
        let message = Message::parse(&text).unwrap();
        assert_eq!(message.control_id(), "T0001");
        let obx = message.first("OBX").unwrap();
        let lines: Vec<String> = obx
            .field(5)
            .repetitions()
            .map(|r| r.text().into_owned())
            .collect();
        assert_eq!(
            lines,
            vec!["血圧 140/90|要観察^", "(1)朝食後 (株)テスト テスト"]
        );
        let txa = message.first("TXA").unwrap();
        assert_eq!(txa.field(12).component(1).text(), "Communication/abc");
        assert_eq!(txa.field(3).text(), "AP");
        assert!(text.contains("|^application^pdf^Base64^JVBERi0=|"));
        assert!(text.starts_with("MSH|^~\\&|TSUNAGI|0612345678||0610100010|"));
        assert!(text.contains("|~ISO IR87||ISO 2022-1994\r"));
    }
}
