//! Bulk Leasequery benchmark (`cargo bench -p lq6-leasequery --bench bulk`).
//!
//! Fills a SQLite store with N (default 1,000,000) PD bindings carrying relay
//! data, serves them on loopback, and prints a table: bindings/s end to end
//! for QUERY_BY_RELAY_ID / LINK_ADDRESS / REMOTE_ID, first-binding latency,
//! memory, a stalled requestor and 10 concurrent requestors. (UDP
//! QUERY_BY_ADDRESS goes through the whole server: lq6-server's
//! `udp_leasequery` bench.) The baseline row streams the same octets over the same
//! loopback with no store and no encoding, in the same run.
//! Env: LQ6_BENCH_N (bindings), LQ6_BENCH_PAUSE (stall seconds, default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use lq6_leasequery::Responder;
use lq6_proto::*;
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, RelayInfo};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GROUPS: u32 = 10;

/// The i-th /56 of 2001:db8::/32 (room for 16M delegations).
fn pd_prefix(i: u32) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8u128 << 96) | ((i as u128 + 1) << 72))
}

/// One link, "lan1", owning all of 2001:db8::/32.
struct BenchLinks;
impl lq6_leasequery::LinkMap for BenchLinks {
    fn link_for_address(&self, addr: Ipv6Addr) -> Option<String> {
        (addr.segments()[..2] == [0x2001, 0xdb8]).then(|| "lan1".to_string())
    }
    fn link_address(&self, _: &str) -> Option<Ipv6Addr> {
        Some(a("2001:db8:1::1"))
    }
}

fn binding(i: u32, now: u64) -> ClientUpdate {
    let mut u = ClientUpdate::new(client_duid(i).as_bytes().to_vec(), "lan1", now - 100);
    u.link_address = a("2001:db8:1::1");
    let big = relay_id(1);
    let group = relay_id(100 + (i % GROUPS) as u8);
    // Two relays in the chain: every binding is under relay 1 and one of ten group relays.
    let chain = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 1,
        link_address: Ipv6Addr::UNSPECIFIED,
        peer_address: a("2001:db8:1::1"),
        options: vec![
            DhcpOption::RelayId(group.clone()),
            DhcpOption::RelayMsg(Box::new(Message::Relay(RelayMessage {
                msg_type: MessageType::RELAY_FORW,
                hop_count: 0,
                link_address: a("2001:db8:1::1"),
                peer_address: a("fe80::1"),
                options: vec![
                    DhcpOption::InterfaceId(b"port7".to_vec()),
                    DhcpOption::RelayId(big.clone()),
                    DhcpOption::RemoteId(RemoteId {
                        enterprise: 9,
                        id: vec![1, 1],
                    }),
                ],
            }))),
        ],
    })
    .to_vec()
    .unwrap();
    u.relay = Some(RelayInfo {
        peer_address: a("2001:db8:ffff::2"),
        chain,
        relay_ids: vec![group.as_bytes().to_vec(), big.as_bytes().to_vec()],
        remote_id: Some(lq6_store::RemoteId {
            enterprise: 9,
            id: vec![1, 1],
        }),
        subscriber_id: None,
        interface_id: Some(b"port7".to_vec()),
        client_linklayer: None,
    });
    u.leases.push(Lease {
        kind: LeaseKind::Pd,
        iaid: 2,
        addr: pd_prefix(i),
        prefix_len: 56,
        preferred: 1800,
        valid: 3600,
        expires_at: now + 3500,
        state: LeaseState::Active,
    });
    u.now = Some(now - 100);
    u
}

/// Counts frames by type without decoding options: the requestor's floor.
async fn drain(s: &mut TcpStream, want_done: usize) -> (u64, Duration, u64) {
    let t = Instant::now();
    let mut first = None;
    let mut buf = vec![0u8; 1 << 18];
    let (mut have, mut data, mut done, mut octets) = (0usize, 0u64, 0usize, 0u64);
    loop {
        let n = s.read(&mut buf[have..]).await.expect("read");
        assert!(n > 0, "server closed early");
        have += n;
        octets += n as u64;
        let mut off = 0;
        while have - off >= 2 {
            let len = u16::from_be_bytes([buf[off], buf[off + 1]]) as usize;
            if have - off < 2 + len {
                break;
            }
            match buf[off + 2] {
                15 | 17 => {
                    first.get_or_insert_with(|| t.elapsed());
                    data += 1;
                }
                16 => done += 1,
                _ => {}
            }
            off += 2 + len;
        }
        buf.copy_within(off..have, 0);
        have -= off;
        if done >= want_done {
            return (data, first.unwrap_or_default(), octets);
        }
    }
}

async fn bulk(
    addr: SocketAddr,
    qt: QueryType,
    opts: Vec<DhcpOption>,
    link: Ipv6Addr,
) -> (u64, Duration, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut q = Vec::new();
    write_framed(&mut q, |b| query(1, qt, link, opts).encode(b)).unwrap();
    let t = Instant::now();
    s.write_all(&q).await.unwrap();
    let (n, first, _) = drain(&mut s, 1).await;
    (n, first, t.elapsed())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u32 = std::env::var("LQ6_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let pause: u64 = std::env::var("LQ6_BENCH_PAUSE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let now = lq6_store::unix_now();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        batch.push(binding(i, now));
        if batch.len() == 10_000 || i + 1 == n {
            for r in store
                .commit_batch(std::mem::take(&mut batch))
                .await
                .unwrap()
            {
                r.unwrap();
            }
        }
    }
    let fill = t.elapsed();
    let db_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut cfg = test_config();
    cfg.tcp.data_timeout_secs = 300;
    cfg.tcp.max_connections = 16;
    cfg.tcp.max_connections_per_requestor = 16;
    let s = {
        let responder = Responder::new(cfg, Arc::new(BenchLinks), store.clone(), server_duid());
        let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(responder.clone().run_tcp(vec![l], shutdown.clone()));
        Server {
            addr,
            responder,
            store: store.clone(),
            shutdown,
            task,
            dir,
        }
    };
    let rss_loaded = rss_kib();

    println!(
        "store: {n} bindings filled in {:.1} s ({:.0}/s), {:.1} MiB on disk, process RSS {:.1} MiB",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        db_bytes as f64 / 1048576.0,
        mib(rss_loaded)
    );
    println!();
    println!("| measurement | bindings | seconds | bindings/s | first binding | RSS growth | x baseline |");
    println!("|---|---:|---:|---:|---:|---:|---:|");

    // Baseline: the same octets, pre-encoded, over the same loopback.
    let (frame, per) = {
        let mut one = Vec::new();
        let mut c = Client::connect(s.addr).await;
        c.send(&query(
            9,
            QueryType::ByRelayId,
            Ipv6Addr::UNSPECIFIED,
            vec![
                DhcpOption::RelayId(relay_id(100)),
                DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
            ],
        ))
        .await;
        let ans = c.answer().await;
        let m = Message::Client(ans.data[0].clone());
        write_framed(&mut one, |b| m.encode(b)).unwrap();
        let per = one.len();
        (one, per)
    };
    let base = {
        let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let blob: Vec<u8> = frame.iter().copied().cycle().take(per * 4096).collect();
        let total = n as usize;
        tokio::spawn(async move {
            let (mut w, _) = l.accept().await.unwrap();
            let mut left = total;
            while left > 0 {
                let k = left.min(4096);
                w.write_all(&blob[..k * per]).await.unwrap();
                left -= k;
            }
            let mut d = Vec::new();
            write_framed(&mut d, |b| {
                Message::Client(ClientMessage::new(MessageType::LEASEQUERY_DONE, 1)).encode(b)
            })
            .unwrap();
            w.write_all(&d).await.unwrap();
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        let (got, first, _) = drain(&mut c, 1).await;
        let el = t.elapsed();
        println!("| baseline: pre-encoded frames over loopback, {per} octets each | {got} | {:.2} | {:.0} | {:.2} ms | | 1.00 |", el.as_secs_f64(), got as f64 / el.as_secs_f64(), first.as_secs_f64() * 1e3);
        got as f64 / el.as_secs_f64()
    };

    {
        // The store alone: page through relay 1's bindings, no encoding, no socket.
        let q = lq6_store::Query::relay_id(relay_id(1).as_bytes().to_vec(), None);
        let t = Instant::now();
        let (mut after, mut got) = (None, 0u64);
        loop {
            let p = s.store.page(&q, after, 2048).await.unwrap();
            got += p.bindings.len() as u64;
            match p.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let el = t.elapsed();
        println!("| store only: page() through QUERY_BY_RELAY_ID, 2048 per page | {got} | {:.2} | {:.0} | | | {:.2} |", el.as_secs_f64(), got as f64 / el.as_secs_f64(), got as f64 / el.as_secs_f64() / base);
    }

    for (name, qt, opts, link) in [
        (
            "QUERY_BY_RELAY_ID",
            QueryType::ByRelayId,
            vec![
                DhcpOption::RelayId(relay_id(1)),
                DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
            ],
            Ipv6Addr::UNSPECIFIED,
        ),
        (
            "QUERY_BY_LINK_ADDRESS",
            QueryType::ByLinkAddress,
            vec![DhcpOption::Oro(vec![code::LQ_RELAY_DATA])],
            a("2001:db8:1::1"),
        ),
        (
            "QUERY_BY_REMOTE_ID",
            QueryType::ByRemoteId,
            vec![
                DhcpOption::RemoteId(RemoteId {
                    enterprise: 9,
                    id: vec![1, 1],
                }),
                DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
            ],
            Ipv6Addr::UNSPECIFIED,
        ),
    ] {
        let r0 = rss_kib();
        let (got, first, el) = bulk(s.addr, qt, opts, link).await;
        let rate = got as f64 / el.as_secs_f64();
        println!("| {name} with LQ_RELAY_DATA | {got} | {:.2} | {rate:.0} | {:.2} ms | {:.1} MiB | {:.2} |", el.as_secs_f64(), first.as_secs_f64() * 1e3, mib(rss_kib().saturating_sub(r0)), rate / base);
    }

    // A requestor that stops reading for `pause` seconds after the REPLY.
    {
        let r0 = rss_kib();
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let mut q = Vec::new();
        write_framed(&mut q, |b| {
            query(
                1,
                QueryType::ByRelayId,
                Ipv6Addr::UNSPECIFIED,
                vec![DhcpOption::RelayId(relay_id(1))],
            )
            .encode(b)
        })
        .unwrap();
        c.write_all(&q).await.unwrap();
        // Read exactly the REPLY frame, so that `drain` starts on a frame boundary.
        let mut len = [0u8; 2];
        c.read_exact(&mut len).await.unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        c.read_exact(&mut reply).await.unwrap();
        let mut peak = 0;
        for _ in 0..pause * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss_kib().saturating_sub(r0));
        }
        let t = Instant::now();
        let (got, _, _) = drain(&mut c, 1).await;
        let el = t.elapsed();
        println!(
            "| QUERY_BY_RELAY_ID, requestor paused {pause} s after the REPLY (buffered high water {} KiB) | {} | {:.2} | {:.0} | | {:.1} MiB peak | |",
            s.responder.metrics().buffered_bytes_high_water.load(Relaxed) / 1024,
            got + 1,
            el.as_secs_f64(),
            got as f64 / el.as_secs_f64(),
            mib(peak)
        );
    }

    // One group relay alone: the same query shape as each of the 10 below. A
    // group's bindings are spread over the whole store (every 10th binding),
    // so its scan reads more store pages per binding than relay 1's.
    let group_alone = {
        let (got, first, el) = bulk(
            s.addr,
            QueryType::ByRelayId,
            vec![
                DhcpOption::RelayId(relay_id(100)),
                DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
            ],
            Ipv6Addr::UNSPECIFIED,
        )
        .await;
        let rate = got as f64 / el.as_secs_f64();
        println!(
            "| one requestor, QUERY_BY_RELAY_ID for one group relay (every 10th binding) | {got} | {:.2} | {rate:.0} | {:.2} ms | | {:.2} |",
            el.as_secs_f64(),
            first.as_secs_f64() * 1e3,
            rate / base
        );
        rate
    };

    // 10 concurrent requestors, 100,000 each (one group relay each).
    {
        let r0 = rss_kib();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for g in 0..GROUPS {
            let addr = s.addr;
            tasks.push(tokio::spawn(async move {
                let (got, first, el) = bulk(
                    addr,
                    QueryType::ByRelayId,
                    vec![
                        DhcpOption::RelayId(relay_id(100 + g as u8)),
                        DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
                    ],
                    Ipv6Addr::UNSPECIFIED,
                )
                .await;
                (got, first, el)
            }));
        }
        let mut res = Vec::new();
        let mut peak = 0;
        for h in tasks {
            res.push(h.await.unwrap());
            peak = peak.max(rss_kib().saturating_sub(r0));
        }
        let el = t.elapsed();
        let total: u64 = res.iter().map(|r| r.0).sum();
        let slow = res.iter().map(|r| r.2).max().unwrap();
        let fast = res.iter().map(|r| r.2).min().unwrap();
        let first = res.iter().map(|r| r.1).max().unwrap();
        println!(
            "| 10 concurrent QUERY_BY_RELAY_ID, {} each (slowest/fastest {:.2}) | {total} | {:.2} | {:.0} | {:.2} ms worst | {:.1} MiB | {:.2} |",
            total / GROUPS as u64,
            slow.as_secs_f64() / fast.as_secs_f64(),
            el.as_secs_f64(),
            total as f64 / el.as_secs_f64(),
            first.as_secs_f64() * 1e3,
            mib(peak),
            total as f64 / el.as_secs_f64() / base
        );
        println!(
            "| 10 concurrent: total rate / one requestor on one group relay | | | | | | {:.2} |",
            total as f64 / el.as_secs_f64() / group_alone
        );
    }

    println!();
    println!("process RSS at the end: {:.1} MiB", mib(rss_kib()));
}
