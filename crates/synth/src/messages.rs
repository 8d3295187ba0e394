//! The people, charts and HL7 messages of the synthetic region.

use std::io;

use tsunagi_core::time::civil_from_days;

use crate::{Hospital, Rng, Vendor, Writer};

/// (kanji, kana). Several contain delimiter bytes in JIS: 日 `|`, 入 `~`, 本/宮 `\`, 五 `^`.
const FAMILY: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("渡辺", "ワタナベ"),
    ("伊藤", "イトウ"),
    ("斎藤", "サイトウ"),
    ("阿部", "アベ"),
    ("佐々木", "ササキ"),
    ("五十嵐", "イガラシ"),
    ("本間", "ホンマ"),
    ("日野", "ヒノ"),
    ("入江", "イリエ"),
    ("富樫", "トガシ"),
    ("菅原", "スガワラ"),
    ("宮本", "ミヤモト"),
    ("奥田", "オクダ"),
    ("土門", "ドモン"),
    ("庄司", "ショウジ"),
    ("池田", "イケダ"),
    ("加藤", "カトウ"),
];
/// Male given names; 勇 and 陸 contain `&`.
const MALE: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("健一", "ケンイチ"),
    ("翔太", "ショウタ"),
    ("勇", "イサム"),
    ("陸", "リク"),
    ("大輔", "ダイスケ"),
    ("直樹", "ナオキ"),
];
/// Female given names; 愛 contains `&`, 美 and 京 contain `~`.
const FEMALE: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("美咲", "ミサキ"),
    ("愛子", "アイコ"),
    ("陽子", "ヨウコ"),
    ("京子", "キョウコ"),
    ("恵子", "ケイコ"),
    ("由美", "ユミ"),
    ("智子", "トモコ"),
];
const TOWNS: &[(&str, &str)] = &[
    ("997-0035", "山形県鶴岡市馬場町"),
    ("998-0044", "山形県酒田市中町"),
    ("997-0011", "山形県鶴岡市宝田"),
    ("998-0828", "山形県酒田市あきほ町"),
    ("999-7781", "山形県東田川郡庄内町余目"),
    ("999-6711", "山形県酒田市飛島"),
];

/// A lab test: JLAC10, name, unit, low, high, local code, decimals.
type Lab = (
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
    &'static str,
    usize,
);
/// A drug: HOT9, name, unit code, unit name, JAMI usage code, usage text, local code.
type Drug = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
/// One prescribed line: Rp number, drug, dose, days.
type PrescribedLine = (u64, Drug, u64, u64);

/// Lab tests.
const LABS: &[Lab] = &[
    ("3A010000002327101", "総蛋白", "g/dL", 6.6, 8.1, "10222", 1),
    (
        "3A015000002327101",
        "アルブミン",
        "g/dL",
        4.1,
        5.1,
        "10223",
        1,
    ),
    ("3B035000002327201", "AST", "U/L", 13.0, 30.0, "10207", 0),
    ("3B045000002327201", "ALT", "U/L", 7.0, 23.0, "10208", 0),
    (
        "3C015000002327101",
        "クレアチニン",
        "mg/dL",
        0.46,
        0.79,
        "10301",
        2,
    ),
    (
        "3D010000001926101",
        "グルコース",
        "mg/dL",
        73.0,
        109.0,
        "10401",
        0,
    ),
    (
        "2A990000001930952",
        "白血球数",
        "10^3/uL",
        3.3,
        8.6,
        "20001",
        1,
    ),
    (
        "2A030000001930101",
        "ヘモグロビン",
        "g/dL",
        11.6,
        14.8,
        "20002",
        1,
    ),
    (
        "5C070000002306001",
        "ＣＲＰ",
        "mg/dL",
        0.0,
        0.14,
        "30001",
        2,
    ),
];
/// Drugs.
const DRUGS: &[Drug] = &[
    (
        "108665201",
        "ダーゼン錠（５ｍｇ）",
        "TAB",
        "錠",
        "1013044400000000",
        "内服・経口・１日３回朝昼夕食後",
        "D0101",
    ),
    (
        "110626901",
        "パンスポリンＴ錠（１００ｍｇ）",
        "TAB",
        "錠",
        "1013044400000000",
        "内服・経口・１日３回朝昼夕食後",
        "D0102",
    ),
    (
        "103835401",
        "ロキソニン錠６０ｍｇ",
        "TAB",
        "錠",
        "1013044400000000",
        "内服・経口・１日３回朝昼夕食後",
        "D0103",
    ),
    (
        "105271807",
        "ムコスタ錠１００ｍｇ",
        "TAB",
        "錠",
        "1013044400000000",
        "内服・経口・１日３回朝昼夕食後",
        "D0104",
    ),
    (
        "112004401",
        "アムロジン錠５ｍｇ",
        "TAB",
        "錠",
        "1011000400000000",
        "内服・経口・１日１回朝食後",
        "D0105",
    ),
    (
        "111334301",
        "メトグルコ錠２５０ｍｇ",
        "TAB",
        "錠",
        "1012040400000000",
        "内服・経口・１日２回朝夕食後",
        "D0106",
    ),
];
const INJECTIONS: &[(&str, &str, &str, &str)] = &[
    ("620007329", "ソリタ－Ｔ３号輸液５００ｍＬ", "HON", "本"),
    ("620002559", "アドナ注（静脈用）５０ｍｇ", "AMP", "アンプル"),
    ("620004476", "生理食塩液５００ｍＬ", "HON", "本"),
];
/// Diagnoses: MEDIS key, name, ICD-10.
const DISEASES: &[(&str, &str, &str)] = &[
    ("20054174", "胃炎", "K297"),
    ("20061241", "高血圧症", "I10"),
    ("20063126", "２型糖尿病", "E11"),
    ("20063982", "脂質異常症", "E785"),
    ("20057463", "肺炎", "J189"),
    ("20058127", "骨粗鬆症", "M8199"),
    ("20061935", "慢性心不全", "I509"),
];
/// Departments: SS-MIX2 code, name, Nihonkai's local 3-digit code.
const DEPARTMENTS: &[(&str, &str, &str)] = &[
    ("01", "内科", "101"),
    ("09", "外科", "201"),
    ("13", "整形外科", "301"),
    ("08", "小児科", "401"),
];

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

/// A point in time: days since the epoch plus seconds of the day.
#[derive(Clone, Copy)]
struct When {
    days: i64,
    seconds: u32,
    millis: u32,
}

impl When {
    fn date(self) -> String {
        ymd(self.days)
    }
    fn minutes(self) -> String {
        format!(
            "{}{:02}{:02}",
            self.date(),
            self.seconds / 3600,
            (self.seconds / 60) % 60
        )
    }
    fn seconds(self) -> String {
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
        let pid = match hospital.vendor {
            Vendor::A => format!("{:07}", 1_000_000 + index),
            Vendor::B => format!("20{:08}", index),
            Vendor::C => format!("{:08}", 10_000 + index),
        };
        Self {
            hospital,
            person,
            pid,
            order_counter: 0,
            visit: String::new(),
        }
    }

    fn order_number(&mut self, days: i64) -> String {
        self.order_counter += 1;
        let (year, _, _) = civil_from_days(days);
        match self.hospital.vendor {
            Vendor::B => format!(
                "{:04}{:09}",
                year,
                self.order_counter + self.pid.len() as u64 * 1000
            ),
            _ => format!(
                "{:04}{:011}",
                year,
                self.order_counter + (self.pid.as_bytes()[self.pid.len() - 1] as u64) * 100_000
            ),
        }
    }

    fn occurred(&self, when: When) -> String {
        match self.hospital.vendor {
            // 15 digits (the documented short form).
            Vendor::C => format!("{}{}", when.seconds(), when.millis / 100),
            _ => format!("{}{:03}", when.seconds(), when.millis),
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
        let (timestamp, charset, extension) = match self.hospital.vendor {
            Vendor::A => (
                format!("{}.{:04}", when.seconds(), when.millis * 10),
                "~ISO IR87",
                "ISO 2022-1994",
            ),
            Vendor::B => (
                format!("{}.{:02}", when.seconds(), when.millis / 10),
                "~ISOIR87",
                "ISO2022-1994",
            ),
            Vendor::C => (
                format!("{}{:03}", when.seconds(), when.millis),
                "~ISO IR87",
                "ISO2022-1994",
            ),
        };
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
        let pid3 = match self.hospital.vendor {
            Vendor::A => self.pid.clone(),
            Vendor::B => format!("{}^^^^PI", self.pid),
            Vendor::C => self.pid.trim_start_matches('0').to_owned(),
        };
        let names = match self.hospital.vendor {
            // Off-by-one kanji components (L in 6, I in 7), as one generator writes them.
            Vendor::B => format!(
                "{}^{}^^^^L^I~{}^{}^^^^^L^P",
                p.family.0, p.given.0, p.family.1, p.given.1
            ),
            _ => format!(
                "{}^{}^^^^^L^I~{}^{}^^^^^L^P",
                p.family.0, p.given.0, p.family.1, p.given.1
            ),
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
        let sent = if self.hospital.vendor == Vendor::B {
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
        match self.hospital.vendor {
            Vendor::A => format!("{}^{}^JC10^{}^{}^99X03", lab.0, lab.1, lab.5, lab.1),
            Vendor::B => format!("{}^{}^99NLB", lab.5, lab.1),
            Vendor::C => format!("{}^{}^JC10", lab.0, lab.1),
        }
    }

    fn drug_code(&self, drug: &Drug) -> String {
        match self.hospital.vendor {
            Vendor::C => format!("{}^{}^99HMD", drug.6, drug.1),
            _ => format!("{}^{}^HOT9", drug.0, drug.1),
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

    fn outpatient_visit(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        when: When,
    ) -> io::Result<()> {
        let (_, department_name, department) = self.department(rng);
        let doctor = self.doctor(rng);
        let date = when.date();
        // Each outpatient visit has its number, as an EHR's reception gives one.
        self.visit = format!("O{}", when.days);
        // Reception.
        let reception = vec![
            self.msh(
                when,
                "ADT^A04^ADT_A01",
                &format!("R{}", self.occurred(when)),
            ),
            segment("EVN", &[(2, &when.minutes())]),
            self.pid_segment(),
            self.pv1(
                "O",
                &format!("{department}^^^^^C"),
                &doctor,
                &department,
                &when.minutes(),
                "",
            ),
        ];
        writer.write(
            &self.file_name(&date, "ADT-12", "999999999999999", when, &department, 1),
            &reception,
        )?;
        let orc_department = format!("{department}^{department_name}^99XY1");
        if rng.chance(70) {
            self.prescription(rng, writer, when.later(600), &doctor, &orc_department)?;
        }
        if rng.chance(60) {
            self.lab(rng, writer, when.later(300), &doctor, &orc_department)?;
        }
        if rng.chance(15) {
            self.radiology(rng, writer, when.later(1200), &doctor)?;
        }
        if rng.chance(10) {
            self.ecg(rng, writer, when.later(1500), &doctor)?;
        }
        if rng.chance(5) {
            self.endoscopy(rng, writer, when.later(1800), &doctor)?;
        }
        Ok(())
    }

    // One argument per ORC field it fills; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn orc(
        &self,
        control: &str,
        order: &str,
        rp: &str,
        when: When,
        doctor: &str,
        department: &str,
        kind: &str,
    ) -> String {
        segment(
            "ORC",
            &[
                (1, control),
                (2, order),
                (4, rp),
                (9, &when.seconds()),
                (10, "U001^入力^花子^^^^^^^L^^^^^I"),
                (12, doctor),
                (17, department),
                (21, self.hospital.name),
                (29, kind),
            ],
        )
    }

    fn prescription(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        when: When,
        doctor: &str,
        department: &str,
    ) -> io::Result<()> {
        let order = self.order_number(when.days);
        let date = when.date();
        let rps = rng.between(1, 3);
        let mut drugs = Vec::new();
        for rp in 1..=rps {
            for _ in 0..rng.between(1, 2) {
                drugs.push((rp, *rng.pick(DRUGS), rng.between(1, 3), rng.between(3, 28)));
            }
        }
        let build = |chart: &Chart<'_>, drugs: &[PrescribedLine], at: When, control: &str| {
            let mut segments = vec![
                chart.msh(at, "RDE^O11^RDE_O11", &format!("P{}", chart.occurred(at))),
                chart.pid_segment(),
                chart.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            ];
            for (rp, drug, dose, days) in drugs {
                segments.push(chart.orc(
                    control,
                    &order,
                    &rp.to_string(),
                    when,
                    doctor,
                    department,
                    "O^外来患者オーダ^HL70482",
                ));
                let total = (dose * 3).to_string();
                segments.push(segment(
                    "RXE",
                    &[
                        (2, &chart.drug_code(drug)),
                        (3, &dose.to_string()),
                        (5, &format!("{}^{}^MR9P", drug.2, drug.3)),
                        (7, "^食後に服用\\T\\水で^99XYZ"),
                        (10, &(dose * 3 * days).to_string()),
                        (11, &format!("{}^{}^MR9P", drug.2, drug.3)),
                        (19, &format!("{total}^{}&{}&MR9P", drug.2, drug.3)),
                        (21, "OHP^外来処方^MR9P~OHI^院内処方^MR9P"),
                    ],
                ));
                segments.push(segment(
                    "TQ1",
                    &[
                        (1, "1"),
                        (3, &format!("{}&{}&JAMISDP01", drug.4, drug.5)),
                        (6, &format!("{days}^d")),
                        (7, &format!("{}00", when.date())),
                    ],
                ));
                segments.push(segment("RXR", &[(1, "PO^口^HL70162")]));
            }
            segments
        };
        let department_code = department.split('^').next().unwrap_or("01").to_owned();
        let roll = rng.below(100);
        if roll < 10 {
            // Updated: the first version is superseded by a corrected one.
            let old = build(
                self,
                &drugs[..drugs.len().saturating_sub(1).max(1)],
                when,
                "NW",
            );
            writer.write(
                &self.file_name(&date, "OMP-01", &order, when, &department_code, 2),
                &old,
            )?;
            let later = when.later(3600);
            let new = build(self, &drugs, later, "XO");
            writer.write(
                &self.file_name(&date, "OMP-01", &order, later, &department_code, 1),
                &new,
            )?;
        } else if roll < 15 {
            // Deleted: the data file renamed to _0 and the deletion message written as _0.
            let old = build(self, &drugs, when, "NW");
            writer.write(
                &self.file_name(&date, "OMP-01", &order, when, &department_code, 0),
                &old,
            )?;
            let later = when.later(1800);
            let cancel = build(self, &drugs, later, "CA");
            writer.write(
                &self.file_name(&date, "OMP-01", &order, later, &department_code, 0),
                &cancel,
            )?;
        } else {
            let segments = build(self, &drugs, when, "NW");
            writer.write(
                &self.file_name(&date, "OMP-01", &order, when, &department_code, 1),
                &segments,
            )?;
        }
        Ok(())
    }

    fn lab(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        when: When,
        doctor: &str,
        department: &str,
    ) -> io::Result<()> {
        let order = self.order_number(when.days);
        let date = when.date();
        let count = rng.between(4, LABS.len() as u64) as usize;
        let mut tests: Vec<usize> = (0..LABS.len()).collect();
        for index in (1..tests.len()).rev() {
            let other = rng.below(index as u64 + 1) as usize;
            tests.swap(index, other);
        }
        tests.truncate(count);
        tests.sort_unstable();
        let specimen_id = format!("{:012}", rng.below(1_000_000_000_000));
        // Order.
        let mut order_segments = vec![
            self.msh(
                when,
                "OML^O33^OML_O33",
                &format!("O{}", self.occurred(when)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            segment(
                "SPM",
                &[(1, "1"), (4, "023^血清^JC10"), (17, &when.minutes())],
            ),
            self.orc(
                "NW",
                &order,
                "",
                when,
                doctor,
                department,
                "O^外来患者オーダ^HL70482",
            ),
            segment(
                "OBR",
                &[(1, "1"), (2, &order), (4, "E002^生化学的検査^99O03")],
            ),
        ];
        for (position, index) in tests.iter().enumerate() {
            order_segments.push(segment(
                "OBX",
                &[
                    (1, &(position + 1).to_string()),
                    (3, &self.lab_code(&LABS[*index])),
                    (11, "O"),
                ],
            ));
        }
        writer.write(
            &self.file_name(&date, "OML-01", &order, when, "01", 1),
            &order_segments,
        )?;
        // Result, reported an hour later.
        let reported = when.later(3600);
        let mut segments = vec![
            self.msh(
                reported,
                "OUL^R22^OUL_R22",
                &format!("Q{}", self.occurred(reported)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", "", "", "", ""),
            segment(
                "SPM",
                &[
                    (1, "1"),
                    (2, &specimen_id),
                    (4, "023^血清^JC10"),
                    (17, &when.minutes()),
                ],
            ),
            segment(
                "OBR",
                &[
                    (1, "1"),
                    (2, &order),
                    (3, &specimen_id),
                    (4, "E002^生化学的検査^99O03"),
                    (7, &when.minutes()),
                    (22, &reported.seconds()),
                    (25, "F"),
                ],
            ),
            segment(
                "ORC",
                &[
                    (1, "SC"),
                    (2, &order),
                    (3, &specimen_id),
                    (5, "CM"),
                    (9, &reported.seconds()),
                    (12, doctor),
                ],
            ),
        ];
        for (position, index) in tests.iter().enumerate() {
            let lab = LABS[*index];
            let raw = lab.3 + (lab.4 - lab.3) * (rng.below(160) as f64 / 100.0 - 0.3);
            let value = format!("{:.*}", lab.6, raw.max(0.0));
            let flag = if raw > lab.4 {
                "H"
            } else if raw < lab.3 {
                "L"
            } else {
                ""
            };
            let range = format!("{:.*}-{:.*}", lab.6, lab.3, lab.6, lab.4);
            let (value_type, value) = match rng.below(20) {
                0 => ("ST", format!("> {}", (lab.4 * 10.0).round())),
                1 => ("ST", format!("< {:.*}", lab.6.max(1), lab.3 / 2.0)),
                2 => ("ST", ">= 1".to_owned()),
                _ => ("NM", value),
            };
            segments.push(segment(
                "OBX",
                &[
                    (1, &(position + 1).to_string()),
                    (2, value_type),
                    (3, &self.lab_code(&lab)),
                    (5, &value),
                    (6, &format!("{}^{}^99XYZ", lab.2, lab.2)),
                    (7, &range),
                    (8, flag),
                    (11, "F"),
                    (14, &when.minutes()),
                ],
            ));
        }
        // Qualitative urine protein.
        let qualitative = *rng.pick(&["-", "  +-", " 1 +", " 2 +"]);
        segments.push(segment(
            "OBX",
            &[
                (1, &(tests.len() + 1).to_string()),
                (2, "ST"),
                (
                    3,
                    &match self.hospital.vendor {
                        Vendor::B => "40001^尿蛋白^99NLB".to_owned(),
                        _ => "1A020000000191111^尿蛋白^JC10".to_owned(),
                    },
                ),
                (5, qualitative),
                (7, "-"),
                (11, "F"),
                (14, &when.minutes()),
            ],
        ));
        let updated = rng.chance(8);
        if updated {
            // A preliminary report superseded by the final one.
            let mut preliminary = segments.clone();
            preliminary.truncate(6 + tests.len() / 2);
            writer.write(
                &self.file_name(&date, "OML-11", &order, reported, "01", 2),
                &preliminary,
            )?;
            let final_at = reported.later(7200);
            writer.write(
                &self.file_name(&date, "OML-11", &order, final_at, "01", 1),
                &segments,
            )
        } else {
            writer.write(
                &self.file_name(&date, "OML-11", &order, reported, "01", 1),
                &segments,
            )
        }
    }

    fn radiology(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        when: When,
        doctor: &str,
    ) -> io::Result<()> {
        let order = self.order_number(when.days);
        let date = when.date();
        let study = format!("1.2.392.200036.9116.2.{}.{}", self.hospital.code, order);
        let accession = format!("A{order}");
        let procedure = "10000002000102000000010000000000^胸部.Ｘ線単純撮影.立位正面(A→P)^JJ1017";
        let ordered = vec![
            self.msh(
                when,
                "OMG^O19^OMG_O19",
                &format!("G{}", self.occurred(when)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            self.orc(
                "NW",
                &order,
                "",
                when,
                doctor,
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ),
            segment("TQ1", &[(1, "1"), (9, "R^^HL70485")]),
            segment("OBR", &[(2, &order), (4, procedure)]),
            segment(
                "OBX",
                &[
                    (1, "1"),
                    (2, "NM"),
                    (3, "01-02^体重^JSHR001"),
                    (5, &rng.between(40, 90).to_string()),
                    (6, "kg^kg^ISO+"),
                    (11, "F"),
                ],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-01", &order, when, "01", 1),
            &ordered,
        )?;
        let done = when.later(2400);
        let performed = vec![
            self.msh(
                done,
                "OMI^Z23^OMI_Z23",
                &format!("I{}", self.occurred(done)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            self.orc(
                "NW",
                &order,
                "",
                done,
                doctor,
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ),
            segment(
                "OBR",
                &[(2, &order), (4, procedure), (7, &done.minutes()), (25, "F")],
            ),
            segment(
                "IPC",
                &[(1, &accession), (2, "P1"), (3, &study), (5, "CR^^DCM")],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-11", &order, done, "01", 1),
            &performed,
        )
    }

    fn ecg(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        when: When,
        doctor: &str,
    ) -> io::Result<()> {
        let order = self.order_number(when.days);
        let date = when.date();
        let ordered = vec![
            self.msh(
                when,
                "OMG^O19^OMG_O19",
                &format!("E{}", self.occurred(when)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            self.orc(
                "NW",
                &order,
                "",
                when,
                doctor,
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ),
            segment("TQ1", &[(1, "1"), (9, "A^^HL70485")]),
            segment(
                "OBR",
                &[(1, "1"), (2, &order), (4, "9A110^標準１２誘導心電図^JC10")],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-03", &order, when, "01", 1),
            &ordered,
        )?;
        let done = when.later(900);
        let heart_rate = rng.between(52, 98).to_string();
        let qt = rng.between(360, 440).to_string();
        let result = vec![
            self.msh(
                done,
                "ORU^R01^ORU_R01",
                &format!("F{}", self.occurred(done)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            segment(
                "OBR",
                &[
                    (1, "1"),
                    (2, &order),
                    (4, "9A110^標準１２誘導心電図^JC10"),
                    (7, &done.minutes()),
                    (22, &done.seconds()),
                    (25, "F"),
                ],
            ),
            segment(
                "OBX",
                &[
                    (1, "1"),
                    (2, "TX"),
                    (3, "9A100&IMP^心電図所見^JC10"),
                    (4, "1"),
                    (5, "洞調律\\.br\\異常なし"),
                    (11, "F"),
                ],
            ),
            segment(
                "OBX",
                &[
                    (1, "2"),
                    (2, "NM"),
                    (3, "32769^心拍数^99MFR"),
                    (4, "2"),
                    (5, &heart_rate),
                    (6, "bpm"),
                    (11, "F"),
                ],
            ),
            segment(
                "OBX",
                &[
                    (1, "3"),
                    (2, "NM"),
                    (3, "56008^QT 時間^99MFR"),
                    (4, "2"),
                    (5, &qt),
                    (6, "msec"),
                    (11, "F"),
                ],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-13", &order, done, "01", 1),
            &result,
        )
    }

    fn endoscopy(
        &mut self,
        _rng: &mut Rng,
        writer: &mut Writer,
        when: When,
        doctor: &str,
    ) -> io::Result<()> {
        let order = self.order_number(when.days);
        let date = when.date();
        let procedure = "11000000000^検査.上部.-.-.-.-^LENDO";
        let ordered = vec![
            self.msh(
                when,
                "OMG^O19^OMG_O19",
                &format!("N{}", self.occurred(when)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            self.orc(
                "NW",
                &order,
                "",
                when,
                doctor,
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ),
            segment("TQ1", &[(1, "1"), (9, "R^^HL70485")]),
            segment("OBR", &[(2, &order), (4, procedure)]),
            segment(
                "OBX",
                &[
                    (1, "1"),
                    (2, "TX"),
                    (3, "MS3-34^臨床病名^JSHR"),
                    (5, "胃潰瘍の疑い"),
                    (11, "F"),
                ],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-02", &order, when, "01", 1),
            &ordered,
        )?;
        let done = when.later(5400);
        let study = format!("1.2.392.200036.9125.{}.{}", self.hospital.code, order);
        let performed = vec![
            self.msh(
                done,
                "OMI^Z23^OMI_Z23",
                &format!("M{}", self.occurred(done)),
            ),
            self.pid_segment(),
            self.pv1("O", "01^^^^^C", doctor, "01", "", ""),
            self.orc(
                "NW",
                &order,
                "",
                done,
                doctor,
                "01^内科^99XY1",
                "O^外来患者オーダ^HL70482",
            ),
            segment("OBR", &[(2, &order), (4, procedure), (7, &done.minutes())]),
            segment(
                "OBX",
                &[
                    (1, "1"),
                    (2, "TX"),
                    (3, "MS3-24^所見^JSHR"),
                    (5, "胃角部に潰瘍瘢痕"),
                    (11, "F"),
                ],
            ),
            segment(
                "IPC",
                &[(1, &format!("E{order}")), (3, &study), (5, "ES^^DCM")],
            ),
        ];
        writer.write(
            &self.file_name(&date, "OMG-12", &order, done, "01", 1),
            &performed,
        )
    }

    fn inpatient_stay(
        &mut self,
        rng: &mut Rng,
        writer: &mut Writer,
        admit: When,
    ) -> io::Result<()> {
        // One number for the whole stay: plan, admission, transfers, discharge.
        self.visit = format!("I{}", admit.days);
        let doctor = self.doctor(rng);
        let (_, _, department) = self.department(rng);
        let ward = format!(
            "{}^{}^{}^^^N",
            rng.between(3, 6) * 10 + 1,
            rng.between(301, 330),
            rng.between(1, 4)
        );
        let days = rng.between(3, 14) as i64;
        let discharge = When {
            days: admit.days + days,
            seconds: 11 * 3600,
            millis: 500,
        };
        let dept = department.as_str();
        let adt = |chart: &Chart<'_>, at: When, message: &str, extra: Vec<String>, pv1: String| {
            let mut segments = vec![
                chart.msh(at, message, &format!("T{}", chart.occurred(at))),
                segment("EVN", &[(2, &at.minutes()), (6, &at.minutes())]),
                chart.pid_segment(),
                pv1,
            ];
            segments.extend(extra);
            segments
        };
        let admit_date = admit.date();
        if rng.chance(50) {
            let planned = admit.plus_days(-3);
            let pv2 = segment("PV2", &[(8, &admit.minutes())]);
            let segments = adt(
                self,
                planned,
                "ADT^A14^ADT_A05",
                vec![pv2],
                self.pv1("I", &ward, &doctor, dept, "", ""),
            );
            writer.write(
                &self.file_name(&admit_date, "ADT-21", "999999999999999", planned, dept, 1),
                &segments,
            )?;
        }
        let cancelled = rng.chance(5);
        let admission = adt(
            self,
            admit,
            "ADT^A01^ADT_A01",
            vec![],
            self.pv1("I", &ward, &doctor, dept, &admit.minutes(), ""),
        );
        if cancelled {
            writer.write(
                &self.file_name(&admit_date, "ADT-22", "999999999999999", admit, dept, 2),
                &admission,
            )?;
            let cancel_at = admit.later(3600);
            let cancel = adt(
                self,
                cancel_at,
                "ADT^A11^ADT_A09",
                vec![],
                self.pv1("I", &ward, &doctor, dept, &admit.minutes(), ""),
            );
            return writer.write(
                &self.file_name(&admit_date, "ADT-22", "999999999999999", cancel_at, dept, 1),
                &cancel,
            );
        }
        writer.write(
            &self.file_name(&admit_date, "ADT-22", "999999999999999", admit, dept, 1),
            &admission,
        )?;
        // Injections and their administration.
        let injection_day = admit.later(3600);
        let order = self.order_number(injection_day.days);
        let (code_a, name_a, unit_a, unit_name_a) = *rng.pick(INJECTIONS);
        let rp = format!("{order}_01_001");
        let injection = vec![
            self.msh(
                injection_day,
                "RDE^O11^RDE_O11",
                &format!("J{}", self.occurred(injection_day)),
            ),
            self.pid_segment(),
            self.pv1("I", &ward, &doctor, dept, "", ""),
            self.orc(
                "NW",
                &order,
                &rp,
                injection_day,
                &doctor,
                "01^内科^99XY1",
                "I^入院患者オーダ^HL70482",
            ),
            segment(
                "RXE",
                &[
                    (2, "00^一般^99I02"),
                    (3, "500"),
                    (5, "ML^ミリリットル^MR9P"),
                    (6, "INJ^注射剤^MR9P"),
                    (7, "^５時間一定速度で^99IC6"),
                    (21, "IHP^入院処方^MR9P"),
                    (23, "100"),
                    (24, "ml/hr^ミリリットル／時間^ISO+"),
                ],
            ),
            segment(
                "TQ1",
                &[
                    (1, "1"),
                    (7, &format!("{}0800", injection_day.date())),
                    (8, &format!("{}1300", injection_day.date())),
                ],
            ),
            segment(
                "RXR",
                &[(1, "IV^静脈内^HL70162"), (3, "IVP^点滴ポンプ^HL70164")],
            ),
            segment(
                "RXC",
                &[
                    (1, "B"),
                    (2, &format!("{code_a}^{name_a}^HOT9")),
                    (3, "1"),
                    (4, &format!("{unit_a}^{unit_name_a}^MR9P")),
                ],
            ),
            segment(
                "RXC",
                &[
                    (1, "A"),
                    (2, "620002559^アドナ注（静脈用）５０ｍｇ^HOT9"),
                    (3, "1"),
                    (4, "AMP^アンプル^MR9P"),
                ],
            ),
        ];
        let injection_date = injection_day.date();
        writer.write(
            &self.file_name(&injection_date, "OMP-02", &order, injection_day, "01", 1),
            &injection,
        )?;
        let given = injection_day.later(7200);
        let administration = vec![
            self.msh(
                given,
                "RAS^O17^RAS_O17",
                &format!("K{}", self.occurred(given)),
            ),
            self.pid_segment(),
            self.pv1("I", &ward, &doctor, dept, "", ""),
            self.orc(
                "NW",
                &order,
                &rp,
                given,
                &doctor,
                "01^内科^99XY1",
                "I^入院患者オーダ^HL70482",
            ),
            segment(
                "RXA",
                &[
                    (1, "0"),
                    (2, "1"),
                    (3, &given.seconds()),
                    (4, &given.later(18_000).seconds()),
                    (5, &format!("{code_a}^{name_a}^HOT9")),
                    (6, "1"),
                    (7, &format!("{unit_a}^{unit_name_a}^MR9P")),
                    (9, "^左手に実施^99IC2"),
                    (10, "N200^看護^花子^^^^^^^L^^^^^I"),
                    (20, "CP"),
                ],
            ),
            segment(
                "RXR",
                &[(1, "IV^静脈内^HL70162"), (3, "IVP^点滴ポンプ^HL70164")],
            ),
        ];
        writer.write(
            &self.file_name(&given.date(), "OMP-12", &order, given, "01", 1),
            &administration,
        )?;
        // Oral medication given on the ward.
        let oral_order = self.order_number(given.days);
        let drug = *rng.pick(DRUGS);
        let oral = vec![
            self.msh(
                given,
                "RAS^O17^RAS_O17",
                &format!("H{}", self.occurred(given)),
            ),
            self.pid_segment(),
            self.pv1("I", &ward, &doctor, dept, "", ""),
            self.orc(
                "NW",
                &oral_order,
                "1",
                given,
                &doctor,
                "01^内科^99XY1",
                "I^入院患者オーダ^HL70482",
            ),
            segment(
                "RXA",
                &[
                    (1, "0"),
                    (2, "1"),
                    (3, &given.minutes()),
                    (4, &given.minutes()),
                    (5, &self.drug_code(&drug)),
                    (6, "1"),
                    (7, &format!("{}^{}^MR9P", drug.2, drug.3)),
                    (10, "N201^看護^次郎^^^^^^^L^^^^^I"),
                    (20, "CP"),
                ],
            ),
            segment("RXR", &[(1, "PO^口^HL70162")]),
        ];
        writer.write(
            &self.file_name(&given.date(), "OMP-11", &oral_order, given, "01", 1),
            &oral,
        )?;
        // Diet.
        let diet_order = self.order_number(admit.days);
        let diet = vec![
            self.msh(
                admit,
                "OMD^O03^OMD_O03",
                &format!("D{}", self.occurred(admit)),
            ),
            self.pid_segment(),
            self.pv1("I", &ward, &doctor, dept, "", ""),
            self.orc(
                "NW",
                &diet_order,
                "",
                admit,
                &doctor,
                "01^内科^99XY1",
                "I^入院患者オーダ^HL70482",
            ),
            segment(
                "TQ1",
                &[
                    (1, "1"),
                    (3, "TID&１日３回&HL70335"),
                    (7, &format!("{}07", admit.plus_days(1).date())),
                    (9, "R^ルーチン^HL70485"),
                ],
            ),
            segment(
                "ODS",
                &[
                    (1, "D"),
                    (3, "001^常食^99XY3"),
                    (4, "塩分控えめ\\.br\\水分制限あり"),
                ],
            ),
        ];
        writer.write(
            &self.file_name(&admit_date, "OMD", &diet_order, admit, "01", 1),
            &diet,
        )?;
        // Leave of absence and return.
        if rng.chance(20) {
            let out = admit.plus_days(1).later(3600);
            let back = out.later(6 * 3600);
            let leave = adt(
                self,
                out,
                "ADT^A21^ADT_A21",
                vec![],
                self.pv1("I", &ward, &doctor, dept, &admit.minutes(), ""),
            );
            writer.write(
                &self.file_name(&out.date(), "ADT-31", "999999999999999", out, dept, 1),
                &leave,
            )?;
            let returned = adt(
                self,
                back,
                "ADT^A22^ADT_A21",
                vec![],
                self.pv1("I", &ward, &doctor, dept, &admit.minutes(), ""),
            );
            writer.write(
                &self.file_name(&back.date(), "ADT-32", "999999999999999", back, dept, 1),
                &returned,
            )?;
        }
        // Transfer planned and done.
        if rng.chance(30) {
            let at = admit.plus_days(2);
            let new_ward = format!(
                "{}^{}^1^^^N",
                rng.between(3, 6) * 10 + 2,
                rng.between(401, 420)
            );
            let planned = adt(
                self,
                at,
                "ADT^A15^ADT_A15",
                vec![segment("PV2", &[(8, &at.later(3600).minutes())])],
                self.pv1("I", &new_ward, &doctor, dept, &admit.minutes(), ""),
            );
            writer.write(
                &self.file_name(&at.date(), "ADT-41", "999999999999999", at, dept, 1),
                &planned,
            )?;
            let done = at.later(3600);
            let transfer_pv1 = segment(
                "PV1",
                &[
                    (1, "0001"),
                    (2, "I"),
                    (3, &new_ward),
                    (6, &ward),
                    (7, &doctor),
                    (10, dept),
                    (19, &self.visit),
                    (44, &admit.minutes()),
                ],
            );
            let transferred = adt(self, done, "ADT^A02^ADT_A02", vec![], transfer_pv1);
            writer.write(
                &self.file_name(&done.date(), "ADT-42", "999999999999999", done, dept, 1),
                &transferred,
            )?;
        }
        // Discharge planned and done.
        let plan_at = discharge.plus_days(-1);
        let planned = adt(
            self,
            plan_at,
            "ADT^A16^ADT_A16",
            vec![segment("PV2", &[(9, &discharge.minutes())])],
            self.pv1("I", &ward, &doctor, dept, &admit.minutes(), ""),
        );
        writer.write(
            // 診療日 of a planned discharge is the planned day (PV2-9), as the guideline says.
            &self.file_name(
                &discharge.date(),
                "ADT-51",
                "999999999999999",
                plan_at,
                dept,
                1,
            ),
            &planned,
        )?;
        let discharged = adt(
            self,
            discharge,
            "ADT^A03^ADT_A03",
            vec![],
            self.pv1(
                "I",
                &ward,
                &doctor,
                dept,
                &admit.minutes(),
                &discharge.minutes(),
            ),
        );
        writer.write(
            &self.file_name(
                &discharge.date(),
                "ADT-52",
                "999999999999999",
                discharge,
                dept,
                1,
            ),
            &discharged,
        )
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
