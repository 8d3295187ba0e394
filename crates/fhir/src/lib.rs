//! FHIR vocabulary as Tsunagi writes and searches it.
//!
//! - [`profiles`]: the JP Core profile canonicals claimed in `meta.profile`;
//! - [`systems`]: code-system and identifier-system URLs (JP Core 1.2 URL forms on output,
//!   the older OID forms accepted on input) and the HL7 v2 coding-system table (`JC10`, `HOT9`…);
//! - [`json`]: small builders for FHIR data types as `serde_json::Value`;
//! - [`search`]: the search-parameter registry and the extraction of index rows from a resource;
//! - [`query`]: search requests parsed from URL parameters into a typed query;
//! - [`validate`]: resources checked against StructureDefinition snapshots (JP Core profiles).
//!
//! Resources are handled as JSON values throughout the pipeline; the typed fhir-sdk models live
//! behind `tsunagi-fhir-model` and are used to check what we produce, so this crate (and every
//! crate above it) compiles in seconds.

pub mod documents;
pub mod endpoint;
pub mod json;
pub mod profiles;
pub mod query;
pub mod search;
pub mod systems;
pub mod validate;
