//! A resource body as a client posts it: the structural check refuses or accepts, never panics,
//! and what it accepts can always be served — written as FHIR XML and read back the same, and
//! written as FHIR JSON (issue 17 §3: stored content must never make a read fail).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(problems) = tsunagi_fhir_xml::structure::check(&value) else {
        return;
    };
    if !problems.is_empty() {
        return;
    }
    let xml = tsunagi_fhir_xml::to_xml(&value, true)
        .unwrap_or_else(|error| panic!("accepted {value} but cannot write it as XML: {error}"));
    let back = tsunagi_fhir_xml::from_xml(&xml)
        .unwrap_or_else(|error| panic!("cannot read back the XML of {value}: {error}"));
    assert_eq!(back, value, "the accepted resource changed through XML");
    let mut json = Vec::new();
    tsunagi_fhir::json::write_resource(&value, &mut json)
        .unwrap_or_else(|error| panic!("accepted {value} but cannot write it as JSON: {error}"));
});
