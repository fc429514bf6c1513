//! The allocation engine: validation (RFC 8415 §16), relay unwrapping (§9, §19, RFC 6221, 8357,
//! 4994), link selection (§13.1), lease assignment (§18.3) and the reply path. It does no socket
//! I/O and never reads the clock: every entry point takes `now` (unix seconds).
//!
//! Every lease is committed to the store, durably, before the reply that announces it is built.
//! Many transactions run concurrently, so the store's group commit batches their fsyncs.

use crate::counters::Counters;
use crate::links::{Link, LinkTable};
use crate::pool::Pool;
use lq6_config::Config;
use lq6_leasequery::Responder;
use lq6_proto::message::is_relay_only_option;
use lq6_proto::option::HOP_COUNT_LIMIT;
use lq6_proto::{
    code, ClientMessage, DecodeErrorKind, DhcpOption, Duid, Ia, IaAddr, IaPrefix, IaTa, Message,
    MessageType, OptionsExt, RelayMessage, Status, StatusCode,
};
use lq6_store::{
    ClientUpdate, Lease, LeaseKind, LeaseMerge, LeaseState, LeaseStore, RelayInfo, RemoteId,
    StoreError,
};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, info, warn};

/// UDP ports (RFC 8415 §7.2).
pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;

/// How many times an allocation is retried after a store Conflict.
const CONFLICT_RETRIES: usize = 4;

/// Where a datagram came from.
#[derive(Debug, Clone)]
pub struct RecvMeta {
    pub src: SocketAddrV6,
    /// The interface it arrived on, when the socket is bound to one.
    pub iface: Option<String>,
    /// True when it was sent to a multicast address (ff02::1:2).
    pub multicast: bool,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub dst: SocketAddrV6,
}

/// Errors of the engine's startup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("lease store: {0}")]
    Store(#[from] StoreError),
}

/// A reservation (`[[reservations]]`).
#[derive(Debug, Clone)]
struct Reserved {
    link: Option<usize>,
    addresses: Vec<Ipv6Addr>,
    prefixes: Vec<(Ipv6Addr, u8)>,
}

struct State {
    /// (link index, pool) for addresses (IA_NA, IA_TA).
    addr_pools: Vec<(usize, Pool)>,
    /// (link index, pool) for delegated prefixes.
    pd_pools: Vec<(usize, Pool)>,
    /// Known leases of each client on each link (a cache of the store, Active leases only).
    clients: crate::cache::LeaseCache,
    /// Clients with a transaction in flight (retransmissions are dropped meanwhile).
    busy: HashSet<Vec<u8>>,
}

/// Tunables taken from the config.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub preference: u8,
    pub information_refresh_time: u32,
    pub decline_quarantine: u64,
    /// The lease cache holds every binding (true for an embedded store used by one server).
    /// When false (shared PostgreSQL), a cache miss reads the store.
    pub cache_authoritative: bool,
    /// Log one info line per transaction.
    pub log_transactions: bool,
}

/// The DHCPv6 server logic.
pub struct Engine {
    links: Arc<LinkTable>,
    server_duid: Duid,
    opts: EngineOptions,
    reservations: HashMap<Vec<u8>, Vec<Reserved>>,
    store: Arc<dyn LeaseStore>,
    responder: Option<Arc<Responder>>,
    counters: Arc<Counters>,
    state: Mutex<State>,
}

/// The IA kinds handled (RFC 8415 §21.4, §21.5, §21.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IaKind {
    Na,
    Ta,
    Pd,
}

impl IaKind {
    fn lease_kind(self) -> LeaseKind {
        match self {
            IaKind::Na => LeaseKind::Na,
            IaKind::Ta => LeaseKind::Ta,
            IaKind::Pd => LeaseKind::Pd,
        }
    }
    fn none_status(self) -> Status {
        if self == IaKind::Pd {
            Status::NoPrefixAvail
        } else {
            Status::NoAddrsAvail
        }
    }
}

/// One IA of the client's message.
#[derive(Debug, Clone)]
struct IaReq {
    kind: IaKind,
    iaid: u32,
    /// Addresses / prefixes the client listed (lifetimes ignored, §25).
    hints: Vec<(Ipv6Addr, u8)>,
}

/// What the server puts in one IA of its reply.
#[derive(Debug, Clone)]
struct IaOut {
    kind: IaKind,
    iaid: u32,
    /// (address or prefix, prefix length, preferred, valid).
    leases: Vec<(Ipv6Addr, u8, u32, u32)>,
    status: Option<(Status, &'static str)>,
}

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Assign,
    Renew,
    Rebind,
}

/// A relayed message, unwrapped.
struct Relayed<'a> {
    /// Outermost first.
    chain: Vec<&'a RelayMessage>,
    outer: &'a RelayMessage,
}

fn owner_of(duid: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    duid.hash(&mut h);
    h.finish() | 1
}

fn ia_kind_name(k: IaKind) -> &'static str {
    match k {
        IaKind::Na => "na",
        IaKind::Ta => "ta",
        IaKind::Pd => "pd",
    }
}

impl Engine {
    /// Builds the engine. Call [`Engine::load`] before serving so pools learn taken entries.
    pub fn new(
        cfg: &Config,
        links: Arc<LinkTable>,
        store: Arc<dyn LeaseStore>,
        server_duid: Duid,
        responder: Option<Arc<Responder>>,
        opts: EngineOptions,
    ) -> Engine {
        let mut addr_pools = Vec::new();
        let mut pd_pools = Vec::new();
        for (i, l) in links.links.iter().enumerate() {
            for (s, e) in &l.pools {
                addr_pools.push((i, Pool::addresses(*s, *e)));
            }
            for (p, dl) in &l.pd_pools {
                pd_pools.push((i, Pool::prefixes(p.network(), p.prefix_len(), *dl)));
            }
        }
        let mut reservations: HashMap<Vec<u8>, Vec<Reserved>> = HashMap::new();
        for r in &cfg.reservations {
            let Ok(d) = r.duid.parse::<Duid>() else {
                continue;
            };
            let owner = owner_of(d.as_bytes());
            let res = Reserved {
                link: r.link.as_deref().and_then(|n| links.by_name(n)),
                addresses: r.addresses.clone(),
                prefixes: r
                    .prefixes
                    .iter()
                    .map(|p| (p.network(), p.prefix_len()))
                    .collect(),
            };
            for a in &res.addresses {
                for (_, p) in addr_pools.iter_mut().filter(|(_, p)| p.index(*a).is_some()) {
                    p.take(*a, owner, u64::MAX, true);
                }
            }
            for (a, _) in &res.prefixes {
                for (_, p) in pd_pools.iter_mut().filter(|(_, p)| p.index(*a).is_some()) {
                    p.take(*a, owner, u64::MAX, true);
                }
            }
            reservations.entry(d.into_bytes()).or_default().push(res);
        }
        Engine {
            links,
            server_duid,
            opts,
            reservations,
            store,
            responder,
            counters: Arc::new(Counters::default()),
            state: Mutex::new(State {
                addr_pools,
                pd_pools,
                clients: Default::default(),
                busy: HashSet::new(),
            }),
        }
    }

    /// The counters (shared with the metrics endpoint).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn server_duid(&self) -> &Duid {
        &self.server_duid
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state is still consistent enough to serve.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns from the store which pool entries are taken and, when the cache is authoritative,
    /// every active binding. Leases survive restarts this way.
    ///
    /// An authoritative cache reads every binding once and fills pools and cache from it; a
    /// shared store only marks the pool ranges (`active_in_range`) and reads clients on demand.
    pub async fn load(&self, now: u64) -> Result<usize, EngineError> {
        if self.opts.cache_authoritative {
            return self.load_all(now).await;
        }
        let ranges: Vec<(bool, usize, Ipv6Addr, Ipv6Addr)> = {
            let st = self.lock();
            let a = st
                .addr_pools
                .iter()
                .enumerate()
                .map(|(i, (_, p))| (false, i, Ipv6Addr::from(p.base), last_of(p)));
            let b = st
                .pd_pools
                .iter()
                .enumerate()
                .map(|(i, (_, p))| (true, i, Ipv6Addr::from(p.base), last_of(p)));
            a.chain(b).collect()
        };
        let mut n = 0;
        for (pd, i, start, end) in ranges {
            let mut after = None;
            loop {
                let got = self.store.active_in_range(start, end, after, 4096).await?;
                let Some(last) = got.last() else { break };
                after = Some(last.addr);
                let mut st = self.lock();
                let pools = if pd {
                    &mut st.pd_pools
                } else {
                    &mut st.addr_pools
                };
                for l in &got {
                    if l.expires_at > now {
                        pools[i]
                            .1
                            .take(l.addr, owner_of(&l.duid), l.expires_at, false);
                        n += 1;
                    }
                }
                if got.len() < 4096 {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// [`Engine::load`] for an authoritative cache: one pass over every binding (inactive ones
    /// too, for quarantined DECLINEs).
    async fn load_all(&self, now: u64) -> Result<usize, EngineError> {
        use futures::StreamExt;
        let mut n = 0;
        let mut s = Box::pin(lq6_store::stream(
            self.store.clone(),
            lq6_store::Query::all().inactive(true),
            1024,
        ));
        while let Some(b) = s.next().await {
            let b = b?;
            let owner = owner_of(&b.client.duid);
            let mut guard = self.lock();
            let st = &mut *guard;
            for l in b.leases.iter().filter(|l| l.expires_at > now) {
                let (holder, in_na, in_pd) = match l.state {
                    // Whichever pool has the entry, whatever link the binding names.
                    LeaseState::Active => (owner, true, true),
                    // Quarantined, held by nobody, in the pools of its kind.
                    LeaseState::Declined => (0, l.kind != LeaseKind::Pd, l.kind == LeaseKind::Pd),
                    _ => continue,
                };
                let na = st.addr_pools.iter_mut().filter(|_| in_na);
                let pools = na.chain(st.pd_pools.iter_mut().filter(|_| in_pd));
                for (_, p) in pools.filter(|(_, p)| p.index(l.addr).is_some()) {
                    p.take(l.addr, holder, l.expires_at, false);
                    if holder != 0 {
                        n += 1;
                    }
                }
            }
            let Some(li) = self.links.by_name(&b.client.link) else {
                continue;
            };
            let leases: Vec<Lease> = b
                .leases
                .into_iter()
                .filter(|l| l.state == LeaseState::Active && l.expires_at > now)
                .collect();
            st.clients.set(&b.client.duid, li, leases);
        }
        Ok(n)
    }

    /// Background reclaim (RFC 8415 §18.3: expired leases become available): frees expired
    /// pool entries and marks expired leases in the store.
    pub async fn reclaim(&self, now: u64) -> Result<u64, EngineError> {
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut n = 0;
            for (_, p) in st.addr_pools.iter_mut().chain(st.pd_pools.iter_mut()) {
                n += p.reclaim(now);
            }
            st.clients.retain_all(|l| l.expires_at > now);
            self.counters
                .reclaimed
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(self.store.expire(now).await?)
    }

    /// Handles one datagram. Returns the reply to send, if any. Never panics on input.
    pub async fn handle(&self, pkt: &[u8], meta: &RecvMeta, now: u64) -> Option<Outgoing> {
        let c = &self.counters;
        Counters::inc(&c.received);
        let msg = match Message::decode(pkt) {
            Ok(m) => m,
            Err(e) => {
                Counters::inc(match e.kind {
                    DecodeErrorKind::BadOptionLength { .. } | DecodeErrorKind::BadDuid(_) => {
                        &c.drop_bad_option_length
                    }
                    DecodeErrorKind::RelayTooDeep(_) => &c.drop_relay_too_deep,
                    _ => &c.drop_malformed,
                });
                debug!(src = %meta.src, error = %e, "dropped undecodable message");
                return None;
            }
        };
        let out = match &msg {
            Message::Relay(r) if r.msg_type == MessageType::RELAY_FORW => {
                self.handle_relayed(r, meta, now).await
            }
            Message::Client(m) => {
                if m.options.iter().any(|o| is_relay_only_option(o.code())) {
                    Counters::inc(&c.drop_relay_only_option);
                    return None;
                }
                if m.msg_type == MessageType::LEASEQUERY {
                    // Requestors are not on port 546: answer the source address and port.
                    let r = self.leasequery_bytes(m, SocketAddr::V6(meta.src)).await?;
                    return self.finish(r, meta.src);
                }
                if !self.is_client_type(m.msg_type) {
                    Counters::inc(&c.drop_unknown_type);
                    return None;
                }
                let Some(link) = self.direct_link(meta) else {
                    Counters::inc(&c.drop_no_link);
                    return None;
                };
                let reply = self.client(m, link, None, meta, now).await?;
                let mut dst = meta.src;
                dst.set_port(CLIENT_PORT);
                return self.finish(reply.to_vec().ok()?, dst);
            }
            _ => {
                Counters::inc(&c.drop_unknown_type);
                None
            }
        }?;
        Some(out)
    }

    fn finish(&self, bytes: Vec<u8>, dst: SocketAddrV6) -> Option<Outgoing> {
        Counters::inc(&self.counters.sent);
        Some(Outgoing { bytes, dst })
    }

    fn is_client_type(&self, t: MessageType) -> bool {
        matches!(t.0, 1 | 3..=6 | 8 | 9 | 11)
    }

    /// The link of a directly attached client (RFC 8415 §13.1): the arrival interface for a
    /// link-local source, otherwise the link containing the source address.
    fn direct_link(&self, meta: &RecvMeta) -> Option<usize> {
        let src = *meta.src.ip();
        let by_iface = meta
            .iface
            .as_deref()
            .and_then(|i| self.links.by_interface(i));
        if (src.segments()[0] & 0xffc0) == 0xfe80 {
            by_iface
        } else {
            self.links.by_address(src).or(by_iface)
        }
    }

    async fn handle_relayed(
        &self,
        outer: &RelayMessage,
        meta: &RecvMeta,
        now: u64,
    ) -> Option<Outgoing> {
        let c = &self.counters;
        let mut chain: Vec<&RelayMessage> = vec![outer];
        let inner = loop {
            let cur = chain.last()?;
            match cur.relay_msg() {
                Some(Message::Relay(r)) => chain.push(r),
                other => break other,
            }
        };
        if chain.iter().any(|r| r.hop_count > HOP_COUNT_LIMIT) {
            Counters::inc(&c.drop_relay_too_deep);
            return None;
        }
        if chain.iter().any(|r| r.msg_type != MessageType::RELAY_FORW) {
            Counters::inc(&c.drop_bad_relay);
            return None;
        }
        let Some(Message::Client(m)) = inner else {
            Counters::inc(&c.drop_bad_relay);
            return None;
        };
        if m.options.iter().any(|o| is_relay_only_option(o.code())) {
            Counters::inc(&c.drop_relay_only_option);
            return None;
        }
        let rel = Relayed {
            chain: chain.clone(),
            outer,
        };
        let reply = if m.msg_type == MessageType::LEASEQUERY {
            let innermost = chain.last()?;
            let src = SocketAddr::V6(SocketAddrV6::new(
                innermost.peer_address,
                meta.src.port(),
                0,
                0,
            ));
            self.leasequery_relayed(m, src).await?
        } else {
            // RFC 8415 §13.1 + RFC 6221: the innermost non-zero link-address.
            let la = chain
                .iter()
                .rev()
                .map(|r| r.link_address)
                .find(|a| !a.is_unspecified());
            let link = match la {
                Some(a) => self.links.by_address(a),
                None => self.direct_link(meta),
            };
            let Some(link) = link else {
                if self.is_client_type(m.msg_type) {
                    Counters::inc(&c.drop_no_link);
                } else {
                    Counters::inc(&c.drop_unknown_type);
                }
                return None;
            };
            self.client(m, link, Some((&rel, meta, la)), meta, now)
                .await?
        };
        let bytes = wrap_reply(&rel.chain, reply).to_vec().ok()?;
        // RFC 8357: with RELAY_PORT in the outermost level, answer the relay's source port.
        let port = if outer.has(code::RELAY_PORT) {
            meta.src.port()
        } else {
            SERVER_PORT
        };
        let mut dst = meta.src;
        dst.set_port(port);
        self.finish(bytes, dst)
    }

    /// A direct LEASEQUERY, answered without a typed reply (encoded once).
    async fn leasequery_bytes(&self, m: &ClientMessage, src: SocketAddr) -> Option<Vec<u8>> {
        Counters::inc(&self.counters.leasequery);
        let mut out = Vec::with_capacity(512);
        let answered = match &self.responder {
            Some(r) => r.answer_udp(m, src, false, &mut out).await,
            None => false,
        };
        if !answered {
            Counters::inc(&self.counters.drop_leasequery);
            return None;
        }
        Some(out)
    }

    /// A relayed LEASEQUERY: the typed reply goes into the RELAY-REPL chain.
    async fn leasequery_relayed(&self, m: &ClientMessage, src: SocketAddr) -> Option<Message> {
        Counters::inc(&self.counters.leasequery);
        let r = match &self.responder {
            Some(r) => r.handle_udp(m, src, true).await,
            None => None,
        };
        if r.is_none() {
            Counters::inc(&self.counters.drop_leasequery);
        }
        r
    }

    /// Validates and answers one client message (RFC 8415 §16, §18.3).
    async fn client(
        &self,
        m: &ClientMessage,
        link: usize,
        relay: Option<(&Relayed<'_>, &RecvMeta, Option<Ipv6Addr>)>,
        meta: &RecvMeta,
        now: u64,
    ) -> Option<Message> {
        let c = &self.counters;
        let t = m.msg_type;
        let opts = m.options.as_slice();
        let unicast = relay.is_none() && !meta.multicast;
        let client_id = opts.client_id();
        let server_id = opts.server_id();
        let ours = server_id.map(|s| s == &self.server_duid);
        // Singletons: more than one CLIENTID/SERVERID is malformed (RFC 8415 §16 + table 4).
        if opts.count(code::CLIENTID) > 1 || opts.count(code::SERVERID) > 1 {
            Counters::inc(&c.drop_invalid);
            return None;
        }
        let counter = match t {
            MessageType::SOLICIT => &c.solicit,
            MessageType::REQUEST => &c.request,
            MessageType::CONFIRM => &c.confirm,
            MessageType::RENEW => &c.renew,
            MessageType::REBIND => &c.rebind,
            MessageType::RELEASE => &c.release,
            MessageType::DECLINE => &c.decline,
            MessageType::INFORMATION_REQUEST => &c.information_request,
            _ => {
                Counters::inc(&c.drop_unknown_type);
                return None;
            }
        };
        // §16 discard rules.
        match t {
            MessageType::SOLICIT | MessageType::CONFIRM | MessageType::REBIND => {
                if client_id.is_none() || server_id.is_some() {
                    Counters::inc(&c.drop_invalid);
                    return None;
                }
                if unicast {
                    Counters::inc(&c.drop_unicast);
                    return None;
                }
            }
            MessageType::REQUEST
            | MessageType::RENEW
            | MessageType::RELEASE
            | MessageType::DECLINE => {
                if client_id.is_none() || server_id.is_none() {
                    Counters::inc(&c.drop_invalid);
                    return None;
                }
                if ours == Some(false) {
                    Counters::inc(&c.drop_not_for_us);
                    return None;
                }
            }
            _ => {
                // INFORMATION-REQUEST
                if ours == Some(false) {
                    Counters::inc(&c.drop_not_for_us);
                    return None;
                }
                if opts
                    .iter()
                    .any(|o| matches!(o.code(), code::IA_NA | code::IA_TA | code::IA_PD))
                {
                    Counters::inc(&c.drop_invalid);
                    return None;
                }
            }
        }
        Counters::inc(counter);
        let mut reply = ClientMessage::new(MessageType::REPLY, m.xid);
        if let Some(cid) = client_id {
            reply.options.push(DhcpOption::ClientId(cid.clone()));
        }
        reply
            .options
            .push(DhcpOption::ServerId(self.server_duid.clone()));
        // §18.4: unicast without a Server Unicast grant (we never grant one) → UseMulticast.
        if unicast {
            reply.options.push(DhcpOption::StatusCode(StatusCode::new(
                Status::UseMulticast,
                "use multicast",
            )));
            return Some(Message::Client(reply));
        }
        let l = &self.links.links[link];
        if t == MessageType::INFORMATION_REQUEST {
            self.add_config_options(&mut reply, l, opts.oro().unwrap_or(&[]));
            reply.options.push(DhcpOption::InformationRefreshTime(
                self.opts.information_refresh_time,
            ));
            if self.opts.log_transactions {
                info!(msg = "INFORMATION-REQUEST", link = %l.name, "configuration sent");
            }
            return Some(Message::Client(reply));
        }
        let duid = client_id?;
        let ias = collect_ias(opts);
        if t == MessageType::CONFIRM {
            // §18.3.3: NotOnLink if any address is not on the link; no reply without addresses.
            let addrs: Vec<Ipv6Addr> = ias
                .iter()
                .filter(|ia| ia.kind != IaKind::Pd)
                .flat_map(|ia| ia.hints.iter().map(|h| h.0))
                .collect();
            if addrs.is_empty() {
                Counters::inc(&c.drop_nothing_to_say);
                return None;
            }
            let ok = addrs.iter().all(|a| l.on_link(*a));
            if self.opts.log_transactions {
                info!(msg = "CONFIRM", duid = %duid, link = %l.name, on_link = ok, "transaction");
            }
            reply.options.push(DhcpOption::StatusCode(if ok {
                StatusCode::new(Status::Success, "all addresses on link")
            } else {
                StatusCode::new(Status::NotOnLink, "not on link")
            }));
            return Some(Message::Client(reply));
        }
        // One transaction per client at a time: retransmissions meanwhile are dropped.
        let key = duid.as_bytes().to_vec();
        if !self.lock().busy.insert(key.clone()) {
            Counters::inc(&c.drop_busy);
            return None;
        }
        let _busy = BusyGuard { engine: self, key };
        if !self.opts.cache_authoritative {
            self.fill_cache(duid.as_bytes(), link).await;
        }
        let relay_info = relay.map(|(r, meta, _)| relay_info(r, meta));
        let link_address = relay
            .and_then(|(_, _, la)| la)
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        match t {
            MessageType::SOLICIT => {
                let rapid = l.rapid_commit && OptionsExt::get(opts, code::RAPID_COMMIT).is_some();
                if rapid {
                    reply.options.push(DhcpOption::RapidCommit);
                    let outs = self
                        .assign(
                            duid,
                            link,
                            &ias,
                            Mode::Assign,
                            relay_info,
                            link_address,
                            now,
                        )
                        .await?;
                    finish_ias(&mut reply, &outs, l);
                    self.log(t, duid, l, &outs);
                } else {
                    reply.msg_type = MessageType::ADVERTISE;
                    let outs = self.plan_advertise(duid, link, &ias, now);
                    finish_ias(&mut reply, &outs, l);
                    reply
                        .options
                        .push(DhcpOption::Preference(self.opts.preference));
                    self.log_as(t, duid, l, &outs, "advertise");
                }
                self.add_config_options(&mut reply, l, opts.oro().unwrap_or(&[]));
                Some(Message::Client(reply))
            }
            MessageType::REQUEST | MessageType::RENEW | MessageType::REBIND => {
                let mode = match t {
                    MessageType::REQUEST => Mode::Assign,
                    MessageType::RENEW => Mode::Renew,
                    _ => Mode::Rebind,
                };
                let outs = self
                    .assign(duid, link, &ias, mode, relay_info, link_address, now)
                    .await?;
                if mode == Mode::Rebind && outs.iter().all(|o| o.leases.is_empty()) {
                    // §18.3.5: nothing to say about any IA → discard.
                    Counters::inc(&c.drop_nothing_to_say);
                    return None;
                }
                finish_ias(&mut reply, &outs, l);
                self.add_config_options(&mut reply, l, opts.oro().unwrap_or(&[]));
                self.log(t, duid, l, &outs);
                Some(Message::Client(reply))
            }
            MessageType::RELEASE | MessageType::DECLINE => {
                let outs = self
                    .release(
                        duid,
                        link,
                        &ias,
                        t == MessageType::DECLINE,
                        relay_info,
                        link_address,
                        now,
                    )
                    .await?;
                for o in &outs {
                    reply.options.push(ia_option(o, 0, 0));
                }
                reply.options.push(DhcpOption::StatusCode(StatusCode::new(
                    Status::Success,
                    if t == MessageType::DECLINE {
                        "declined"
                    } else {
                        "released"
                    },
                )));
                if self.opts.log_transactions {
                    info!(msg = t.name().unwrap_or("?"), duid = %duid, link = %l.name, ias = outs.len(), "done");
                }
                Some(Message::Client(reply))
            }
            _ => None,
        }
    }

    fn log(&self, t: MessageType, duid: &Duid, l: &Link, outs: &[IaOut]) {
        self.log_as(t, duid, l, outs, "transaction")
    }

    /// One info line per transaction: message, client DUID, link, and what was granted
    /// (or offered, for ADVERTISE) with any IA status.
    fn log_as(&self, t: MessageType, duid: &Duid, l: &Link, outs: &[IaOut], what: &str) {
        if !self.opts.log_transactions {
            return;
        }
        let granted: Vec<String> = outs
            .iter()
            .flat_map(|o| {
                let st = o
                    .status
                    .map(|(s, _)| format!("{}:{} {s}", ia_kind_name(o.kind), o.iaid));
                o.leases
                    .iter()
                    .map(move |(a, p, _, v)| {
                        if o.kind == IaKind::Pd {
                            format!("{a}/{p} valid {v}")
                        } else {
                            format!("{a} valid {v}")
                        }
                    })
                    .chain(st)
            })
            .collect();
        info!(
            msg = t.name().unwrap_or("?"),
            duid = %duid,
            link = %l.name,
            granted = %granted.join(", "),
            "{what}"
        );
    }

    async fn fill_cache(&self, duid: &[u8], link: usize) {
        let name = &self.links.links[link].name;
        if let Ok(bs) = self.store.by_client(duid, Some(name)).await {
            let leases: Vec<Lease> = bs
                .into_iter()
                .flat_map(|b| b.leases)
                .filter(|l| l.state == LeaseState::Active)
                .collect();
            let mut st = self.lock();
            st.clients.set(duid, link, leases);
        }
    }

    fn add_config_options(&self, reply: &mut ClientMessage, l: &Link, oro: &[u16]) {
        if oro.contains(&code::DNS_SERVERS) && !l.dns_servers.is_empty() {
            reply
                .options
                .push(DhcpOption::DnsServers(l.dns_servers.clone()));
        }
        if oro.contains(&code::DOMAIN_LIST) && !l.domain_list.is_empty() {
            reply
                .options
                .push(DhcpOption::DomainList(l.domain_list.clone()));
        }
    }

    /// ADVERTISE: what the server would assign, without changing any state (§18.3.1, §18.3.9).
    fn plan_advertise(&self, duid: &Duid, link: usize, ias: &[IaReq], now: u64) -> Vec<IaOut> {
        let l = &self.links.links[link];
        let owner = owner_of(duid.as_bytes());
        let mut st = self.lock();
        let existing = st.clients.get(duid.as_bytes(), link);
        let mut used: HashSet<Ipv6Addr> = HashSet::new();
        let mut outs = Vec::new();
        for ia in ias {
            let (pref, valid) = (l.lifetimes.preferred, l.lifetimes.valid);
            let mine: Vec<&Lease> = existing
                .iter()
                .filter(|x| {
                    x.kind == ia.kind.lease_kind()
                        && x.iaid == ia.iaid
                        && x.expires_at > now
                        && self.still_ours(&st, ia.kind, link, x.addr, x.prefix_len, owner)
                })
                .collect();
            let mut out = IaOut {
                kind: ia.kind,
                iaid: ia.iaid,
                leases: Vec::new(),
                status: None,
            };
            if !mine.is_empty() {
                for x in mine {
                    out.leases.push((x.addr, x.prefix_len, pref, valid));
                }
            } else if let Some((a, p)) = self.reserved_for(duid, link, ia.kind, &used, &existing) {
                out.leases.push((a, p, pref, valid));
            } else {
                let pools = if ia.kind == IaKind::Pd {
                    &mut st.pd_pools
                } else {
                    &mut st.addr_pools
                };
                let cand = pools
                    .iter_mut()
                    .filter(|(li, _)| *li == link)
                    .find_map(|(_, p)| p.peek(now).map(|a| (a, p.plen)));
                match cand {
                    Some((a, p)) if !used.contains(&a) => out.leases.push((a, p, pref, valid)),
                    _ => {
                        Counters::inc(&self.counters.no_addrs_avail);
                        out.status = Some((ia.kind.none_status(), "no addresses available"));
                    }
                }
            }
            used.extend(out.leases.iter().map(|x| x.0));
            outs.push(out);
        }
        outs
    }

    /// A lease the client holds is still its own: in a pool and held by it, or reserved for it.
    fn still_ours(
        &self,
        st: &State,
        kind: IaKind,
        link: usize,
        a: Ipv6Addr,
        plen: u8,
        owner: u64,
    ) -> bool {
        let l = &self.links.links[link];
        let on = if kind == IaKind::Pd {
            l.pd_on_link(a, plen)
        } else {
            l.on_link(a)
        };
        if !on {
            return false;
        }
        let pools = if kind == IaKind::Pd {
            &st.pd_pools
        } else {
            &st.addr_pools
        };
        match pools.iter().find(|(_, p)| p.index(a).is_some()) {
            Some((_, p)) => p.holder(a).is_some_and(|h| h.owner == owner),
            None => true,
        }
    }

    fn reserved_for(
        &self,
        duid: &Duid,
        link: usize,
        kind: IaKind,
        used: &HashSet<Ipv6Addr>,
        existing: &[Lease],
    ) -> Option<(Ipv6Addr, u8)> {
        let rs = self.reservations.get(duid.as_bytes())?;
        let held = |a: &Ipv6Addr| used.contains(a) || existing.iter().any(|l| l.addr == *a);
        for r in rs.iter().filter(|r| r.link.is_none_or_eq(link)) {
            if kind == IaKind::Pd {
                if let Some(p) = r.prefixes.iter().find(|(a, _)| !held(a)) {
                    return Some(*p);
                }
            } else if let Some(a) = r.addresses.iter().find(|a| !held(a)) {
                return Some((*a, 128));
            }
        }
        None
    }

    /// REQUEST, RENEW, REBIND and Rapid Commit SOLICIT: decide, commit durably, then answer.
    #[allow(clippy::too_many_arguments)]
    async fn assign(
        &self,
        duid: &Duid,
        link: usize,
        ias: &[IaReq],
        mode: Mode,
        relay: Option<RelayInfo>,
        link_address: Ipv6Addr,
        now: u64,
    ) -> Option<Vec<IaOut>> {
        let l = &self.links.links[link];
        let owner = owner_of(duid.as_bytes());
        if ias.is_empty() {
            return Some(Vec::new());
        }
        for _attempt in 0..CONFLICT_RETRIES {
            // Decide under the lock; `fresh` are entries taken from pools in this attempt.
            let (outs, fresh) = {
                let mut st = self.lock();
                self.decide(&mut st, duid, link, owner, ias, mode, now)
            };
            let leases: Vec<Lease> = outs
                .iter()
                .flat_map(|o| {
                    o.leases
                        .iter()
                        .filter(|x| x.3 > 0)
                        .map(move |&(a, p, pref, valid)| Lease {
                            kind: o.kind.lease_kind(),
                            iaid: o.iaid,
                            addr: a,
                            prefix_len: p,
                            preferred: pref,
                            valid,
                            expires_at: now + u64::from(valid),
                            state: LeaseState::Active,
                        })
                })
                .collect();
            let update = ClientUpdate {
                duid: duid.as_bytes().to_vec(),
                link: l.name.clone(),
                link_address,
                cltt: now,
                relay: relay.clone(),
                leases,
                merge: LeaseMerge::Merge,
                now: Some(now),
            };
            match self.store.commit(update).await {
                Ok(info) => {
                    let active: Vec<Lease> = info
                        .binding
                        .leases
                        .into_iter()
                        .filter(|x| x.state == LeaseState::Active && x.expires_at > now)
                        .collect();
                    let mut st = self.lock();
                    // Pool entries follow the committed expiry.
                    for x in &active {
                        let pools = if x.kind == LeaseKind::Pd {
                            &mut st.pd_pools
                        } else {
                            &mut st.addr_pools
                        };
                        if let Some((_, p)) =
                            pools.iter_mut().find(|(_, p)| p.index(x.addr).is_some())
                        {
                            if p.holder(x.addr).is_none_or_owner(owner) {
                                p.take(x.addr, owner, x.expires_at, false);
                            }
                        }
                    }
                    st.clients.set(duid.as_bytes(), link, active);
                    return Some(outs);
                }
                Err(StoreError::Conflict { addr }) => {
                    Counters::inc(&self.counters.store_conflicts);
                    let mut guard = self.lock();
                    let st = &mut *guard;
                    for (kind, a) in &fresh {
                        let pools = if *kind == IaKind::Pd {
                            &mut st.pd_pools
                        } else {
                            &mut st.addr_pools
                        };
                        for (_, p) in pools.iter_mut() {
                            if p.index(*a).is_some() {
                                if *a == addr {
                                    // Held by another server sharing the store: skip it for a while.
                                    p.take(*a, 0, now + 60, false);
                                } else {
                                    p.free(*a);
                                }
                            }
                        }
                    }
                    if !fresh.iter().any(|(_, a)| *a == addr) {
                        // The conflict is on a lease the client already had: drop it from the cache.
                        st.clients
                            .retain_client(duid.as_bytes(), link, |x| x.addr != addr);
                        for (_, p) in st.addr_pools.iter_mut().chain(st.pd_pools.iter_mut()) {
                            if p.index(addr).is_some() {
                                p.take(addr, 0, now + 60, false);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, duid = %duid, "lease store commit failed; no reply");
                    Counters::inc(&self.counters.drop_store_error);
                    let mut st = self.lock();
                    for (kind, a) in &fresh {
                        let pools = if *kind == IaKind::Pd {
                            &mut st.pd_pools
                        } else {
                            &mut st.addr_pools
                        };
                        for (_, p) in pools.iter_mut() {
                            p.free(*a);
                        }
                    }
                    return None;
                }
            }
        }
        Counters::inc(&self.counters.drop_store_error);
        None
    }

    /// The allocation decision for every IA (§18.3.2, §18.3.4, §18.3.5).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        st: &mut State,
        duid: &Duid,
        link: usize,
        owner: u64,
        ias: &[IaReq],
        mode: Mode,
        now: u64,
    ) -> (Vec<IaOut>, Vec<(IaKind, Ipv6Addr)>) {
        let l = &self.links.links[link];
        let (pref, valid) = (l.lifetimes.preferred, l.lifetimes.valid);
        let existing = st.clients.get(duid.as_bytes(), link);
        let mut fresh = Vec::new();
        let mut used: HashSet<Ipv6Addr> = HashSet::new();
        let mut outs = Vec::new();
        for ia in ias {
            let mut out = IaOut {
                kind: ia.kind,
                iaid: ia.iaid,
                leases: Vec::new(),
                status: None,
            };
            let on_link = |a: Ipv6Addr, p: u8| {
                if ia.kind == IaKind::Pd {
                    l.pd_on_link(a, p) || p == 0 || a.is_unspecified()
                } else {
                    l.on_link(a)
                }
            };
            let mine: Vec<Lease> = existing
                .iter()
                .filter(|x| {
                    x.kind == ia.kind.lease_kind()
                        && x.iaid == ia.iaid
                        && x.expires_at > now
                        && self.still_ours(st, ia.kind, link, x.addr, x.prefix_len, owner)
                })
                .cloned()
                .collect();
            // Hints that are not appropriate for the link.
            let off: Vec<(Ipv6Addr, u8)> = ia
                .hints
                .iter()
                .filter(|(a, p)| !a.is_unspecified() && !on_link(*a, *p))
                .copied()
                .collect();
            match mode {
                Mode::Assign => {
                    if ia.kind != IaKind::Pd && !off.is_empty() && mine.is_empty() {
                        // §18.3.2: NotOnLink.
                        out.status = Some((Status::NotOnLink, "address not on link"));
                        outs.push(out);
                        continue;
                    }
                    if !mine.is_empty() {
                        for x in &mine {
                            out.leases.push((x.addr, x.prefix_len, pref, valid));
                        }
                    } else if let Some((a, p)) =
                        self.reserved_for(duid, link, ia.kind, &used, &existing)
                    {
                        out.leases.push((a, p, pref, valid));
                    } else {
                        // Prefer a free hinted entry, then the pool's next.
                        let until = now + u64::from(valid);
                        let pools = if ia.kind == IaKind::Pd {
                            &mut st.pd_pools
                        } else {
                            &mut st.addr_pools
                        };
                        let mut got = None;
                        // The client's own lapsed lease for this IA, if nobody took it meanwhile.
                        let lapsed = existing
                            .iter()
                            .filter(|x| x.kind == ia.kind.lease_kind() && x.iaid == ia.iaid)
                            .map(|x| (x.addr, x.prefix_len));
                        for (a, _) in lapsed
                            .chain(ia.hints.iter().copied())
                            .filter(|(a, _)| !a.is_unspecified())
                        {
                            let a = &a;
                            if let Some((_, p)) = pools
                                .iter_mut()
                                .find(|(li, p)| *li == link && p.index(*a).is_some())
                            {
                                if p.available_to(*a, owner, now) && !used.contains(a) {
                                    p.take(*a, owner, until, false);
                                    got = Some((*a, p.plen));
                                    break;
                                }
                            }
                        }
                        if got.is_none() {
                            got = pools.iter_mut().filter(|(li, _)| *li == link).find_map(
                                |(_, p)| p.take_next(owner, until, now).map(|a| (a, p.plen)),
                            );
                        }
                        match got {
                            Some((a, p)) => {
                                fresh.push((ia.kind, a));
                                out.leases.push((a, p, pref, valid));
                            }
                            None => {
                                Counters::inc(&self.counters.no_addrs_avail);
                                out.status =
                                    Some((ia.kind.none_status(), "no addresses available"));
                            }
                        }
                    }
                }
                Mode::Renew | Mode::Rebind => {
                    for x in &mine {
                        out.leases.push((x.addr, x.prefix_len, pref, valid));
                    }
                    if mine.is_empty() {
                        // No binding for this IA: take back hinted entries that are still free.
                        let until = now + u64::from(valid);
                        let pools = if ia.kind == IaKind::Pd {
                            &mut st.pd_pools
                        } else {
                            &mut st.addr_pools
                        };
                        for (a, _) in ia
                            .hints
                            .iter()
                            .filter(|(a, p)| !a.is_unspecified() && on_link(*a, *p))
                        {
                            if let Some((_, p)) = pools
                                .iter_mut()
                                .find(|(li, p)| *li == link && p.index(*a).is_some())
                            {
                                if p.available_to(*a, owner, now) && !used.contains(a) {
                                    if p.holder(*a).is_none() {
                                        fresh.push((ia.kind, *a));
                                    }
                                    p.take(*a, owner, until, false);
                                    out.leases.push((*a, p.plen, pref, valid));
                                }
                            }
                        }
                    }
                    // §18.3.4/§18.3.5: addresses not on the link come back with lifetimes 0.
                    for (a, p) in &off {
                        out.leases
                            .push((*a, if ia.kind == IaKind::Pd { *p } else { 128 }, 0, 0));
                    }
                    if out.leases.is_empty() && mode == Mode::Renew {
                        out.status = Some((Status::NoBinding, "no binding for this IA"));
                    }
                }
            }
            used.extend(out.leases.iter().map(|x| x.0));
            outs.push(out);
        }
        (outs, fresh)
    }

    /// RELEASE and DECLINE (§18.3.7, §18.3.8).
    #[allow(clippy::too_many_arguments)]
    async fn release(
        &self,
        duid: &Duid,
        link: usize,
        ias: &[IaReq],
        decline: bool,
        relay: Option<RelayInfo>,
        link_address: Ipv6Addr,
        now: u64,
    ) -> Option<Vec<IaOut>> {
        let l = &self.links.links[link];
        let existing = self.lock().clients.get(duid.as_bytes(), link);
        let mut outs = Vec::new();
        let mut changed = Vec::new();
        for ia in ias {
            let hit: Vec<Lease> = existing
                .iter()
                .filter(|x| {
                    x.kind == ia.kind.lease_kind()
                        && x.iaid == ia.iaid
                        && ia.hints.iter().any(|(a, _)| *a == x.addr)
                })
                .cloned()
                .collect();
            if hit.is_empty() {
                outs.push(IaOut {
                    kind: ia.kind,
                    iaid: ia.iaid,
                    leases: Vec::new(),
                    status: Some((Status::NoBinding, "no binding for this IA")),
                });
                continue;
            }
            for mut x in hit {
                x.state = if decline {
                    LeaseState::Declined
                } else {
                    LeaseState::Released
                };
                x.expires_at = if decline {
                    now + self.opts.decline_quarantine
                } else {
                    now
                };
                changed.push(x);
            }
        }
        if !changed.is_empty() {
            let update = ClientUpdate {
                duid: duid.as_bytes().to_vec(),
                link: l.name.clone(),
                link_address,
                cltt: now,
                relay,
                leases: changed.clone(),
                merge: LeaseMerge::Merge,
                now: Some(now),
            };
            if let Err(e) = self.store.commit(update).await {
                warn!(error = %e, duid = %duid, "lease store commit failed; no reply");
                Counters::inc(&self.counters.drop_store_error);
                return None;
            }
            let mut st = self.lock();
            for x in &changed {
                let pools = if x.kind == LeaseKind::Pd {
                    &mut st.pd_pools
                } else {
                    &mut st.addr_pools
                };
                for (_, p) in pools.iter_mut().filter(|(_, p)| p.index(x.addr).is_some()) {
                    if decline {
                        // Quarantined: nobody gets it until the quarantine ends.
                        p.take(x.addr, 0, x.expires_at, false);
                    } else {
                        p.free(x.addr);
                    }
                }
            }
            st.clients.retain_client(duid.as_bytes(), link, |x| {
                !changed.iter().any(|c| c.addr == x.addr && c.kind == x.kind)
            });
        }
        Some(outs)
    }

    /// Number of entries held in the pools (for tests and metrics).
    pub fn pool_usage(&self) -> (usize, usize) {
        let st = self.lock();
        (
            st.addr_pools.iter().map(|(_, p)| p.taken_len()).sum(),
            st.pd_pools.iter().map(|(_, p)| p.taken_len()).sum(),
        )
    }

    /// Number of clients in the lease cache.
    pub fn cached_clients(&self) -> usize {
        self.lock().clients.len()
    }
}

struct BusyGuard<'a> {
    engine: &'a Engine,
    key: Vec<u8>,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.engine.lock().busy.remove(&self.key);
    }
}

trait LinkFilter {
    fn is_none_or_eq(&self, link: usize) -> bool;
}
impl LinkFilter for Option<usize> {
    fn is_none_or_eq(&self, link: usize) -> bool {
        match self {
            None => true,
            Some(l) => *l == link,
        }
    }
}

trait HolderExt {
    fn is_none_or_owner(&self, owner: u64) -> bool;
}
impl HolderExt for Option<crate::pool::Holder> {
    fn is_none_or_owner(&self, owner: u64) -> bool {
        match self {
            None => true,
            Some(h) => h.owner == owner,
        }
    }
}

fn last_of(p: &Pool) -> Ipv6Addr {
    let span = if p.shift >= 128 {
        u128::MAX
    } else {
        u128::from(p.count).saturating_mul(1u128 << p.shift)
    };
    Ipv6Addr::from(p.base.saturating_add(span.saturating_sub(1)))
}

/// The IAs of a client message, with their hinted addresses/prefixes.
fn collect_ias(opts: &[DhcpOption]) -> Vec<IaReq> {
    let mut v = Vec::new();
    let mut seen = HashSet::new();
    for o in opts {
        let (kind, iaid, inner) = match o {
            DhcpOption::IaNa(ia) => (IaKind::Na, ia.iaid, &ia.options),
            DhcpOption::IaPd(ia) => (IaKind::Pd, ia.iaid, &ia.options),
            DhcpOption::IaTa(ta) => (IaKind::Ta, ta.iaid, &ta.options),
            _ => continue,
        };
        // IAIDs are unique per IA type (§21.4); a duplicate is answered once.
        if !seen.insert((kind as u8, iaid)) {
            continue;
        }
        let hints = inner
            .iter()
            .filter_map(|x| match x {
                DhcpOption::IaAddr(a) if kind != IaKind::Pd => Some((a.addr, 128)),
                DhcpOption::IaPrefix(p) if kind == IaKind::Pd => Some((p.prefix, p.prefix_len)),
                _ => None,
            })
            .collect();
        v.push(IaReq { kind, iaid, hints });
    }
    v
}

/// T1/T2 (§21.4, §18.3): the same for every IA of the reply, from the shortest preferred lifetime.
fn finish_ias(reply: &mut ClientMessage, outs: &[IaOut], l: &Link) {
    let min_pref = outs
        .iter()
        .flat_map(|o| o.leases.iter().filter(|x| x.3 > 0).map(|x| x.2))
        .min();
    let (t1, t2) = match min_pref {
        Some(p) if p == u32::MAX => (u32::MAX, u32::MAX),
        Some(p) => (
            (f64::from(p) * l.lifetimes.t1) as u32,
            (f64::from(p) * l.lifetimes.t2) as u32,
        ),
        None => (0, 0),
    };
    for o in outs {
        reply.options.push(ia_option(o, t1, t2));
    }
}

fn ia_option(o: &IaOut, t1: u32, t2: u32) -> DhcpOption {
    let mut opts = Vec::new();
    for &(a, p, pref, valid) in &o.leases {
        opts.push(match o.kind {
            IaKind::Pd => DhcpOption::IaPrefix(IaPrefix {
                preferred: pref,
                valid,
                prefix_len: p,
                prefix: a,
                options: Vec::new(),
            }),
            _ => DhcpOption::IaAddr(IaAddr {
                addr: a,
                preferred: pref,
                valid,
                options: Vec::new(),
            }),
        });
    }
    if let Some((s, msg)) = o.status {
        opts.push(DhcpOption::StatusCode(StatusCode::new(s, msg)));
    }
    // An IA with no usable lease gets T1 = T2 = 0 (the client decides).
    let (t1, t2) = if o.leases.iter().any(|x| x.3 > 0) {
        (t1, t2)
    } else {
        (0, 0)
    };
    match o.kind {
        IaKind::Na => DhcpOption::IaNa(Ia {
            iaid: o.iaid,
            t1,
            t2,
            options: opts,
        }),
        IaKind::Pd => DhcpOption::IaPd(Ia {
            iaid: o.iaid,
            t1,
            t2,
            options: opts,
        }),
        IaKind::Ta => DhcpOption::IaTa(IaTa {
            iaid: o.iaid,
            options: opts,
        }),
    }
}

/// The relay data recorded with the binding: chain without the client message, peer-address,
/// every Relay-ID, the most recent (innermost) Remote-ID, Subscriber-ID, Interface-ID and
/// client link-layer address.
fn relay_info(r: &Relayed<'_>, meta: &RecvMeta) -> RelayInfo {
    let chain = Message::Relay(r.outer.without_client_message())
        .to_vec()
        .unwrap_or_default();
    let mut info = RelayInfo {
        peer_address: *meta.src.ip(),
        chain,
        relay_ids: Vec::new(),
        remote_id: None,
        subscriber_id: None,
        interface_id: None,
        client_linklayer: None,
    };
    // Innermost first, so the relay closest to the client wins for the single-valued options.
    for level in r.chain.iter().rev() {
        for o in &level.options {
            match o {
                DhcpOption::RelayId(d)
                    if !info.relay_ids.iter().any(|x| x.as_slice() == d.as_bytes()) =>
                {
                    info.relay_ids.push(d.as_bytes().to_vec());
                }
                DhcpOption::RemoteId(rid) if info.remote_id.is_none() => {
                    info.remote_id = Some(RemoteId {
                        enterprise: rid.enterprise,
                        id: rid.id.clone(),
                    })
                }
                DhcpOption::SubscriberId(s) if info.subscriber_id.is_none() => {
                    info.subscriber_id = Some(s.clone())
                }
                DhcpOption::InterfaceId(s) if info.interface_id.is_none() => {
                    info.interface_id = Some(s.clone())
                }
                DhcpOption::ClientLinkLayerAddr(ll) if info.client_linklayer.is_none() => {
                    info.client_linklayer = Some((ll.hw_type, ll.addr.clone()))
                }
                _ => {}
            }
        }
    }
    info
}

/// The ERO (RFC 4994) of one relay level, as a list of option codes.
fn ero(level: &RelayMessage) -> Vec<u16> {
    level
        .options
        .iter()
        .find_map(|o| match o {
            DhcpOption::Unknown { code: c, data } if *c == code::ERO => Some(
                data.chunks_exact(2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Builds RELAY-REPL levels in reverse order (§19.3): hop-count, link-address and peer-address
/// copied, Interface-ID and RELAY_PORT echoed, ERO-requested options echoed.
fn wrap_reply(chain: &[&RelayMessage], reply: Message) -> Message {
    let mut cur = reply;
    for level in chain.iter().rev() {
        let ero = ero(level);
        let mut opts = Vec::new();
        for o in &level.options {
            let c = o.code();
            let echo = c == code::INTERFACE_ID
                || c == code::RELAY_PORT
                || (ero.contains(&c) && c != code::RELAY_MSG && c != code::ERO);
            if echo {
                opts.push(o.clone());
            }
        }
        opts.push(DhcpOption::RelayMsg(Box::new(cur)));
        cur = Message::Relay(RelayMessage {
            msg_type: MessageType::RELAY_REPL,
            hop_count: level.hop_count,
            link_address: level.link_address,
            peer_address: level.peer_address,
            options: opts,
        });
    }
    cur
}
