//! The Endpoint through which a hospital's images are opened: one per hospital PACS the gateway
//! forwards to, `Endpoint/dicomweb-<facility>`, of connection type `dicom-wado-rs` (IHE RAD
//! IDR's "ImagingStudy Endpoint"), its address the gateway's own DICOMweb proxy — never the
//! PACS. An ImagingStudy the PACS described names it in `endpoint`; the proxy reads that name
//! to know which PACS holds the study's images.

use serde_json::{Value, json};

/// What every such Endpoint's id starts with.
const PREFIX: &str = "dicomweb-";

/// The id of the Endpoint of `facility`'s PACS.
pub fn dicomweb_endpoint_id(facility: &str) -> String {
    format!("{PREFIX}{facility}")
}

/// The facility whose PACS a reference (`Endpoint/dicomweb-<facility>`) names.
pub fn facility_of_endpoint(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("Endpoint/")?
        .strip_prefix(PREFIX)
        .filter(|facility| !facility.is_empty())
}

/// The Endpoint of `facility`'s PACS, reached at `address` (the gateway's DICOMweb base).
pub fn dicomweb_endpoint(facility: &str, address: &str) -> Value {
    json!({
        "resourceType": "Endpoint",
        "id": dicomweb_endpoint_id(facility),
        "identifier": [{"system": "urn:tsunagi:dicomweb", "value": facility}],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
            "display": "DICOM WADO-RS"
        },
        "name": format!("Images of {facility}, through the gateway"),
        "managingOrganization": {"reference": format!("Organization/{facility}")},
        "payloadType": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                "code": "any",
                "display": "Any"
            }],
            "text": "DICOM"
        }],
        "payloadMimeType": ["application/dicom", "application/dicom+json", "image/jpeg", "image/png"],
        "address": address
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_its_facility() {
        let id = dicomweb_endpoint_id("0610200018");
        assert_eq!(
            facility_of_endpoint(&format!("Endpoint/{id}")),
            Some("0610200018")
        );
        assert_eq!(facility_of_endpoint("Endpoint/dicomweb-"), None);
        assert_eq!(facility_of_endpoint("Endpoint/other"), None);
        assert_eq!(facility_of_endpoint("Organization/dicomweb-1"), None);
        let endpoint = dicomweb_endpoint("0610200018", "https://gw.example/dicomweb");
        assert_eq!(endpoint["id"], id);
        assert_eq!(endpoint["connectionType"]["code"], "dicom-wado-rs");
    }
}
