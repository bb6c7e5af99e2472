//! The AE table: the application entities we open associations to (C-MOVE destinations,
//! storage commitment requesters reached on a new association). Two sources, one lookup: the
//! configuration file's `peers` (read-only here) and the table an administrator manages in the
//! index. The DIMSE side resolves titles synchronously, so the table is mirrored in memory and
//! reloaded from the index after every change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pacs_dimse::client::ScuAssociation;
use pacs_dimse::sop_classes::VERIFICATION;
use pacs_store::{AeWrite, AuditEvent};

use crate::{Archive, ArchiveError, Peer};

/// How long a C-ECHO to a peer may take, association included.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an AE table entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeSource {
    /// `[[peers]]` in the configuration file: changed only there.
    Config,
    /// The index, managed through the REST API and the web UI.
    Table,
}

/// One entry of the AE table as listed.
#[derive(Clone, Debug)]
pub struct AeEntry {
    pub peer: Peer,
    pub source: AeSource,
    pub description: Option<String>,
    pub updated_at: Option<String>,
}

/// What a change to the AE table did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeChange {
    Created,
    Replaced,
    Removed,
    NotFound,
    /// The title belongs to the configuration file; nothing was changed.
    ReadOnly,
}

/// The outcome of a C-ECHO to a peer.
#[derive(Clone, Debug)]
pub struct EchoOutcome {
    pub address: String,
    /// The C-ECHO-RSP status, when the peer answered one (0 is success).
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, association rejected, timeout…).
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl Peer {
    /// "host:port", with an IPv6 address in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Archive {
    /// The address of a known AE: the configuration file's entry first, then the table's.
    pub fn peer(&self, ae_title: &str) -> Option<Peer> {
        if let Some(peer) = self.config_peers.get(ae_title) {
            return Some(peer.clone());
        }
        let table = self.table_peers.read().unwrap_or_else(|e| e.into_inner());
        table.get(ae_title).cloned()
    }

    /// The whole AE table: the configuration file's entries, then the index's, by title.
    pub async fn aes(&self) -> Result<Vec<AeEntry>, ArchiveError> {
        let mut entries: Vec<AeEntry> = self
            .config_peers
            .values()
            .map(|p| AeEntry {
                peer: p.clone(),
                source: AeSource::Config,
                description: None,
                updated_at: None,
            })
            .collect();
        entries.sort_by(|a, b| a.peer.ae_title.cmp(&b.peer.ae_title));
        for record in self.index.aes().await? {
            // A configuration entry hides a table entry of the same title (the lookup does too).
            if self.config_peers.contains_key(&record.ae_title) {
                continue;
            }
            entries.push(AeEntry {
                peer: Peer {
                    ae_title: record.ae_title,
                    host: record.host,
                    port: record.port,
                },
                source: AeSource::Table,
                description: record.description,
                updated_at: Some(record.updated_at),
            });
        }
        Ok(entries)
    }

    /// Creates or replaces a table entry, with `audit` committed alongside. The caller has
    /// checked the title, host and port.
    pub async fn put_ae(
        &self,
        peer: Peer,
        description: Option<String>,
        audit: AuditEvent,
    ) -> Result<AeChange, ArchiveError> {
        if self.config_peers.contains_key(&peer.ae_title) {
            self.record(AuditEvent {
                outcome: "refused".into(),
                ..audit
            })
            .await;
            return Ok(AeChange::ReadOnly);
        }
        let write = AeWrite::Put {
            ae_title: peer.ae_title,
            host: peer.host,
            port: peer.port,
            description,
        };
        let _changing = self.ae_changes.lock().await;
        let done = self.index.write_ae(write, audit).await?;
        self.reload_ae_table().await?;
        Ok(if done == 1 {
            AeChange::Created
        } else {
            AeChange::Replaced
        })
    }

    /// Removes a table entry, with `audit` committed alongside.
    pub async fn remove_ae(&self, ae_title: &str, audit: AuditEvent) -> Result<AeChange, ArchiveError> {
        if self.config_peers.contains_key(ae_title) {
            self.record(AuditEvent {
                outcome: "refused".into(),
                ..audit
            })
            .await;
            return Ok(AeChange::ReadOnly);
        }
        let write = AeWrite::Remove {
            ae_title: ae_title.to_string(),
        };
        let _changing = self.ae_changes.lock().await;
        let done = self.index.write_ae(write, audit).await?;
        self.reload_ae_table().await?;
        Ok(if done == 0 {
            AeChange::NotFound
        } else {
            AeChange::Removed
        })
    }

    /// Reads the index's AE table into the in-memory mirror the DIMSE lookups use.
    pub(crate) async fn reload_ae_table(&self) -> Result<(), ArchiveError> {
        let table: HashMap<String, Peer> = self
            .index
            .aes()
            .await?
            .into_iter()
            .map(|r| {
                let peer = Peer {
                    ae_title: r.ae_title.clone(),
                    host: r.host,
                    port: r.port,
                };
                (r.ae_title, peer)
            })
            .collect();
        *self.table_peers.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(())
    }

    /// Sends a C-ECHO to a known AE, calling as our own AE title; `None` when the title is
    /// not in the AE table.
    pub async fn echo(&self, ae_title: &str) -> Option<EchoOutcome> {
        let peer = self.peer(ae_title)?;
        let address = peer.address();
        let started = Instant::now();
        let echoed = tokio::time::timeout(ECHO_TIMEOUT, async {
            let proposals = [(
                VERIFICATION.to_string(),
                vec!["1.2.840.10008.1.2.1".to_string(), "1.2.840.10008.1.2".to_string()],
            )];
            let mut scu = ScuAssociation::connect(
                &address,
                &self.ae_title,
                ae_title,
                &proposals,
                64 * 1024,
                ECHO_TIMEOUT,
            )
            .await?;
            let status = scu.echo().await;
            scu.release().await;
            status
        })
        .await;
        let (status, error) = match echoed {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!("no answer within {} s", ECHO_TIMEOUT.as_secs())),
            ),
        };
        Some(EchoOutcome {
            address,
            status,
            error,
            elapsed: started.elapsed(),
        })
    }
}
