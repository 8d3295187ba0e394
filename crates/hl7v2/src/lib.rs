//! HL7 v2.5 as SS-MIX2 and JAHIS write it.
//!
//! The order of operations is the whole point of this crate:
//!
//! 1. [`charset::decode`] turns the *whole* file or frame into Unicode first. In ISO-2022-JP the
//!    bytes of `| ^ ~ \ &` occur inside kanji (日 is 0x467C), so splitting raw bytes corrupts data.
//! 2. [`Message::parse`] splits the decoded text into segments (CR, LF or CRLF; trailing 0x1C,
//!    0x0B and white space ignored), fields, repetitions, components and sub-components, using the
//!    delimiters declared in MSH-1/MSH-2.
//! 3. Accessors return raw slices; [`unescape`] resolves `\F\ \S\ \T\ \R\ \E\ \Xhh\ \.br\` only
//!    *after* splitting, and keeps unknown escapes as literal text.
//!
//! Parsing never looks at meaning: which segments a message type needs is the mapping's job.
//! Errors name the segment, its line and the field, so the adapter can add the file name.
//! [`charset::encode_iso2022jp`] is the inverse of step 1 for JIS X 0208 text (used by the
//! synthetic-region generator and write-back).
//!
//! [`mllp`] splits a TCP byte stream into frames and [`ack`] builds and reads acknowledgements;
//! both are pure, the sockets live in `tsunagi-mllp`.

pub mod ack;
pub mod charset;
pub mod document;
mod escape;
mod message;
pub mod mllp;

pub use escape::unescape;
pub use message::{
    Component, Delimiters, Field, Message, MessageType, ParseError, Repetition, Segment,
    fold_charset_name, normal_segments,
};
