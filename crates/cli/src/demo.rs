//! `tsunagi demo`: a synthetic region of three hospitals generated, pulled (and pulled again,
//! all skipped), shown, then served with the hospitals' HL7 v2 feeds, while a clinic doctor's
//! note goes through the API to hospital A's EHR stand-in.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::Context;
use tsunagi_adapter::NoProgress;
use tsunagi_adapter::delivery::DeliveryOptions;
use tsunagi_adapter_outbound_mllp::MllpDestination;
use tsunagi_core::clock::{Clock, SystemClock};
use tsunagi_store::Access;
use tsunagi_store::Backend;

use crate::registry;
use crate::{
    export::generate_region,
    ingest::{print_summary, ssmix2_config},
    open::{context, open_store},
    serve::{
        Listeners, LiveFeeds, MllpSetup, OutboundSetup, init_logging, serve_store, synthetic_feeds,
    },
};

pub(crate) async fn demo(
    dir: &Path,
    patients: usize,
    listen: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let region = dir.join("region");
    if region.exists() {
        std::fs::remove_dir_all(&region)
            .with_context(|| format!("cannot clear {}", region.display()))?;
    }
    let db_path = dir.join("tsunagi.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db_path.display()));
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    println!(
        "1. generating a synthetic region of {patients} people in {}",
        region.display()
    );
    generate_region(&region, patients, 2026, false, false)?;
    let url = format!("sqlite://{}", db_path.display());
    println!("\n2. ingesting the three hospitals' SS-MIX2 storages into {url}");
    let store = open_store(&url).await?;
    let pull_hospital = |hospital: tsunagi_synth::Hospital| {
        let store = store.clone();
        let root = region.join(hospital.code);
        async move {
            let config = ssmix2_config(
                hospital.code,
                Some(hospital.name.to_owned()),
                vec![root],
                None,
                false,
            )?;
            let adapter = registry::pull(registry::Source::Ssmix2(config));
            anyhow::Ok(adapter.pull(&context(store, Arc::new(NoProgress))).await?)
        }
    };
    for hospital in tsunagi_synth::HOSPITALS {
        let started = Instant::now();
        let report = pull_hospital(hospital).await?;
        print_summary(
            &report,
            Some(hospital.name),
            started.elapsed().as_secs_f64(),
        );
    }
    println!("\n3. pulling again: the checkpoint skips every unchanged file");
    for hospital in tsunagi_synth::HOSPITALS {
        let report = pull_hospital(hospital).await?;
        println!(
            "  {} {}: {} files seen, {} skipped as unchanged, {} resources written",
            hospital.code,
            hospital.name,
            report.files_seen,
            report.files_skipped_unchanged,
            report.resources_written()
        );
    }
    println!(
        "\n   and their extended storages: documents (progress notes, discharge summaries, referral letters, scans)"
    );
    let extended = tsunagi_synth::generate_extended(&region, patients, 2026)?;
    for facility in &extended.facilities {
        let started = Instant::now();
        let report = crate::ingest::pull_synthetic_extended(store.clone(), facility).await?;
        print_summary(
            &report,
            Some(&facility.name),
            started.elapsed().as_secs_f64(),
        );
    }
    println!("\n   and Homma's MML export: progress courses, surgeries, referral letters");
    let mml = tsunagi_synth::generate_mml(&region, patients, 2026)?;
    let started = Instant::now();
    let config = crate::ingest::mml_config(
        &mml.code,
        Some(mml.name.clone()),
        vec![mml.root.clone()],
        None,
        None,
    )?;
    let report = crate::registry::pull(crate::registry::Source::Mml(config))
        .pull(&crate::open::context(
            store.clone(),
            Arc::new(tsunagi_adapter::NoProgress),
        ))
        .await?;
    print_summary(&report, Some(&mml.name), started.elapsed().as_secs_f64());
    let pacs = demo_images(&region, store.clone(), patients).await?;
    println!("\n4. the store now holds:");
    for (resource_type, count) in store.count_current().await? {
        println!("  {resource_type:<26} {count:>7}");
    }
    let patient_id = "0610100010.1000000";
    if let Some(patient) = store
        .read(&Access::Unrestricted, "Patient", patient_id)
        .await?
        && let Some(json) = patient.to_json()?
    {
        println!(
            "\n   Patient/{patient_id}:\n{}",
            tsunagi_fhir::json::to_pretty_resource(&json)?
        );
    }
    demo_network(store.as_ref(), patient_id).await?;
    show_documents(
        store.as_ref(),
        patient_id,
        listen.map_or("127.0.0.1:8080", |(http, _)| http),
    )
    .await?;
    println!(
        "\n   a clinic doctor's token (five minutes; issue another the same way):\n   TOKEN=$(tsunagi token issue --db {url} --user dr-demo --scope 'user/*.rs')\n   curl -H \"Authorization: Bearer $TOKEN\" http://{}/fhir/Patient/{patient_id}/\\$everything",
        listen.map_or("127.0.0.1:8080", |(http, _)| http)
    );
    println!(
        "\nnext: tsunagi export ndjson --db {url} --out {}",
        dir.join("export").display()
    );
    if pacs.is_some() {
        let listen = listen.map_or("127.0.0.1:8080", |(http, _)| http);
        let local = patient_id.rsplit('.').next().unwrap_or_default();
        println!(
            "\n   {}'s images, through the gateway (any DICOMweb viewer works at http://{listen}/dicomweb):",
            tsunagi_synth::HOSPITALS[0].name
        );
        println!(
            "   curl -H \"Authorization: Bearer $TOKEN\" 'http://{listen}/dicomweb/studies?PatientID={local}'"
        );
        println!(
            "   curl -H \"Authorization: Bearer $TOKEN\" -H 'Accept: image/jpeg' -o frame.jpg 'http://{listen}/dicomweb/studies/<study>/series/<series>/instances/<instance>/frames/1/rendered'"
        );
    }
    let Some((listen, mllp_listen)) = listen else {
        println!("      tsunagi serve --db {url}");
        return Ok(());
    };
    println!(
        "\n6. serving the region over FHIR, and the hospitals' HL7 v2 feeds over MLLP on {mllp_listen} (Ctrl-C stops; the access log goes to stderr)"
    );
    init_logging(crate::config::LogFormat::Text);
    // Hospital A's EHR is played by the stand-in: notes written for it are delivered there.
    let standin = tsunagi_mllp::standin::StandIn::start("127.0.0.1:0").await?;
    let hospital = tsunagi_synth::HOSPITALS[0];
    println!(
        "   {} EHR stand-in listening for notes on {} (MLLP)",
        hospital.name,
        standin.address()
    );
    let outbound = OutboundSetup {
        destinations: vec![Arc::new(MllpDestination::new(
            hospital.code,
            standin.address().to_string(),
        ))],
        options: DeliveryOptions {
            first_backoff: std::time::Duration::from_secs(1),
            ..DeliveryOptions::default()
        },
    };
    // The signing key exists before the server and the demo note both look for it.
    tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros()).await?;
    tokio::spawn(demo_note(
        store.clone(),
        listen.to_owned(),
        patient_id.to_owned(),
        standin,
    ));
    serve_store(
        store,
        listen,
        Listeners::default(),
        None,
        tsunagi_server::Settings {
            dicomweb: tsunagi_server::dicomweb::DicomWebSettings {
                pacs: pacs.iter().map(|(_, pacs)| pacs.clone()).collect(),
                ..Default::default()
            },
            ..Default::default()
        },
        Some(patient_id),
        LiveFeeds {
            mllp: Some(MllpSetup {
                address: Some(mllp_listen.to_owned()),
                feeds: synthetic_feeds()?,
                options: tsunagi_mllp::ServerOptions::default(),
                tls: None,
            }),
            outbound,
        },
    )
    .await
}

/// The region's images: hospital A's PACS played by a real Orthanc (when installed; the demo
/// says how to get it when not), seeded with the synthetic studies and synced over QIDO-RS. The
/// running Orthanc (stopped when dropped) and the PACS the gateway opens images from.
async fn demo_images(
    region: &Path,
    store: Arc<dyn Backend>,
    patients: usize,
) -> anyhow::Result<
    Option<(
        tsunagi_testkit::orthanc::Orthanc,
        tsunagi_server::dicomweb::Pacs,
    )>,
> {
    let hospital = tsunagi_synth::HOSPITALS[0];
    if !tsunagi_testkit::orthanc::installed() {
        println!(
            "\n   images: no PACS here (Orthanc is not installed). To open {}'s images through the gateway's /dicomweb, install it (Debian/Ubuntu: sudo apt-get install orthanc orthanc-dicomweb) and run the demo again.",
            hospital.name
        );
        return Ok(None);
    }
    tsunagi_synth::generate_images(region, patients, 2026)
        .with_context(|| format!("cannot generate images into {}", region.display()))?;
    println!(
        "\n   and {}'s PACS: a real Orthanc on loopback holding its studies, synced over QIDO-RS",
        hospital.name
    );
    let orthanc = tsunagi_testkit::orthanc::Orthanc::start().context("starting Orthanc")?;
    orthanc
        .store_folder(&region.join("pacs").join(hospital.code))
        .context("storing the synthetic studies in Orthanc")?;
    let config =
        crate::ingest_dicomweb::dicomweb_config(&crate::ingest_dicomweb::DicomWebSource {
            facility: hospital.code.to_owned(),
            name: Some(hospital.name.to_owned()),
            url: orthanc.dicomweb_url(),
            ..Default::default()
        })?;
    let timeout = config.timeout;
    let started = Instant::now();
    let report = crate::registry::pull(crate::registry::Source::DicomWeb(config))
        .pull(&crate::open::context(
            store,
            Arc::new(tsunagi_adapter::NoProgress),
        ))
        .await?;
    print_summary(
        &report,
        Some(hospital.name),
        started.elapsed().as_secs_f64(),
    );
    let pacs =
        tsunagi_server::dicomweb::Pacs::new(hospital.code, &orthanc.dicomweb_url(), None, timeout)
            .map_err(|error| anyhow::anyhow!(error))?;
    Ok(Some((orthanc, pacs)))
}

/// The demo's write-back: once the API is up, the clinic doctor writes a note to hospital A about
/// the shared patient through `POST /fhir/Communication`, and the note is followed until the
/// hospital's EHR stand-in has acknowledged it.
async fn demo_note(
    store: Arc<dyn Backend>,
    listen: String,
    patient_id: String,
    standin: tsunagi_mllp::standin::StandIn,
) {
    let outcome = async {
        let keys =
            tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros())
                .await?;
        let key = keys.first().context("no signing key")?;
        // Once the API answers at all, the origin it serves under (the issuer) is recorded.
        let mut up = false;
        for _ in 0..200 {
            if http_post(&listen, "/fhir/metadata", "", "").await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        anyhow::ensure!(up, "the API did not come up");
        let origin = store
            .served_origin()
            .await?
            .context("the API did not record its origin")?;
        let (token, _) = tsunagi_server::security::issue_token(
            store.as_ref(),
            key,
            &tsunagi_server::security::TokenSettings::for_base(&origin),
            tsunagi_server::security::Subject::User {
                user: "dr-demo",
                via: "tsunagi demo",
            },
            "user/*.rs user/Communication.c",
            SystemClock.now_micros() / 1_000_000,
        )
        .await?;
        let hospital = tsunagi_synth::HOSPITALS[0].code;
        let note = serde_json::json!({
            "resourceType": "Communication",
            "identifier": [{"system": "urn:tsunagi:demo:notes", "value": "demo-note-1"}],
            "status": "completed",
            "subject": {"reference": format!("Patient/{patient_id}")},
            "recipient": [{"reference": format!("Organization/{hospital}")}],
            "payload": [{"contentString": "退院後の経過は良好です。①内服継続 ②次回受診 12/1（ｶﾙﾃ参照）"}]
        })
        .to_string();
        let mut reply = None;
        for _ in 0..100 {
            if let Ok(answer) = http_post(&listen, "/fhir/Communication", &token, &note).await {
                reply = Some(answer);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, location) = reply.context("the API did not come up")?;
        println!("\n7. dr-demo wrote a note to the hospital through the API: HTTP {status}, {location}");
        for _ in 0..200 {
            if let Some((control_id, _)) = standin.accepted().into_iter().next() {
                println!(
                    "   delivered to the {} EHR stand-in as MDM^T02 (ISO-2022-JP, MSH-10 {control_id}), acknowledged AA; see Task?focus=… for its state",
                    tsunagi_synth::HOSPITALS[0].name
                );
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the note was not delivered within 10 s")
    }
    .await;
    if let Err(error) = outcome {
        println!("   the demo note: {error:#}");
    }
}

/// A minimal HTTP/1.1 POST of FHIR JSON with a bearer token: the status code and `Location`.
async fn http_post(
    address: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status")?;
    let location = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((status, location))
}

/// The demo network: the three hospitals, a clinic with a doctor, the clinic invited to one
/// patient of hospital A, and that patient's record at hospital B linked when there is one.
async fn demo_network(store: &dyn Backend, patient_id: &str) -> anyhow::Result<()> {
    use tsunagi_store::governance::{Consent, Facility, Participant};
    const CLINIC: &str = "0610400014";
    let now = SystemClock.now_micros();
    for hospital in tsunagi_synth::HOSPITALS {
        store
            .put_facility(&Facility {
                code: hospital.code.to_owned(),
                name: hospital.name.to_owned(),
                kind: "hospital".to_owned(),
                active: true,
            })
            .await?;
    }
    store
        .put_facility(&Facility {
            code: CLINIC.to_owned(),
            name: "つなぎ内科クリニック".to_owned(),
            kind: "clinic".to_owned(),
            active: true,
        })
        .await?;
    store
        .put_participant(&Participant {
            id: "dr-demo".to_owned(),
            name: "佐藤 医師".to_owned(),
            facility: CLINIC.to_owned(),
            role: "doctor".to_owned(),
            active: true,
        })
        .await?;
    if store.holder(patient_id).await?.is_some() {
        store
            .put_consent(&Consent {
                id: "demo-invitation".to_owned(),
                patient: patient_id.to_owned(),
                disclosing: tsunagi_synth::HOSPITALS[0].code.to_owned(),
                viewing: CLINIC.to_owned(),
                start: now - 86_400_000_000,
                end: i64::MAX,
                withdrawn_at: None,
                source: "invitation".to_owned(),
                created_by: "tsunagi demo".to_owned(),
                created_at: now,
            })
            .await?;
    }
    println!(
        "\n5. the network: 3 hospitals and clinic {CLINIC} (user dr-demo, a doctor), invited by {} to Patient/{patient_id}; every other chart stays hidden from the clinic",
        tsunagi_synth::HOSPITALS[0].name
    );
    Ok(())
}

/// Names a referral letter and a progress note of the demo's patient, and how to read each (and
/// its original file) through the API.
async fn show_documents(store: &dyn Backend, patient_id: &str, listen: &str) -> anyhow::Result<()> {
    let subject = format!("Patient/{patient_id}");
    let mut found: [Option<(String, String, String)>; 2] = [None, None];
    let mut visit = |resource: tsunagi_store::StoredResource| {
        if resource.resource_type != "DocumentReference" {
            return Ok(());
        }
        let Ok(Some(json)) = resource.to_json() else {
            return Ok(());
        };
        if json["subject"]["reference"] != subject.as_str() {
            return Ok(());
        }
        let category = json["category"][0]["coding"][0]["code"]
            .as_str()
            .unwrap_or_default();
        let slot = match category {
            "referral" => 0,
            "progress-note" if json["status"] == "current" => 1,
            _ => return Ok(()),
        };
        if found[slot].is_none() {
            found[slot] = Some((
                resource.id.clone(),
                json["subject"]["reference"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                json["content"][0]["attachment"]["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        Ok(())
    };
    store.for_each_current(&mut visit).await?;
    for (what, document) in [
        "a referral letter (診療情報提供書)",
        "a progress note (経過記録)",
    ]
    .iter()
    .zip(found)
    {
        if let Some((id, subject, binary)) = document {
            println!(
                "\n   {what} of {subject}, as the hospital's EHR wrote it (read with the token below):"
            );
            println!(
                "   curl -H \"Authorization: Bearer $TOKEN\" http://{listen}/fhir/DocumentReference/{id}"
            );
            println!(
                "   curl -H \"Authorization: Bearer $TOKEN\" http://{listen}/fhir/{binary}   # the original CDA"
            );
        }
    }
    Ok(())
}
