//! The record a pushed message belongs to: what SS-MIX2 standardized storage would have named its
//! file, derived from the message itself.
//!
//! A hospital that pushes HL7 v2 over MLLP sends the same messages its storage would hold, but
//! without a file name. [`identify`] derives the record key (患者ID, 診療日, データ種別, オーダNo)
//! by the guideline's rules, so a pushed message and the same message read from a file land on
//! the same resources (same source key, same logical ids):
//! - 患者ID: PID-3, first identifier;
//! - データ種別: from MSH-9, with the message content deciding where one message type serves
//!   several data types (see [`DataType`] for the table);
//! - 診療日: the field the SS-MIX2 testing tool names per message type (PV1-44, ORC-9, SPM-17…),
//!   its first eight digits, or `-`;
//! - オーダNo: the first ORC-2 (else OBR-2) for orders and results, `999999999999999` for
//!   patient-level data (ADT, PPR-01).

use tsunagi_hl7v2::{Message, ParseError};

use crate::DataType;

/// The order number SS-MIX2 gives data that is not an order.
pub const NO_ORDER: &str = "999999999999999";

/// The SS-MIX2 record key of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// 患者ID (PID-3).
    pub patient_id: String,
    /// 診療日, `YYYYMMDD` or `-`.
    pub care_date: String,
    /// データ種別.
    pub data_type: DataType,
    /// オーダNo.
    pub order_number: String,
}

/// Why no record can be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// MSH-9 is missing or malformed.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The message type is not one SS-MIX2 storage holds.
    #[error("message type {0} is not one this gateway maps")]
    UnsupportedType(String),
    /// PID-3 is empty.
    #[error("PID-3 (patient id) is missing")]
    NoPatient,
}

/// How a feed's identifiers are normalised to the ones its storage would use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentifyRules {
    /// Zero-pads a numeric PID-3 to this many digits (0: as sent). Some EHRs send `10000` in
    /// PID-3 and name the storage folder `00010000`.
    pub patient_id_width: usize,
}

/// Derives the record key of a pushed message.
pub fn identify(message: &Message<'_>, rules: &IdentifyRules) -> Result<RecordKey, IdentifyError> {
    let message_type = message.message_type()?;
    let code = message_type.code.as_str();
    let trigger = message_type.trigger.as_str();
    let data_type = data_type(message, code, trigger)
        .ok_or_else(|| IdentifyError::UnsupportedType(format!("{code}^{trigger}")))?;
    let patient_id = message
        .first("PID")
        .map(|pid| pid.field(3).first().component(1).text().trim().to_owned())
        .unwrap_or_default();
    if patient_id.is_empty() {
        return Err(IdentifyError::NoPatient);
    }
    let patient_id = if patient_id.len() < rules.patient_id_width
        && patient_id.bytes().all(|byte| byte.is_ascii_digit())
    {
        format!("{patient_id:0>width$}", width = rules.patient_id_width)
    } else {
        patient_id
    };
    let care_date = care_date(message, code, trigger);
    let order_number = if code == "ADT" || code == "PPR" {
        NO_ORDER.to_owned()
    } else {
        order_number(message)
    };
    Ok(RecordKey {
        patient_id,
        care_date,
        data_type,
        order_number,
    })
}

fn data_type(message: &Message<'_>, code: &str, trigger: &str) -> Option<DataType> {
    let by_trigger = match code {
        "ADT" => match trigger {
            "A11" => {
                // 入院 or 外来受付の取消: the patient class says which.
                let inpatient = message
                    .first("PV1")
                    .is_some_and(|pv1| pv1.field(2).text().trim() == "I");
                return Some(if inpatient {
                    DataType::Adt22
                } else {
                    DataType::Adt12
                });
            }
            _ => DataType::ALL.into_iter().find(|data_type| {
                let (code, triggers) = data_type.message_types();
                code == "ADT" && triggers.contains(&trigger)
            })?,
        },
        "PPR" if trigger == "ZD1" => DataType::Ppr01,
        "OMD" if trigger == "O03" => DataType::Omd,
        "RDE" if trigger == "O11" => {
            if is_injection(message) {
                DataType::Omp02
            } else {
                DataType::Omp01
            }
        }
        "RAS" if trigger == "O17" => {
            if is_injection(message) {
                DataType::Omp12
            } else {
                DataType::Omp11
            }
        }
        "OML" if trigger == "O33" => DataType::Oml01,
        "OUL" if trigger == "R22" => DataType::Oml11,
        "OMG" if trigger == "O19" => match exam_kind(message) {
            Exam::Radiology => DataType::Omg01,
            Exam::Endoscopy => DataType::Omg02,
            Exam::Physiology => DataType::Omg03,
        },
        "OMI" if trigger == "Z23" => match exam_kind(message) {
            Exam::Endoscopy => DataType::Omg12,
            _ => DataType::Omg11,
        },
        "ORU" if trigger == "R01" => DataType::Omg13,
        _ => return None,
    };
    Some(by_trigger)
}

/// Injections carry their drugs in RXC (orders), a rate in RXA-12, a parenteral route in RXR-1
/// or an administration device in RXR-3; prescriptions have none of these.
fn is_injection(message: &Message<'_>) -> bool {
    const PARENTERAL: [&str; 8] = ["IV", "IM", "SC", "ID", "IA", "IT", "IS", "IO"];
    message.first("RXC").is_some()
        || message
            .all("RXA")
            .any(|rxa| !rxa.field(12).text().trim().is_empty())
        || message.all("RXR").any(|rxr| {
            PARENTERAL.contains(&rxr.field(1).component(1).text().trim())
                || !rxr.field(3).text().trim().is_empty()
        })
}

enum Exam {
    Radiology,
    Endoscopy,
    Physiology,
}

/// OBR-4's coding system: JJ1017 (radiology), LENDO (JGES endoscopy codes), anything else
/// (JLAC10 physiology codes…).
fn exam_kind(message: &Message<'_>) -> Exam {
    let system = message
        .first("OBR")
        .map(|obr| obr.field(4).component(3).text().trim().to_ascii_uppercase())
        .unwrap_or_default();
    let endoscopic_modality = message
        .first("IPC")
        .is_some_and(|ipc| ipc.field(5).component(1).text().trim() == "ES");
    if system.starts_with("JJ1017") {
        Exam::Radiology
    } else if system == "LENDO" || endoscopic_modality {
        Exam::Endoscopy
    } else if message.first("IPC").is_some() {
        Exam::Radiology
    } else {
        Exam::Physiology
    }
}

/// The field holding 診療日 per message type (the SS-MIX2 testing tool's `SSMIX_CAREDATE`).
fn care_date_field(code: &str, trigger: &str) -> Option<(&'static str, usize)> {
    Some(match (code, trigger) {
        ("ADT", "A04" | "A01" | "A11") => ("PV1", 44),
        ("ADT", "A14" | "A27" | "A15" | "A26") => ("PV2", 8),
        ("ADT", "A21" | "A52" | "A22" | "A02" | "A12") => ("EVN", 6),
        ("ADT", "A53") => ("PV2", 47),
        ("ADT", "A16" | "A25") => ("PV2", 9),
        ("ADT", "A03" | "A13") => ("PV1", 45),
        // RAS: the testing tool names RXA-3, but the guideline's own sample (OMP-11) is stored
        // under the order's date, ORC-9; RXA-3 is the fallback.
        ("OMD", _) | ("RDE", _) | ("OML", _) | ("OMG", _) | ("RAS", _) => ("ORC", 9),
        ("OUL", _) => ("SPM", 17),
        ("OMI", _) | ("ORU", _) => ("OBR", 7),
        _ => return None,
    })
}

fn care_date(message: &Message<'_>, code: &str, trigger: &str) -> String {
    let Some((segment, field)) = care_date_field(code, trigger) else {
        return "-".to_owned();
    };
    let date_in = |segment: &str, field: usize| {
        let value = message
            .first(segment)
            .map(|segment| {
                segment
                    .field(field)
                    .first()
                    .component(1)
                    .text()
                    .into_owned()
            })
            .unwrap_or_default();
        let digits: String = value.trim().chars().take(8).collect();
        (digits.len() == 8 && digits.chars().all(|c| c.is_ascii_digit())).then_some(digits)
    };
    date_in(segment, field)
        .or_else(|| (code == "RAS").then(|| date_in("RXA", 3)).flatten())
        .unwrap_or_else(|| "-".to_owned())
}

fn order_number(message: &Message<'_>) -> String {
    let from = |segment: &str, field: usize| {
        message
            .first(segment)
            .map(|segment| segment.field(field).component(1).text().trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    from("ORC", 2)
        .or_else(|| from("OBR", 2))
        .unwrap_or_else(|| NO_ORDER.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(text: &str) -> RecordKey {
        identify(&Message::parse(text).unwrap(), &IdentifyRules::default()).unwrap()
    }

    const MSH: &str = "MSH|^~\\&|HIS|H|GW|R|20261124101500||";

    #[test]
    fn a_cancelled_admission_and_a_cancelled_visit_are_told_apart_by_the_patient_class() {
        let inpatient = key(&format!(
            "{MSH}ADT^A11^ADT_A09|1|P|2.5\rPID|||42^^^^PI\rPV1||I{}20261120\r",
            "|".repeat(42)
        ));
        assert_eq!(inpatient.data_type, DataType::Adt22);
        assert_eq!(inpatient.care_date, "20261120");
        assert_eq!(inpatient.order_number, NO_ORDER);
        let outpatient = key(&format!("{MSH}ADT^A11^ADT_A09|1|P|2.5\rPID|||42\rPV1||O\r"));
        assert_eq!(outpatient.data_type, DataType::Adt12);
        assert_eq!(outpatient.care_date, "-");
    }

    #[test]
    fn numeric_patient_ids_are_padded_to_the_feed_width() {
        let message = format!("{MSH}ADT^A08|1|P|2.5\rPID|||10000\r");
        let message = Message::parse(&message).unwrap();
        let padded = identify(
            &message,
            &IdentifyRules {
                patient_id_width: 8,
            },
        )
        .unwrap();
        assert_eq!(padded.patient_id, "00010000");
        let alpha = format!("{MSH}ADT^A08|1|P|2.5\rPID|||A10\r");
        let alpha = Message::parse(&alpha).unwrap();
        let kept = identify(
            &alpha,
            &IdentifyRules {
                patient_id_width: 8,
            },
        )
        .unwrap();
        assert_eq!(kept.patient_id, "A10");
    }

    #[test]
    fn unsupported_types_and_missing_patients_are_errors() {
        let message = format!("{MSH}ADT^Z99|1|P|2.5\rPID|||42\r");
        assert_eq!(
            identify(
                &Message::parse(&message).unwrap(),
                &IdentifyRules::default()
            ),
            Err(IdentifyError::UnsupportedType("ADT^Z99".to_owned()))
        );
        let message = format!("{MSH}ADT^A08|1|P|2.5\rPID|||\r");
        assert_eq!(
            identify(
                &Message::parse(&message).unwrap(),
                &IdentifyRules::default()
            ),
            Err(IdentifyError::NoPatient)
        );
        let message = format!("{MSH}|1|P|2.5\rPID|||42\r");
        assert!(matches!(
            identify(
                &Message::parse(&message).unwrap(),
                &IdentifyRules::default()
            ),
            Err(IdentifyError::Parse(_))
        ));
    }

    #[test]
    fn a_physiology_result_without_orc_takes_its_order_number_from_obr() {
        let result = key(&format!(
            "{MSH}ORU^R01^ORU_R01|1|P|2.5\rPID|||42\rOBR|1|2011122000089100||9A110^ECG^JC10|||20111220\r"
        ));
        assert_eq!(result.data_type, DataType::Omg13);
        assert_eq!(result.order_number, "2011122000089100");
        assert_eq!(result.care_date, "20111220");
    }
}
