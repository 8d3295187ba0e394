//! A chart's MML 4.0 export, as Homma's EHR writes it beside its SS-MIX2 storage: progress
//! courses (free expression and S/O/A/P), surgeries and referral letters, one module per file
//! under `<root>/<patient id>/<uid>.xml`, UTF-8, with the patient's SS-MIX2 id as `masterId`.

use std::io;

use super::{Chart, DISEASES, FAMILY, When, ymd};
use crate::{Rng, messages::DocumentWriter};

const NS: &str = "xmlns=\"http://www.medxml.net/MML/v4/base/1.0\" \
xmlns:mmlCm=\"http://www.medxml.net/MML/v4/SharedComponent/Common/1.0\" \
xmlns:mmlNm=\"http://www.medxml.net/MML/v4/SharedComponent/Name/1.0\" \
xmlns:mmlFc=\"http://www.medxml.net/MML/v4/SharedComponent/Facility/1.0\" \
xmlns:mmlDp=\"http://www.medxml.net/MML/v4/SharedComponent/Department/1.0\" \
xmlns:mmlPsi=\"http://www.medxml.net/MML/v4/SharedComponent/PersonalizedInfo/1.0\" \
xmlns:mmlCi=\"http://www.medxml.net/MML/v4/SharedComponent/CreatorInfo/1.0\" \
xmlns:mmlSc=\"http://www.medxml.net/MML/v4/SharedComponent/Security/1.0\" \
xmlns:mmlPi=\"http://www.medxml.net/MML/v4/ContentModule/PatientInfo/1.0\" \
xmlns:mmlPc=\"http://www.medxml.net/MML/v4/ContentModule/ProgressCourse/1.0\" \
xmlns:mmlSg=\"http://www.medxml.net/MML/v4/ContentModule/Surgery/1.0\" \
xmlns:mmlRe=\"http://www.medxml.net/MML/v4/ContentModule/Referral/1.0\" \
xmlns:mmlSm=\"http://www.medxml.net/MML/v4/ContentModule/Summary/1.0\" \
xmlns:xhtml=\"http://www.w3.org/1999/xhtml\"";

/// Findings of a progress course: (subjective, objective, assessment, plan).
const COURSES: &[(&str, &str, &str, &str)] = &[
    (
        "腹痛なし。食事は全量摂取。",
        "腹部平坦・軟、圧痛なし。",
        "経過良好。",
        "2 週間後に再診。",
    ),
    (
        "創部の痛みが少しある。",
        "創部に軽度の発赤、滲出なし。",
        "創部感染の兆候なし。",
        "訪問看護に創部観察を依頼。",
    ),
    (
        "夜間の咳が続く。",
        "両下肺野に湿性ラ音。SpO2 95%。",
        "誤嚥性肺炎の疑い。",
        "胸部X線を予約、抗菌薬を開始。",
    ),
    (
        "ふらつきがある。",
        "血圧 102/60 mmHg。",
        "降圧薬の効き過ぎ。",
        "アムロジピンを減量。",
    ),
];

/// Operations: (K code, name, diagnosis, duration).
const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "K655-22",
        "腹腔鏡下胃切除術（悪性腫瘍手術）",
        "胃癌",
        "PT3H40M",
    ),
    ("K672-2", "腹腔鏡下胆嚢摘出術", "胆石症", "PT1H30M"),
    (
        "K633",
        "ヘルニア手術（鼠径ヘルニア）",
        "鼠径ヘルニア",
        "PT1H05M",
    ),
    (
        "K0461",
        "骨折観血的手術（大腿）",
        "大腿骨頸部骨折",
        "PT2H10M",
    ),
];

/// A deterministic 32-hex uid (as OpenDolphin writes them).
fn uid(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

impl Chart<'_> {
    fn mml_creator(&self, doctor: &str, doctor_id: &str) -> String {
        format!(
            "<mmlCi:CreatorInfo><mmlPsi:PersonalizedInfo><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"MML0024\">{doctor_id}</mmlCm:Id>\
<mmlPsi:personName><mmlNm:Name mmlNm:repCode=\"I\" mmlNm:tableId=\"MML0025\"><mmlNm:fullname>{doctor}</mmlNm:fullname></mmlNm:Name></mmlPsi:personName>\
<mmlFc:Facility><mmlFc:name mmlFc:repCode=\"I\" mmlFc:tableId=\"MML0025\">{}</mmlFc:name><mmlCm:Id mmlCm:type=\"insurance\" mmlCm:tableId=\"MML0027\">{}</mmlCm:Id></mmlFc:Facility>\
</mmlPsi:PersonalizedInfo><mmlCi:creatorLicense mmlCi:tableId=\"MML0026\">doctor</mmlCi:creatorLicense></mmlCi:CreatorInfo>",
            self.hospital.name, self.hospital.code
        )
    }

    /// One MML instance holding one module.
    fn mml(
        &self,
        creator: &str,
        kind: &str,
        uid: &str,
        title: &str,
        at: &When,
        module: &str,
    ) -> String {
        let when = at.seconds();
        let stamp = format!(
            "{}-{}-{}T{}:{}:{}",
            &when[0..4],
            &when[4..6],
            &when[6..8],
            &when[8..10],
            &when[10..12],
            &when[12..14]
        );
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Mml version=\"4.2.0\" createDate=\"{stamp}\" {NS}>\n\
<MmlHeader>{creator}<masterId><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"JPN{code}\">{pid}</mmlCm:Id></masterId></MmlHeader>\n\
<MmlBody><MmlModuleItem><docInfo contentModuleType=\"{kind}\">\
<mmlSc:securityLevel><mmlSc:accessRight permit=\"all\"/></mmlSc:securityLevel>\
<title generationPurpose=\"record\">{title}</title><docId><uid>{uid}</uid></docId>\
<confirmDate>{stamp}</confirmDate>{creator}<extRefs/></docInfo>\n<content>{module}</content></MmlModuleItem></MmlBody>\n</Mml>\n",
            code = self.hospital.code,
            pid = self.pid,
        )
    }

    /// Writes this chart's MML export: progress courses, a surgery (some charts), a referral
    /// letter (some charts); with `every_kind`, one of each.
    pub(crate) fn write_mml(
        &self,
        rng: &mut Rng,
        writer: &mut DocumentWriter,
        every_kind: bool,
    ) -> io::Result<()> {
        let (doctor, _) = *rng.pick(FAMILY);
        let doctor = format!("{doctor} 医師");
        let doctor_id = format!("D{:04}", rng.below(300));
        let creator = self.mml_creator(&doctor, &doctor_id);
        let first = 19_448 + rng.below(400) as i64;
        let courses = 1 + rng.below(3);
        for number in 0..courses {
            let at = When {
                days: first + number as i64 * 14,
                seconds: 10 * 3600 + rng.below(6 * 3600) as u32,
                millis: 0,
            };
            let (s, o, a, p) = *rng.pick(COURSES);
            let module = format!(
                "<mmlPc:ProgressCourseModule><mmlPc:structuredExpression><mmlPc:problemItem>\
<mmlPc:subjective><mmlPc:freeNotes>{s}</mmlPc:freeNotes></mmlPc:subjective>\
<mmlPc:objective><mmlPc:objectiveNotes>{o}</mmlPc:objectiveNotes></mmlPc:objective>\
<mmlPc:assessment><mmlPc:assessmentItem>{a}</mmlPc:assessmentItem></mmlPc:assessment>\
<mmlPc:plan><mmlPc:planNotes>{p}</mmlPc:planNotes></mmlPc:plan>\
</mmlPc:problemItem></mmlPc:structuredExpression></mmlPc:ProgressCourseModule>"
            );
            let id = uid(rng);
            let xml = self.mml(&creator, "progressCourse", &id, "経過記録", &at, &module);
            writer.put_file(&format!("{}/{id}.xml", self.pid), xml.as_bytes())?;
        }
        if rng.chance(25) || every_kind {
            let (code, name, diagnosis, duration) = *rng.pick(OPERATIONS);
            let at = When {
                days: first + 30 + rng.below(60) as i64,
                seconds: 9 * 3600,
                millis: 0,
            };
            let module = format!(
                "<mmlSg:SurgeryModule><mmlSg:surgeryItem><mmlSg:surgicalInfo mmlSg:type=\"elective\">\
<mmlSg:date>{date}</mmlSg:date><mmlSg:startTime>09:00:00</mmlSg:startTime><mmlSg:duration>{duration}</mmlSg:duration></mmlSg:surgicalInfo>\
<mmlSg:surgicalDiagnosis>{diagnosis}</mmlSg:surgicalDiagnosis>\
<mmlSg:surgicalProcedure><mmlSg:procedureItem><mmlSg:operation code=\"{code}\" system=\"MML0031\">{name}</mmlSg:operation></mmlSg:procedureItem></mmlSg:surgicalProcedure>\
<mmlSg:surgicalStaffs><mmlSg:staff mmlSg:staffClass=\"surgeon\"><mmlSg:staffInfo><mmlPsi:PersonalizedInfo><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"MML0024\">{doctor_id}</mmlCm:Id>\
<mmlPsi:personName><mmlNm:Name mmlNm:repCode=\"I\" mmlNm:tableId=\"MML0025\"><mmlNm:fullname>{doctor}</mmlNm:fullname></mmlNm:Name></mmlPsi:personName></mmlPsi:PersonalizedInfo></mmlSg:staffInfo></mmlSg:staff></mmlSg:surgicalStaffs>\
<mmlSg:anesthesiaProcedure><mmlSg:title>全身麻酔</mmlSg:title></mmlSg:anesthesiaProcedure>\
<mmlSg:operativeNotes>術中合併症なし。</mmlSg:operativeNotes></mmlSg:surgeryItem></mmlSg:SurgeryModule>",
                date = {
                    let day = ymd(at.days);
                    format!("{}-{}-{}", &day[0..4], &day[4..6], &day[6..8])
                },
            );
            let id = uid(rng);
            let xml = self.mml(&creator, "surgery", &id, "手術記録", &at, &module);
            writer.put_file(&format!("{}/{id}.xml", self.pid), xml.as_bytes())?;
        }
        if rng.chance(20) || every_kind {
            let at = When {
                days: first + 100 + rng.below(60) as i64,
                seconds: 11 * 3600,
                millis: 0,
            };
            let disease = rng.pick(DISEASES).1;
            let module = format!(
                "<mmlRe:ReferralModule><mmlPi:PatientModule><mmlPi:uniqueInfo><mmlPi:masterId><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"MML0024\">{pid}</mmlCm:Id></mmlPi:masterId></mmlPi:uniqueInfo></mmlPi:PatientModule>\
<mmlRe:referFrom><mmlPsi:PersonalizedInfo><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"MML0024\">{doctor_id}</mmlCm:Id></mmlPsi:PersonalizedInfo></mmlRe:referFrom>\
<mmlRe:title>診療情報提供書</mmlRe:title><mmlRe:greeting>いつもお世話になっております。</mmlRe:greeting>\
<mmlRe:chiefComplaints>{disease}</mmlRe:chiefComplaints><mmlRe:presentIllness>{disease}で当院通院中。</mmlRe:presentIllness>\
<mmlRe:referPurpose>{disease}の在宅での経過観察をお願いします。</mmlRe:referPurpose>\
<mmlRe:referToFacility><mmlFc:Facility><mmlFc:name mmlFc:repCode=\"I\" mmlFc:tableId=\"MML0025\">かかりつけ医</mmlFc:name></mmlFc:Facility></mmlRe:referToFacility></mmlRe:ReferralModule>",
                pid = self.pid,
            );
            let id = uid(rng);
            let xml = self.mml(&creator, "referral", &id, "診療情報提供書", &at, &module);
            writer.put_file(&format!("{}/{id}.xml", self.pid), xml.as_bytes())?;
        }
        Ok(())
    }
}
