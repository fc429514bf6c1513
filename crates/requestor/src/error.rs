//! Typed requestor errors.

use lq6_proto::{DecodeError, EncodeError, Status};
use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can end a query or a connection.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error STATUS_CODE in a LEASEQUERY-REPLY
    /// or a LEASEQUERY-DONE (RFC 5007 §4.3.3, RFC 5460 §6.3).
    #[error("server {server} answered {status} ({code}){}", fmt_msg(.message))]
    Status {
        server: SocketAddr,
        status: Status,
        code: u16,
        message: String,
    },
    /// TCP connect failed after every configured attempt (RFC 5460 §6.1).
    #[error("cannot connect to {server} after {attempts} attempt(s): {reason}")]
    Connect {
        server: SocketAddr,
        attempts: u32,
        reason: String,
    },
    /// A blocked read or write exceeded BULK_LQ_DATA_TIMEOUT, or UDP
    /// retransmission gave up (RFC 5007 §4.3.2).
    #[error("timed out after {after:?} waiting for {server} ({what})")]
    Timeout {
        server: SocketAddr,
        after: Duration,
        what: &'static str,
    },
    /// The server broke the protocol; the connection was closed.
    #[error("protocol error from {server}: {reason}")]
    Protocol { server: SocketAddr, reason: String },
    /// A message from the server could not be decoded.
    #[error("malformed message from {server}: {source}")]
    Decode {
        server: SocketAddr,
        #[source]
        source: DecodeError,
    },
    /// The connection closed before the query was complete (RFC 5460 §6.3.1).
    #[error("connection to {server} closed before the query completed{}", fmt_msg(.reason))]
    Closed { server: SocketAddr, reason: String },
    /// A socket error.
    #[error("I/O with {server}: {reason}")]
    Io { server: SocketAddr, reason: String },
    /// The query could not be encoded or is not valid for the transport.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

fn fmt_msg(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

impl Error {
    /// A coarse classification, e.g. for exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Status { .. } => ErrorKind::Status,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Connect { .. } | Error::Io { .. } | Error::Closed { .. } => {
                ErrorKind::Connection
            }
            Error::Protocol { .. } | Error::Decode { .. } => ErrorKind::Protocol,
            Error::InvalidQuery(_) => ErrorKind::Usage,
        }
    }

    pub(crate) fn io(server: SocketAddr, e: &std::io::Error) -> Error {
        Error::Io {
            server,
            reason: e.to_string(),
        }
    }

    pub(crate) fn protocol(server: SocketAddr, reason: impl Into<String>) -> Error {
        Error::Protocol {
            server,
            reason: reason.into(),
        }
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Self {
        Error::InvalidQuery(e.to_string())
    }
}

/// See [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Status,
    Timeout,
    Connection,
    Protocol,
    Usage,
}
