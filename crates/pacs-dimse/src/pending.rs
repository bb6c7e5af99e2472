//! Connections that have not asked for an association yet.
//!
//! A TCP connection costs an attacker nothing, so it does not get an association slot: it is
//! *pending* until a whole, well-formed A-ASSOCIATE-RQ is in the socket's receive buffer, and
//! waits for it at most the ARTIM time. Pending connections are bounded in number, overall
//! and per source address (by the acceptor); only then is a slot taken, and dicom-ul reads the
//! request from the socket (we only peek at it, so its negotiation sees every byte).

use std::time::Duration;

use dicom_ul::pdu::Pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Type of the A-ASSOCIATE-RQ PDU.
const ASSOCIATE_RQ: u8 = 0x01;
/// A request is checked whole only up to this size: it must fit in the receive buffer of a new
/// socket (Linux starts at 64 KiB of window). Proposals for 128 presentation contexts with a few
/// transfer syntaxes each take some 15 KiB; a longer request is checked by its first bytes.
const CHECKED_REQUEST_BYTES: usize = 32 * 1024;
/// Between two looks at a request that has partly arrived: `peek` does not wait for more bytes.
const PARTIAL_RECHECK: Duration = Duration::from_millis(10);

/// Why a pending connection does not become an association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotRequested {
    /// No whole request within the ARTIM time.
    Artim,
    /// The first PDU is not an A-ASSOCIATE-RQ, or does not parse as one (answered A-ABORT).
    Malformed,
    /// The peer closed or reset the connection first.
    Closed,
}

impl NotRequested {
    /// The `reason` label of `openpacs_dimse_associations_refused_total`, and of the audit.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NotRequested::Artim => "artim",
            NotRequested::Malformed => "malformed",
            NotRequested::Closed => "closed",
        }
    }
}

/// Waits until a whole A-ASSOCIATE-RQ (up to [`CHECKED_REQUEST_BYTES`]) can be read from
/// `socket`, without consuming it, until `deadline`. A first PDU that is anything else is
/// answered with A-ABORT.
pub(crate) async fn wait_for_request(
    socket: &mut TcpStream,
    deadline: Instant,
    max_pdu: u32,
) -> Result<(), NotRequested> {
    let mut wanted = 6;
    let mut buf = vec![0u8; CHECKED_REQUEST_BYTES];
    loop {
        let seen = match tokio::time::timeout_at(deadline, socket.peek(&mut buf[..wanted])).await {
            Err(_) => return Err(NotRequested::Artim),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(NotRequested::Closed),
            Ok(Ok(n)) => n,
        };
        if seen < wanted {
            if tokio::time::timeout_at(deadline, tokio::time::sleep(PARTIAL_RECHECK))
                .await
                .is_err()
            {
                return Err(NotRequested::Artim);
            }
            continue;
        }
        if wanted == 6 {
            let length = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
            if buf[0] != ASSOCIATE_RQ || length > max_pdu as usize {
                abort(socket, if buf[0] != ASSOCIATE_RQ { 1 } else { 6 }).await;
                return Err(NotRequested::Malformed);
            }
            wanted = (6 + length).min(CHECKED_REQUEST_BYTES);
            if wanted > 6 {
                continue;
            }
        }
        if wanted == CHECKED_REQUEST_BYTES {
            // Too long to check whole here: dicom-ul checks it while negotiating.
            return Ok(());
        }
        if is_association_request(&buf[..wanted], max_pdu) {
            return Ok(());
        }
        abort(socket, 6).await;
        return Err(NotRequested::Malformed);
    }
}

/// Whether `pdu` (one whole PDU) parses as an A-ASSOCIATE-RQ.
pub(crate) fn is_association_request(pdu: &[u8], max_pdu: u32) -> bool {
    matches!(
        dicom_ul::pdu::read_pdu(pdu, max_pdu.max(dicom_ul::pdu::MINIMUM_PDU_SIZE), true),
        Ok(Some(Pdu::AssociationRQ(_)))
    )
}

/// A-ABORT from the service provider with `reason` (1: unrecognized PDU, 6: invalid PDU
/// parameter value), then close. Best effort, briefly: the peer may not be reading.
async fn abort(socket: &mut TcpStream, reason: u8) {
    let pdu = [0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason];
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&pdu)).await;
}

/// Answers an association request with A-ASSOCIATE-RJ (transient, service provider
/// presentation, local limit exceeded) without negotiating anything.
pub(crate) async fn reject_busy(mut socket: TcpStream, artim: Duration) {
    let mut header = [0u8; 6];
    let read = async {
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if header[0] != ASSOCIATE_RQ || len > 1 << 20 {
            return Ok(());
        }
        let mut rest = (&mut socket).take(len as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        socket.write_all(&[0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2]).await?;
        socket.flush().await
    };
    let _ = tokio::time::timeout(artim, read).await;
}
