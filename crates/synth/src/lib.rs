//! A deterministic synthetic region: SS-MIX2 standardized storages of three hospitals.
//!
//! `generate_region(out, patients, seed)` writes `<out>/<facility code>/…` for the Shōnai,
//! Nihonkai and Homma hospitals plus `<out>/region.json` naming them. The same seed always gives
//! byte-identical files. Nothing here is real: names are common surnames and given names put
//! together at random, codes are real code-system codes of common items.
//!
//! The hospitals' EHR vendors differ the way real ones do ([`Vendor`]): segment terminators
//! (CR + 0x1C, LF, CRLF), order-number width (15 or 13), MSH-18/MSH-20 spelling, MSH-7
//! precision (4 fraction digits, 2, or 17 digits without a dot), PID-3 form (bare, CX, without
//! leading zeros), name-component layout, and local code tables (lab codes, drug codes,
//! department codes) that only the facility tables in `mappings/` resolve.
//!
//! Every data type of the mapping is covered, with updates (`_2` + `_1`), deletions (`_0`),
//! cancel events, names whose kanji contain delimiter bytes (日 `|`, 入 `~`, 本 `\`, 五 `^`,
//! 愛 `&`), escapes, partial dates, inequality and qualitative lab values.

mod images;
mod messages;
mod random;
mod vendor;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;
use tsunagi_hl7v2::charset::Iso2022JpEncoder;

pub use images::{ImageSeries, ImageStudy, ImagesReport, generate_images};
pub use random::Rng;

/// How a hospital's EHR writes its storage (each vendor's [`vendor::VendorProfile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Vendor {
    /// CR terminators and a trailing 0x1C, 15-digit order numbers, `~ISO IR87` /
    /// `ISO 2022-1994`, MSH-7 with 4 fraction digits, bare PID-3, JLAC10 + local lab code pairs.
    A,
    /// LF terminators, 13-digit order numbers, `~ISOIR87` / `ISO2022-1994`, MSH-7 with 2 fraction
    /// digits, PID-3 as CX, off-by-one kanji name components, 3-digit local department codes,
    /// local-only lab codes.
    B,
    /// CRLF terminators, 15-digit order numbers, MSH-7 as 17 digits without a dot, PID-3 without
    /// the folder id's leading zeros, local drug codes.
    C,
}

impl Vendor {
    /// How this vendor writes, as data.
    pub(crate) fn profile(self) -> &'static vendor::VendorProfile {
        match self {
            Self::A => &vendor::A,
            Self::B => &vendor::B,
            Self::C => &vendor::C,
        }
    }
}

/// One synthetic hospital.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hospital {
    /// 10-digit facility code.
    pub code: &'static str,
    /// Name.
    pub name: &'static str,
    /// Vendor behaviour.
    pub vendor: Vendor,
}

/// The three hospitals of the synthetic region.
pub const HOSPITALS: [Hospital; 3] = [
    Hospital {
        code: "0610100010",
        name: "荘内病院",
        vendor: Vendor::A,
    },
    Hospital {
        code: "0610200018",
        name: "日本海総合病院",
        vendor: Vendor::B,
    },
    Hospital {
        code: "0610300016",
        name: "本間病院",
        vendor: Vendor::C,
    },
];

/// What was generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionReport {
    /// Per hospital: code, name, storage root, patients, files.
    pub facilities: Vec<FacilityReport>,
    /// Distinct people.
    pub people: usize,
    /// People with records in two hospitals.
    pub shared: usize,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// One hospital's part of the region.
#[derive(Debug, Clone, Serialize)]
pub struct FacilityReport {
    /// Facility code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Storage root.
    pub root: PathBuf,
    /// Patients (charts) in this storage.
    pub patients: usize,
    /// Files.
    pub files: u64,
}

/// Writes files of one storage.
pub(crate) struct Writer {
    root: PathBuf,
    encoder: Iso2022JpEncoder,
    vendor: Vendor,
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    /// Writes nothing: a chart is replayed only to learn its radiology studies.
    dry: bool,
    /// The radiology studies performed (OMG-11) in what was written.
    pub(crate) studies: Vec<messages::Study>,
}

impl Writer {
    fn new(root: PathBuf, vendor: Vendor, dry: bool) -> Self {
        Writer {
            root,
            encoder: Iso2022JpEncoder::default(),
            vendor,
            files: 0,
            bytes: 0,
            dry,
            studies: Vec::new(),
        }
    }

    /// Writes one message under its SS-MIX2 path. `segments` are joined with the vendor's
    /// terminator and encoded as ISO-2022-JP.
    pub(crate) fn write(&mut self, name: &str, segments: &[String]) -> io::Result<()> {
        if self.dry {
            return Ok(());
        }
        let fields: Vec<&str> = name.split('_').collect();
        let patient = fields[0];
        let folder = self
            .root
            .join(&patient[..3.min(patient.len())])
            .join(patient.get(3..6).unwrap_or(""))
            .join(patient)
            .join(fields[1])
            .join(fields[2]);
        fs::create_dir_all(&folder)?;
        let terminator = self.vendor.profile().terminator;
        let mut text = segments.join(terminator);
        text.push_str(terminator);
        let mut bytes = self.encoder.encode(&text).map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {error}"))
        })?;
        if self.vendor.profile().trailing_file_separator {
            bytes.push(0x1C);
        }
        self.files += 1;
        self.bytes += bytes.len() as u64;
        fs::write(folder.join(name), bytes)
    }
}

/// Person `person` of the region of `seed`: who they are, the hospitals holding their charts
/// (their home hospital first), and the random stream their charts are written from.
fn assign(seed: u64, person: usize) -> (messages::Person, Vec<usize>, Rng) {
    let mut rng = Rng::new(seed ^ (person as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let people = messages::Person::random(&mut rng, person);
    let roll = rng.below(100);
    let home = if roll < 45 {
        0
    } else if roll < 80 {
        1
    } else {
        2
    };
    let mut hospitals = vec![home];
    if rng.chance(27) {
        hospitals.push((home + 1 + rng.below(2) as usize) % 3);
    }
    (people, hospitals, rng)
}

/// What [`generate_extended`] wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtendedReport {
    /// Per hospital: code, name, extended-storage root, patients, files.
    pub facilities: Vec<FacilityReport>,
    /// Document files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes the extended storage of the region of `patients` people and `seed` under
/// `<out>/extended/<facility code>/`: each chart's documents (progress notes, some revised,
/// discharge summaries, referral letters, scanned PDFs), for the same patients, names and ids
/// as [`generate_region`]'s standardized storage. The region's first person has one document of
/// every kind. Deterministic, and independent of the standardized storage.
pub fn generate_extended(out: &Path, patients: usize, seed: u64) -> io::Result<ExtendedReport> {
    generate_extended_with(out, patients, seed, 0)
}

/// [`generate_extended`] with at least `min_notes` progress notes per chart (the benchmark's
/// corpus of many documents per patient).
pub fn generate_extended_with(
    out: &Path,
    patients: usize,
    seed: u64,
    min_notes: u64,
) -> io::Result<ExtendedReport> {
    let mut writers: Vec<messages::DocumentWriter> = HOSPITALS
        .iter()
        .map(|hospital| messages::DocumentWriter {
            root: out.join("extended").join(hospital.code),
            files: 0,
            bytes: 0,
        })
        .collect();
    let mut charts = [0usize; 3];
    for writer in &writers {
        fs::create_dir_all(&writer.root)?;
    }
    for person in 0..patients {
        let (people, hospitals, mut replay) = assign(seed, person);
        // The person's charts replayed, unwritten, for the radiology studies their imaging
        // reports describe (the same UIDs and accession numbers as the OMG-11 notices).
        let mut studies: Vec<Vec<messages::Study>> = Vec::with_capacity(hospitals.len());
        for &hospital in &hospitals {
            let mut dry = Writer::new(PathBuf::new(), HOSPITALS[hospital].vendor, true);
            messages::Chart::new(HOSPITALS[hospital], &people, person)
                .write(&mut replay, &mut dry)?;
            studies.push(dry.studies);
        }
        for (hospital, studies) in hospitals.into_iter().zip(studies) {
            charts[hospital] += 1;
            // A stream of its own: the standardized storage stays byte for byte what it was.
            let mut rng = Rng::new(
                seed ^ 0xD0C5_D0C5
                    ^ ((person * 3 + hospital) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            let chart = messages::Chart::new(HOSPITALS[hospital], &people, person);
            chart.write_documents(&mut rng, &mut writers[hospital], person == 0, min_notes)?;
            chart.write_imaging_reports(&mut rng, &mut writers[hospital], &studies)?;
        }
    }
    let mut report = ExtendedReport::default();
    for (index, writer) in writers.iter().enumerate() {
        report.files += writer.files;
        report.bytes += writer.bytes;
        report.facilities.push(FacilityReport {
            code: HOSPITALS[index].code.to_owned(),
            name: HOSPITALS[index].name.to_owned(),
            root: writer.root.clone(),
            patients: charts[index],
            files: writer.files,
        });
    }
    Ok(report)
}

/// The hospital whose EHR exports MML 4.0 beside its SS-MIX2 storage (Homma).
pub const MML_HOSPITAL: usize = 2;

/// Writes the MML 4.0 export of the region of `patients` people and `seed` under
/// `<out>/mml/<facility code>/`: for each of [`MML_HOSPITAL`]'s charts, progress courses, some
/// surgeries and referral letters, with the patients' SS-MIX2 ids. The region's first person at
/// that hospital has one of each. Deterministic, independent of the other storages.
pub fn generate_mml(out: &Path, patients: usize, seed: u64) -> io::Result<FacilityReport> {
    let hospital = HOSPITALS[MML_HOSPITAL];
    let mut writer = messages::DocumentWriter {
        root: out.join("mml").join(hospital.code),
        files: 0,
        bytes: 0,
    };
    fs::create_dir_all(&writer.root)?;
    let mut charts = 0usize;
    for person in 0..patients {
        let (people, hospitals, _) = assign(seed, person);
        if !hospitals.contains(&MML_HOSPITAL) {
            continue;
        }
        let mut rng =
            Rng::new(seed ^ 0x4D4D_4C34 ^ (person as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let chart = messages::Chart::new(hospital, &people, person);
        chart.write_mml(&mut rng, &mut writer, charts == 0)?;
        charts += 1;
    }
    Ok(FacilityReport {
        code: hospital.code.to_owned(),
        name: hospital.name.to_owned(),
        root: writer.root.clone(),
        patients: charts,
        files: writer.files,
    })
}

/// Generates the region under `out` (created if missing).
pub fn generate_region(out: &Path, patients: usize, seed: u64) -> io::Result<RegionReport> {
    fs::create_dir_all(out)?;
    let mut writers: Vec<Writer> = HOSPITALS
        .iter()
        .map(|hospital| Writer::new(out.join(hospital.code), hospital.vendor, false))
        .collect();
    for writer in &writers {
        fs::create_dir_all(&writer.root)?;
    }
    let mut charts = [0usize; 3];
    let mut shared = 0usize;
    for person in 0..patients {
        let (people, hospitals, mut rng) = assign(seed, person);
        if hospitals.len() > 1 {
            shared += 1;
        }
        for hospital in hospitals {
            charts[hospital] += 1;
            let chart = messages::Chart::new(HOSPITALS[hospital], &people, person);
            chart.write(&mut rng, &mut writers[hospital])?;
        }
    }
    let mut report = RegionReport {
        people: patients,
        shared,
        ..RegionReport::default()
    };
    for (index, writer) in writers.iter().enumerate() {
        report.files += writer.files;
        report.bytes += writer.bytes;
        report.facilities.push(FacilityReport {
            code: HOSPITALS[index].code.to_owned(),
            name: HOSPITALS[index].name.to_owned(),
            root: writer.root.clone(),
            patients: charts[index],
            files: writer.files,
        });
    }
    let manifest = serde_json::to_vec_pretty(&report).map_err(io::Error::other)?;
    fs::write(out.join("region.json"), manifest)?;
    Ok(report)
}
