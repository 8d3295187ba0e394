//! Full-text index values (`_text`, `_content`): what words a resource holds, in the one
//! normalised form (`tsunagi_core::normalize::search_key`) both sides of a match meet in.
//!
//! - `narrative`: the text of `text.div`, tags dropped, entities decoded, block elements as
//!   line breaks (for a document, the rendered body of the document itself);
//! - `other`: every other human-readable string of the resource (titles, descriptions,
//!   displays, notes, a report's conclusion), one per line. Identifiers, codes, references,
//!   URLs, base64 data and ids are not words and are left out.
//!
//! Japanese has no spaces between words, so the stores match a query term as a substring
//! (SQLite FTS5 `trigram`, PostgreSQL `pg_trgm`), never by word.

use serde_json::Value;
use tsunagi_core::normalize::search_key;

/// The longest text kept per column (bytes, cut at a character boundary): a narrative larger
/// than this is indexed by its first part. Documents' narratives are capped at 1 MiB by the
/// mapping already; this bounds what a client writing through the API could make the index hold.
pub const MAX_TEXT_BYTES: usize = 2 * 1024 * 1024;

/// Elements whose own string values are not words (a `code` string is a code; a `code`
/// CodeableConcept holds words in its `text` and displays, and is read).
const NOT_WORDS: &[&str] = &[
    "id",
    "reference",
    "system",
    "url",
    "data",
    "hash",
    "version",
    "code",
    "value",
    "contentType",
    "language",
    "status",
    "div",
    "identifier",
    "masterIdentifier",
    "fullUrl",
    "resourceType",
    "size",
    "creation",
    "date",
    "start",
    "end",
    "issued",
    "effectiveDateTime",
    "performedDateTime",
    "authoredOn",
    "sent",
    "received",
    "recorded",
    "lastModified",
    "sequence",
    "policy",
];

/// The narrative and the other words of `resource`, normalised; `None` when it has neither.
pub fn text_value(resource: &Value) -> Option<(String, String)> {
    let narrative = resource["text"]["div"]
        .as_str()
        .map(xhtml_text)
        .map(|text| normalised(&text))
        .unwrap_or_default();
    let mut other = String::new();
    if let Value::Object(map) = resource {
        for (key, value) in map {
            // The narrative is the other column; `meta` is the server's, and a contained
            // resource is another resource.
            if !matches!(key.as_str(), "text" | "meta" | "contained") {
                collect_words(key, value, &mut other);
            }
        }
    }
    let other = normalised(&other);
    (!narrative.is_empty() || !other.is_empty()).then_some((narrative, other))
}

fn collect_words(key: &str, value: &Value, out: &mut String) {
    match value {
        Value::String(text)
            if !text.is_empty() && out.len() < MAX_TEXT_BYTES && !NOT_WORDS.contains(&key) =>
        {
            out.push_str(text);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_words(key, item, out)),
        Value::Object(map) => {
            for (key, value) in map {
                collect_words(key, value, out);
            }
        }
        _ => {}
    }
}

/// [`search_key`] per line (line breaks kept, so words of two lines never run together), other
/// control characters dropped (PostgreSQL's text holds no NUL), cut to [`MAX_TEXT_BYTES`].
fn normalised(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_BYTES));
    for line in text.lines() {
        let line: String = line.chars().filter(|c| !c.is_control()).collect();
        let key = search_key(&line);
        if key.is_empty() {
            continue;
        }
        if out.len() + key.len() + 1 > MAX_TEXT_BYTES {
            let room = MAX_TEXT_BYTES.saturating_sub(out.len() + 1);
            let mut cut = room.min(key.len());
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&key[..cut]);
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&key);
    }
    out
}

/// Elements after which text continues on a new line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "tr",
    "td",
    "th",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "caption",
];

/// The text of an XHTML fragment: tags and comments dropped, CDATA kept as text, block
/// elements as line breaks, the predefined and numeric character references decoded (anything
/// else is kept as written). One pass: linear in the input, whatever it holds.
pub fn xhtml_text(xhtml: &str) -> String {
    let mut out = String::with_capacity(xhtml.len());
    let mut rest = xhtml;
    while let Some(position) = rest.find(['<', '&']) {
        out.push_str(&rest[..position]);
        rest = &rest[position..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>").unwrap_or(cdata.len());
            out.push_str(&cdata[..end]);
            rest = cdata.get(end + 3..).unwrap_or("");
            continue;
        }
        if rest.starts_with('<') {
            let Some(end) = rest.find('>') else {
                return out;
            };
            let tag = rest[1..end].trim_start_matches('/');
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
                .collect();
            let local = name.rsplit(':').next().unwrap_or_default();
            if BLOCKS.contains(&local.to_ascii_lowercase().as_str()) {
                out.push('\n');
            }
            rest = &rest[end + 1..];
        } else {
            // A reference is short: look for its `;` only that far (never to the end).
            let window = &rest.as_bytes()[..rest.len().min(12)];
            let end = window.iter().position(|b| *b == b';');
            let decoded = end.and_then(|end| decode_reference(&rest[1..end]));
            match (end, decoded) {
                (Some(end), Some(ch)) => {
                    out.push(ch);
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_reference(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            // Only characters XML may carry (no NUL, no other C0 control but tab and breaks).
            char::from_u32(code).filter(|ch| !ch.is_control() || matches!(ch, '\t' | '\n' | '\r'))
        }
    }
}

/// The terms of one `_content`/`_text` value: normalised, split at white space (every term must
/// be found), empty when the value holds no word.
pub fn query_terms(value: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for term in search_key(value).split(' ').filter(|term| !term.is_empty()) {
        // A repeated word tests nothing more.
        if !terms.iter().any(|known| known == term) {
            terms.push(term.to_owned());
        }
    }
    terms
}

/// The fewest characters a term must have to be looked up in a trigram index: shorter terms are
/// matched by scanning the texts other filters (a patient) have already narrowed down to.
pub const TRIGRAM: usize = 3;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_narrative_is_its_text_and_other_words_leave_codes_and_references_out() {
        let resource = json!({
            "resourceType": "DocumentReference",
            "id": "d1",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><h2>経過</h2><p>仙骨部に褥瘡&amp;発赤&#x3042;。</p><ul><li>ＡＢＣ</li><li>ｶﾞｰｾﾞ</li></ul></div>"},
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "経過記録"}]},
            "subject": {"reference": "Patient/p1", "display": "山田"},
            "description": "退院時 サマリー",
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1", "title": "所見.pdf", "data": "AAAA"}}]
        });
        let (narrative, other) = text_value(&resource).expect("text");
        // Hiragana is folded to katakana, as every search key is.
        assert_eq!(narrative, "経過\n仙骨部ニ褥瘡&発赤ア。\nabc\nガーゼ");
        assert_eq!(other, "所見.pdf\n退院時 サマリー\n山田\n経過記録");
        assert_eq!(
            text_value(&json!({"resourceType": "Procedure", "id": "x"})),
            None
        );
    }

    #[test]
    fn comments_cdata_and_hostile_runs_are_read_in_one_pass() {
        assert_eq!(xhtml_text("a<!-- x > y -->b<![CDATA[<c&d>]]>e"), "ab<c&d>e");
        assert_eq!(xhtml_text("&#0;&#x1;x"), "&#0;&#x1;x");
        // A megabyte of ampersands without a semicolon: linear, not quadratic.
        let hostile = "&".repeat(1 << 20);
        let started = std::time::Instant::now();
        assert_eq!(xhtml_text(&hostile).len(), 1 << 20);
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn unknown_or_broken_references_are_kept_as_written() {
        assert_eq!(
            xhtml_text("a &bogus; b &#xZZ; c & d"),
            "a &bogus; b &#xZZ; c & d"
        );
        assert_eq!(xhtml_text("x<br/>y<b>z</b>"), "x\nyz");
        assert_eq!(xhtml_text("cut <p"), "cut ");
    }

    #[test]
    fn query_terms_are_normalised_and_split_at_white_space() {
        assert_eq!(query_terms(" 褥瘡　ｶﾞｰｾﾞ  ABC "), ["褥瘡", "ガーゼ", "abc"]);
        assert!(query_terms("  ").is_empty());
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "あ".repeat(MAX_TEXT_BYTES);
        let cut = normalised(&long);
        assert!(cut.len() <= MAX_TEXT_BYTES);
        assert!(cut.chars().all(|c| c == 'ア'));
    }
}
