//! A chart's documents in SS-MIX2 extended storage: progress notes (some revised), discharge
//! summaries, referral letters (their CDA code JMIX `MD0020730`) as CDA R2 with a JAHIS-style
//! header, and scanned documents as PDF. Written as UTF-8, each version in a content folder of
//! its own with its main file `main_document.xml` or `.pdf`.

use std::io;

use super::{Chart, DEPARTMENTS, DISEASES, FAMILY, Study, When, ymd};
use crate::{Rng, vendor::VendorProfile};

/// Findings a progress note's sections draw from.
const SUBJECTIVE: &[&str] = &[
    "仙骨部の痛みが続く。",
    "夜間に咳が出る。",
    "食欲は普通。",
    "階段で息切れがする。",
    "膝の痛みは軽くなった。",
];
const OBJECTIVE: &[&str] = &[
    "仙骨部に褥瘡（DESIGN-R d2-e1s3i0g1n0p0）。",
    "両下肺野に軽度の湿性ラ音。",
    "下腿浮腫なし。",
    "創部の発赤なし。",
    "血圧 132/78 mmHg、脈拍 72/分。",
];
const PLAN: &[&str] = &[
    "除圧マットレスに変更し、2時間ごとの体位変換。",
    "内服継続、2週間後に再診。",
    "胸部X線を予約。",
    "訪問看護に創処置を依頼。",
    "減塩指導を継続。",
];

/// A chest radiograph's findings and the impressions they lead to.
const READINGS: &[(&str, &str)] = &[
    (
        "両肺野に明らかな浸潤影を認めない。心胸郭比 48%。",
        "異常所見なし",
    ),
    (
        "右下肺野に径 12 mm の結節影を認める。",
        "右下葉結節影（要CT精査）",
    ),
    (
        "両側肋横角の鈍化を認める。心胸郭比 56%。",
        "両側胸水、心拡大",
    ),
    (
        "左上肺野に索状影を認める。陳旧性変化と考える。",
        "陳旧性炎症性変化",
    ),
];

/// Writes documents of one storage: `<root>/<pid[0:3]>/<pid[3:6]>/<pid>/<date>/<type>/<content>/`.
pub(crate) struct DocumentWriter {
    pub(crate) root: std::path::PathBuf,
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

impl DocumentWriter {
    fn put(
        &mut self,
        pid: &str,
        date: &str,
        data_type: &str,
        content: &str,
        name: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let folder = self
            .root
            .join(&pid[..3.min(pid.len())])
            .join(pid.get(3..6).unwrap_or(""))
            .join(pid)
            .join(date)
            .join(data_type)
            .join(content);
        std::fs::create_dir_all(&folder)?;
        self.files += 1;
        self.bytes += bytes.len() as u64;
        std::fs::write(folder.join(name), bytes)
    }

    /// Writes `bytes` at `relative` below the root (an MML export's layout).
    pub(crate) fn put_file(&mut self, relative: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.root.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        self.files += 1;
        self.bytes += bytes.len() as u64;
        std::fs::write(path, bytes)
    }
}

/// The data-type folders of a vendor: progress notes, discharge summaries, referral letters,
/// scanned documents.
fn data_types(profile: &VendorProfile) -> [String; 4] {
    let system = if profile.local_departments {
        "99NKS"
    } else {
        "99ZZZ"
    };
    [
        format!("PN01^診療録^{system}^11506-3^経過記録^LN"),
        format!("DS01^退院時サマリー^{system}^18842-5^退院時サマリー^LN"),
        "^紹介状^^57133-1^紹介状^LN".to_owned(),
        format!("SC01^スキャン文書^{system}^^^"),
    ]
}

/// The local code the content folder names (the standard one when there is no local one).
fn code_of(data_type: &str) -> &str {
    let mut parts = data_type.split('^');
    let local = parts.next().unwrap_or_default();
    if local.is_empty() {
        parts.nth(2).unwrap_or_default()
    } else {
        local
    }
}

impl Chart<'_> {
    /// Writes this chart's documents; with `every_kind`, one of each kind at least (the demo's
    /// patient).
    pub(crate) fn write_documents(
        &self,
        rng: &mut Rng,
        writer: &mut DocumentWriter,
        every_kind: bool,
        min_notes: u64,
    ) -> io::Result<()> {
        let types = data_types(self.profile());
        // Care spans 2023-04-01 .. 2025-03-31.
        let first = 19_448 + rng.below(300) as i64;
        let notes = (1 + rng.below(3)).max(min_notes);
        for number in 0..notes {
            let when = When {
                days: first + number as i64 * (7 + rng.below(60) as i64),
                seconds: 9 * 3600 + rng.below(8 * 3600) as u32,
                millis: rng.below(1000) as u32,
            };
            let key = format!("PN{number:04}");
            let revised = rng.chance(10);
            let versions: &[(When, char)] = if revised {
                &[
                    (when, '2'),
                    (
                        When {
                            seconds: when.seconds + 3600,
                            ..when
                        },
                        '1',
                    ),
                ]
            } else {
                &[(when, '1')]
            };
            let body = self.progress_note_body(rng);
            for (at, flag) in versions {
                let cda = self.cda(
                    at,
                    "11506-3\" codeSystem=\"2.16.840.1.113883.6.1\" codeSystemName=\"LOINC\" displayName=\"経過記録",
                    "経過記録",
                    &format!("<documentationOf><serviceEvent classCode=\"ENC\"><effectiveTime><low value=\"{0}\"/><high value=\"{0}\"/></effectiveTime></serviceEvent></documentationOf>", at.date()),
                    &body,
                    rng,
                );
                self.put_version(
                    writer,
                    &types[0],
                    &key,
                    at,
                    *flag,
                    "main_document.xml",
                    cda.as_bytes(),
                )?;
            }
        }
        if rng.chance(15) || every_kind {
            let admitted = first + 30 + rng.below(200) as i64;
            let days = 5 + rng.below(20) as i64;
            let at = When {
                days: admitted + days,
                seconds: 15 * 3600,
                millis: 0,
            };
            let disease = rng.pick(DISEASES).1;
            let body = format!(
                "<component><section><title>入院時診断</title><text>{disease}</text></section></component>\
                 <component><section><title>入院後経過</title><text><paragraph>{days}日間の入院加療で改善し、退院。</paragraph></text></section></component>"
            );
            let cda = self.cda(
                &at,
                "18842-5\" codeSystem=\"2.16.840.1.113883.6.1\" codeSystemName=\"LOINC\" displayName=\"退院時サマリー",
                "退院時サマリー",
                &format!(
                    "<documentationOf><serviceEvent classCode=\"ACCM\"><effectiveTime><low value=\"{}\"/><high value=\"{}\"/></effectiveTime></serviceEvent></documentationOf>",
                    ymd(admitted),
                    ymd(admitted + days)
                ),
                &body,
                rng,
            );
            self.put_version(
                writer,
                &types[1],
                "DS0001",
                &at,
                '1',
                "main_document.xml",
                cda.as_bytes(),
            )?;
        }
        if rng.chance(30) || every_kind {
            let at = When {
                days: first + rng.below(400) as i64,
                seconds: 10 * 3600 + rng.below(3600) as u32,
                millis: 0,
            };
            let disease = rng.pick(DISEASES).1;
            let body = format!(
                "<component><section><title>紹介目的</title><text>{disease}の精査加療をお願いします。</text></section></component>\
                 <component><section><title>傷病名</title><text><list><item>{disease}</item></list></text></section></component>"
            );
            let cda = self.cda(
                &at,
                "MD0020730\" codeSystem=\"1.2.392.200119.5.3.1\" codeSystemName=\"JMIX\" displayName=\"診療情報提供書",
                "診療情報提供書",
                "",
                &body,
                rng,
            );
            self.put_version(
                writer,
                &types[2],
                "RF0001",
                &at,
                '1',
                "main_document.xml",
                cda.as_bytes(),
            )?;
        }
        if rng.chance(20) || every_kind {
            let at = When {
                days: first + rng.below(400) as i64,
                seconds: 11 * 3600,
                millis: 0,
            };
            let pdf = minimal_pdf(&format!("scan {} {}", self.pid, at.date()));
            self.put_version(
                writer,
                &types[3],
                "SC0001",
                &at,
                '1',
                "main_document.pdf",
                &pdf,
            )?;
        }
        Ok(())
    }

    /// Writes the imaging report of each radiology study this chart's OMG-11 notices reported
    /// (a CDA, LOINC 18748-4): its Study Instance UID in `documentationOf/serviceEvent/id`, its
    /// accession number and placer order number in `inFulfillmentOf/order/id`.
    pub(crate) fn write_imaging_reports(
        &self,
        rng: &mut Rng,
        writer: &mut DocumentWriter,
        studies: &[Study],
    ) -> io::Result<()> {
        let system = if self.profile().local_departments {
            "99NKS"
        } else {
            "99ZZZ"
        };
        let data_type = format!("RR01^画像診断報告書^{system}^18748-4^画像診断報告書^LN");
        let facility = self.hospital.code;
        for (number, study) in studies.iter().enumerate() {
            let at = study.done.later(1800 + rng.below(3600) as u32);
            let (finding, impression) = *rng.pick(READINGS);
            let body = format!(
                "<component><section><title>検査</title><text>胸部単純X線撮影 立位正面</text></section></component>\
                 <component><section><title>所見</title><text><paragraph>{finding}</paragraph></text></section></component>\
                 <component><section><code code=\"19005-8\" codeSystem=\"2.16.840.1.113883.6.1\"/><title>診断</title><text>{impression}</text></section></component>"
            );
            let header = format!(
                "<inFulfillmentOf><order><id root=\"1.2.392.200119.6.103.1{facility}\" extension=\"{}\"/><id root=\"1.2.392.200119.6.104.1{facility}\" extension=\"{}\"/></order></inFulfillmentOf>\
                 <documentationOf><serviceEvent classCode=\"ACT\"><id root=\"{}\"/><code code=\"CR\" codeSystem=\"1.2.840.10008.2.16.4\"/><effectiveTime value=\"{}+0900\"/></serviceEvent></documentationOf>",
                study.accession,
                study.order,
                study.uid,
                study.done.seconds()
            );
            let cda = self.cda(
                &at,
                "18748-4\" codeSystem=\"2.16.840.1.113883.6.1\" codeSystemName=\"LOINC\" displayName=\"画像診断報告書",
                "画像診断報告書",
                &header,
                &body,
                rng,
            );
            self.put_version(
                writer,
                &data_type,
                &format!("RR{number:04}"),
                &at,
                '1',
                "main_document.xml",
                cda.as_bytes(),
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn put_version(
        &self,
        writer: &mut DocumentWriter,
        data_type: &str,
        key: &str,
        at: &When,
        flag: char,
        name: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let date = at.date();
        let department = DEPARTMENTS[at.days.rem_euclid(DEPARTMENTS.len() as i64) as usize].0;
        let content = format!(
            "{}_{date}_{}_{key}_{}{:03}_{department}_{flag}",
            self.pid,
            code_of(data_type),
            at.seconds(),
            at.millis
        );
        writer.put(&self.pid, &date, data_type, &content, name, bytes)
    }

    fn progress_note_body(&self, rng: &mut Rng) -> String {
        format!(
            "<component><section><title>S（主観的情報）</title><text>{}</text></section></component>\
             <component><section><title>O（客観的情報）</title><text><paragraph>{}</paragraph><list><item>体温 {}.{}℃</item></list></text></section></component>\
             <component><section><title>A/P（評価と計画）</title><text><paragraph>{}</paragraph></text></section></component>",
            rng.pick(SUBJECTIVE),
            rng.pick(OBJECTIVE),
            36 + rng.below(2),
            rng.below(10),
            rng.pick(PLAN)
        )
    }

    /// A CDA R2 document of this chart: header, `documentation_of` and the sections `body`.
    fn cda(
        &self,
        at: &When,
        code: &str,
        title: &str,
        documentation_of: &str,
        body: &str,
        rng: &mut Rng,
    ) -> String {
        let facility = self.hospital.code;
        let person = self.person;
        let (doctor, _) = *rng.pick(FAMILY);
        let doctor_id = format!("D{:04}", rng.below(300));
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n\
<realmCode code=\"JP\"/><typeId root=\"2.16.840.1.113883.1.3\" extension=\"POCD_HD000040\"/>\n\
<id root=\"1.2.392.200119.6.102.1{facility}\" extension=\"{pid}-{stamp}\"/>\n\
<code code=\"{code}\"/>\n<title>{title}</title>\n<effectiveTime value=\"{stamp}+0900\"/>\n\
<confidentialityCode code=\"N\" codeSystem=\"2.16.840.1.113883.5.25\"/>\n\
<recordTarget><patientRole><id root=\"1.2.392.200119.6.101.1{facility}\" extension=\"{pid}\"/>\
<patient><name use=\"IDE\"><family>{f0}</family><given>{g0}</given></name><name use=\"SYL\"><family>{f1}</family><given>{g1}</given></name>\
<administrativeGenderCode code=\"{sex}\" codeSystem=\"2.16.840.1.113883.5.1\"/><birthTime value=\"{birth}\"/></patient></patientRole></recordTarget>\n\
<author><time value=\"{stamp}+0900\"/><assignedAuthor><id root=\"1.2.392.200119.6.102.1{facility}\" extension=\"{doctor_id}\"/>\
<assignedPerson><name><family>{doctor}</family></name></assignedPerson>\
<representedOrganization><id root=\"1.2.392.100495.20.3.23\" extension=\"{facility}\"/><name>{hospital}</name></representedOrganization></assignedAuthor></author>\n\
<custodian><assignedCustodian><representedCustodianOrganization><id root=\"1.2.392.100495.20.3.23\" extension=\"{facility}\"/><name>{hospital}</name></representedCustodianOrganization></assignedCustodian></custodian>\n\
{documentation_of}\n<component><structuredBody>{body}</structuredBody></component>\n</ClinicalDocument>\n",
            pid = self.pid,
            stamp = at.seconds(),
            f0 = person.family.0,
            g0 = person.given.0,
            f1 = person.family.1,
            g1 = person.given.1,
            sex = person.sex,
            birth = person.birth,
            hospital = self.hospital.name,
        )
    }
}

/// A small, valid one-page PDF whose page says `text` (ASCII).
fn minimal_pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", index + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}
