//! DICOM as the gateway meets it, pure (no IO):
//! - [`charset`]: text values under `SpecificCharacterSet` (0008,0005), the Japanese sets and
//!   their ISO 2022 code extensions (PS3.5 §6.1.2.5, Annex H) decoded and encoded;
//! - [`json`]: the DICOM JSON model (PS3.18 §F.2) of QIDO-RS and metadata answers, read by tag;
//! - [`part10`]: small, valid Part 10 files written (the synthetic region's studies).

pub mod charset;
pub mod json;
pub mod part10;
pub mod tags;
