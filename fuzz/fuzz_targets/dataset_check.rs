//! The structural check of a data set (every transfer syntax, deflated ones inflated) and,
//! when it passes, the parse that relies on it, as a DIMSE identifier is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::{limits, transfer_syntax_and_data, BoundedAllocator};
use pacs_dimse::dataset_check::{check_slice, Layout};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let Some((ts, dataset)) = transfer_syntax_and_data(data) else {
        return;
    };
    let layout = Layout::of(ts);
    let _ = check_slice(dataset, layout, true, limits());
    let _ = check_slice(dataset, layout, false, limits());
    let _ = pacs_dimse::server::parse_dataset(dataset, ts, pacs_dimse::server::MAX_IDENTIFIER_BYTES);
});
