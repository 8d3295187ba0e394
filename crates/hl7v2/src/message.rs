//! The structural parser: decoded text → segments → fields → repetitions → components.
//!
//! Every value is a slice of the decoded text; nothing is copied until a caller asks for
//! [`Field::text`] (which un-escapes). Tolerated: CR, LF or CRLF terminators, blank lines,
//! a leading 0x0B or BOM, trailing 0x1C/0x0B/NUL/white space, segments with no fields.
//! Refused, with the line and segment named: no MSH first, bad MSH delimiters, a second MSH
//! (one file holds one message), malformed segment ids.

use std::borrow::Cow;
use std::fmt;

use crate::escape::unescape;

/// The delimiters declared in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), normally `|`.
    pub field: char,
    /// Component separator, normally `^`.
    pub component: char,
    /// Repetition separator, normally `~`.
    pub repetition: char,
    /// Escape character, normally `\`.
    pub escape: char,
    /// Sub-component separator, normally `&`.
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

/// A structural error, located by line and segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the decoded message (CR, LF and CRLF each end a line).
    pub line: usize,
    /// The segment id, when one could be read.
    pub segment: Option<String>,
    /// The field number, when the error is about one field.
    pub field: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        match (&self.segment, self.field) {
            (Some(segment), Some(field)) => write!(f, ", {segment}-{field}")?,
            (Some(segment), None) => write!(f, ", segment {segment}")?,
            _ => {}
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ParseError {}

/// MSH-9: message code, trigger event and structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    /// MSH-9.1, e.g. `ADT`.
    pub code: String,
    /// MSH-9.2, e.g. `A08`.
    pub trigger: String,
    /// MSH-9.3, e.g. `ADT_A01` (may be empty).
    pub structure: String,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}^{}", self.code, self.trigger)
    }
}

/// A parsed message borrowing the decoded text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    delimiters: Delimiters,
    segments: Vec<Segment<'a>>,
}

/// One segment.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    id: &'a str,
    /// Index 0 is the segment id; index n is field n. For MSH, index 1 is the field separator
    /// itself and index 2 the encoding characters, as HL7 numbers them.
    fields: Vec<&'a str>,
    line: usize,
    index: usize,
    delimiters: Delimiters,
}

/// One field (all its repetitions).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a str,
    delimiters: Delimiters,
}

/// One component (or, from [`Component::sub`], one sub-component).
#[derive(Debug, Clone, Copy)]
pub struct Component<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    is_sub: bool,
}

/// `raw` split by `separator` (a byte scan for ASCII separators, which never occur inside a UTF-8
/// sequence).
fn split_fields(raw: &str, separator: char) -> Vec<&str> {
    if !separator.is_ascii() {
        return raw.split(separator).collect();
    }
    let separator = separator as u8;
    let bytes = raw.as_bytes();
    let mut fields = Vec::with_capacity(24);
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == separator {
            fields.push(raw.get(start..index).unwrap_or(""));
            start = index + 1;
        }
    }
    fields.push(raw.get(start..).unwrap_or(""));
    fields
}

/// Part `n` (1-based) of `raw` split by `separator`; empty when absent. For the usual ASCII
/// delimiters this is a plain byte scan (an ASCII byte never occurs inside a UTF-8 sequence, so
/// the slice boundaries are always character boundaries).
fn nth_part(raw: &str, separator: char, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    if !separator.is_ascii() {
        return raw.split(separator).nth(n - 1).unwrap_or("");
    }
    let separator = separator as u8;
    let bytes = raw.as_bytes();
    let mut start = 0;
    for _ in 1..n {
        match bytes[start..].iter().position(|&byte| byte == separator) {
            Some(offset) => start += offset + 1,
            None => return "",
        }
    }
    let end = bytes[start..]
        .iter()
        .position(|&byte| byte == separator)
        .map_or(bytes.len(), |offset| start + offset);
    raw.get(start..end).unwrap_or("")
}

impl<'a> Message<'a> {
    /// Parses decoded text.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let mut segments = Vec::new();
        let mut delimiters = Delimiters::default();
        for (line, raw_line) in lines(text) {
            let trimmed = trim_line(raw_line);
            if trimmed.is_empty() {
                continue;
            }
            let error = |segment: Option<&str>, reason: String| ParseError {
                line,
                segment: segment.map(str::to_owned),
                field: None,
                reason,
            };
            let id = trimmed.get(..3).unwrap_or(trimmed);
            if segments.is_empty() {
                if id != "MSH" {
                    return Err(error(
                        None,
                        format!(
                            "a message must start with an MSH segment, found {:?}",
                            trimmed.chars().take(8).collect::<String>()
                        ),
                    ));
                }
                delimiters =
                    read_delimiters(trimmed).map_err(|reason| error(Some("MSH"), reason))?;
                segments.push(msh_segment(trimmed, line, delimiters));
                continue;
            }
            if !is_segment_id(id) {
                return Err(error(
                    None,
                    format!(
                        "{:?} is not a segment id (three upper-case letters or digits)",
                        trimmed.chars().take(8).collect::<String>()
                    ),
                ));
            }
            if id == "MSH" {
                return Err(error(
                    Some("MSH"),
                    "a second MSH segment: a file or frame must hold exactly one message"
                        .to_owned(),
                ));
            }
            let rest = &trimmed[3..];
            if !rest.is_empty() && !rest.starts_with(delimiters.field) {
                return Err(error(
                    Some(id),
                    format!("segment id must be followed by {:?}", delimiters.field),
                ));
            }
            let fields = split_fields(trimmed, delimiters.field);
            let index = segments.len();
            segments.push(Segment {
                id,
                fields,
                line,
                index,
                delimiters,
            });
        }
        if segments.is_empty() {
            return Err(ParseError {
                line: 1,
                segment: None,
                field: None,
                reason: "the message is empty".to_owned(),
            });
        }
        Ok(Self {
            delimiters,
            segments,
        })
    }

    /// The delimiters declared in MSH.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// All segments in order (MSH first).
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    /// The MSH segment.
    pub fn msh(&self) -> &Segment<'a> {
        // `parse` refuses messages without a leading MSH, so index 0 always exists.
        &self.segments[0]
    }

    /// The first segment with this id.
    pub fn first(&self, id: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|segment| segment.id == id)
    }

    /// All segments with this id.
    pub fn all<'s>(&'s self, id: &'s str) -> impl Iterator<Item = &'s Segment<'a>> + 's {
        self.segments.iter().filter(move |segment| segment.id == id)
    }

    /// MSH-9 as a typed value.
    pub fn message_type(&self) -> Result<MessageType, ParseError> {
        let msh = self.msh();
        let field = msh.field(9);
        let code = field.component(1).text().trim().to_owned();
        let trigger = field.component(2).text().trim().to_owned();
        if code.is_empty() || trigger.is_empty() {
            return Err(msh.error(9, "MSH-9 must give a message code and trigger event"));
        }
        Ok(MessageType {
            code,
            trigger,
            structure: field.component(3).text().trim().to_owned(),
        })
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> Cow<'a, str> {
        self.msh().field(10).text()
    }

    /// MSH-18 repetitions and MSH-20, with spacing variants folded (`ISO IR87` = `ISOIR87`,
    /// `ISO 2022-1994` = `ISO2022-1994`). The first MSH-18 repetition is empty when the
    /// default (ASCII) applies.
    pub fn declared_charsets(&self) -> Vec<String> {
        let msh = self.msh();
        let mut names: Vec<String> = msh
            .field(18)
            .repetitions()
            .map(|repetition| fold_charset_name(&repetition.text()))
            .collect();
        let extension = fold_charset_name(&msh.field(20).text());
        if !extension.is_empty() {
            names.push(extension);
        }
        names
    }
}

/// A message's segments with their terminators normalised: CR, LF and CRLF all end a segment,
/// blank lines are dropped and the last segment is terminated. Two sends of one message that
/// differ only in how segments are terminated (`mllp_send` strips the final CR, other clients
/// keep it or send LF) have the same normal form, so a resend is recognised as such.
pub fn normal_segments(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 1);
    for segment in raw.split(|&b| b == b'\r' || b == b'\n') {
        if !segment.is_empty() {
            out.extend_from_slice(segment);
            out.push(b'\r');
        }
    }
    out
}

#[cfg(test)]
mod normal_form_tests {
    use super::normal_segments;

    #[test]
    fn terminators_do_not_matter() {
        let expected = b"MSH|^~\\&|A\rPID|1\r".to_vec();
        for raw in [
            &b"MSH|^~\\&|A\rPID|1\r"[..],
            b"MSH|^~\\&|A\rPID|1",
            b"MSH|^~\\&|A\r\nPID|1\r\n",
            b"MSH|^~\\&|A\nPID|1\n\n",
        ] {
            assert_eq!(normal_segments(raw), expected);
        }
        assert_ne!(normal_segments(b"MSH|A\rPID|2"), expected);
    }
}

/// Folds the spelling variants of HL7 character-set names.
pub fn fold_charset_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect::<String>()
        .to_ascii_uppercase()
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut line = 1;
    let mut position = 0;
    std::iter::from_fn(move || {
        while position < bytes.len() {
            let byte = bytes[position];
            if byte == b'\r' || byte == b'\n' {
                let current = (line, &text[start..position]);
                position += 1;
                if byte == b'\r' && bytes.get(position) == Some(&b'\n') {
                    position += 1;
                }
                start = position;
                line += 1;
                return Some(current);
            }
            position += 1;
        }
        if start < bytes.len() {
            let current = (line, &text[start..]);
            start = bytes.len();
            return Some(current);
        }
        None
    })
}

fn trim_line(line: &str) -> &str {
    line.trim_start_matches(['\u{0B}', '\u{FEFF}', ' ', '\t'])
        .trim_end_matches(|c: char| {
            c == '\u{1C}' || c == '\u{0B}' || c == '\0' || c.is_whitespace()
        })
}

fn is_segment_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 3
        && bytes[0].is_ascii_uppercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn read_delimiters(line: &str) -> Result<Delimiters, String> {
    let mut chars = line.chars().skip(3);
    let field = chars.next().ok_or("MSH has no field separator (MSH-1)")?;
    let encoding: String = chars.take_while(|c| *c != field).collect();
    let encoding: Vec<char> = encoding.chars().collect();
    if encoding.len() < 4 {
        return Err(format!(
            "MSH-2 must hold four encoding characters, found {:?}",
            encoding.iter().collect::<String>()
        ));
    }
    let delimiters = Delimiters {
        field,
        component: encoding[0],
        repetition: encoding[1],
        escape: encoding[2],
        subcomponent: encoding[3],
    };
    let all = [
        delimiters.field,
        delimiters.component,
        delimiters.repetition,
        delimiters.escape,
        delimiters.subcomponent,
    ];
    for (index, a) in all.iter().enumerate() {
        if a.is_alphanumeric() || a.is_whitespace() || all[index + 1..].contains(a) {
            return Err(format!(
                "MSH delimiters {:?} are not five distinct symbols",
                all.iter().collect::<String>()
            ));
        }
    }
    Ok(delimiters)
}

fn msh_segment(line: &str, line_number: usize, delimiters: Delimiters) -> Segment<'_> {
    let separator_len = delimiters.field.len_utf8();
    let after_id = &line[3..];
    let field_separator = &after_id[..separator_len];
    let rest = &after_id[separator_len..];
    let mut fields = vec![&line[..3], field_separator];
    fields.extend(split_fields(rest, delimiters.field));
    Segment {
        id: &line[..3],
        fields,
        line: line_number,
        index: 0,
        delimiters,
    }
}

impl<'a> Segment<'a> {
    /// The three-character segment id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The 1-based line this segment started on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Position of the segment in the message (MSH is 0).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of the last field present.
    pub fn field_count(&self) -> usize {
        self.fields.len().saturating_sub(1)
    }

    /// Field `n` (1-based as HL7 numbers them); empty when absent.
    pub fn field(&self, n: usize) -> Field<'a> {
        let raw = if n == 0 {
            ""
        } else {
            self.fields.get(n).copied().unwrap_or("")
        };
        Field {
            raw,
            delimiters: self.delimiters,
        }
    }

    /// Field `n` un-escaped as one string.
    pub fn text(&self, n: usize) -> Cow<'a, str> {
        self.field(n).text()
    }

    /// An error about field `n` of this segment.
    pub fn error(&self, n: usize, reason: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            segment: Some(self.id.to_owned()),
            field: Some(n),
            reason: reason.into(),
        }
    }
}

impl<'a> Field<'a> {
    /// The raw (still escaped) text.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True for the HL7 explicit null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// The whole field un-escaped (delimiters inside it are kept).
    pub fn text(&self) -> Cow<'a, str> {
        unescape(self.raw, &self.delimiters)
    }

    /// The repetitions; none for an empty field.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let delimiters = self.delimiters;
        let raw = self.raw;
        raw.split(delimiters.repetition)
            .filter(move |_| !raw.is_empty())
            .map(move |raw| Repetition { raw, delimiters })
    }

    /// The first repetition (empty when none).
    pub fn first(&self) -> Repetition<'a> {
        Repetition {
            raw: self
                .raw
                .split(self.delimiters.repetition)
                .next()
                .unwrap_or(""),
            delimiters: self.delimiters,
        }
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Component<'a> {
        self.first().component(n)
    }
}

impl<'a> Repetition<'a> {
    /// The raw text.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The repetition un-escaped as one string.
    pub fn text(&self) -> Cow<'a, str> {
        unescape(self.raw, &self.delimiters)
    }

    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Component<'a> {
        Component {
            raw: nth_part(self.raw, self.delimiters.component, n),
            delimiters: self.delimiters,
            is_sub: false,
        }
    }

    /// Number of components present.
    pub fn component_count(&self) -> usize {
        if self.raw.is_empty() {
            0
        } else {
            self.raw.split(self.delimiters.component).count()
        }
    }
}

impl<'a> Component<'a> {
    /// The raw text.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True for the HL7 explicit null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// The text un-escaped.
    pub fn text(&self) -> Cow<'a, str> {
        unescape(self.raw, &self.delimiters)
    }

    /// Sub-component `n` (1-based). A sub-component has no further parts: asking one for a
    /// sub-component returns it whole for `n == 1`.
    pub fn sub(&self, n: usize) -> Component<'a> {
        let raw = if self.is_sub {
            if n == 1 { self.raw } else { "" }
        } else {
            nth_part(self.raw, self.delimiters.subcomponent, n)
        };
        Component {
            raw,
            delimiters: self.delimiters,
            is_sub: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MSH|^~\\&|HIS123|SEND|GW|RCV|20111220224447.3399||ADT^A08^ADT_A01|20111220000001|P|2.5||||||~ISO IR87||ISO 2022-1994\rPID|0001||9999013^^^^PI||患者^太郎^^^^^L^I~カンジャ^タロウ^^^^^L^P||19480405|M\rOBX|1|NM|a\\S\\b^x&y&z\r\u{1c}\r";

    #[test]
    fn fields_components_repetitions() {
        let message = Message::parse(SAMPLE).unwrap();
        assert_eq!(message.segments().len(), 3);
        let msh = message.msh();
        assert_eq!(msh.text(1), "|");
        assert_eq!(msh.text(2), "^~\\&");
        assert_eq!(msh.text(3), "HIS123");
        assert_eq!(message.message_type().unwrap().to_string(), "ADT^A08");
        assert_eq!(message.control_id(), "20111220000001");
        assert_eq!(
            message.declared_charsets(),
            vec!["", "ISOIR87", "ISO2022-1994"]
        );
        let pid = message.first("PID").unwrap();
        assert_eq!(pid.field(3).component(1).text(), "9999013");
        let names: Vec<_> = pid.field(5).repetitions().collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[1].component(1).text(), "カンジャ");
        assert_eq!(names[1].component(8).text(), "P");
        let obx = message.first("OBX").unwrap();
        assert_eq!(obx.field(3).component(1).text(), "a^b");
        assert_eq!(obx.field(3).component(2).sub(3).text(), "z");
        assert_eq!(obx.field(3).component(2).sub(3).sub(1).text(), "z");
        assert!(obx.field(99).is_empty());
        assert_eq!(pid.field(5).repetitions().count(), 2);
        assert_eq!(obx.field(7).repetitions().count(), 0);
    }

    #[test]
    fn line_endings_are_all_accepted() {
        for ending in ["\r", "\n", "\r\n"] {
            let text = format!("\u{0b}MSH|^~\\&|A{ending}PID|1{ending}{ending}PV1|1{ending}\u{1c}");
            let message = Message::parse(&text).unwrap();
            assert_eq!(message.segments().len(), 3, "{ending:?}");
            assert_eq!(message.segments()[2].line(), 4, "{ending:?}");
        }
    }

    #[test]
    fn structural_errors_name_line_and_segment() {
        let no_msh = Message::parse("PID|1\r").unwrap_err();
        assert_eq!(no_msh.line, 1);
        assert!(no_msh.reason.contains("MSH"));
        let second = Message::parse("MSH|^~\\&|A\rPID|1\rMSH\r").unwrap_err();
        assert_eq!(second.line, 3);
        assert_eq!(second.segment.as_deref(), Some("MSH"));
        assert!(
            second
                .to_string()
                .starts_with("line 3, segment MSH: a second MSH")
        );
        let bad_id = Message::parse("MSH|^~\\&|A\rpid|1\r").unwrap_err();
        assert_eq!(bad_id.line, 2);
        assert!(Message::parse("MSH|^~|A\r").is_err());
        assert!(Message::parse("").is_err());
        assert!(Message::parse("MSH|^~\\&|A\rPIDX|1").is_err());
    }

    #[test]
    fn split_fields_matches_split() {
        for raw in ["", "a", "a|b", "|b|", "PID|0001||患者^太郎|", "||"] {
            assert_eq!(
                split_fields(raw, '|'),
                raw.split('|').collect::<Vec<_>>(),
                "{raw:?}"
            );
        }
        assert_eq!(split_fields("a§b", '§'), vec!["a", "b"]);
    }

    #[test]
    fn nth_part_matches_split() {
        for raw in ["", "a", "a^b", "^b^", "患者^太郎^^^^^L^I", "a^^", "^^^"] {
            for n in 0..8 {
                let expected = if n == 0 {
                    ""
                } else {
                    raw.split('^').nth(n - 1).unwrap_or("")
                };
                assert_eq!(nth_part(raw, '^', n), expected, "{raw:?} {n}");
            }
        }
        assert_eq!(nth_part("a§b", '§', 2), "b");
    }

    #[test]
    fn empty_segments_and_nulls() {
        let message = Message::parse("MSH|^~\\&|A\rAL1\rRXE|\"\"|x").unwrap();
        assert_eq!(message.first("AL1").unwrap().field_count(), 0);
        assert!(message.first("RXE").unwrap().field(1).is_null());
    }
}
