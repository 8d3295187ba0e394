//! Domain vocabulary shared by every Tsunagi crate.
//!
//! Everything here is pure: no IO, no async runtime, no database. The pieces are small
//! and used everywhere, so they live in one crate at the bottom of the dependency graph:
//!
//! - [`FacilityId`]: the 10-digit 医療機関コード that scopes every source record;
//! - [`clock`]: the injected clock (tests use a fixed one so snapshots are stable);
//! - [`time`]: HL7 v2 timestamps to FHIR `date`/`dateTime`/`instant`, honest about precision,
//!   always with `+09:00` when a time is present, plus the instant ranges used by date search;
//! - [`ids`]: deterministic FHIR logical ids within `[A-Za-z0-9\-\.]{1,64}`;
//! - [`normalize`]: the one normalisation applied to search keys (width, dashes, waves, kana);
//! - [`hash`]: a stable 64-bit hash (FNV-1a) for content and checkpoint digests;
//! - [`url`]: text as one percent-encoded URL component;
//! - [`metrics`]: process-wide counters and histograms for `/metrics` (memory only).

pub mod base64;
pub mod clock;
pub mod hash;
pub mod ids;
pub mod metrics;
pub mod normalize;
pub mod time;
pub mod url;

use std::fmt;

/// A 10-digit Japanese medical-institution code (医療機関コード): 2-digit prefecture,
/// 1-digit point-table kind, 7-digit institution number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FacilityId(String);

/// Why a string is not a facility id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFacilityId(pub String);

impl fmt::Display for InvalidFacilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "facility code {:?} is not a 10-digit medical-institution code",
            self.0
        )
    }
}

impl std::error::Error for InvalidFacilityId {}

impl FacilityId {
    /// Parses a 10-digit code.
    pub fn parse(code: &str) -> Result<Self, InvalidFacilityId> {
        if code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(InvalidFacilityId(code.to_owned()))
        }
    }

    /// The code as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JP Core patient-identifier namespace of this facility:
    /// `urn:oid:1.2.392.100495.20.3.51.1<facility>`.
    pub fn patient_id_system(&self) -> String {
        format!("urn:oid:1.2.392.100495.20.3.51.1{}", self.0)
    }
}

impl fmt::Display for FacilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_codes_are_ten_digits() {
        assert!(FacilityId::parse("0612345678").is_ok());
        assert!(FacilityId::parse("061234567").is_err());
        assert!(FacilityId::parse("06123456789").is_err());
        assert!(FacilityId::parse("06123a5678").is_err());
        assert_eq!(
            FacilityId::parse("0612345678").unwrap().patient_id_system(),
            "urn:oid:1.2.392.100495.20.3.51.10612345678"
        );
    }
}
