//! Bytes ↔ Unicode for HL7 v2 files and frames, with one pinned JIS mapping.
//!
//! **The pinned mapping.** SS-MIX2 files are ISO-2022-JP (ASCII plus JIS X 0208 between
//! `ESC $ B` and `ESC ( B`). We decode with `encoding_rs` (pinned in `Cargo.lock`), whose JIS
//! X 0208 table is the WHATWG one: it agrees with Windows CP932, the code page the hospitals'
//! EHR terminals type in, so a character keeps the code point its author saw. Where JIS
//! standard decoders differ it gives: 0x2141 → U+FF5E ～, 0x2142 → U+2225 ∥, 0x215D → U+FF0D
//! －, 0x2171 → U+FFE0 ￠. The tests below fix those four, so a library upgrade that changes the
//! mapping fails loudly. Search keys fold both forms together (`tsunagi_core::normalize`).
//!
//! Input without any escape sequence is read as UTF-8 (ASCII is a subset), which covers lab
//! feeds that declare `UNICODE UTF-8` in MSH-18.

use std::borrow::Cow;

use encoding_rs::{DecoderResult, EncoderResult, ISO_2022_JP};

/// Which byte encoding a message was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// ISO-2022-JP (escape sequences were present).
    Iso2022Jp,
    /// Plain ASCII or UTF-8.
    Utf8,
}

/// Bytes that are not valid in the detected encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset} (line {line}) is not valid {encoding}")]
pub struct DecodeError {
    /// Offset of the first bad byte.
    pub offset: usize,
    /// 1-based line of the first bad byte (CR, LF and CRLF each end a line).
    pub line: usize,
    /// Name of the encoding that was tried.
    pub encoding: &'static str,
}

/// Decodes a whole file or frame to Unicode. Never splits before decoding.
pub fn decode(bytes: &[u8]) -> Result<(Cow<'_, str>, Detected), DecodeError> {
    if bytes.contains(&0x1B) {
        return decode_iso2022jp(bytes).map(|text| (text, Detected::Iso2022Jp));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok((Cow::Borrowed(text), Detected::Utf8)),
        Err(error) => {
            let offset = error.valid_up_to();
            Err(DecodeError {
                offset,
                line: line_of(bytes, offset),
                encoding: if bytes.iter().all(|&b| b != 0x1B) {
                    "ISO-2022-JP or UTF-8"
                } else {
                    "UTF-8"
                },
            })
        }
    }
}

fn decode_iso2022jp(bytes: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    if let Some(text) = ISO_2022_JP.decode_without_bom_handling_and_without_replacement(bytes) {
        return Ok(Cow::Owned(text.into_owned()));
    }
    // Slow path, only to locate the first malformed byte for the error message.
    let mut decoder = ISO_2022_JP.new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len() * 3 + 16);
    let mut output = String::with_capacity(capacity);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut output, true);
    let offset = match result {
        DecoderResult::Malformed(bad, after) => {
            read.saturating_sub(usize::from(bad) + usize::from(after))
        }
        DecoderResult::InputEmpty | DecoderResult::OutputFull => read.min(bytes.len()),
    };
    Err(DecodeError {
        offset,
        line: line_of(bytes, offset),
        encoding: "ISO-2022-JP",
    })
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    let mut line = 1;
    let mut previous = 0u8;
    for &byte in &bytes[..offset.min(bytes.len())] {
        if byte == b'\n' && previous != b'\r' || byte == b'\r' {
            line += 1;
        }
        previous = byte;
    }
    line
}

/// A character that has no JIS X 0208 code (or is outside what SS-MIX2 allows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("character {character:?} (U+{code:04X}) at char {index} is not in JIS X 0208")]
pub struct EncodeError {
    /// The offending character.
    pub character: char,
    /// Its code point.
    pub code: u32,
    /// Its position in the input, in characters.
    pub index: usize,
}

/// Encodes text as ISO-2022-JP, accepting only ASCII and JIS X 0208 (rows 1–8 and 16–84).
/// Half-width katakana, NEC row 13 (①, ㈱…) and IBM extensions are refused, as SS-MIX2 requires;
/// `encoding_rs` alone would silently emit them or widen them.
#[derive(Debug, Default)]
pub struct Iso2022JpEncoder {
    cache: std::collections::HashMap<char, [u8; 2]>,
}

impl Iso2022JpEncoder {
    /// Encodes `text`.
    pub fn encode(&mut self, text: &str) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut in_jis = false;
        for (index, character) in text.chars().enumerate() {
            if character.is_ascii() && character != '\u{1b}' {
                if in_jis {
                    out.extend_from_slice(b"\x1b(B");
                    in_jis = false;
                }
                out.push(character as u8);
                continue;
            }
            let pair = self.jis_pair(character).ok_or(EncodeError {
                character,
                code: character as u32,
                index,
            })?;
            if !in_jis {
                out.extend_from_slice(b"\x1b$B");
                in_jis = true;
            }
            out.extend_from_slice(&pair);
        }
        if in_jis {
            out.extend_from_slice(b"\x1b(B");
        }
        Ok(out)
    }

    fn jis_pair(&mut self, character: char) -> Option<[u8; 2]> {
        if let Some(pair) = self.cache.get(&character) {
            return Some(*pair);
        }
        // Half-width katakana would be widened by the encoder; SS-MIX2 forbids them outright.
        if ('\u{FF61}'..='\u{FF9F}').contains(&character) {
            return None;
        }
        // JIS-standard code points of the disputed characters are written as the same JIS code.
        let target = jis_standard_alias(character).unwrap_or(character);
        let mut encoder = ISO_2022_JP.new_encoder();
        let mut buffer = [0u8; 16];
        let mut utf8 = [0u8; 4];
        let source = target.encode_utf8(&mut utf8);
        let (result, _, written) =
            encoder.encode_from_utf8_without_replacement(source, &mut buffer, true);
        if result != EncoderResult::InputEmpty || written != 8 || &buffer[..3] != b"\x1b$B" {
            return None;
        }
        let pair = [buffer[3], buffer[4]];
        let row = pair[0].checked_sub(0x20)?;
        if !((1..=8).contains(&row) || (16..=84).contains(&row)) {
            return None;
        }
        // Round-trip check: the code must decode back to the same character.
        let decoded =
            ISO_2022_JP.decode_without_bom_handling_and_without_replacement(&buffer[..written])?;
        if !decoded.starts_with(target) {
            return None;
        }
        self.cache.insert(character, pair);
        Some(pair)
    }
}

/// The JIS-standard (Unicode consortium JIS0208.TXT) forms of characters that the pinned
/// WHATWG mapping decodes differently, mapped to the pinned form with the same JIS code.
fn jis_standard_alias(character: char) -> Option<char> {
    Some(match character {
        '\u{301C}' => '\u{FF5E}',
        '\u{2016}' => '\u{2225}',
        '\u{2212}' => '\u{FF0D}',
        '\u{00A2}' => '\u{FFE0}',
        '\u{00A3}' => '\u{FFE1}',
        '\u{00AC}' => '\u{FFE2}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jis(pair: [u8; 2]) -> String {
        let mut bytes = b"\x1b$B".to_vec();
        bytes.extend_from_slice(&pair);
        bytes.extend_from_slice(b"\x1b(B");
        decode(&bytes).unwrap().0.into_owned()
    }

    #[test]
    fn pinned_mapping_of_the_disputed_characters() {
        assert_eq!(jis([0x21, 0x41]), "\u{FF5E}");
        assert_eq!(jis([0x21, 0x42]), "\u{2225}");
        assert_eq!(jis([0x21, 0x5D]), "\u{FF0D}");
        assert_eq!(jis([0x21, 0x71]), "\u{FFE0}");
    }

    #[test]
    fn delimiter_bytes_inside_kanji_survive() {
        // 日 = 0x467C contains '|', 入 = 0x467E contains '~', ウ = 0x2526 contains '&'.
        let mut encoder = Iso2022JpEncoder::default();
        let bytes = encoder.encode("PID|日入ウ^x").unwrap();
        assert!(bytes.windows(2).any(|w| w == [0x46, b'|']));
        assert_eq!(decode(&bytes).unwrap().0, "PID|日入ウ^x");
    }

    #[test]
    fn encoder_refuses_what_ss_mix2_forbids() {
        let mut encoder = Iso2022JpEncoder::default();
        for forbidden in ["①", "㈱", "ｶ", "😀", "髙"] {
            let error = encoder.encode(forbidden).unwrap_err();
            assert_eq!(error.index, 0, "{forbidden}");
        }
        assert!(encoder.encode("患者　太郎−１〜２").is_ok());
    }

    #[test]
    fn malformed_input_names_byte_and_line() {
        let mut bytes = b"MSH|^~\\&|\rPID|\x1b$B".to_vec();
        bytes.extend_from_slice(&[0x46, 0x7C, 0x0D]);
        let error = decode(&bytes).unwrap_err();
        assert_eq!(error.line, 2);
        let junk = decode(&[0xfb, 0xfc]).unwrap_err();
        assert_eq!(junk.offset, 0);
        assert_eq!(junk.line, 1);
    }

    #[test]
    fn ascii_and_utf8_pass_through() {
        let (text, detected) = decode(b"MSH|^~\\&|").unwrap();
        assert_eq!(text, "MSH|^~\\&|");
        assert_eq!(detected, Detected::Utf8);
        let (text, _) = decode("MSH|患者".as_bytes()).unwrap();
        assert_eq!(text, "MSH|患者");
    }
}
