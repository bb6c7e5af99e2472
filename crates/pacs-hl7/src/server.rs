//! The MLLP listener: one task per connection, messages on a connection handled one after the
//! other, in order, each answered before the next is read.
//!
//! MLLP has no authentication, so a connection costs an attacker nothing: connections are
//! bounded overall (`max_connections`) and per source address, a connection over either bound
//! is closed at once, a connection that sends nothing for `idle_timeout` is closed, and a
//! message that has begun must end within `message_timeout` however slowly it drips. Refusals
//! and cut messages are counted in `openpacs_hl7_connections_refused_total{reason}` and handed
//! to the handler in aggregate (per source and reason) every `refusal_report_interval`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pacs_model::admission::{RefusalSummary, RefusalTally, SourceGuard, SourceLimit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;

use crate::mllp::{Frame, MllpCodec};
use crate::{ack, AckCode, ErrorDetail, Hl7Error, Limits, Message};

/// How the listener behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Message limits; `limits.max_size` is also the MLLP frame limit.
    pub limits: Limits,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Of those, from one source address.
    pub max_connections_per_source: usize,
    /// A connection with nothing received for this long (before its first message or between
    /// two) is closed; a reply that cannot be written for this long ends it too.
    pub idle_timeout: Duration,
    /// A message whose first byte has arrived must be complete within this time.
    pub message_timeout: Duration,
    /// Refused connections are reported once per source and reason per period, with a count.
    pub refusal_report_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_connections: 64,
            max_connections_per_source: 8,
            idle_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(30),
            refusal_report_interval: Duration::from_secs(60),
        }
    }
}

/// A frame that did not parse as a message.
#[derive(Debug)]
pub struct RawMessage {
    /// The bytes received; for an oversize or truncated frame, only its first bytes.
    pub bytes: Bytes,
    /// The size of the whole frame.
    pub size: usize,
    pub error: Hl7Error,
    /// The MSH segment, when it could be read.
    pub header: Option<Message>,
}

impl RawMessage {
    /// The standard answer: AR with an ERR segment describing the error, or `None` (close
    /// the connection) when not even the MSH could be read.
    pub fn nak(&self) -> Option<Vec<u8>> {
        let header = self.header.as_ref()?;
        Some(ack(
            header,
            AckCode::AR,
            Some(&ErrorDetail::from_error(&self.error)),
        ))
    }
}

/// What the listener hands to the handler: every frame received, parsed or not, so that the
/// application can audit refusals too.
#[derive(Debug)]
pub enum ParsedOrRaw {
    Parsed(Message),
    Raw(RawMessage),
}

/// The application side of the listener.
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync {
    /// Handles one message and returns the encoded acknowledgement to send back, or `None`
    /// to close the connection without answering. An `AA` must mean the message's effect is
    /// durable. For [`ParsedOrRaw::Raw`], [`RawMessage::nak`] is the usual answer.
    async fn handle(&self, message: ParsedOrRaw, peer: SocketAddr) -> Option<Vec<u8>>;

    /// Connections refused (over a bound) or cut (a message not finished in time, nothing ever
    /// sent), counted per source address and reason over the last `period`: one call per
    /// source and reason, for the audit trail.
    async fn connections_refused(&self, _summary: &RefusalSummary, _period: Duration) {}
}

/// Waits until `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Serves MLLP on `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish the message it is handling, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn MessageHandler>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let per_source = SourceLimit::new(config.max_connections_per_source);
    let refusals = Arc::new(RefusalTally::default());
    let mut report = tokio::time::interval_at(
        tokio::time::Instant::now() + config.refusal_report_interval,
        config.refusal_report_interval,
    );
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = report.tick() => {
                report_refusals(&refusals, &handler, config.refusal_report_interval);
                continue;
            }
            _ = stopped(&mut shutdown) => break,
        };
        while connections.try_join_next().is_some() {}
        // Closed at once: a connection over a bound costs one accept, nothing more.
        let Some(source_guard) = per_source.try_hold(peer.ip()) else {
            refuse(&refusals, peer, "per_source");
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&refusals, peer, "limit");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        tracing::debug!(%peer, "MLLP connection");
        connections.spawn(connection(
            stream,
            peer,
            handler.clone(),
            config.clone(),
            shutdown.clone(),
            (permit, source_guard),
            refusals.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    report_refusals(&refusals, &handler, config.refusal_report_interval);
    Ok(())
}

fn refuse(refusals: &RefusalTally, peer: SocketAddr, reason: &'static str) {
    tracing::debug!(%peer, reason, "MLLP connection refused");
    metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => reason).increment(1);
    refusals.record(peer.ip(), reason);
}

/// Hands the refusals counted since the last report to the handler, off the accept loop.
fn report_refusals(refusals: &RefusalTally, handler: &Arc<dyn MessageHandler>, period: Duration) {
    let summaries = refusals.drain();
    if summaries.is_empty() {
        return;
    }
    let handler = handler.clone();
    tokio::spawn(async move {
        for summary in summaries {
            tracing::warn!(source = %summary.source, reason = summary.reason, count = summary.count, period_secs = period.as_secs(), "HL7 connections refused");
            handler.connections_refused(&summary, period).await;
        }
    });
}

/// How the wait for the next frame on a connection ended.
enum Wait {
    Frame(Option<Result<Frame, Hl7Error>>),
    /// Nothing began within the idle timeout.
    Idle,
    /// A frame began but did not end within the message timeout.
    Late,
    Stopped,
}

/// Waits for the next frame: idle until one begins, then at most `message_timeout` for its end,
/// however slowly it comes. `framed.next()` keeps what it has read when the wait is cut short,
/// so the deadline is recomputed on every wake-up, from when the codec saw the frame begin.
async fn next_frame(
    framed: &mut Framed<TcpStream, MllpCodec>,
    config: &ServerConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Wait {
    let idle_deadline = Instant::now() + config.idle_timeout;
    loop {
        let message_deadline = framed
            .codec()
            .frame_started()
            .map(|started| Instant::from_std(started) + config.message_timeout);
        let deadline =
            message_deadline.unwrap_or_else(|| idle_deadline.min(Instant::now() + config.message_timeout));
        tokio::select! {
            next = timeout_at(deadline, framed.next()) => match next {
                Ok(frame) => return Wait::Frame(frame),
                Err(_) if message_deadline.is_some() => return Wait::Late,
                Err(_) if framed.codec().frame_started().is_none() && Instant::now() >= idle_deadline => {
                    return Wait::Idle
                }
                Err(_) => continue,
            },
            _ = stopped(shutdown) => return Wait::Stopped,
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<dyn MessageHandler>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    _held: (OwnedSemaphorePermit, SourceGuard),
    refusals: Arc<RefusalTally>,
) {
    let limits = &config.limits;
    let mut framed = Framed::new(stream, MllpCodec::new(limits.max_size));
    let mut answered = 0u64;
    loop {
        let frame = match next_frame(&mut framed, &config, &mut shutdown).await {
            Wait::Stopped | Wait::Frame(None) => return,
            Wait::Idle => {
                tracing::debug!(%peer, "closing idle MLLP connection");
                if answered == 0 {
                    refuse(&refusals, peer, "no_message");
                }
                return;
            }
            Wait::Late => {
                tracing::warn!(%peer, received = framed.read_buffer().len(), "closing MLLP connection: message not finished in time");
                refuse(&refusals, peer, "message_timeout");
                return;
            }
            Wait::Frame(Some(Err(e))) => {
                tracing::warn!(%peer, error = %e, "closing MLLP connection");
                return;
            }
            Wait::Frame(Some(Ok(frame))) => frame,
        };
        let raw = |bytes: Bytes, size, error| {
            let header = Message::parse_header(&bytes, limits).ok();
            ParsedOrRaw::Raw(RawMessage {
                bytes,
                size,
                error,
                header,
            })
        };
        let message = match frame {
            Frame::Message(bytes) => match Message::parse_with(&bytes, limits) {
                Ok(message) => ParsedOrRaw::Parsed(message),
                Err(error) => {
                    let size = bytes.len();
                    raw(bytes.freeze(), size, error)
                }
            },
            Frame::Oversize { prefix, size } => {
                let max = limits.max_size;
                raw(prefix, size, Hl7Error::TooLarge { size, max })
            }
            Frame::Truncated { prefix, size } => raw(
                prefix,
                size,
                Hl7Error::Framing("the frame was cut before its end block"),
            ),
        };
        if let ParsedOrRaw::Raw(r) = &message {
            tracing::warn!(%peer, error = %r.error, header = r.header.is_some(), "unreadable HL7 message");
        }
        let Some(reply) = handler.handle(message, peer).await else {
            tracing::debug!(%peer, "closing MLLP connection without an answer");
            return;
        };
        match timeout(config.idle_timeout, framed.send(&reply[..])).await {
            Ok(Ok(())) => answered += 1,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "could not send the HL7 acknowledgement");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "timed out sending the HL7 acknowledgement");
                return;
            }
        }
    }
}
