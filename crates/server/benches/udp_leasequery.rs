//! UDP leasequery through the real server (`cargo bench -p lq6-server --bench udp_leasequery`).
//!
//! Fills a SQLite store with N (default 1,000,000) delegated /56 prefixes carrying relay data,
//! starts `lq6_server::serve_with` on loopback with a PD pool holding all of them, and sends
//! QUERY_BY_ADDRESS for an address inside a random delegated prefix from a closed-loop requestor
//! that keeps 16 queries outstanding (RFC 5007 §4.1.2.1). The baseline, in the same run, is a UDP
//! echo on its own thread that answers each query with a reply of the same size: the loopback
//! floor of this requestor on this machine.
//! Env: LQ6_BENCH_N (bindings), LQ6_BENCH_QUERIES (per row, default 200,000),
//! LQ6_BENCH_WORKERS (`server.udp_workers`, default 1), LQ6_BENCH_MMAP_MIB (`store.mmap_mib`,
//! default 0), LQ6_BENCH_ADDR_INDEX (`store.address_index`, default 1), LQ6_BENCH_DB (keep the filled store at this path and reuse it on the next run).

use lq6_proto::{
    ClientMessage, DhcpOption, Duid, IaAddr, LqQuery, Message, MessageType, QueryType,
    RelayMessage, RemoteId,
};
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, LeaseStore, RelayInfo};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const OUTSTANDING: u32 = 16;

/// The i-th /56 of 2001:db8::/36.
fn pd_prefix(i: u32) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8u128 << 96) | ((i as u128 + 1) << 72))
}

fn relay_id() -> Duid {
    Duid::en(2495, &[0x0a, 0x0b, 0x0c, 1])
}

fn client_duid(i: u32) -> Vec<u8> {
    let b = i.to_be_bytes();
    Duid::ll(1, &[2, 0, b[0], b[1], b[2], b[3]])
        .as_bytes()
        .to_vec()
}

/// A PD binding on "lan1" relayed with Interface-ID, Relay-ID and Remote-ID.
fn binding(i: u32, now: u64, chain: &[u8]) -> ClientUpdate {
    let mut u = ClientUpdate::new(client_duid(i), "lan1", now - 100);
    u.link_address = "2001:db8:1::1".parse().expect("literal");
    u.relay = Some(RelayInfo {
        peer_address: "fe80::1".parse().expect("literal"),
        chain: chain.to_vec(),
        relay_ids: vec![relay_id().as_bytes().to_vec()],
        remote_id: Some(lq6_store::RemoteId {
            enterprise: 9,
            id: (i % 5000).to_be_bytes().to_vec(),
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

fn relay_chain() -> Vec<u8> {
    Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: "2001:db8:1::1".parse().expect("literal"),
        peer_address: "fe80::1".parse().expect("literal"),
        options: vec![
            DhcpOption::InterfaceId(b"port7".to_vec()),
            DhcpOption::RelayId(relay_id()),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 9,
                id: vec![1, 1],
            }),
        ],
    })
    .to_vec()
    .expect("encodes")
}

fn query(xid: u32, n: u32) -> Vec<u8> {
    // A spread of prefixes: consecutive queries touch unrelated B-tree pages.
    let i = xid.wrapping_mul(2_654_435_761) % n;
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid & 0x00ff_ffff);
    m.options
        .push(DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0, 1])));
    m.options.push(DhcpOption::LqQuery(LqQuery {
        query_type: QueryType::ByAddress,
        link_address: Ipv6Addr::UNSPECIFIED,
        options: vec![DhcpOption::IaAddr(IaAddr {
            addr: Ipv6Addr::from(u128::from(pd_prefix(i)) + 0x1234),
            preferred: 0,
            valid: 0,
            options: vec![],
        })],
    }));
    Message::Client(m).to_vec().expect("encodes")
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

struct Run {
    answered: usize,
    with_data: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends `total` queries to `to`, keeping `OUTSTANDING` in flight, on its own thread and
/// current-thread runtime (so the requestor never shares a scheduler with the server).
fn requestor(to: SocketAddr, total: u32, n: u32) -> Run {
    std::thread::Builder::new()
        .name("requestor".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let sock = UdpSocket::bind("[::1]:0").await.expect("bind");
                sock.connect(to).await.expect("connect");
                let queries: Vec<Vec<u8>> = (0..total).map(|x| query(x, n)).collect();
                let mut sent_at: Vec<Option<Instant>> = vec![None; total as usize];
                let mut lat = Vec::with_capacity(total as usize);
                let mut buf = vec![0u8; 1500];
                let (mut next, mut with_data) = (0u32, 0usize);
                let t = Instant::now();
                while next < OUTSTANDING.min(total) {
                    sent_at[next as usize] = Some(Instant::now());
                    sock.send(&queries[next as usize]).await.expect("send");
                    next += 1;
                }
                while lat.len() < total as usize {
                    let Ok(Ok(len)) =
                        tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await
                    else {
                        break;
                    };
                    let xid = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]);
                    let Some(t0) = sent_at.get_mut(xid as usize).and_then(|s| s.take()) else {
                        continue;
                    };
                    lat.push(t0.elapsed());
                    // CLIENT_DATA (45) present: the query found its binding.
                    if buf[0] == MessageType::LEASEQUERY_REPLY.0
                        && buf[..len].windows(2).any(|w| w == [0, 45])
                    {
                        with_data += 1;
                    }
                    if next < total {
                        sent_at[next as usize] = Some(Instant::now());
                        sock.send(&queries[next as usize]).await.expect("send");
                        next += 1;
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                lat.sort();
                let p = |q: f64| {
                    lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                        .copied()
                        .unwrap_or_default()
                };
                Run {
                    answered: lat.len(),
                    with_data,
                    secs,
                    p50: p(0.5),
                    p99: p(0.99),
                }
            })
        })
        .expect("spawn")
        .join()
        .expect("requestor thread")
}

/// Answers each datagram with `reply`, its transaction-id replaced by the query's.
fn echo(reply: Vec<u8>) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("[::1]:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            let mut out = reply;
            while let Ok((len, src)) = sock.recv_from(&mut buf) {
                if len >= 4 {
                    out[1..4].copy_from_slice(&buf[1..4]);
                }
                let _ = sock.send_to(&out, src);
            }
        })
        .expect("spawn");
    addr
}

/// CPU time (user + system) of this process's threads named `name`, in seconds.
fn thread_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .filter_map(|t| {
            let p = t.ok()?.path();
            let comm = std::fs::read_to_string(p.join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let stat = std::fs::read_to_string(p.join("stat")).ok()?;
            // Fields after the parenthesised command: utime and stime are the 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / 100.0
}

fn row(name: &str, r: &Run, with_data: &str, cpu: &str, base: f64) {
    let rate = r.answered as f64 / r.secs;
    println!(
        "| {name} | {} | {with_data} | {:.0} | {:.3} | {:.3} | {cpu} | {:.2} |",
        r.answered,
        rate,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        rate / base
    );
}

fn env_u32(k: &str, d: u32) -> u32 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_u32("LQ6_BENCH_N", 1_000_000);
    let total = env_u32("LQ6_BENCH_QUERIES", 200_000).min(1 << 24);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = std::env::var_os("LQ6_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("leases.db"));
    let t = Instant::now();
    if !db.exists() {
        let store = lq6_store::sqlite::SqliteStore::open(&db).expect("open");
        let now = lq6_store::unix_now();
        let chain = relay_chain();
        let mut i = 0;
        while i < n {
            let batch: Vec<_> = (i..n.min(i + 10_000))
                .map(|k| binding(k, now, &chain))
                .collect();
            i += batch.len() as u32;
            for r in store.commit_batch(batch).await.expect("batch") {
                r.expect("commit");
            }
        }
    }
    let fill = t.elapsed().as_secs_f64();

    let port = std::net::UdpSocket::bind("[::1]:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let workers = env_u32("LQ6_BENCH_WORKERS", 1);
    let mmap_mib = env_u32("LQ6_BENCH_MMAP_MIB", 0);
    let addr_index = env_u32("LQ6_BENCH_ADDR_INDEX", 1) != 0;
    let toml = format!(
        r#"
[server]
duid = "ll:1:02:00:00:00:00:01"
listen = ["[::1]:{port}"]
udp_workers = {workers}
[store]
path = "{}"
mmap_mib = {mmap_mib}
address_index = {addr_index}
[[links]]
name = "lan1"
prefixes = ["2001:db8:1::/64"]
[[links.pd_pools]]
prefix = "2001:db8::/36"
delegated_len = 56
[leasequery.tcp]
enabled = false
"#,
        db.display()
    );
    let cfg = lq6_config::Config::from_toml_str(&toml, "bench.toml").expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let t = Instant::now();
    let server = tokio::spawn(lq6_server::serve::serve_with(
        cfg,
        false,
        shutdown.clone(),
        |s| {
            let _ = up_tx.send(s);
        },
    ));
    let started = up_rx.await.expect("server started");
    let load = t.elapsed().as_secs_f64();
    let to: SocketAddr = format!("[::1]:{port}").parse().expect("addr");

    // One real answer: its size is the echo's reply size.
    let sample = {
        let s = UdpSocket::bind("[::1]:0").await.expect("bind");
        s.send_to(&query(7, n), to).await.expect("send");
        let mut b = vec![0u8; 1500];
        let len = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut b))
            .await
            .expect("server answers")
            .expect("recv");
        b.truncate(len);
        b
    };
    let rss = rss_mib();
    println!(
        "store: {n} bindings filled in {fill:.1} s; server loaded them in {load:.1} s; \
         process RSS {rss:.0} MiB; reply {} octets",
        sample.len()
    );
    println!();
    println!(
        "| UDP QUERY_BY_ADDRESS, {OUTSTANDING} outstanding | answered | with CLIENT_DATA | q/s | p50 ms | p99 ms | server CPU per query | x echo |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let e = requestor(echo(sample), total, n);
    let base = e.answered as f64 / e.secs;
    row("baseline: echo of a same-size reply", &e, "", "", base);
    let cpu0 = thread_cpu("lq6-dhcp-0");
    let r = requestor(to, total, n);
    let cpu = (thread_cpu("lq6-dhcp-0") - cpu0) / r.answered.max(1) as f64;
    let cpu = format!("{:.1} µs (thread lq6-dhcp-0)", cpu * 1e6);
    row(
        "lq6 serve, SQLite store",
        &r,
        &r.with_data.to_string(),
        &cpu,
        base,
    );
    let c = started.counters.snapshot();
    let get = |k: &str| c.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
    println!();
    println!(
        "server counters: leasequery {}, dropped leasequery {}, overload drops {}; RSS {:.0} MiB",
        get("leasequery"),
        get("drop_leasequery"),
        get("drop_overload"),
        rss_mib()
    );
    shutdown.cancel();
    let _ = server.await;
}
