//! MML 4.0 (MedXML Medical Markup Language) instances, as EHRs of the Dolphin lineage export
//! them: `Mml/MmlHeader` (the creator, `masterId`: the facility's patient id) and
//! `Mml/MmlBody/MmlModuleItem*`, each a `docInfo` (its `contentModuleType`, `docId/uid`,
//! `parentId` of an earlier edition, `confirmDate`, creator, title) and a `content`.
//!
//! Read here, beyond the envelope: the progress course (`ProgressCourseModule`: free expression
//! and the structured S/O/A/P of each problem), surgery (`SurgeryModule`: each surgery item's
//! date, time, duration, department, diagnosis, procedures with their codes, staff,
//! anaesthesia and notes) and referral (`ReferralModule`: its sections, who refers, to whom).
//! Other modules are kept as opaque bytes in the file and reported by their type.
//!
//! Read with the same safe XML reader as CDA ([`crate::xml`]): prefixes dropped, so
//! `mmlPc:FreeExpression` is `FreeExpression` and `mmlCm:type` is `type`.

use crate::{DocumentError, xml, xml::Element};

/// A person as MML names one (`mmlPsi:PersonalizedInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Person {
    /// `mmlCm:Id`: the facility's staff id.
    pub id: Option<String>,
    /// `mmlPsi:personName`: the name's full text, or family and given joined.
    pub name: Option<String>,
    /// `mmlFc:Facility/mmlFc:name`.
    pub facility: Option<String>,
    /// `mmlFc:Facility/mmlCm:Id`: the facility's code.
    pub facility_id: Option<String>,
    /// `mmlDp:Department/mmlDp:name`.
    pub department: Option<String>,
}

/// A titled part of a document's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its heading.
    pub title: String,
    /// Its lines.
    pub lines: Vec<String>,
}

/// One procedure of a surgery item (`procedureItem`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    /// `operation`: the procedure's name.
    pub name: String,
    /// `operation@code`.
    pub code: Option<String>,
    /// `operation@system`: the code's table (e.g. a K code list).
    pub system: Option<String>,
    /// `operationElement` and `procedureMemo` text.
    pub notes: Vec<String>,
}

/// A registered diagnosis (`mmlRd:RegisteredDiagnosisModule`): its name (`diagnosis`, or the
/// names of `diagnosisContents/dxItem` joined), `@code` and `@system` (e.g. ICD10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnosis {
    /// The name.
    pub name: String,
    /// Its code, when given.
    pub code: Option<String>,
    /// The code's table.
    pub system: Option<String>,
}

/// One surgery (`surgeryItem`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Surgery {
    /// `surgicalInfo/date` (YYYY-MM-DD).
    pub date: Option<String>,
    /// `surgicalInfo/startTime` (HH:MM).
    pub start: Option<String>,
    /// `surgicalInfo/duration` (ISO 8601, e.g. `PT2H30M`).
    pub duration: Option<String>,
    /// `surgicalInfo@type`: elective, emergency…
    pub kind: Option<String>,
    /// `surgicalInfo/surgicalDepartment`'s name.
    pub department: Option<String>,
    /// `surgicalDiagnosis`: each registered diagnosis's name and its code and table.
    pub diagnoses: Vec<Diagnosis>,
    /// `surgicalProcedure/procedureItem`.
    pub operations: Vec<Operation>,
    /// `surgicalStaffs/staff`: people and their roles (`staffClass`).
    pub staff: Vec<(Person, Option<String>)>,
    /// `anesthesiaProcedure/title`.
    pub anaesthesia: Vec<String>,
    /// `operativeNotes` and `memo`.
    pub notes: Vec<String>,
}

/// What a module holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `progressCourse`: the findings as sections (free expression, then S/O/A/P per problem).
    ProgressCourse(Vec<Section>),
    /// `surgery`: its surgeries.
    Surgery(Vec<Surgery>),
    /// `referral`: its sections, the referring person and the addressee.
    Referral {
        /// The letter's text, section by section.
        sections: Vec<Section>,
        /// `referFrom`.
        from: Option<Person>,
        /// `referToFacility` and `referToPerson`, as one line.
        to: Option<String>,
        /// `mmlPi:PatientModule/uniqueInfo/masterId/mmlCm:Id`: the patient the letter is about.
        patient: Option<String>,
    },
    /// A module of another type, not read.
    Other,
}

/// One `MmlModuleItem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// `docInfo@contentModuleType`.
    pub kind: String,
    /// `docInfo/docId/uid`.
    pub uid: String,
    /// `docInfo/docId/parentId` with `relation="oldEdition"`: the edition this one revises.
    pub replaces: Option<String>,
    /// `docInfo/title`.
    pub title: Option<String>,
    /// `docInfo/confirmDate` (ISO 8601 date or date-time).
    pub confirmed: Option<String>,
    /// `docInfo/mmlCi:CreatorInfo/mmlPsi:PersonalizedInfo`.
    pub creator: Option<Person>,
    /// Its content.
    pub content: Content,
}

/// An MML instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmlDocument {
    /// `Mml@version`.
    pub version: Option<String>,
    /// `MmlHeader/masterId/mmlCm:Id`: the patient's id at the exporting facility.
    pub patient_id: String,
    /// The header's creator.
    pub creator: Option<Person>,
    /// The modules, in document order.
    pub modules: Vec<Module>,
}

fn text_of(element: Option<&Element>) -> Option<String> {
    element.map(Element::text).filter(|text| !text.is_empty())
}

/// `mmlPsi:PersonalizedInfo` (or any element holding one's parts).
fn person(info: &Element) -> Person {
    let info = info.child("PersonalizedInfo").unwrap_or(info);
    let name = info
        .at(&["personName", "Name"])
        .or(info.child("personName"));
    let name = name.and_then(|name| {
        text_of(name.child("fullname")).or_else(|| {
            let parts: Vec<String> = ["family", "given"]
                .iter()
                .filter_map(|part| text_of(name.child(part)))
                .collect();
            if parts.is_empty() {
                text_of(Some(name))
            } else {
                Some(parts.join(" "))
            }
        })
    });
    let facility = info.child("Facility");
    Person {
        id: text_of(info.child("Id")),
        name,
        facility: text_of(facility.and_then(|f| f.child("name"))),
        facility_id: text_of(facility.and_then(|f| f.child("Id"))),
        department: text_of(info.at(&["Department", "name"])),
    }
}

fn creator_of(element: &Element) -> Option<Person> {
    element.child("CreatorInfo").map(person)
}

/// Inline XHTML: its text continues the line (MML free text formats with these).
const INLINE: &[&str] = &[
    "b", "i", "u", "em", "strong", "font", "span", "sub", "sup", "a", "small", "big", "tt",
];

/// An attribute's value, trimmed (exports pad values), or `None` when empty.
fn attr<'e>(element: &'e Element, name: &str) -> Option<&'e str> {
    element
        .attr(name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The lines of an element's text: `xhtml:br` and line breaks end a line, and so does every
/// child that is not inline formatting (a paragraph, an MML part).
fn lines(element: &Element) -> Vec<String> {
    let mut out = String::new();
    collect_lines(element, &mut out);
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

fn collect_lines(element: &Element, out: &mut String) {
    for node in &element.children {
        match node {
            xml::Node::Text(text) => out.push_str(text),
            xml::Node::Element(child) => {
                if child.name == "br" {
                    out.push('\n');
                    continue;
                }
                let inline = INLINE.contains(&child.name.as_str());
                if !inline {
                    out.push('\n');
                }
                collect_lines(child, out);
                if !inline {
                    out.push('\n');
                }
            }
        }
    }
}

fn section(title: &str, element: Option<&Element>) -> Option<Section> {
    let lines = element.map(lines).unwrap_or_default();
    (!lines.is_empty()).then(|| Section {
        title: title.to_owned(),
        lines,
    })
}

fn progress_course(module: &Element) -> Vec<Section> {
    let mut sections = Vec::new();
    for free in module.children_named("FreeExpression") {
        sections.extend(section("経過", Some(free)));
    }
    for structured in module.children_named("structuredExpression") {
        for item in structured.children_named("problemItem") {
            sections.extend(section("プロブレム", item.child("problem")));
            sections.extend(section("S（主観的情報）", item.child("subjective")));
            sections.extend(section("O（客観的情報）", item.child("objective")));
            sections.extend(section("A（評価）", item.child("assessment")));
            sections.extend(section("P（計画）", item.child("plan")));
        }
    }
    sections
}

fn surgery(module: &Element) -> Vec<Surgery> {
    module
        .children_named("surgeryItem")
        .map(|item| {
            let info = item.child("surgicalInfo");
            let operations = item
                .child("surgicalProcedure")
                .map(|procedure| {
                    procedure
                        .children_named("procedureItem")
                        .filter_map(|entry| {
                            let mut notes = Vec::new();
                            for memo in entry.children_named("procedureMemo") {
                                notes.extend(lines(memo));
                            }
                            // `operation`, or (the schema's other choice) the elements of one.
                            let elements: Vec<&Element> = entry
                                .children_named("operationElement")
                                .flat_map(|e| e.children_named("operationElementItem"))
                                .filter_map(|item| item.child("title"))
                                .collect();
                            let (name, coded) = match entry.child("operation") {
                                Some(operation) => {
                                    notes.extend(elements.iter().map(|title| title.text()));
                                    (operation.text(), Some(operation))
                                }
                                None => {
                                    let first = elements.first().copied();
                                    let names: Vec<String> =
                                        elements.iter().map(|title| title.text()).collect();
                                    (names.join("、"), first)
                                }
                            };
                            if name.is_empty() {
                                return None;
                            }
                            Some(Operation {
                                name,
                                code: coded.and_then(|c| attr(c, "code")).map(str::to_owned),
                                system: coded.and_then(|c| attr(c, "system")).map(str::to_owned),
                                notes,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let staff = item
                .child("surgicalStaffs")
                .map(|staffs| {
                    staffs
                        .children_named("staff")
                        .map(|staff| {
                            let role = attr(staff, "staffClass").map(str::to_owned);
                            (person(staff.child("staffInfo").unwrap_or(staff)), role)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut notes = Vec::new();
            for part in ["operativeNotes", "memo"] {
                for element in item.children_named(part) {
                    notes.extend(lines(element));
                }
            }
            Surgery {
                date: text_of(info.and_then(|i| i.child("date"))),
                start: text_of(info.and_then(|i| i.child("startTime"))),
                duration: text_of(info.and_then(|i| i.child("duration"))),
                kind: info.and_then(|i| attr(i, "type")).map(str::to_owned),
                department: info
                    .and_then(|i| i.child("surgicalDepartment"))
                    .and_then(|d| d.at(&["Department", "name"]).or(d.child("name")))
                    .map(Element::text)
                    .filter(|name| !name.is_empty()),
                diagnoses: item
                    .child("surgicalDiagnosis")
                    .map(diagnoses)
                    .unwrap_or_default(),
                operations,
                staff,
                anaesthesia: item
                    .child("anesthesiaProcedure")
                    .map(|a| {
                        a.children_named("title")
                            .map(Element::text)
                            .filter(|t| !t.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                notes,
            }
        })
        .collect()
}

/// The registered diagnoses of a `surgicalDiagnosis`.
fn diagnoses(element: &Element) -> Vec<Diagnosis> {
    element
        .children_named("RegisteredDiagnosisModule")
        .filter_map(|module| {
            let named = module.child("diagnosis");
            let name = match named {
                Some(diagnosis) => diagnosis.text(),
                None => module
                    .children_named("diagnosisContents")
                    .flat_map(|contents| contents.children_named("dxItem"))
                    .filter_map(|item| item.child("name"))
                    .map(Element::text)
                    .filter(|name| !name.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let coded = named.or_else(|| module.at(&["diagnosisContents", "dxItem", "name"]));
            (!name.is_empty()).then(|| Diagnosis {
                name,
                code: coded.and_then(|c| attr(c, "code")).map(str::to_owned),
                system: coded.and_then(|c| attr(c, "system")).map(str::to_owned),
            })
        })
        .collect()
}

/// The referral letter's parts, in the order MML gives them, with their Japanese headings.
const REFERRAL_SECTIONS: &[(&str, &str)] = &[
    ("greeting", "挨拶"),
    ("chiefComplaints", "主訴"),
    ("clinicalDiagnosis", "傷病名"),
    ("pastHistory", "既往歴"),
    ("familyHistory", "家族歴"),
    ("presentIllness", "現病歴"),
    ("testResults", "検査結果"),
    ("clinicalCourse", "治療経過"),
    ("medication", "現在の処方"),
    ("referPurpose", "紹介目的"),
    ("remarks", "備考"),
];

fn referral(module: &Element) -> Content {
    let sections = REFERRAL_SECTIONS
        .iter()
        .filter_map(|(name, title)| section(title, module.child(name)))
        .collect();
    let facility = module
        .child("referToFacility")
        .and_then(|f| f.at(&["Facility", "name"]).or(f.child("name")))
        .map(Element::text);
    let person_name = module
        .child("referToPerson")
        .map(person)
        .and_then(|p| p.name);
    let unknown = text_of(module.child("referToUnknownName"));
    let to: Vec<String> = [facility, person_name.or(unknown)]
        .into_iter()
        .flatten()
        .filter(|part| !part.is_empty())
        .collect();
    Content::Referral {
        sections,
        from: module.child("referFrom").map(person),
        to: (!to.is_empty()).then(|| to.join(" ")),
        patient: text_of(module.at(&["PatientModule", "uniqueInfo", "masterId", "Id"])),
    }
}

impl MmlDocument {
    /// Reads an MML instance from its bytes (see [`xml::parse`] for what is refused).
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let root = xml::parse(bytes)?;
        if root.name != "Mml" {
            return Err(DocumentError::Mml(format!(
                "the root element is <{}>, not <Mml>",
                root.name
            )));
        }
        let header = root
            .child("MmlHeader")
            .ok_or_else(|| DocumentError::Mml("no MmlHeader".into()))?;
        let patient_id = header
            .at(&["masterId", "Id"])
            .map(Element::text)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                DocumentError::Mml("no MmlHeader/masterId/Id: the instance names no patient".into())
            })?;
        let mut modules = Vec::new();
        for item in root
            .children_named("MmlBody")
            .flat_map(|body| body.children_named("MmlModuleItem"))
        {
            let info = item
                .child("docInfo")
                .ok_or_else(|| DocumentError::Mml("an MmlModuleItem has no docInfo".into()))?;
            let kind = attr(info, "contentModuleType")
                .unwrap_or_default()
                .to_owned();
            let uid = info
                .at(&["docId", "uid"])
                .map(Element::text)
                .filter(|uid| !uid.is_empty())
                .ok_or_else(|| {
                    DocumentError::Mml(format!("a {kind} module has no docInfo/docId/uid"))
                })?;
            let replaces = info
                .child("docId")
                .into_iter()
                .flat_map(|id| id.children_named("parentId"))
                .find(|parent| attr(parent, "relation") == Some("oldEdition"))
                .map(Element::text)
                .filter(|parent| !parent.is_empty());
            let confirmed = info.child("confirmDate").and_then(|date| {
                text_of(Some(date)).or_else(|| date.attr("start").map(str::to_owned))
            });
            let module = item.child("content").and_then(|content| {
                content.children.iter().find_map(|node| match node {
                    xml::Node::Element(element) => Some(element),
                    xml::Node::Text(_) => None,
                })
            });
            let content = match (kind.as_str(), module) {
                ("progressCourse", Some(module)) => {
                    Content::ProgressCourse(progress_course(module))
                }
                ("surgery", Some(module)) => Content::Surgery(surgery(module)),
                ("referral", Some(module)) => referral(module),
                _ => Content::Other,
            };
            modules.push(Module {
                kind,
                uid,
                replaces,
                title: text_of(info.child("title")),
                confirmed,
                creator: creator_of(info),
                content,
            });
        }
        Ok(Self {
            version: root.attr("version").map(str::to_owned),
            patient_id,
            creator: creator_of(header),
            modules,
        })
    }
}
