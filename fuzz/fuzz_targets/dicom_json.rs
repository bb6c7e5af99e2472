//! The DICOM JSON writers on arbitrary data sets: the stored header JSON (ingest), QIDO-RS
//! results and the REST API's plain JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::{transfer_syntax_and_data, BoundedAllocator};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let Some((ts, dataset)) = transfer_syntax_and_data(data) else {
        return;
    };
    let Ok(obj) = pacs_dimse::server::parse_dataset(dataset, ts, pacs_dimse::server::MAX_IDENTIFIER_BYTES)
    else {
        return;
    };
    let _ = pacs_archive::ingest::header_json_of(&obj, "studies/1/series/2/instances/3/bulkdata/");
    let _ = pacs_web::fuzzing::result_json(&obj);
});
