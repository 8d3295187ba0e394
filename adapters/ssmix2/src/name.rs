//! SS-MIX2 file names: `患者ID_診療日_データ種別_オーダNo_発生日時_診療科コード_コンディションフラグ`.
//!
//! Identity comes from the name, not the path or the message: a record is
//! (patient id, care date, data type, order number). 発生日時, department and flag change
//! between versions of the same record and are never part of its identity. PPR-01 is special:
//! a patient has one problem list, so every PPR-01 file is a version of the same record.

use tsunagi_mapping::DataType;

/// The condition flag (コンディションフラグ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    /// `0`: deleted.
    Deleted,
    /// `1`: current.
    Current,
    /// `2`: superseded earlier version.
    Superseded,
}

/// A parsed file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// The whole name.
    pub name: String,
    /// 患者ID.
    pub patient_id: String,
    /// 診療日 (`YYYYMMDD` or `-`).
    pub care_date: String,
    /// データ種別.
    pub data_type: DataType,
    /// オーダNo (13, 15, up to 22 characters; free text).
    pub order_number: String,
    /// 発生日時 (15–17 digits).
    pub occurred: String,
    /// 診療科コード or `-`.
    pub department: String,
    /// コンディションフラグ.
    pub flag: Flag,
}

impl FileName {
    /// Parses a file name, explaining what is wrong when it cannot.
    pub fn parse(name: &str) -> Result<Self, String> {
        let fields: Vec<&str> = name.split('_').collect();
        if fields.len() != 7 {
            return Err(format!(
                "file name has {} '_'-separated fields; SS-MIX2 names have 7 (患者ID_診療日_データ種別_オーダNo_発生日時_診療科_フラグ)",
                fields.len()
            ));
        }
        let [
            patient_id,
            care_date,
            data_type,
            order_number,
            occurred,
            department,
            flag,
        ] = [
            fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
        ];
        if patient_id.is_empty() {
            return Err("the patient id (field 1) is empty".to_owned());
        }
        if !(care_date == "-"
            || care_date.len() == 8 && care_date.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "the care date (field 2) {care_date:?} is neither YYYYMMDD nor '-'"
            ));
        }
        let data_type = DataType::parse(data_type).ok_or_else(|| {
            format!("data type (field 3) {data_type:?} is not a standardized-storage data type")
        })?;
        if order_number.is_empty() {
            return Err("the order number (field 4) is empty".to_owned());
        }
        if !(12..=17).contains(&occurred.len()) || !occurred.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "the occurrence time (field 5) {occurred:?} is not 12–17 digits"
            ));
        }
        let flag = match flag {
            "0" => Flag::Deleted,
            "1" => Flag::Current,
            "2" => Flag::Superseded,
            other => {
                return Err(format!(
                    "the condition flag (field 7) {other:?} is not 0, 1 or 2"
                ));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            patient_id: patient_id.to_owned(),
            care_date: care_date.to_owned(),
            data_type,
            order_number: order_number.to_owned(),
            occurred: occurred.to_owned(),
            department: department.to_owned(),
            flag,
        })
    }

    /// The record this file is a version of.
    pub fn record_key(&self) -> RecordKey {
        if self.data_type == DataType::Ppr01 {
            return RecordKey {
                patient_id: self.patient_id.clone(),
                care_date: "-".to_owned(),
                data_type: self.data_type,
                order_number: "*".to_owned(),
            };
        }
        RecordKey {
            patient_id: self.patient_id.clone(),
            care_date: self.care_date.clone(),
            data_type: self.data_type,
            order_number: self.order_number.clone(),
        }
    }

    /// The name without its condition flag: unchanged when a file is renamed `_1` → `_2`.
    pub fn stem(&self) -> &str {
        self.name
            .rsplit_once('_')
            .map(|(stem, _)| stem)
            .unwrap_or(&self.name)
    }

    /// 発生日時 padded to 17 digits so versions sort in time order whatever their width.
    pub fn occurred_sortable(&self) -> String {
        format!("{:0<17}", self.occurred)
    }
}

/// A record's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// 患者ID.
    pub patient_id: String,
    /// 診療日 (`-` for undated data and for PPR-01).
    pub care_date: String,
    /// データ種別.
    pub data_type: DataType,
    /// オーダNo (`*` for PPR-01, whose snapshots replace each other).
    pub order_number: String,
}

impl RecordKey {
    /// The store's source key for this record.
    pub fn source_key(&self, facility: &str) -> String {
        format!(
            "ssmix2:{facility}:{}:{}:{}:{}",
            self.patient_id, self.care_date, self.data_type, self.order_number
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guideline_examples() {
        let name =
            FileName::parse("9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1")
                .unwrap();
        assert_eq!(name.patient_id, "9999013");
        assert_eq!(name.data_type, DataType::Omp01);
        assert_eq!(name.flag, Flag::Current);
        assert_eq!(
            name.stem(),
            "9999013_20110701_OMP-01_000000011000185_20110701224603984_01"
        );
        let undated =
            FileName::parse("9999013_-_ADT-00_999999999999999_20111220224447339_-_1").unwrap();
        assert_eq!(undated.care_date, "-");
        // 13-digit order number and 15-digit occurrence time are tolerated.
        let short =
            FileName::parse("9999013_20111220_OMG-11_2011122000300_200802031630123_24_2").unwrap();
        assert_eq!(short.order_number, "2011122000300");
        assert_eq!(short.flag, Flag::Superseded);
        assert_eq!(short.occurred_sortable(), "20080203163012300");
    }

    #[test]
    fn ppr01_snapshots_share_one_record() {
        let a = FileName::parse("1_-_PPR-01_999999999999999_20111209163030000_01_1").unwrap();
        let b = FileName::parse("1_-_PPR-01_000000000000001_20121209163030000_01_1").unwrap();
        assert_eq!(a.record_key(), b.record_key());
    }

    #[test]
    fn bad_names_say_why() {
        for (name, fragment) in [
            ("Thumbs.db", "7"),
            ("1_2011_OMP-01_1_20110701224603984_01_1", "care date"),
            ("1_20110701_XYZ-01_1_20110701224603984_01_1", "data type"),
            ("1_20110701_OMP-01__20110701224603984_01_1", "order number"),
            ("1_20110701_OMP-01_1_2011_01_1", "occurrence"),
            ("1_20110701_OMP-01_1_20110701224603984_01_9", "flag"),
        ] {
            let error = FileName::parse(name).unwrap_err();
            assert!(error.contains(fragment), "{name}: {error}");
        }
    }
}
