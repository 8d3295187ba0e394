//! SS-MIX2 extended storage, as NHO specifies it for its hospitals (guideline Ver.1.2d):
//! `root/患者ID[0:3]/[3:6]/患者ID/診療日/データ種別/コンテンツフォルダ/主文書ファイル`.
//!
//! - The data-type folder: `[ローカル文書コード]^ローカル文書名称^[ローカルコード体系]^標準文書コード^標準文書名称^標準コード体系`
//!   (the standard half may be empty or absent; several local codes may share a standard code).
//! - The content folder: `患者ID_診療日_データ種別コード_特定キー_発生日時_診療科コード_コンディションフラグ`,
//!   whose data-type code is the data-type folder's name (NHO's sample) or its local code; some
//!   writers leave the department out.
//!
//! A record is (patient, 診療日, data type, 特定キー); its versions differ in 発生日時. Flag `1`
//! is the current version, `2` an earlier one kept as history, `0` a withdrawn one.

use crate::DocumentError;

/// A coded part of the data-type folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderCode {
    /// The code (may be empty for a local part that names only its document).
    pub code: String,
    /// Its name.
    pub name: String,
    /// The code system's short name (`LN`, `99ZZZ`…), possibly empty.
    pub system: String,
}

/// The data-type folder of extended storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTypeFolder {
    /// The folder's name as written.
    pub folder: String,
    /// The hospital's own document code, name and code system.
    pub local: FolderCode,
    /// The standard document code (LOINC `11506-3`, `18842-5`, `57133-1`…), when given.
    pub standard: Option<FolderCode>,
}

impl DataTypeFolder {
    /// Reads a data-type folder name.
    pub fn parse(folder: &str) -> Result<Self, DocumentError> {
        let parts: Vec<&str> = folder.split('^').collect();
        if !(parts.len() == 3 || parts.len() == 6) {
            return Err(DocumentError::layout(format!(
                "data-type folder {folder:?}: expected 3 or 6 parts separated by ^ \
                 (local code^name^system[^standard code^name^system])"
            )));
        }
        let local = FolderCode {
            code: parts[0].to_owned(),
            name: parts[1].to_owned(),
            system: parts[2].to_owned(),
        };
        if local.code.is_empty() && local.name.is_empty() {
            return Err(DocumentError::layout(format!(
                "data-type folder {folder:?}: neither a local code nor a name"
            )));
        }
        let standard = match parts.get(3..6) {
            Some([code, name, system]) if !code.is_empty() => Some(FolderCode {
                code: (*code).to_owned(),
                name: (*name).to_owned(),
                system: (*system).to_owned(),
            }),
            _ => None,
        };
        Ok(Self {
            folder: folder.to_owned(),
            local,
            standard,
        })
    }
}

/// What the condition flag says of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `1`: the current version.
    Current,
    /// `2`: an earlier version, kept as history.
    Earlier,
    /// `0`: withdrawn.
    Withdrawn,
}

/// A content folder of extended storage: one version of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFolder {
    /// The folder's name as written: the document version's identifier.
    pub folder: String,
    /// 患者ID.
    pub patient_id: String,
    /// 診療日: `YYYYMMDD` or `-`.
    pub care_date: String,
    /// 特定キー.
    pub key: String,
    /// 発生日時: `YYYYMMDDHHMMSS` and up to three fraction digits.
    pub occurred: String,
    /// 診療科コード, when written.
    pub department: Option<String>,
    /// The condition flag.
    pub condition: Condition,
}

impl ContentFolder {
    /// Reads content folder `folder` found under `patient/care_date/data_type`; its own
    /// patient, date and data type must be those folders'.
    pub fn parse(
        folder: &str,
        patient_id: &str,
        care_date: &str,
        data_type: &DataTypeFolder,
    ) -> Result<Self, DocumentError> {
        let wrong =
            |why: String| DocumentError::layout(format!("content folder {folder:?}: {why}"));
        // Keys are joined with `_`: a patient id or date holding one could name another record.
        if patient_id.is_empty() || patient_id.contains('_') {
            return Err(wrong(format!(
                "patient folder {patient_id:?} is not a patient id"
            )));
        }
        if !(care_date == "-"
            || (care_date.len() == 8 && care_date.bytes().all(|b| b.is_ascii_digit())))
        {
            return Err(wrong(format!(
                "date folder {care_date:?} is not YYYYMMDD or -"
            )));
        }
        let prefix = format!("{patient_id}_{care_date}_");
        let rest = folder.strip_prefix(&prefix).ok_or_else(|| {
            wrong(format!(
                "does not begin with the patient and date of its folders ({prefix})"
            ))
        })?;
        // The data-type code: the folder's whole name, or its local or standard code.
        let mut codes = vec![data_type.folder.as_str()];
        if !data_type.local.code.is_empty() {
            codes.push(data_type.local.code.as_str());
        }
        if let Some(standard) = &data_type.standard {
            codes.push(standard.code.as_str());
        }
        let rest = codes
            .iter()
            .find_map(|code| rest.strip_prefix(code).and_then(|r| r.strip_prefix('_')))
            .ok_or_else(|| {
                wrong(format!(
                    "its data-type code is not its folder's ({})",
                    data_type.folder
                ))
            })?;
        let fields: Vec<&str> = rest.split('_').collect();
        let (key, occurred, department, flag) = match fields.as_slice() {
            [key, occurred, department, flag] => (*key, *occurred, Some(*department), *flag),
            [key, occurred, flag] => (*key, *occurred, None, *flag),
            _ => {
                return Err(wrong(
                    "expected 特定キー_発生日時[_診療科コード]_コンディションフラグ after the data type"
                        .to_owned(),
                ));
            }
        };
        if !(14..=17).contains(&occurred.len()) || !occurred.bytes().all(|b| b.is_ascii_digit()) {
            return Err(wrong(format!(
                "発生日時 {occurred:?} is not YYYYMMDDHHMMSS with up to 3 fraction digits"
            )));
        }
        let condition = match flag {
            "1" => Condition::Current,
            "2" => Condition::Earlier,
            "0" => Condition::Withdrawn,
            other => return Err(wrong(format!("condition flag {other:?} is not 0, 1 or 2"))),
        };
        if key.is_empty() {
            return Err(wrong("特定キー is empty".to_owned()));
        }
        Ok(Self {
            folder: folder.to_owned(),
            patient_id: patient_id.to_owned(),
            care_date: care_date.to_owned(),
            key: key.to_owned(),
            occurred: occurred.to_owned(),
            department: department.filter(|d| !d.is_empty()).map(str::to_owned),
            condition,
        })
    }

    /// The record this version belongs to: patient, 診療日, data-type folder and 特定キー.
    pub fn record_key(&self, data_type: &DataTypeFolder) -> String {
        format!(
            "{}_{}_{}_{}",
            self.patient_id, self.care_date, data_type.folder, self.key
        )
    }
}

/// Checks that `patient_id`'s folder sits under `first/second` (its characters 1–3 and 4–6).
pub fn check_patient_folders(
    first: &str,
    second: &str,
    patient_id: &str,
) -> Result<(), DocumentError> {
    let head: String = patient_id.chars().take(3).collect();
    let next: String = patient_id.chars().skip(3).take(3).collect();
    if head == first && next == second {
        Ok(())
    } else {
        Err(DocumentError::layout(format!(
            "patient folder {patient_id:?} is under {first}/{second}, not {head}/{next}"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nho_sample_and_guideline_forms_are_read() {
        let vitals = DataTypeFolder::parse("L-OBSERVATIONS^OBSERVATIONS^99ZL01").unwrap();
        assert_eq!(vitals.local.code, "L-OBSERVATIONS");
        assert_eq!(vitals.standard, None);
        let content = ContentFolder::parse(
            "0123456789_20160101_L-OBSERVATIONS^OBSERVATIONS^99ZL01_000000020160101_201601011500321_1",
            "0123456789",
            "20160101",
            &vitals,
        )
        .unwrap();
        assert_eq!(content.key, "000000020160101");
        assert_eq!(content.occurred, "201601011500321");
        assert_eq!(content.department, None);
        assert_eq!(content.condition, Condition::Current);

        let note = DataTypeFolder::parse("L12345^入院診療録^99ZZZ^11506-3^経過記録^LN").unwrap();
        let standard = note.standard.clone().unwrap();
        assert_eq!(
            (standard.code.as_str(), standard.system.as_str()),
            ("11506-3", "LN")
        );
        let revised = ContentFolder::parse(
            "0001000052_20240501_L12345_K0001_20240502093000123_01_2",
            "0001000052",
            "20240501",
            &note,
        )
        .unwrap();
        assert_eq!(revised.department.as_deref(), Some("01"));
        assert_eq!(revised.condition, Condition::Earlier);
        assert_eq!(
            revised.record_key(&note),
            "0001000052_20240501_L12345^入院診療録^99ZZZ^11506-3^経過記録^LN_K0001"
        );
        // Only a name, and an empty standard half.
        let named = DataTypeFolder::parse("^紹介状^^^^").unwrap();
        assert_eq!(
            (named.local.name.as_str(), named.standard),
            ("紹介状", None)
        );
        check_patient_folders("000", "100", "0001000052").unwrap();
    }

    #[test]
    fn malformed_folders_are_refused_by_name() {
        let note = DataTypeFolder::parse("L1^経過^99Z^11506-3^経過記録^LN").unwrap();
        let refused = |folder: &str| {
            ContentFolder::parse(folder, "P1", "20240501", &note)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("P2_20240501_L1_K_20240501120000_1").contains("patient and date"));
        assert!(refused("P1_20240501_L9_K_20240501120000_1").contains("data-type code"));
        assert!(refused("P1_20240501_L1_K_2024050112_1").contains("発生日時"));
        assert!(refused("P1_20240501_L1_K_20240501120000_01_7").contains("condition flag"));
        assert!(refused("P1_20240501_L1_K_20240501120000").contains("expected"));
        assert!(DataTypeFolder::parse("only^two").is_err());
        assert!(DataTypeFolder::parse("^^^11506-3^経過記録^LN").is_err());
        assert!(check_patient_folders("000", "999", "0001000052").is_err());
        let bad_date = ContentFolder::parse("P1_2024_L1_K_20240501120000_1", "P1", "2024", &note);
        assert!(bad_date.unwrap_err().to_string().contains("YYYYMMDD"));
        let bad_patient = ContentFolder::parse(
            "P_1_20240501_L1_K_20240501120000_1",
            "P_1",
            "20240501",
            &note,
        );
        assert!(
            bad_patient
                .unwrap_err()
                .to_string()
                .contains("not a patient id")
        );
    }
}
