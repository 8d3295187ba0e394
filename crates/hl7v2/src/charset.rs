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

/// A character that was written as something else, so the text fits JIS X 0208.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitution {
    /// The character as written.
    pub character: char,
    /// What was sent in its place.
    pub replacement: String,
    /// Its position in the input, in characters.
    pub index: usize,
}

/// What replaces a character outside JIS X 0208 (or outside what SS-MIX2 allows) when Tsunagi
/// writes to a hospital: the NHO substitutions for Windows environment-dependent characters
/// (①→(1), ㈱→(株), ㎎→mg, Ⅳ→IV, ㍻→平成…), a few common variant kanji of names written with
/// their standard form (髙→高, 﨑→崎), and `■` (the 外字 mark) for anything else. Half-width
/// katakana are widened separately ([`widen_katakana`]), because a voiced mark joins the
/// character before it.
pub fn substitute(character: char) -> Cow<'static, str> {
    let code = character as u32;
    let numbered = |base: u32| Cow::Owned(format!("({})", code - base + 1));
    Cow::Borrowed(match character {
        '\u{2460}'..='\u{2473}' => return numbered(0x2460),
        '\u{2474}'..='\u{2487}' => return numbered(0x2474),
        '\u{2160}'..='\u{216B}' => ROMAN[(code - 0x2160) as usize],
        '\u{2170}'..='\u{217B}' => ROMAN_LOWER[(code - 0x2170) as usize],
        '㈱' => "(株)",
        '㈲' => "(有)",
        '㈹' => "(代)",
        '㍿' => "株式会社",
        '㊤' => "(上)",
        '㊥' => "(中)",
        '㊦' => "(下)",
        '㊧' => "(左)",
        '㊨' => "(右)",
        '㍻' => "平成",
        '㍼' => "昭和",
        '㍽' => "大正",
        '㍾' => "明治",
        '㋿' => "令和",
        '㎎' => "mg",
        '㎏' => "kg",
        '㎜' => "mm",
        '㎝' => "cm",
        '㎞' => "km",
        '㎡' => "m2",
        '㏄' => "cc",
        '㍉' => "ミリ",
        '㌔' => "キロ",
        '㌢' => "センチ",
        '㍍' => "メートル",
        '㌘' => "グラム",
        '㌧' => "トン",
        '㌃' => "アール",
        '㌶' => "ヘクタール",
        '㍑' => "リットル",
        '㍗' => "ワット",
        '㌍' => "カロリー",
        '㌦' => "ドル",
        '㌣' => "セント",
        '㌫' => "パーセント",
        '№' => "No.",
        '℡' => "TEL",
        '∮' => "∫",
        '∑' => "Σ",
        '∟' => "∠",
        '⊿' => "△",
        '髙' => "高",
        '﨑' => "崎",
        '德' => "徳",
        '栁' => "柳",
        '\t' => " ",
        _ => "■",
    })
}

const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];
const ROMAN_LOWER: [&str; 12] = [
    "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii",
];

/// Full-width forms of U+FF61–U+FF9F, in order.
const WIDE_KANA: &str = "。「」、・ヲァィゥェォャュョッーアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン゛゜";

/// Half-width katakana widened, a following voiced (ﾞ) or semi-voiced (ﾟ) mark joined to the
/// character before it (ｶﾞ→ガ, ﾊﾟ→パ, ｳﾞ→ヴ).
pub fn widen_katakana(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| ('\u{FF61}'..='\u{FF9F}').contains(&c)) {
        return Cow::Borrowed(text);
    }
    let wide: Vec<char> = WIDE_KANA.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(character) = chars.next() {
        if !('\u{FF61}'..='\u{FF9F}').contains(&character) {
            out.push(character);
            continue;
        }
        let base = wide
            .get((character as u32 - 0xFF61) as usize)
            .copied()
            .unwrap_or('■');
        let joined = match chars.peek() {
            Some('\u{FF9E}') if base == 'ウ' => Some('ヴ'),
            Some('\u{FF9E}') if ('カ'..='ト').contains(&base) || ('ハ'..='ホ').contains(&base) => {
                char::from_u32(base as u32 + 1)
            }
            Some('\u{FF9F}') if ('ハ'..='ホ').contains(&base) => char::from_u32(base as u32 + 2),
            _ => None,
        };
        match joined {
            Some(joined) => {
                chars.next();
                out.push(joined);
            }
            None => out.push(base),
        }
    }
    Cow::Owned(out)
}

impl Iso2022JpEncoder {
    /// Encodes `text` for a hospital that reads SS-MIX2's ISO-2022-JP: half-width katakana are
    /// widened and every character outside JIS X 0208 is replaced ([`substitute`]), never
    /// written as `&#NNNN;`. Returns the bytes and what was replaced.
    pub fn encode_substituting(&mut self, text: &str) -> (Vec<u8>, Vec<Substitution>) {
        let widened = widen_katakana(text);
        let mut substitutions = Vec::new();
        let mut writable = String::with_capacity(widened.len());
        for (index, character) in widened.chars().enumerate() {
            let fits = (character.is_ascii() && !character.is_ascii_control())
                || matches!(character, '\r' | '\n')
                || (!character.is_ascii() && self.jis_pair(character).is_some());
            if fits {
                writable.push(character);
            } else {
                let replacement = substitute(character);
                substitutions.push(Substitution {
                    character,
                    replacement: replacement.clone().into_owned(),
                    index,
                });
                writable.push_str(&replacement);
            }
        }
        // Every replacement is ASCII or JIS X 0208, so this cannot fail; a failure would be a
        // bug in the table, answered with the mark rather than a panic.
        let bytes = self
            .encode(&writable)
            .unwrap_or_else(|_| b"\x1b$B\x22\x23\x1b(B".to_vec());
        (bytes, substitutions)
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
    fn characters_outside_jis_x_0208_are_substituted_never_written_as_references() {
        let mut encoder = Iso2022JpEncoder::default();
        let (bytes, substitutions) = encoder.encode_substituting("①㈱㎎Ⅳ㍻ ｶﾞｲﾀﾞﾝﾊﾟﾝ 髙橋 😀 ⑳\t〜");
        let (text, _) = decode(&bytes).unwrap();
        assert_eq!(text, "(1)(株)mgIV平成 ガイダンパン 高橋 ■ (20) ～");
        assert!(!bytes.windows(2).any(|pair| pair == b"&#"));
        let replaced: Vec<char> = substitutions.iter().map(|s| s.character).collect();
        assert_eq!(
            replaced,
            vec!['①', '㈱', '㎎', 'Ⅳ', '㍻', '髙', '😀', '⑳', '\t']
        );
        // Every replacement of the table is itself writable.
        for code in (0x2100..0x3400).chain(0xFA00..0xFB00) {
            let Some(character) = char::from_u32(code) else {
                continue;
            };
            let replacement = substitute(character);
            assert!(
                encoder.encode(&replacement).is_ok(),
                "{character} -> {replacement}"
            );
        }
        // Text that fits is written unchanged.
        let (bytes, substitutions) = encoder.encode_substituting("患者　太郎−１〜２\r");
        assert!(substitutions.is_empty());
        assert_eq!(decode(&bytes).unwrap().0, "患者　太郎－１～２\r");
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
