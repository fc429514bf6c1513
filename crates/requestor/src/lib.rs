//! # lq6-requestor: the leasequery requestor
//!
//! The asking side of RFC 5007 (UDP Leasequery) and RFC 5460 (Bulk
//! Leasequery over TCP), on tokio, using `lq6-proto` for every octet.
//!
//! # Layout
//! - [`query`] holds [`Query`] and [`QueryKind`], the five query types and their options.
//! - [`binding`] holds [`Binding`], one CLIENT_DATA decoded into typed fields.
//! - [`bulk`] holds [`BulkConnection`] and [`QueryStream`]: TCP with retry, several
//!   queries in flight demultiplexed by xid, completion rules, BULK_LQ_DATA_TIMEOUT.
//! - [`udp`] holds [`UdpRequestor`]: retransmission, reply validation, LQ_CLIENT_LINK re-queries.
//! - [`multi`] holds [`query_servers`] (several servers in parallel) and [`reconcile`].
//! - [`config`] holds [`RequestorConfig`]: the requestor DUID, timers, retransmission.
//! - [`error`] holds [`Error`].
//!
//! ```no_run
//! # async fn f() -> Result<(), lq6_requestor::Error> {
//! use lq6_requestor::{BulkConnection, Query, RequestorConfig};
//! let conn = BulkConnection::connect("[2001:db8::1]:547".parse().unwrap(), RequestorConfig::default()).await?;
//! let mut bindings = conn.query(&Query::by_link("2001:db8:1::1".parse().unwrap())).await?;
//! while let Some(b) = bindings.next().await {
//!     println!("{:?}", b?.addresses);
//! }
//! # Ok(()) }
//! ```

pub mod binding;
pub mod bulk;
pub mod config;
pub mod error;
pub mod multi;
pub mod query;
pub mod udp;

pub use binding::{AddressLease, Binding, PrefixLease};
pub use bulk::{bulk_query, BulkConnection, QueryStream};
pub use config::{default_duid, ConnectPolicy, RequestorConfig, Retransmit, BULK_LQ_DATA_TIMEOUT};
pub use error::{Error, ErrorKind};
pub use multi::{query_servers, reconcile, ServerOutcome, Transport};
pub use query::{Query, QueryKind};
pub use udp::{UdpAnswer, UdpRequestor};
