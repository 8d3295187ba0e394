//! Examinations a chart records: radiology, ECG and endoscopy.

use std::io;

use super::*;

impl Chart<'_> {
    pub(super) fn radiology(
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
        writer.studies.push(Study {
            done,
            order: order.clone(),
            uid: study.clone(),
            accession: accession.clone(),
        });
        writer.write(
            &self.file_name(&date, "OMG-11", &order, done, "01", 1),
            &performed,
        )
    }

    pub(super) fn ecg(
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

    pub(super) fn endoscopy(
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
}
