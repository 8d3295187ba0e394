//! What every mapping needs: ids, references, provenance, coded values, times, people.

use serde_json::{Value, json};
use tsunagi_core::{ids::logical_id, time::Hl7Time};
use tsunagi_fhir::{
    json::{Obj, codeable, coding, decimal, identifier, reference},
    systems::{self, for_hl7_coding_system},
};
use tsunagi_hl7v2::{Component, Field, Message, Repetition, Segment};

use crate::{Mapped, MappedResource, SourceContext};

/// Accumulates the resources and warnings of one message.
pub(crate) struct Builder<'c, 'm> {
    pub(crate) context: &'c SourceContext<'c>,
    pub(crate) message: &'c Message<'m>,
    pub(crate) trigger: String,
    source: String,
    patient_id: String,
    mapped: Mapped,
}

/// Bytes as lower-case hex (a SHA-256 in `urn:tsunagi:sha256`).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) use tsunagi_core::url::percent_encode;

impl<'c, 'm> Builder<'c, 'm> {
    pub(crate) fn new(
        context: &'c SourceContext<'c>,
        message: &'c Message<'m>,
        trigger: &str,
    ) -> Self {
        let source = match context.origin {
            crate::Origin::File(name) => format!(
                "urn:tsunagi:ssmix2:{}:{}#{}",
                context.facility,
                percent_encode(name),
                percent_encode(&message.control_id())
            ),
            crate::Origin::Pushed { channel, sender } => format!(
                "urn:tsunagi:{}:{}#{}",
                percent_encode(channel),
                percent_encode(sender),
                percent_encode(&message.control_id())
            ),
        };
        Self {
            context,
            message,
            trigger: trigger.to_owned(),
            source,
            patient_id: logical_id(&[context.facility.as_str(), context.patient_id]),
            mapped: Mapped::default(),
        }
    }

    pub(crate) fn finish(self) -> Mapped {
        self.mapped
    }

    pub(crate) fn facility(&self) -> &str {
        self.context.facility.as_str()
    }

    /// Notes a tolerated deviation.
    pub(crate) fn warn(&mut self, text: impl Into<String>) {
        self.mapped.warnings.push(text.into());
    }

    /// PID-3 may differ from the folder's patient id (seen in the guideline samples): identity
    /// follows the file name, the difference is reported.
    pub(crate) fn check_patient_id(&mut self) {
        // A pushed message's patient id is PID-3 (normalised by the feed's rules) already.
        if matches!(self.context.origin, crate::Origin::Pushed { .. }) {
            return;
        }
        let Some(pid) = self.message.first("PID") else {
            return;
        };
        let sent = pid.field(3).component(1).text().trim().to_owned();
        if !sent.is_empty() && sent != self.context.patient_id {
            self.warn(format!(
                "PID-3 {sent:?} differs from the folder's patient id {:?}; the folder id is used",
                self.context.patient_id
            ));
        }
    }

    /// The logical id of the patient this record belongs to.
    pub(crate) fn patient_id(&self) -> &str {
        &self.patient_id
    }

    /// `{"reference": "Patient/<id>"}`.
    pub(crate) fn patient_ref(&self) -> Value {
        reference("Patient", &self.patient_id)
    }

    /// An id scoped to this record: facility, patient, care date, data type, order number and
    /// the given sub-key parts.
    pub(crate) fn record_id(&self, parts: &[&str]) -> String {
        let context = self.context;
        let mut all = vec![
            context.facility.as_str(),
            context.patient_id,
            context.care_date,
            context.data_type.code(),
            context.order_number,
        ];
        all.extend_from_slice(parts);
        logical_id(&all)
    }

    /// The JP Core resource-instance value of an order line: placer order number (or the file's
    /// order number), Rp number and position in the Rp.
    pub(crate) fn order_line_instance(&self, placer: &str, rp: &str, order_in_rp: &str) -> String {
        let order = if placer.is_empty() {
            self.context.order_number
        } else {
            placer
        };
        format!("{order}.{rp}.{order_in_rp}")
    }

    /// An id scoped to the patient only (for data whose identity outlives one record, such as
    /// problem-list entries and allergies).
    pub(crate) fn patient_scoped_id(&self, parts: &[&str]) -> String {
        let mut all = vec![self.context.facility.as_str(), self.context.patient_id];
        all.extend_from_slice(parts);
        logical_id(&all)
    }

    /// `meta` with the profile (if any) and the provenance URI.
    pub(crate) fn meta(&self, profile: Option<&str>) -> Value {
        let mut meta = Obj::new();
        if let Some(profile) = profile {
            meta = meta.put("profile", json!([profile]));
        }
        meta.put("source", self.source.as_str()).build()
    }

    pub(crate) fn push(&mut self, resource_type: &'static str, id: String, json: Value) {
        self.mapped.resources.push(MappedResource {
            resource_type,
            id,
            json,
        });
    }

    /// Hands on this record's part of a resource several records make together.
    pub(crate) fn contribute(&mut self, resource_type: &'static str, id: String, part: Value) {
        self.mapped.contributions.push(crate::Contribution {
            resource_type,
            id,
            part,
        });
    }

    /// A required segment.
    pub(crate) fn required(&self, id: &'static str) -> Result<&'c Segment<'m>, crate::MapError> {
        self.message
            .first(id)
            .ok_or(crate::MapError::MissingSegment { segment: id })
    }

    /// A FHIR dateTime from an HL7 timestamp field; a bad value is reported and skipped.
    pub(crate) fn datetime(&mut self, segment: &Segment<'_>, field: usize) -> Option<String> {
        let text = segment.field(field).component(1).text();
        if text.trim().is_empty() {
            return None;
        }
        let label = format!("{}-{field} (line {})", segment.id(), segment.line());
        self.datetime_text(&label, &text)
    }

    /// Like [`Self::datetime`] for a timestamp held in a sub-component or component.
    pub(crate) fn datetime_text(&mut self, label: &str, text: &str) -> Option<String> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match Hl7Time::parse(text) {
            Ok(time) => Some(time.to_fhir_datetime()),
            Err(error) => {
                self.warn(format!("{label}: {error}; left out"));
                None
            }
        }
    }

    /// A FHIR `instant` (needs a full time); partial values are left out.
    pub(crate) fn instant(&mut self, segment: &Segment<'_>, field: usize) -> Option<String> {
        let value = self.datetime(segment, field)?;
        if value.len() >= 20 { Some(value) } else { None }
    }

    /// The FHIR date of the care date (診療日) of this record, if it has one.
    pub(crate) fn care_date(&self) -> Option<String> {
        let text = self.context.care_date;
        Hl7Time::parse(text)
            .ok()
            .map(|time| time.to_fhir_datetime())
    }

    /// The FHIR system URL for an HL7 coding-system name, scoped to this facility when local.
    pub(crate) fn system(&self, name: &str) -> String {
        for_hl7_coding_system(name, self.facility())
    }

    /// The codings of a CWE/CE repetition: the primary triplet, the alternate triplet, and the
    /// standard code the facility table gives for a local code.
    pub(crate) fn codings(&self, cwe: &Repetition<'_>) -> Vec<Value> {
        let mut codings = Vec::new();
        let mut standard_from_table = None;
        for offset in [0usize, 3] {
            let code = cwe.component(offset + 1).text();
            let display = cwe.component(offset + 2).text();
            let system_name = cwe.component(offset + 3).text();
            let code = code.trim();
            if code.is_empty() {
                continue;
            }
            if let Some(standard) = self.context.tables.standard(system_name.trim(), code) {
                standard_from_table = Some(standard.clone());
            }
            if let Some(value) = coding(&self.system(&system_name), code, &display) {
                codings.push(value);
            }
        }
        if let Some(standard) = standard_from_table {
            let system = self.system(&standard.system_name);
            let already = codings.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(system.as_str())
                    && c.get("code").and_then(Value::as_str) == Some(standard.code.as_str())
            });
            if !already && let Some(value) = coding(&system, &standard.code, &standard.display) {
                codings.insert(0, value);
            }
        }
        codings
    }

    /// A CodeableConcept from a CWE/CE repetition; `text` is the first display, else the code.
    pub(crate) fn concept(&self, cwe: &Repetition<'_>) -> Option<Value> {
        let codings = self.codings(cwe);
        let text = [2usize, 5, 1]
            .iter()
            .map(|n| cwe.component(*n).text().trim().to_owned())
            .find(|text| !text.is_empty())
            .unwrap_or_default();
        codeable(codings.into_iter().map(Some).collect(), &text)
    }

    /// A CodeableConcept from the first repetition of a field.
    pub(crate) fn concept_of(&self, field: Field<'_>) -> Option<Value> {
        self.concept(&field.first())
    }

    /// A CodeableConcept from a CWE packed into sub-components (`code&text&system`).
    pub(crate) fn concept_from_subcomponents(&self, component: Component<'_>) -> Option<Value> {
        let code = component.sub(1).text();
        let display = component.sub(2).text();
        let system = component.sub(3).text();
        let value = coding(&self.system(&system), &code, &display);
        let text = if display.trim().is_empty() {
            code.trim().to_owned()
        } else {
            display.trim().to_owned()
        };
        codeable(vec![value], &text)
    }

    /// A logical reference to a person from an XCN (id, family, given; tolerant of a fused
    /// family+given in component 2), with the facility's staff-id namespace.
    pub(crate) fn person(&self, xcn: &Repetition<'_>) -> Option<Value> {
        let id = xcn.component(1).text().trim().to_owned();
        let family = xcn.component(2).text().trim().to_owned();
        let given = xcn.component(3).text().trim().to_owned();
        let display = match (family.is_empty(), given.is_empty()) {
            (false, false) => format!("{family} {given}"),
            (false, true) => family,
            (true, false) => given,
            (true, true) => String::new(),
        };
        let object = Obj::new()
            .opt(
                "identifier",
                identifier(&systems::local(self.facility(), "staff"), &id),
            )
            .put("display", display);
        if object.is_empty() {
            None
        } else {
            Some(object.build())
        }
    }

    /// The facility's placer-order-number identifier.
    pub(crate) fn order_identifier(&self, value: &str) -> Option<Value> {
        identifier(
            &format!(
                "http://tsunagi.example.jp/fhir/IdSystem/{}/order-number",
                self.facility()
            ),
            value,
        )
    }

    /// A Quantity from a value text and an HL7 unit (CWE or plain text). UCUM is claimed only
    /// when the unit table lists the spelling; otherwise the unit is kept as sent, with its HL7
    /// table as system when one was given.
    pub(crate) fn quantity(&self, value: Value, unit: Option<&Repetition<'_>>) -> Value {
        let mut quantity = Obj::new().put("value", value);
        // An empty unit or the HL7 null `""` means no unit.
        if let Some(unit) = unit.filter(|unit| !unit.is_empty() && unit.raw() != "\"\"") {
            let code = unit.component(1).text().trim().to_owned();
            let display = unit.component(2).text().trim().to_owned();
            let system_name = unit.component(3).text().trim().to_owned();
            let shown = if display.is_empty() {
                code.clone()
            } else {
                display
            };
            quantity = quantity.put("unit", shown);
            if let Some(ucum) = self.context.tables.ucum(&code) {
                quantity = quantity.put("system", systems::UCUM).put("code", ucum);
            } else if !code.is_empty() && !system_name.is_empty() {
                quantity = quantity
                    .put("system", self.system(&system_name))
                    .put("code", code);
            }
        }
        quantity.build()
    }

    /// A Quantity from decimal text, or `None` (with a warning) when it is not a number.
    pub(crate) fn quantity_from_text(
        &mut self,
        label: &str,
        text: &str,
        unit: Option<&Repetition<'_>>,
    ) -> Option<Value> {
        if text.trim().is_empty() || text.trim() == "\"\"" {
            return None;
        }
        match decimal(text) {
            Some(value) => Some(self.quantity(value, unit)),
            None => {
                self.warn(format!("{label}: {text:?} is not a number; left out"));
                None
            }
        }
    }

    /// A resource-instance identifier (JP Core `resourceInstance-identifier`).
    pub(crate) fn instance_identifier(&self, value: &str) -> Option<Value> {
        identifier(systems::RESOURCE_INSTANCE, value)
    }
}

/// Segments grouped after each occurrence of `leader` (e.g. each ORC and what follows it until
/// the next ORC). Segments before the first leader are not included.
pub(crate) fn groups<'s, 'm>(message: &'s Message<'m>, leader: &str) -> Vec<Vec<&'s Segment<'m>>> {
    let mut result: Vec<Vec<&Segment<'m>>> = Vec::new();
    for segment in message.segments() {
        if segment.id() == leader {
            result.push(vec![segment]);
        } else if let Some(group) = result.last_mut() {
            group.push(segment);
        }
    }
    result
}
