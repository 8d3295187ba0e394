//! Roles (職種) of the network's participants and the resource types each may read: the second of
//! the three tests a request passes (scope, role, consent).
//!
//! The table is deliberately small and typed: changing who may read what is a code review, not a
//! configuration edit. Directory types (Organization, Practitioner, PractitionerRole, Endpoint) are
//! readable by every authenticated principal; audit records only by administrators.

use std::{fmt, str::FromStr};

/// A participant's role, or a registered system client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// 医師 (also dentists).
    Doctor,
    /// 看護師 (also home-nursing staff).
    Nurse,
    /// 薬剤師.
    Pharmacist,
    /// 介護支援専門員.
    CareManager,
    /// リハビリ職 (PT/OT/ST).
    Therapist,
    /// 臨床検査技師 and lab-company staff.
    LabStaff,
    /// The facility's or network's administrator: directory, consent and audit; no clinical data.
    Administrator,
    /// A registered system client (hospital adapter, lab company, portal backend).
    System,
}

/// Every role, in a fixed order.
pub const ROLES: [Role; 8] = [
    Role::Doctor,
    Role::Nurse,
    Role::Pharmacist,
    Role::CareManager,
    Role::Therapist,
    Role::LabStaff,
    Role::Administrator,
    Role::System,
];

/// Types in a patient's record every clinical role reads.
const CLINICAL: &[&str] = &[
    "Patient",
    "Encounter",
    "Condition",
    "AllergyIntolerance",
    "Observation",
    "DiagnosticReport",
    "Specimen",
    "ServiceRequest",
    "MedicationRequest",
    "MedicationAdministration",
    "ImagingStudy",
    "NutritionOrder",
    "Coverage",
    "Procedure",
    "DocumentReference",
    // A document's bytes: readable where its DocumentReference is (the same patient's
    // compartment carries both).
    "Binary",
    "Communication",
    "Task",
    "Consent",
];

/// What a care manager needs for the care plan: the person, problems, allergies, medication and
/// the encounters (admissions and discharges); not raw lab values or images.
const CARE_MANAGER: &[&str] = &[
    "Patient",
    "Encounter",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "DocumentReference",
    "Binary",
    "Communication",
    "Task",
    "Consent",
];

/// What a lab company works with.
const LAB: &[&str] = &[
    "Patient",
    "ServiceRequest",
    "Specimen",
    "Observation",
    "DiagnosticReport",
];

/// The directory, readable by everyone authenticated.
pub const DIRECTORY: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Endpoint",
];

impl Role {
    /// The code used in tokens, the CLI and the database.
    pub fn code(self) -> &'static str {
        match self {
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Pharmacist => "pharmacist",
            Role::CareManager => "care-manager",
            Role::Therapist => "therapist",
            Role::LabStaff => "lab-staff",
            Role::Administrator => "administrator",
            Role::System => "system",
        }
    }

    /// True when the role may read resources of `resource_type` (subject to scope and consent).
    pub fn may_read(self, resource_type: &str) -> bool {
        if DIRECTORY.contains(&resource_type) {
            return true;
        }
        let table: &[&str] = match self {
            Role::Doctor | Role::Nurse | Role::Pharmacist | Role::Therapist | Role::System => {
                CLINICAL
            }
            Role::CareManager => CARE_MANAGER,
            Role::LabStaff => LAB,
            Role::Administrator => &["Consent", "AuditEvent"],
        };
        table.contains(&resource_type)
    }

    /// True when the role may create, change or delete resources of `resource_type` through the
    /// API (subject to scope, and to the rules of the write itself: an invitation only by the
    /// facility holding the patient). Clinical data arrives through the adapters, never here; notes
    /// and documents written here go back to the hospital through the outbound queue.
    pub fn may_write(self, resource_type: &str) -> bool {
        match resource_type {
            // An invitation (consent) is recorded by the holding facility's clinicians or its
            // administrator.
            "Consent" => matches!(self, Role::Doctor | Role::Nurse | Role::Administrator),
            // Notes and the network's standard documents, by the people who write them and by
            // clinic systems on their behalf; which document types a role may send is checked
            // by the write itself (`tsunagi_fhir::documents`).
            "Communication" | "DocumentReference" => matches!(
                self,
                Role::Doctor
                    | Role::Nurse
                    | Role::Pharmacist
                    | Role::CareManager
                    | Role::Therapist
                    | Role::System
            ),
            // Results, by lab companies' systems; for which facilities' patients is checked by
            // the write itself (the directory's `reports-for`).
            "DiagnosticReport" | "Observation" | "Specimen" => self == Role::System,
            _ => false,
        }
    }

    /// True when the role may read the audit trail.
    pub fn may_read_audit(self) -> bool {
        self.may_read("AuditEvent")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An unknown role code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role {0:?} (one of doctor, nurse, pharmacist, care-manager, therapist, lab-staff, administrator, system)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        ROLES
            .into_iter()
            .find(|role| role.code() == code)
            .ok_or_else(|| UnknownRole(code.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for role in ROLES {
            assert_eq!(role.code().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn the_table() {
        assert!(Role::Doctor.may_read("Observation"));
        assert!(!Role::CareManager.may_read("Observation"));
        assert!(Role::CareManager.may_read("MedicationRequest"));
        assert!(!Role::LabStaff.may_read("MedicationRequest"));
        assert!(!Role::Administrator.may_read("Patient"));
        assert!(Role::Administrator.may_read("Organization"));
        assert!(!Role::Doctor.may_read("AuditEvent"));
        assert!(Role::Administrator.may_read_audit());
    }
}
