//! Documents of a hospital's record that are not HL7 v2 messages — SS-MIX2 extended storage's
//! layout ([`layout`]), CDA R2 documents ([`cda`]) and their narrative as XHTML
//! ([`narrative`]) — read from bytes and names only: no IO, no clock, no store.
//!
//! Untrusted XML is read by [`xml::parse`], which refuses any DTD, so no external entity is
//! ever fetched and no entity can expand.

pub mod cda;
pub mod layout;
pub mod mml;
pub mod narrative;
pub mod xml;

/// Why a document or a folder could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// A folder name that does not follow the extended-storage layout.
    #[error("{0}")]
    Layout(String),
    /// Not well-formed, or not acceptable, XML.
    #[error("XML: {0}")]
    Xml(String),
    /// Well-formed XML that is not a CDA document as expected.
    #[error("CDA: {0}")]
    Cda(String),
    /// Well-formed XML that is not an MML instance as expected.
    #[error("MML: {0}")]
    Mml(String),
}

impl DocumentError {
    pub(crate) fn layout(text: impl Into<String>) -> Self {
        Self::Layout(text.into())
    }

    pub(crate) fn xml(text: impl Into<String>) -> Self {
        Self::Xml(text.into())
    }

    pub(crate) fn cda(text: impl Into<String>) -> Self {
        Self::Cda(text.into())
    }
}
