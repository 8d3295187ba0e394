//! Reading one document record — the versions of one (patient, 診療日, data type, 特定キー) —
//! into what the store keeps: each version's bytes once (by SHA-256), its Binary and its
//! DocumentReference, the versions chained (`replaces`, `superseded`).
//!
//! A version is refused, with its file and reason, when its main file is missing, empty, over
//! the size limit, XML that is not an acceptable CDA document (a DOCTYPE, an undeclared entity,
//! truncated, not UTF-8…), or a CDA naming another patient than its folder. A refused version
//! changes nothing of what is stored of it.

use sha2::{Digest, Sha256};
use tsunagi_adapter::Rejection;
use tsunagi_core::{FacilityId, ids::logical_id};
use tsunagi_document::{
    cda::CdaDocument,
    layout::{Condition, ContentFolder, DataTypeFolder},
};
use tsunagi_mapping::{
    SourceRecord,
    document::{DocumentSource, binary_id, binary_resource, document_id},
};
use tsunagi_store::{Operation, ResourceWrite};

use crate::walk::FoundVersion;

/// What reading a record produced.
#[derive(Debug, Default)]
pub(crate) struct RecordOutcome {
    /// Blobs and the record's resources.
    pub(crate) operations: Vec<Operation>,
    /// Resources written.
    pub(crate) resources: usize,
    /// Document bytes held by `operations`.
    pub(crate) bytes: u64,
    /// Versions read.
    pub(crate) read: u64,
    /// Which versions were refused (by index), with why.
    pub(crate) refused: Vec<(usize, Rejection)>,
    /// (source, warning).
    pub(crate) warnings: Vec<(String, String)>,
    /// Some version could not be read now: the patient is pulled again next time.
    pub(crate) retry: bool,
    /// Which versions could not be read now (not remembered as refused).
    pub(crate) unreadable: Vec<usize>,
}

/// The media type of a document, told from its first bytes.
pub(crate) fn content_type(bytes: &[u8]) -> &'static str {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let text = &text[start..];
    if bytes.starts_with(b"%PDF-") {
        "application/pdf"
    } else if text.starts_with(b"<") {
        "text/xml"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        "image/jpeg"
    } else if text.starts_with(b"MSH|") {
        "x-application/hl7-v2+er7"
    } else {
        "application/octet-stream"
    }
}

/// One version as read from disk, before mapping.
struct Accepted {
    index: usize,
    bytes: Vec<u8>,
    sha256: [u8; 32],
    content_type: &'static str,
    cda: Option<CdaDocument>,
    file_name: String,
}

/// Reads the versions of one record (oldest first); `skip[i]` marks a version refused before
/// and unchanged since, which is neither read nor reported again; `stored[i]` one that was
/// read and stored before. When a stored version is refused now (its file went bad), the record
/// is left as stored: a bad file changes nothing.
pub(crate) fn read_record(
    facility: &FacilityId,
    data_type: &DataTypeFolder,
    record_key: &str,
    versions: &[(ContentFolder, &FoundVersion)],
    skip: &[bool],
    stored: &[bool],
    max_bytes: u64,
) -> RecordOutcome {
    let mut outcome = RecordOutcome::default();
    let mut accepted = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (index, (content, found)) in versions.iter().enumerate() {
        if skip.get(index).copied().unwrap_or(false) {
            continue;
        }
        let refused = |reason: String| Rejection {
            source: found.path.display().to_string(),
            reason,
        };
        // Two versions at one 発生日時 would be one resource twice in the record.
        if !ids.insert(document_id(facility.as_str(), data_type, content)) {
            outcome.refused.push((
                index,
                refused(format!(
                    "another version of this document has the same 発生日時 {}",
                    content.occurred
                )),
            ));
            continue;
        }
        match read_version(facility.as_str(), content, found, max_bytes) {
            Ok(version) => {
                outcome.read += 1;
                accepted.push(Accepted { index, ..version });
            }
            Err(Refusal::Content(reason)) => outcome.refused.push((index, refused(reason))),
            Err(Refusal::Io(reason)) => {
                outcome.retry = true;
                outcome.unreadable.push(index);
                outcome.refused.push((
                    index,
                    refused(format!(
                        "cannot be read now, read again on the next pull: {reason}"
                    )),
                ));
            }
        }
    }
    let lost_stored = outcome
        .refused
        .iter()
        .any(|(index, _)| stored.get(*index).copied().unwrap_or(false));
    if accepted.is_empty() || lost_stored {
        return outcome;
    }
    let patient = logical_id(&[facility.as_str(), &versions[0].0.patient_id]);
    let mut resources = Vec::new();
    let mut blobs = Vec::new();
    let last = accepted.len() - 1;
    for (position, version) in accepted.iter().enumerate() {
        let (content, found) = &versions[version.index];
        let replaces = position
            .checked_sub(1)
            .map(|previous| &versions[accepted[previous].index].0);
        let source = DocumentSource {
            facility,
            data_type,
            content,
            file_name: &version.file_name,
            size: version.bytes.len() as u64,
            sha256: &version.sha256,
            content_type: if version.cda.is_some() {
                "application/hl7-v3+xml"
            } else {
                version.content_type
            },
            cda: version.cda.as_ref(),
            replaces,
            superseded: position < last,
        };
        let mapped = match tsunagi_mapping::map(SourceRecord::Document(source)) {
            Ok(mapped) => mapped,
            Err(error) => {
                outcome.refused.push((
                    version.index,
                    Rejection {
                        source: found.path.display().to_string(),
                        reason: error.to_string(),
                    },
                ));
                continue;
            }
        };
        for warning in mapped.warnings {
            outcome
                .warnings
                .push((found.path.display().to_string(), warning));
        }
        for resource in mapped.resources {
            match ResourceWrite::from_json(resource.resource_type, &resource.id, &resource.json) {
                Ok(write) => resources.push(write),
                Err(error) => outcome.refused.push((
                    version.index,
                    Rejection {
                        source: found.path.display().to_string(),
                        reason: error.to_string(),
                    },
                )),
            }
        }
        // A withdrawn version (flag 0: written in error) keeps its DocumentReference, marked so,
        // and its bytes are not served.
        if content.condition == Condition::Withdrawn {
            continue;
        }
        // The original bytes: a Binary naming them by hash, in the patient's compartment (its
        // tag says which, so a reindex recomputes it from the content), read by whoever may
        // read the patient.
        let facility_code = facility.as_str();
        let id = binary_id(facility_code, data_type, content);
        let binary = binary_resource(
            &id,
            &patient,
            &version.sha256,
            source.content_type,
            Some(&document_id(facility_code, data_type, content)),
        );
        match ResourceWrite::from_json("Binary", &id, &binary) {
            Ok(write) => {
                // Its compartment is read from its tag, as a reindex reads it.
                debug_assert_eq!(write.compartment.as_deref(), Some(patient.as_str()));
                resources.push(write);
                blobs.push((version.sha256, version.index));
            }
            Err(error) => outcome.refused.push((
                version.index,
                Rejection {
                    source: found.path.display().to_string(),
                    reason: error.to_string(),
                },
            )),
        }
    }
    for (sha256, index) in blobs {
        if let Some(version) = accepted.iter_mut().find(|version| version.index == index) {
            let bytes = std::mem::take(&mut version.bytes);
            outcome.bytes += bytes.len() as u64;
            outcome
                .operations
                .push(Operation::PutBlob { sha256, bytes });
        }
    }
    outcome.resources = resources.len();
    outcome.operations.push(Operation::ReplaceSource {
        source_key: format!("ssmix2-extended:{}:{record_key}", facility.as_str()),
        facility: facility.as_str().to_owned(),
        resources,
    });
    outcome
}

use tsunagi_adapter::storage::{Refusal, read_regular};

fn read_version(
    facility: &str,
    content: &ContentFolder,
    found: &FoundVersion,
    max_bytes: u64,
) -> Result<Accepted, Refusal> {
    let main = found.main_file().map_err(Refusal::Content)?;
    let refuse = |why: String| Refusal::Content(format!("{}: {why}", main.name));
    if main.size == 0 {
        return Err(refuse("the main file is empty (0 bytes)".to_owned()));
    }
    if main.size > max_bytes {
        return Err(refuse(format!(
            "{} bytes, over the limit of {max_bytes} (max_document_bytes)",
            main.size
        )));
    }
    let bytes = match read_regular(&found.path.join(&main.name), max_bytes) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(refuse("grew over the size limit while read".to_owned())),
        Err(Refusal::Content(why)) => return Err(refuse(why)),
        Err(Refusal::Io(why)) => return Err(Refusal::Io(format!("{}: {why}", main.name))),
    };
    if bytes.is_empty() {
        return Err(refuse("the main file is empty (0 bytes)".to_owned()));
    }
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let content_type = content_type(&bytes);
    let cda = if content_type == "text/xml" {
        let cda = CdaDocument::parse(&bytes).map_err(|error| refuse(error.to_string()))?;
        if !cda.names_patient(&content.patient_id, facility) {
            return Err(refuse(format!(
                "the CDA's patient is not the folder's patient {}",
                content.patient_id
            )));
        }
        Some(cda)
    } else {
        None
    };
    Ok(Accepted {
        index: 0,
        bytes,
        sha256,
        content_type,
        cda,
        file_name: main.name.clone(),
    })
}
