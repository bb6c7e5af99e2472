//! Entry points for the fuzz targets (`fuzz/`): what a peer's first bytes go through before
//! an association exists, called as the listener calls it.

use std::sync::{Arc, Mutex, OnceLock};

use dicom_ul::pdu::PresentationContextResultReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::ServerConfig;

/// What became of an association request.
#[derive(Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// Refused before negotiation: not a whole, well-formed A-ASSOCIATE-RQ (answered A-ABORT).
    Malformed,
    /// Negotiation refused it (A-ASSOCIATE-RJ or A-ABORT), with dicom-ul's reason.
    Refused(String),
    /// Accepted with this many presentation contexts.
    Accepted(usize),
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Runs `request` (a peer's first PDU, whole) through the pending-connection check and then
/// through the association negotiation the listener does, over a loopback TCP connection
/// whose peer sends exactly these bytes and then closes its side.
pub fn negotiate(request: &[u8], config: &ServerConfig) -> Negotiated {
    let [kind, _, a, b, c, d, ..] = *request else {
        return Negotiated::Malformed;
    };
    let length = u32::from_be_bytes([a, b, c, d]) as usize;
    if kind != 0x01
        || length > config.max_pdu as usize
        || request.len() != 6 + length
        || !crate::pending::is_association_request(request, config.max_pdu)
    {
        return Negotiated::Malformed;
    }
    runtime().block_on(async {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => return Negotiated::Refused(format!("no loopback listener: {e}")),
        };
        let Ok(address) = listener.local_addr() else {
            return Negotiated::Refused("no loopback address".into());
        };
        let request = request.to_vec();
        let peer = tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(address).await?;
            socket.write_all(&request).await?;
            socket.shutdown().await?;
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        });
        let Ok((socket, _)) = listener.accept().await else {
            return Negotiated::Refused("no loopback connection".into());
        };
        let options = crate::server::association_options(config, Arc::new(Mutex::new(None)), None);
        let outcome = match options.establish_async(socket).await {
            Ok(assoc) => Negotiated::Accepted(
                assoc
                    .presentation_contexts()
                    .iter()
                    .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
                    .count(),
            ),
            Err(e) => Negotiated::Refused(e.to_string()),
        };
        let _ = peer.await;
        outcome
    })
}
