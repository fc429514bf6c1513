//! # lq6-proto: the DHCPv6 wire codec
//!
//! Pure encoding and decoding, no I/O: messages of RFC 8415 plus Leasequery
//! (RFC 5007), Bulk Leasequery (RFC 5460) and Active Leasequery (RFC 7653).
//!
//! # Layout
//! - [`types`]: msg-types, option codes, status codes, query types, time epoch.
//! - [`message`]: [`Message`] (client/server, relay, unknown-raw).
//! - [`option`]: [`DhcpOption`], the typed option enum; unknown codes stay raw.
//! - [`duid`]: opaque DUIDs and their textual forms.
//! - [`writer`]: [`OptionWriter`], back-patched TLV encoding into a reused buffer.
//! - [`framing`]: the RFC 5460 §5.1 2-octet length framing (feature `framing`).
//! - [`pretty`]: the tree printed by `lq6 decode`.
//!
//! Decoding is strict: every length is checked, nesting is bounded
//! ([`option::MAX_NESTING`], [`option::MAX_RELAY_DEPTH`]), trailing octets are
//! an error, and errors carry the offset. It never panics on input and
//! allocates in proportion to the input, never from an announced length.

pub mod domain;
pub mod duid;
pub mod error;
#[cfg(feature = "framing")]
pub mod framing;
pub mod message;
pub mod option;
pub mod pretty;
mod reader;
pub mod types;
pub mod writer;

pub use domain::DomainName;
pub use duid::Duid;
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use message::{ClientMessage, Message, RelayMessage};
pub use option::{
    decode_options, ClientLinkLayer, DhcpOption, Ia, IaAddr, IaPrefix, IaTa, LqQuery, LqRelayData,
    OptionsExt, RemoteId, StatusCode,
};
pub use types::{code, MessageType, QueryType, Status};
pub use writer::{write_framed, OptionWriter};
