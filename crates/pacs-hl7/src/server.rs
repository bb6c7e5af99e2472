//! The MLLP listener: one task per connection (at most `max_connections`), messages on a
//! connection handled one after the other, in order, each answered before the next is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::mllp::{Frame, MllpCodec};
use crate::{ack, AckCode, ErrorDetail, Hl7Error, Limits, Message};

/// How the listener behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Message limits; `limits.max_size` is also the MLLP frame limit.
    pub limits: Limits,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A connection with no message for this long is closed (and a reply that cannot be
    /// written for this long ends it too).
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_connections: 64,
            idle_timeout: Duration::from_secs(300),
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
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
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
            _ = stopped(&mut shutdown) => break,
        };
        while connections.try_join_next().is_some() {}
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
            permit,
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<dyn MessageHandler>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let limits = &config.limits;
    let mut framed = Framed::new(stream, MllpCodec::new(limits.max_size));
    loop {
        let next = tokio::select! {
            next = timeout(config.idle_timeout, framed.next()) => next,
            _ = stopped(&mut shutdown) => return,
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!(%peer, "closing idle MLLP connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::warn!(%peer, error = %e, "closing MLLP connection");
                return;
            }
            Ok(Some(Ok(frame))) => frame,
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
            Ok(Ok(())) => {}
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
