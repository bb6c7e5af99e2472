//! A peer's first PDU: the pending-connection check (a whole, well-formed A-ASSOCIATE-RQ),
//! then the negotiation the listener runs (AE titles, presentation contexts, roles), over a
//! loopback connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    let config = pacs_dimse::ServerConfig::default();
    let _ = pacs_dimse::fuzzing::negotiate(data, &config);
});
