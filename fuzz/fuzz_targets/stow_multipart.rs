//! STOW-RS bodies: a Content-Type line, then the body, read by the handler's multipart code in
//! pieces of a size the first byte chooses; every DICOM part goes through ingest's check and
//! header parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::{limits, BoundedAllocator};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&rest[..i]), &rest[i + 1..]),
        None => return,
    };
    let config = pacs_web::WebConfig {
        stow_max_part_bytes: 64 << 10,
        stow_max_request_bytes: 256 << 10,
        ..pacs_web::WebConfig::default()
    };
    let chunk = usize::from(*first) * 16 + 1;
    let _ = pacs_web::fuzzing::stow_multipart(&content_type, body, chunk, &config, &mut |part| {
        let _ = pacs_archive::ingest::check_and_parse_part10(part, limits());
    });
});
