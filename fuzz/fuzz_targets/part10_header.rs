//! A whole received Part 10 object through ingest's check and header parse (file meta group,
//! data set check, parse up to Pixel Data, UIDs, the stored header JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::{limits, BoundedAllocator};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = pacs_archive::ingest::check_and_parse_part10(data, limits());
});
