//! P-DATA-TF and the other PDUs of an established association, read as the association's
//! reader does, with the PDVs' command sets decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;
use pacs_dimse::pdu::{Pdu, PduReader};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fuzz_target!(|data: &[u8]| {
    // The server's default maximum PDU length.
    let mut reader = PduReader::new(pacs_dimse::ServerConfig::default().max_pdu);
    let mut input = data;
    futures::executor::block_on(async {
        for _ in 0..1000 {
            match reader.read(&mut input).await {
                Ok(Some(Pdu::Data(pdvs))) => {
                    for pdv in pdvs.iter().filter(|p| p.is_command) {
                        let _ = pacs_dimse::Command::decode(&pdv.data);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
});
