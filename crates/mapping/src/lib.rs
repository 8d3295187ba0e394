//! SS-MIX2 HL7 v2.5 messages to JP Core FHIR resources.
//!
//! [`map`] takes one [`SourceRecord`] — an HL7 v2 message ([`map_message`]: the parsed message
//! and the [`SourceContext`] that identifies the record it came from: facility, the file name's
//! 7 fields, code tables), a lab company's result ([`map_lab_report`]) or a document of extended
//! storage ([`document`]) — and returns the resources the record holds *now*, with deterministic ids, JP Core profiles and provenance. It never looks at
//! other records and does no IO; applying the result to a store (upsert, delete what the record
//! no longer holds) is the adapter's job.
//!
//! One module per family of data types:
//! [`adt`] (ADT-00 patient, coverage, body measurements, AL1 allergies; ADT-12…52 encounters;
//! ADT-61 allergies), [`problems`] (PPR-01), [`medication`] (OMP-01/02/11/12), [`lab`] (OML-11),
//! [`orders`] (OML-01, OMG-01/02/03, OMD), [`imaging`] (OMG-11/12/13).

pub mod adt;
mod common;
pub mod dicom;
pub mod document;
mod encounter;
pub mod imaging;
pub mod lab;
pub mod medication;
pub mod mml;
pub mod orders;
pub mod problems;
pub mod pushed;
pub mod report;
pub mod stay;
pub mod study;
pub mod tables;

use std::fmt;

use serde_json::Value;
use tsunagi_core::FacilityId;
use tsunagi_hl7v2::{Message, ParseError};

pub use tables::{CodeTables, TableError};

/// SS-MIX2 data types (データ種別) that carry clinical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// 患者基本情報.
    Adt00,
    /// 担当医の変更 (not mapped: administrative).
    Adt01,
    /// 外来診察の受付.
    Adt12,
    /// 入院予定.
    Adt21,
    /// 入院実施.
    Adt22,
    /// 外出泊実施.
    Adt31,
    /// 外出泊帰院実施.
    Adt32,
    /// 転科・転棟予定.
    Adt41,
    /// 転科・転棟実施.
    Adt42,
    /// 退院予定.
    Adt51,
    /// 退院実施.
    Adt52,
    /// アレルギー情報.
    Adt61,
    /// 病名(歴)情報.
    Ppr01,
    /// 食事オーダ.
    Omd,
    /// 処方オーダ.
    Omp01,
    /// 注射オーダ.
    Omp02,
    /// 処方実施通知.
    Omp11,
    /// 注射実施通知.
    Omp12,
    /// 検体検査オーダ.
    Oml01,
    /// 検体検査結果通知.
    Oml11,
    /// 放射線検査オーダ.
    Omg01,
    /// 内視鏡検査オーダ.
    Omg02,
    /// 生理検査オーダ.
    Omg03,
    /// 放射線検査の実施通知.
    Omg11,
    /// 内視鏡検査の実施通知.
    Omg12,
    /// 生理検査結果通知.
    Omg13,
}

impl DataType {
    /// Every data type, in guideline order.
    pub const ALL: [DataType; 26] = [
        Self::Adt00,
        Self::Adt01,
        Self::Adt12,
        Self::Adt21,
        Self::Adt22,
        Self::Adt31,
        Self::Adt32,
        Self::Adt41,
        Self::Adt42,
        Self::Adt51,
        Self::Adt52,
        Self::Adt61,
        Self::Ppr01,
        Self::Omd,
        Self::Omp01,
        Self::Omp02,
        Self::Omp11,
        Self::Omp12,
        Self::Oml01,
        Self::Oml11,
        Self::Omg01,
        Self::Omg02,
        Self::Omg03,
        Self::Omg11,
        Self::Omg12,
        Self::Omg13,
    ];

    /// The folder / file-name spelling, e.g. `OMP-01`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Adt00 => "ADT-00",
            Self::Adt01 => "ADT-01",
            Self::Adt12 => "ADT-12",
            Self::Adt21 => "ADT-21",
            Self::Adt22 => "ADT-22",
            Self::Adt31 => "ADT-31",
            Self::Adt32 => "ADT-32",
            Self::Adt41 => "ADT-41",
            Self::Adt42 => "ADT-42",
            Self::Adt51 => "ADT-51",
            Self::Adt52 => "ADT-52",
            Self::Adt61 => "ADT-61",
            Self::Ppr01 => "PPR-01",
            Self::Omd => "OMD",
            Self::Omp01 => "OMP-01",
            Self::Omp02 => "OMP-02",
            Self::Omp11 => "OMP-11",
            Self::Omp12 => "OMP-12",
            Self::Oml01 => "OML-01",
            Self::Oml11 => "OML-11",
            Self::Omg01 => "OMG-01",
            Self::Omg02 => "OMG-02",
            Self::Omg03 => "OMG-03",
            Self::Omg11 => "OMG-11",
            Self::Omg12 => "OMG-12",
            Self::Omg13 => "OMG-13",
        }
    }

    /// ADT-12…52: the events of a visit, which contribute to its one Encounter.
    pub fn is_encounter_event(self) -> bool {
        matches!(
            self,
            Self::Adt12
                | Self::Adt21
                | Self::Adt22
                | Self::Adt31
                | Self::Adt32
                | Self::Adt41
                | Self::Adt42
                | Self::Adt51
                | Self::Adt52
        )
    }

    /// Parses the folder / file-name spelling.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|data_type| data_type.code() == code)
    }

    /// The HL7 message types (code, triggers) this data type may hold: the regular event first,
    /// then its cancel/delete event(s).
    pub fn message_types(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Adt00 => ("ADT", &["A08", "A23"]),
            Self::Adt01 => ("ADT", &["A54", "A55"]),
            Self::Adt12 => ("ADT", &["A04", "A11"]),
            Self::Adt21 => ("ADT", &["A14", "A27"]),
            Self::Adt22 => ("ADT", &["A01", "A11"]),
            Self::Adt31 => ("ADT", &["A21", "A52"]),
            Self::Adt32 => ("ADT", &["A22", "A53"]),
            Self::Adt41 => ("ADT", &["A15", "A26"]),
            Self::Adt42 => ("ADT", &["A02", "A12"]),
            Self::Adt51 => ("ADT", &["A16", "A25"]),
            Self::Adt52 => ("ADT", &["A03", "A13"]),
            Self::Adt61 => ("ADT", &["A60"]),
            Self::Ppr01 => ("PPR", &["ZD1"]),
            Self::Omd => ("OMD", &["O03"]),
            Self::Omp01 | Self::Omp02 => ("RDE", &["O11"]),
            Self::Omp11 | Self::Omp12 => ("RAS", &["O17"]),
            Self::Oml01 => ("OML", &["O33"]),
            Self::Oml11 => ("OUL", &["R22"]),
            Self::Omg01 | Self::Omg02 | Self::Omg03 => ("OMG", &["O19"]),
            Self::Omg11 | Self::Omg12 => ("OMI", &["Z23"]),
            Self::Omg13 => ("ORU", &["R01"]),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a message came from: the record it belongs to and the tables to map it with.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext<'a> {
    /// The sending facility.
    pub facility: &'a FacilityId,
    /// Patient id from the file name (identity comes from the file name, not PID-3).
    pub patient_id: &'a str,
    /// 診療日 from the file name: `YYYYMMDD` or `-`.
    pub care_date: &'a str,
    /// データ種別 from the file name.
    pub data_type: DataType,
    /// オーダNo from the file name (free text; 13, 15 or 22 characters seen).
    pub order_number: &'a str,
    /// Where the message came from, for provenance (`meta.source`).
    pub origin: Origin<'a>,
    /// Code tables of this facility.
    pub tables: &'a CodeTables,
}

/// How a message reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A file of SS-MIX2 storage, by name: `urn:tsunagi:ssmix2:<facility>:<file>#<MSH-10>`.
    File(&'a str),
    /// Pushed over a channel (`mllp`, `http`) by the facility `sender` (the record's own
    /// facility, or the lab company reporting for it): `urn:tsunagi:<channel>:<sender>#<MSH-10>`.
    Pushed {
        /// `mllp` or `http`.
        channel: &'a str,
        /// The sending facility's code.
        sender: &'a str,
    },
}

/// One produced resource.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedResource {
    /// FHIR resource type.
    pub resource_type: &'static str,
    /// Deterministic logical id.
    pub id: String,
    /// The resource (without `meta.versionId`/`meta.lastUpdated`, which the store owns).
    pub json: Value,
}

/// A record's part in a resource that several records make together — an inpatient stay's
/// one Encounter, from its admission, transfers and discharge. The store keeps each record's
/// part; the resource is [`fold`]ed from all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The type of the resource made together.
    pub resource_type: &'static str,
    /// Its deterministic logical id.
    pub id: String,
    /// This record's part (for an Encounter, see [`stay`]).
    pub part: Value,
}

/// The resource the parts of a [`Contribution`] target make together; `None` when nothing is
/// left of it (every part withdrawn), or for a type nothing is folded into.
pub fn fold(resource_type: &str, parts: &[Value]) -> Option<Value> {
    match resource_type {
        "Encounter" => stay::fold(parts),
        "ImagingStudy" => study::fold(parts),
        _ => None,
    }
}

/// Source-key prefix of a PACS's studies (`dicomweb:<facility>:<Study Instance UID>`): they
/// contribute to the ImagingStudy an OMG-11 notice also names.
pub const PACS_SOURCE: &str = "dicomweb:";

/// How the records this crate maps fold their parts (for [`tsunagi_store::contributions`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Folds;

impl tsunagi_store::contributions::Fold for Folds {
    fn may_contribute(&self, source_key: &str) -> bool {
        source_key.starts_with(PACS_SOURCE)
            || source_key.split(':').any(|segment| {
                DataType::parse(segment).is_some_and(|data_type| {
                    data_type.is_encounter_event()
                        || matches!(data_type, DataType::Omg11 | DataType::Omg12)
                })
            })
    }

    fn fold(&self, resource_type: &str, _id: &str, parts: &[Value]) -> Option<Value> {
        fold(resource_type, parts)
    }
}

/// The parts a mapped record declares, for its facility (see [`tsunagi_store::contributions`]).
pub fn parts_of(mapped: &Mapped, facility: &str) -> Vec<tsunagi_store::contributions::Part> {
    mapped
        .contributions
        .iter()
        .map(|contribution| tsunagi_store::contributions::Part {
            resource_type: contribution.resource_type.to_owned(),
            id: contribution.id.clone(),
            facility: facility.to_owned(),
            part: contribution.part.clone(),
        })
        .collect()
}

/// What a message maps to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// The resources the record holds now. Empty for a delete or cancel event with nothing left.
    pub resources: Vec<MappedResource>,
    /// The record's parts in resources several records make together.
    pub contributions: Vec<Contribution>,
    /// Tolerated deviations worth telling the operator about.
    pub warnings: Vec<String>,
}

/// Why a message could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The message is structurally invalid.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// MSH-9 does not belong in this data type's folder.
    #[error("MSH-9 is {found} but data type {data_type} holds {expected}")]
    WrongMessageType {
        /// The data type from the file name.
        data_type: DataType,
        /// What MSH-9 says.
        found: String,
        /// What the data type allows.
        expected: String,
    },
    /// A segment the mapping needs is absent.
    #[error("required segment {segment} is missing")]
    MissingSegment {
        /// The segment id.
        segment: &'static str,
    },
    /// The data type is recognised but deliberately not mapped.
    #[error("data type {0} is not mapped: {1}")]
    NotMapped(DataType, &'static str),
    /// A record that contradicts where it was found (a document naming another patient…).
    #[error("{0}")]
    Invalid(String),
}

/// Checks that MSH-9 belongs in the data type's folder; returns the trigger event.
pub fn check_message_type(data_type: DataType, message: &Message<'_>) -> Result<String, MapError> {
    let message_type = message.message_type()?;
    let (code, triggers) = data_type.message_types();
    if message_type.code != code || !triggers.contains(&message_type.trigger.as_str()) {
        return Err(MapError::WrongMessageType {
            data_type,
            found: message_type.to_string(),
            expected: triggers
                .iter()
                .map(|trigger| format!("{code}^{trigger}"))
                .collect::<Vec<_>>()
                .join(" or "),
        });
    }
    Ok(message_type.trigger)
}

/// Maps a lab company's result message — ORU^R01 or OUL^R22, both laid out as OBR with its OBX
/// (SPM where sent) — as the ordering facility's lab-result record (OML-11). `context` is that
/// record: the ordering facility, its patient id, and data type OML-11.
pub fn map_lab_report(
    context: &SourceContext<'_>,
    message: &Message<'_>,
) -> Result<Mapped, MapError> {
    let message_type = message.message_type()?;
    let trigger = match (message_type.code.as_str(), message_type.trigger.as_str()) {
        ("ORU", "R01") | ("OUL", "R22") => message_type.trigger.clone(),
        _ => {
            return Err(MapError::WrongMessageType {
                data_type: DataType::Oml11,
                found: message_type.to_string(),
                expected: "ORU^R01 or OUL^R22".to_owned(),
            });
        }
    };
    let mut builder = common::Builder::new(context, message, &trigger);
    builder.check_patient_id();
    lab::results(&mut builder)?;
    Ok(builder.finish())
}

/// One record of a source, as the mapping takes it: its kind decides which mapping runs. An HL7
/// v2 message is one kind; a record that is not HL7 v2 (a document of extended storage, a
/// vendor's export, a PACS study) is a kind of its own, mapped without pretending to be HL7.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SourceRecord<'a> {
    /// A message of an SS-MIX2 record (a file of standardized storage, or the same message
    /// pushed): mapped by its data type ([`map_message`]).
    Hl7v2 {
        /// The record it belongs to.
        context: SourceContext<'a>,
        /// The parsed message.
        message: &'a Message<'a>,
    },
    /// A lab company's result message, as the ordering facility's lab-result record
    /// ([`map_lab_report`]).
    LabReport {
        /// The ordering facility's record.
        context: SourceContext<'a>,
        /// The parsed ORU^R01 or OUL^R22.
        message: &'a Message<'a>,
    },
    /// One version of a document of SS-MIX2 extended storage ([`document::map_document`]).
    Document(document::DocumentSource<'a>),
    /// One MML 4.0 export file ([`mml::map_mml`]).
    Mml(mml::MmlSource<'a>),
}

/// Maps one source record: the resources it holds now, with deterministic ids and provenance.
pub fn map(record: SourceRecord<'_>) -> Result<Mapped, MapError> {
    match record {
        SourceRecord::Hl7v2 { context, message } => map_message(&context, message),
        SourceRecord::LabReport { context, message } => map_lab_report(&context, message),
        SourceRecord::Document(source) => document::map_document(&source),
        SourceRecord::Mml(source) => mml::map_mml(&source),
    }
}

/// Maps one message of the given record.
pub fn map_message(context: &SourceContext<'_>, message: &Message<'_>) -> Result<Mapped, MapError> {
    let trigger = check_message_type(context.data_type, message)?;
    let mut builder = common::Builder::new(context, message, &trigger);
    builder.check_patient_id();
    match context.data_type {
        DataType::Adt00 => adt::patient_record(&mut builder)?,
        DataType::Adt01 => {
            return Err(MapError::NotMapped(
                DataType::Adt01,
                "an attending-doctor change is administrative and carries no clinical data",
            ));
        }
        DataType::Adt61 => adt::allergies(&mut builder)?,
        // The events `DataType::is_encounter_event` names (the match stays exhaustive).
        DataType::Adt12
        | DataType::Adt21
        | DataType::Adt22
        | DataType::Adt31
        | DataType::Adt32
        | DataType::Adt41
        | DataType::Adt42
        | DataType::Adt51
        | DataType::Adt52 => encounter::encounter(&mut builder)?,
        DataType::Ppr01 => problems::conditions(&mut builder)?,
        DataType::Omp01 | DataType::Omp02 => medication::requests(&mut builder)?,
        DataType::Omp11 | DataType::Omp12 => medication::administrations(&mut builder)?,
        DataType::Oml11 => lab::results(&mut builder)?,
        DataType::Oml01 | DataType::Omg01 | DataType::Omg02 | DataType::Omg03 => {
            orders::service_requests(&mut builder)?
        }
        DataType::Omd => orders::nutrition_order(&mut builder)?,
        DataType::Omg11 | DataType::Omg12 => imaging::studies(&mut builder)?,
        DataType::Omg13 => imaging::physiology_results(&mut builder)?,
    }
    Ok(builder.finish())
}
