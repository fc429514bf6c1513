//! How fast the bulk requestor consumes bindings from a local server.
//!
//! A fake server (a plain thread) answers one LEASEQUERY by streaming
//! pre-encoded frames (a REPLY with the first CLIENT_DATA, N-1
//! LEASEQUERY-DATA, a DONE) over loopback TCP as fast as it can. Rows:
//! - `raw read`: the same bytes read from a socket with no framing or
//!   decoding (the ceiling set by loopback TCP on this machine);
//! - `requestor`: `BulkConnection::query` + `QueryStream`, every binding
//!   decoded into a `Binding`.
//!
//! Run: `cargo bench -p lq6-requestor --bench consume` (N from env
//! `LQ6_BENCH_N`, default 1,000,000).

use lq6_proto::{ClientMessage, DhcpOption, Duid, IaAddr, IaPrefix, Message, MessageType};
use lq6_requestor::{BulkConnection, Query, RequestorConfig};
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

fn client_data(i: u32) -> DhcpOption {
    let b = i.to_be_bytes();
    DhcpOption::ClientData(vec![
        DhcpOption::ClientId(Duid::ll(1, &[2, 0, b[0], b[1], b[2], b[3]])),
        DhcpOption::IaAddr(IaAddr {
            addr: Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000u128 | i as u128),
            preferred: 3600,
            valid: 7200,
            options: vec![],
        }),
        DhcpOption::IaPrefix(IaPrefix {
            preferred: 3600,
            valid: 7200,
            prefix_len: 56,
            prefix: Ipv6Addr::from(
                0x2001_0db8_8000_0000_0000_0000_0000_0000u128 | ((i as u128) << 72),
            ),
            options: vec![],
        }),
        DhcpOption::CltTime(i % 1000),
    ])
}

/// The whole reply stream for xid 0, and the offsets of every xid field.
fn encode_stream(n: u32) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::with_capacity(n as usize * 100);
    let mut xids = Vec::with_capacity(n as usize + 1);
    let requestor = Duid::en(32473, b"bench");
    for i in 0..n {
        let m = if i == 0 {
            ClientMessage::new(MessageType::LEASEQUERY_REPLY, 0)
                .with(DhcpOption::ServerId(Duid::en(32473, b"srv")))
                .with(DhcpOption::ClientId(requestor.clone()))
                .with(client_data(i))
        } else {
            ClientMessage::new(MessageType::LEASEQUERY_DATA, 0).with(client_data(i))
        };
        xids.push(buf.len() + 3);
        let m = Message::Client(m);
        lq6_proto::write_framed(&mut buf, |b| m.encode(b)).unwrap();
    }
    xids.push(buf.len() + 3);
    let done = Message::Client(ClientMessage::new(MessageType::LEASEQUERY_DONE, 0));
    lq6_proto::write_framed(&mut buf, |b| done.encode(b)).unwrap();
    (buf, xids)
}

/// Serves `runs` connections: reads one framed query, patches its xid into
/// the stream, writes the stream.
fn serve(l: TcpListener, mut stream: Vec<u8>, xids: Vec<usize>, runs: usize) {
    for _ in 0..runs {
        let (mut s, _) = l.accept().unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut q).unwrap();
        let xid = [q[1], q[2], q[3]];
        for &at in &xids {
            stream[at..at + 3].copy_from_slice(&xid);
        }
        for chunk in stream.chunks(256 * 1024) {
            if s.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = s.flush();
        // Wait for the client to close.
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    }
}

async fn raw_read(addr: SocketAddr, total: usize) -> Duration {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let q = Message::Client(ClientMessage::new(MessageType::LEASEQUERY, 0x42));
    let mut f = Vec::new();
    lq6_proto::write_framed(&mut f, |b| q.encode(b)).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &f)
        .await
        .unwrap();
    let mut buf = vec![0u8; 128 * 1024];
    let mut got = 0;
    while got < total {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "short stream");
        got += n;
    }
    t.elapsed()
}

async fn requestor(addr: SocketAddr, n: u32) -> Duration {
    let cfg = RequestorConfig {
        duid: Duid::en(32473, b"bench"),
        ..RequestorConfig::default()
    };
    let conn = BulkConnection::connect(addr, cfg).await.unwrap();
    let t = Instant::now();
    let mut st = conn
        .query(&Query::by_link("2001:db8:1::1".parse().unwrap()))
        .await
        .unwrap();
    let mut count = 0u32;
    let mut check = 0u64;
    while let Some(b) = st.next().await {
        let b = b.unwrap();
        check += b.clt_time.unwrap_or(0) as u64 + b.addresses.len() as u64;
        count += 1;
    }
    let el = t.elapsed();
    assert_eq!(count, n);
    assert!(check > 0);
    el
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful.
    let n: u32 = std::env::var("LQ6_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs = 3;
    let (stream, xids) = encode_stream(n);
    let total = stream.len();
    let l = TcpListener::bind("[::1]:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || serve(l, stream, xids, 2 * runs));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut raw = Vec::new();
    let mut req = Vec::new();
    for _ in 0..runs {
        raw.push(rt.block_on(raw_read(addr, total)));
        req.push(rt.block_on(requestor(addr, n)));
    }
    server.join().unwrap();
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    let (r, q) = (best(&raw), best(&req));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbs = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    println!(
        "bulk requestor consume: {n} bindings, {total} octets ({:.1} octets/frame), loopback TCP, best of {runs}",
        total as f64 / n as f64
    );
    println!(
        "{:<34} {:>10} {:>16} {:>10}",
        "row", "time", "bindings/s", "MB/s"
    );
    println!(
        "{:<34} {:>8.1}ms {:>16.0} {:>10.0}",
        "raw socket read (baseline)",
        r.as_secs_f64() * 1e3,
        rate(r),
        mbs(r)
    );
    println!(
        "{:<34} {:>8.1}ms {:>16.0} {:>10.0}",
        "requestor (frame+demux+decode)",
        q.as_secs_f64() * 1e3,
        rate(q),
        mbs(q)
    );
    println!("requestor / baseline throughput: {:.2}", rate(q) / rate(r));
}
