//! HL7 v2 messages: parsed whole (or, when that fails, their MSH alone, as the listener does
//! to answer), every value read, and the ACK we would answer with must parse with our own
//! parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;
use pacs_hl7::{ack, AckCode, ErrorCode, ErrorDetail, Limits, Message};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let (message, code) = match Message::parse(data) {
        Ok(m) => (m, AckCode::AA),
        Err(_) => match Message::parse_header(data, &Limits::default()) {
            Ok(m) => (m, AckCode::AR),
            Err(_) => return,
        },
    };
    let _ = (message.message_type(), message.control_id(), message.version());
    for segment in message.all_segments() {
        for n in 1..=segment.field_count() {
            let Some(field) = segment.field(n) else { continue };
            for repetition in field.repetitions() {
                for component in repetition.components() {
                    for _ in component.subcomponents() {}
                }
            }
        }
    }
    let _ = message.value("PID-3(2).1");
    let error = ErrorDetail::new(ErrorCode(207), "fuzz").at("PID-3");
    for (code, error) in [(code, None), (AckCode::AE, Some(&error))] {
        let answer = ack(&message, code, error);
        if let Err(e) = Message::parse(&answer) {
            panic!(
                "our ACK does not parse ({e}): {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
});
