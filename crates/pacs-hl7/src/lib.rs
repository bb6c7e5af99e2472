//! HL7 v2 messages and the MLLP transport, with no knowledge of patients, orders or storage.
//!
//! - [`Message`] parses raw bytes (delimiters from MSH-1/MSH-2, character set from MSH-18,
//!   escapes) and answers HL7-path questions: `msg.value("PID-3.1")`.
//! - [`MessageBuilder`] writes outbound messages; [`ack`] writes ACKs with an ERR segment
//!   in the style the message's version expects.
//! - [`mllp`] frames messages; [`serve`] is the inbound listener that hands every message to
//!   a [`MessageHandler`]; [`send`] is the outbound client and [`Outbox`] the sender that
//!   delivers, in order and retrying, the messages an [`OutboxStore`] keeps durably.
//!
//! The parser is written here rather than taken from `hl7-parser` 0.3 (the alternative
//! DESIGN.md allows): that crate parses `&str`, so the character set would have to be decoded
//! before the escapes, and `\Xhh\` bytes could then no longer be decoded in the message's
//! character set; its nom-based parser allocates a node per component with no limit we could
//! set. Splitting on delimiter bytes is safe for every character set we accept, because they
//! are all ASCII-compatible (no byte of a multi-byte UTF-8 sequence is below 0x80), so the
//! parser keeps the bytes as received, indexes segments and fields once, and splits and decodes
//! components lazily when they are read.
//!
//! The application (`pacs-archive`) implements [`MessageHandler`]; this crate decides nothing
//! about what a message means beyond its header.

mod builder;
mod charset;
mod client;
mod error;
mod escape;
mod message;
pub mod metrics;
pub mod mllp;
mod outbox;
mod server;
mod time;

pub use builder::{ack, AckCode, ErrorCode, ErrorDetail, ErrorLocation, MessageBuilder, SegmentBuilder};
pub use charset::Charset;
pub use client::{send, ParsedAck};
pub use error::Hl7Error;
pub use message::{Component, Delimiters, Field, Limits, Message, MessageType, Path, Repetition, Segment};
pub use outbox::{pending_in_file_queue, Attempt, Outbox, OutboxConfig, OutboxStore, Outgoing, QueueCounts};
pub use pacs_model::admission::RefusalSummary;
pub use server::{serve, MessageHandler, ParsedOrRaw, RawMessage, ServerConfig};
