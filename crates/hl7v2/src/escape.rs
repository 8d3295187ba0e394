//! HL7 v2 escape sequences, resolved after splitting.
//!
//! `\F\ \S\ \T\ \R\ \E\` give back the delimiters, `\.br\` and `\X0D\`/`\X0A\` become a line
//! break, `\Xhh..\` is hexadecimal text (read as UTF-8, or ASCII), `\H\`/`\N\` (highlighting)
//! and `\C..\`/`\M..\` (character-set switches already handled by decoding) are dropped.
//! Anything else — an unknown escape or a lone escape character — is kept as literal text, so
//! no input is ever lost.

use std::borrow::Cow;

use crate::message::Delimiters;

/// Resolves escape sequences in one already-split value.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let escape = delimiters.escape;
    if !raw.contains(escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + escape.len_utf8()..];
        let Some(end) = after.find(escape) else {
            // Lone escape character: literal.
            out.push(escape);
            rest = after;
            continue;
        };
        let body = &after[..end];
        if let Some(replacement) = resolve(body, delimiters) {
            out.push_str(&replacement);
            rest = &after[end + escape.len_utf8()..];
        } else {
            // Unknown escape: keep the escape character and go on after it.
            out.push(escape);
            rest = after;
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn resolve(body: &str, delimiters: &Delimiters) -> Option<String> {
    let text = match body {
        "F" => delimiters.field.to_string(),
        "S" => delimiters.component.to_string(),
        "T" => delimiters.subcomponent.to_string(),
        "R" => delimiters.repetition.to_string(),
        "E" => delimiters.escape.to_string(),
        ".br" => "\n".to_owned(),
        "H" | "N" => String::new(),
        _ if body.starts_with(".sp") || body.starts_with(".in") || body.starts_with(".ti") => {
            "\n".to_owned()
        }
        _ if body.starts_with('X') => hex_text(&body[1..])?,
        _ if (body.starts_with('C') || body.starts_with('M'))
            && body.len() > 1
            && body[1..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            String::new()
        }
        _ => return None,
    };
    Some(text)
}

fn hex_text(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for index in (0..hex.len()).step_by(2) {
        bytes.push(u8::from_str_radix(&hex[index..index + 2], 16).ok()?);
    }
    let text = String::from_utf8(bytes).ok()?;
    Some(text.replace("\r\n", "\n").replace('\r', "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescaped(raw: &str) -> String {
        unescape(raw, &Delimiters::default()).into_owned()
    }

    #[test]
    fn standard_escapes() {
        assert_eq!(unescaped(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
        assert_eq!(unescaped(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(unescaped(r"\X0D\x\X0A\"), "\nx\n");
        assert_eq!(unescaped(r"\X41\\H\bold\N\"), "Abold");
        assert_eq!(unescaped(r"\XE6BCA2\"), "漢");
    }

    #[test]
    fn unknown_and_broken_escapes_stay_literal() {
        assert_eq!(unescaped(r"a\Q\b"), r"a\Q\b");
        assert_eq!(unescaped(r"trailing\"), r"trailing\");
        assert_eq!(unescaped(r"\X4\"), r"\X4\");
        assert_eq!(unescaped(r"C:\path"), r"C:\path");
        assert_eq!(unescaped("plain"), "plain");
    }
}
