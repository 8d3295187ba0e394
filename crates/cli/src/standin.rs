//! `tsunagi standin`: a hospital EHR stand-in on a socket of its own, so a hospital's IT staff
//! can try outbound delivery (notes and documents as MDM^T02 over MLLP) before connecting their
//! EHR. It answers every message as told (`--answer`), prints one line per message, and keeps
//! each message as received when `--out` names a folder.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use tsunagi_hl7v2::{Message, charset};
use tsunagi_mllp::standin::{Behaviour, StandIn};

/// How `--answer` is spelled: AA, AE, AR, slow:<milliseconds>, drop, garbage.
pub(crate) fn behaviour(answer: &str) -> anyhow::Result<Behaviour> {
    Ok(match answer.to_ascii_lowercase().as_str() {
        "aa" => Behaviour::Accept,
        "ae" => Behaviour::Error,
        "ar" => Behaviour::Reject,
        "drop" => Behaviour::Drop,
        "garbage" => Behaviour::Garbage,
        other => match other.strip_prefix("slow:").map(str::parse::<u64>) {
            Some(Ok(millis)) => Behaviour::Slow(Duration::from_millis(millis)),
            _ => {
                bail!("--answer {answer:?}: one of AA, AE, AR, slow:<milliseconds>, drop, garbage")
            }
        },
    })
}

/// `tsunagi standin --listen … [--answer …] [--out DIR]`, until Ctrl-C.
pub(crate) async fn run(listen: &str, answer: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let behaviour = behaviour(answer)?;
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let standin = StandIn::start(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    standin.set_default(behaviour);
    let mut received = standin.watch();
    println!(
        "EHR stand-in listening on {} (MLLP), answering {answer}; in tsunagi.toml:\n  [[destination]]\n  kind = \"mllp\"\n  facility = \"<the hospital's code>\"\n  address = \"{}\"",
        standin.address(),
        standin.address()
    );
    let mut count = 0usize;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            message = received.recv() => {
                let Some((bytes, answered)) = message else { break };
                count += 1;
                // Kept before it is announced: a reader of the line finds the file.
                if let Some(dir) = &out {
                    let path = dir.join(format!("{count:06}.hl7"));
                    std::fs::write(&path, &bytes)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                println!("{count}: {} → {}", describe(&bytes), answer_name(answered));
            }
        }
    }
    println!("stopped after {count} message(s)");
    Ok(())
}

/// `MDM^T02^MDM_T02 control id … for patient …`, or why it could not be read.
fn describe(bytes: &[u8]) -> String {
    let Ok((text, _)) = charset::decode(bytes) else {
        return format!(
            "{} bytes that are not ISO-2022-JP or UTF-8 HL7",
            bytes.len()
        );
    };
    match Message::parse(&text) {
        Ok(message) => {
            let msh = message.msh();
            let patient = message
                .first("PID")
                .map(|pid| pid.field(3).first().component(1).text().trim().to_owned())
                .unwrap_or_default();
            format!(
                "{} control id {} from {}|{} for patient {}",
                msh.field(9).raw(),
                message.control_id(),
                msh.field(3).raw(),
                msh.field(4).raw(),
                if patient.is_empty() { "-" } else { &patient }
            )
        }
        Err(error) => format!("{} bytes, not HL7: {error}", bytes.len()),
    }
}

fn answer_name(behaviour: Behaviour) -> String {
    match behaviour {
        Behaviour::Accept => "AA".to_owned(),
        Behaviour::Error => "AE".to_owned(),
        Behaviour::Reject => "AR".to_owned(),
        Behaviour::Slow(pause) => format!("AA after {} ms", pause.as_millis()),
        Behaviour::Drop => "connection dropped".to_owned(),
        Behaviour::Garbage => "garbage".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_spelled_as_documented() {
        assert_eq!(behaviour("AA").unwrap(), Behaviour::Accept);
        assert_eq!(behaviour("ae").unwrap(), Behaviour::Error);
        assert_eq!(behaviour("AR").unwrap(), Behaviour::Reject);
        assert_eq!(
            behaviour("slow:250").unwrap(),
            Behaviour::Slow(Duration::from_millis(250))
        );
        assert_eq!(behaviour("drop").unwrap(), Behaviour::Drop);
        assert!(behaviour("maybe").is_err());
        assert!(behaviour("slow:x").is_err());
    }
}
