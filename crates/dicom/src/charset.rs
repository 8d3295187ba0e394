//! Text under `SpecificCharacterSet` (0008,0005): the default repertoire, Latin-1, UTF-8, and
//! the Japanese sets with their ISO 2022 code extensions (PS3.5 §6.1.2.5, Annex H) —
//! `ISO 2022 IR 6\ISO 2022 IR 87` (kanji), `ISO 2022 IR 13\ISO 2022 IR 87` (half-width katakana
//! and kanji), `ISO 2022 IR 159` (JIS X 0212), and `ISO_IR 13` alone.
//!
//! Decoding follows the escape sequences byte by byte: `ESC ( B` ASCII, `ESC ( J` JIS X 0201
//! roman, `ESC $ B` (or `ESC $ @`) JIS X 0208, `ESC $ ( D` JIS X 0212 in G0, and `ESC ) I`
//! JIS X 0201 katakana in G1 (`ESC - A` Latin-1's high half, under `ISO 2022 IR 100`). What is
//! not ASCII is turned into EUC-JP (the same code points, another framing) and decoded by
//! `encoding_rs`; JIS X 0201 roman's 0x7E is the overline (‾), Latin-1's high half itself. A value delimiter (`\`, 0x5C) counts only in a
//! single-byte set: a kanji's second byte may be 0x5C, and a reader that splits on every 0x5C
//! (as Orthanc's JSON does) cuts a name in two. At each delimiter and line end the initial set
//! is active again, as the standard requires of writers. What cannot be read becomes 〓.

use encoding_rs::{EUC_JP, ISO_2022_JP};

/// A character-set problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// A defined term this reader does not know.
    #[error("unsupported SpecificCharacterSet {0:?}")]
    Unsupported(String),
    /// A character the chosen sets cannot write.
    #[error("{0:?} cannot be written in {1}")]
    Unencodable(char, String),
}

/// The initial (value 1) repertoire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initial {
    /// The default repertoire (ISO-IR 6).
    Ascii,
    /// JIS X 0201: roman in G0, katakana in G1 (ISO-IR 13).
    Jis0201,
    /// ISO 8859-1.
    Latin1,
    /// UTF-8 (ISO_IR 192).
    Utf8,
}

/// The character sets of a data set, as its (0008,0005) values name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharacterSets {
    initial: Initial,
    /// Code extensions are in use (`ISO 2022 …` terms): escape sequences switch sets.
    extensions: bool,
    /// JIS X 0208 may be invoked (IR 87).
    kanji: bool,
    /// JIS X 0212 may be invoked (IR 159).
    supplementary: bool,
    /// The (0008,0005) values, for messages.
    named: String,
}

impl Default for CharacterSets {
    fn default() -> Self {
        Self {
            initial: Initial::Ascii,
            extensions: false,
            kanji: false,
            supplementary: false,
            named: "the default repertoire".to_owned(),
        }
    }
}

/// G0 sets an escape sequence may invoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    Roman,
    Kanji,
    Supplementary,
}

const ESC: u8 = 0x1b;

impl CharacterSets {
    /// The sets named by the values of (0008,0005); no values is the default repertoire.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, CharsetError> {
        let mut sets = Self::default();
        if values.iter().all(|value| value.as_ref().trim().is_empty()) {
            return Ok(sets);
        }
        sets.named = values
            .iter()
            .map(|value| value.as_ref().trim())
            .collect::<Vec<_>>()
            .join("\\");
        for (index, value) in values.iter().enumerate() {
            let term = value.as_ref().trim();
            match (index, term) {
                (0, "" | "ISO_IR 6") => {}
                (0, "ISO 2022 IR 6") => sets.extensions = true,
                (0, "ISO_IR 13") => sets.initial = Initial::Jis0201,
                (0, "ISO 2022 IR 13") => {
                    sets.initial = Initial::Jis0201;
                    sets.extensions = true;
                }
                (0, "ISO_IR 100") => sets.initial = Initial::Latin1,
                (0, "ISO 2022 IR 100") => {
                    sets.initial = Initial::Latin1;
                    sets.extensions = true;
                }
                (0, "ISO_IR 192") => sets.initial = Initial::Utf8,
                (_, "ISO 2022 IR 87") => {
                    sets.kanji = true;
                    sets.extensions = true;
                }
                (_, "ISO 2022 IR 159") => {
                    sets.supplementary = true;
                    sets.extensions = true;
                }
                (_, "ISO 2022 IR 6" | "ISO 2022 IR 13" | "") => sets.extensions = true,
                _ => return Err(CharsetError::Unsupported(term.to_owned())),
            }
        }
        Ok(sets)
    }

    /// Whether escape sequences may switch sets within a value.
    pub fn has_extensions(&self) -> bool {
        self.extensions
    }

    /// Decodes one or more values (`\`-separated) of a text VR: one string per value. An
    /// unknown escape or byte is replaced by U+FFFD, never fatal.
    pub fn decode_values(&self, bytes: &[u8]) -> Vec<String> {
        match self.initial {
            Initial::Utf8 => String::from_utf8_lossy(bytes)
                .split('\\')
                .map(str::to_owned)
                .collect(),
            // Latin-1 alone; with code extensions its high half stays Latin-1 in G1 while
            // escapes may invoke the Japanese sets in G0.
            Initial::Latin1 if !self.extensions => bytes
                .split(|byte| *byte == b'\\')
                .map(|value| value.iter().map(|byte| char::from(*byte)).collect())
                .collect(),
            _ => self.decode_iso2022(bytes),
        }
    }

    /// Decodes one value (a `\` in it is kept).
    pub fn decode(&self, bytes: &[u8]) -> String {
        self.decode_values(bytes).join("\\")
    }

    fn initial_g0(&self) -> G0 {
        match self.initial {
            Initial::Jis0201 => G0::Roman,
            _ => G0::Ascii,
        }
    }

    fn decode_iso2022(&self, bytes: &[u8]) -> Vec<String> {
        let mut values = Vec::new();
        // The current value: text so far, and the run of EUC-JP bytes (ASCII as itself) not
        // yet decoded into it.
        let mut text = String::new();
        let mut euc: Vec<u8> = Vec::new();
        let flush = |euc: &mut Vec<u8>, text: &mut String| {
            if !euc.is_empty() {
                let (decoded, _) = EUC_JP.decode_without_bom_handling(euc);
                text.push_str(&decoded);
                euc.clear();
            }
        };
        let mut g0 = self.initial_g0();
        let mut g1_katakana = self.initial == Initial::Jis0201;
        let latin1 = self.initial == Initial::Latin1;
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            if byte == ESC {
                let rest = &bytes[index + 1..];
                let (consumed, switch) = match rest {
                    [b'(', b'B', ..] => (3, Some(Ok(G0::Ascii))),
                    [b'(', b'J', ..] => (3, Some(Ok(G0::Roman))),
                    [b'$', b'B', ..] | [b'$', b'@', ..] => (3, Some(Ok(G0::Kanji))),
                    [b'$', b'(', b'D', ..] => (4, Some(Ok(G0::Supplementary))),
                    [b')', b'I', ..] => (3, Some(Err(true))),
                    // Latin-1's high half back in G1.
                    [b'-', b'A', ..] => (3, Some(Err(false))),
                    _ => (1, None),
                };
                match switch {
                    Some(Ok(set)) => g0 = set,
                    Some(Err(katakana)) => g1_katakana = katakana,
                    None => euc.extend_from_slice(&GETA),
                }
                index += consumed;
                continue;
            }
            match g0 {
                G0::Kanji | G0::Supplementary if (0x21..=0x7e).contains(&byte) => {
                    // A pair's second byte is in 0x21..=0x7E too; anything else (an ESC, a
                    // delimiter, the end) is not swallowed: the lone byte becomes 〓.
                    let Some(&second) = bytes.get(index + 1).filter(|b| (0x21..=0x7e).contains(*b))
                    else {
                        euc.extend_from_slice(&GETA);
                        index += 1;
                        continue;
                    };
                    if g0 == G0::Supplementary {
                        euc.push(0x8f);
                    }
                    euc.push(byte | 0x80);
                    euc.push(second | 0x80);
                    index += 2;
                    continue;
                }
                _ => {}
            }
            match byte {
                // A delimiter of values, in a single-byte set (JIS X 0201 roman writes ¥ there,
                // but DICOM keeps 0x5C the delimiter).
                b'\\' if matches!(g0, G0::Ascii | G0::Roman) => {
                    flush(&mut euc, &mut text);
                    values.push(std::mem::take(&mut text));
                    g0 = self.initial_g0();
                    g1_katakana = self.initial == Initial::Jis0201;
                }
                b'\r' | b'\n' | b'\t' | 0x0c => {
                    euc.push(byte);
                    g0 = self.initial_g0();
                    g1_katakana = self.initial == Initial::Jis0201;
                }
                // JIS X 0201 roman's overline where ASCII has the tilde.
                0x7e if g0 == G0::Roman => {
                    flush(&mut euc, &mut text);
                    text.push('\u{203e}');
                }
                0xa1..=0xdf if g1_katakana => {
                    euc.push(0x8e);
                    euc.push(byte);
                }
                0xa0..=0xff if latin1 && !g1_katakana => {
                    flush(&mut euc, &mut text);
                    text.push(char::from(byte));
                }
                0x00..=0x7f => euc.push(byte),
                _ => euc.extend_from_slice(&GETA),
            }
            index += 1;
        }
        flush(&mut euc, &mut text);
        values.push(text);
        values
    }

    /// Encodes text for these sets (the synthetic region writes Japanese names so). Each
    /// component of a person name (between `^` and `=`) and each value ends in the initial set.
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, CharsetError> {
        match (self.initial, self.extensions) {
            (Initial::Utf8, _) => return Ok(text.as_bytes().to_vec()),
            (Initial::Latin1, false) | (Initial::Ascii, false) => {
                return text
                    .chars()
                    .map(|c| {
                        let limit = if self.initial == Initial::Latin1 {
                            0xff
                        } else {
                            0x7f
                        };
                        u8::try_from(u32::from(c))
                            .ok()
                            .filter(|byte| u32::from(*byte) <= limit)
                            .ok_or_else(|| CharsetError::Unencodable(c, self.named.clone()))
                    })
                    .collect();
            }
            _ => {}
        }
        let initial = self.initial_g0();
        let back: &[u8] = if initial == G0::Roman {
            b"\x1b(J"
        } else {
            b"\x1b(B"
        };
        let mut out = Vec::new();
        let mut g0 = initial;
        for c in text.chars() {
            let code = u32::from(c);
            if code < 0x80 {
                if g0 != initial {
                    out.extend_from_slice(back);
                    g0 = initial;
                }
                out.push(code as u8);
            } else if self.initial == Initial::Jis0201 && (0xff61..=0xff9f).contains(&code) {
                out.push((code - 0xff61 + 0xa1) as u8);
            } else if self.kanji {
                let pair = kanji_bytes(c)
                    .ok_or_else(|| CharsetError::Unencodable(c, self.named.clone()))?;
                if g0 != G0::Kanji {
                    out.extend_from_slice(b"\x1b$B");
                    g0 = G0::Kanji;
                }
                out.extend_from_slice(&pair);
            } else {
                return Err(CharsetError::Unencodable(c, self.named.clone()));
            }
        }
        if g0 != initial {
            out.extend_from_slice(back);
        }
        Ok(out)
    }

    /// Encodes a person name's three groups (alphabetic, ideographic, phonetic), each ending
    /// in the initial set before its `=` (PS3.5 §6.2.1, Annex H); trailing empty groups are
    /// left out.
    pub fn encode_person_name(&self, groups: [&str; 3]) -> Result<Vec<u8>, CharsetError> {
        let count = groups
            .iter()
            .rposition(|group| !group.is_empty())
            .map_or(0, |last| last + 1);
        let mut out = Vec::new();
        for (index, group) in groups.iter().take(count).enumerate() {
            if index > 0 {
                out.push(b'=');
            }
            for (part, component) in group.split('^').enumerate() {
                if part > 0 {
                    out.push(b'^');
                }
                out.extend(self.encode(component)?);
            }
        }
        Ok(out)
    }
}

/// The JIS X 0208 row and cell of a character (its two 7-bit bytes), through ISO-2022-JP.
fn kanji_bytes(c: char) -> Option<[u8; 2]> {
    let mut buffer = [0u8; 4];
    let (bytes, _, unmappable) = ISO_2022_JP.encode(c.encode_utf8(&mut buffer));
    if unmappable {
        return None;
    }
    // ESC $ B b1 b2 ESC ( B
    match bytes.as_ref() {
        [ESC, b'$', b'B', first, second, ESC, b'(', b'B'] => Some([*first, *second]),
        _ => None,
    }
}

/// 〓 (geta, JIS X 0208 row 2 cell 14, the JIS mark for a character that cannot be read) in
/// EUC-JP: what an undecodable byte or escape becomes (EUC-JP has no U+FFFD).
const GETA: [u8; 2] = [0xa2, 0xae];

/// A person name's three groups, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonName {
    /// Single-byte characters (romaji).
    pub alphabetic: String,
    /// Ideographic (kanji).
    pub ideographic: String,
    /// Phonetic (kana).
    pub phonetic: String,
}

impl PersonName {
    /// Splits a decoded PN value into its groups.
    pub fn parse(value: &str) -> Self {
        let mut groups = value.splitn(3, '=');
        Self {
            alphabetic: groups.next().unwrap_or_default().to_owned(),
            ideographic: groups.next().unwrap_or_default().to_owned(),
            phonetic: groups.next().unwrap_or_default().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sets(values: &[&str]) -> CharacterSets {
        CharacterSets::parse(values).unwrap()
    }

    #[test]
    fn the_standards_japanese_examples_decode() {
        // PS3.5 H.3.1: ISO 2022 IR 6 \ ISO 2022 IR 87 — "Yamada^Tarou=山田^太郎=やまだ^たろう".
        let kanji = sets(&["", "ISO 2022 IR 87"]);
        let bytes =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(kanji.decode(bytes), "Yamada^Tarou=山田^太郎=やまだ^たろう");
        // H.3.2: ISO 2022 IR 13 \ ISO 2022 IR 87 — half-width katakana in G1.
        let katakana = sets(&["ISO 2022 IR 13", "ISO 2022 IR 87"]);
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(katakana.decode(bytes), "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
        let name = PersonName::parse(&katakana.decode(bytes));
        assert_eq!(name.ideographic, "山田^太郎");
    }

    #[test]
    fn a_kanji_byte_0x5c_is_not_a_value_delimiter() {
        // 閲 is JIS X 0208 0x315C: its second byte is a backslash.
        let kanji = sets(&["", "ISO 2022 IR 87"]);
        let bytes = b"\x1b$B1\\\x1b(B\\second";
        assert_eq!(kanji.decode_values(bytes), ["閲", "second"]);
    }

    #[test]
    fn encoding_writes_what_decoding_reads() {
        for values in [
            &["", "ISO 2022 IR 87"][..],
            &["ISO 2022 IR 13", "ISO 2022 IR 87"],
        ] {
            let sets = sets(values);
            let groups = ["Yamada^Tarou", "山田^太郎", "ﾔﾏﾀﾞ^ﾀﾛｳ"];
            let groups = if sets.initial == Initial::Jis0201 {
                groups
            } else {
                ["Yamada^Tarou", "山田^太郎", "やまだ^たろう"]
            };
            let bytes = sets.encode_person_name(groups).unwrap();
            assert!(bytes.iter().all(|byte| *byte != 0x1b || sets.extensions));
            assert_eq!(sets.decode(&bytes), groups.join("="), "{values:?}");
        }
        assert_eq!(
            sets(&["ISO 2022 IR 6", "ISO 2022 IR 87"])
                .encode_person_name(["Sato", "", ""])
                .unwrap(),
            b"Sato"
        );
        assert!(sets(&[]).encode("山田").is_err());
    }

    #[test]
    fn other_sets_and_unknown_terms() {
        assert_eq!(
            sets(&["ISO_IR 192"]).decode("山田^太郎".as_bytes()),
            "山田^太郎"
        );
        assert_eq!(sets(&["ISO_IR 100"]).decode(b"M\xfcller"), "Müller");
        assert_eq!(sets(&["ISO_IR 13"]).decode(b"\xd4\xcf\xc0\xde"), "ﾔﾏﾀﾞ");
        assert_eq!(
            CharacterSets::parse(&["ISO_IR 144"]),
            Err(CharsetError::Unsupported("ISO_IR 144".into()))
        );
        // Garbage is replaced, never fatal.
        let kanji = sets(&["", "ISO 2022 IR 87"]);
        assert_eq!(kanji.decode(b"\x1b$B;"), "〓");
        assert_eq!(kanji.decode(b"a\x1bZb"), "a〓Zb");
        // An odd kanji run does not swallow the escape back, nor the delimiter after it.
        assert_eq!(
            kanji.decode_values(b"\x1b$B;3E\x1b(B\\next"),
            ["山〓", "next"]
        );
        // JIS X 0212 (IR 159): 丂 is 0x3021 there.
        let supplementary = sets(&["", "ISO 2022 IR 159"]);
        assert_eq!(supplementary.decode(b"\x1b$(D0!\x1b(B"), "丂");
        // Latin-1 with code extensions: its high half, and kanji where escapes invoke them.
        let latin_kanji = sets(&["ISO 2022 IR 100", "ISO 2022 IR 87"]);
        assert_eq!(
            latin_kanji.decode(b"M\xfcller=\x1b$B;3ED\x1b(B"),
            "Müller=山田"
        );
        // JIS X 0201 roman: 0x7E is the overline.
        assert_eq!(sets(&["ISO_IR 13"]).decode(b"a~b"), "a\u{203e}b");
        assert_eq!(sets(&["ISO_IR 6"]).decode(b"a~b"), "a~b");
    }
}
