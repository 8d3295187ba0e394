//! `tsunagi admin quarantine list|show|retry|drop`: the operator's view of inbound HL7 v2 messages
//! that were stored but not applied (unknown message type, patient not registered yet, a mapping
//! error) and of conflicting resends, and the two ways out: apply again, or drop. Retry and drop
//! are written to the audit trail.

use std::{io::Write, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use clap::Subcommand;
use tsunagi_adapter_hl7v2::{RetryOutcome, retry};
use tsunagi_core::{clock::SystemClock, time::format_instant_jst};
use tsunagi_store::{Batch, InboundMessage, MessageState, Operation};

use tsunagi_store::operator::Act;

use crate::{admin::act, config::Config, open::open_store};

/// `tsunagi admin quarantine <action>`.
#[derive(Debug, Subcommand)]
pub(crate) enum QuarantineAction {
    /// List messages waiting for the operator, oldest first: quarantined and conflicting ones
    /// (or those of `--state`).
    List {
        #[arg(long)]
        db: String,
        /// States to list: quarantined, conflict, dropped, applied (repeat or separate by
        /// commas). Default: quarantined,conflict.
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one message: what is known of it, the ACK it was answered with, and its segments.
    Show {
        #[arg(long)]
        db: String,
        /// The message's number (first column of `list`).
        seq: i64,
    },
    /// Apply quarantined messages again, after their cause was fixed (the patient registered, a
    /// code table completed).
    Retry {
        #[arg(long)]
        db: String,
        /// The config whose hl7v2 sources the messages came from. Without it: the three
        /// synthetic hospitals of `tsunagi demo`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Message numbers; none with `--all`.
        seq: Vec<i64>,
        /// Every quarantined message, oldest first.
        #[arg(long)]
        all: bool,
    },
    /// Drop a quarantined or conflicting message: kept in the log, never applied.
    Drop {
        #[arg(long)]
        db: String,
        seq: i64,
        /// Why, for the log and the audit trail.
        #[arg(long)]
        reason: String,
    },
}

fn parse_states(given: &[String]) -> anyhow::Result<Vec<MessageState>> {
    if given.is_empty() {
        return Ok(vec![MessageState::Quarantined, MessageState::Conflict]);
    }
    given
        .iter()
        .map(|text| {
            MessageState::parse(text).with_context(|| {
                format!("--state {text:?}: one of quarantined, conflict, dropped, applied")
            })
        })
        .collect()
}

/// One message per line: number, received, state, channel, sender, MSH-10, type, patient, reason.
fn list_line(message: &InboundMessage) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        message.seq,
        format_instant_jst(message.received),
        message.state.as_str(),
        message.channel,
        message.sender,
        message.control_id,
        message.message_type,
        if message.patient.is_empty() {
            "-"
        } else {
            &message.patient
        },
        message.reason
    )
}

/// Segments one per line (HL7 separates them with CR), decoded from ISO-2022-JP or UTF-8.
pub(crate) fn segments(bytes: &[u8]) -> String {
    let text = match tsunagi_hl7v2::charset::decode(bytes) {
        Ok((text, _)) => text.into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    text.split(['\r', '\n'])
        .filter(|line| !line.is_empty())
        .map(|line| format!("  {line}\n"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs one `tsunagi admin quarantine` command.
pub(crate) async fn run(action: QuarantineAction, now: i64) -> anyhow::Result<()> {
    match action {
        QuarantineAction::List { db, state, limit } => {
            let states = parse_states(&state)?;
            let store = open_store(&db).await?;
            let mut out = std::io::stdout().lock();
            for message in store.messages(&states, 0, limit).await? {
                match writeln!(out, "{}", list_line(&message)) {
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
                    written => written?,
                }
            }
        }
        QuarantineAction::Show { db, seq } => {
            let store = open_store(&db).await?;
            let message = store
                .message(seq)
                .await?
                .with_context(|| format!("no message {seq} in the log"))?;
            println!("message {}", message.seq);
            println!("state      {}", message.state.as_str());
            if !message.reason.is_empty() {
                println!("reason     {}", message.reason);
            }
            println!("received   {}", format_instant_jst(message.received));
            println!("channel    {}", message.channel);
            println!(
                "sender     {} (facility {})",
                message.sender, message.facility
            );
            println!("MSH-10     {}", message.control_id);
            println!("type       {}", message.message_type);
            println!("patient    {}", message.patient);
            println!("sha256     {}", hex(&message.hash));
            println!("answered with:");
            print!("{}", segments(&message.ack));
            println!("message ({} bytes):", message.raw.len());
            print!("{}", segments(&message.raw));
        }
        QuarantineAction::Retry {
            db,
            config,
            seq,
            all,
        } => {
            let feeds = match config {
                Some(path) => crate::serve::feeds_from_config(Some(&Config::load(&path)?))?,
                None => crate::serve::synthetic_feeds()?,
            };
            let store = open_store(&db).await?;
            let numbers = match (all, seq.is_empty()) {
                (true, true) => {
                    let mut numbers = Vec::new();
                    let mut after = 0;
                    loop {
                        let page = store
                            .messages(&[MessageState::Quarantined], after, 1000)
                            .await?;
                        let Some(last) = page.last() else { break };
                        after = last.seq;
                        numbers.extend(page.iter().map(|message| message.seq));
                    }
                    numbers
                }
                (false, false) => seq,
                _ => bail!("give message numbers, or --all"),
            };
            let feeds = Arc::new(feeds);
            let (mut applied, mut still) = (0usize, 0usize);
            for number in numbers {
                // The audit names the message and the patient as the sender identifies them.
                let what = match store.message(number).await? {
                    Some(message) => format!(
                        "inbound message {number} ({} {} patient {} of facility {})",
                        message.message_type, message.control_id, message.patient, message.facility
                    ),
                    None => format!("inbound message {number}"),
                };
                let audit = |outcome: &RetryOutcome| {
                    let done = match outcome {
                        RetryOutcome::Applied => Act::QuarantineRetry,
                        RetryOutcome::StillQuarantined(_) => Act::QuarantineRetryFailed,
                    };
                    act(done, &what, None, now)
                };
                let clock = Arc::new(SystemClock);
                let outcome = retry(store.clone(), feeds.clone(), clock, number, audit)
                    .await
                    .with_context(|| format!("message {number}"))?;
                match outcome {
                    RetryOutcome::Applied => {
                        applied += 1;
                        println!("{number}\tapplied");
                    }
                    RetryOutcome::StillQuarantined(reason) => {
                        still += 1;
                        println!("{number}\tstill quarantined: {reason}");
                    }
                }
            }
            println!("{applied} applied, {still} still quarantined");
        }
        QuarantineAction::Drop { db, seq, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason: say why the message is dropped");
            }
            let store = open_store(&db).await?;
            let message = store
                .message(seq)
                .await?
                .with_context(|| format!("no message {seq} in the log"))?;
            if !matches!(
                message.state,
                MessageState::Quarantined | MessageState::Conflict
            ) {
                bail!(
                    "message {seq} is {}: only quarantined or conflicting messages are dropped",
                    message.state.as_str()
                );
            }
            let what = format!("inbound message {seq}: {reason}");
            let record = act(Act::QuarantineDrop, &what, None, now);
            store
                .apply(Batch {
                    operations: vec![
                        Operation::SetMessageState {
                            seq,
                            state: MessageState::Dropped,
                            reason: format!("dropped by the operator: {reason}"),
                        },
                        Operation::Audit(Box::new(record)),
                    ],
                })
                .await?;
            println!("message {seq} dropped");
        }
    }
    Ok(())
}
