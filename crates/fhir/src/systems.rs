//! Code-system and identifier-system URLs.
//!
//! Output uses the JP Core 1.2 URL forms; input (HL7 v2 CWE.3 names, older OIDs) is mapped onto
//! them by [`for_hl7_coding_system`] and [`canonical`]. Tables whose name starts with `99` are
//! local to the sending facility and get a facility-scoped system
//! (`http://tsunagi.example.jp/fhir/CodeSystem/<facility>/<table>` — see [`local`]).

/// Tag system (and attachment extension) naming a document's stored bytes by SHA-256, in
/// lower-case hex: a Binary so tagged keeps its bytes in the store's blobs, not in `data`.
pub const STORED_BYTES: &str = "urn:tsunagi:sha256";
/// JLAC10 17-digit lab codes.
pub const JLAC10: &str = "http://medis.or.jp/CodeSystem/master-JLAC10-17digits";
/// HOT13 drug codes.
pub const HOT13: &str = "http://medis.or.jp/CodeSystem/master-HOT13";
/// HOT9 drug codes.
pub const HOT9: &str = "http://medis.or.jp/CodeSystem/master-HOT9";
/// HOT7 drug codes.
pub const HOT7: &str = "http://medis.or.jp/CodeSystem/master-HOT7";
/// YJ codes.
pub const YJ: &str = "http://capstandard.jp/iyaku.info/CodeSystem/YJ-code";
/// MEDIS 病名管理番号.
pub const MEDIS_DISEASE_KEY: &str = "http://medis.or.jp/CodeSystem/master-disease-keyNumber";
/// MEDIS 病名交換用コード.
pub const MEDIS_DISEASE_EXCODE: &str = "http://medis.or.jp/CodeSystem/master-disease-exCode";
/// MEDIS 修飾語管理番号.
pub const MEDIS_MODIFIER_KEY: &str = "http://medis.or.jp/CodeSystem/master-disease-modKeyNumber";
/// MEDIS 修飾語交換用コード.
pub const MEDIS_MODIFIER_EXCODE: &str = "http://medis.or.jp/CodeSystem/master-disease-modExCode";
/// ICD-10 (2013 edition, as JP Core 1.2 names it).
pub const ICD10: &str = "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/ICD10-2013-full";
/// SS-MIX2 department codes (table 0069).
pub const DEPARTMENT: &str = "http://jami.jp/SS-MIX2/CodeSystem/ClinicalDepartment";
/// JAMI 16-digit usage codes.
pub const JAMI_USAGE: &str = "http://jami.jp/CodeSystem/MedicationUsage";
/// HL7 table 0162 routes.
pub const ROUTE: &str = "http://jpfhir.jp/fhir/core/CodeSystem/route-codes";
/// MERIT-9 units.
pub const MERIT9_UNIT: &str = "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/MedicationUnitMERIT9Code";
/// National tables with no FHIR URL published in our references get this documented namespace
/// (see `fhir-profiles/README.md`) rather than a guessed jpfhir.jp URL.
pub const NATIONAL_BASE: &str = "http://tsunagi.example.jp/fhir/CodeSystem/jp";
/// MERIT-9 dosage forms.
pub const MERIT9_FORM: &str = "http://tsunagi.example.jp/fhir/CodeSystem/jp/MR9P-form";
/// JJ1017 radiology procedure codes.
pub const JJ1017: &str = "http://tsunagi.example.jp/fhir/CodeSystem/jp/JJ1017";
/// DICOM modalities.
pub const DICOM_DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// UCUM (used only for units that are UCUM by definition, e.g. days `d`).
pub const UCUM: &str = "http://unitsofmeasure.org";
/// Rp number (JP Core 1.2 URL form of urn:oid:1.2.392.100495.20.3.81).
pub const RP_NUMBER: &str = "http://jpfhir.jp/fhir/core/mhlw/IdSystem/Medication-RPGroupNumber";
/// Order within an Rp (JP Core 1.2 URL form of urn:oid:1.2.392.100495.20.3.82).
pub const ORDER_IN_RP: &str =
    "http://jpfhir.jp/fhir/core/mhlw/IdSystem/MedicationAdministrationIndex";
/// Resource-instance identifiers.
pub const RESOURCE_INSTANCE: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/resourceInstance-identifier";
/// 医療機関コード.
pub const MEDICAL_ORGANIZATION_ID: &str =
    "http://jpfhir.jp/fhir/core/mhlw/IdSystem/MedicalOrganizationID";
/// 保険者番号.
pub const INSURER_NUMBER: &str = "http://jpfhir.jp/fhir/core/mhlw/IdSystem/InsurerNumber";
/// iso21090 name representation (IDE/SYL).
pub const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
/// J-FAGY food-allergen codes.
pub const J_FAGY: &str = "http://tsunagi.example.jp/fhir/CodeSystem/jp/J-FAGY";

/// The JP Core 1.2 URL for an OID or URL system; unknown systems are returned unchanged.
/// Used to accept the OID forms of older data and IGs, and by token search so that a query in
/// either form finds the same rows.
pub fn canonical(system: &str) -> &str {
    match system {
        "urn:oid:1.2.392.200119.4.504" => JLAC10,
        "urn:oid:1.2.392.200119.4.402.1" => HOT13,
        "urn:oid:1.2.392.200119.4.403.1" | "urn:oid:1.2.392.100495.20.2.74" => HOT9,
        "urn:oid:1.2.392.200119.4.403.2" => HOT7,
        "urn:oid:1.2.392.100495.20.2.73" | "urn:oid:1.2.392.100495.20.1.73" => YJ,
        "urn:oid:1.2.392.200119.4.101.2" => MEDIS_DISEASE_KEY,
        "urn:oid:1.2.392.200119.4.101.6" => MEDIS_DISEASE_EXCODE,
        "urn:oid:1.2.392.200119.4.201.2" => MEDIS_MODIFIER_KEY,
        "urn:oid:1.2.392.200119.4.201.5" => MEDIS_MODIFIER_EXCODE,
        "urn:oid:1.2.392.200250.2.2.2" => DEPARTMENT,
        "urn:oid:1.2.392.200250.2.2.20.20" => JAMI_USAGE,
        "urn:oid:1.2.392.100495.20.2.34" => ROUTE,
        "urn:oid:1.2.392.100495.20.2.101" => MERIT9_UNIT,
        "urn:oid:1.2.392.100495.20.3.81" => RP_NUMBER,
        "urn:oid:1.2.392.100495.20.3.82" => ORDER_IN_RP,
        "urn:oid:1.2.392.100495.20.3.23" => MEDICAL_ORGANIZATION_ID,
        "urn:oid:1.2.392.100495.20.3.61" => INSURER_NUMBER,
        other => other,
    }
}

/// The older OID form of a JP Core 1.2 URL, where one exists (inverse of [`canonical`]).
pub fn oid_form(system: &str) -> Option<&'static str> {
    Some(match system {
        JLAC10 => "urn:oid:1.2.392.200119.4.504",
        HOT13 => "urn:oid:1.2.392.200119.4.402.1",
        HOT9 => "urn:oid:1.2.392.200119.4.403.1",
        HOT7 => "urn:oid:1.2.392.200119.4.403.2",
        YJ => "urn:oid:1.2.392.100495.20.2.73",
        MEDIS_DISEASE_KEY => "urn:oid:1.2.392.200119.4.101.2",
        MEDIS_DISEASE_EXCODE => "urn:oid:1.2.392.200119.4.101.6",
        DEPARTMENT => "urn:oid:1.2.392.200250.2.2.2",
        JAMI_USAGE => "urn:oid:1.2.392.200250.2.2.20.20",
        ROUTE => "urn:oid:1.2.392.100495.20.2.34",
        MERIT9_UNIT => "urn:oid:1.2.392.100495.20.2.101",
        RP_NUMBER => "urn:oid:1.2.392.100495.20.3.81",
        ORDER_IN_RP => "urn:oid:1.2.392.100495.20.3.82",
        MEDICAL_ORGANIZATION_ID => "urn:oid:1.2.392.100495.20.3.23",
        INSURER_NUMBER => "urn:oid:1.2.392.100495.20.3.61",
        _ => return None,
    })
}

/// Base of facility-local code systems.
pub const LOCAL_BASE: &str = "http://tsunagi.example.jp/fhir/CodeSystem";

/// The system for a facility-local table (`99XYZ`, or an unrecognised name).
pub fn local(facility: &str, table: &str) -> String {
    let table: String = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{LOCAL_BASE}/{facility}/{table}")
}

/// Maps an HL7 v2 coding-system name (CWE.3) to a FHIR system URL. HL7 and JAHIS tables map to
/// their terminology.hl7.org or facility-independent forms; `99…` and unknown names are local.
pub fn for_hl7_coding_system(name: &str, facility: &str) -> String {
    let trimmed = name.trim();
    let known = match trimmed {
        "JC10" | "JC11" => Some(JLAC10),
        "HOT" | "HOT13" => Some(HOT13),
        "HOT9" => Some(HOT9),
        "HOT7" => Some(HOT7),
        "YJ" => Some(YJ),
        "MDCDX2" | "MDCDX" => Some(MEDIS_DISEASE_KEY),
        "I10" | "ICD10" => Some(ICD10),
        "JAMISDP01" => Some(JAMI_USAGE),
        "MR9P" => Some(MERIT9_UNIT),
        "HL70162" => Some(ROUTE),
        "JJ1017" | "JJ1017-32" | "JJ1017-16" => Some(JJ1017),
        "DCM" => Some(DICOM_DCM),
        "HL70069" | "JHSD0069" => Some(DEPARTMENT),
        "J-FAGY" | "JFAGY" => Some(J_FAGY),
        "UCUM" => Some(UCUM),
        _ => None,
    };
    if let Some(url) = known {
        return url.to_owned();
    }
    if let Some(number) = trimmed.strip_prefix("HL7")
        && number.len() == 4
        && number.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("http://terminology.hl7.org/CodeSystem/v2-{number}");
    }
    if trimmed.starts_with("urn:oid:") || trimmed.starts_with("http") {
        return canonical(trimmed).to_owned();
    }
    if trimmed.starts_with("JHS")
        || trimmed.starts_with("JSHR")
        || trimmed == "LENDO"
        || trimmed == "JANIS"
        || trimmed == "JAN"
        || trimmed == "ISO+"
    {
        // National tables without a published FHIR URL: a stable, documented namespace.
        return format!("{NATIONAL_BASE}/{trimmed}");
    }
    local(
        facility,
        if trimmed.is_empty() {
            "unspecified"
        } else {
            trimmed
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hl7_names_map_to_jp_core_urls() {
        assert_eq!(for_hl7_coding_system("JC10", "0612345678"), JLAC10);
        assert_eq!(for_hl7_coding_system("HOT9", "0612345678"), HOT9);
        assert_eq!(
            for_hl7_coding_system("HL70127", "0612345678"),
            "http://terminology.hl7.org/CodeSystem/v2-0127"
        );
        assert_eq!(
            for_hl7_coding_system("99XYZ", "0612345678"),
            "http://tsunagi.example.jp/fhir/CodeSystem/0612345678/99XYZ"
        );
        assert_eq!(
            for_hl7_coding_system("urn:oid:1.2.392.200119.4.504", "x"),
            JLAC10
        );
    }

    #[test]
    fn oid_and_url_forms_round_trip() {
        for url in [
            JLAC10,
            HOT13,
            HOT9,
            HOT7,
            YJ,
            MEDIS_DISEASE_KEY,
            RP_NUMBER,
            ORDER_IN_RP,
        ] {
            let oid = oid_form(url).unwrap();
            assert_eq!(canonical(oid), url);
        }
    }
}
