//! # lq6-leasequery: the leasequery responder
//!
//! Answers RFC 5007 LEASEQUERY over UDP (called by the DHCPv6 server's UDP
//! loop) and RFC 5460 Bulk Leasequery over TCP (its own listener).
//!
//! API used by the server / `lq6 serve` (stable; bodies in progress):
//! - [`LinkMap`]: maps a link-address to a configured link name (implemented by the server config).
//! - [`Responder::new`], [`Responder::handle_udp`], [`Responder::run_tcp`].

use lq6_proto::{ClientMessage, Duid, Message};
use lq6_store::LeaseStore;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The server's view of its links, needed for link-address handling
/// (RFC 5007 §4.2: NotConfigured; RFC 5460 §5.3 link filters).
pub trait LinkMap: Send + Sync + 'static {
    /// The configured link that contains `addr` (a relay link-address or a
    /// leased address), if any.
    fn link_for_address(&self, addr: Ipv6Addr) -> Option<String>;
    /// An address that identifies `link` to a requestor, used in LQ_CLIENT_LINK.
    fn link_address(&self, link: &str) -> Option<Ipv6Addr>;
}

pub struct Responder {
    #[allow(dead_code)]
    store: Arc<dyn LeaseStore>,
}

impl Responder {
    pub fn new(
        _cfg: lq6_config::LeasequeryConfig,
        _links: Arc<dyn LinkMap>,
        store: Arc<dyn LeaseStore>,
        _server_duid: Duid,
    ) -> Arc<Self> {
        Arc::new(Responder { store })
    }

    /// Handles one LEASEQUERY (msg-type 14) received over UDP from `src`
    /// (for a relayed query, `src` is the innermost peer-address and
    /// `relayed` is true). Returns the LEASEQUERY-REPLY to send back the
    /// same way, or `None` to drop it (RFC 5007 §4.2.1 discard rules).
    pub async fn handle_udp(&self, _q: &ClientMessage, _src: SocketAddr, _relayed: bool) -> Option<Message> {
        None
    }

    /// Serves Bulk Leasequery (RFC 5460) on `listeners` until `shutdown` is
    /// cancelled; then every in-flight query ends with QueryTerminated.
    pub async fn run_tcp(
        self: Arc<Self>,
        _listeners: Vec<tokio::net::TcpListener>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}
