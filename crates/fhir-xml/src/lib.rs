//! FHIR XML (`application/fhir+xml`) for the REST API: any R4B resource held as JSON is written
//! in the XML format and read back into the same JSON, using an element table generated from the
//! official StructureDefinitions (order, repetition, attributes, primitive kinds). The same
//! table answers which elements `_summary=true` and `_elements` keep.
//!
//! The rules of <https://hl7.org/fhir/R4B/xml.html> that JSON leaves implicit are all here:
//! elements in definition order; primitives as `value` attributes with their `id` and extensions
//! from the JSON `_name` property (parallel arrays with `null` for repeated primitives);
//! `Element.id` and `Extension.url` as attributes; resources wrapped in their element
//! (`contained`, `Bundle.entry.resource`); the narrative `div` as XHTML, verbatim.
//! Data the table does not know is an error, never silently dropped.

mod model;
pub mod narrative;
pub mod primitive;
mod read;
pub mod structure;
mod write;

pub use read::from_xml;
pub use write::to_xml;

/// The namespace of every FHIR element.
pub const FHIR_NS: &str = "http://hl7.org/fhir";

/// Why a resource could not be written as or read from XML.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The embedded element table is malformed (a build defect, caught by the tests).
    #[error("FHIR element table: {0}")]
    Model(String),
    /// A resource has no `resourceType`, or one that R4B does not define.
    #[error("unknown resource type {0:?}")]
    UnknownResourceType(String),
    /// A property or XML element that the type does not define.
    #[error("{type_name} has no element {element:?}")]
    UnknownElement {
        /// The type (or backbone path) being written or read.
        type_name: String,
        /// The offending property or element name.
        element: String,
    },
    /// A value of the wrong JSON shape (an object where a primitive belongs, a number for a string…).
    #[error("{type_name}.{element}: {reason}")]
    Invalid {
        /// The type (or backbone path).
        type_name: String,
        /// The element.
        element: String,
        /// What is wrong.
        reason: String,
    },
    /// A string holds a character that XML 1.0 cannot carry.
    #[error("character U+{0:04X} cannot be written in XML")]
    Character(u32),
    /// The XML is not well-formed or is not FHIR XML.
    #[error("XML at byte {position}: {reason}")]
    Syntax {
        /// Byte offset in the input.
        position: u64,
        /// What is wrong.
        reason: String,
    },
}

impl XmlError {
    fn invalid(type_name: &str, element: &str, reason: impl Into<String>) -> Self {
        XmlError::Invalid {
            type_name: type_name.to_string(),
            element: element.to_string(),
            reason: reason.into(),
        }
    }
}

/// Characters XML 1.0 can carry (`Char` production).
pub(crate) fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether the top-level JSON property `name` of `resource_type` belongs to the `_summary=true`
/// view (R4B `isSummary`); `false` for unknown types and properties.
pub fn is_summary_element(resource_type: &str, name: &str) -> Result<bool, XmlError> {
    Ok(top_level(resource_type, name)?.is_some_and(|e| e.summary))
}

/// Whether the top-level JSON property `name` of `resource_type` is mandatory (min ≥ 1), which
/// `_elements` keeps whether asked for or not.
pub fn is_mandatory_element(resource_type: &str, name: &str) -> Result<bool, XmlError> {
    Ok(top_level(resource_type, name)?.is_some_and(|e| e.required))
}

/// The element of a resource type behind a top-level JSON property (`_name` included).
fn top_level(resource_type: &str, name: &str) -> Result<Option<&'static model::Element>, XmlError> {
    let name = name.strip_prefix('_').unwrap_or(name);
    Ok(model::Model::get()?
        .resource(resource_type)
        .and_then(|def| def.element(name)))
}

/// Names of the concrete R4B resource types the element table defines, sorted.
pub fn resource_types() -> Result<Vec<&'static str>, XmlError> {
    Ok(model::Model::get()?.resource_types())
}
