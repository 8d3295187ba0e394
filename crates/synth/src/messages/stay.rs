//! An inpatient stay: admission, transfers, leave, discharge and their cancellations (ADT), with
//! the orders written during it.

use std::io;

use super::*;

impl Chart<'_> {
    pub(super) fn inpatient_stay(
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
}
