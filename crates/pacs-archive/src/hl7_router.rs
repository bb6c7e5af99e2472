//! The HL7 edge of tenancy: one MLLP port for every tenant, each message applied to the
//! tenant whose receiving facility (MSH-6.1, compared without regard to case) it names
//! ([`Platform::by_facility`]). A facility no tenant declares gets `AR` with an ERR segment
//! naming it, and nothing is stored; so does a disabled tenant's.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pacs_hl7::{ack, AckCode, ErrorCode, ErrorDetail, Message, MessageHandler, ParsedOrRaw};
use pacs_store::AuditEvent;

use crate::hl7::Hl7Archive;
use crate::platform::{Platform, Route};

pub struct Hl7Router {
    platform: Arc<Platform>,
}

impl Hl7Router {
    pub fn new(platform: Arc<Platform>) -> Hl7Router {
        Hl7Router { platform }
    }

    /// A message for no tenant: refused in the platform's log, which holds no patient data
    /// (so neither the patient's identifier nor the message's content).
    async fn refuse(&self, msg: &Message, peer: SocketAddr, error: ErrorDetail) -> Option<Vec<u8>> {
        let t = msg.message_type();
        crate::metrics::hl7_message(crate::metrics::OTHER_TYPE, "rejected");
        let event = AuditEvent {
            event: "hl7-receive".into(),
            actor: format!("hl7:{}", msg.value("MSH-3").unwrap_or_default()),
            peer: peer.to_string(),
            outcome: "refused".into(),
            detail: Some(format!(
                "{}^{} {}: {}",
                t.code,
                t.trigger,
                msg.control_id(),
                error.text
            )),
            ..AuditEvent::default()
        };
        if let Err(e) = self.platform.system().audit_platform(event).await {
            tracing::error!(error = %e, "cannot write audit record");
        }
        Some(ack(msg, AckCode::AR, Some(&error)))
    }
}

#[async_trait]
impl MessageHandler for Hl7Router {
    async fn connections_refused(
        &self,
        summary: &pacs_model::admission::RefusalSummary,
        period: std::time::Duration,
    ) {
        if self.platform.is_shared() {
            let event = crate::dimse::refusals_event(0, "hl7-connection", summary, period);
            if let Err(e) = self.platform.system().audit_platform(event).await {
                tracing::error!(error = %e, "cannot write audit record");
            }
        } else {
            Hl7Archive::new(self.platform.default_archive())
                .connections_refused(summary, period)
                .await;
        }
    }

    async fn handle(&self, message: ParsedOrRaw, peer: SocketAddr) -> Option<Vec<u8>> {
        let msg = match message {
            ParsedOrRaw::Parsed(msg) => msg,
            // Unreadable: its facility cannot be known. The default tenant's handler refuses
            // it (and audits it where a one-hospital install always did).
            raw @ ParsedOrRaw::Raw(_) => {
                return Hl7Archive::new(self.platform.default_archive())
                    .handle(raw, peer)
                    .await
            }
        };
        let facility = msg.value("MSH-6.1").unwrap_or_default();
        match self.platform.by_facility(&facility) {
            Route::Tenant(archive) => {
                Hl7Archive::new(archive)
                    .handle(ParsedOrRaw::Parsed(msg), peer)
                    .await
            }
            Route::Disabled(name) => {
                let error = ErrorDetail::new(
                    ErrorCode::TABLE_VALUE_NOT_FOUND,
                    format!("receiving facility {facility:?} (MSH-6) is tenant {name}'s, which is disabled"),
                )
                .at("MSH-6");
                self.refuse(&msg, peer, error).await
            }
            Route::Unknown => {
                let error = ErrorDetail::new(
                    ErrorCode::TABLE_VALUE_NOT_FOUND,
                    format!("receiving facility {facility:?} (MSH-6) is not served here"),
                )
                .at("MSH-6");
                self.refuse(&msg, peer, error).await
            }
        }
    }
}
