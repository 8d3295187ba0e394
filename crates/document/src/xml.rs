//! A small element tree read from untrusted XML, safely: no DTD (a `<!DOCTYPE` is refused, so
//! no external entity is ever resolved and no entity can expand), only the five predefined
//! entities and character references, UTF-8 only (a byte-order mark is skipped), namespace
//! prefixes dropped (`cda:section` is `section`), and bounded depth and size.

use quick_xml::{Reader, events::Event};

use crate::DocumentError;

/// Elements nested deeper than this are refused (a CDA body is a few levels deep).
const MAX_DEPTH: usize = 128;

/// Elements, attributes and text nodes in one document at most (a CDA has some thousands).
const MAX_NODES: usize = 500_000;

/// Attributes of one element at most (a CDA element has a handful).
const MAX_ATTRIBUTES: usize = 64;

/// An element: its local name, attributes (local names) and children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name (any namespace prefix removed).
    pub name: String,
    /// Attributes by local name, in document order (`xsi:type` is `type`).
    pub attributes: Vec<(String, String)>,
    /// Child elements and text.
    pub children: Vec<Node>,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data (entities resolved, CDATA included).
    Text(String),
}

impl Element {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Child elements named `name`.
    pub fn children_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter_map(move |node| match node {
            Node::Element(element) if element.name == name => Some(element),
            _ => None,
        })
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children_named(name).next()
    }

    /// The element at `path` (child names, each the first of its name).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter()
            .try_fold(self, |element, name| element.child(name))
    }

    /// All text below this element, in order, with runs of white space made one space.
    pub fn text(&self) -> String {
        let mut text = String::new();
        self.collect_text(&mut text);
        collapse(&text)
    }

    fn collect_text(&self, into: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(text) => into.push_str(text),
                Node::Element(element) => element.collect_text(into),
            }
        }
    }
}

/// `text` with leading and trailing white space removed and inner runs made one space.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn local(name: &[u8]) -> Result<String, DocumentError> {
    let local = match name.iter().rposition(|&b| b == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    };
    String::from_utf8(local.to_vec()).map_err(|_| DocumentError::xml("a name is not UTF-8"))
}

/// Reads `bytes` as one XML document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, DocumentError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError::xml("the file is empty"));
    }
    let text = std::str::from_utf8(bytes).map_err(|error| {
        DocumentError::xml(format!(
            "not UTF-8 at byte {}: documents are read as UTF-8",
            error.valid_up_to()
        ))
    })?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut nodes = 0usize;
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|error| match error {
            // Every syntax error is the input ending inside markup.
            quick_xml::Error::Syntax(_) => {
                DocumentError::xml(format!("the document ends early, truncated: {error}"))
            }
            _ => DocumentError::xml(format!("{error} (near byte {position})")),
        })?;
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(DocumentError::xml(format!(
                "more than {MAX_NODES} elements and texts"
            )));
        }
        match event {
            Event::DocType(_) => {
                return Err(DocumentError::xml(
                    "a DOCTYPE is not accepted (no DTD, no entity is read or expanded)",
                ));
            }
            Event::Decl(declaration) => {
                if let Some(Ok(encoding)) = declaration.encoding() {
                    let encoding = String::from_utf8_lossy(&encoding).to_ascii_uppercase();
                    if encoding != "UTF-8" && encoding != "UTF8" {
                        return Err(DocumentError::xml(format!(
                            "declared encoding {encoding}: documents are read as UTF-8"
                        )));
                    }
                }
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DocumentError::xml(format!(
                        "elements nested deeper than {MAX_DEPTH}"
                    )));
                }
                let element = element_of(&start)?;
                nodes += element.attributes.len();
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = element_of(&start)?;
                nodes += element.attributes.len();
                attach(&mut stack, &mut root, element)?;
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| DocumentError::xml("an end tag without its start"))?;
                attach(&mut stack, &mut root, element)?;
            }
            Event::Text(text) => {
                let text = text
                    .decode()
                    .map_err(|error| DocumentError::xml(error.to_string()))?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(data) => {
                let text = data
                    .decode()
                    .map_err(|error| DocumentError::xml(error.to_string()))?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => character.to_string(),
                    Ok(None) => {
                        let name = reference
                            .decode()
                            .map_err(|error| DocumentError::xml(error.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                DocumentError::xml(format!("undeclared entity &{name};"))
                            })?
                            .to_owned()
                    }
                    Err(error) => return Err(DocumentError::xml(error.to_string())),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(DocumentError::xml(format!(
            "the document ends inside <{}>: truncated",
            stack.last().map_or("", |element| element.name.as_str())
        )));
    }
    root.ok_or_else(|| DocumentError::xml("no root element"))
}

fn element_of(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, DocumentError> {
    let mut attributes = Vec::new();
    // Duplicates are not looked for (quick-xml's check is quadratic in the attributes): the
    // first of a name is the one read.
    for attribute in start.attributes().with_checks(false) {
        if attributes.len() >= MAX_ATTRIBUTES {
            return Err(DocumentError::xml(format!(
                "more than {MAX_ATTRIBUTES} attributes on <{}>",
                String::from_utf8_lossy(start.name().as_ref())
            )));
        }
        let attribute = attribute.map_err(|error| DocumentError::xml(error.to_string()))?;
        let key = attribute.key.as_ref();
        // Namespace declarations are not data.
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let value = attribute
            .unescape_value()
            .map_err(|error| DocumentError::xml(error.to_string()))?;
        attributes.push((local(key)?, value.into_owned()));
    }
    Ok(Element {
        name: local(start.name().as_ref())?,
        attributes,
        children: Vec::new(),
    })
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), DocumentError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None if root.is_none() => *root = Some(element),
        None => return Err(DocumentError::xml("more than one root element")),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), DocumentError> {
    match stack.last_mut() {
        Some(parent) => {
            // Adjacent texts (a text, a reference, a text) are one node.
            if let Some(Node::Text(previous)) = parent.children.last_mut() {
                previous.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(DocumentError::xml("text outside the root element")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prefixes_bom_entities_and_cdata_are_read() {
        let xml = "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<cda:ClinicalDocument xmlns:cda=\"urn:hl7-org:v3\" xmlns:xsi=\"x\"><cda:title>経過 &amp; &#x8A18;録</cda:title><cda:value xsi:type=\"PQ\" unit=\"&lt;\"/><text><![CDATA[a<b]]></text></cda:ClinicalDocument>";
        let root = parse(xml.as_bytes()).unwrap();
        assert_eq!(root.name, "ClinicalDocument");
        assert_eq!(root.child("title").unwrap().text(), "経過 & 記録");
        let value = root.child("value").unwrap();
        assert_eq!(value.attr("type"), Some("PQ"));
        assert_eq!(value.attr("unit"), Some("<"));
        assert_eq!(root.child("text").unwrap().text(), "a<b");
    }

    #[test]
    fn hostile_and_broken_xml_is_refused_with_its_reason() {
        let refused = |xml: &[u8]| parse(xml).unwrap_err().to_string();
        let xxe = b"<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><d>&x;</d>";
        assert!(refused(xxe).contains("DOCTYPE"), "{}", refused(xxe));
        let laughs = b"<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><l>&b;</l>";
        assert!(refused(laughs).contains("DOCTYPE"));
        assert!(refused(b"<d>&nbsp;</d>").contains("undeclared entity &nbsp;"));
        assert!(refused(b"<d><e>text").contains("truncated"));
        assert!(refused(b"<d><e attr=\"x\"").contains("truncated"));
        assert!(refused(b"").contains("empty"));
        assert!(refused(b"  \n").contains("empty"));
        assert!(refused(b"<d></e>").contains("near byte"));
        assert!(refused(b"<d/><e/>").contains("more than one root"));
        assert!(
            refused(b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><d/>").contains("SHIFT_JIS")
        );
        assert!(refused(b"<d>\x82\xa0</d>").contains("not UTF-8"));
        let crowded = format!(
            "<d {}/>",
            (0..100)
                .map(|n| format!("a{n}=\"x\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(refused(crowded.as_bytes()).contains("attributes"));
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(refused(deep.as_bytes()).contains("deeper"));
    }
}
