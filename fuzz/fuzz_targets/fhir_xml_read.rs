//! FHIR XML as a client may post or send it: the reader refuses or accepts, never panics, and
//! what it reads is FHIR JSON the writer can write back as XML that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = tsunagi_fhir_xml::from_xml(data) else {
        return;
    };
    let xml = tsunagi_fhir_xml::to_xml(&json, false)
        .unwrap_or_else(|error| panic!("read {json} but cannot write it: {error}"));
    let again = tsunagi_fhir_xml::from_xml(&xml)
        .unwrap_or_else(|error| panic!("cannot read what was written: {error}"));
    assert_eq!(again, json, "the XML round trip changed the resource");
});
