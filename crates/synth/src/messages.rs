//! The people, charts and HL7 messages of the synthetic region.

use std::io;

use tsunagi_core::time::civil_from_days;

use crate::{
    Hospital, Rng, Writer,
    vendor::{LabCodes, PatientIdForm, VendorProfile},
};

mod documents;
mod exams;
mod mml;
mod orders;
mod stay;
mod vocabulary;

pub(crate) use documents::DocumentWriter;
use vocabulary::*;

/// A person of the region (who may have charts at two hospitals).
pub(crate) struct Person {
    family: (&'static str, &'static str),
    given: (&'static str, &'static str),
    sex: &'static str,
    birth: String,
    postal: &'static str,
    address: String,
    phone: String,
}

fn ymd(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}{month:02}{day:02}")
}

fn full_width_digits(number: u64) -> String {
    number
        .to_string()
        .chars()
        .map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c))
        .collect()
}

impl Person {
    pub(crate) fn random(rng: &mut Rng, index: usize) -> Self {
        let male = rng.chance(50);
        let family = *rng.pick(FAMILY);
        let given = if male {
            *rng.pick(MALE)
        } else {
            *rng.pick(FEMALE)
        };
        // Born 1930-01-01 .. 2019-12-31.
        let birth_days = -14_610 + rng.below(32_870) as i64;
        let (postal, town) = *rng.pick(TOWNS);
        // U+2212 MINUS: JIS 0x215D, which the pinned decoder reads as U+FF0D.
        let address = format!(
            "{town}{}\u{2212}{}\u{2212}{}",
            full_width_digits(rng.between(1, 9)),
            full_width_digits(rng.between(1, 30)),
            full_width_digits(rng.between(1, 20))
        );
        let phone = format!("0235-{:02}-{:04}", 10 + index % 89, rng.below(10_000));
        Self {
            family,
            given,
            sex: if male { "M" } else { "F" },
            birth: ymd(birth_days),
            postal,
            address,
            phone,
        }
    }
}

/// One patient's chart at one hospital.
pub(crate) struct Chart<'p> {
    hospital: Hospital,
    person: &'p Person,
    pid: String,
    order_counter: u64,
    /// The visit number (PV1-19) of the visit being written; empty outside visits.
    visit: String,
}

/// A radiology study a chart's OMG-11 notice reported performed.
#[derive(Clone)]
pub(crate) struct Study {
    /// When it was performed.
    pub(crate) done: When,
    /// The placer order number.
    pub(crate) order: String,
    /// Its Study Instance UID.
    pub(crate) uid: String,
    /// Its accession number.
    pub(crate) accession: String,
}

/// A point in time: days since the epoch plus seconds of the day.
#[derive(Clone, Copy)]
pub(crate) struct When {
    pub(crate) days: i64,
    pub(crate) seconds: u32,
    pub(crate) millis: u32,
}

impl When {
    pub(crate) fn date(self) -> String {
        ymd(self.days)
    }
    /// The time of day as DICOM TM (HHMMSS).
    pub(crate) fn hhmmss(self) -> String {
        format!(
            "{:02}{:02}{:02}",
            self.seconds / 3600,
            (self.seconds / 60) % 60,
            self.seconds % 60
        )
    }
    fn minutes(self) -> String {
        format!(
            "{}{:02}{:02}",
            self.date(),
            self.seconds / 3600,
            (self.seconds / 60) % 60
        )
    }
    pub(crate) fn seconds(self) -> String {
        format!("{}{:02}", self.minutes(), self.seconds % 60)
    }
    fn later(self, seconds: u32) -> Self {
        let total = self.seconds + seconds;
        Self {
            days: self.days + i64::from(total / 86_400),
            seconds: total % 86_400,
            millis: (self.millis + 137) % 1000,
        }
    }
    fn plus_days(self, days: i64) -> Self {
        Self {
            days: self.days + days,
            ..self
        }
    }
}

/// Places values at HL7 field positions (for MSH, position n is MSH-(n+1): the field
/// separator itself is MSH-1).
fn segment(id: &str, values: &[(usize, &str)]) -> String {
    let last = values
        .iter()
        .map(|(position, _)| *position)
        .max()
        .unwrap_or(0);
    let mut fields = vec![String::new(); last + 1];
    fields[0] = id.to_owned();
    for (position, value) in values {
        fields[*position] = (*value).to_owned();
    }
    fields.join("|")
}

impl<'p> Chart<'p> {
    pub(crate) fn new(hospital: Hospital, person: &'p Person, index: usize) -> Self {
        let pid = hospital.vendor.profile().patient_id(index);
        Self {
            hospital,
            person,
            pid,
            order_counter: 0,
            visit: String::new(),
        }
    }

    /// The patient's id at this hospital.
    pub(crate) fn patient_id(&self) -> &str {
        &self.pid
    }

    /// The hospital's code.
    pub(crate) fn facility(&self) -> &'static str {
        self.hospital.code
    }

    /// (family, given), each (kanji, katakana).
    pub(crate) fn names(&self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        (self.person.family, self.person.given)
    }

    /// Birth date, YYYYMMDD.
    pub(crate) fn birth(&self) -> &str {
        &self.person.birth
    }

    /// `M` or `F`.
    pub(crate) fn sex(&self) -> &'static str {
        self.person.sex
    }

    /// How this chart's hospital writes.
    fn profile(&self) -> &'static VendorProfile {
        self.hospital.vendor.profile()
    }

    fn occurred(&self, when: When) -> String {
        self.profile().occurred(when)
    }

    fn order_number(&mut self, days: i64) -> String {
        self.order_counter += 1;
        let (year, _, _) = civil_from_days(days);
        if self.profile().short_order_numbers {
            format!(
                "{:04}{:09}",
                year,
                self.order_counter + self.pid.len() as u64 * 1000
            )
        } else {
            format!(
                "{:04}{:011}",
                year,
                self.order_counter + (self.pid.as_bytes()[self.pid.len() - 1] as u64) * 100_000
            )
        }
    }

    fn file_name(
        &self,
        date: &str,
        data_type: &str,
        order: &str,
        when: When,
        department: &str,
        flag: u8,
    ) -> String {
        format!(
            "{}_{date}_{data_type}_{order}_{}_{department}_{flag}",
            self.pid,
            self.occurred(when)
        )
    }

    fn msh(&self, when: When, message_type: &str, control: &str) -> String {
        let timestamp = self.profile().msh7(when);
        let (charset, extension) = self.profile().charset;
        segment(
            "MSH",
            &[
                (1, "^~\\&"),
                (2, "EHR"),
                (3, self.hospital.code),
                (4, "GW"),
                (5, "TSUNAGI"),
                (6, &timestamp),
                (8, message_type),
                (9, control),
                (10, "P"),
                (11, "2.5"),
                (17, charset),
                (19, extension),
                (
                    20,
                    "SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO",
                ),
            ],
        )
    }

    fn pid_segment(&self) -> String {
        let p = self.person;
        let pid3 = match self.profile().pid3 {
            PatientIdForm::Bare => self.pid.clone(),
            PatientIdForm::Cx => format!("{}^^^^PI", self.pid),
            PatientIdForm::Unpadded => self.pid.trim_start_matches('0').to_owned(),
        };
        let names = if self.profile().names_off_by_one {
            // Off-by-one kanji components (L in 6, I in 7), as one generator writes them.
            format!(
                "{}^{}^^^^L^I~{}^{}^^^^^L^P",
                p.family.0, p.given.0, p.family.1, p.given.1
            )
        } else {
            format!(
                "{}^{}^^^^^L^I~{}^{}^^^^^L^P",
                p.family.0, p.given.0, p.family.1, p.given.1
            )
        };
        let address = format!("^^^^{}^JPN^H^{}", p.postal, p.address);
        let phone = format!("^PRN^PH^^^^^^^^^{}", p.phone);
        segment(
            "PID",
            &[
                (1, "0001"),
                (3, &pid3),
                (5, &names),
                (7, &p.birth),
                (8, p.sex),
                (11, &address),
                (13, &phone),
            ],
        )
    }

    fn department(&self, rng: &mut Rng) -> (&'static str, &'static str, String) {
        let (code, name, local) = *rng.pick(DEPARTMENTS);
        let sent = if self.profile().local_departments {
            local.to_owned()
        } else {
            code.to_owned()
        };
        (code, name, sent)
    }

    fn doctor(&self, rng: &mut Rng) -> String {
        let (family, _) = *rng.pick(FAMILY);
        format!("D{:04}^{}^医師^^^^^^^L^^^^^I", rng.below(300), family)
    }

    fn pv1(
        &self,
        class: &str,
        location: &str,
        doctor: &str,
        department: &str,
        admit: &str,
        discharge: &str,
    ) -> String {
        segment(
            "PV1",
            &[
                (1, "0001"),
                (2, class),
                (3, location),
                (7, doctor),
                (10, department),
                (19, &self.visit),
                (44, admit),
                (45, discharge),
            ],
        )
    }

    fn lab_code(&self, lab: &Lab) -> String {
        match self.profile().lab_codes {
            LabCodes::JlacAndLocal => {
                format!("{}^{}^JC10^{}^{}^99X03", lab.0, lab.1, lab.5, lab.1)
            }
            LabCodes::LocalOnly => format!("{}^{}^99NLB", lab.5, lab.1),
            LabCodes::Jlac => format!("{}^{}^JC10", lab.0, lab.1),
        }
    }

    fn drug_code(&self, drug: &Drug) -> String {
        if self.profile().local_drugs {
            format!("{}^{}^99HMD", drug.6, drug.1)
        } else {
            format!("{}^{}^HOT9", drug.0, drug.1)
        }
    }

    /// Writes every record of this chart.
    pub(crate) fn write(mut self, rng: &mut Rng, writer: &mut Writer) -> io::Result<()> {
        // Care spans 2023-04-01 .. 2025-03-31.
        let start_days = 19_448 + rng.below(300) as i64;
        let first = When {
            days: start_days,
            seconds: 9 * 3600 + rng.below(8 * 3600) as u32,
            millis: rng.below(1000) as u32,
        };
        self.patient_record(rng, writer, first)?;
        if rng.chance(30) {
            self.allergies(rng, writer, first)?;
        }
        let visits = rng.between(2, 6);
        let mut when = first;
        for _ in 0..visits {
            when = When {
                days: when.days + rng.between(14, 60) as i64,
                seconds: 9 * 3600 + rng.below(7 * 3600) as u32,
                millis: rng.below(1000) as u32,
            };
            self.outpatient_visit(rng, writer, when)?;
            self.visit.clear();
        }
        if rng.chance(20) {
            let admit = When {
                days: when.days + rng.between(3, 20) as i64,
                ..when
            };
            self.inpatient_stay(rng, writer, admit)?;
            self.visit.clear();
        }
        if rng.chance(70) {
            self.problem_list(rng, writer, when)?;
        }
        Ok(())
    }

    fn patient_record(&mut self, rng: &mut Rng, writer: &mut Writer, when: When) -> io::Result<()> {
        let updated = rng.chance(20);
        let mut versions = vec![(when, false)];
        if updated {
            versions.push((when.plus_days(rng.between(30, 200) as i64), true));
        }
        let count = versions.len();
        for (index, (at, changed)) in versions.into_iter().enumerate() {
            let flag = if index + 1 == count { 1 } else { 2 };
            let mut pid = self.pid_segment();
            if changed {
                pid = pid.replace(
                    &self.person.phone,
                    &format!("090-{:04}-{:04}", rng.below(10_000), rng.below(10_000)),
                );
            }
            let height = format!("{}.{}", rng.between(140, 185), rng.below(10));
            let weight = format!("{}.{}", rng.between(40, 95), rng.below(10));
            let abo = *rng.pick(&["A", "B", "O", "AB"]);
            let mut segments = vec![
                self.msh(at, "ADT^A08^ADT_A01", &format!("A{}", self.occurred(at))),
                segment("EVN", &[(2, &at.minutes())]),
                pid,
                self.pv1("O", "", "", "", "", ""),
                segment(
                    "OBX",
                    &[
                        (1, "1"),
                        (2, "NM"),
                        (3, "9N001000000000001^身長^JC10"),
                        (5, &height),
                        (6, "cm^cm^ISO+"),
                        (11, "F"),
                    ],
                ),
                segment(
                    "OBX",
                    &[
                        (1, "2"),
                        (2, "NM"),
                        (3, "9N006000000000001^体重^JC10"),
                        (5, &weight),
                        (6, "kg^kg^ISO+"),
                        (11, "F"),
                    ],
                ),
                segment(
                    "OBX",
                    &[
                        (1, "3"),
                        (2, "CWE"),
                        (3, "5H010000009199911^血液型-ABO式^JC10"),
                        (5, &format!("{abo}^{abo}^JSHR002")),
                        (11, "F"),
                    ],
                ),
            ];
            if rng.chance(15) {
                segments.push(segment(
                    "AL1",
                    &[
                        (1, "1"),
                        (2, "DA^薬剤アレルギー^HL70127"),
                        (3, "1^ペニシリン^99XYZ"),
                        (4, "MO^中等度^HL70128"),
                        (5, "発疹"),
                    ],
                ));
            }
            let insurer = format!("{:08}", 6_000_000 + rng.below(9000));
            segments.push(segment(
                "IN1",
                &[
                    (1, "1"),
                    (2, "C0^国民健康保険^JHSD0001"),
                    (3, &insurer),
                    (4, "鶴岡市"),
                    (
                        10,
                        &format!("{:04}~{:06}", rng.below(10_000), rng.below(1_000_000)),
                    ),
                    (12, "20230401"),
                    (17, "SEL^本人^HL70063"),
                ],
            ));
            let name = self.file_name("-", "ADT-00", "999999999999999", at, "-", flag);
            writer.write(&name, &segments)?;
        }
        Ok(())
    }

    fn allergies(&mut self, rng: &mut Rng, writer: &mut Writer, when: When) -> io::Result<()> {
        let mut segments = vec![
            self.msh(
                when,
                "ADT^A60^ADT_A60",
                &format!("L{}", self.occurred(when)),
            ),
            segment("EVN", &[(2, &when.minutes())]),
            self.pid_segment(),
        ];
        // Partial onset (YYYYMM) and free-text onset.
        let onset = format!("{}{:02}", rng.between(1970, 2020), rng.between(1, 12));
        segments.push(segment(
            "IAM",
            &[
                (1, "1"),
                (2, "LA^花粉アレルギー^HL70127"),
                (3, "5A1002216023023^スギ^JC10"),
                (4, "MI^軽度^HL70128"),
                (5, "目のかゆみ"),
                (6, "A^追加^HL70323"),
                (11, &onset),
            ],
        ));
        if rng.chance(50) {
            segments.push(segment(
                "IAM",
                &[
                    (1, "2"),
                    (2, "FA^食物アレルギー^HL70127"),
                    (3, "5A1002411023006^ソバ^JC10"),
                    (4, "SV^重度^HL70128"),
                    (5, "じんま疹"),
                    (6, "A^追加^HL70323"),
                    (12, "小学校低学年の頃"),
                ],
            ));
        }
        let name = self.file_name("-", "ADT-61", "999999999999999", when, "-", 1);
        writer.write(&name, &segments)
    }

    fn problem_list(&mut self, rng: &mut Rng, writer: &mut Writer, when: When) -> io::Result<()> {
        let snapshots = if rng.chance(30) { 2 } else { 1 };
        let mut problems: Vec<usize> = Vec::new();
        for _ in 0..rng.between(1, 4) {
            let index = rng.below(DISEASES.len() as u64) as usize;
            if !problems.contains(&index) {
                problems.push(index);
            }
        }
        for snapshot in 0..snapshots {
            let at = when.plus_days(snapshot as i64 * 30);
            let last = snapshot + 1 == snapshots;
            // The later snapshot resolves the first problem and drops the last one.
            let listed: Vec<usize> = if last && snapshots == 2 && problems.len() > 1 {
                problems[..problems.len() - 1].to_vec()
            } else {
                problems.clone()
            };
            let mut segments = vec![
                self.msh(at, "PPR^ZD1^PPR_ZD1", &format!("B{}", self.occurred(at))),
                self.pid_segment(),
            ];
            for (position, index) in listed.iter().enumerate() {
                let (key, name, icd) = DISEASES[*index];
                let instance = format!("{}{:03}", self.pid, index);
                let onset = ymd(when.days - 400 - 37 * *index as i64);
                let resolved = if last && snapshots == 2 && position == 0 {
                    at.date()
                } else {
                    String::new()
                };
                let suspected = if *index == 4 { "1" } else { "" };
                segments.push(segment(
                    "PRB",
                    &[
                        (1, "AD"),
                        (2, &at.date()),
                        (3, &format!("{key}^{name}^MDCDX2")),
                        (4, &instance),
                        (7, &onset),
                        (9, &resolved),
                        (10, &format!("{icd}^^I10^O^外来時^JHSD0004")),
                        (13, suspected),
                        (16, &onset),
                        (
                            18,
                            if position == 0 {
                                "1^主診断^JHSD0007"
                            } else {
                                "2^副診断^JHSD0007"
                            },
                        ),
                    ],
                ));
                segments.push(segment("ZPR", &[(2, &format!("{key}^{name}^MDCDX2"))]));
            }
            segments.push(self.orc(
                "NW",
                "999999999999999",
                "",
                at,
                "D0001^主治^医師^^^^^^^L^^^^^I",
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ));
            let flag = if last { 1 } else { 2 };
            writer.write(
                &self.file_name("-", "PPR-01", "999999999999999", at, "01", flag),
                &segments,
            )?;
        }
        Ok(())
    }
}
