//! Test harness: an in-process responder over a real SQLite store on
//! loopback, and a raw requestor that speaks bytes through our codec.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use lq6_config::LeasequeryConfig;
use lq6_leasequery::{LinkMap, Responder};
use lq6_proto::framing::LqFrameCodec;
use lq6_proto::*;
use lq6_store::sqlite::SqliteStore;
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, LeaseStore, RelayInfo};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

pub fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub fn server_duid() -> Duid {
    Duid::en(99999, b"lq6-test")
}
pub fn requestor_duid() -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, 1])
}
pub fn relay_id(n: u8) -> Duid {
    Duid::en(2495, &[0x0a, 0x0b, 0x0c, n])
}
pub fn client_duid(i: u32) -> Duid {
    let b = i.to_be_bytes();
    Duid::ll(1, &[2, 0, b[0], b[1], b[2], b[3]])
}

/// Two links: "lan1" = 2001:db8:1::/64 with PD pool 2001:db8:100::/40,
/// "lan2" = 2001:db8:2::/64 with PD pool 2001:db8:200::/40.
pub struct Links;
impl LinkMap for Links {
    fn link_for_address(&self, addr: Ipv6Addr) -> Option<String> {
        let s = addr.segments();
        match (s[0], s[1], s[2]) {
            (0x2001, 0xdb8, 1) | (0x2001, 0xdb8, 0x100..=0x1ff) => Some("lan1".into()),
            (0x2001, 0xdb8, 2) | (0x2001, 0xdb8, 0x200..=0x2ff) => Some("lan2".into()),
            _ => None,
        }
    }
    fn link_address(&self, link: &str) -> Option<Ipv6Addr> {
        match link {
            "lan1" => Some(a("2001:db8:1::1")),
            "lan2" => Some(a("2001:db8:2::1")),
            _ => None,
        }
    }
}

/// The RELAY-FORW chain stored for LQ_RELAY_DATA: Interface-ID, Relay-ID, Remote-ID.
pub fn chain(link: Ipv6Addr, relay: &Duid, remote: &[u8]) -> Vec<u8> {
    Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: link,
        peer_address: a("fe80::1"),
        options: vec![
            DhcpOption::InterfaceId(b"port7".to_vec()),
            DhcpOption::RelayId(relay.clone()),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 9,
                id: remote.to_vec(),
            }),
        ],
    })
    .to_vec()
    .unwrap()
}

/// A binding for client `i` on `link` holding one /56 (and an address when `with_addr`).
pub fn update(i: u32, link: &str, relay: u8, now: u64) -> ClientUpdate {
    let (lan, pd_base) = if link == "lan1" {
        (1u16, 0x100u16)
    } else {
        (2, 0x200)
    };
    let mut u = ClientUpdate::new(client_duid(i).as_bytes().to_vec(), link, now - 100);
    u.link_address = Ipv6Addr::new(0x2001, 0xdb8, lan, 0, 0, 0, 0, 1);
    let rid = relay_id(relay);
    u.relay = Some(RelayInfo {
        peer_address: a("2001:db8:ffff::2"),
        chain: chain(u.link_address, &rid, &[relay, 1]),
        relay_ids: vec![rid.as_bytes().to_vec()],
        remote_id: Some(lq6_store::RemoteId {
            enterprise: 9,
            id: vec![relay, 1],
        }),
        subscriber_id: None,
        interface_id: Some(b"port7".to_vec()),
        client_linklayer: None,
    });
    let prefix = Ipv6Addr::new(
        0x2001,
        0xdb8,
        pd_base + (i >> 8) as u16,
        ((i & 0xff) << 8) as u16,
        0,
        0,
        0,
        0,
    );
    u.leases.push(Lease {
        kind: LeaseKind::Pd,
        iaid: 2,
        addr: prefix,
        prefix_len: 56,
        preferred: 1800,
        valid: 3600,
        expires_at: now + 3500,
        state: LeaseState::Active,
    });
    u.leases.push(Lease {
        kind: LeaseKind::Na,
        iaid: 1,
        addr: Ipv6Addr::new(0x2001, 0xdb8, lan, 0, 0, 0, (i >> 16) as u16 + 1, i as u16),
        prefix_len: 128,
        preferred: 1800,
        valid: 3600,
        expires_at: now + 3500,
        state: LeaseState::Active,
    });
    u.now = Some(now - 100);
    u
}

pub struct Server {
    pub addr: SocketAddr,
    pub responder: Arc<Responder>,
    pub store: Arc<dyn LeaseStore>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub dir: tempfile::TempDir,
}

/// BULK_LQ_DATA_TIMEOUT in [`test_config`]: long, so that a test that is slow
/// between two messages on a loaded machine never loses its connection. Tests
/// about the timeout set their own, short one.
pub const TEST_DATA_TIMEOUT_SECS: u64 = 30;

pub fn test_config() -> LeasequeryConfig {
    let mut c = LeasequeryConfig::default();
    c.tcp.data_timeout_secs = TEST_DATA_TIMEOUT_SECS;
    c.tcp.listen = vec![];
    c
}

pub async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn LeaseStore> {
    Arc::new(SqliteStore::open(dir.path().join("leases.db")).expect("open store"))
}

/// Fills the store: `n` clients per (link, relay) combination given.
pub async fn fill(store: &Arc<dyn LeaseStore>, specs: &[(&str, u8, u32)]) {
    let now = lq6_store::unix_now();
    let mut i = 0u32;
    for (link, relay, n) in specs {
        let mut batch = Vec::new();
        for _ in 0..*n {
            batch.push(update(i, link, *relay, now));
            i += 1;
            if batch.len() == 10_000 {
                for r in store
                    .commit_batch(std::mem::take(&mut batch))
                    .await
                    .unwrap()
                {
                    r.unwrap();
                }
            }
        }
        for r in store.commit_batch(batch).await.unwrap() {
            r.unwrap();
        }
    }
}

/// Octets of the Interface-ID in the relay chain of [`fill_bulky`]'s bindings.
pub const BULKY_INTERFACE_ID: usize = 2000;

/// Fills the store with `n` clients behind `relay` on lan1 whose stored relay chain
/// carries a [`BULKY_INTERFACE_ID`]-octet Interface-ID. Asked for with
/// [`bulky_query`] (LQ_RELAY_DATA), each binding is over 2 KB on the wire, so the
/// answer for a few thousand of them is far larger than anything loopback socket
/// buffers can hold (Linux caps the autotuned send buffer at tcp_wmem[2], 4 MiB by
/// default): a requestor that stops reading keeps that query in flight however fast
/// the server is, instead of only until the kernel has swallowed the whole answer.
/// Client numbers start at 500,000, clear of [`fill`]'s.
pub async fn fill_bulky(store: &Arc<dyn LeaseStore>, relay: u8, n: u32) {
    let now = lq6_store::unix_now();
    let rid = relay_id(relay);
    let chain = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: a("2001:db8:1::1"),
        peer_address: a("fe80::1"),
        options: vec![
            DhcpOption::InterfaceId(vec![7; BULKY_INTERFACE_ID]),
            DhcpOption::RelayId(rid.clone()),
        ],
    })
    .to_vec()
    .unwrap();
    let mut batch = Vec::new();
    for i in 500_000..500_000 + n {
        let mut u = update(i, "lan1", relay, now);
        if let Some(r) = u.relay.as_mut() {
            r.chain = chain.clone();
        }
        batch.push(u);
        if batch.len() == 2_000 {
            for r in store
                .commit_batch(std::mem::take(&mut batch))
                .await
                .unwrap()
            {
                r.unwrap();
            }
        }
    }
    for r in store.commit_batch(batch).await.unwrap() {
        r.unwrap();
    }
}

/// QUERY_BY_RELAY_ID for `relay` asking for LQ_RELAY_DATA (see [`fill_bulky`]).
pub fn bulky_query(xid: u32, relay: u8) -> Message {
    query(
        xid,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![
            DhcpOption::RelayId(relay_id(relay)),
            DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
        ],
    )
}

pub async fn start_with(
    cfg: LeasequeryConfig,
    dir: tempfile::TempDir,
    store: Arc<dyn LeaseStore>,
) -> Server {
    let responder = Responder::new(cfg, Arc::new(Links), store.clone(), server_duid());
    let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(responder.clone().run_tcp(vec![l], shutdown.clone()));
    Server {
        addr,
        responder,
        store,
        shutdown,
        task,
        dir,
    }
}

pub async fn start(cfg: LeasequeryConfig, specs: &[(&str, u8, u32)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    fill(&store, specs).await;
    start_with(cfg, dir, store).await
}

pub fn query(xid: u32, qt: QueryType, link: Ipv6Addr, qopts: Vec<DhcpOption>) -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY,
        xid,
        options: vec![
            DhcpOption::ClientId(requestor_duid()),
            DhcpOption::LqQuery(LqQuery {
                query_type: qt,
                link_address: link,
                options: qopts,
            }),
        ],
    })
}

pub struct Client {
    pub io: Framed<TcpStream, LqFrameCodec>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        Client {
            io: Framed::new(s, LqFrameCodec::default()),
        }
    }
    pub async fn send(&mut self, m: &Message) {
        self.io.send(m).await.unwrap();
    }
    /// The next message, or None when the server closed; panics after 10 s.
    pub async fn recv(&mut self) -> Option<ClientMessage> {
        match tokio::time::timeout(Duration::from_secs(10), self.io.next())
            .await
            .expect("server answered in time")
        {
            None => None,
            Some(Err(_)) => None,
            Some(Ok(f)) => match Message::decode(&f).expect("server sent a valid message") {
                Message::Client(c) => Some(c),
                m => panic!("unexpected {m:?}"),
            },
        }
    }
    /// Reads one complete answer for a single outstanding query.
    pub async fn answer(&mut self) -> Answer {
        let reply = self.recv().await.expect("a REPLY");
        assert_eq!(
            reply.msg_type,
            MessageType::LEASEQUERY_REPLY,
            "first message must be the REPLY"
        );
        let mut ans = Answer {
            reply: reply.clone(),
            data: vec![],
            done: None,
        };
        if client_data(&reply).is_none() {
            return ans;
        }
        loop {
            let m = self.recv().await.expect("DATA or DONE");
            assert_eq!(m.xid, reply.xid);
            match m.msg_type {
                MessageType::LEASEQUERY_DATA => ans.data.push(m),
                MessageType::LEASEQUERY_DONE => {
                    ans.done = Some(m);
                    return ans;
                }
                t => panic!("unexpected {t}"),
            }
        }
    }
}

pub struct Answer {
    pub reply: ClientMessage,
    pub data: Vec<ClientMessage>,
    pub done: Option<ClientMessage>,
}

impl Answer {
    pub fn status(&self) -> Status {
        status_of(&self.reply)
    }
    /// Every CLIENT_DATA in order: the REPLY's, then each DATA's.
    pub fn client_data(&self) -> Vec<Vec<DhcpOption>> {
        std::iter::once(&self.reply)
            .chain(self.data.iter())
            .filter_map(client_data)
            .collect()
    }
}

pub fn status_of(m: &ClientMessage) -> Status {
    m.options
        .as_slice()
        .status()
        .map(|s| s.status)
        .unwrap_or(Status::Success)
}

pub fn client_data(m: &ClientMessage) -> Option<Vec<DhcpOption>> {
    m.options.iter().find_map(|o| match o {
        DhcpOption::ClientData(v) => Some(v.clone()),
        _ => None,
    })
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The most reply octets a connection may have queued: the write channel
/// plus one chunk per query slot and one in flight at the writer.
pub fn buffer_bound(cfg: &lq6_config::LeasequeryConfig) -> usize {
    use lq6_leasequery::tcp::CHUNK;
    // A chunk is at most CHUNK plus one frame; the channel holds
    // write_buffer_bytes / CHUNK of them, the writer one, each query slot one.
    let chunks =
        (cfg.tcp.write_buffer_bytes / CHUNK).max(1) + 1 + cfg.tcp.max_queries_per_connection;
    chunks * (CHUNK + 2048)
}

pub async fn legit_is_served(s: &Server) {
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        0xbeef,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RelayId(relay_id(2))],
    ))
    .await;
    let ans = c.answer().await;
    assert_eq!(ans.status(), Status::Success);
    assert_eq!(
        ans.client_data().len(),
        3,
        "the legitimate requestor got its bindings"
    );
}

/// Waits until the server closes `s`; returns how long that took.
pub async fn closed_after(mut s: TcpStream) -> Duration {
    let t = Instant::now();
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection not closed within 10 s"),
        }
    }
}
