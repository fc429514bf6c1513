//! Typed decode and encode errors. Every decode error carries the offset of the
//! offending byte so that an operator can find it in a capture.

use thiserror::Error;

/// What was wrong with the input, without the position.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    #[error("truncated: needed {needed} more octets, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("{0} trailing octets after the end of the data")]
    TrailingBytes(usize),
    #[error("empty message")]
    Empty,
    #[error("option {code} has invalid length {len}")]
    BadOptionLength { code: u16, len: usize },
    #[error("option {code}: {reason}")]
    InvalidOption { code: u16, reason: &'static str },
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("relay chain deeper than {0} levels (HOP_COUNT_LIMIT, RFC 8415 §7.6)")]
    RelayTooDeep(usize),
    #[error("DUID length {0} outside 3..=130 (RFC 8415 §11.1)")]
    BadDuid(usize),
    #[error("status message is not valid UTF-8")]
    BadUtf8,
    #[error("malformed domain name: {0}")]
    BadDomainName(&'static str),
}

/// A decode failure and the absolute offset (from the start of the outermost
/// buffer) at which it was detected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("at offset {offset}: {kind}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// Encoding fails only when a value cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("option {code} body of {len} octets exceeds 65535")]
    OptionTooLong { code: u16, len: usize },
    #[error("message of {0} octets exceeds the 65535-octet TCP frame limit (RFC 5460 §5.1)")]
    FrameTooLong(usize),
    #[error("transaction-id {0:#x} does not fit in 24 bits")]
    XidTooLarge(u32),
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}
