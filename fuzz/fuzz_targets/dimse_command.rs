//! DIMSE command sets: decoded as received; what decodes is encoded and decoded again, as the
//! responses built from it are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;
use pacs_dimse::Command;

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let Ok(command) = Command::decode(data) else {
        return;
    };
    let again = Command::decode(&command.encode()).expect("an encoded command set decodes");
    assert_eq!(again.command_field, command.command_field);
    let response = command.response(command.command_field | 0x8000, 0);
    Command::decode(&response.encode()).expect("a response decodes");
});
