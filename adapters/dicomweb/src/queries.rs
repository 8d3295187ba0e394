//! The QIDO-RS questions a pull asks a PACS, and how their answers are paged and grouped: a
//! patient's studies (`studies?PatientID=`), or every study of the PACS at once (discovery
//! `all`), and the instances of many studies in few requests (UID list matching, PS3.18, a study
//! asked alone when a PACS does not match lists).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tsunagi_core::url::percent_encode;
use tsunagi_dicom::{json::Dataset, tags};

use crate::{MAX_PAGES, Qido, QidoError};

/// The attributes asked with a study's instances besides those every PACS returns: Series
/// Description, Body Part Examined, Series Number, Instance Number.
pub const INSTANCE_FIELDS: &str =
    "includefield=0008103E&includefield=00180015&includefield=00200011&includefield=00200013";

/// The series of a study's instances: the first instance of each Series Instance UID (it
/// carries the series' attributes), in the order met.
pub(crate) fn series_of_instances(instances: &Value) -> Value {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    Value::Array(
        instances
            .as_array()
            .into_iter()
            .flatten()
            .filter(|instance| {
                instance["0020000E"]["Value"][0]
                    .as_str()
                    .is_some_and(|uid| seen.insert(uid.to_owned()))
            })
            .cloned()
            .collect(),
    )
}

/// A QIDO-RS row's Study Instance UID, read raw (whatever its character set).
pub fn raw_uid(row: &Value) -> Option<String> {
    row["0020000D"]["Value"][0]
        .as_str()
        .map(|uid| uid.trim().to_owned())
        .filter(|uid| !uid.is_empty())
}

/// What [`paged`] does with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Keep it.
    Keep,
    /// Leave it out (it still counts as met).
    Drop,
    /// The answer is not what was asked: stop, with this error.
    Refuse(&'static str),
}

/// Every row of the QIDO-RS `query` (a path with its first parameters) that `take` keeps,
/// page by page, each once by its `key` attribute (rows without one kept): ends on a page
/// shorter than asked that the PACS did not say it cut (`Warning: 299`), or on a page with
/// nothing new (a PACS that ignores `offset`); more than [`MAX_PAGES`] pages is an error, never
/// a list silently cut (what is missing from a list would be withdrawn).
async fn paged(
    qido: &Qido,
    query: &str,
    page: usize,
    key: &str,
    take: &mut (dyn FnMut(&Value) -> Row + Send),
) -> Result<Vec<Value>, QidoError> {
    let page = page.max(1);
    let mut all = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut offset = 0usize;
    for _ in 0..MAX_PAGES {
        let (answer, cut) = qido
            .page(&format!("{query}&limit={page}&offset={offset}"))
            .await?;
        let rows = answer.as_array().cloned().unwrap_or_default();
        let count = rows.len();
        let mut new = 0;
        for row in rows {
            if let Some(id) = row[key]["Value"][0].as_str().map(str::trim)
                && !seen.insert(id.to_owned())
            {
                continue;
            }
            new += 1;
            match take(&row) {
                Row::Keep => all.push(row),
                Row::Drop => {}
                Row::Refuse(reason) => {
                    return Err(QidoError::Answer(format!("{query}: {reason}")));
                }
            }
        }
        if new == 0 || count == 0 || (count < page && !cut) {
            return Ok(all);
        }
        offset += count;
    }
    Err(QidoError::Answer(format!(
        "{query}: more than {MAX_PAGES} pages of {page}; raise page_size"
    )))
}

/// Whether a study row is the patient's: exactly that Patient ID (read raw, so that a row this
/// reader cannot decode is still the patient's — and reported —, never taken for a study gone),
/// and no Issuer of Patient ID other than the one configured.
fn is_patients(row: &Value, patient: &str, issuer: Option<&str>) -> bool {
    let said = row["00100021"]["Value"][0].as_str().map(str::trim);
    row["00100020"]["Value"][0].as_str().map(str::trim) == Some(patient)
        && (issuer.is_none() || said.is_none() || said == issuer)
}

/// Rows in the order of their Study Instance UIDs (the order a PACS lists them in is not part
/// of what changed).
fn sorted(mut studies: Vec<Value>) -> Vec<Value> {
    studies.sort_by_key(|study| {
        Dataset::new(study)
            .ok()
            .and_then(|study| study.string(tags::STUDY_INSTANCE_UID))
            .unwrap_or_default()
    });
    studies
}

/// The study attributes asked besides those every PACS returns: Study Description, Modalities
/// in Study, Issuer of Patient ID, Number of Study Related Instances, Timezone Offset From UTC.
const STUDY_FIELDS: &str = "includefield=00081030&includefield=00080061&includefield=00100021\
     &includefield=00201208&includefield=00080201";

/// Every study the PACS lists for `patient` with exactly that Patient ID (and, when the PACS's
/// issuer of patient ids is configured, no other issuer).
pub async fn studies_of(
    qido: &Qido,
    patient: &str,
    issuer: Option<&str>,
    page: usize,
) -> Result<Vec<Value>, QidoError> {
    let query = format!(
        "studies?PatientID={}&{STUDY_FIELDS}",
        percent_encode(patient)
    );
    let studies = paged(qido, &query, page, "0020000D", &mut |row| {
        if is_patients(row, patient, issuer) {
            Row::Keep
        } else {
            Row::Drop
        }
    })
    .await?;
    Ok(sorted(studies))
}

/// Every study the PACS lists, page by page, grouped by the patients of `patients` it is filed
/// under (studies of other patients dropped as each page arrives).
pub async fn all_studies(
    qido: &Qido,
    patients: &BTreeSet<String>,
    issuer: Option<&str>,
    page: usize,
) -> Result<BTreeMap<String, Vec<Value>>, QidoError> {
    let query = format!("studies?includefield=00100020&{STUDY_FIELDS}");
    let kept = paged(
        qido,
        &query,
        page,
        "0020000D",
        &mut |row| match row["00100020"]["Value"][0].as_str().map(str::trim) {
            Some(patient) if patients.contains(patient) && is_patients(row, patient, issuer) => {
                Row::Keep
            }
            _ => Row::Drop,
        },
    )
    .await?;
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in kept {
        if let Some(patient) = row["00100020"]["Value"][0].as_str().map(str::trim) {
            grouped.entry(patient.to_owned()).or_default().push(row);
        }
    }
    Ok(grouped
        .into_iter()
        .map(|(patient, studies)| (patient, sorted(studies)))
        .collect())
}

/// Studies asked for together.
const STUDIES_PER_REQUEST: usize = 50;

/// What was read of each study: its instances, or why they could not be read.
pub type Read = BTreeMap<String, Result<Vec<Value>, String>>;

/// What a batched instance query is refused for when its answer names a study not asked for.
const NOT_ASKED: &str = "a study not asked for";

/// The instances of each study of `uids`, with their series' attributes: up to
/// [`STUDIES_PER_REQUEST`] studies a request (`instances?StudyInstanceUID=a,b,…`, UID list
/// matching) while `lists` holds; a study a batched answer lacks, or holds fewer instances of
/// than its study row counts (`expected`: Number of Study Related Instances), or of a batch the
/// PACS refuses, is asked alone (`studies/{uid}/instances`). A batched answer naming a study not
/// asked for means the PACS does not match lists: `lists` is cleared and the studies of the rest
/// of the pull are asked alone. A PACS that cannot be reached fails the whole.
pub async fn instances_of(
    qido: &Qido,
    uids: &[String],
    expected: &BTreeMap<String, usize>,
    page: usize,
    lists: &mut bool,
) -> Result<Read, QidoError> {
    let mut read = Read::new();
    for batch in uids.chunks(STUDIES_PER_REQUEST) {
        if *lists && batch.len() > 1 {
            let list: Vec<String> = batch.iter().map(|uid| percent_encode(uid)).collect();
            let query = format!(
                "instances?StudyInstanceUID={}&{INSTANCE_FIELDS}&includefield=0020000D",
                list.join(",")
            );
            let answer = paged(
                qido,
                &query,
                page,
                "00080018",
                &mut |row| match raw_uid(row) {
                    Some(uid) if batch.contains(&uid) => Row::Keep,
                    _ => Row::Refuse(NOT_ASKED),
                },
            )
            .await;
            match answer {
                Ok(rows) => {
                    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                    for row in rows {
                        if let Some(uid) = raw_uid(&row) {
                            grouped.entry(uid).or_default().push(row);
                        }
                    }
                    for (uid, instances) in grouped {
                        // Whole, as far as the study row tells; else asked alone below.
                        if expected
                            .get(&uid)
                            .is_none_or(|count| *count == instances.len())
                        {
                            read.insert(uid, Ok(instances));
                        }
                    }
                }
                Err(QidoError::Unreachable(error)) => return Err(QidoError::Unreachable(error)),
                Err(QidoError::Answer(error)) => {
                    if error.ends_with(NOT_ASKED) {
                        tracing::info!(
                            "the PACS does not match UID lists: studies are read one by one"
                        );
                        *lists = false;
                    }
                }
            }
        }
        for uid in batch {
            if read.contains_key(uid) {
                continue;
            }
            let query = format!(
                "studies/{}/instances?{INSTANCE_FIELDS}",
                percent_encode(uid)
            );
            match paged(qido, &query, page, "00080018", &mut |_| Row::Keep).await {
                Ok(rows) => {
                    read.insert(uid.clone(), Ok(rows));
                }
                Err(QidoError::Unreachable(error)) => return Err(QidoError::Unreachable(error)),
                Err(QidoError::Answer(error)) => {
                    read.insert(uid.clone(), Err(error));
                }
            }
        }
    }
    Ok(read)
}

/// The Number of Study Related Instances a study row gives.
pub fn instances_counted(row: &Value) -> Option<usize> {
    let value = &row["00201208"]["Value"][0];
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
        .and_then(|count| usize::try_from(count).ok())
}
