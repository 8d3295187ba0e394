//! `tsunagi admin outbox list|show|retry|drop`: the operator's view of notes and documents queued
//! for the hospitals' EHRs — what is pending, what was delivered, and the dead letters (refused
//! with AR or out of attempts) — and the two ways out: replay, or drop. Both are audited and
//! shown on the delivery's Task.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use tsunagi_adapter::delivery::operator_act;
use tsunagi_core::time::format_instant_jst;
use tsunagi_store::{DeliveryState, OutboundMessage, operator::Act};

use crate::{admin::act, open::open_store, quarantine::segments};

/// `tsunagi admin outbox <action>`.
#[derive(Debug, Subcommand)]
pub(crate) enum OutboxAction {
    /// List deliveries, oldest first: the dead letters and those still pending (or those of
    /// `--state`).
    List {
        #[arg(long)]
        db: String,
        /// States to list: pending, delivered, dead, dropped (repeat or separate by commas).
        /// Default: dead,pending.
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one delivery: where it stands, the peer's last answer and the message.
    Show {
        #[arg(long)]
        db: String,
        /// The delivery's number (first column of `list`).
        seq: i64,
    },
    /// Send dead letters (or pending messages) again now, with fresh attempts.
    Retry {
        #[arg(long)]
        db: String,
        /// Delivery numbers; none with `--all`.
        seq: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Give up on a delivery: it is never sent again; its Task is cancelled.
    Drop {
        #[arg(long)]
        db: String,
        seq: i64,
        /// Why, for the Task and the audit trail.
        #[arg(long)]
        reason: String,
    },
}

fn parse_states(given: &[String]) -> anyhow::Result<Vec<DeliveryState>> {
    if given.is_empty() {
        return Ok(vec![DeliveryState::Dead, DeliveryState::Pending]);
    }
    given
        .iter()
        .map(|text| {
            DeliveryState::parse(text).with_context(|| {
                format!("--state {text:?}: one of pending, delivered, dead, dropped")
            })
        })
        .collect()
}

/// One delivery per line: number, queued, state, destination, resource, MSH-10, attempts, next
/// attempt, last error.
fn list_line(message: &OutboundMessage) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        message.seq,
        format_instant_jst(message.created),
        message.state.as_str(),
        message.destination,
        message.resource,
        message.control_id,
        message.attempts,
        if message.state == DeliveryState::Pending {
            format_instant_jst(message.next_attempt)
        } else {
            "-".to_owned()
        },
        message.last_error
    )
}

/// Runs one `tsunagi admin outbox` command.
pub(crate) async fn run(action: OutboxAction, now: i64) -> anyhow::Result<()> {
    match action {
        OutboxAction::List { db, state, limit } => {
            let states = parse_states(&state)?;
            let store = open_store(&db).await?;
            let mut out = std::io::stdout().lock();
            for message in store.outbound_list(&states, 0, limit).await? {
                match writeln!(out, "{}", list_line(&message)) {
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
                    written => written?,
                }
            }
        }
        OutboxAction::Show { db, seq } => {
            let store = open_store(&db).await?;
            let message = store
                .outbound(seq)
                .await?
                .with_context(|| format!("no delivery {seq} in the outbox"))?;
            println!("delivery {}", message.seq);
            println!("state        {}", message.state.as_str());
            println!("destination  {}", message.destination);
            println!("resource     {}", message.resource);
            println!("task         {}", message.task);
            println!("patient      {}", message.patient);
            println!("MSH-10       {}", message.control_id);
            println!("queued       {}", format_instant_jst(message.created));
            println!("attempts     {}", message.attempts);
            if message.state == DeliveryState::Pending {
                println!("next attempt {}", format_instant_jst(message.next_attempt));
            }
            if !message.last_error.is_empty() {
                println!("last error   {}", message.last_error);
            }
            if !message.ack.is_empty() {
                println!("last answer:");
                print!("{}", segments(&message.ack));
            }
            println!("message ({} bytes, ISO-2022-JP):", message.payload.len());
            print!("{}", segments(&message.payload));
        }
        OutboxAction::Retry { db, seq, all } => {
            let store = open_store(&db).await?;
            let numbers = match (all, seq.is_empty()) {
                (true, true) => {
                    let mut numbers = Vec::new();
                    let mut after = 0;
                    loop {
                        let page = store
                            .outbound_list(&[DeliveryState::Dead], after, 1000)
                            .await?;
                        let Some(last) = page.last() else { break };
                        after = last.seq;
                        numbers.extend(page.iter().map(|message| message.seq));
                    }
                    numbers
                }
                (false, false) => seq,
                _ => bail!("give delivery numbers, or --all"),
            };
            for number in &numbers {
                let audit = |message: &OutboundMessage| {
                    act(
                        Act::OutboxRetry,
                        &format!(
                            "outbound {} of {} to {}",
                            message.control_id, message.resource, message.destination
                        ),
                        Some(&message.patient),
                        now,
                    )
                };
                operator_act(
                    store.as_ref(),
                    *number,
                    true,
                    "tsunagi admin outbox",
                    now,
                    audit,
                )
                .await
                .with_context(|| format!("delivery {number}"))?;
                println!("{number}\tqueued again");
            }
            println!(
                "{} queued again; a running `tsunagi serve` delivers them",
                numbers.len()
            );
        }
        OutboxAction::Drop { db, seq, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason: say why the delivery is dropped");
            }
            let store = open_store(&db).await?;
            let audit = |message: &OutboundMessage| {
                act(
                    Act::OutboxDrop,
                    &format!(
                        "outbound {} of {} to {}: {reason}",
                        message.control_id, message.resource, message.destination
                    ),
                    Some(&message.patient),
                    now,
                )
            };
            operator_act(store.as_ref(), seq, false, &reason, now, audit)
                .await
                .with_context(|| format!("delivery {seq}"))?;
            println!("delivery {seq} dropped");
        }
    }
    Ok(())
}
