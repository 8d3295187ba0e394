//! JP Core profile canonicals (the same for 1.1.x and 1.2; the version is not pinned in
//! `meta.profile`).
//!
//! `JP_ImagingStudy_Endoscopy`, `JP_Specimen_Common` and `JP_ServiceRequest_Common` exist only
//! from JP Core 1.2; the 1.1.1 package in `../shared` cannot check them, so `fhir-profiles/`
//! states what we rely on. NutritionOrder has no JP Core profile and claims none.

macro_rules! profiles {
    ($($name:ident = $suffix:literal;)*) => {
        $(
            #[doc = concat!("`http://jpfhir.jp/fhir/core/StructureDefinition/", $suffix, "`")]
            pub const $name: &str = concat!("http://jpfhir.jp/fhir/core/StructureDefinition/", $suffix);
        )*
        /// Every profile this crate names.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

profiles! {
    PATIENT = "JP_Patient";
    MEDICATION = "JP_Medication";
    COVERAGE = "JP_Coverage";
    ENCOUNTER = "JP_Encounter";
    ALLERGY_INTOLERANCE = "JP_AllergyIntolerance";
    CONDITION = "JP_Condition";
    MEDICATION_REQUEST = "JP_MedicationRequest";
    MEDICATION_REQUEST_INJECTION = "JP_MedicationRequest_Injection";
    MEDICATION_ADMINISTRATION = "JP_MedicationAdministration";
    MEDICATION_ADMINISTRATION_INJECTION = "JP_MedicationAdministration_Injection";
    OBSERVATION_COMMON = "JP_Observation_Common";
    OBSERVATION_LAB_RESULT = "JP_Observation_LabResult";
    OBSERVATION_BODY_MEASUREMENT = "JP_Observation_BodyMeasurement";
    DIAGNOSTIC_REPORT_LAB_RESULT = "JP_DiagnosticReport_LabResult";
    DIAGNOSTIC_REPORT_RADIOLOGY = "JP_DiagnosticReport_Radiology";
    PROCEDURE = "JP_Procedure";
    IMAGING_STUDY_RADIOLOGY = "JP_ImagingStudy_Radiology";
    IMAGING_STUDY_ENDOSCOPY = "JP_ImagingStudy_Endoscopy";
    SPECIMEN_COMMON = "JP_Specimen_Common";
    SERVICE_REQUEST_COMMON = "JP_ServiceRequest_Common";
}
