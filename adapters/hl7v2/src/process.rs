//! What is done with one received message: the decisions of [`crate::Intake`] (reject,
//! duplicate, conflict, quarantine, apply) and the ACK each one is answered with.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sha2::{Digest, Sha256};
use tsunagi_core::{clock::Clock, ids::logical_id, time::format_hl7_jst};
use tsunagi_hl7v2::{
    Message,
    ack::{AckError, AckMode, ErrorCondition, Header, Outcome, Responder, write_ack},
    charset,
};
use tsunagi_mapping::{
    DataType, Origin, SourceContext, SourceRecord, map,
    pushed::{IdentifyError, identify},
};
use tsunagi_store::{
    Access, Batch, InboundMessage, MessageState, Operation, ResourceWrite, StoreError,
    governance::AuditRecord,
};

use crate::{
    FeedStore, Feeds, IntakeError, Peer,
    decision::{Decision, Facts, Logged, error, header_of_unreadable, outcome_of, raw_key},
};

/// The transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// An MLLP connection.
    Mllp,
    /// `POST /hl7v2`.
    Http,
}

impl Channel {
    /// The spelling in the log and in `meta.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mllp => "mllp",
            Self::Http => "http",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "http" {
            Self::Http
        } else {
            Self::Mllp
        }
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// How it came.
    pub channel: Channel,
    /// The frame's content as received.
    pub raw: Vec<u8>,
    /// How the connection identifies its sender.
    pub origin: Peer,
}

/// The answer to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The ACK to send (`None`: the sender asked for none, MSH-15).
    pub ack: Option<Vec<u8>>,
    /// What was done.
    pub outcome: Outcome,
    /// Why it was not accepted (empty when accepted).
    pub reason: String,
    /// Whether this was a resend of a message already logged.
    pub duplicate: bool,
}

/// What a retry of a quarantined message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Applied now.
    Applied,
    /// Still cannot be applied, for this reason.
    StillQuarantined(String),
}

/// A message ready to commit: its operations and the reply owed once they are durable.
pub(crate) struct Prepared {
    pub(crate) operations: Vec<Operation>,
    pub(crate) reply: Reply,
}

pub(crate) struct Processor<S: ?Sized> {
    store: Arc<S>,
    feeds: Arc<Feeds>,
    clock: Arc<dyn Clock>,
    /// Duplicate keys logged in the group being prepared: content hash and ACK.
    group_keys: HashMap<(String, String), Logged>,
    /// Patients registered by messages of the group being prepared.
    group_patients: HashSet<String>,
    /// What the log held for the group's duplicate keys, looked up at once ([`Self::prefetch`]);
    /// `None`: not logged.
    prefetched: HashMap<(String, String), Option<Logged>>,
    /// Patients known to exist: registered by a committed group, or found in the store.
    known_patients: HashSet<String>,
}

impl<S: FeedStore + ?Sized> Processor<S> {
    pub(crate) fn new(store: Arc<S>, feeds: Arc<Feeds>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            feeds,
            clock,
            group_keys: HashMap::new(),
            group_patients: HashSet::new(),
            prefetched: HashMap::new(),
            known_patients: HashSet::new(),
        }
    }

    /// Looks up the duplicate keys of a whole group in one query, before its messages are
    /// decided one by one.
    pub(crate) async fn prefetch(&mut self, raws: &[&[u8]]) -> Result<(), StoreError> {
        let keys: Vec<(String, String)> = raws.iter().filter_map(|raw| raw_key(raw)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        for logged in self.store.logged_messages(&keys).await? {
            let outcome = outcome_of(logged.state);
            self.prefetched.insert(
                (logged.sender, logged.control_id),
                Some((logged.hash, logged.ack, outcome)),
            );
        }
        for key in keys {
            self.prefetched.entry(key).or_insert(None);
        }
        Ok(())
    }

    /// The group committed: the patients it registered exist from now on.
    pub(crate) fn committed(&mut self) {
        // Bounded: a region has tens of thousands of patients; start afresh beyond that.
        if self.known_patients.len() > 200_000 {
            self.known_patients.clear();
        }
        self.known_patients.extend(self.group_patients.drain());
    }

    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// Completes a batch with the resources several records make together (a visit's one
    /// Encounter), folded in the same batch ([`tsunagi_store::contributions`]).
    pub(crate) async fn settled(&self, batch: Batch) -> Result<Batch, StoreError> {
        tsunagi_store::contributions::settle(self.store.as_ref(), batch, &tsunagi_mapping::Folds)
            .await
    }

    /// Forgets what the previous group held (it is committed, or nothing of it is).
    pub(crate) fn begin_group(&mut self) {
        self.group_keys.clear();
        self.group_patients.clear();
        self.prefetched.clear();
    }

    /// Decides one received message: its content hash and what the rules say.
    async fn decide_received(
        &mut self,
        received: &Received,
    ) -> Result<(Vec<u8>, Decision), StoreError> {
        // Resends are compared by content, whatever their segment terminators; the raw bytes
        // are kept as received.
        let hash = Sha256::digest(tsunagi_hl7v2::normal_segments(&received.raw)).to_vec();
        let decision = self
            .decide(
                &received.raw,
                &received.origin,
                received.channel,
                &hash,
                true,
            )
            .await?;
        Ok((hash, decision))
    }

    /// Decides and prepares one message of the group.
    pub(crate) async fn prepare(&mut self, received: &Received) -> Result<Prepared, StoreError> {
        let (hash, decision) = self.decide_received(received).await?;
        Ok(self.settle(received, hash, decision))
    }

    /// Commits one message in a transaction of its own; a message the store refuses is
    /// quarantined with the store's reason.
    pub(crate) async fn commit_alone(&mut self, received: &Received) -> Result<Reply, IntakeError> {
        self.begin_group();
        let (hash, decision) = self.decide_received(received).await?;
        // Should the store refuse what the message maps to, it is quarantined with these facts.
        let fallback = match &decision {
            Decision::Apply {
                header,
                mode,
                facts,
                ..
            } => Some((header.clone(), *mode, facts.clone())),
            _ => None,
        };
        let prepared = self.settle(received, hash.clone(), decision);
        if prepared.operations.is_empty() {
            return Ok(prepared.reply);
        }
        let batch = self
            .settled(Batch {
                operations: prepared.operations,
            })
            .await?;
        match self.store.apply(batch).await {
            Ok(_) => Ok(prepared.reply),
            Err(StoreError::Invalid(reason)) => {
                let Some((header, mode, facts)) = fallback else {
                    return Err(StoreError::Invalid(reason).into());
                };
                self.begin_group();
                let decision = Decision::Quarantine {
                    header,
                    mode,
                    facts,
                    error: error(
                        ErrorCondition::Internal,
                        None,
                        format!("the store refused the mapped record: {reason}"),
                    ),
                };
                let prepared = self.settle(received, hash, decision);
                self.store
                    .apply(Batch {
                        operations: prepared.operations,
                    })
                    .await?;
                Ok(prepared.reply)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Applies a quarantined message again.
    pub(crate) async fn retry(
        &mut self,
        seq: i64,
        audit: impl FnOnce(&RetryOutcome) -> AuditRecord + Send,
    ) -> Result<RetryOutcome, IntakeError> {
        let message = self.store.message(seq).await?.ok_or_else(|| {
            IntakeError::Store(StoreError::NotFound(format!("message {seq} is not logged")))
        })?;
        if message.state != MessageState::Quarantined {
            return Err(IntakeError::Store(StoreError::Invalid(format!(
                "message {seq} is {}, not quarantined",
                message.state.as_str()
            ))));
        }
        self.begin_group();
        let decision = self
            .decide(
                &message.raw,
                &Peer::Logged,
                Channel::parse(&message.channel),
                &message.hash,
                false,
            )
            .await?;
        let (mut operations, outcome) = match decision {
            Decision::Apply { mut operations, .. } => {
                operations.push(Operation::SetMessageState {
                    seq,
                    state: MessageState::Applied,
                    reason: String::new(),
                });
                (operations, RetryOutcome::Applied)
            }
            Decision::Quarantine { error, .. }
            | Decision::Reject { error, .. }
            | Decision::Conflict { error, .. } => (
                vec![Operation::SetMessageState {
                    seq,
                    state: MessageState::Quarantined,
                    reason: error.text.clone(),
                }],
                RetryOutcome::StillQuarantined(error.text),
            ),
            Decision::Duplicate { .. } => (Vec::new(), RetryOutcome::Applied),
        };
        operations.push(Operation::Audit(Box::new(audit(&outcome))));
        let batch = self.settled(Batch { operations }).await?;
        self.store.apply(batch).await?;
        Ok(outcome)
    }

    async fn decide(
        &mut self,
        raw: &[u8],
        origin: &Peer,
        channel: Channel,
        hash: &[u8],
        check_duplicates: bool,
    ) -> Result<Decision, StoreError> {
        let reject = |header: Header, condition, location, text: String| Decision::Reject {
            header,
            error: error(condition, location, text),
        };
        let text = match charset::decode(raw) {
            Ok((text, _)) => text,
            Err(cause) => {
                return Ok(reject(
                    header_of_unreadable(raw),
                    ErrorCondition::DataType,
                    None,
                    format!("the message cannot be decoded: {cause}"),
                ));
            }
        };
        let message = match Message::parse(&text) {
            Ok(message) => message,
            Err(cause) => {
                return Ok(reject(
                    header_of_unreadable(raw),
                    ErrorCondition::SegmentSequence,
                    None,
                    format!("not a valid HL7 v2 message: {cause}"),
                ));
            }
        };
        let header = Header::of(&message);
        let mode = AckMode::of(&message);
        if message.control_id().trim().is_empty() {
            return Ok(reject(
                header,
                ErrorCondition::RequiredFieldMissing,
                Some(("MSH", 10)),
                "MSH-10 (message control id) is empty: a resend could not be told from a new message"
                    .to_owned(),
            ));
        }
        let message_type = match message.message_type() {
            Ok(message_type) => message_type,
            Err(cause) => {
                return Ok(reject(
                    header,
                    ErrorCondition::RequiredFieldMissing,
                    Some(("MSH", 9)),
                    cause.reason,
                ));
            }
        };
        let processing = message.msh().field(11).component(1).text();
        if !matches!(processing.trim(), "P" | "") {
            return Ok(reject(
                header,
                ErrorCondition::UnsupportedProcessingId,
                Some(("MSH", 11)),
                format!(
                    "MSH-11 is {:?}: only production (P) messages are stored",
                    processing.trim()
                ),
            ));
        }
        let msh = message.msh();
        let feed = match self
            .feeds
            .find(msh.field(3).raw(), msh.field(4).raw(), origin)
        {
            Ok(feed) => feed.clone(),
            Err(cause) => {
                return Ok(reject(
                    header,
                    ErrorCondition::UnknownKey,
                    Some(("MSH", 4)),
                    cause.to_string(),
                ));
            }
        };
        let mut facts = Facts {
            sender: format!("{}|{}", header.sending_application, header.sending_facility),
            control_id: message.control_id().trim().to_owned(),
            facility: feed.facility.as_str().to_owned(),
            message_type: format!("{}^{}", message_type.code, message_type.trigger),
            patient: message
                .first("PID")
                .map(|pid| pid.field(3).first().component(1).text().trim().to_owned())
                .unwrap_or_default(),
        };
        // The keys the message log holds are text: a control character in them (a NUL, which
        // PostgreSQL's text cannot hold) is refused here, by field, not left to fail the group.
        let keys: [(&String, (&str, usize), &str); 4] = [
            (&facts.sender, ("MSH", 4), "MSH-3/MSH-4 (sender)"),
            (
                &facts.control_id,
                ("MSH", 10),
                "MSH-10 (message control id)",
            ),
            (&facts.message_type, ("MSH", 9), "MSH-9 (message type)"),
            (&facts.patient, ("PID", 3), "PID-3 (patient id)"),
        ];
        if let Some((_, field, name)) = keys
            .iter()
            .find(|(value, _, _)| value.chars().any(|c| c.is_control()))
        {
            return Ok(reject(
                header,
                ErrorCondition::DataType,
                Some(*field),
                format!("{name} holds a control character"),
            ));
        }
        if check_duplicates {
            let key = (facts.sender.clone(), facts.control_id.clone());
            let logged = match (self.group_keys.get(&key), self.prefetched.get(&key)) {
                (Some((logged_hash, ack, outcome)), _) => {
                    Some((logged_hash.clone(), ack.clone(), *outcome))
                }
                (None, Some(prefetched)) => prefetched.clone(),
                (None, None) => self
                    .store
                    .logged_message(&key.0, &key.1)
                    .await?
                    .map(|logged| (logged.hash, logged.ack, outcome_of(logged.state))),
            };
            if let Some((logged_hash, ack, outcome)) = logged {
                // Rows logged before terminators were normalised hold the hash of the raw bytes.
                if logged_hash == hash || logged_hash[..] == Sha256::digest(raw)[..] {
                    return Ok(Decision::Duplicate { ack, outcome });
                }
                return Ok(Decision::Conflict {
                    header,
                    mode,
                    error: error(
                        ErrorCondition::DuplicateKey,
                        Some(("MSH", 10)),
                        format!(
                            "control id {} from {} was already received with other content; this message is kept for the operator",
                            facts.control_id, facts.sender
                        ),
                    ),
                    facts,
                });
            }
        }
        let quarantine = |facts: Facts, condition, location, text: String| Decision::Quarantine {
            header: header.clone(),
            mode,
            facts,
            error: error(condition, location, text),
        };
        // A lab company reports for the ordering facility named in MSH-6.
        let mut lab_for = None;
        if !feed.reports_for.is_empty() {
            let is_result = matches!(
                (message_type.code.as_str(), message_type.trigger.as_str()),
                ("ORU", "R01") | ("OUL", "R22")
            );
            if !is_result {
                let found = facts.message_type.clone();
                return Ok(quarantine(
                    facts,
                    ErrorCondition::UnsupportedMessageType,
                    Some(("MSH", 9)),
                    format!(
                        "a lab company's feed carries results (ORU^R01 or OUL^R22), not {found}"
                    ),
                ));
            }
            let named = message.msh().field(6).component(1).text().trim().to_owned();
            let Some(ordering) = feed.reports_for.iter().find(|f| f.as_str() == named) else {
                return Ok(reject(
                    header,
                    ErrorCondition::UnknownKey,
                    Some(("MSH", 6)),
                    format!(
                        "lab {} does not report for facility {named:?} (MSH-6): not in its reports_for",
                        feed.facility.as_str()
                    ),
                ));
            };
            lab_for = Some(ordering.clone());
        }
        let key = match identify(&message, &feed.rules) {
            Ok(key) => key,
            Err(IdentifyError::UnsupportedType(found)) => {
                return Ok(quarantine(
                    facts,
                    ErrorCondition::UnsupportedMessageType,
                    Some(("MSH", 9)),
                    format!("message type {found} is not one this gateway maps"),
                ));
            }
            Err(IdentifyError::NoPatient) => {
                return Ok(quarantine(
                    facts,
                    ErrorCondition::RequiredFieldMissing,
                    Some(("PID", 3)),
                    "PID-3 (patient id) is missing".to_owned(),
                ));
            }
            Err(IdentifyError::Parse(cause)) => {
                return Ok(quarantine(
                    facts,
                    ErrorCondition::DataType,
                    None,
                    cause.to_string(),
                ));
            }
        };
        facts.patient = key.patient_id.clone();
        // A lab's result is the ordering facility's lab-result record.
        let (record_facility, data_type) = match &lab_for {
            Some(ordering) => (ordering.clone(), DataType::Oml11),
            None => (feed.facility.clone(), key.data_type),
        };
        let facility = record_facility.as_str();
        let patient_logical = logical_id(&[facility, &key.patient_id]);
        if data_type != DataType::Adt00
            && !self.group_patients.contains(&patient_logical)
            && !self.known_patients.contains(&patient_logical)
            && !self.patient_exists(&patient_logical).await?
        {
            return Ok(quarantine(
                facts,
                ErrorCondition::UnknownKey,
                Some(("PID", 3)),
                format!(
                    "patient {} is not registered at facility {facility} (no ADT^A08 received); retry after registration",
                    key.patient_id
                ),
            ));
        }
        let context = SourceContext {
            facility: &record_facility,
            patient_id: &key.patient_id,
            care_date: &key.care_date,
            data_type,
            order_number: &key.order_number,
            origin: Origin::Pushed {
                channel: channel.as_str(),
                sender: feed.facility.as_str(),
            },
            tables: &feed.tables,
        };
        let mapped = match lab_for {
            Some(_) => map(SourceRecord::LabReport {
                context,
                message: &message,
            }),
            None => map(SourceRecord::Hl7v2 {
                context,
                message: &message,
            }),
        };
        let mapped = match mapped {
            Ok(mapped) => mapped,
            Err(cause) => {
                return Ok(quarantine(
                    facts,
                    ErrorCondition::DataType,
                    None,
                    format!("cannot be mapped: {cause}"),
                ));
            }
        };
        let mut resources = Vec::with_capacity(mapped.resources.len());
        for resource in &mapped.resources {
            match ResourceWrite::from_json(resource.resource_type, &resource.id, &resource.json) {
                Ok(write) => resources.push(write),
                Err(cause) => {
                    return Ok(quarantine(
                        facts,
                        ErrorCondition::Internal,
                        None,
                        format!("cannot be stored: {cause}"),
                    ));
                }
            }
        }
        if data_type == DataType::Adt00 {
            self.group_patients.insert(patient_logical);
        }
        let source_key = format!(
            "ssmix2:{facility}:{}:{}:{}:{}",
            key.patient_id, key.care_date, data_type, key.order_number
        );
        let mut operations = vec![Operation::ReplaceSource {
            source_key: source_key.clone(),
            facility: facility.to_owned(),
            resources,
        }];
        operations.extend(tsunagi_store::contributions::declare(
            &source_key,
            &tsunagi_mapping::parts_of(&mapped, facility),
        ));
        Ok(Decision::Apply {
            header,
            mode,
            facts,
            operations,
        })
    }

    async fn patient_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        let exists = self
            .store
            .read(&Access::Unrestricted, "Patient", id)
            .await?
            .is_some_and(|patient| !patient.deleted);
        if exists {
            self.known_patients.insert(id.to_owned());
        }
        Ok(exists)
    }

    /// Turns a decision into operations and the reply.
    fn settle(&mut self, received: &Received, hash: Vec<u8>, decision: Decision) -> Prepared {
        let now = self.clock.now_micros();
        let timestamp = format_hl7_jst(now);
        let control_id = format!("{now:x}{:04x}", crate::next_ack_number() & 0xffff);
        let responder = Responder {
            application: "TSUNAGI",
            facility: "",
            timestamp: &timestamp,
            control_id: &control_id,
        };
        let ack = |header: &Header, mode: AckMode, outcome: Outcome, errors: &[AckError]| {
            mode.code(outcome)
                .map(|code| write_ack(header, &responder, code, errors).into_bytes())
        };
        let (operations, reply, logged) = match decision {
            Decision::Reject { header, error } => {
                let reply = Reply {
                    ack: ack(
                        &header,
                        AckMode::Original,
                        Outcome::Rejected,
                        std::slice::from_ref(&error),
                    ),
                    outcome: Outcome::Rejected,
                    reason: error.text,
                    duplicate: false,
                };
                (Vec::new(), reply, None)
            }
            Decision::Duplicate { ack, outcome } => {
                let reply = Reply {
                    ack: (!ack.is_empty()).then_some(ack),
                    outcome,
                    reason: String::new(),
                    duplicate: true,
                };
                (Vec::new(), reply, None)
            }
            Decision::Conflict {
                header,
                mode,
                facts,
                error,
            } => {
                let bytes = ack(
                    &header,
                    mode,
                    Outcome::Rejected,
                    std::slice::from_ref(&error),
                );
                let message = self.log_row(
                    received,
                    &hash,
                    now,
                    facts,
                    MessageState::Conflict,
                    &error.text,
                    &bytes,
                );
                let reply = Reply {
                    ack: bytes,
                    outcome: Outcome::Rejected,
                    reason: error.text,
                    duplicate: false,
                };
                (vec![Operation::LogMessage(Box::new(message))], reply, None)
            }
            Decision::Quarantine {
                header,
                mode,
                facts,
                error,
            } => {
                let bytes = ack(&header, mode, Outcome::Error, std::slice::from_ref(&error));
                let key = (facts.sender.clone(), facts.control_id.clone());
                let message = self.log_row(
                    received,
                    &hash,
                    now,
                    facts,
                    MessageState::Quarantined,
                    &error.text,
                    &bytes,
                );
                let reply = Reply {
                    ack: bytes.clone(),
                    outcome: Outcome::Error,
                    reason: error.text,
                    duplicate: false,
                };
                (
                    vec![Operation::LogMessage(Box::new(message))],
                    reply,
                    Some((key, bytes, Outcome::Error)),
                )
            }
            Decision::Apply {
                header,
                mode,
                facts,
                mut operations,
            } => {
                let bytes = ack(&header, mode, Outcome::Accepted, &[]);
                let key = (facts.sender.clone(), facts.control_id.clone());
                let message = self.log_row(
                    received,
                    &hash,
                    now,
                    facts,
                    MessageState::Applied,
                    "",
                    &bytes,
                );
                operations.push(Operation::LogMessage(Box::new(message)));
                let reply = Reply {
                    ack: bytes.clone(),
                    outcome: Outcome::Accepted,
                    reason: String::new(),
                    duplicate: false,
                };
                (operations, reply, Some((key, bytes, Outcome::Accepted)))
            }
        };
        if let Some((key, bytes, outcome)) = logged {
            self.group_keys
                .insert(key, (hash, bytes.unwrap_or_default(), outcome));
        }
        Prepared { operations, reply }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_row(
        &self,
        received: &Received,
        hash: &[u8],
        now: i64,
        facts: Facts,
        state: MessageState,
        reason: &str,
        ack: &Option<Vec<u8>>,
    ) -> InboundMessage {
        InboundMessage {
            seq: 0,
            channel: received.channel.as_str().to_owned(),
            sender: facts.sender,
            control_id: facts.control_id,
            hash: hash.to_vec(),
            received: now,
            facility: facts.facility,
            message_type: facts.message_type,
            patient: facts.patient,
            state,
            reason: reason.to_owned(),
            ack: ack.clone().unwrap_or_default(),
            raw: received.raw.clone(),
        }
    }
}
