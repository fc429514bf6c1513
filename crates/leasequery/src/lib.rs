//! # lq6-leasequery: the leasequery responder
//!
//! Answers RFC 5007 LEASEQUERY over UDP (called by the DHCPv6 server's UDP
//! loop through [`Responder::handle_udp`]) and RFC 5460 Bulk Leasequery over
//! TCP ([`Responder::run_tcp`], its own listeners).
//!
//! # Layout
//! - [`request`]: validation of a LEASEQUERY into a [`request::Request`] (shared by UDP and TCP).
//! - [`policy`]: allow-list and per-requestor limits.
//! - [`answer`]: store lookups.
//! - [`encode`]: REPLY/DATA/DONE frames written straight from store bindings.
//! - [`tcp`]: the bulk listener: connection limits with idle eviction, per-connection
//!   query slots, bounded write buffers, timeouts, graceful termination.
//! - [`metrics`]: counters and the Prometheus endpoint.

pub mod answer;
pub mod encode;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod tcp;

use answer::Source;
use encode::{DataSpec, ReplyHead};
use lq6_config::LeasequeryConfig;
use lq6_proto::{
    ClientMessage, DhcpOption, Duid, Message, MessageType, QueryType, Status, StatusCode,
};
use lq6_store::LeaseStore;
use metrics::Metrics;
use request::{Rejection, Target, Transport};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The server's view of its links, needed for link-address handling
/// (RFC 5007 §4.2: NotConfigured; RFC 5460 §5.3 link filters).
pub trait LinkMap: Send + Sync + 'static {
    /// The configured link that contains `addr`: a relay link-address, an
    /// address in one of the link's prefixes or address pools, or an address
    /// inside one of its PD pools (QUERY_BY_ADDRESS may name an address inside
    /// a delegated prefix).
    fn link_for_address(&self, addr: Ipv6Addr) -> Option<String>;
    /// An address that identifies `link` to a requestor, used in LQ_CLIENT_LINK;
    /// `link_for_address` of it must give `link` back.
    fn link_address(&self, link: &str) -> Option<Ipv6Addr>;
}

/// The leasequery responder: one per server, shared by the UDP loop and the
/// TCP listeners.
pub struct Responder {
    pub(crate) cfg: LeasequeryConfig,
    pub(crate) links: Arc<dyn LinkMap>,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) server_duid: Duid,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: fn() -> u64,
    /// Store scans (one page each) running at once, across all bulk queries.
    /// A page is CPU work on a blocking thread; more at once than cores buys
    /// little throughput, and the semaphore's FIFO order keeps concurrent
    /// queries progressing at the same pace.
    pub(crate) scans: Arc<tokio::sync::Semaphore>,
}

/// How many store pages may be read at once: one per core. Measured with 10
/// concurrent requestors (benches/bulk.rs): unlimited gave ~10% more total rate
/// but slowest/fastest 1.2-1.3, 30 MiB more memory and up to 50 ms to the
/// first binding; one per core gave 1.02-1.05, 9 MiB and under 10 ms.
fn scan_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Responder {
    pub fn new(
        cfg: LeasequeryConfig,
        links: Arc<dyn LinkMap>,
        store: Arc<dyn LeaseStore>,
        server_duid: Duid,
    ) -> Arc<Self> {
        Arc::new(Responder {
            cfg,
            links,
            store,
            server_duid,
            metrics: Arc::new(Metrics::default()),
            clock: lq6_store::unix_now,
            scans: Arc::new(tokio::sync::Semaphore::new(scan_parallelism())),
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn config(&self) -> &LeasequeryConfig {
        &self.cfg
    }

    pub(crate) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Handles one LEASEQUERY (msg-type 14) received over UDP from `src`
    /// (for a relayed query, `src` is the innermost peer-address and
    /// `relayed` is true). Returns the LEASEQUERY-REPLY to send back the
    /// same way, or `None` to drop it (RFC 5007 §4.2.1 discard rules).
    pub async fn handle_udp(
        &self,
        q: &ClientMessage,
        src: SocketAddr,
        relayed: bool,
    ) -> Option<Message> {
        let mut out = Vec::with_capacity(512);
        if !self.answer_udp(q, src, relayed, &mut out).await {
            return None;
        }
        Message::decode(&out).ok()
    }

    /// [`Responder::handle_udp`] without the typed reply: the LEASEQUERY-REPLY
    /// is encoded straight into `out` (cleared first), ready to send. Returns
    /// false when the query is dropped. The server's direct path uses this.
    pub async fn answer_udp(
        &self,
        q: &ClientMessage,
        src: SocketAddr,
        relayed: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let m = &self.metrics;
        if !self.cfg.udp || q.msg_type != MessageType::LEASEQUERY {
            m.udp_dropped.fetch_add(1, Relaxed);
            return false;
        }
        let qtype = query_type_of(q);
        let policy = policy::policy_for(&self.cfg, src.ip());
        let refuse = |out: &mut Vec<u8>, st: Status, text: &str| {
            m.query(false, qtype, st);
            let Some(requestor) = lq6_proto::OptionsExt::client_id(q.options.as_slice()) else {
                return false;
            };
            let head = ReplyHead {
                xid: q.xid,
                status: st,
                text,
                server: &self.server_duid,
                requestor: Some(requestor),
            };
            encode::status_reply(out, MessageType::LEASEQUERY_REPLY, &head).is_ok()
        };
        if !policy.allowed {
            // Lease data is private: default deny (PROTOCOL.md §3.2).
            return refuse(out, Status::NotAllowed, "requestor not permitted");
        }
        if relayed && !self.cfg.allow_relayed {
            return refuse(
                out,
                Status::NotAllowed,
                "relayed leasequery refused (RFC 5007 §5)",
            );
        }
        let req = match request::parse(
            q,
            Transport::Udp,
            &self.server_duid,
            self.links.as_ref(),
            &policy,
        ) {
            Ok(r) => r,
            Err(Rejection::Discard(why)) => {
                tracing::debug!(%src, why, "leasequery dropped");
                m.udp_dropped.fetch_add(1, Relaxed);
                return false;
            }
            Err(Rejection::Status { status, text, .. }) => return refuse(out, status, &text),
        };
        let now = self.now();
        let found = match answer::lookup(self.store.as_ref(), &req, now).await {
            Ok(Source::Few(v)) => v,
            Ok(Source::Scan(_)) => return refuse(out, Status::NotAllowed, "bulk query over UDP"),
            Err(e) => {
                tracing::warn!(error = %e, "lease store error answering leasequery");
                return refuse(out, Status::UnspecFail, "lease store unavailable");
            }
        };
        m.query(false, req.query_type, Status::Success);
        let spec = DataSpec::new(now, &req.oro, &self.cfg.sensitive_options);
        let head = ReplyHead {
            xid: req.xid,
            status: Status::Success,
            text: "",
            server: &self.server_duid,
            requestor: Some(&req.requestor),
        };
        // RFC 5007 §4.3.3: a client found on several links with link-address
        // :: gets the list of links and no client data.
        if matches!(req.target, Target::Client { link: None, .. }) && found.len() > 1 {
            let links: Vec<Ipv6Addr> = found
                .iter()
                .filter_map(|b| {
                    self.links.link_address(&b.client.link).or((!b
                        .client
                        .link_address
                        .is_unspecified())
                    .then_some(b.client.link_address))
                })
                .collect();
            let mut reply = ClientMessage::new(MessageType::LEASEQUERY_REPLY, req.xid);
            reply.options = vec![
                DhcpOption::StatusCode(StatusCode::new(Status::Success, "")),
                DhcpOption::ServerId(self.server_duid.clone()),
                DhcpOption::ClientId(req.requestor.clone()),
                DhcpOption::LqClientLink(links),
            ];
            return Message::Client(reply).encode(out).is_ok();
        }
        if let Err(e) = encode::reply_body(out, &head, found.first(), &spec) {
            tracing::warn!(error = %e, "cannot encode leasequery reply");
            out.clear();
            return false;
        }
        m.bindings_sent_udp
            .fetch_add(found.len().min(1) as u64, Relaxed);
        true
    }

    /// Serves Bulk Leasequery (RFC 5460) on `listeners` until `shutdown` is
    /// cancelled; then every in-flight query ends with QueryTerminated.
    pub async fn run_tcp(
        self: Arc<Self>,
        listeners: Vec<tokio::net::TcpListener>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        tcp::run(self, listeners, shutdown).await
    }
}

/// The query-type of the message's LQ_QUERY, for counting refusals.
pub(crate) fn query_type_of(q: &ClientMessage) -> QueryType {
    q.options
        .iter()
        .find_map(|o| match o {
            DhcpOption::LqQuery(l) => Some(l.query_type),
            _ => None,
        })
        .unwrap_or(QueryType::Other(0))
}
