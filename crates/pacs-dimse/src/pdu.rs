//! PDU framing after association establishment (PS3.8 §9.3).
//!
//! `dicom-ul` negotiates the association; once it is up, this module reads and writes the few
//! PDUs that can follow (P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT) itself. Doing it here lets one
//! association read (for C-CANCEL and sub-operation responses) while it writes, streams data
//! fragments without copying them, and bounds every buffer by the negotiated maximum PDU length.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::DimseError;

const PDU_P_DATA: u8 = 0x04;
const PDU_RELEASE_RQ: u8 = 0x05;
const PDU_RELEASE_RP: u8 = 0x06;
const PDU_ABORT: u8 = 0x07;

/// One presentation data value: a fragment of a command or of a data set.
#[derive(Debug)]
pub struct Pdv {
    pub context_id: u8,
    pub is_command: bool,
    pub is_last: bool,
    pub data: Bytes,
}

/// A PDU received once the association is established.
#[derive(Debug)]
pub enum Pdu {
    Data(Vec<Pdv>),
    ReleaseRq,
    ReleaseRp,
    Abort { source: u8, reason: u8 },
}

/// Reads PDUs, refusing any larger than the maximum this side announced.
pub struct PduReader {
    max_pdu: u32,
}

impl PduReader {
    pub fn new(max_pdu: u32) -> Self {
        PduReader { max_pdu }
    }

    /// Reads one PDU. `Ok(None)` is a clean end of stream between PDUs.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Pdu>, DimseError> {
        let mut header = [0u8; 6];
        match r.read_exact(&mut header[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        r.read_exact(&mut header[1..]).await?;
        let pdu_type = header[0];
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        // A PDU may carry slightly more than max_pdu of payload: the limit applies to the PDV
        // values, each with a 6-byte item header. Allow a small, fixed slack for that.
        if len > self.max_pdu.saturating_add(1024) {
            return Err(DimseError::Protocol(format!(
                "PDU of {len} bytes exceeds the negotiated maximum of {}",
                self.max_pdu
            )));
        }
        let mut body = BytesMut::zeroed(len as usize);
        r.read_exact(&mut body).await?;
        let mut body = body.freeze();
        match pdu_type {
            PDU_P_DATA => {
                let mut pdvs = Vec::with_capacity(2);
                while body.has_remaining() {
                    if body.remaining() < 6 {
                        return Err(DimseError::Protocol("truncated PDV item".into()));
                    }
                    let item_len = body.get_u32() as usize;
                    if item_len < 2 || item_len > body.remaining() {
                        return Err(DimseError::Protocol(format!("bad PDV item length {item_len}")));
                    }
                    let context_id = body.get_u8();
                    let control = body.get_u8();
                    let data = body.split_to(item_len - 2);
                    pdvs.push(Pdv {
                        context_id,
                        is_command: control & 0x01 != 0,
                        is_last: control & 0x02 != 0,
                        data,
                    });
                }
                Ok(Some(Pdu::Data(pdvs)))
            }
            PDU_RELEASE_RQ => Ok(Some(Pdu::ReleaseRq)),
            PDU_RELEASE_RP => Ok(Some(Pdu::ReleaseRp)),
            PDU_ABORT => {
                let (source, reason) = match &body[..] {
                    [_, _, s, r, ..] => (*s, *r),
                    _ => (0, 0),
                };
                Ok(Some(Pdu::Abort { source, reason }))
            }
            other => Err(DimseError::Protocol(format!(
                "unexpected PDU type 0x{other:02X} on an established association"
            ))),
        }
    }
}

/// P-DATA-TF header plus PDV item header: PDU type, reserved, PDU length, item length,
/// presentation context, message control header.
const PDV_HEADER: usize = 12;

/// Bytes of consecutive P-DATA-TF PDUs gathered into one write when a data set is sent: with a
/// peer announcing 16 KiB PDUs (DCMTK's default) each PDU alone would cost a system call and a
/// wake-up of the peer.
const COALESCED_WRITE: usize = 256 * 1024;

/// Appends the headers of a P-DATA-TF holding one PDV of `len` bytes.
fn push_pdv_header(buf: &mut Vec<u8>, context_id: u8, is_command: bool, is_last: bool, len: usize) {
    let item_len = len as u32 + 2;
    buf.push(PDU_P_DATA);
    buf.push(0);
    buf.extend_from_slice(&(item_len + 4).to_be_bytes());
    buf.extend_from_slice(&item_len.to_be_bytes());
    buf.push(context_id);
    buf.push(u8::from(is_command) | (u8::from(is_last) << 1));
}

/// Writes PDUs, splitting data sets into PDVs that fit the peer's maximum PDU length.
pub struct PduWriter {
    /// Largest PDV value we may put in one P-DATA-TF for this peer.
    max_fragment: usize,
    buf: Vec<u8>,
    /// A peer that stops reading for this long is given up on.
    timeout: Option<std::time::Duration>,
}

/// A-ABORT reason: unexpected PDU / unrecognized PDU parameter (PS3.8 §9.3.8).
pub const ABORT_REASON_UNEXPECTED_PDU: u8 = 2;
pub const ABORT_REASON_INVALID_PARAMETER: u8 = 6;

impl PduWriter {
    /// `peer_max_pdu` 0 means unlimited; we still cap fragments so memory stays bounded.
    pub fn new(peer_max_pdu: u32) -> Self {
        const CAP: usize = 1 << 20;
        let max = if peer_max_pdu == 0 {
            CAP
        } else {
            (peer_max_pdu as usize).min(CAP)
        };
        // The PDU length counts the 6-byte item header (length + context + control).
        let max_fragment = max.saturating_sub(6).max(64);
        PduWriter {
            max_fragment,
            buf: Vec::with_capacity(max + 12),
            timeout: None,
        }
    }

    /// Gives up on a write that makes no progress for `timeout`.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn write<W: AsyncWrite + Unpin>(
        timeout: Option<std::time::Duration>,
        w: &mut W,
        bytes: &[u8],
    ) -> Result<(), DimseError> {
        match timeout {
            Some(t) => tokio::time::timeout(t, w.write_all(bytes))
                .await
                .map_err(|_| DimseError::Timeout)??,
            None => w.write_all(bytes).await?,
        }
        Ok(())
    }

    pub fn max_fragment(&self) -> usize {
        self.max_fragment
    }

    /// Sends one PDV in its own P-DATA-TF.
    pub async fn send_pdv<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        context_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<(), DimseError> {
        self.buf.clear();
        push_pdv_header(&mut self.buf, context_id, is_command, is_last, data.len());
        self.buf.extend_from_slice(data);
        Self::write(self.timeout, w, &self.buf).await
    }

    /// Sends an encoded command set (always one fragment: command sets are small).
    pub async fn send_command<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        context_id: u8,
        command: &crate::Command,
    ) -> Result<(), DimseError> {
        let bytes = command.encode();
        for (i, chunk) in bytes.chunks(self.max_fragment).enumerate() {
            let last = (i + 1) * self.max_fragment >= bytes.len();
            self.send_pdv(w, context_id, true, last, chunk).await?;
        }
        Ok(())
    }

    /// Sends a data set held in memory (identifiers, small objects).
    pub async fn send_dataset<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        context_id: u8,
        data: &[u8],
    ) -> Result<(), DimseError> {
        if data.is_empty() {
            return self.send_pdv(w, context_id, false, true, &[]).await;
        }
        let fragment = self.max_fragment & !1;
        let n = data.len().div_ceil(fragment);
        for (i, chunk) in data.chunks(fragment).enumerate() {
            self.send_pdv(w, context_id, false, i + 1 == n, chunk).await?;
        }
        Ok(())
    }

    /// Streams a data set of known length from a reader, one fragment in memory at a time.
    ///
    /// PDV values must have even length (DCMTK aborts otherwise). A data set of odd length is
    /// only legal as a deflated bit stream that lacks its trailing pad byte (PS3.5 §A.5); such
    /// a stream gets the single trailing NUL the standard asks for. The stored original is not
    /// changed.
    pub async fn send_dataset_stream<W, R>(
        &mut self,
        w: &mut W,
        context_id: u8,
        reader: &mut R,
        len: u64,
    ) -> Result<(), DimseError>
    where
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin + ?Sized,
    {
        let padded = len + (len & 1);
        if padded == 0 {
            return self.send_pdv(w, context_id, false, true, &[]).await;
        }
        // Fragments of even size, so that only the last one can need the pad byte.
        let fragment = (self.max_fragment & !1).min(padded as usize);
        let mut out = Vec::with_capacity(COALESCED_WRITE.max(fragment + PDV_HEADER));
        let mut sent = 0u64;
        while sent < padded {
            let n = ((padded - sent) as usize).min(fragment);
            let from_reader = ((len.saturating_sub(sent)) as usize).min(n);
            sent += n as u64;
            push_pdv_header(&mut out, context_id, false, sent == padded, n);
            let at = out.len();
            out.resize(at + n, 0);
            reader.read_exact(&mut out[at..at + from_reader]).await?;
            if sent == padded || out.len() + fragment + PDV_HEADER > out.capacity() {
                Self::write(self.timeout, w, &out).await?;
                out.clear();
            }
        }
        Ok(())
    }

    pub async fn send_release_rq<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> Result<(), DimseError> {
        Self::write(self.timeout, w, &[PDU_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0]).await
    }

    pub async fn send_release_rp<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> Result<(), DimseError> {
        Self::write(self.timeout, w, &[PDU_RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0]).await
    }

    /// A-ABORT from the service provider (source 2) with the given reason.
    pub async fn send_abort<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        reason: u8,
    ) -> Result<(), DimseError> {
        Self::write(self.timeout, w, &[PDU_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, reason]).await?;
        w.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_set_is_fragmented_to_peer_maximum_and_read_back() {
        let mut writer = PduWriter::new(1000);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        writer.send_dataset(&mut wire, 3, &data).await.unwrap();
        let mut reader = PduReader::new(1000);
        let mut cursor = &wire[..];
        let mut got = Vec::new();
        let mut lasts = 0;
        while let Some(pdu) = reader.read(&mut cursor).await.unwrap() {
            let Pdu::Data(pdvs) = pdu else {
                panic!("expected P-DATA")
            };
            for pdv in pdvs {
                assert_eq!(pdv.context_id, 3);
                assert!(!pdv.is_command);
                assert!(pdv.data.len() <= 994);
                lasts += usize::from(pdv.is_last);
                got.extend_from_slice(&pdv.data);
            }
        }
        assert_eq!(got, data);
        assert_eq!(lasts, 1);
    }

    #[tokio::test]
    async fn odd_length_stream_gets_one_trailing_pad_byte() {
        let mut writer = PduWriter::new(64);
        let data: Vec<u8> = (1..=101u8).collect();
        let mut wire = Vec::new();
        writer
            .send_dataset_stream(&mut wire, 1, &mut &data[..], data.len() as u64)
            .await
            .unwrap();
        let mut reader = PduReader::new(64);
        let mut cursor = &wire[..];
        let mut got = Vec::new();
        while let Some(Pdu::Data(pdvs)) = reader.read(&mut cursor).await.unwrap() {
            for pdv in pdvs {
                assert_eq!(pdv.data.len() % 2, 0, "every fragment has even length");
                got.extend_from_slice(&pdv.data);
            }
        }
        assert_eq!(&got[..101], &data[..]);
        assert_eq!(got.len(), 102);
        assert_eq!(got[101], 0);
    }

    #[tokio::test]
    async fn oversized_and_garbage_pdus_are_errors() {
        let mut reader = PduReader::new(1000);
        let big = [PDU_P_DATA, 0, 0, 1, 0, 0];
        assert!(reader.read(&mut &big[..]).await.is_err());
        let unknown = [0x09, 0, 0, 0, 0, 0];
        assert!(reader.read(&mut &unknown[..]).await.is_err());
        // A PDV item whose length runs past the PDU.
        let bad_item = [PDU_P_DATA, 0, 0, 0, 0, 6, 0, 0, 0, 50, 1, 0];
        assert!(reader.read(&mut &bad_item[..]).await.is_err());
        // A PDU cut short is an I/O error, not a panic.
        let short = [PDU_P_DATA, 0, 0, 0, 0, 20, 1, 2];
        assert!(reader.read(&mut &short[..]).await.is_err());
    }
}
