//! A CDA body's narrative as readable XHTML, within what a FHIR narrative may hold (txt-1):
//! each section a heading and its text; paragraphs, lists, tables, line breaks, sub- and
//! superscripts kept; links, styles, images and anything else reduced to their text. Every
//! character of the document is escaped, so nothing in it can become markup.

use crate::xml::{Element, Node};

/// The XHTML `div` of a `structuredBody`, or `None` when it holds no text at all.
pub fn render(body: &Element) -> Option<String> {
    let mut out = String::from("<div xmlns=\"http://www.w3.org/1999/xhtml\">");
    let before = out.len();
    sections(body, 2, &mut out);
    if out.len() == before {
        return None;
    }
    out.push_str("</div>");
    Some(out)
}

/// The sections of `parent` (a body or a section), headed at level `level`.
fn sections(parent: &Element, level: usize, out: &mut String) {
    for component in parent.children_named("component") {
        for section in component.children_named("section") {
            let mut inner = String::new();
            if let Some(title) = section.child("title").map(Element::text)
                && !title.is_empty()
            {
                let h = level.min(6);
                inner.push_str(&format!("<h{h}>"));
                escape(&title, &mut inner);
                inner.push_str(&format!("</h{h}>"));
            }
            if let Some(text) = section.child("text") {
                block(text, &mut inner);
            }
            sections(section, level + 1, &mut inner);
            if !inner.is_empty() {
                out.push_str("<div>");
                out.push_str(&inner);
                out.push_str("</div>");
            }
        }
    }
}

/// A narrative block: block elements as they are; loose text and inline elements in a `p`.
fn block(text: &Element, out: &mut String) {
    let mut pending = String::new();
    for node in &text.children {
        match node {
            Node::Element(element) if is_block(&element.name) => {
                flush(&mut pending, out);
                element_to(element, out, false);
            }
            Node::Element(element) => element_to(element, &mut pending, true),
            Node::Text(text) => text_to(text, &mut pending),
        }
    }
    flush(&mut pending, out);
}

fn is_block(name: &str) -> bool {
    matches!(name, "paragraph" | "list" | "table")
}

fn flush(pending: &mut String, out: &mut String) {
    let trimmed = pending.trim();
    if !trimmed.is_empty() && trimmed != "<br/>" {
        out.push_str("<p>");
        out.push_str(trimmed);
        out.push_str("</p>");
    }
    pending.clear();
}

/// Text as it reads: the writer's line breaks inside the text kept as `br`, every other run of
/// white space one space, and no space added where the document has none (Japanese runs on).
fn text_to(text: &str, out: &mut String) {
    let lines: Vec<&str> = text.split('\n').collect();
    let first = lines.iter().position(|line| !line.trim().is_empty());
    let last = lines.iter().rposition(|line| !line.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        // White space only: it separates what is around it.
        if !text.is_empty() {
            space(out);
        }
        return;
    };
    if text.starts_with(char::is_whitespace) {
        space(out);
    }
    for (index, line) in lines[first..=last].iter().enumerate() {
        if index > 0 {
            out.push_str("<br/>");
        }
        escape(&line.split_whitespace().collect::<Vec<_>>().join(" "), out);
    }
    if text.ends_with(char::is_whitespace) {
        space(out);
    }
}

fn space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') && !out.ends_with("<br/>") {
        out.push(' ');
    }
}

/// The children of `element`; `inline`: inside a `p`, a caption, a sub- or superscript, where
/// HTML allows no paragraph, list or table (they are written as lines there).
fn children_to(element: &Element, out: &mut String, inline: bool) {
    for node in &element.children {
        match node {
            Node::Element(child) => element_to(child, out, inline),
            Node::Text(text) => text_to(text, out),
        }
    }
}

fn wrapped(tag: &str, element: &Element, out: &mut String) {
    let mut inner = String::new();
    children_to(
        element,
        &mut inner,
        matches!(tag, "p" | "caption" | "sub" | "sup"),
    );
    if inner.trim().is_empty() {
        return;
    }
    out.push_str(&format!("<{tag}>"));
    out.push_str(inner.trim());
    out.push_str(&format!("</{tag}>"));
}

/// A block written as lines inside a `p` (or a caption…): each paragraph, list item or table
/// row its own line.
fn as_lines(element: &Element, out: &mut String) {
    match element.name.as_str() {
        "list" => {
            for item in element.children_named("item") {
                children_to(item, out, true);
                out.push_str("<br/>");
            }
        }
        "table" => {
            for part in &element.children {
                let Node::Element(part) = part else { continue };
                let rows: Vec<&Element> = if part.name == "tr" {
                    vec![part]
                } else {
                    part.children_named("tr").collect()
                };
                for row in rows {
                    for cell in &row.children {
                        if let Node::Element(cell) = cell {
                            children_to(cell, out, true);
                            out.push(' ');
                        }
                    }
                    out.push_str("<br/>");
                }
            }
        }
        _ => {
            children_to(element, out, true);
            out.push_str("<br/>");
        }
    }
}

fn element_to(element: &Element, out: &mut String, inline: bool) {
    if inline && is_block(&element.name) {
        as_lines(element, out);
        return;
    }
    match element.name.as_str() {
        "paragraph" => wrapped("p", element, out),
        "list" => {
            let tag = if element.attr("listType") == Some("ordered") {
                "ol"
            } else {
                "ul"
            };
            if let Some(caption) = element.child("caption") {
                wrapped("p", caption, out);
            }
            let mut items = String::new();
            for item in element.children_named("item") {
                wrapped("li", item, &mut items);
            }
            if !items.is_empty() {
                out.push_str(&format!("<{tag}>{items}</{tag}>"));
            }
        }
        "table" => {
            let mut inner = String::new();
            if let Some(caption) = element.child("caption") {
                wrapped("caption", caption, &mut inner);
            }
            for part in &element.children {
                if let Node::Element(part) = part {
                    match part.name.as_str() {
                        "thead" | "tbody" | "tfoot" => {
                            let mut rows = String::new();
                            for row in part.children_named("tr") {
                                table_row(row, &mut rows);
                            }
                            if !rows.is_empty() {
                                inner.push_str(&format!("<{0}>{rows}</{0}>", part.name));
                            }
                        }
                        "tr" => table_row(part, &mut inner),
                        _ => {}
                    }
                }
            }
            if !inner.is_empty() {
                out.push_str(&format!("<table>{inner}</table>"));
            }
        }
        "br" => out.push_str("<br/>"),
        "sub" | "sup" => wrapped(&element.name.clone(), element, out),
        // Captions of lists and tables are placed by their owner; images and note references
        // have no text to show.
        "caption" | "renderMultiMedia" | "footnoteRef" | "col" | "colgroup" => {}
        // content, linkHtml, footnote and anything unknown: their text.
        _ => children_to(element, out, inline),
    }
}

fn table_row(row: &Element, out: &mut String) {
    let mut cells = String::new();
    for cell in &row.children {
        if let Node::Element(cell) = cell
            && (cell.name == "th" || cell.name == "td")
        {
            let mut inner = String::new();
            children_to(cell, &mut inner, false);
            let mut spans = String::new();
            for span in ["colspan", "rowspan"] {
                if let Some(value) = cell.attr(span)
                    && value.len() <= 3
                    && value.bytes().all(|b| b.is_ascii_digit())
                {
                    spans.push_str(&format!(" {span}=\"{value}\""));
                }
            }
            cells.push_str(&format!("<{0}{spans}>{1}</{0}>", cell.name, inner.trim()));
        }
    }
    if !cells.is_empty() {
        out.push_str(&format!("<tr>{cells}</tr>"));
    }
}

/// Appends `text` escaped for XHTML content and attribute values (control characters other
/// than tab dropped: they are not XML).
pub fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Control characters other than tab are not XML.
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rendered(text: &str) -> String {
        let body = crate::xml::parse(
            format!("<structuredBody><component><section><text>{text}</text></section></component></structuredBody>").as_bytes(),
        )
        .unwrap();
        render(&body).unwrap()
    }

    #[test]
    fn no_paragraph_list_or_table_is_put_inside_a_paragraph() {
        let div = rendered(
            "<paragraph>経過<list><item>発熱</item><item>咳</item></list><paragraph>次回</paragraph></paragraph>",
        );
        assert_eq!(
            div,
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><div><p>経過発熱<br/>咳<br/>次回<br/></p></div></div>"
        );
        // In a list item or a table cell, blocks are allowed and kept.
        let div = rendered("<list><item><paragraph>a</paragraph></item></list>");
        assert!(div.contains("<li><p>a</p></li>"), "{div}");
        let div = rendered("<content>x<table><tr><td>1</td><td>2</td></tr></table></content>");
        assert!(!div.contains("<table>"), "{div}");
        assert!(div.contains("1 2"), "{div}");
    }
}
