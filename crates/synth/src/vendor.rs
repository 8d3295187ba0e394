//! How each synthetic hospital's EHR writes its storage, as data: one [`VendorProfile`] per
//! vendor, read by the message builders instead of each asking which vendor it writes for.

use crate::messages::When;

/// How an EHR writes PID-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatientIdForm {
    /// The folder's patient id as it is.
    Bare,
    /// As a CX with identifier type PI.
    Cx,
    /// Without the folder id's leading zeros.
    Unpadded,
}

/// Which codes an EHR sends for lab tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabCodes {
    /// JLAC10 with the local code as the alternate.
    JlacAndLocal,
    /// The local code only (the facility table resolves it).
    LocalOnly,
    /// JLAC10 only.
    Jlac,
}

/// How an EHR writes MSH-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msh7Form {
    /// Seconds, a dot and 4 fraction digits.
    FourFractionDigits,
    /// Seconds, a dot and 2 fraction digits.
    TwoFractionDigits,
    /// Seconds and milliseconds without a dot (17 digits).
    Milliseconds,
}

/// How an EHR writes its storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VendorProfile {
    /// Segment terminator.
    pub(crate) terminator: &'static str,
    /// A 0x1C after the last segment.
    pub(crate) trailing_file_separator: bool,
    /// Folder patient ids: prefix, zero-padded width, and the number of the first chart.
    pub(crate) patient_id: (&'static str, usize, usize),
    /// PID-3.
    pub(crate) pid3: PatientIdForm,
    /// Order numbers of 13 digits (else 15).
    pub(crate) short_order_numbers: bool,
    /// The file name's 発生日時 with tenths of a second (15 digits; else milliseconds, 17).
    pub(crate) short_occurred: bool,
    /// MSH-7.
    pub(crate) msh7: Msh7Form,
    /// MSH-18 and MSH-20 as this vendor spells them.
    pub(crate) charset: (&'static str, &'static str),
    /// Kanji name components one place early (L in 6, I in 7).
    pub(crate) names_off_by_one: bool,
    /// Local 3-digit department codes (else the standard ones).
    pub(crate) local_departments: bool,
    /// Lab test codes.
    pub(crate) lab_codes: LabCodes,
    /// Local drug codes (else HOT9).
    pub(crate) local_drugs: bool,
}

impl VendorProfile {
    /// The folder patient id of the `index`th chart.
    pub(crate) fn patient_id(&self, index: usize) -> String {
        let (prefix, width, first) = self.patient_id;
        format!("{prefix}{:0width$}", first + index)
    }

    /// MSH-7 of `when`.
    pub(crate) fn msh7(&self, when: When) -> String {
        match self.msh7 {
            Msh7Form::FourFractionDigits => {
                format!("{}.{:04}", when.seconds(), when.millis * 10)
            }
            Msh7Form::TwoFractionDigits => format!("{}.{:02}", when.seconds(), when.millis / 10),
            Msh7Form::Milliseconds => format!("{}{:03}", when.seconds(), when.millis),
        }
    }

    /// The file name's 発生日時 of `when`.
    pub(crate) fn occurred(&self, when: When) -> String {
        if self.short_occurred {
            // 15 digits (the documented short form).
            format!("{}{}", when.seconds(), when.millis / 100)
        } else {
            format!("{}{:03}", when.seconds(), when.millis)
        }
    }
}

/// CR terminators and a trailing 0x1C, 15-digit order numbers, `~ISO IR87` / `ISO 2022-1994`,
/// MSH-7 with 4 fraction digits, bare PID-3, JLAC10 + local lab code pairs.
pub(crate) const A: VendorProfile = VendorProfile {
    terminator: "\r",
    trailing_file_separator: true,
    patient_id: ("", 7, 1_000_000),
    pid3: PatientIdForm::Bare,
    short_order_numbers: false,
    short_occurred: false,
    msh7: Msh7Form::FourFractionDigits,
    charset: ("~ISO IR87", "ISO 2022-1994"),
    names_off_by_one: false,
    local_departments: false,
    lab_codes: LabCodes::JlacAndLocal,
    local_drugs: false,
};

/// LF terminators, 13-digit order numbers, `~ISOIR87` / `ISO2022-1994`, MSH-7 with 2 fraction
/// digits, PID-3 as CX, off-by-one kanji name components, 3-digit local department codes,
/// local-only lab codes.
pub(crate) const B: VendorProfile = VendorProfile {
    terminator: "\n",
    trailing_file_separator: false,
    patient_id: ("20", 8, 0),
    pid3: PatientIdForm::Cx,
    short_order_numbers: true,
    short_occurred: false,
    msh7: Msh7Form::TwoFractionDigits,
    charset: ("~ISOIR87", "ISO2022-1994"),
    names_off_by_one: true,
    local_departments: true,
    lab_codes: LabCodes::LocalOnly,
    local_drugs: false,
};

/// CRLF terminators, 15-digit order numbers, MSH-7 as 17 digits without a dot, 15-digit file
/// times, PID-3 without the folder id's leading zeros, local drug codes.
pub(crate) const C: VendorProfile = VendorProfile {
    terminator: "\r\n",
    trailing_file_separator: false,
    patient_id: ("", 8, 10_000),
    pid3: PatientIdForm::Unpadded,
    short_order_numbers: false,
    short_occurred: true,
    msh7: Msh7Form::Milliseconds,
    charset: ("~ISO IR87", "ISO2022-1994"),
    names_off_by_one: false,
    local_departments: false,
    lab_codes: LabCodes::Jlac,
    local_drugs: true,
};
