use std::io;

use crate::builder::{ErrorCode, ErrorLocation};

/// Everything that can go wrong reading, writing or carrying an HL7 message.
#[derive(Debug, thiserror::Error)]
pub enum Hl7Error {
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("too many {what} (the limit is {max})")]
    TooMany { what: &'static str, max: usize },
    #[error("the message does not start with an MSH segment")]
    MissingMsh,
    #[error("invalid delimiters in MSH-1/MSH-2: {0}")]
    BadDelimiters(&'static str),
    #[error("unsupported character set {0:?} in MSH-18")]
    UnsupportedCharset(String),
    #[error("byte {offset} is not valid {charset}")]
    InvalidText { charset: &'static str, offset: usize },
    #[error("segment {index} is malformed: {reason}")]
    BadSegment { index: usize, reason: &'static str },
    #[error("required field {0} is missing")]
    MissingField(&'static str),
    #[error("invalid HL7 path {0:?}")]
    BadPath(String),
    #[error("character {ch:?} cannot be written in {charset}")]
    Unencodable { ch: char, charset: &'static str },
    #[error("MLLP framing: {0}")]
    Framing(&'static str),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the peer closed the connection without acknowledging")]
    NoAck,
    #[error("not an acknowledgement: {0}")]
    BadAck(String),
    #[error("the acknowledgement is for control id {got:?}, not {expected:?}")]
    AckMismatch { expected: String, got: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Hl7Error {
    /// The HL7 table 0357 code an ERR segment reports for this failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Hl7Error::MissingField(_) => ErrorCode::REQUIRED_FIELD_MISSING,
            Hl7Error::BadSegment { .. } | Hl7Error::MissingMsh => ErrorCode::SEGMENT_SEQUENCE,
            Hl7Error::InvalidText { .. } | Hl7Error::BadDelimiters(_) => ErrorCode::DATA_TYPE,
            _ => ErrorCode::INTERNAL_ERROR,
        }
    }

    /// Where in the message the failure is, when that is known.
    pub fn location(&self) -> Option<ErrorLocation> {
        match self {
            Hl7Error::MissingField(path) => ErrorLocation::from_path(path),
            Hl7Error::UnsupportedCharset(_) => ErrorLocation::from_path("MSH-18"),
            _ => None,
        }
    }
}
