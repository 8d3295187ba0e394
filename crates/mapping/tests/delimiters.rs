//! Kanji whose JIS bytes equal HL7 delimiters (日 `|`, 入 `~`, 本 `\`, 五 `^`, 愛 `&`), escapes and
//! the decoder-variant minus survive decode → parse → map intact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{map_bytes, tables};
use tsunagi_hl7v2::charset::Iso2022JpEncoder;

#[test]
fn delimiter_bytes_inside_kanji_and_escapes() {
    let text = [
        "MSH|^~\\&|EHR|0610100010|GW|TSUNAGI|20240401101010||ADT^A08^ADT_A01|X1|P|2.5||||||~ISO IR87||ISO 2022-1994",
        "PID|0001||1234567||日本^五入愛^^^^^L^I~ニホン^イツイリアイ^^^^^L^P||19600101|F|||^^^^997-0035^JPN^H^山形県鶴岡市馬場町１\u{2212}２\u{2212}３ A\\S\\B\\T\\C\\F\\D\\E\\E",
    ]
    .join("\r");
    let bytes = Iso2022JpEncoder::default().encode(&text).unwrap();
    for delimiter in [b'|', b'^', b'~', b'\\', b'&'] {
        // Each delimiter byte occurs inside a two-byte JIS character somewhere in the file.
        let inside = bytes.windows(2).any(|pair| {
            pair[0] >= 0x21 && pair[0] <= 0x7e && pair[1] == delimiter && pair[0] != b'|'
        });
        assert!(inside, "{}", delimiter as char);
    }
    let mapped = map_bytes(
        "0610100010",
        "1234567_-_ADT-00_999999999999999_20240401101010123_-_1",
        &bytes,
        &tables("0610100010"),
    );
    let patient = &mapped["resources"][0];
    assert_eq!(patient["name"][0]["text"], "日本 五入愛");
    assert_eq!(patient["name"][0]["family"], "日本");
    assert_eq!(patient["name"][1]["text"], "ニホン イツイリアイ");
    // U+2212 is written as JIS 0x215D and read back with the pinned mapping as U+FF0D.
    assert_eq!(
        patient["address"][0]["text"],
        "山形県鶴岡市馬場町１－２－３ A^B&C|D\\E"
    );
}
