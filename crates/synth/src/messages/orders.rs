//! Outpatient visits and their orders: prescriptions, lab results, the ORC every order carries.

use std::io;

use super::*;

impl Chart<'_> {
    pub(super) fn outpatient_visit(
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
    pub(super) fn orc(
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

    pub(super) fn prescription(
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

    pub(super) fn lab(
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
                    if self.profile().lab_codes == LabCodes::LocalOnly {
                        "40001^尿蛋白^99NLB"
                    } else {
                        "1A020000000191111^尿蛋白^JC10"
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
}
