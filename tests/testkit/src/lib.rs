//! What tests start beside the gateway: [`orthanc::Orthanc`], a real PACS (Debian's `orthanc`
//! with `orthanc-dicomweb`) on a loopback port of its own, with its storage in a temporary
//! folder, stopped when dropped; and [`http`], the few plain HTTP/1.1 requests a test makes to
//! it (seeding with `POST /instances`, QIDO-RS and WADO-RS reads); [`python`], the Python
//! `dicomweb-client` package, a stock DICOMweb client, installed with pip when missing;
//! [`tls_front`], a TLS terminator in front of a plain service (a PACS reached over https).

pub mod http;
pub mod orthanc;
pub mod python;
pub mod tls_front;
