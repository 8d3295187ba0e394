//! The synthetic region's PACS: each chart's radiology studies as small, valid DICOM images —
//! the studies its OMG-11 notices reported (same Study Instance UID and accession number, CR)
//! and, for some charts, studies no order names (CT, MR, US) — written as Part 10 files under
//! `<out>/pacs/<facility>/<patient id>/<study>/<series>-<instance>.dcm`, to be stored in a test
//! PACS (Orthanc) with `POST /instances`.
//!
//! Patients' names are Japanese as Japanese modalities write them: Shōnai's in
//! `ISO 2022 IR 13\ISO 2022 IR 87` (half-width katakana, then kanji and katakana), the others'
//! in `ISO 2022 IR 6\ISO 2022 IR 87` (no alphabetic group). Deterministic for a seed.

use std::{fs, io, path::Path};

use serde::Serialize;
use tsunagi_dicom::{
    charset::CharacterSets,
    part10::{self, Element},
    tags::{self, sop_class},
};

use crate::{
    HOSPITALS, Rng, Writer, assign,
    messages::{Chart, Study},
};

/// One series of a synthetic study.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSeries {
    /// Series Instance UID.
    pub uid: String,
    /// Series Number.
    pub number: u32,
    /// Its modality.
    pub modality: &'static str,
    /// Body Part Examined.
    pub body_part: &'static str,
    /// Series Description.
    pub description: &'static str,
    /// SOP Instance UIDs, in instance-number order.
    pub instances: Vec<String>,
}

/// One synthetic study in a hospital's PACS.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStudy {
    /// The hospital's code.
    pub facility: String,
    /// The patient's id at that hospital (its SS-MIX2 id).
    pub patient_id: String,
    /// The patient's name in kanji, `family^given` (the ideographic group).
    pub patient_name: String,
    /// Study Instance UID.
    pub uid: String,
    /// Accession number.
    pub accession: String,
    /// Study Date (YYYYMMDD) and Time (HHMMSS).
    pub date: String,
    /// Study Time.
    pub time: String,
    /// Study Description.
    pub description: &'static str,
    /// The placer order number, when an order asked for it.
    pub order: Option<String>,
    /// Its series.
    pub series: Vec<ImageSeries>,
}

impl ImageStudy {
    /// Instances in all series.
    pub fn instances(&self) -> usize {
        self.series
            .iter()
            .map(|series| series.instances.len())
            .sum()
    }
}

/// What [`generate_images`] wrote, per hospital.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImagesReport {
    /// Per hospital: its code and its studies (as stored).
    pub facilities: Vec<(String, Vec<ImageStudy>)>,
    /// Part 10 files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Modalities of studies no order names: (modality, body part, study and series descriptions);
/// the SOP class follows the modality ([`sop_class_of`]).
const UNORDERED: &[(&str, &str, &str, [&str; 3])] = &[
    (
        "CT",
        "CHEST",
        "胸部CT",
        ["単純 5mm", "肺野条件", "縦隔条件"],
    ),
    ("MR", "HEAD", "頭部MRI", ["T1強調", "T2強調", "FLAIR"]),
    ("US", "ABDOMEN", "腹部超音波", ["肝臓", "胆嚢", "腎臓"]),
];

/// Writes the PACS of the region of `patients` people and `seed` under `<out>/pacs/`.
pub fn generate_images(out: &Path, patients: usize, seed: u64) -> io::Result<ImagesReport> {
    let mut report = ImagesReport {
        facilities: HOSPITALS
            .iter()
            .map(|hospital| (hospital.code.to_owned(), Vec::new()))
            .collect(),
        ..ImagesReport::default()
    };
    for person in 0..patients {
        let (people, hospitals, mut replay) = assign(seed, person);
        for &hospital in &hospitals {
            // The chart replayed, unwritten, for its OMG-11 studies.
            let mut dry = Writer::new(std::path::PathBuf::new(), HOSPITALS[hospital].vendor, true);
            Chart::new(HOSPITALS[hospital], &people, person).write(&mut replay, &mut dry)?;
            let chart = Chart::new(HOSPITALS[hospital], &people, person);
            let mut rng = Rng::new(
                seed ^ 0xD1C0_3000
                    ^ ((person * 3 + hospital) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            let root = out
                .join("pacs")
                .join(HOSPITALS[hospital].code)
                .join(chart.patient_id());
            for study in studies(&chart, &dry.studies, &mut rng, person) {
                let folder = root.join(&study.uid);
                fs::create_dir_all(&folder)?;
                for series in &study.series {
                    for (index, _) in series.instances.iter().enumerate() {
                        let bytes = instance(&chart, &study, series, index, hospital)?;
                        report.files += 1;
                        report.bytes += bytes.len() as u64;
                        fs::write(
                            folder.join(format!("{}-{}.dcm", series.number, index + 1)),
                            bytes,
                        )?;
                    }
                }
                report.facilities[hospital].1.push(study);
            }
        }
    }
    Ok(report)
}

/// A chart's studies: one per OMG-11 notice (CR, one series of one or two views), and with
/// one chance in three a study no order names.
fn studies(chart: &Chart<'_>, ordered: &[Study], rng: &mut Rng, person: usize) -> Vec<ImageStudy> {
    let facility = chart.facility();
    let ((family, _), (given, _)) = chart.names();
    let patient_name = format!("{family}^{given}");
    let mut studies = Vec::new();
    for study in ordered {
        let views = if rng.chance(50) { 2 } else { 1 };
        let series_uid = format!("{}.1", study.uid);
        studies.push(ImageStudy {
            facility: facility.to_owned(),
            patient_id: chart.patient_id().to_owned(),
            patient_name: patient_name.clone(),
            uid: study.uid.clone(),
            accession: study.accession.clone(),
            date: study.done.date(),
            time: study.done.hhmmss(),
            description: "胸部X線",
            order: Some(study.order.clone()),
            series: vec![ImageSeries {
                instances: (1..=views).map(|n| format!("{series_uid}.{n}")).collect(),
                uid: series_uid,
                number: 1,
                modality: "CR",
                body_part: "CHEST",
                description: "胸部正面",
            }],
        });
    }
    if person == 0 || rng.chance(33) {
        let (modality, body_part, description, series_names) =
            UNORDERED[rng.below(UNORDERED.len() as u64) as usize];
        let days = 19_000 + rng.below(900) as i64;
        let when = crate::messages::When {
            days,
            seconds: 9 * 3600 + rng.below(8 * 3600) as u32,
            millis: 0,
        };
        let serial = 900_000 + person as u64 * 10 + rng.below(10);
        let uid = format!("1.2.392.200036.9116.2.{facility}.9{serial}");
        let series_count = 2 + rng.below(2) as u32;
        studies.push(ImageStudy {
            facility: facility.to_owned(),
            patient_id: chart.patient_id().to_owned(),
            patient_name,
            accession: format!("U{serial}"),
            date: when.date(),
            time: when.hhmmss(),
            description,
            order: None,
            series: (1..=series_count)
                .map(|number| {
                    let series_uid = format!("{uid}.{number}");
                    let count = 2 + rng.below(3);
                    ImageSeries {
                        instances: (1..=count).map(|n| format!("{series_uid}.{n}")).collect(),
                        uid: series_uid,
                        number,
                        modality,
                        body_part,
                        description: series_names[(number as usize - 1) % 3],
                    }
                })
                .collect(),
            uid,
        });
    }
    studies
}

fn sop_class_of(modality: &str) -> &'static str {
    match modality {
        "CT" => sop_class::CT,
        "MR" => sop_class::MR,
        "US" => sop_class::US,
        "CR" => sop_class::CR,
        _ => sop_class::SC,
    }
}

/// Image side, in pixels.
const SIDE: u16 = 64;

/// One instance of `series` as a Part 10 file.
fn instance(
    chart: &Chart<'_>,
    study: &ImageStudy,
    series: &ImageSeries,
    index: usize,
    hospital: usize,
) -> io::Result<Vec<u8>> {
    let names: &[&str] = if hospital == 0 {
        &["ISO 2022 IR 13", "ISO 2022 IR 87"]
    } else {
        &["", "ISO 2022 IR 87"]
    };
    let sets = CharacterSets::parse(names).map_err(io::Error::other)?;
    let ((family_kanji, family_kana), (given_kanji, given_kana)) = chart.names();
    let alphabetic = if hospital == 0 {
        format!("{}^{}", half_width(family_kana), half_width(given_kana))
    } else {
        String::new()
    };
    let name = sets
        .encode_person_name([
            &alphabetic,
            &format!("{family_kanji}^{given_kanji}"),
            &format!("{family_kana}^{given_kana}"),
        ])
        .map_err(io::Error::other)?;
    let text = |value: &str| sets.encode(value).map_err(io::Error::other);
    let us = series.modality == "US";
    let (bits, stored) = if us { (8u16, 8u16) } else { (16, 12) };
    let mut elements = vec![
        Element::text(tags::SPECIFIC_CHARACTER_SET, b"CS", &names.join("\\")),
        Element::text(tags::IMAGE_TYPE, b"CS", "ORIGINAL\\PRIMARY"),
        Element::text(tags::SOP_CLASS_UID, b"UI", sop_class_of(series.modality)),
        Element::text(tags::SOP_INSTANCE_UID, b"UI", &series.instances[index]),
        Element::text(tags::STUDY_DATE, b"DA", &study.date),
        Element::text(tags::SERIES_DATE, b"DA", &study.date),
        Element::text(tags::STUDY_TIME, b"TM", &study.time),
        Element::text(tags::ACCESSION_NUMBER, b"SH", &study.accession),
        Element::text(tags::MODALITY, b"CS", series.modality),
        Element::text(tags::MANUFACTURER, b"LO", "TSUNAGI SYNTHETIC"),
        Element::bytes(
            tags::INSTITUTION_NAME,
            b"LO",
            text(HOSPITALS[hospital].name)?,
        ),
        Element::text(tags::REFERRING_PHYSICIAN_NAME, b"PN", ""),
        Element::bytes(tags::STUDY_DESCRIPTION, b"LO", text(study.description)?),
        Element::bytes(tags::SERIES_DESCRIPTION, b"LO", text(series.description)?),
        Element::bytes(tags::PATIENT_NAME, b"PN", name),
        Element::text(tags::PATIENT_ID, b"LO", &study.patient_id),
        Element::text(tags::PATIENT_BIRTH_DATE, b"DA", chart.birth()),
        Element::text(tags::PATIENT_SEX, b"CS", chart.sex()),
        Element::text(tags::BODY_PART_EXAMINED, b"CS", series.body_part),
        Element::text(tags::STUDY_INSTANCE_UID, b"UI", &study.uid),
        Element::text(tags::SERIES_INSTANCE_UID, b"UI", &series.uid),
        Element::text(tags::STUDY_ID, b"SH", "1"),
        Element::text(tags::SERIES_NUMBER, b"IS", &series.number.to_string()),
        Element::text(tags::INSTANCE_NUMBER, b"IS", &(index + 1).to_string()),
        Element::text(tags::PATIENT_ORIENTATION, b"CS", ""),
        Element::us(tags::SAMPLES_PER_PIXEL, 1),
        Element::text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", "MONOCHROME2"),
        Element::us(tags::ROWS, SIDE),
        Element::us(tags::COLUMNS, SIDE),
        Element::us(tags::BITS_ALLOCATED, bits),
        Element::us(tags::BITS_STORED, stored),
        Element::us(tags::HIGH_BIT, stored - 1),
        Element::us(tags::PIXEL_REPRESENTATION, 0),
    ];
    if !us {
        elements.extend([
            Element::text(tags::WINDOW_CENTER, b"DS", "2048"),
            Element::text(tags::WINDOW_WIDTH, b"DS", "4096"),
            Element::text(tags::RESCALE_INTERCEPT, b"DS", "0"),
            Element::text(tags::RESCALE_SLOPE, b"DS", "1"),
        ]);
    }
    elements.push(Element::bytes(
        tags::PIXEL_DATA,
        if us { b"OB" } else { b"OW" },
        pixels(bits, index),
    ));
    Ok(part10::file(elements))
}

/// A ring whose radius grows with the instance number, on a dark ground.
fn pixels(bits: u16, index: usize) -> Vec<u8> {
    let side = i64::from(SIDE);
    let radius = 10 + (index as i64 * 5) % 20;
    let mut out = Vec::with_capacity((side * side) as usize * usize::from(bits / 8));
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (x - side / 2, y - side / 2);
            let distance = ((dx * dx + dy * dy) as f64).sqrt() as i64;
            let bright = (distance - radius).abs() < 3;
            if bits == 8 {
                out.push(if bright { 220 } else { 20 + (x as u8) });
            } else {
                let value: u16 = if bright { 3800 } else { 200 + (x as u16) * 8 };
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
    out
}

/// Full-width katakana as half-width (JIS X 0201), voiced marks split off.
fn half_width(kana: &str) -> String {
    const HALF: [&str; 84] = [
        "ｧ", "ｱ", "ｨ", "ｲ", "ｩ", "ｳ", "ｪ", "ｴ", "ｫ", "ｵ", // ァ…オ
        "ｶ", "ｶﾞ", "ｷ", "ｷﾞ", "ｸ", "ｸﾞ", "ｹ", "ｹﾞ", "ｺ", "ｺﾞ", // カ…ゴ
        "ｻ", "ｻﾞ", "ｼ", "ｼﾞ", "ｽ", "ｽﾞ", "ｾ", "ｾﾞ", "ｿ", "ｿﾞ", // サ…ゾ
        "ﾀ", "ﾀﾞ", "ﾁ", "ﾁﾞ", "ｯ", "ﾂ", "ﾂﾞ", "ﾃ", "ﾃﾞ", "ﾄ", "ﾄﾞ", // タ…ド
        "ﾅ", "ﾆ", "ﾇ", "ﾈ", "ﾉ", // ナ…ノ
        "ﾊ", "ﾊﾞ", "ﾊﾟ", "ﾋ", "ﾋﾞ", "ﾋﾟ", "ﾌ", "ﾌﾞ", "ﾌﾟ", "ﾍ", "ﾍﾞ", "ﾍﾟ", "ﾎ", "ﾎﾞ",
        "ﾎﾟ", // ハ…ポ
        "ﾏ", "ﾐ", "ﾑ", "ﾒ", "ﾓ", // マ…モ
        "ｬ", "ﾔ", "ｭ", "ﾕ", "ｮ", "ﾖ", // ャ…ヨ
        "ﾗ", "ﾘ", "ﾙ", "ﾚ", "ﾛ", // ラ…ロ
        "ﾜ", "ﾜ", "ｲ", "ｴ", "ｦ", "ﾝ", "ｳﾞ", // ヮ…ヴ
    ];
    kana.chars()
        .map(|c| match u32::from(c) {
            code @ 0x30a1..=0x30f4 => HALF[(code - 0x30a1) as usize].to_owned(),
            0x30fc => "ｰ".to_owned(),
            0x3000 => " ".to_owned(),
            _ => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn katakana_is_halved_with_its_voiced_marks() {
        assert_eq!(half_width("ヤマダ タロウ"), "ﾔﾏﾀﾞ ﾀﾛｳ");
        assert_eq!(half_width("パーク"), "ﾊﾟｰｸ");
        assert_eq!(half_width("ヴ"), "ｳﾞ");
    }

    #[test]
    fn the_pacs_holds_every_ordered_study_with_japanese_names() {
        let dir = tempfile::tempdir().unwrap();
        let report = generate_images(dir.path(), 12, 42).unwrap();
        let again = generate_images(&dir.path().join("again"), 12, 42).unwrap();
        assert_eq!(report.bytes, again.bytes, "deterministic");
        let studies: Vec<&ImageStudy> = report.facilities.iter().flat_map(|(_, s)| s).collect();
        assert!(studies.iter().any(|study| study.order.is_some()));
        assert!(studies.iter().any(|study| study.order.is_none()));
        assert_eq!(
            report.files as usize,
            studies.iter().map(|study| study.instances()).sum::<usize>()
        );
        // A Shōnai file names its patient in IR 13 + IR 87.
        let shonai = &report.facilities[0].1[0];
        let file = dir
            .path()
            .join("pacs")
            .join(&shonai.facility)
            .join(&shonai.patient_id)
            .join(&shonai.uid)
            .join("1-1.dcm");
        let bytes = std::fs::read(file).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(
            bytes
                .windows(29)
                .any(|w| w == b"ISO 2022 IR 13\\ISO 2022 IR 87")
        );
        assert!(bytes.windows(3).any(|w| w == b"\x1b$B"));
    }
}
