//! HL7 v2 bytes as an MLLP peer or a storage file delivers them: the charset decoder (ISO-2022-JP
//! and the rest), the parser, every accessor a mapper uses, the record key of a pushed message
//! and the ACK written back. Nothing may panic; what parses re-parses from its own text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_hl7v2::{Message, ack, charset, unescape};

fuzz_target!(|data: &[u8]| {
    let Ok((text, _)) = charset::decode(data) else {
        return;
    };
    let Ok(message) = Message::parse(&text) else {
        return;
    };
    let delimiters = message.delimiters().clone();
    for segment in message.segments() {
        let _ = (segment.id(), segment.line(), segment.index());
        for n in 0..segment.field_count().min(64) {
            let field = segment.field(n);
            let _ = field.text();
            for repetition in field.repetitions().take(16) {
                let _ = repetition.text();
                for c in 1..=repetition.component_count().min(16) {
                    let component = repetition.component(c);
                    let _ = component.text();
                    let _ = component.sub(1).text();
                    let _ = unescape(component.raw(), &delimiters);
                }
            }
        }
    }
    let _ = message.message_type();
    let _ = message.control_id();
    let _ = message.declared_charsets();
    let _ = ack::read_ack(&message);
    let header = ack::Header::of(&message);
    let _ = ack::AckMode::of(&message);
    let _ = tsunagi_mapping::pushed::identify(
        &message,
        &tsunagi_mapping::pushed::IdentifyRules::default(),
    );
    let _ = header;
});
