//! The association requestor side: C-ECHO and C-STORE to a peer, used for C-MOVE
//! sub-operations and by `openpacs send`, and N-EVENT-REPORT for storage commitment reports
//! sent on a new association.

use std::time::Duration;

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::pdu::PresentationContextResultReason;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::command::{field, status, Command, NO_DATASET};
use crate::pdu::{Pdu, PduReader, PduWriter};
use crate::server::store_request;
use crate::{DatasetStream, DimseError, RetrieveItem};

/// An established association on which we are the requestor.
pub struct ScuAssociation {
    assoc: AsyncClientAssociation<TcpStream>,
    reader: PduReader,
    writer: PduWriter,
    /// Accepted contexts: (id, abstract syntax, transfer syntax).
    contexts: Vec<(u8, String, String)>,
    next_message_id: u16,
    timeout: Duration,
}

impl ScuAssociation {
    /// Connects to `addr` ("host:port") and proposes `proposals` (abstract syntax, transfer syntaxes).
    pub async fn connect(
        addr: &str,
        calling_ae: &str,
        called_ae: &str,
        proposals: &[(String, Vec<String>)],
        max_pdu: u32,
        timeout: Duration,
    ) -> Result<ScuAssociation, DimseError> {
        Self::connect_with_roles(addr, calling_ae, called_ae, proposals, &[], max_pdu, timeout).await
    }

    /// Like [`ScuAssociation::connect`], with SCP/SCU role selection items: (SOP class, we
    /// may be SCU, we may be SCP).
    pub async fn connect_with_roles(
        addr: &str,
        calling_ae: &str,
        called_ae: &str,
        proposals: &[(String, Vec<String>)],
        roles: &[(String, bool, bool)],
        max_pdu: u32,
        timeout: Duration,
    ) -> Result<ScuAssociation, DimseError> {
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(calling_ae.to_string())
            .called_ae_title(called_ae.to_string())
            .max_pdu_length(max_pdu)
            .connection_timeout(timeout)
            .read_timeout(timeout);
        for (abstract_syntax, syntaxes) in proposals {
            options = options.with_presentation_context(abstract_syntax.clone(), syntaxes.clone());
        }
        for (sop_class, scu, scp) in roles {
            options = options.with_role_selection(sop_class.clone(), *scu, *scp);
        }
        let mut assoc = options
            .establish_async(addr)
            .await
            .map_err(|e| DimseError::Association(e.to_string()))?;
        let _ = assoc.inner_stream().set_nodelay(true);
        let contexts = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.id,
                    pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    pc.transfer_syntax.trim_end_matches('\0').to_string(),
                )
            })
            .collect();
        let peer_max = assoc.acceptor_max_pdu_length();
        Ok(ScuAssociation {
            assoc,
            reader: PduReader::new(max_pdu),
            writer: PduWriter::new(peer_max).with_timeout(timeout),
            contexts,
            next_message_id: 1,
            timeout,
        })
    }

    /// Accepted contexts as (id, abstract syntax, transfer syntax).
    pub fn accepted_contexts(&self) -> impl Iterator<Item = (u8, &str, &str)> {
        self.contexts
            .iter()
            .map(|(id, a, t)| (*id, a.as_str(), t.as_str()))
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a C-ECHO and returns the status the peer answered.
    pub async fn echo(&mut self) -> Result<u16, DimseError> {
        let ctx = self
            .accepted_contexts()
            .find(|(_, a, _)| *a == crate::sop_classes::VERIFICATION)
            .map(|(id, _, _)| id)
            .ok_or_else(|| DimseError::Association("Verification not accepted".into()))?;
        let id = self.message_id();
        let rq = Command {
            command_field: field::C_ECHO_RQ,
            affected_sop_class_uid: Some(crate::sop_classes::VERIFICATION.into()),
            message_id: Some(id),
            data_set_type: NO_DATASET,
            ..Command::default()
        };
        let stream = self.assoc.inner_stream();
        self.writer.send_command(stream, ctx, &rq).await?;
        let rsp = self.read_response(field::C_ECHO_RSP, id).await?;
        Ok(rsp.status.unwrap_or(status::PROCESSING_FAILURE))
    }

    /// Sends one instance with C-STORE and returns the status code of the response.
    pub async fn store(
        &mut self,
        context_id: u8,
        item: &RetrieveItem,
        move_originator: Option<(&str, u16)>,
        dataset: &mut DatasetStream,
    ) -> Result<u16, DimseError> {
        let id = self.message_id();
        let rq = store_request(item, id, move_originator);
        let stream = self.assoc.inner_stream();
        self.writer.send_command(stream, context_id, &rq).await?;
        self.writer
            .send_dataset_stream(stream, context_id, &mut dataset.reader, dataset.len)
            .await?;
        let rsp = self.read_response(field::C_STORE_RSP, id).await?;
        Ok(rsp.status.unwrap_or(status::PROCESSING_FAILURE))
    }

    /// Sends a storage commitment report (its event information already encoded in the
    /// context's transfer syntax) and returns the status the peer answered.
    pub async fn n_event_report(
        &mut self,
        context_id: u8,
        report: &crate::commitment::CommitmentReport,
        data: &[u8],
    ) -> Result<u16, DimseError> {
        let id = self.message_id();
        let rq = report.command(id);
        let stream = self.assoc.inner_stream();
        self.writer.send_command(stream, context_id, &rq).await?;
        self.writer.send_dataset(stream, context_id, data).await?;
        let rsp = self.read_response(field::N_EVENT_REPORT_RSP, id).await?;
        Ok(rsp.status.unwrap_or(status::PROCESSING_FAILURE))
    }

    /// Reads PDUs until the response to `message_id` arrives (any data set with it is skipped).
    async fn read_response(&mut self, command_field: u16, message_id: u16) -> Result<Command, DimseError> {
        let mut command = Vec::new();
        loop {
            let stream = self.assoc.inner_stream();
            let pdu = tokio::time::timeout(self.timeout, self.reader.read(stream))
                .await
                .map_err(|_| DimseError::Timeout)??;
            match pdu {
                Some(Pdu::Data(pdvs)) => {
                    for pdv in pdvs.into_iter().filter(|p| p.is_command) {
                        command.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            let decoded = Command::decode(&command)?;
                            command.clear();
                            if decoded.command_field == command_field
                                && decoded.message_id_being_responded_to == Some(message_id)
                            {
                                return Ok(decoded);
                            }
                        }
                    }
                }
                Some(Pdu::Abort { .. }) => return Err(DimseError::Aborted),
                Some(other) => {
                    return Err(DimseError::Protocol(format!(
                        "unexpected {other:?} while waiting for a response"
                    )))
                }
                None => return Err(DimseError::Aborted),
            }
        }
    }

    /// Releases the association politely; errors are only logged, the work is already done.
    pub async fn release(mut self) {
        let stream = self.assoc.inner_stream();
        let released = async {
            self.writer.send_release_rq(stream).await?;
            // Wait for A-RELEASE-RP (or anything final) before closing.
            let _ = self.reader.read(stream).await;
            stream.shutdown().await?;
            Ok::<_, DimseError>(())
        };
        if let Err(e) = tokio::time::timeout(self.timeout, released)
            .await
            .unwrap_or(Err(DimseError::Timeout))
        {
            tracing::debug!(error = %e, "association release did not complete cleanly");
        }
    }
}
