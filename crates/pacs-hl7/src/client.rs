//! The outbound MLLP client: one connection per message, which is what RIS listeners expect
//! from a sender that speaks rarely.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::mllp::{Frame, MllpCodec};
use crate::{AckCode, Hl7Error, Limits, Message};

/// An acknowledgement received from a peer.
#[derive(Clone, Debug)]
pub struct ParsedAck {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: String,
    /// MSA-3, empty when absent.
    pub text: String,
    /// What each ERR segment says (ERR-8, else ERR-3.2, else ERR-1.4.2).
    pub errors: Vec<String>,
    pub message: Message,
}

impl ParsedAck {
    /// Reads an ACK (any message with an MSA segment whose MSA-1 is an acknowledgement code).
    pub fn from_message(message: Message) -> Result<ParsedAck, Hl7Error> {
        let code = message.value("MSA-1").unwrap_or_default();
        let code = AckCode::parse(&code).ok_or_else(|| Hl7Error::BadAck(format!("MSA-1 is {code:?}")))?;
        let errors = message
            .segments("ERR")
            .filter_map(|err| {
                let text = |field: usize, component: usize, sub: usize| {
                    err.field(field)?.component(component)?.subcomponent(sub)
                };
                text(8, 1, 1).or_else(|| text(3, 2, 1)).or_else(|| text(1, 4, 2))
            })
            .collect();
        Ok(ParsedAck {
            code,
            control_id: message.value("MSA-2").unwrap_or_default(),
            text: message.value("MSA-3").unwrap_or_default(),
            errors,
            message,
        })
    }
}

/// Sends one message over MLLP and waits for its acknowledgement, all within `timeout`.
/// The ACK must name the message's control id in MSA-2.
pub async fn send(
    addr: impl ToSocketAddrs,
    message: &[u8],
    timeout: Duration,
) -> Result<ParsedAck, Hl7Error> {
    let limits = Limits::default();
    let expected = Message::parse_header(message, &limits)?.control_id();
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut framed = Framed::new(stream, MllpCodec::new(limits.max_size));
        framed.send(message).await?;
        match framed.next().await {
            None => Err(Hl7Error::NoAck),
            Some(Err(e)) => Err(e),
            Some(Ok(Frame::Message(bytes))) => Ok(bytes),
            Some(Ok(Frame::Oversize { .. })) => Err(Hl7Error::BadAck("oversize frame".into())),
            Some(Ok(Frame::Truncated { .. })) => Err(Hl7Error::NoAck),
        }
    };
    let bytes = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Hl7Error::Timeout("waiting for the acknowledgement"))??;
    let ack = ParsedAck::from_message(Message::parse_with(&bytes, &limits)?)?;
    if ack.control_id != expected {
        return Err(Hl7Error::AckMismatch {
            expected,
            got: ack.control_id,
        });
    }
    Ok(ack)
}
