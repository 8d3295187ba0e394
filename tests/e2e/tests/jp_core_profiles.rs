//! Every resource the pipeline produces — from a synthetic region of all three vendors and from
//! the guideline samples — satisfies the JP Core profile it claims (checked against the package
//! in ../shared), round-trips through the fhir-sdk R4B models and through FHIR XML. The statement in
//! `fhir-profiles/jp-core-constraints.toml` is checked against the package too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tsunagi_e2e::{
    all_resources, check_against_profile, ingested_region, jp_core_profiles, pull, shared,
    workspace,
};

fn statement() -> Vec<toml::Value> {
    let text = std::fs::read_to_string(workspace().join("fhir-profiles/jp-core-constraints.toml"))
        .unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    parsed["profile"].as_array().unwrap().clone()
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(toml::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_stated_constraints_are_jp_cores() {
    let package = jp_core_profiles();
    for profile in statement() {
        let url = profile["url"].as_str().unwrap();
        if profile["package"].as_str() != Some("1.1.1") {
            assert!(
                !package.contains_key(url),
                "{url} is in the 1.1.1 package; mark it package = \"1.1.1\""
            );
            continue;
        }
        let definition = package
            .get(url)
            .unwrap_or_else(|| panic!("{url} is not in the JP Core 1.1.1 package"));
        let elements = definition["snapshot"]["element"].as_array().unwrap();
        for id in strings(profile.get("required"))
            .into_iter()
            .chain(strings(profile.get("slices")))
        {
            let element = elements
                .iter()
                .find(|element| element["id"].as_str() == Some(id.as_str()))
                .unwrap_or_else(|| panic!("{url}: no element {id}"));
            assert!(
                element["min"].as_u64().unwrap_or(0) >= 1,
                "{url}: {id} is not required in JP Core"
            );
        }
    }
}

#[tokio::test]
async fn every_resource_conforms_to_its_profile() {
    let dir = tempfile::tempdir().unwrap();
    let store = ingested_region(dir.path(), 45, 7).await;
    // The storage root is sampleData/ (patient 9999013 lives in 999/901/9999013/); the three
    // deliberately broken files under 000/ are refused, everything else is read.
    let samples = pull(
        store.clone(),
        "9999999999",
        vec![shared().join("testdata/ssmix2-guideline-samples/sampleData")],
    )
    .await;
    assert!(samples.files_read >= 20, "{samples:#?}");
    assert_eq!(samples.rejected.len(), 3, "{:#?}", samples.rejected);
    assert!(
        samples
            .rejected
            .iter()
            .all(|rejection| rejection.source.contains("/sampleData/000/")),
        "{:#?}",
        samples.rejected
    );

    let package = jp_core_profiles();
    let stated: HashMap<String, toml::Value> = statement()
        .into_iter()
        .map(|p| (p["url"].as_str().unwrap().to_owned(), p))
        .collect();
    let resources = all_resources(store.as_ref()).await;
    assert!(resources.len() > 1000, "{}", resources.len());
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for resource in &resources {
        let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
        let id = format!("{resource_type}/{}", resource["id"].as_str().unwrap());
        if let Err(differences) = tsunagi_fhir_model::check_r4b(resource) {
            problems
                .entry(id.clone())
                .or_default()
                .extend(differences.into_iter().map(|d| format!("R4B: {d}")));
        }
        for path in tsunagi_e2e::empty_values(resource) {
            problems
                .entry(id.clone())
                .or_default()
                .push(format!("empty value at {path}"));
        }
        for problem in tsunagi_fhir_xml::structure::check(resource).unwrap() {
            problems.entry(id.clone()).or_default().push(format!(
                "structure: {}: {}",
                problem.location, problem.message
            ));
        }
        match tsunagi_fhir_xml::to_xml(resource, false).map(|xml| tsunagi_fhir_xml::from_xml(&xml))
        {
            Ok(Ok(back)) if &back == resource => {}
            Ok(Ok(_)) => problems
                .entry(id.clone())
                .or_default()
                .push("XML round trip differs".into()),
            Ok(Err(e)) | Err(e) => problems
                .entry(id.clone())
                .or_default()
                .push(format!("XML: {e}")),
        }
        let profiles: Vec<&str> = resource["meta"]["profile"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if profiles.is_empty() {
            // JP Core 1.x profiles neither (documents take IHE MHD's shape).
            assert!(
                matches!(
                    resource_type.as_str(),
                    "NutritionOrder" | "DocumentReference" | "Binary"
                ),
                "{id} claims no profile"
            );
            continue;
        }
        for url in profiles {
            let statement = stated.get(url).unwrap_or_else(|| {
                panic!("{id} claims {url}, which fhir-profiles/ does not state")
            });
            *checked
                .entry(url.rsplit('/').next().unwrap().to_owned())
                .or_default() += 1;
            if let Some(definition) = package.get(url) {
                for problem in check_against_profile(resource, definition) {
                    problems.entry(id.clone()).or_default().push(problem);
                }
            } else {
                for path in strings(statement.get("required")) {
                    let element = path
                        .split_once('.')
                        .map(|(_, element)| element)
                        .unwrap_or(&path);
                    if resource.get(element).is_none() {
                        problems
                            .entry(id.clone())
                            .or_default()
                            .push(format!("{path} is always written but missing"));
                    }
                }
            }
        }
    }
    let report: Vec<String> = problems
        .iter()
        .take(20)
        .map(|(id, list)| format!("{id}: {}", list.join("; ")))
        .collect();
    assert!(
        problems.is_empty(),
        "{} resources fail:\n{}",
        problems.len(),
        report.join("\n")
    );
    // Every profile the mapping knows was exercised.
    for profile in stated.keys() {
        let name = profile.rsplit('/').next().unwrap();
        assert!(
            checked.get(name).copied().unwrap_or(0) > 0,
            "no resource claimed {name}: {checked:?}"
        );
    }
}
