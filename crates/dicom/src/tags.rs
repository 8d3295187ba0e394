//! The attributes the gateway reads and writes, by tag (group << 16 | element).

/// (0008,0005) Specific Character Set.
pub const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
/// (0008,0008) Image Type.
pub const IMAGE_TYPE: u32 = 0x0008_0008;
/// (0008,0016) SOP Class UID.
pub const SOP_CLASS_UID: u32 = 0x0008_0016;
/// (0008,0018) SOP Instance UID.
pub const SOP_INSTANCE_UID: u32 = 0x0008_0018;
/// (0008,0020) Study Date.
pub const STUDY_DATE: u32 = 0x0008_0020;
/// (0008,0021) Series Date.
pub const SERIES_DATE: u32 = 0x0008_0021;
/// (0008,0030) Study Time.
pub const STUDY_TIME: u32 = 0x0008_0030;
/// (0008,0050) Accession Number.
pub const ACCESSION_NUMBER: u32 = 0x0008_0050;
/// (0008,0201) Timezone Offset From UTC (`+0900`): the offset of the data set's dates and times.
pub const TIMEZONE_OFFSET_FROM_UTC: u32 = 0x0008_0201;
/// (0008,0051) Issuer of Accession Number Sequence.
pub const ISSUER_OF_ACCESSION_NUMBER: u32 = 0x0008_0051;
/// (0008,0060) Modality.
pub const MODALITY: u32 = 0x0008_0060;
/// (0008,0061) Modalities in Study.
pub const MODALITIES_IN_STUDY: u32 = 0x0008_0061;
/// (0008,0064) Conversion Type.
pub const CONVERSION_TYPE: u32 = 0x0008_0064;
/// (0008,0070) Manufacturer.
pub const MANUFACTURER: u32 = 0x0008_0070;
/// (0008,0080) Institution Name.
pub const INSTITUTION_NAME: u32 = 0x0008_0080;
/// (0008,0090) Referring Physician's Name.
pub const REFERRING_PHYSICIAN_NAME: u32 = 0x0008_0090;
/// (0008,1030) Study Description.
pub const STUDY_DESCRIPTION: u32 = 0x0008_1030;
/// (0008,103E) Series Description.
pub const SERIES_DESCRIPTION: u32 = 0x0008_103e;
/// (0010,0010) Patient's Name.
pub const PATIENT_NAME: u32 = 0x0010_0010;
/// (0010,0020) Patient ID.
pub const PATIENT_ID: u32 = 0x0010_0020;
/// (0010,0021) Issuer of Patient ID.
pub const ISSUER_OF_PATIENT_ID: u32 = 0x0010_0021;
/// (0010,0030) Patient's Birth Date.
pub const PATIENT_BIRTH_DATE: u32 = 0x0010_0030;
/// (0010,0040) Patient's Sex.
pub const PATIENT_SEX: u32 = 0x0010_0040;
/// (0018,0015) Body Part Examined.
pub const BODY_PART_EXAMINED: u32 = 0x0018_0015;
/// (0020,000D) Study Instance UID.
pub const STUDY_INSTANCE_UID: u32 = 0x0020_000d;
/// (0020,000E) Series Instance UID.
pub const SERIES_INSTANCE_UID: u32 = 0x0020_000e;
/// (0020,0010) Study ID.
pub const STUDY_ID: u32 = 0x0020_0010;
/// (0020,0011) Series Number.
pub const SERIES_NUMBER: u32 = 0x0020_0011;
/// (0020,0013) Instance Number.
pub const INSTANCE_NUMBER: u32 = 0x0020_0013;
/// (0020,0020) Patient Orientation.
pub const PATIENT_ORIENTATION: u32 = 0x0020_0020;
/// (0020,1206) Number of Study Related Series.
pub const NUMBER_OF_STUDY_RELATED_SERIES: u32 = 0x0020_1206;
/// (0020,1208) Number of Study Related Instances.
pub const NUMBER_OF_STUDY_RELATED_INSTANCES: u32 = 0x0020_1208;
/// (0020,1209) Number of Series Related Instances.
pub const NUMBER_OF_SERIES_RELATED_INSTANCES: u32 = 0x0020_1209;
/// (0028,0002) Samples per Pixel.
pub const SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
/// (0028,0004) Photometric Interpretation.
pub const PHOTOMETRIC_INTERPRETATION: u32 = 0x0028_0004;
/// (0028,0010) Rows.
pub const ROWS: u32 = 0x0028_0010;
/// (0028,0011) Columns.
pub const COLUMNS: u32 = 0x0028_0011;
/// (0028,0100) Bits Allocated.
pub const BITS_ALLOCATED: u32 = 0x0028_0100;
/// (0028,0101) Bits Stored.
pub const BITS_STORED: u32 = 0x0028_0101;
/// (0028,0102) High Bit.
pub const HIGH_BIT: u32 = 0x0028_0102;
/// (0028,0103) Pixel Representation.
pub const PIXEL_REPRESENTATION: u32 = 0x0028_0103;
/// (0028,1050) Window Center.
pub const WINDOW_CENTER: u32 = 0x0028_1050;
/// (0028,1051) Window Width.
pub const WINDOW_WIDTH: u32 = 0x0028_1051;
/// (0028,1052) Rescale Intercept.
pub const RESCALE_INTERCEPT: u32 = 0x0028_1052;
/// (0028,1053) Rescale Slope.
pub const RESCALE_SLOPE: u32 = 0x0028_1053;
/// (0032,1060) Requested Procedure Description.
pub const REQUESTED_PROCEDURE_DESCRIPTION: u32 = 0x0032_1060;
/// (0040,1001) Requested Procedure ID.
pub const REQUESTED_PROCEDURE_ID: u32 = 0x0040_1001;
/// (7FE0,0010) Pixel Data.
pub const PIXEL_DATA: u32 = 0x7fe0_0010;

/// The DICOM JSON model's key of a tag: eight upper-case hex digits.
pub fn key(tag: u32) -> String {
    format!("{tag:08X}")
}

/// SOP classes of the images the synthetic PACS holds, by modality.
pub mod sop_class {
    /// CT Image Storage.
    pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    /// MR Image Storage.
    pub const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
    /// Computed Radiography Image Storage.
    pub const CR: &str = "1.2.840.10008.5.1.4.1.1.1";
    /// Ultrasound Image Storage.
    pub const US: &str = "1.2.840.10008.5.1.4.1.1.6.1";
    /// Secondary Capture Image Storage.
    pub const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
}
