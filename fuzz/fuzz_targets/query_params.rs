//! Query strings of QIDO-RS and of the REST API's searches, read as the handlers read them
//! (axum's query extractor, then the parameters into a C-FIND identifier and the archive's
//! query with its matchers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let _ = pacs_web::fuzzing::qido_params(&query);
    let _ = pacs_web::fuzzing::rest_params(&query);
});
