//! The header of a CDA R2 document as the JAHIS 共通編 (JAHIS 15-003) lays it out: the
//! document's id, code, title and time; the patient; authors and their organisation; the
//! custodian; the service event (a progress note's ENC, a discharge summary's ACCM with its
//! admission and discharge); the encompassing encounter; the document it replaces. The body is
//! kept as its element for [`crate::narrative`].

use crate::{
    DocumentError,
    xml::{self, Element, collapse},
};

/// An `II`: root OID and extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    /// The OID (or UUID) of the id's namespace.
    pub root: String,
    /// The id within it, when there is one.
    pub extension: Option<String>,
}

/// A `CD`/`CE`: code, code system and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// The code.
    pub code: String,
    /// The code system's OID.
    pub system: Option<String>,
    /// Its display name.
    pub display: Option<String>,
}

/// The patient of `recordTarget/patientRole`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    /// Its ids (the hospital's patient id among them).
    pub ids: Vec<InstanceId>,
    /// The name in kanji (`use="IDE"`, else the first name).
    pub name: Option<String>,
    /// The name in kana (`use="SYL"`).
    pub kana: Option<String>,
    /// `birthTime`.
    pub birth: Option<String>,
    /// `administrativeGenderCode` (`M`, `F`, `UN`).
    pub gender: Option<String>,
}

/// An organisation (author's, custodian's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Organization {
    /// Its id (a facility code as extension).
    pub id: Option<InstanceId>,
    /// Its name.
    pub name: Option<String>,
}

/// One `author`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Author {
    /// When it authored (`time`).
    pub time: Option<String>,
    /// `assignedAuthor/id`.
    pub id: Option<InstanceId>,
    /// `assignedPerson/name`.
    pub name: Option<String>,
    /// `representedOrganization`.
    pub organization: Option<Organization>,
}

/// A period of `low`/`high` HL7 time stamps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interval {
    /// Start.
    pub low: Option<String>,
    /// End.
    pub high: Option<String>,
}

/// `documentationOf/serviceEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEvent {
    /// `ENC` (a progress note), `ACCM` (a stay: a discharge summary)…
    pub class_code: Option<String>,
    /// Its ids: for an imaging report, the Study Instance UID (as `root`, DICOM PS3.20).
    pub ids: Vec<InstanceId>,
    /// Its code: for an imaging report, the modality or procedure.
    pub code: Option<Code>,
    /// Its time: a note's recording, a stay's admission and discharge.
    pub time: Interval,
}

/// `componentOf/encompassingEncounter`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encounter {
    /// Its id (a visit number as extension).
    pub id: Option<InstanceId>,
    /// Its time.
    pub time: Interval,
}

/// The body of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `structuredBody`: sections with narrative blocks.
    Structured(Element),
    /// `nonXMLBody`: an embedded or referenced file of this media type.
    NonXml(Option<String>),
    /// No body.
    Empty,
}

/// A CDA document: its header and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdaDocument {
    /// `ClinicalDocument/id`.
    pub id: Option<InstanceId>,
    /// `ClinicalDocument/code`: LOINC, or JMIX `MD0020730` for a 診療情報提供書.
    pub code: Option<Code>,
    /// `title`.
    pub title: Option<String>,
    /// `effectiveTime`: when the document was made.
    pub effective_time: Option<String>,
    /// `setId` and `versionNumber`.
    pub set_id: Option<InstanceId>,
    /// `versionNumber`.
    pub version: Option<String>,
    /// The patient.
    pub patient: Patient,
    /// The authors.
    pub authors: Vec<Author>,
    /// The custodian organisation.
    pub custodian: Option<Organization>,
    /// The service events (`documentationOf`, 0..*): an imaging report of several studies
    /// has one per study.
    pub service_events: Vec<ServiceEvent>,
    /// The encompassing encounter.
    pub encounter: Option<Encounter>,
    /// `inFulfillmentOf/order/id`: the orders the document answers (an imaging report's
    /// accession number and placer order number).
    pub orders: Vec<InstanceId>,
    /// Documents this one replaces (`relatedDocument typeCode="RPLC"`).
    pub replaces: Vec<InstanceId>,
    /// The body.
    pub body: Body,
}

/// JP Core's namespace of hospitals' patient ids: this root, then the 10-digit code.
const PATIENT_ID_NAMESPACE: &str = "1.2.392.100495.20.3.51.1";

fn instance_id(element: &Element) -> Option<InstanceId> {
    let root = element.attr("root")?.trim();
    if root.is_empty() {
        return None;
    }
    Some(InstanceId {
        root: root.to_owned(),
        extension: element
            .attr("extension")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
    })
}

fn value_of(element: Option<&Element>) -> Option<String> {
    element
        .and_then(|e| e.attr("value"))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn text_of(element: Option<&Element>) -> Option<String> {
    element.map(Element::text).filter(|t| !t.is_empty())
}

/// A person's name: family and given parts joined by a space, or the name's text.
fn name_of(name: &Element) -> Option<String> {
    let parts: Vec<String> = ["family", "given"]
        .iter()
        .flat_map(|part| name.children_named(part).map(Element::text))
        .filter(|t| !t.is_empty())
        .collect();
    if parts.is_empty() {
        text_of(Some(name))
    } else {
        Some(parts.join(" "))
    }
}

fn interval(element: Option<&Element>) -> Interval {
    let Some(element) = element else {
        return Interval::default();
    };
    let single = value_of(Some(element));
    Interval {
        low: value_of(element.child("low")).or_else(|| single.clone()),
        high: value_of(element.child("high")).or(single),
    }
}

fn code_of(code: &Element) -> Option<Code> {
    Some(Code {
        code: code.attr("code")?.trim().to_owned(),
        system: code.attr("codeSystem").map(str::to_owned),
        display: code.attr("displayName").map(collapse),
    })
}

fn organization(element: &Element) -> Organization {
    Organization {
        id: element.children_named("id").find_map(instance_id),
        name: text_of(element.child("name")),
    }
}

impl CdaDocument {
    /// The first service event: what a note or a stay documents.
    pub fn service_event(&self) -> Option<&ServiceEvent> {
        self.service_events.first()
    }

    /// Reads a CDA R2 document from its bytes (see [`xml::parse`] for what is refused).
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let root = xml::parse(bytes)?;
        if root.name != "ClinicalDocument" {
            return Err(DocumentError::cda(format!(
                "the root element is <{}>, not <ClinicalDocument>",
                root.name
            )));
        }
        let role = root.at(&["recordTarget", "patientRole"]).ok_or_else(|| {
            DocumentError::cda("no recordTarget/patientRole: the document names no patient")
        })?;
        let person = role.child("patient");
        let names: Vec<&Element> = person
            .map(|p| p.children_named("name").collect())
            .unwrap_or_default();
        let named = |wanted: &str| {
            names
                .iter()
                .find(|name| {
                    name.attr("use")
                        .is_some_and(|u| u.split(' ').any(|u| u == wanted))
                })
                .and_then(|name| name_of(name))
        };
        let patient = Patient {
            ids: role.children_named("id").filter_map(instance_id).collect(),
            name: named("IDE").or_else(|| names.first().and_then(|name| name_of(name))),
            kana: named("SYL"),
            birth: value_of(person.and_then(|p| p.child("birthTime"))),
            gender: person
                .and_then(|p| p.child("administrativeGenderCode"))
                .and_then(|g| g.attr("code"))
                .map(str::to_owned),
        };
        let authors = root
            .children_named("author")
            .map(|author| {
                let assigned = author.child("assignedAuthor");
                Author {
                    time: value_of(author.child("time")),
                    id: assigned.and_then(|a| a.children_named("id").find_map(instance_id)),
                    name: assigned
                        .and_then(|a| a.at(&["assignedPerson", "name"]))
                        .and_then(name_of),
                    organization: assigned
                        .and_then(|a| a.child("representedOrganization"))
                        .map(organization),
                }
            })
            .collect();
        let custodian = root
            .at(&[
                "custodian",
                "assignedCustodian",
                "representedCustodianOrganization",
            ])
            .map(organization);
        let service_events = root
            .children_named("documentationOf")
            .filter_map(|documentation| documentation.child("serviceEvent"))
            .map(|event| ServiceEvent {
                class_code: event.attr("classCode").map(str::to_owned),
                ids: event.children_named("id").filter_map(instance_id).collect(),
                code: event.child("code").and_then(code_of),
                time: interval(event.child("effectiveTime")),
            })
            .collect();
        let orders = root
            .children_named("inFulfillmentOf")
            .filter_map(|fulfilled| fulfilled.child("order"))
            .flat_map(|order| order.children_named("id"))
            .filter_map(instance_id)
            .collect();
        let encounter = root
            .at(&["componentOf", "encompassingEncounter"])
            .map(|encounter| Encounter {
                id: encounter.children_named("id").find_map(instance_id),
                time: interval(encounter.child("effectiveTime")),
            });
        let replaces = root
            .children_named("relatedDocument")
            .filter(|related| related.attr("typeCode") == Some("RPLC"))
            .filter_map(|related| related.at(&["parentDocument", "id"]))
            .filter_map(instance_id)
            .collect();
        let component = root.child("component");
        let body = match (
            component.and_then(|c| c.child("structuredBody")),
            component.and_then(|c| c.child("nonXMLBody")),
        ) {
            (Some(structured), _) => Body::Structured(structured.clone()),
            (None, Some(other)) => Body::NonXml(
                other
                    .child("text")
                    .and_then(|text| text.attr("mediaType"))
                    .map(str::to_owned),
            ),
            (None, None) => Body::Empty,
        };
        Ok(Self {
            id: root.child("id").and_then(instance_id),
            code: root.child("code").and_then(code_of),
            title: text_of(root.child("title")),
            effective_time: value_of(root.child("effectiveTime")),
            set_id: root.child("setId").and_then(instance_id),
            version: value_of(root.child("versionNumber")),
            patient,
            authors,
            custodian,
            service_events,
            encounter,
            orders,
            replaces,
            body,
        })
    }

    /// Whether patient `folder_id` of `facility` (the folder's patient id) is among the
    /// document's patient ids: the same, or the same once leading zeros are set aside. An id
    /// in another hospital's JP Core patient-id namespace (`1.2.392.100495.20.3.51.1<code>`) is
    /// another hospital's patient, whatever its number; ids under other roots (the hospital's
    /// own OIDs) are compared by number.
    pub fn names_patient(&self, folder_id: &str, facility: &str) -> bool {
        let ours = format!("{PATIENT_ID_NAMESPACE}{facility}");
        let bare = |id: &str| id.trim_start_matches('0').to_owned();
        self.patient
            .ids
            .iter()
            .filter(|id| !id.root.starts_with(PATIENT_ID_NAMESPACE) || id.root == ours)
            .filter_map(|id| id.extension.as_deref())
            .any(|id| id == folder_id || bare(id) == bare(folder_id))
    }
}
