//! The narrative `div` of a resource others post: one well-formed XHTML element, as FHIR
//! requires of `Narrative.div` (txt-1: basic formatting elements, links and images only; no
//! script, no event handlers, no active links), holding only what XML can carry. The writer
//! copies it verbatim into FHIR XML and portals show it to carers of other facilities, so a
//! narrative that broke either would break reads for everyone.

use quick_xml::{
    Reader,
    events::{BytesStart, Event},
};

/// The XHTML namespace the `div` must declare.
const XHTML_NS: &[u8] = b"http://www.w3.org/1999/xhtml";

/// The elements FHIR narrative allows (txt-1, as the FHIR validator lists them).
const ELEMENTS: &[&[u8]] = &[
    b"a",
    b"abbr",
    b"acronym",
    b"address",
    b"area",
    b"b",
    b"bdo",
    b"big",
    b"blockquote",
    b"br",
    b"caption",
    b"cite",
    b"code",
    b"col",
    b"colgroup",
    b"dd",
    b"dfn",
    b"div",
    b"dl",
    b"dt",
    b"em",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"hr",
    b"i",
    b"img",
    b"kbd",
    b"li",
    b"map",
    b"ol",
    b"p",
    b"pre",
    b"q",
    b"samp",
    b"small",
    b"span",
    b"strong",
    b"sub",
    b"sup",
    b"table",
    b"tbody",
    b"td",
    b"tfoot",
    b"th",
    b"thead",
    b"tr",
    b"tt",
    b"ul",
    b"var",
];

/// URL schemes a link or an image may not use (they run code, or smuggle content in).
const ACTIVE_SCHEMES: &[&str] = &["javascript:", "vbscript:", "data:"];

/// What is wrong with a narrative `div`, if anything.
pub fn problem(div: &str) -> Option<String> {
    if let Some(bad) = div.chars().find(|&c| !crate::xml_char(c)) {
        return Some(format!(
            "the narrative holds U+{:04X}, a character XML cannot carry",
            u32::from(bad)
        ));
    }
    let mut reader = Reader::from_str(div);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => return Some(format!("the narrative is not well-formed XML: {error}")),
        };
        match event {
            Event::Start(start) => {
                if let Some(reason) = opened(&start, depth, &mut roots) {
                    return Some(reason);
                }
                depth += 1;
            }
            Event::Empty(start) => {
                if let Some(reason) = opened(&start, depth, &mut roots) {
                    return Some(reason);
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(text) => {
                // Not even whitespace: XML would not keep it, so the narrative would change.
                if depth == 0 && !text.is_empty() {
                    return Some("text outside the narrative's <div>".to_owned());
                }
            }
            Event::GeneralRef(reference) => {
                if depth == 0 {
                    return Some("text outside the narrative's <div>".to_owned());
                }
                if let Some(reason) = reference_problem(reference.as_ref()) {
                    return Some(reason);
                }
            }
            Event::CData(_) | Event::Comment(_) => {}
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                return Some(
                    "the narrative may not hold a declaration, DTD or processing instruction"
                        .to_owned(),
                );
            }
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Some("the narrative's <div> is not closed".to_owned());
    }
    if roots != 1 {
        return Some("the narrative must be one <div> element".to_owned());
    }
    None
}

/// An element at `depth`: the root must be the one XHTML `div`; every element must be one the
/// narrative allows.
fn opened(start: &BytesStart<'_>, depth: usize, roots: &mut usize) -> Option<String> {
    if depth == 0 {
        *roots += 1;
        if start.name().as_ref() != b"div" || *roots > 1 {
            return Some("the narrative must be one <div> element".to_owned());
        }
        if !declares_xhtml(start) {
            return Some(
                "the narrative's <div> must declare xmlns=\"http://www.w3.org/1999/xhtml\""
                    .to_owned(),
            );
        }
    }
    element_problem(start)
}

/// Whether an element declares the XHTML namespace as its default namespace.
fn declares_xhtml(start: &BytesStart<'_>) -> bool {
    start
        .attributes()
        .flatten()
        .any(|attribute| attribute.key.as_ref() == b"xmlns" && attribute.value.as_ref() == XHTML_NS)
}

/// An element FHIR narrative does not allow, an attribute that is malformed, an event handler,
/// a value naming an entity XML does not define, or a link that runs code.
fn element_problem(start: &BytesStart<'_>) -> Option<String> {
    let name = start.name();
    if !ELEMENTS.contains(&name.as_ref()) {
        return Some(format!(
            "the narrative may not hold <{}> (FHIR allows basic formatting, tables, lists, links and images)",
            String::from_utf8_lossy(name.as_ref())
        ));
    }
    for attribute in start.attributes().with_checks(true) {
        let attribute = match attribute {
            Ok(attribute) => attribute,
            Err(error) => return Some(format!("a malformed attribute in the narrative: {error}")),
        };
        let key = String::from_utf8_lossy(attribute.key.as_ref()).to_ascii_lowercase();
        if key.starts_with("on") {
            return Some(format!(
                "the narrative may not hold the event handler {key}"
            ));
        }
        if key == "xmlns" && attribute.value.as_ref() != XHTML_NS {
            return Some("the narrative may hold XHTML only".to_owned());
        }
        if key.starts_with("xmlns:") {
            return Some("the narrative may hold XHTML only".to_owned());
        }
        let value = match attribute.unescape_value() {
            Ok(value) => value,
            Err(error) => {
                return Some(format!(
                    "the narrative's attribute {key} is not well-formed: {error}"
                ));
            }
        };
        if let Some(bad) = value.chars().find(|&c| !crate::xml_char(c)) {
            return Some(format!(
                "the narrative's attribute {key} holds U+{:04X}, which XML cannot carry",
                u32::from(bad)
            ));
        }
        if matches!(
            key.as_str(),
            "href" | "src" | "longdesc" | "usemap" | "cite"
        ) {
            let target: String = value
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect::<String>()
                .to_ascii_lowercase();
            if ACTIVE_SCHEMES
                .iter()
                .any(|scheme| target.starts_with(scheme))
            {
                return Some(format!(
                    "the narrative's {key} may not use {}",
                    target.split(':').next().unwrap_or_default()
                ));
            }
        }
    }
    None
}

/// An entity reference XML does not define, or a character reference to a character XML
/// cannot carry.
fn reference_problem(name: &[u8]) -> Option<String> {
    if matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos") {
        return None;
    }
    let text = String::from_utf8_lossy(name);
    let Some(number) = text.strip_prefix('#') else {
        return Some(format!(
            "the narrative uses the entity &{text};, which XML does not define"
        ));
    };
    let code = match number
        .strip_prefix('x')
        .or_else(|| number.strip_prefix('X'))
    {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => number.parse::<u32>().ok(),
    };
    match code.and_then(char::from_u32) {
        Some(c) if crate::xml_char(c) => None,
        _ => Some(format!(
            "the narrative's character reference &{text}; names no character XML can carry"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OPEN: &str = "<div xmlns=\"http://www.w3.org/1999/xhtml\">";

    fn div(inner: &str) -> String {
        format!("{OPEN}{inner}</div>")
    }

    #[test]
    fn narratives_must_be_one_well_formed_div() {
        for bad in [
            OPEN.to_owned(),
            format!("{}<div></div>", div("")),
            "<p>not a div</p>".to_owned(),
            format!("{}</text><evil/>", div("a")),
            div("&nbsp;"),
            "<!DOCTYPE x><div/>".to_owned(),
            "text<div/>".to_owned(),
            // Found by fuzz/run json_body: whitespace outside the div does not survive XML.
            format!("{} ", div("x")),
            // Found by fuzz/run json_body: a div outside XHTML cannot be read back from XML.
            "<div xmlns=\"ht(p://www.w3.org/1999/xhtml\"><p>x</p></div>".to_owned(),
            "<div><p>x</p></div>".to_owned(),
            div("\u{10}"),
        ] {
            assert!(problem(&bad).is_some(), "{bad}");
        }
        assert_eq!(problem(&div("a &lt; b &#x3042;<br/>")), None);
        assert_eq!(problem(&format!("{OPEN}</div>")), None);
        assert_eq!(
            problem("<div xmlns=\"http://www.w3.org/1999/xhtml\"/>"),
            None
        );
    }

    #[test]
    fn scripts_handlers_active_links_and_bad_references_are_refused() {
        for bad in [
            div("<script>alert(1)</script>"),
            div("<iframe src=\"https://evil.example\"/>"),
            div("<p onclick=\"steal()\">x</p>"),
            div("<img src=\"x\" ONERROR=\"steal()\"/>"),
            div("<a href=\"javascript:steal()\">x</a>"),
            div("<a href=\" jav&#x09;ascript:steal()\">x</a>"),
            div("<img src=\"data:text/html;base64,PHNjcmlwdD4=\"/>"),
            div("<p title=\"&nbsp;\">x</p>"),
            div("<p a=b>x</p>"),
            div("&#0;"),
            div("&#xD800;"),
            div("<p title=\"&#1;\">x</p>"),
            div("<svg:svg xmlns:svg=\"http://www.w3.org/2000/svg\"/>"),
            div("<p xmlns=\"http://evil.example\">x</p>"),
        ] {
            assert!(problem(&bad).is_some(), "{bad}");
        }
        for good in [
            div("<p>経過良好 <b>重要</b></p><table><tr><td colspan=\"2\">x</td></tr></table>"),
            div(
                "<a href=\"https://example.jp/a?b=1&amp;c=2\">link</a><img src=\"#c1\" alt=\"x\"/>",
            ),
            div("<span style=\"color: red\" class=\"x\" id=\"y\">x</span>"),
        ] {
            assert_eq!(problem(&good), None, "{good}");
        }
    }
}
